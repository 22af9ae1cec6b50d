// Email flows of `supabase.auth` with a real SMTP server: MadBase sends through SMTP to the sink
// of scripts/smtp-sink.sh and the tests read what arrived (the link and the 6-digit code).
// Sign-up confirmation (code and link), magic link and email OTP, PKCE, recovery, email change
// with double confirmation, resend, reauthentication, invite, redirect allow list, phone OTP with
// a test number. Expectations are GoTrue's (reference/auth.md §4).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMadbase,
  client,
  ANON_KEY,
  SERVICE_ROLE_KEY,
  AUTH_TEST_ENV,
  authFetch,
  decodeJwt,
  uniqueEmail,
  urlParams,
  sleep,
} from './support.js';

let server;
const SITE_URL = 'http://127.0.0.1:3000';
const ALLOWED = 'http://localhost:5173';
const PASSWORD = 'correct-horse-battery';
const TEST_PHONE = '15555550100';
const TEST_OTP = '123456';

// Every template carries the link and the code (GoTrue's defaults carry only the link).
const BODY = '<p><a href="{{ .ConfirmationURL }}">Continue</a></p><p>Code: {{ .Token }}</p>';
const templates = Object.fromEntries(
  ['CONFIRMATION', 'INVITE', 'MAGIC_LINK', 'RECOVERY', 'EMAIL_CHANGE', 'REAUTHENTICATION'].map((kind) => [
    `MADBASE_AUTH_EMAIL_TEMPLATE_${kind}_CONTENT`,
    kind === 'REAUTHENTICATION' ? '<p>Code: {{ .Token }}</p>' : BODY,
  ]),
);

const SUBJECT = {
  confirmation: /confirm/i,
  invite: /invit/i,
  magicLink: /sign-in|magic|log ?in/i,
  recovery: /reset|recover/i,
  emailChange: /email/i,
  reauthentication: /code|reauth|verif/i,
};

before(async () => {
  server = await startMadbase({
    smtp: true,
    env: {
      ...AUTH_TEST_ENV,
      ...templates,
      MADBASE_AUTH_EMAIL_ENABLE_CONFIRMATIONS: 'true',
      MADBASE_AUTH_EMAIL_SECURE_PASSWORD_CHANGE: 'true',
      MADBASE_AUTH_SITE_URL: SITE_URL,
      MADBASE_AUTH_ADDITIONAL_REDIRECT_URLS: `${ALLOWED}/**,https://app.example.com/callback`,
      MADBASE_AUTH_SMS_ENABLE_SIGNUP: 'true',
      MADBASE_AUTH_SMS_TEST_OTP: `${TEST_PHONE}:${TEST_OTP}`,
    },
  });
});

after(async () => {
  await server?.stop();
});

/** Signs up with confirmations on; returns the user and the confirmation mail. */
async function signUpUnconfirmed(email = uniqueEmail('confirm'), options = {}) {
  const supabase = client(server, ANON_KEY);
  const { data, error } = await supabase.auth.signUp({ email, password: PASSWORD, options });
  assert.equal(error, null, error?.message);
  const mail = await server.mail.waitFor(email, SUBJECT.confirmation);
  return { supabase, email, user: data.user, session: data.session, mail };
}

/** A confirmed user (sign-up, then the code) with a signed-in client. */
async function confirmedUser(label = 'confirmed') {
  const { supabase, email, mail } = await signUpUnconfirmed(uniqueEmail(label));
  const { data, error } = await supabase.auth.verifyOtp({ email, token: mail.code, type: 'signup' });
  assert.equal(error, null, error?.message);
  return { supabase, email, user: data.user, session: data.session };
}

function verifyLink(mail) {
  const link = mail.links.find((l) => l.includes('/auth/v1/verify?'));
  assert.ok(link, `no /verify link in ${JSON.stringify(mail.links)}`);
  return link;
}

async function follow(link) {
  const r = await fetch(link, { redirect: 'manual' });
  return { status: r.status, location: r.headers.get('location') };
}

test('sign-up with confirmations: no session, a mail with a link and a code, verifyOtp(signup) signs in', async () => {
  const email = uniqueEmail('signup-code');
  const { user, session, mail, supabase } = await signUpUnconfirmed(email);
  assert.equal(session, null);
  assert.equal(user.email, email);
  assert.ok(user.confirmation_sent_at, 'confirmation_sent_at is set');
  assert.equal(user.email_confirmed_at, undefined);
  assert.match(mail.code, /^\d{6}$/);
  const link = new URL(verifyLink(mail));
  assert.equal(link.origin + link.pathname, `${server.url}/auth/v1/verify`);
  assert.equal(link.searchParams.get('type'), 'signup');
  assert.ok(link.searchParams.get('token'));

  const early = await client(server, ANON_KEY).auth.signInWithPassword({ email, password: PASSWORD });
  assert.equal(early.error?.status, 400);
  assert.equal(early.error.code, 'email_not_confirmed');
  assert.equal(early.error.message, 'Email not confirmed');

  const { data, error } = await supabase.auth.verifyOtp({ email, token: mail.code, type: 'signup' });
  assert.equal(error, null);
  assert.equal(data.user.email, email);
  assert.ok(data.user.email_confirmed_at);
  assert.ok(data.session.access_token);
  assert.equal(decodeJwt(data.session.access_token).sub, user.id);
  assert.equal((await supabase.auth.getSession()).data.session.access_token, data.session.access_token);

  // The code is single-use.
  const replay = await client(server, ANON_KEY).auth.verifyOtp({ email, token: mail.code, type: 'signup' });
  assert.equal(replay.error?.status, 403);
  assert.equal(replay.error.code, 'otp_expired');
  assert.equal(replay.error.message, 'Token has expired or is invalid');

  const signIn = await client(server, ANON_KEY).auth.signInWithPassword({ email, password: PASSWORD });
  assert.equal(signIn.error, null);
});

test('signing up again with a confirmed address answers a stand-in user (no enumeration) and changes nothing', async () => {
  const { email, user } = await confirmedUser('again');
  const { data, error } = await client(server, ANON_KEY).auth.signUp({ email, password: 'another-password' });
  assert.equal(error, null);
  assert.equal(data.session, null);
  assert.equal(data.user.email, email);
  assert.notEqual(data.user.id, user.id, 'the real id is not disclosed');
  assert.deepEqual(data.user.identities, []);
  assert.equal(data.user.email_confirmed_at, undefined);
  assert.ok(data.user.confirmation_sent_at);
  assert.equal(server.sql(`select count(*) from auth.users where email = '${email}'`).trim(), '1');
  const old = await client(server, ANON_KEY).auth.signInWithPassword({ email, password: PASSWORD });
  assert.equal(old.error, null, 'the password is unchanged');
});

test('the confirmation link: GET /verify answers 303 with the session in the fragment; a used link is otp_expired', async () => {
  const email = uniqueEmail('signup-link');
  const { mail, user } = await signUpUnconfirmed(email, { emailRedirectTo: `${ALLOWED}/welcome` });
  const link = verifyLink(mail);
  assert.equal(new URL(link).searchParams.get('redirect_to'), `${ALLOWED}/welcome`);
  const { status, location } = await follow(link);
  assert.equal(status, 303);
  const { base, fragment } = urlParams(location);
  assert.equal(base, `${ALLOWED}/welcome`);
  assert.equal(fragment.token_type, 'bearer');
  assert.equal(fragment.type, 'signup');
  assert.equal(fragment.expires_in, '3600');
  assert.ok(fragment.refresh_token);
  assert.ok(Number(fragment.expires_at) > Date.now() / 1000);
  assert.equal(decodeJwt(fragment.access_token).sub, user.id);
  const me = await client(server, ANON_KEY).auth.getUser(fragment.access_token);
  assert.equal(me.error, null);
  assert.ok(me.data.user.email_confirmed_at);

  const again = await follow(link);
  assert.equal(again.status, 303);
  const failed = urlParams(again.location);
  assert.equal(failed.base, `${ALLOWED}/welcome`);
  assert.equal(failed.fragment.error_code, 'otp_expired');
  assert.equal(failed.fragment.error, 'access_denied');
  assert.equal(failed.fragment.error_description, 'Email link is invalid or has expired');
  assert.equal(failed.fragment.access_token, undefined);
});

test('a redirectTo outside the allow list falls back to site_url', async () => {
  const email = uniqueEmail('evil-redirect');
  const { mail } = await signUpUnconfirmed(email, { emailRedirectTo: 'https://evil.example.org/steal' });
  const link = verifyLink(mail);
  assert.ok(!link.includes('evil.example.org'), `the mail must not carry the refused URL: ${link}`);
  const { status, location } = await follow(link);
  assert.equal(status, 303);
  assert.ok(location.startsWith(SITE_URL), `redirected to ${location}`);
  assert.ok(!location.includes('evil.example.org'));
  assert.ok(urlParams(location).fragment.access_token);

  // The same for a link whose redirect_to was edited by hand.
  const other = await signUpUnconfirmed(uniqueEmail('evil-redirect2'));
  const edited = new URL(verifyLink(other.mail));
  edited.searchParams.set('redirect_to', 'https://evil.example.org/steal');
  const r = await follow(edited.toString());
  assert.equal(r.status, 303);
  assert.ok(r.location.startsWith(SITE_URL), `redirected to ${r.location}`);
});

test('signInWithOtp (magic link) for a known user: the code (type email) and the link both sign in', async () => {
  const { email, user } = await confirmedUser('magic');
  const supabase = client(server, ANON_KEY);
  const sent = await supabase.auth.signInWithOtp({ email, options: { shouldCreateUser: false } });
  assert.equal(sent.error, null);
  assert.deepEqual(sent.data, { user: null, session: null });
  const mail = await server.mail.waitFor(email, SUBJECT.magicLink);
  const { data, error } = await supabase.auth.verifyOtp({ email, token: mail.code, type: 'email' });
  assert.equal(error, null);
  assert.equal(data.user.id, user.id);
  const amr = decodeJwt(data.session.access_token).amr.map((a) => a.method);
  assert.deepEqual(amr, ['otp']);

  await sleep(1100); // max_frequency 1s between mails to one user
  await client(server, ANON_KEY).auth.signInWithOtp({ email, options: { emailRedirectTo: `${ALLOWED}/magic` } });
  const second = await server.mail.waitFor(email, SUBJECT.magicLink);
  const link = verifyLink(second);
  assert.equal(new URL(link).searchParams.get('type'), 'magiclink');
  const { status, location } = await follow(link);
  assert.equal(status, 303);
  const { base, fragment } = urlParams(location);
  assert.equal(base, `${ALLOWED}/magic`);
  assert.equal(fragment.type, 'magiclink');
  assert.equal(decodeJwt(fragment.access_token).sub, user.id);
});

test('signInWithOtp with shouldCreateUser: false for an unknown address is 422 otp_disabled, and sends nothing', async () => {
  const email = uniqueEmail('nobody');
  const { data, error } = await client(server, ANON_KEY).auth.signInWithOtp({ email, options: { shouldCreateUser: false } });
  assert.equal(data.user, null);
  assert.equal(error?.status, 422);
  assert.equal(error.code, 'otp_disabled');
  assert.equal(error.message, 'Signups not allowed for otp');
  assert.equal(server.sql(`select count(*) from auth.users where email = '${email}'`).trim(), '0');
});

test('signInWithOtp for a new address creates the user; the emailed code (type email) confirms and signs in', async () => {
  const email = uniqueEmail('otp-new');
  const supabase = client(server, ANON_KEY);
  const sent = await supabase.auth.signInWithOtp({ email, options: { data: { plan: 'free' } } });
  assert.equal(sent.error, null);
  const mail = await server.mail.waitFor(email, /./);
  assert.match(mail.code, /^\d{6}$/);
  const { data, error } = await supabase.auth.verifyOtp({ email, token: mail.code, type: 'email' });
  assert.equal(error, null);
  assert.equal(data.user.email, email);
  assert.ok(data.user.email_confirmed_at);
  assert.equal(data.user.user_metadata.plan, 'free');
});

test('PKCE: the magic link redirects with ?code=, exchangeCodeForSession signs in once', async () => {
  const { email, user } = await confirmedUser('pkce');
  const supabase = client(server, ANON_KEY, { auth: { flowType: 'pkce' } });
  const sent = await supabase.auth.signInWithOtp({ email, options: { emailRedirectTo: `${ALLOWED}/pkce` } });
  assert.equal(sent.error, null);
  const mail = await server.mail.waitFor(email, SUBJECT.magicLink);
  const link = new URL(verifyLink(mail));
  assert.ok(link.searchParams.get('token').startsWith('pkce_'), `PKCE tokens are prefixed pkce_: ${link}`);
  const { status, location } = await follow(link.toString());
  assert.equal(status, 303);
  const { base, query, fragment } = urlParams(location);
  assert.equal(base, `${ALLOWED}/pkce`);
  assert.match(query.code, /^[0-9a-f-]{36}$/);
  assert.equal(fragment.access_token, undefined, 'no tokens in the URL in the PKCE flow');

  const { data, error } = await supabase.auth.exchangeCodeForSession(query.code);
  assert.equal(error, null);
  assert.equal(data.user.id, user.id);
  const claims = decodeJwt(data.session.access_token);
  assert.equal(claims.sub, user.id);
  // The flow state's authentication method (the verify type) becomes the amr entry.
  assert.deepEqual(
    claims.amr.map((a) => a.method),
    ['magiclink'],
  );
  assert.equal((await supabase.auth.getSession()).data.session.access_token, data.session.access_token);

  // The auth code is spent.
  const again = await authFetch(server, '/token?grant_type=pkce', {
    method: 'POST',
    body: { auth_code: query.code, code_verifier: 'x'.repeat(64) },
  });
  assert.equal(again.status, 404);
  assert.deepEqual(again.body, { code: 'flow_state_not_found', message: 'invalid flow state, no valid flow state found' });
});

test('PKCE: a wrong code verifier is 400 bad_code_verifier and leaves the code usable', async () => {
  const { email } = await confirmedUser('pkce-verifier');
  const supabase = client(server, ANON_KEY, { auth: { flowType: 'pkce' } });
  await supabase.auth.signInWithOtp({ email, options: { emailRedirectTo: `${ALLOWED}/pkce` } });
  const mail = await server.mail.waitFor(email, SUBJECT.magicLink);
  const { location } = await follow(verifyLink(mail));
  const { code } = urlParams(location).query;
  const wrong = await authFetch(server, '/token?grant_type=pkce', {
    method: 'POST',
    body: { auth_code: code, code_verifier: 'a'.repeat(64) },
  });
  assert.equal(wrong.status, 400);
  assert.equal(wrong.body.code, 'bad_code_verifier');
  const missing = await authFetch(server, '/token?grant_type=pkce', { method: 'POST', body: { auth_code: code } });
  assert.equal(missing.status, 400);
  assert.deepEqual(missing.body, {
    code: 'validation_failed',
    message: 'invalid request: both auth code and code verifier should be non-empty',
  });
  const { error } = await supabase.auth.exchangeCodeForSession(code);
  assert.equal(error, null);
});

test('PKCE sign-up confirmation and PKCE recovery: ?code= links exchanged for sessions', async () => {
  const email = uniqueEmail('pkce-signup');
  const supabase = client(server, ANON_KEY, { auth: { flowType: 'pkce' } });
  const signedUp = await supabase.auth.signUp({ email, password: PASSWORD, options: { emailRedirectTo: `${ALLOWED}/confirmed` } });
  assert.equal(signedUp.error, null);
  assert.equal(signedUp.data.session, null);
  const confirm = await server.mail.waitFor(email, SUBJECT.confirmation);
  const link = new URL(verifyLink(confirm));
  assert.ok(link.searchParams.get('token').startsWith('pkce_'), link.toString());
  const first = await follow(link.toString());
  assert.equal(first.status, 303);
  const { base, query } = urlParams(first.location);
  assert.equal(base, `${ALLOWED}/confirmed`);
  const exchanged = await supabase.auth.exchangeCodeForSession(query.code);
  assert.equal(exchanged.error, null);
  assert.equal(exchanged.data.user.email, email);
  assert.ok(exchanged.data.user.email_confirmed_at);
  assert.deepEqual(
    decodeJwt(exchanged.data.session.access_token).amr.map((a) => a.method),
    ['email/signup'],
  );

  await sleep(1100);
  const recovering = client(server, ANON_KEY, { auth: { flowType: 'pkce' } });
  const sent = await recovering.auth.resetPasswordForEmail(email, { redirectTo: `${ALLOWED}/reset` });
  assert.equal(sent.error, null);
  const mail = await server.mail.waitFor(email, SUBJECT.recovery);
  const back = await follow(verifyLink(mail));
  assert.equal(back.status, 303);
  const code = urlParams(back.location).query.code;
  assert.ok(code, back.location);
  const recovered = await recovering.auth.exchangeCodeForSession(code);
  assert.equal(recovered.error, null);
  assert.equal(recovered.data.redirectType, 'recovery');
  assert.deepEqual(
    decodeJwt(recovered.data.session.access_token).amr.map((a) => a.method),
    ['recovery'],
  );
  const changed = await recovering.auth.updateUser({ password: 'pkce-new-password' });
  assert.equal(changed.error, null);
  const signIn = await client(server, ANON_KEY).auth.signInWithPassword({ email, password: 'pkce-new-password' });
  assert.equal(signIn.error, null);
});

test('resetPasswordForEmail → recovery code → updateUser({password})', async () => {
  const { email, user } = await confirmedUser('recover');
  await sleep(1100); // max_frequency 1s between mails to one user
  const supabase = client(server, ANON_KEY);
  const sent = await supabase.auth.resetPasswordForEmail(email, { redirectTo: `${ALLOWED}/reset` });
  assert.equal(sent.error, null);
  assert.deepEqual(sent.data, {});
  const mail = await server.mail.waitFor(email, SUBJECT.recovery);
  const link = new URL(verifyLink(mail));
  assert.equal(link.searchParams.get('type'), 'recovery');
  assert.equal(link.searchParams.get('redirect_to'), `${ALLOWED}/reset`);

  const { data, error } = await supabase.auth.verifyOtp({ email, token: mail.code, type: 'recovery' });
  assert.equal(error, null);
  assert.equal(data.user.id, user.id);
  assert.ok(data.user.recovery_sent_at);
  // POST /verify signs in with amr otp whatever the type (GoTrue's verifyPost).
  assert.deepEqual(
    decodeJwt(data.session.access_token).amr.map((a) => a.method),
    ['otp'],
  );

  const same = await supabase.auth.updateUser({ password: PASSWORD });
  assert.equal(same.error?.status, 422);
  assert.equal(same.error.code, 'same_password');
  assert.equal(same.error.message, 'New password should be different from the old password.');

  const updated = await supabase.auth.updateUser({ password: 'a-brand-new-password' });
  assert.equal(updated.error, null);
  assert.equal(updated.data.user.id, user.id);
  const old = await client(server, ANON_KEY).auth.signInWithPassword({ email, password: PASSWORD });
  assert.equal(old.error?.code, 'invalid_credentials');
  const fresh = await client(server, ANON_KEY).auth.signInWithPassword({ email, password: 'a-brand-new-password' });
  assert.equal(fresh.error, null);
});

test('the recovery link redirects with type=recovery; recovery for an unknown address still answers {}', async () => {
  const { email, user } = await confirmedUser('recover-link');
  await sleep(1100);
  await client(server, ANON_KEY).auth.resetPasswordForEmail(email);
  const mail = await server.mail.waitFor(email, SUBJECT.recovery);
  const { status, location } = await follow(verifyLink(mail));
  assert.equal(status, 303);
  const { base, fragment } = urlParams(location);
  assert.ok(base.startsWith(SITE_URL), base);
  assert.equal(fragment.type, 'recovery');
  assert.equal(decodeJwt(fragment.access_token).sub, user.id);

  const unknown = await client(server, ANON_KEY).auth.resetPasswordForEmail(uniqueEmail('ghost'));
  assert.equal(unknown.error, null);
  assert.deepEqual(unknown.data, {});
});

test('email change with double confirmation: two mails, the first verify is accepted, the second changes the address', async () => {
  const { supabase, email, user } = await confirmedUser('change');
  const newEmail = uniqueEmail('changed');
  await sleep(1100);
  const { data, error } = await supabase.auth.updateUser({ email: newEmail });
  assert.equal(error, null);
  assert.equal(data.user.email, email);
  assert.equal(data.user.new_email, newEmail);
  assert.ok(data.user.email_change_sent_at);

  const toOld = await server.mail.waitFor(email, SUBJECT.emailChange);
  const toNew = await server.mail.waitFor(newEmail, SUBJECT.emailChange);
  assert.equal(new URL(verifyLink(toOld)).searchParams.get('type'), 'email_change');
  assert.equal(new URL(verifyLink(toNew)).searchParams.get('type'), 'email_change');
  assert.notEqual(toOld.code, toNew.code);

  const first = await authFetch(server, '/verify', {
    method: 'POST',
    body: { email, token: toOld.code, type: 'email_change' },
  });
  assert.equal(first.status, 200, first.text);
  assert.deepEqual(first.body, {
    msg: 'Confirmation link accepted. Please proceed to confirm link sent to the other email',
    code: '200',
  });
  assert.equal(server.sql(`select email from auth.users where id = '${user.id}'`).trim(), email);

  const second = await supabase.auth.verifyOtp({ email: newEmail, token: toNew.code, type: 'email_change' });
  assert.equal(second.error, null);
  assert.equal(second.data.user.email, newEmail);
  assert.equal(second.data.user.new_email, undefined);
  assert.equal(decodeJwt(second.data.session.access_token).email, newEmail);
  const signIn = await client(server, ANON_KEY).auth.signInWithPassword({ email: newEmail, password: PASSWORD });
  assert.equal(signIn.error, null);
});

test('email change to an address already in use is 422 email_exists', async () => {
  const { supabase } = await confirmedUser('change-taken');
  const { email: taken } = await confirmedUser('taken');
  const { error } = await supabase.auth.updateUser({ email: taken });
  assert.equal(error?.status, 422);
  assert.equal(error.code, 'email_exists');
  assert.equal(error.message, 'A user with this email address has already been registered');
});

test('resend({type: signup}) sends a new code; the old one stops working', async () => {
  const { email, mail } = await signUpUnconfirmed(uniqueEmail('resend'));
  await sleep(1100); // max_frequency
  const supabase = client(server, ANON_KEY);
  const resent = await supabase.auth.resend({ type: 'signup', email });
  assert.equal(resent.error, null);
  assert.deepEqual(resent.data, { user: null, session: null });
  const again = await server.mail.waitFor(email, SUBJECT.confirmation);
  assert.match(again.code, /^\d{6}$/);
  if (again.code !== mail.code) {
    const old = await supabase.auth.verifyOtp({ email, token: mail.code, type: 'signup' });
    assert.equal(old.error?.code, 'otp_expired');
  }
  const { error } = await supabase.auth.verifyOtp({ email, token: again.code, type: 'signup' });
  assert.equal(error, null);
});

test('reauthenticate sends a nonce; an old session changes its password only with it', async () => {
  const { supabase, email, session } = await confirmedUser('reauth');
  // Age the session past GoTrue's 24 h window for password changes without a nonce.
  server.sql(`update auth.sessions set created_at = now() - interval '2 days' where id = '${decodeJwt(session.access_token).session_id}'`);

  const without = await supabase.auth.updateUser({ password: 'another-password-1' });
  assert.equal(without.error?.status, 400);
  assert.equal(without.error.code, 'reauthentication_needed');
  assert.equal(without.error.message, 'Password update requires reauthentication');

  await sleep(1100);
  const sent = await supabase.auth.reauthenticate();
  assert.equal(sent.error, null);
  const mail = await server.mail.waitFor(email, SUBJECT.reauthentication);
  assert.match(mail.code, /^\d{6}$/);
  const { data: me } = await supabase.auth.getUser();
  assert.ok(me.user.reauthentication_sent_at);

  const wrongNonce = mail.code === '000000' ? '111111' : '000000';
  const wrong = await supabase.auth.updateUser({ password: 'another-password-1', nonce: wrongNonce });
  assert.equal(wrong.error?.status, 422);
  assert.equal(wrong.error.code, 'reauthentication_not_valid');

  const ok = await supabase.auth.updateUser({ password: 'another-password-1', nonce: mail.code });
  assert.equal(ok.error, null);
  const signIn = await client(server, ANON_KEY).auth.signInWithPassword({ email, password: 'another-password-1' });
  assert.equal(signIn.error, null);
});

test('reauthenticate without a user session is 401 no_authorization', async () => {
  const r = await authFetch(server, '/reauthenticate', { token: null });
  assert.equal(r.status, 401);
  assert.deepEqual(r.body, { code: 'no_authorization', message: 'This endpoint requires a valid Bearer token' });
});

test('inviteUserByEmail: the invite mail, verifyOtp(invite), then a password', async () => {
  const admin = client(server, SERVICE_ROLE_KEY);
  const email = uniqueEmail('invitee');
  const { data, error } = await admin.auth.admin.inviteUserByEmail(email, {
    data: { team: 'blue' },
    redirectTo: `${ALLOWED}/invited`,
  });
  assert.equal(error, null);
  assert.equal(data.user.email, email);
  assert.ok(data.user.invited_at);
  assert.equal(data.user.user_metadata.team, 'blue');
  const mail = await server.mail.waitFor(email, SUBJECT.invite);
  const link = new URL(verifyLink(mail));
  assert.equal(link.searchParams.get('type'), 'invite');
  assert.equal(link.searchParams.get('redirect_to'), `${ALLOWED}/invited`);

  const supabase = client(server, ANON_KEY);
  const verified = await supabase.auth.verifyOtp({ email, token: mail.code, type: 'invite' });
  assert.equal(verified.error, null);
  assert.equal(verified.data.user.id, data.user.id);
  assert.ok(verified.data.user.email_confirmed_at);
  assert.deepEqual(
    decodeJwt(verified.data.session.access_token).amr.map((a) => a.method),
    ['otp'],
  );
  const pw = await supabase.auth.updateUser({ password: PASSWORD });
  assert.equal(pw.error, null);
  const signIn = await client(server, ANON_KEY).auth.signInWithPassword({ email, password: PASSWORD });
  assert.equal(signIn.error, null);

  // Inviting a registered address is 422 email_exists.
  const again = await admin.auth.admin.inviteUserByEmail(email);
  assert.equal(again.error?.status, 422);
  assert.equal(again.error.code, 'email_exists');
});

test('the invite link redirects to the redirectTo with the session in the fragment', async () => {
  const admin = client(server, SERVICE_ROLE_KEY);
  const email = uniqueEmail('invite-link');
  const { data } = await admin.auth.admin.inviteUserByEmail(email, { redirectTo: `${ALLOWED}/invited` });
  const mail = await server.mail.waitFor(email, SUBJECT.invite);
  const { status, location } = await follow(verifyLink(mail));
  assert.equal(status, 303);
  const { base, fragment } = urlParams(location);
  assert.equal(base, `${ALLOWED}/invited`);
  assert.equal(fragment.type, 'invite');
  assert.equal(decodeJwt(fragment.access_token).sub, data.user.id);
});

test('admin.generateLink for every type: the link properties, no mail, and the hashed token verifies', async () => {
  const admin = client(server, SERVICE_ROLE_KEY).auth.admin;
  const verifyHash = (token_hash, type) => client(server, ANON_KEY).auth.verifyOtp({ token_hash, type });
  const checkLink = (props, type, redirect = SITE_URL, verificationType = type) => {
    const link = new URL(props.action_link);
    assert.equal(link.origin + link.pathname, `${server.url}/auth/v1/verify`);
    assert.equal(link.searchParams.get('token'), props.hashed_token);
    assert.equal(link.searchParams.get('type'), type);
    assert.equal(props.verification_type, verificationType);
    assert.match(props.email_otp, /^\d{6}$/);
    assert.ok(props.redirect_to.startsWith(redirect), props.redirect_to);
  };

  // signup
  const signupEmail = uniqueEmail('gl-signup');
  const signup = await admin.generateLink({
    type: 'signup',
    email: signupEmail,
    password: PASSWORD,
    options: { data: { via: 'generate_link' }, redirectTo: `${ALLOWED}/gl` },
  });
  assert.equal(signup.error, null);
  checkLink(signup.data.properties, 'signup', `${ALLOWED}/gl`);
  assert.equal(signup.data.user.email, signupEmail);
  assert.equal(signup.data.user.user_metadata.via, 'generate_link');
  assert.equal(signup.data.user.email_confirmed_at, undefined);
  const v1 = await verifyHash(signup.data.properties.hashed_token, 'signup');
  assert.equal(v1.error, null);
  assert.equal(v1.data.user.id, signup.data.user.id);

  // invite
  const inviteEmail = uniqueEmail('gl-invite');
  const invite = await admin.generateLink({ type: 'invite', email: inviteEmail });
  assert.equal(invite.error, null);
  checkLink(invite.data.properties, 'invite');
  assert.ok(invite.data.user.invited_at);
  assert.equal((await verifyHash(invite.data.properties.hashed_token, 'invite')).error, null);

  // magiclink (existing user)
  const magic = await admin.generateLink({ type: 'magiclink', email: signupEmail });
  assert.equal(magic.error, null);
  checkLink(magic.data.properties, 'magiclink');
  const v3 = await verifyHash(magic.data.properties.hashed_token, 'magiclink');
  assert.equal(v3.error, null);
  assert.equal(v3.data.user.id, signup.data.user.id);

  // recovery
  const recovery = await admin.generateLink({ type: 'recovery', email: signupEmail });
  assert.equal(recovery.error, null);
  checkLink(recovery.data.properties, 'recovery');
  assert.equal((await verifyHash(recovery.data.properties.hashed_token, 'recovery')).error, null);

  // email_change_current / email_change_new
  const newEmail = uniqueEmail('gl-new');
  const current = await admin.generateLink({ type: 'email_change_current', email: signupEmail, newEmail });
  assert.equal(current.error, null);
  checkLink(current.data.properties, 'email_change', SITE_URL, 'email_change_current');
  assert.equal(current.data.user.new_email, newEmail);
  const next = await admin.generateLink({ type: 'email_change_new', email: signupEmail, newEmail });
  assert.equal(next.error, null);
  checkLink(next.data.properties, 'email_change', SITE_URL, 'email_change_new');
  assert.equal(next.data.user.new_email, newEmail);

  // generate_link sends nothing: a real mail sent afterwards is the only one there.
  await sleep(1100);
  await client(server, ANON_KEY).auth.resetPasswordForEmail(inviteEmail);
  await server.mail.waitFor(inviteEmail, SUBJECT.recovery);
  for (const address of [signupEmail, inviteEmail, newEmail]) {
    assert.deepEqual(server.mail.pending(address).map((m) => m.subject), [], `no mail to ${address}`);
  }
});

test('admin.generateLink needs the service role', async () => {
  const r = await authFetch(server, '/admin/generate_link', {
    method: 'POST',
    body: { type: 'magiclink', email: uniqueEmail('gl-anon') },
  });
  assert.equal(r.status, 403);
  assert.deepEqual(r.body, { code: 'not_admin', message: 'User not allowed' });
});

test('phone OTP with a test_otp number: signInWithOtp then verifyOtp(sms)', async () => {
  const supabase = client(server, ANON_KEY);
  const sent = await supabase.auth.signInWithOtp({ phone: `+${TEST_PHONE}` });
  assert.equal(sent.error, null);
  assert.equal(sent.data.session, null);
  const wrong = await client(server, ANON_KEY).auth.verifyOtp({ phone: `+${TEST_PHONE}`, token: '000000', type: 'sms' });
  assert.equal(wrong.error?.status, 403);
  assert.equal(wrong.error.code, 'otp_expired');
  const { data, error } = await supabase.auth.verifyOtp({ phone: `+${TEST_PHONE}`, token: TEST_OTP, type: 'sms' });
  assert.equal(error, null);
  assert.equal(data.user.phone, TEST_PHONE);
  assert.ok(data.user.phone_confirmed_at);
  assert.equal(data.user.app_metadata.provider, 'phone');
  const claims = decodeJwt(data.session.access_token);
  assert.equal(claims.phone, TEST_PHONE);
  assert.deepEqual(
    claims.amr.map((a) => a.method),
    ['otp'],
  );
});
