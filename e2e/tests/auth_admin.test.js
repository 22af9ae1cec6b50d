// `supabase.auth.admin` (service role) against MadBase: listUsers paging, createUser,
// getUserById, updateUserById (metadata, password, bans), deleteUser (hard and soft), the MFA
// factors admin, and the mail outbox (`GET /auth/v1/admin/mail`) that stands in for SMTP when
// none is configured. Expectations are GoTrue's (reference/auth.md §3.2).
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
} from './support.js';

let server;
let admin;
const PASSWORD = 'correct-horse-battery';

before(async () => {
  // No SMTP server: mail goes to the log and the outbox. Confirmations on, for the outbox test.
  server = await startMadbase({ env: { ...AUTH_TEST_ENV, MADBASE_AUTH_EMAIL_ENABLE_CONFIRMATIONS: 'true' } });
  admin = client(server, SERVICE_ROLE_KEY).auth.admin;
});

after(async () => {
  await server?.stop();
});

async function createUser(attrs = {}) {
  const email = attrs.email ?? uniqueEmail('admin');
  const { data, error } = await admin.createUser({ email, password: PASSWORD, email_confirm: true, ...attrs });
  assert.equal(error, null, error?.message);
  return data.user;
}

async function signIn(email, password = PASSWORD) {
  return client(server, ANON_KEY).auth.signInWithPassword({ email, password });
}

test('listUsers pages newest first with nextPage, lastPage and total', async () => {
  // First test of the file: these are the only users.
  const made = [];
  for (let i = 0; i < 5; i++) made.push(await createUser({ email: uniqueEmail(`list${i}`) }));
  const page1 = await admin.listUsers({ page: 1, perPage: 2 });
  assert.equal(page1.error, null);
  assert.equal(page1.data.aud, 'authenticated');
  assert.equal(page1.data.total, 5);
  assert.equal(page1.data.nextPage, 2);
  assert.equal(page1.data.lastPage, 3);
  assert.deepEqual(
    page1.data.users.map((u) => u.id),
    [made[4].id, made[3].id],
  );
  const page2 = await admin.listUsers({ page: 2, perPage: 2 });
  assert.deepEqual(
    page2.data.users.map((u) => u.id),
    [made[2].id, made[1].id],
  );
  assert.equal(page2.data.nextPage, 3);
  const page3 = await admin.listUsers({ page: 3, perPage: 2 });
  assert.deepEqual(
    page3.data.users.map((u) => u.id),
    [made[0].id],
  );
  assert.equal(page3.data.nextPage, null);
  assert.equal(page3.data.lastPage, 3);
  assert.equal(page3.data.total, 5);

  // The raw answer: X-Total-Count and Link as GoTrue writes them.
  const raw = await authFetch(server, '/admin/users?page=1&per_page=2', { key: SERVICE_ROLE_KEY });
  assert.equal(raw.status, 200);
  assert.equal(raw.headers.get('x-total-count'), '5');
  const link = raw.headers.get('link');
  assert.match(link, /<[^>]*\/admin\/users\?page=2&per_page=2>; rel="next"/);
  assert.match(link, /<[^>]*\/admin\/users\?page=3&per_page=2>; rel="last"/);
  const last = await authFetch(server, '/admin/users?page=3&per_page=2', { key: SERVICE_ROLE_KEY });
  assert.doesNotMatch(last.headers.get('link'), /rel="next"/);
  assert.match(last.headers.get('link'), /rel="last"/);

  const all = await admin.listUsers();
  assert.equal(all.data.users.length, 5);
});

test('createUser: a confirmed user with metadata that can sign in; duplicates are 422 email_exists', async () => {
  const email = uniqueEmail('create');
  const { data, error } = await admin.createUser({
    email,
    password: PASSWORD,
    email_confirm: true,
    user_metadata: { name: 'Created' },
    app_metadata: { plan: 'pro' },
  });
  assert.equal(error, null);
  const user = data.user;
  assert.match(user.id, /^[0-9a-f-]{36}$/);
  assert.equal(user.email, email);
  assert.equal(user.aud, 'authenticated');
  assert.equal(user.role, 'authenticated');
  assert.ok(user.email_confirmed_at);
  assert.equal(user.is_anonymous, false);
  assert.equal(user.user_metadata.name, 'Created');
  assert.deepEqual(user.app_metadata, { provider: 'email', providers: ['email'], plan: 'pro' });
  assert.equal(user.identities.length, 1);
  assert.equal(user.identities[0].provider, 'email');

  const signedIn = await signIn(email);
  assert.equal(signedIn.error, null);
  assert.equal(decodeJwt(signedIn.data.session.access_token).app_metadata.plan, 'pro');

  const dup = await admin.createUser({ email, password: PASSWORD });
  assert.equal(dup.data.user, null);
  assert.equal(dup.error?.status, 422);
  assert.equal(dup.error.code, 'email_exists');
  assert.equal(dup.error.message, 'A user with this email address has already been registered');

  // Without email_confirm the user exists but cannot sign in with a password yet.
  const unconfirmed = uniqueEmail('unconfirmed');
  const made = await admin.createUser({ email: unconfirmed, password: PASSWORD });
  assert.equal(made.error, null);
  assert.equal(made.data.user.email_confirmed_at, undefined);
  const refused = await signIn(unconfirmed);
  assert.equal(refused.error?.code, 'email_not_confirmed');

  // The admin is not held to the password policy on create (GoTrue's adminUserCreate).
  const short = await admin.createUser({ email: uniqueEmail('short'), password: '123', email_confirm: true });
  assert.equal(short.error, null);

  const neither = await admin.createUser({ password: PASSWORD });
  assert.equal(neither.error?.status, 400);
  assert.equal(neither.error.code, 'validation_failed');
  assert.equal(neither.error.message, 'Cannot create a user without either an email or phone');
});

test('getUserById returns the user; an unknown id is 404 user_not_found', async () => {
  const made = await createUser();
  const { data, error } = await admin.getUserById(made.id);
  assert.equal(error, null);
  assert.equal(data.user.id, made.id);
  assert.equal(data.user.email, made.email);
  const missing = await admin.getUserById('00000000-0000-4000-8000-000000000001');
  assert.equal(missing.data.user, null);
  assert.equal(missing.error?.status, 404);
  assert.equal(missing.error.code, 'user_not_found');
  assert.equal(missing.error.message, 'User not found');
});

test('updateUserById merges metadata and changes the password', async () => {
  const made = await createUser({ user_metadata: { a: 1 } });
  const { data, error } = await admin.updateUserById(made.id, {
    user_metadata: { b: 2 },
    app_metadata: { tier: 'gold' },
    password: 'a-different-password',
  });
  assert.equal(error, null);
  // Merged; email_verified is GoTrue's own mark of a confirmed address (User.Confirm).
  assert.deepEqual(data.user.user_metadata, { a: 1, b: 2, email_verified: true });
  assert.equal(data.user.app_metadata.tier, 'gold');
  assert.equal(data.user.app_metadata.provider, 'email');
  assert.equal((await signIn(made.email)).error?.code, 'invalid_credentials');
  assert.equal((await signIn(made.email, 'a-different-password')).error, null);

  // On update the policy applies.
  const weak = await admin.updateUserById(made.id, { password: '123' });
  assert.equal(weak.error?.name, 'AuthWeakPasswordError');
  assert.equal(weak.error.status, 422);
  assert.equal(weak.error.code, 'weak_password');
  assert.deepEqual(weak.error.reasons, ['length']);
});

test("updateUserById ban_duration: sign-in, refresh and /user are refused with user_banned; 'none' lifts it", async () => {
  const made = await createUser();
  const before = await signIn(made.email);
  assert.equal(before.error, null);

  const banned = await admin.updateUserById(made.id, { ban_duration: '24h' });
  assert.equal(banned.error, null);
  const until = Date.parse(banned.data.user.banned_until);
  assert.ok(until > Date.now() + 23 * 3600_000 && until < Date.now() + 25 * 3600_000, banned.data.user.banned_until);

  const refused = await signIn(made.email);
  assert.equal(refused.data.session, null);
  assert.equal(refused.error?.status, 400);
  assert.equal(refused.error.code, 'user_banned');
  assert.equal(refused.error.message, 'User is banned');

  const refresh = await authFetch(server, '/token?grant_type=refresh_token', {
    method: 'POST',
    body: { refresh_token: before.data.session.refresh_token },
  });
  assert.equal(refresh.status, 400);
  assert.deepEqual(refresh.body, { code: 'user_banned', message: 'Invalid Refresh Token: User Banned' });

  const me = await authFetch(server, '/user', { token: before.data.session.access_token });
  assert.equal(me.status, 403);
  assert.deepEqual(me.body, { code: 'user_banned', message: 'User is banned' });

  const badDuration = await admin.updateUserById(made.id, { ban_duration: 'forever' });
  assert.equal(badDuration.error?.status, 400);
  assert.equal(badDuration.error.code, 'validation_failed');

  const lifted = await admin.updateUserById(made.id, { ban_duration: 'none' });
  assert.equal(lifted.error, null);
  assert.equal(lifted.data.user.banned_until, undefined);
  assert.equal((await signIn(made.email)).error, null);
});

test('deleteUser (hard): the user, its sessions and identities are gone', async () => {
  const made = await createUser();
  const session = (await signIn(made.email)).data.session;
  const { error } = await admin.deleteUser(made.id);
  assert.equal(error, null);
  const gone = await admin.getUserById(made.id);
  assert.equal(gone.error?.status, 404);
  assert.equal(gone.error.code, 'user_not_found');
  assert.equal(server.sql(`select count(*) from auth.identities where user_id = '${made.id}'`).trim(), '0');
  assert.equal(server.sql(`select count(*) from auth.sessions where user_id = '${made.id}'`).trim(), '0');
  const me = await client(server, ANON_KEY).auth.getUser(session.access_token);
  assert.equal(me.data.user, null);
  assert.equal(me.error?.status, 403);
  assert.equal(me.error.code, 'user_not_found');
  assert.equal((await signIn(made.email)).error?.code, 'invalid_credentials');
  const again = await admin.deleteUser(made.id);
  assert.equal(again.error?.status, 404);
});

test('deleteUser (soft): the row stays with deleted_at, and the user can no longer sign in', async () => {
  const made = await createUser();
  const { error } = await admin.deleteUser(made.id, true);
  assert.equal(error, null);
  assert.equal(server.sql(`select deleted_at is not null from auth.users where id = '${made.id}'`).trim(), 't');
  assert.equal((await signIn(made.email)).error?.code, 'invalid_credentials');
  // GoTrue obfuscates the address and clears the password of a soft-deleted user.
  assert.notEqual(server.sql(`select coalesce(email, '') from auth.users where id = '${made.id}'`).trim(), made.email);
  assert.equal(server.sql(`select coalesce(encrypted_password, '') from auth.users where id = '${made.id}'`).trim(), '');
});

test('admin endpoints refuse a non-admin key with 403 not_admin', async () => {
  const anonAdmin = client(server, ANON_KEY).auth.admin;
  const list = await anonAdmin.listUsers();
  assert.equal(list.error?.status, 403);
  assert.equal(list.error.code, 'not_admin');
  assert.equal(list.error.message, 'User not allowed');
  const made = await createUser();
  const userToken = (await signIn(made.email)).data.session.access_token;
  const r = await authFetch(server, '/admin/users', { token: userToken });
  assert.equal(r.status, 403);
  assert.deepEqual(r.body, { code: 'not_admin', message: 'User not allowed' });
  const noBearer = await authFetch(server, '/admin/users', { token: null });
  assert.equal(noBearer.status, 401);
  assert.equal(noBearer.body.code, 'no_authorization');
});

test('admin.mfa.listFactors and deleteFactor', async () => {
  const made = await createUser();
  const supabase = client(server, ANON_KEY);
  await supabase.auth.signInWithPassword({ email: made.email, password: PASSWORD });
  const enrolled = await supabase.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'phone app' });
  assert.equal(enrolled.error, null);

  const listed = await admin.mfa.listFactors({ userId: made.id });
  assert.equal(listed.error, null);
  assert.equal(listed.data.factors.length, 1);
  const [factor] = listed.data.factors;
  assert.equal(factor.id, enrolled.data.id);
  assert.equal(factor.factor_type, 'totp');
  assert.equal(factor.friendly_name, 'phone app');
  assert.equal(factor.status, 'unverified');

  const deleted = await admin.mfa.deleteFactor({ userId: made.id, id: factor.id });
  assert.equal(deleted.error, null);
  // auth-js 2.119.1 hands the deleted factor back wrapped once more ({data: factor, error: null}).
  assert.equal(deleted.data.data.id, factor.id);
  const after = await admin.mfa.listFactors({ userId: made.id });
  assert.deepEqual(after.data.factors, []);

  const missing = await admin.mfa.deleteFactor({ userId: made.id, id: factor.id });
  assert.equal(missing.error?.status, 404);
  assert.equal(missing.error.code, 'mfa_factor_not_found');
  assert.equal(missing.error.message, 'Factor not found');
});

async function outbox() {
  const r = await authFetch(server, '/admin/mail', { key: SERVICE_ROLE_KEY });
  assert.equal(r.status, 200, r.text);
  const list = Array.isArray(r.body) ? r.body : (r.body.messages ?? r.body.mail ?? r.body.items);
  assert.ok(Array.isArray(list), `the outbox is a list: ${r.text.slice(0, 200)}`);
  return list;
}

test('without SMTP, GET /auth/v1/admin/mail (service role) holds the mail and lets a sign-up finish', async () => {
  const email = uniqueEmail('outbox');
  const supabase = client(server, ANON_KEY);
  const signedUp = await supabase.auth.signUp({ email, password: PASSWORD });
  assert.equal(signedUp.error, null);
  assert.equal(signedUp.data.session, null);

  let message;
  for (let i = 0; i < 50 && !message; i++) {
    message = (await outbox()).find((m) => m.to === email);
    if (!message) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(message, 'the confirmation mail is in the outbox');
  assert.equal(message.kind, 'confirmation');
  assert.match(message.token, /^\d{6}$/);
  assert.ok(message.confirmation_url.startsWith(`${server.url}/auth/v1/verify?`), message.confirmation_url);
  assert.ok(message.subject);

  const { data, error } = await supabase.auth.verifyOtp({ email, token: message.token, type: 'signup' });
  assert.equal(error, null);
  assert.equal(data.user.email, email);
  assert.ok(data.session.access_token);

  const anon = await authFetch(server, '/admin/mail');
  assert.equal(anon.status, 403);
  assert.equal(anon.body.code, 'not_admin');
});
