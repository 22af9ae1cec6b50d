// Bad input to /auth/v1: malformed JSON, wrong types, missing fields, over-long values, bad
// tokens, replayed one-time tokens, refused redirects, mismatched verify types. Each answer is
// GoTrue's status and code, as auth-js surfaces it (`error.status`, `error.code`) and, where the
// client hides details, the raw body in both shapes: `{code, message}` with
// `X-Supabase-Api-Version: 2024-01-01`, the legacy `{code, error_code, msg}` without. And a
// failed sign-up leaves nothing behind.
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
  makeJwt,
  signJwt,
  uniqueEmail,
  urlParams,
} from './support.js';

let server;
const PASSWORD = 'correct-horse-battery';
const SITE_URL = 'http://127.0.0.1:3000';

before(async () => {
  // Anonymous sign-ins off (the default); no reuse interval, so a replayed refresh token is
  // refused at once.
  server = await startMadbase({
    env: {
      ...AUTH_TEST_ENV,
      MADBASE_AUTH_REFRESH_TOKEN_REUSE_INTERVAL: '0',
      MADBASE_AUTH_SITE_URL: SITE_URL,
      MADBASE_AUTH_ADDITIONAL_REDIRECT_URLS: 'http://localhost:5173/**',
    },
  });
});

after(async () => {
  await server?.stop();
});

const usersWith = (email) => server.sql(`select count(*) from auth.users where email = '${email}'`).trim();

async function signedUp(label = 'err') {
  const email = uniqueEmail(label);
  const supabase = client(server, ANON_KEY);
  const { data, error } = await supabase.auth.signUp({ email, password: PASSWORD });
  assert.equal(error, null, error?.message);
  return { supabase, email, user: data.user, session: data.session };
}

function post(path, body, opts = {}) {
  return authFetch(server, path, { method: 'POST', body, ...opts });
}

test('error shapes: {code, message} with X-Supabase-Api-Version, legacy {code, error_code, msg} without', async () => {
  const { email } = await signedUp('shape');
  const body = { email, password: 'wrong-password' };
  const modern = await post('/token?grant_type=password', body);
  assert.equal(modern.status, 400);
  assert.deepEqual(modern.body, { code: 'invalid_credentials', message: 'Invalid login credentials' });
  assert.equal(modern.headers.get('x-supabase-api-version'), '2024-01-01');
  assert.equal(modern.headers.get('x-sb-error-code'), 'invalid_credentials');
  assert.match(modern.headers.get('content-type'), /^application\/json/);

  const legacy = await post('/token?grant_type=password', body, { version: false });
  assert.equal(legacy.status, 400);
  assert.deepEqual(legacy.body, { code: 400, error_code: 'invalid_credentials', msg: 'Invalid login credentials' });
  assert.equal(legacy.headers.get('x-supabase-api-version'), null);
  assert.equal(legacy.headers.get('x-sb-error-code'), 'invalid_credentials');

  // An invalid date is ignored: legacy shape.
  const bad = await post('/token?grant_type=password', body, { version: false, headers: { 'x-supabase-api-version': 'yesterday' } });
  assert.deepEqual(bad.body, { code: 400, error_code: 'invalid_credentials', msg: 'Invalid login credentials' });
  // An older date: legacy shape.
  const old = await post('/token?grant_type=password', body, { version: false, headers: { 'x-supabase-api-version': '2023-06-01' } });
  assert.deepEqual(old.body, { code: 400, error_code: 'invalid_credentials', msg: 'Invalid login credentials' });
});

test('weak password: 422 weak_password with reasons, in both shapes and through auth-js', async () => {
  const email = uniqueEmail('weak');
  const modern = await post('/signup', { email, password: '123' });
  assert.equal(modern.status, 422);
  assert.deepEqual(modern.body, {
    code: 'weak_password',
    message: 'Password should be at least 6 characters.',
    weak_password: { reasons: ['length'] },
  });
  const legacy = await post('/signup', { email, password: '123' }, { version: false });
  assert.equal(legacy.status, 422);
  assert.deepEqual(legacy.body, {
    code: 422,
    error_code: 'weak_password',
    msg: 'Password should be at least 6 characters.',
    weak_password: { reasons: ['length'] },
  });
  const { data, error } = await client(server, ANON_KEY).auth.signUp({ email, password: '123' });
  assert.equal(data.user, null);
  assert.equal(error?.name, 'AuthWeakPasswordError');
  assert.equal(error.status, 422);
  assert.equal(error.code, 'weak_password');
  assert.deepEqual(error.reasons, ['length']);
  assert.equal(usersWith(email), '0');
});

test('the nulls auth-js sends in the implicit flow (code_challenge, code_challenge_method) are accepted', async (t) => {
  const { email, session } = await signedUp('nulls');
  const pkce = { code_challenge: null, code_challenge_method: null, gotrue_meta_security: {} };
  const cases = [
    ['POST /signup', 'POST', '/signup', { email: uniqueEmail('nulls-signup'), password: PASSWORD, data: {}, ...pkce }, 200],
    ['POST /otp', 'POST', '/otp', { email, data: {}, create_user: false, ...pkce }, 200],
    ['POST /recover', 'POST', '/recover', { email: uniqueEmail('nulls-recover'), ...pkce }, 200],
    ['POST /resend', 'POST', '/resend', { email: uniqueEmail('nulls-resend'), type: 'signup', ...pkce }, 200],
    ['PUT /user', 'PUT', '/user', { data: { n: 1 }, ...pkce }, 200, session.access_token],
  ];
  for (const [name, method, path, body, status, token] of cases) {
    await t.test(name, async () => {
      const r = await authFetch(server, path, { method, body, token });
      assert.equal(r.status, status, r.text);
    });
  }
});

test('malformed JSON is 400 bad_json', async () => {
  for (const rawBody of ['{"email":', 'not json', '[1,2', '{"email": "a@example.com",}']) {
    const r = await authFetch(server, '/signup', { method: 'POST', rawBody });
    assert.equal(r.status, 400, `${rawBody}: ${r.text}`);
    assert.equal(r.body.code, 'bad_json', rawBody);
    assert.ok(r.body.message.startsWith('Could not parse request body as JSON'), r.body.message);
    assert.equal(r.headers.get('x-sb-error-code'), 'bad_json');
  }
  const legacy = await authFetch(server, '/token?grant_type=password', { method: 'POST', rawBody: '{', version: false });
  assert.equal(legacy.status, 400);
  assert.equal(legacy.body.code, 400);
  assert.equal(legacy.body.error_code, 'bad_json');
  assert.ok(legacy.body.msg.startsWith('Could not parse request body as JSON'));
});

test('wrong JSON types are 400 bad_json and create nothing', async () => {
  const email = uniqueEmail('types');
  const cases = [
    ['/signup', { email: 12345, password: PASSWORD }],
    ['/signup', { email, password: ['not', 'a', 'string'] }],
    ['/signup', { email, password: PASSWORD, data: 'not an object' }],
    ['/token?grant_type=password', { email: { nested: true }, password: PASSWORD }],
    ['/token?grant_type=refresh_token', { refresh_token: 42 }],
    ['/otp', { email, create_user: 'yes' }],
    ['/verify', { type: 'signup', email, token: 123456 }],
  ];
  for (const [path, body] of cases) {
    const r = await post(path, body);
    assert.equal(r.status, 400, `${path} ${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.body.code, 'bad_json', `${path} ${JSON.stringify(body)}`);
  }
  assert.equal(usersWith(email), '0');
});

test('missing and inconsistent fields', async (t) => {
  const email = uniqueEmail('missing');
  const vf = (message) => ({ code: 'validation_failed', message });
  // [case, path, body, status, GoTrue's body]
  const cases = [
    ['signup without a password', '/signup', { email }, 400, vf('Signup requires a valid password')],
    ['signup with email and phone', '/signup', { email, phone: '15555550123', password: PASSWORD }, 400,
      vf('Only an email address or phone number should be provided on signup.')],
    // No email and no phone is an anonymous sign-in, off here.
    ['signup with neither (anonymous, disabled)', '/signup', { password: PASSWORD }, 422,
      { code: 'anonymous_provider_disabled', message: 'Anonymous sign-ins are disabled' }],
    ['password grant without email or phone', '/token?grant_type=password', { password: PASSWORD }, 400, vf('missing email or phone')],
    ['password grant with email and phone', '/token?grant_type=password', { email, phone: '15555550123', password: PASSWORD }, 400,
      vf('Only an email address or phone number should be provided on login.')],
    ['unsupported grant type', '/token?grant_type=magic', {}, 400, { code: 'invalid_credentials', message: 'unsupported_grant_type' }],
    ['refresh grant without a token', '/token?grant_type=refresh_token', {}, 400, vf('Refresh token is not valid')],
    ['refresh grant with a too-short token', '/token?grant_type=refresh_token', { refresh_token: 'abc' }, 400, vf('Refresh token is not valid')],
    ['refresh grant with an unknown token', '/token?grant_type=refresh_token', { refresh_token: 'zzzzzzzzzzzz' }, 400,
      { code: 'refresh_token_not_found', message: 'Invalid Refresh Token: Refresh Token Not Found' }],
    ['pkce grant without a verifier', '/token?grant_type=pkce', { auth_code: '00000000-0000-4000-8000-000000000000' }, 400,
      vf('invalid request: both auth code and code verifier should be non-empty')],
    ['pkce grant with an unknown code', '/token?grant_type=pkce', { auth_code: '00000000-0000-4000-8000-000000000000', code_verifier: 'v'.repeat(43) }, 404,
      { code: 'flow_state_not_found', message: 'invalid flow state, no valid flow state found' }],
    ['verify without a type', '/verify', { email, token: '123456' }, 400, vf('Verify requires a verification type')],
    ['verify without a token', '/verify', { email, type: 'signup' }, 400, vf('Verify requires either a token or a token hash')],
    ['verify with token_hash and email', '/verify', { token_hash: 'abc', type: 'signup', email }, 400,
      vf('Only the token_hash and type should be provided')],
    ['PKCE challenge without its method', '/signup', { email, password: PASSWORD, code_challenge: 'a'.repeat(43) }, 400,
      vf('PKCE flow requires code_challenge_method and code_challenge')],
    ['PKCE challenge too short', '/signup', { email, password: PASSWORD, code_challenge: 'short', code_challenge_method: 's256' }, 400,
      vf('code challenge has to be between 43 and 128 characters')],
    ['otp without email or phone', '/otp', {}, 400, vf('One of email or phone must be set')],
    ['otp with email and phone', '/otp', { email, phone: '15555550123' }, 400,
      vf('Only an email address or phone number should be provided')],
  ];
  for (const [name, path, body, status, expected] of cases) {
    await t.test(name, async () => {
      const r = await post(path, body);
      assert.equal(r.status, status, r.text);
      assert.deepEqual(r.body, expected);
    });
  }
  await t.test('signInAnonymously when disabled (auth-js)', async () => {
    const viaClient = await client(server, ANON_KEY).auth.signInAnonymously();
    assert.equal(viaClient.error?.status, 422);
    assert.equal(viaClient.error.code, 'anonymous_provider_disabled');
  });
  await t.test('nothing was created', () => assert.equal(usersWith(email), '0'));
});

test('over-long or malformed email, password and metadata are refused and create nothing', async (t) => {
  await t.test('email over 255 characters: 400 validation_failed', async () => {
    const longEmail = `${'a'.repeat(250)}@example.com`;
    const r = await post('/signup', { email: longEmail, password: PASSWORD });
    assert.equal(r.status, 400);
    assert.deepEqual(r.body, { code: 'validation_failed', message: 'An email address is too long' });
    assert.equal(usersWith(longEmail), '0');
  });
  await t.test('password over 72 characters: 400 validation_failed', async () => {
    const addr = uniqueEmail('longpw');
    const pw = await client(server, ANON_KEY).auth.signUp({ email: addr, password: 'p'.repeat(73) });
    assert.equal(pw.error?.status, 400);
    assert.equal(pw.error.code, 'validation_failed');
    assert.equal(pw.error.message, 'Password cannot be longer than 72 characters');
    assert.equal(usersWith(addr), '0');
  });
  await t.test('malformed email: 400 validation_failed', async () => {
    const invalid = await post('/signup', { email: 'not-an-email', password: PASSWORD });
    assert.equal(invalid.status, 400);
    assert.equal(invalid.body.code, 'validation_failed', invalid.text);
    assert.ok(invalid.body.message.startsWith('Unable to validate email address'), invalid.body.message);
    assert.equal(usersWith('not-an-email'), '0');
  });
  await t.test('metadata over the 1 MiB body limit on sign-up: 413 request_entity_too_large', async () => {
    const meta = uniqueEmail('bigmeta');
    const big = await client(server, ANON_KEY).auth.signUp({
      email: meta,
      password: PASSWORD,
      options: { data: { blob: 'x'.repeat(1_100_000) } },
    });
    assert.equal(big.error?.status, 413);
    assert.equal(big.error.code, 'request_entity_too_large');
    assert.equal(usersWith(meta), '0');
  });
  await t.test('metadata over the body limit on PUT /user: 413', async () => {
    const { supabase, user } = await signedUp('bigupdate');
    const update = await supabase.auth.updateUser({ data: { blob: 'y'.repeat(1_100_000) } });
    assert.equal(update.error?.status, 413);
    assert.equal(update.error.code, 'request_entity_too_large');
    assert.equal(server.sql(`select raw_user_meta_data ? 'blob' from auth.users where id = '${user.id}'`).trim(), 'f');
  });
});

test('bad tokens on GET /user: none, garbage, forged, alg none, expired, unknown user or session', async (t) => {
  const { user, session } = await signedUp('tokens');
  const claims = decodeJwt(session.access_token);
  const now = Math.floor(Date.now() / 1000);
  const base = { ...claims };
  delete base.header;

  await t.test('no bearer: 401 no_authorization', async () => {
    const none = await authFetch(server, '/user', { token: null });
    assert.equal(none.status, 401);
    assert.deepEqual(none.body, { code: 'no_authorization', message: 'This endpoint requires a valid Bearer token' });
  });

  const prefix = 'invalid JWT: unable to parse or verify signature, ';
  const [h, p, sig] = session.access_token.split('.');
  const tampered = Buffer.from(JSON.stringify({ ...base, role: 'service_role' })).toString('base64url');
  const cases = [
    ['garbage', 'garbage'],
    ['signed with another secret', signJwt(base, 'another-secret-that-is-at-least-32-characters')],
    ['alg none', makeJwt({ alg: 'none', typ: 'JWT' }, base)],
    ['signature stripped', `${h}.${p}.`],
    ['payload tampered', `${h}.${tampered}.${sig}`],
    ['expired', signJwt({ ...base, iat: now - 7200, exp: now - 3600 }), `${prefix}token has invalid claims: token is expired`],
  ];
  for (const [name, token, message] of cases) {
    await t.test(`${name}: 403 bad_jwt`, async () => {
      const r = await authFetch(server, '/user', { token });
      assert.equal(r.status, 403, r.text);
      assert.equal(r.body.code, 'bad_jwt');
      assert.ok(r.body.message.startsWith(prefix), r.body.message);
      if (message) assert.equal(r.body.message, message);
      const viaClient = await client(server, ANON_KEY).auth.getUser(token);
      assert.equal(viaClient.data.user, null);
      assert.equal(viaClient.error?.status, 403);
      assert.equal(viaClient.error.code, 'bad_jwt');
    });
  }

  await t.test('a user that does not exist: 403 user_not_found', async () => {
    const ghost = await authFetch(server, '/user', {
      token: signJwt({ ...base, sub: '00000000-0000-4000-8000-00000000abcd', session_id: undefined }),
    });
    assert.equal(ghost.status, 403);
    assert.deepEqual(ghost.body, { code: 'user_not_found', message: 'User from sub claim in JWT does not exist' });
  });
  await t.test('a session that does not exist: 403 session_not_found', async () => {
    const noSession = await authFetch(server, '/user', {
      token: signJwt({ ...base, sub: user.id, session_id: '00000000-0000-4000-8000-00000000dcba' }),
    });
    assert.equal(noSession.status, 403);
    assert.deepEqual(noSession.body, { code: 'session_not_found', message: 'Session from session_id claim in JWT does not exist' });
  });
  await t.test('a sub that is not a UUID: 400 bad_jwt', async () => {
    const notUuid = await authFetch(server, '/user', { token: signJwt({ ...base, sub: 'not-a-uuid' }) });
    assert.equal(notUuid.status, 400, notUuid.text);
    assert.deepEqual(notUuid.body, { code: 'bad_jwt', message: 'invalid claim: sub claim must be a UUID' });
  });
  await t.test('PUT /user and POST /logout refuse the same way', async () => {
    const put = await authFetch(server, '/user', { method: 'PUT', token: 'garbage', body: { data: { a: 1 } } });
    assert.equal(put.status, 403);
    assert.equal(put.body.code, 'bad_jwt');
    const logout = await authFetch(server, '/logout', { method: 'POST', token: null });
    assert.equal(logout.status, 401);
    assert.equal(logout.body.code, 'no_authorization');
  });
});

test('a replayed refresh token (no reuse interval) is refresh_token_already_used', async () => {
  const { session } = await signedUp('replay-rt');
  const rt0 = session.refresh_token;
  const r1 = await post('/token?grant_type=refresh_token', { refresh_token: rt0 });
  assert.equal(r1.status, 200);
  const r2 = await post('/token?grant_type=refresh_token', { refresh_token: r1.body.refresh_token });
  assert.equal(r2.status, 200);
  const replay = await post('/token?grant_type=refresh_token', { refresh_token: rt0 });
  assert.equal(replay.status, 400);
  assert.deepEqual(replay.body, { code: 'refresh_token_already_used', message: 'Invalid Refresh Token: Already Used' });
  // The family is revoked: the latest token is refused too.
  const latest = await post('/token?grant_type=refresh_token', { refresh_token: r2.body.refresh_token });
  assert.equal(latest.status, 400);
  assert.equal(latest.body.code, 'refresh_token_already_used');
});

test('a replayed OTP and a verify type that does not match the token are 403 otp_expired', async () => {
  const admin = client(server, SERVICE_ROLE_KEY).auth.admin;
  const email = uniqueEmail('otp-type');
  const link = await admin.generateLink({ type: 'signup', email, password: PASSWORD });
  assert.equal(link.error, null);
  const otp = link.data.properties.email_otp;

  const mismatch = await post('/verify', { email, token: otp, type: 'recovery' });
  assert.equal(mismatch.status, 403);
  assert.deepEqual(mismatch.body, { code: 'otp_expired', message: 'Token has expired or is invalid' });
  const bogus = await post('/verify', { email, token: otp, type: 'bogus' });
  assert.equal(bogus.status, 403);
  assert.equal(bogus.body.code, 'otp_expired');
  const hashMismatch = await client(server, ANON_KEY).auth.verifyOtp({
    token_hash: link.data.properties.hashed_token,
    type: 'recovery',
  });
  assert.equal(hashMismatch.error?.status, 403);
  assert.equal(hashMismatch.error.code, 'otp_expired');
  assert.equal(hashMismatch.error.message, 'Email link is invalid or has expired');

  const supabase = client(server, ANON_KEY);
  const ok = await supabase.auth.verifyOtp({ email, token: otp, type: 'signup' });
  assert.equal(ok.error, null);
  const replay = await client(server, ANON_KEY).auth.verifyOtp({ email, token: otp, type: 'signup' });
  assert.equal(replay.data.session, null);
  assert.equal(replay.error?.status, 403);
  assert.equal(replay.error.code, 'otp_expired');
  assert.equal(replay.error.message, 'Token has expired or is invalid');

  const wrongCode = await post('/verify', { email: uniqueEmail('nobody'), token: '000000', type: 'email' });
  assert.equal(wrongCode.status, 403);
  assert.equal(wrongCode.body.code, 'otp_expired');
});

test('redirect_to outside the allow list falls back to site_url', async () => {
  const admin = client(server, SERVICE_ROLE_KEY).auth.admin;
  const { email } = await signedUp('redirect');
  const evil = await admin.generateLink({ type: 'magiclink', email, options: { redirectTo: 'https://evil.example.org/x' } });
  assert.equal(evil.error, null);
  assert.equal(evil.data.properties.redirect_to, SITE_URL);
  assert.ok(!evil.data.properties.action_link.includes('evil.example.org'));

  const allowed = await admin.generateLink({ type: 'magiclink', email, options: { redirectTo: 'http://localhost:5173/cb' } });
  assert.equal(allowed.data.properties.redirect_to, 'http://localhost:5173/cb');

  // A link whose redirect_to points elsewhere redirects to site_url.
  const r = await fetch(
    `${server.url}/auth/v1/verify?token=${allowed.data.properties.hashed_token}&type=magiclink&redirect_to=${encodeURIComponent('https://evil.example.org/x')}`,
    { redirect: 'manual' },
  );
  assert.equal(r.status, 303);
  const location = r.headers.get('location');
  assert.ok(location.startsWith(SITE_URL), location);
  assert.ok(urlParams(location).fragment.access_token);

  // A GET /verify with a bad token still redirects, with the error in the fragment.
  const bad = await fetch(`${server.url}/auth/v1/verify?token=nope&type=magiclink&redirect_to=${encodeURIComponent('http://localhost:5173/cb')}`, {
    redirect: 'manual',
  });
  assert.equal(bad.status, 303);
  const failed = urlParams(bad.headers.get('location'));
  assert.equal(failed.base, 'http://localhost:5173/cb');
  assert.equal(failed.fragment.error_code, 'otp_expired');
  assert.equal(failed.fragment.error, 'access_denied');
});

test('a sign-up refused for any reason leaves no user, identity or session behind', async () => {
  const before = server.sql('select (select count(*) from auth.users) || \',\' || (select count(*) from auth.identities) || \',\' || (select count(*) from auth.sessions)').trim();
  const email = uniqueEmail('atomic');
  await post('/signup', { email, password: '1' });
  await post('/signup', { email, password: 'p'.repeat(80) });
  await post('/signup', { email, password: PASSWORD, data: 'x' });
  await post('/signup', { email, password: PASSWORD, code_challenge: 'short', code_challenge_method: 's256' });
  await authFetch(server, '/signup', { method: 'POST', rawBody: `{"email":"${email}","password":"${PASSWORD}"` });
  const after = server.sql('select (select count(*) from auth.users) || \',\' || (select count(*) from auth.identities) || \',\' || (select count(*) from auth.sessions)').trim();
  assert.equal(after, before);
  assert.equal(usersWith(email), '0');
});
