// TOTP multi-factor authentication through `supabase.auth.mfa`: enroll, challenge, verify with a
// code computed here (RFC 6238 from the returned secret), assurance levels, listFactors, the AAL
// rules on enrolling, unenrolling and password changes, and the errors. Expectations are
// GoTrue's (reference/auth.md §5).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMadbase,
  client,
  ANON_KEY,
  AUTH_TEST_ENV,
  authFetch,
  decodeJwt,
  totp,
  uniqueEmail,
} from './support.js';

let server;
const PASSWORD = 'correct-horse-battery';

before(async () => {
  server = await startMadbase({ env: { ...AUTH_TEST_ENV, MADBASE_AUTH_ENABLE_ANONYMOUS_SIGN_INS: 'true' } });
});

after(async () => {
  await server?.stop();
});

async function newUser(label = 'mfa') {
  const email = uniqueEmail(label);
  const supabase = client(server, ANON_KEY);
  const { data, error } = await supabase.auth.signUp({ email, password: PASSWORD });
  assert.equal(error, null, error?.message);
  return { supabase, email, user: data.user };
}

async function signIn(email) {
  const supabase = client(server, ANON_KEY);
  const { error } = await supabase.auth.signInWithPassword({ email, password: PASSWORD });
  assert.equal(error, null, error?.message);
  return supabase;
}

/** Enrolls and verifies a TOTP factor; returns the factor id and secret. */
async function enrollVerified(supabase, friendlyName = 'authenticator') {
  const enrolled = await supabase.auth.mfa.enroll({ factorType: 'totp', friendlyName });
  assert.equal(enrolled.error, null, enrolled.error?.message);
  const { id, totp: t } = enrolled.data;
  const verified = await supabase.auth.mfa.challengeAndVerify({ factorId: id, code: totp(t.secret) });
  assert.equal(verified.error, null, verified.error?.message);
  return { factorId: id, secret: t.secret, session: verified.data };
}

test('enroll a TOTP factor: id, type, secret, otpauth URI and an SVG QR code', async () => {
  const { supabase, email } = await newUser('enroll');
  const { data, error } = await supabase.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'My phone' });
  assert.equal(error, null);
  assert.match(data.id, /^[0-9a-f-]{36}$/);
  assert.equal(data.type, 'totp');
  assert.equal(data.friendly_name, 'My phone');
  assert.match(data.totp.secret, /^[A-Z2-7]+=*$/);
  // GoTrue sends the raw SVG document; auth-js adds the data-URL prefix (once).
  assert.match(data.totp.qr_code, /^data:image\/svg\+xml;utf-8,(<\?xml[^>]*>\s*)?<svg[\s>]/, data.totp.qr_code.slice(0, 80));
  const uri = new URL(data.totp.uri);
  assert.equal(uri.protocol, 'otpauth:');
  assert.equal(uri.host, 'totp');
  assert.equal(decodeURIComponent(uri.pathname), `/127.0.0.1:3000:${email}`);
  assert.equal(uri.searchParams.get('secret'), data.totp.secret);
  assert.equal(uri.searchParams.get('issuer'), '127.0.0.1:3000');
  assert.equal(uri.searchParams.get('digits'), '6');
  assert.equal(uri.searchParams.get('period'), '30');
  assert.equal(uri.searchParams.get('algorithm'), 'SHA1');

  // Unverified: listed in `all` only, and the session stays aal1 with no next level.
  const factors = await supabase.auth.mfa.listFactors();
  assert.equal(factors.error, null);
  assert.equal(factors.data.all.length, 1);
  assert.equal(factors.data.all[0].status, 'unverified');
  assert.deepEqual(factors.data.totp, []);
  const aal = await supabase.auth.mfa.getAuthenticatorAssuranceLevel();
  assert.equal(aal.data.currentLevel, 'aal1');
  assert.equal(aal.data.nextLevel, 'aal1');

  const dup = await supabase.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'My phone' });
  assert.equal(dup.error?.status, 422);
  assert.equal(dup.error.code, 'mfa_factor_name_conflict');
  assert.equal(dup.error.message, 'A factor with the friendly name "My phone" for this user already exists');
});

test('challenge + verify with the TOTP code: an aal2 session with totp in amr, the factor verified', async () => {
  const { supabase, user } = await newUser('verify');
  const before = (await supabase.auth.getSession()).data.session;
  const enrolled = await supabase.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'app' });
  const factorId = enrolled.data.id;
  const challenge = await supabase.auth.mfa.challenge({ factorId });
  assert.equal(challenge.error, null);
  assert.match(challenge.data.id, /^[0-9a-f-]{36}$/);
  assert.equal(challenge.data.type, 'totp');
  const now = Date.now() / 1000;
  assert.ok(challenge.data.expires_at > now && challenge.data.expires_at <= now + 301, String(challenge.data.expires_at));

  const wrongCode = totp(enrolled.data.totp.secret, Date.now() + 10 * 60_000);
  const wrong = await supabase.auth.mfa.verify({ factorId, challengeId: challenge.data.id, code: wrongCode });
  assert.equal(wrong.error?.status, 422);
  assert.equal(wrong.error.code, 'mfa_verification_failed');
  assert.equal(wrong.error.message, 'Invalid TOTP code entered');

  const challenge2 = await supabase.auth.mfa.challenge({ factorId });
  const { data, error } = await supabase.auth.mfa.verify({
    factorId,
    challengeId: challenge2.data.id,
    code: totp(enrolled.data.totp.secret),
  });
  assert.equal(error, null);
  assert.ok(data.access_token);
  assert.notEqual(data.refresh_token, before.refresh_token);
  const claims = decodeJwt(data.access_token);
  assert.equal(claims.aal, 'aal2');
  assert.equal(claims.sub, user.id);
  assert.equal(claims.session_id, decodeJwt(before.access_token).session_id, 'the same session is raised');
  assert.deepEqual(claims.amr.map((a) => a.method).sort(), ['password', 'totp']);
  assert.equal(data.user.factors.length, 1);
  assert.equal(data.user.factors[0].status, 'verified');

  const aal = await supabase.auth.mfa.getAuthenticatorAssuranceLevel();
  assert.equal(aal.error, null);
  assert.equal(aal.data.currentLevel, 'aal2');
  assert.equal(aal.data.nextLevel, 'aal2');
  assert.deepEqual(aal.data.currentAuthenticationMethods.map((m) => m.method).sort(), ['password', 'totp']);

  const factors = await supabase.auth.mfa.listFactors();
  assert.equal(factors.data.totp.length, 1);
  assert.equal(factors.data.totp[0].id, factorId);
  assert.equal(factors.data.totp[0].friendly_name, 'app');

  // The aal2 refresh token keeps aal2.
  const refreshed = await supabase.auth.refreshSession();
  assert.equal(refreshed.error, null);
  assert.equal(decodeJwt(refreshed.data.session.access_token).aal, 'aal2');

  // A used challenge cannot be verified again.
  const replay = await supabase.auth.mfa.verify({
    factorId,
    challengeId: challenge2.data.id,
    code: totp(enrolled.data.totp.secret),
  });
  assert.ok(replay.error, 'a consumed challenge is refused');
  assert.equal(replay.error.status, 422);
});

test('at aal1 with a verified factor: nextLevel aal2, enrolling is 403, unenrolling 422, password change 401', async () => {
  const { supabase, email } = await newUser('aal1');
  const { factorId } = await enrollVerified(supabase);
  const aal1 = await signIn(email);

  const levels = await aal1.auth.mfa.getAuthenticatorAssuranceLevel();
  assert.equal(levels.data.currentLevel, 'aal1');
  assert.equal(levels.data.nextLevel, 'aal2');

  const enroll = await aal1.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'second' });
  assert.equal(enroll.error?.status, 403);
  assert.equal(enroll.error.code, 'insufficient_aal');
  assert.equal(enroll.error.message, 'AAL2 required to enroll a new factor');

  const unenroll = await aal1.auth.mfa.unenroll({ factorId });
  assert.equal(unenroll.error?.status, 422);
  assert.equal(unenroll.error.code, 'insufficient_aal');
  assert.equal(unenroll.error.message, 'AAL2 required to unenroll verified factor');

  const pw = await aal1.auth.updateUser({ password: 'new-password-123' });
  assert.equal(pw.error?.status, 401);
  assert.equal(pw.error.code, 'insufficient_aal');

});

test('step-up on an aal1 session, then unenroll at aal2 downgrades to aal1', async () => {
  const { supabase, email } = await newUser('stepup');
  const { factorId, secret } = await enrollVerified(supabase);
  const other = await signIn(email);
  const stepped = await other.auth.mfa.challengeAndVerify({ factorId, code: totp(secret) });
  assert.equal(stepped.error, null);
  assert.equal(decodeJwt(stepped.data.access_token).aal, 'aal2');

  const second = await other.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'second' });
  assert.equal(second.error, null, 'an aal2 session may enroll another factor');

  const removed = await other.auth.mfa.unenroll({ factorId });
  assert.equal(removed.error, null);
  assert.equal(removed.data.id, factorId);
  const refreshed = await other.auth.refreshSession();
  assert.equal(refreshed.error, null);
  assert.equal(decodeJwt(refreshed.data.session.access_token).aal, 'aal1');
  const factors = await other.auth.mfa.listFactors();
  assert.deepEqual(factors.data.totp, []);
  assert.ok(!factors.data.all.some((f) => f.id === factorId));
});

test('an unverified factor can be unenrolled at aal1', async () => {
  const { supabase } = await newUser('unverified');
  const { data } = await supabase.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'temp' });
  const { data: removed, error } = await supabase.auth.mfa.unenroll({ factorId: data.id });
  assert.equal(error, null);
  assert.equal(removed.id, data.id);
  assert.deepEqual((await supabase.auth.mfa.listFactors()).data.all, []);
});

test('MFA errors: unknown factor 404, bad factor type 400, anonymous users 403, no token 401', async () => {
  const { supabase } = await newUser('errors');
  const unknown = await supabase.auth.mfa.challenge({ factorId: '00000000-0000-4000-8000-000000000002' });
  assert.equal(unknown.error?.status, 404);
  assert.equal(unknown.error.code, 'mfa_factor_not_found');
  assert.equal(unknown.error.message, 'Factor not found');

  const token = (await supabase.auth.getSession()).data.session.access_token;
  const badType = await authFetch(server, '/factors', {
    method: 'POST',
    token,
    body: { factor_type: 'carrier-pigeon', friendly_name: 'x' },
  });
  assert.equal(badType.status, 400);
  assert.deepEqual(badType.body, { code: 'validation_failed', message: 'factor_type needs to be totp, phone, or webauthn' });

  const anon = client(server, ANON_KEY);
  await anon.auth.signInAnonymously();
  const anonEnroll = await anon.auth.mfa.enroll({ factorType: 'totp' });
  assert.equal(anonEnroll.error?.status, 403);
  assert.equal(anonEnroll.error.code, 'no_authorization');
  assert.equal(anonEnroll.error.message, 'Anonymous user not allowed to perform these actions');

  const noToken = await authFetch(server, '/factors', { method: 'POST', token: null, body: { factor_type: 'totp' } });
  assert.equal(noToken.status, 401);
  assert.equal(noToken.body.code, 'no_authorization');
});
