// Auth sessions through the unmodified supabase-js client (`supabase.auth`): sign-up with
// auto-confirm, password sign-in, getUser/getSession, refresh-token rotation and reuse, sign-out
// scopes, the access token's claims, auth.uid() under RLS on /rest/v1, anonymous users, Postgres
// hooks, users seeded by SQL, triggers on auth.users, getClaims and the JWKS. One server, real
// PostgreSQL; expectations are GoTrue's (reference/auth.md).
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
  sleep,
} from './support.js';

let server;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const PASSWORD = 'correct-horse-battery';

before(async () => {
  server = await startMadbase({
    env: {
      ...AUTH_TEST_ENV,
      MADBASE_AUTH_ENABLE_ANONYMOUS_SIGN_INS: 'true',
      MADBASE_AUTH_REFRESH_TOKEN_REUSE_INTERVAL: '1',
      MADBASE_AUTH_HOOK_CUSTOM_ACCESS_TOKEN_ENABLED: 'true',
      MADBASE_AUTH_HOOK_CUSTOM_ACCESS_TOKEN_URI: 'pg-functions://postgres/public/custom_access_token_hook',
      MADBASE_AUTH_HOOK_BEFORE_USER_CREATED_ENABLED: 'true',
      MADBASE_AUTH_HOOK_BEFORE_USER_CREATED_URI: 'pg-functions://postgres/public/before_user_created_hook',
    },
  });
  server.sql(`
    -- Hooks as Supabase documents them: functions Auth's role may execute.
    create function public.custom_access_token_hook(event jsonb) returns jsonb
      language plpgsql stable as $$
    begin
      return jsonb_build_object('claims', (event->'claims') || jsonb_build_object(
        'team', 'e2e', 'hook_user_id', event->>'user_id', 'hook_method', event->>'authentication_method'));
    end $$;
    create function public.before_user_created_hook(event jsonb) returns jsonb
      language plpgsql stable as $$
    begin
      if event->'user'->>'email' like '%@blocked.example.com' then
        return jsonb_build_object('error', jsonb_build_object(
          'http_code', 400, 'message', 'Sign-ups from this domain are not allowed'));
      end if;
      return '{}'::jsonb;
    end $$;
    grant usage on schema public to supabase_auth_admin;
    grant execute on function public.custom_access_token_hook(jsonb), public.before_user_created_hook(jsonb)
      to supabase_auth_admin;
    revoke execute on function public.custom_access_token_hook(jsonb), public.before_user_created_hook(jsonb)
      from authenticated, anon, public;

    -- RLS by auth.uid() on the Data API.
    create table public.notes (
      id bigint generated always as identity primary key,
      user_id uuid not null default auth.uid(),
      body text not null
    );
    alter table public.notes enable row level security;
    create policy "own notes" on public.notes for all to authenticated
      using (auth.uid() = user_id) with check (auth.uid() = user_id);

    -- The handle_new_user trigger of Supabase's user-management quickstart.
    create table public.profiles (
      id uuid primary key references auth.users on delete cascade,
      email text,
      full_name text
    );
    create function public.handle_new_user() returns trigger
      language plpgsql security definer set search_path = '' as $$
    begin
      insert into public.profiles (id, email, full_name)
      values (new.id, new.email, new.raw_user_meta_data->>'full_name');
      return new;
    end $$;
    create trigger on_auth_user_created after insert on auth.users
      for each row execute procedure public.handle_new_user();
  `);
  await server.waitForRelation('notes');
});

after(async () => {
  await server?.stop();
});

async function signUp(email = uniqueEmail(), data = {}) {
  const supabase = client(server, ANON_KEY);
  const res = await supabase.auth.signUp({ email, password: PASSWORD, options: { data } });
  assert.equal(res.error, null, `sign-up of ${email} failed: ${res.error?.message}`);
  return { supabase, email, user: res.data.user, session: res.data.session };
}

async function signIn(email) {
  const supabase = client(server, ANON_KEY);
  const res = await supabase.auth.signInWithPassword({ email, password: PASSWORD });
  assert.equal(res.error, null, `sign-in of ${email} failed: ${res.error?.message}`);
  return { supabase, session: res.data.session, user: res.data.user };
}

function refresh(refresh_token) {
  return authFetch(server, '/token?grant_type=refresh_token', { method: 'POST', body: { refresh_token } });
}

test('signUp with auto-confirm returns a session and a confirmed email user', async () => {
  const email = uniqueEmail('signup');
  const { user, session } = await signUp(email, { full_name: 'Ada Lovelace' });
  assert.ok(session, 'auto-confirm returns a session');
  assert.equal(session.token_type, 'bearer');
  assert.equal(session.expires_in, 3600);
  assert.equal(typeof session.refresh_token, 'string');
  assert.ok(session.refresh_token.length > 0);
  assert.equal(typeof session.expires_at, 'number');
  assert.equal(session.user.id, user.id);

  assert.match(user.id, UUID);
  assert.equal(user.aud, 'authenticated');
  assert.equal(user.role, 'authenticated');
  assert.equal(user.email, email);
  assert.equal(user.phone, '');
  assert.equal(user.is_anonymous, false);
  assert.ok(user.email_confirmed_at, 'email_confirmed_at is set');
  assert.ok(user.confirmed_at, 'confirmed_at is set');
  assert.ok(user.last_sign_in_at, 'last_sign_in_at is set');
  assert.ok(!Number.isNaN(Date.parse(user.created_at)));
  assert.ok(!Number.isNaN(Date.parse(user.updated_at)));
  assert.deepEqual(user.app_metadata, { provider: 'email', providers: ['email'] });
  // GoTrue's sign-up makes the identity data the user metadata (RemoveUnconfirmedIdentities):
  // the claims of the email identity plus the sign-up data; confirming sets email_verified.
  assert.deepEqual(user.user_metadata, {
    email,
    email_verified: true,
    full_name: 'Ada Lovelace',
    phone_verified: false,
    sub: user.id,
  });
  assert.equal(user.identities.length, 1);
  const [identity] = user.identities;
  assert.equal(identity.provider, 'email');
  assert.equal(identity.user_id, user.id);
  assert.equal(identity.id, user.id);
  assert.match(identity.identity_id, UUID);
  assert.equal(identity.email, email);
  assert.equal(identity.identity_data.email, email);
  assert.equal(identity.identity_data.sub, user.id);
  assert.equal(identity.identity_data.full_name, 'Ada Lovelace');
});

test('signUp with an address already registered is 422 user_already_exists', async () => {
  const { email } = await signUp(uniqueEmail('dup'));
  const { data, error } = await client(server, ANON_KEY).auth.signUp({ email, password: PASSWORD });
  assert.equal(data.user, null);
  assert.equal(error?.name, 'AuthApiError');
  assert.equal(error.status, 422);
  assert.equal(error.code, 'user_already_exists');
  assert.equal(error.message, 'User already registered');
});

test('signInWithPassword, getUser and getSession', async () => {
  const { email, user } = await signUp(uniqueEmail('signin'));
  const { supabase, session } = await signIn(email);
  assert.equal(session.user.id, user.id);
  assert.equal(session.user.email, email);

  const got = await supabase.auth.getUser();
  assert.equal(got.error, null);
  assert.equal(got.data.user.id, user.id);
  assert.equal(got.data.user.email, email);
  assert.deepEqual(got.data.user.app_metadata, { provider: 'email', providers: ['email'] });

  const stored = await supabase.auth.getSession();
  assert.equal(stored.error, null);
  assert.equal(stored.data.session.access_token, session.access_token);
  assert.equal(stored.data.session.refresh_token, session.refresh_token);

  const wrong = await client(server, ANON_KEY).auth.signInWithPassword({ email, password: 'not-the-password' });
  assert.equal(wrong.data.session, null);
  assert.equal(wrong.error?.status, 400);
  assert.equal(wrong.error.code, 'invalid_credentials');
  assert.equal(wrong.error.message, 'Invalid login credentials');
  const unknown = await client(server, ANON_KEY).auth.signInWithPassword({ email: uniqueEmail('nobody'), password: PASSWORD });
  assert.equal(unknown.error?.status, 400);
  assert.equal(unknown.error.code, 'invalid_credentials');
  assert.equal(unknown.error.message, 'Invalid login credentials');
});

test('the access token carries GoTrue claims (and the custom access-token hook adds its own)', async () => {
  const { email, user } = await signUp(uniqueEmail('claims'));
  const { session } = await signIn(email);
  const claims = decodeJwt(session.access_token);
  assert.equal(claims.header.alg, 'HS256');
  assert.equal(claims.iss, `${server.url}/auth/v1`);
  assert.equal(claims.sub, user.id);
  assert.equal(claims.aud, 'authenticated');
  assert.equal(claims.role, 'authenticated');
  assert.equal(claims.email, email);
  assert.equal(claims.phone, '');
  assert.equal(claims.aal, 'aal1');
  assert.equal(claims.is_anonymous, false);
  assert.match(claims.session_id, UUID);
  assert.equal(claims.exp - claims.iat, 3600);
  assert.equal(session.expires_at, claims.exp);
  assert.deepEqual(claims.app_metadata, { provider: 'email', providers: ['email'] });
  assert.deepEqual(claims.user_metadata, user.user_metadata);
  assert.equal(claims.amr.length, 1);
  assert.equal(claims.amr[0].method, 'password');
  assert.equal(typeof claims.amr[0].timestamp, 'number');
  // The hook's additions.
  assert.equal(claims.team, 'e2e');
  assert.equal(claims.hook_user_id, user.id);
  assert.equal(claims.hook_method, 'password');
});

test('refreshSession rotates the refresh token; the parent of the active token gets the active token', async () => {
  const { email } = await signUp(uniqueEmail('rotate'));
  const { supabase, session } = await signIn(email);
  const refreshed = await supabase.auth.refreshSession();
  assert.equal(refreshed.error, null);
  const next = refreshed.data.session;
  assert.notEqual(next.refresh_token, session.refresh_token);
  assert.notEqual(next.access_token, session.access_token);
  assert.equal(next.user.email, email);
  assert.equal(decodeJwt(next.access_token).session_id, decodeJwt(session.access_token).session_id);
  const stored = await supabase.auth.getSession();
  assert.equal(stored.data.session.refresh_token, next.refresh_token);

  // A client that lost the answer presents the old token again: it gets the current one.
  const again = await refresh(session.refresh_token);
  assert.equal(again.status, 200, again.text);
  assert.equal(again.body.refresh_token, next.refresh_token);
  assert.equal(again.body.user.email, email);
  const claims = decodeJwt(again.body.access_token);
  assert.deepEqual(
    claims.amr.map((a) => a.method),
    ['password'],
  );
});

test('a revoked refresh token past the reuse interval is refresh_token_already_used and revokes the family', async () => {
  const { email } = await signUp(uniqueEmail('reuse'));
  const { session } = await signIn(email);
  const rt0 = session.refresh_token;
  const first = await refresh(rt0);
  assert.equal(first.status, 200, first.text);
  const second = await refresh(first.body.refresh_token);
  assert.equal(second.status, 200, second.text);
  const rt2 = second.body.refresh_token;
  await sleep(2100); // past MADBASE_AUTH_REFRESH_TOKEN_REUSE_INTERVAL=1

  // rt0 is revoked and not the parent of the active token: reuse.
  const reused = await refresh(rt0);
  assert.equal(reused.status, 400);
  assert.deepEqual(reused.body, { code: 'refresh_token_already_used', message: 'Invalid Refresh Token: Already Used' });
  assert.equal(reused.headers.get('x-sb-error-code'), 'refresh_token_already_used');
  const sessionId = decodeJwt(session.access_token).session_id;
  assert.equal(server.sql(`select count(*) from auth.refresh_tokens where session_id = '${sessionId}' and not revoked`).trim(), '0');

  // The family is revoked: the formerly active token is refused too once its interval is over.
  await sleep(2100);
  const family = await refresh(rt2);
  assert.equal(family.status, 400);
  assert.equal(family.body.code, 'refresh_token_already_used');

  // Through auth-js the error surfaces with its code.
  const viaClient = await client(server, ANON_KEY).auth.refreshSession({ refresh_token: rt0 });
  assert.equal(viaClient.data.session, null);
  assert.equal(viaClient.error?.status, 400);
  assert.equal(viaClient.error.code, 'refresh_token_already_used');
});

test('an unknown refresh token is refresh_token_not_found', async () => {
  const r = await refresh('doesnotexist');
  assert.equal(r.status, 400);
  assert.deepEqual(r.body, { code: 'refresh_token_not_found', message: 'Invalid Refresh Token: Refresh Token Not Found' });
});

async function threeSessions() {
  const { email } = await signUp(uniqueEmail('scopes'));
  return [await signIn(email), await signIn(email), await signIn(email)];
}

async function expectSessionMissing(token) {
  const { data, error } = await client(server, ANON_KEY).auth.getUser(token);
  assert.equal(data.user, null);
  assert.equal(error?.name, 'AuthSessionMissingError');
  const raw = await authFetch(server, '/user', { token });
  assert.equal(raw.status, 403);
  assert.deepEqual(raw.body, { code: 'session_not_found', message: 'Session from session_id claim in JWT does not exist' });
}

async function expectSessionAlive(token) {
  const { data, error } = await client(server, ANON_KEY).auth.getUser(token);
  assert.equal(error, null);
  assert.ok(data.user.id);
}

test("signOut({scope: 'local'}) ends only this session", async () => {
  const [a, b] = await threeSessions();
  const { error } = await a.supabase.auth.signOut({ scope: 'local' });
  assert.equal(error, null);
  assert.equal((await a.supabase.auth.getSession()).data.session, null);
  await expectSessionMissing(a.session.access_token);
  await expectSessionAlive(b.session.access_token);
  const r = await refresh(a.session.refresh_token);
  assert.equal(r.status, 400);
  assert.equal(r.body.code, 'refresh_token_not_found');
});

test("signOut({scope: 'others'}) ends every other session and keeps this one", async () => {
  const [a, b, c] = await threeSessions();
  const { error } = await a.supabase.auth.signOut({ scope: 'others' });
  assert.equal(error, null);
  assert.equal((await a.supabase.auth.getSession()).data.session?.access_token, a.session.access_token);
  await expectSessionAlive(a.session.access_token);
  await expectSessionMissing(b.session.access_token);
  await expectSessionMissing(c.session.access_token);
});

test("signOut() (global) ends every session of the user", async () => {
  const [a, b, c] = await threeSessions();
  const { error } = await a.supabase.auth.signOut();
  assert.equal(error, null);
  for (const s of [a, b, c]) await expectSessionMissing(s.session.access_token);
  const r = await refresh(b.session.refresh_token);
  assert.equal(r.status, 400);
  assert.equal(r.body.code, 'refresh_token_not_found');
});

test('POST /logout answers 204 with no body', async () => {
  const { email } = await signUp(uniqueEmail('logout'));
  const { session } = await signIn(email);
  const r = await authFetch(server, '/logout?scope=local', { method: 'POST', token: session.access_token });
  assert.equal(r.status, 204);
  assert.equal(r.text, '');
});

test('auth.uid() under RLS: each user reads and writes only their own rows on /rest/v1', async () => {
  const alice = await signUp(uniqueEmail('alice'));
  const bob = await signUp(uniqueEmail('bob'));
  const a = await alice.supabase.from('notes').insert({ body: 'alice note' }).select();
  assert.equal(a.error, null);
  assert.equal(a.data[0].user_id, alice.user.id);
  const b = await bob.supabase.from('notes').insert({ body: 'bob note' }).select();
  assert.equal(b.error, null);
  assert.equal(b.data[0].user_id, bob.user.id);

  const mine = await alice.supabase.from('notes').select('body, user_id');
  assert.equal(mine.error, null);
  assert.deepEqual(mine.data, [{ body: 'alice note', user_id: alice.user.id }]);

  // Writing a row for someone else fails the policy.
  const forged = await alice.supabase.from('notes').insert({ body: 'forged', user_id: bob.user.id });
  assert.equal(forged.status, 403);
  assert.equal(forged.error?.code, '42501');

  // anon has no policy: nothing.
  const anon = await client(server, ANON_KEY).from('notes').select('body');
  assert.ok(anon.error || anon.data.length === 0);

  const rows = server.sql(`select count(*) from public.notes where user_id in ('${alice.user.id}', '${bob.user.id}')`);
  assert.equal(rows.trim(), '2');
});

test('updateUser({data}) merges user metadata; the next token carries it', async () => {
  const { supabase, user } = await signUp(uniqueEmail('metadata'), { plan: 'free', lang: 'en' });
  const { data, error } = await supabase.auth.updateUser({ data: { plan: 'pro', theme: 'dark' } });
  assert.equal(error, null);
  assert.equal(data.user.id, user.id);
  assert.equal(data.user.user_metadata.plan, 'pro');
  assert.equal(data.user.user_metadata.theme, 'dark');
  assert.equal(data.user.user_metadata.lang, 'en');
  const refreshed = await supabase.auth.refreshSession();
  assert.equal(refreshed.error, null);
  const claims = decodeJwt(refreshed.data.session.access_token);
  assert.equal(claims.user_metadata.plan, 'pro');
  assert.equal(claims.user_metadata.theme, 'dark');
  // app_metadata is not the user's to change.
  const token = refreshed.data.session.access_token;
  const forbidden = await authFetch(server, '/user', { method: 'PUT', token, body: { app_metadata: { role: 'admin' } } });
  assert.equal(forbidden.status, 403);
  assert.deepEqual(forbidden.body, { code: 'not_admin', message: 'Updating app_metadata requires admin privileges' });
  const me = await supabase.auth.getUser();
  assert.deepEqual(me.data.user.app_metadata, { provider: 'email', providers: ['email'] });
});

test('signInAnonymously, then updateUser({email}) makes the user permanent', async () => {
  const supabase = client(server, ANON_KEY);
  const { data, error } = await supabase.auth.signInAnonymously({ options: { data: { nickname: 'ghost' } } });
  assert.equal(error, null);
  const { user, session } = data;
  assert.equal(user.is_anonymous, true);
  assert.equal(user.role, 'authenticated');
  assert.equal(user.aud, 'authenticated');
  assert.equal(user.email ?? '', '');
  assert.equal(user.phone, '');
  assert.deepEqual(user.identities, []);
  assert.equal(user.user_metadata.nickname, 'ghost');
  const claims = decodeJwt(session.access_token);
  assert.equal(claims.is_anonymous, true);
  assert.equal(claims.role, 'authenticated');
  assert.deepEqual(
    claims.amr.map((a) => a.method),
    ['anonymous'],
  );

  // A password alone cannot make an anonymous user permanent.
  const pwOnly = await supabase.auth.updateUser({ password: PASSWORD });
  assert.equal(pwOnly.error?.status, 422, pwOnly.error?.message);
  assert.equal(pwOnly.error.code, 'validation_failed');
  assert.equal(pwOnly.error.message, 'Updating password of an anonymous user without an email or phone is not allowed');

  const email = uniqueEmail('anon-upgrade');
  const updated = await supabase.auth.updateUser({ email });
  assert.equal(updated.error, null);
  assert.equal(updated.data.user.email, email);
  assert.equal(updated.data.user.is_anonymous, false);
  assert.ok(updated.data.user.email_confirmed_at);
  const pw = await supabase.auth.updateUser({ password: PASSWORD });
  assert.equal(pw.error, null);
  const again = await signIn(email);
  assert.equal(again.user.id, user.id);
  assert.equal(decodeJwt(again.session.access_token).is_anonymous, false);
});

test('the before-user-created hook rejects a sign-up and nothing is left in auth.users', async () => {
  const email = uniqueEmail('hooked').replace('@example.com', '@blocked.example.com');
  const { data, error } = await client(server, ANON_KEY).auth.signUp({ email, password: PASSWORD });
  assert.equal(data.user, null);
  assert.equal(error?.name, 'AuthApiError');
  assert.equal(error.status, 400);
  assert.equal(error.message, 'Sign-ups from this domain are not allowed');
  // A hook's error carries no GoTrue code: `unknown` below 500.
  assert.equal(error.code, 'unknown');
  assert.equal(server.sql(`select count(*) from auth.users where email = '${email}'`).trim(), '0');
  assert.equal(server.sql(`select count(*) from auth.identities where email = '${email}'`).trim(), '0');
  assert.equal(server.sql(`select count(*) from public.profiles where email = '${email}'`).trim(), '0');
});

test('a user inserted with SQL (pgcrypto bcrypt hash) signs in', async () => {
  const email = uniqueEmail('seeded');
  server.sql(`
    insert into auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
      raw_app_meta_data, raw_user_meta_data, created_at, updated_at,
      confirmation_token, recovery_token, email_change_token_new, email_change)
    values ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', 'authenticated',
      '${email}', extensions.crypt('seed-password', extensions.gen_salt('bf')), now(),
      '{"provider":"email","providers":["email"]}', '{"seeded":true}', now(), now(), '', '', '', '');
  `);
  const id = server.sql(`select id from auth.users where email = '${email}'`).trim();
  const supabase = client(server, ANON_KEY);
  const { data, error } = await supabase.auth.signInWithPassword({ email, password: 'seed-password' });
  assert.equal(error, null);
  assert.equal(data.user.id, id);
  assert.equal(data.user.user_metadata.seeded, true);
  assert.equal(decodeJwt(data.session.access_token).sub, id);
  const wrong = await client(server, ANON_KEY).auth.signInWithPassword({ email, password: 'other' });
  assert.equal(wrong.error?.code, 'invalid_credentials');
});

test('a handle_new_user trigger on auth.users fills public.profiles', async () => {
  const email = uniqueEmail('profile');
  const { user, supabase } = await signUp(email, { full_name: 'Grace Hopper' });
  assert.equal(
    server.sql(`select email || '|' || full_name from public.profiles where id = '${user.id}'`).trim(),
    `${email}|Grace Hopper`,
  );
  // The session sees its own row through the Data API (no RLS on profiles here).
  await server.waitForRelation('profiles');
  const { data, error } = await supabase.from('profiles').select('full_name').eq('id', user.id);
  assert.equal(error, null);
  assert.deepEqual(data, [{ full_name: 'Grace Hopper' }]);
});

test('getClaims() with an HS256 token verifies through GET /user and returns the claims', async () => {
  const { email, user } = await signUp(uniqueEmail('getclaims'));
  const { supabase } = await signIn(email);
  const { data, error } = await supabase.auth.getClaims();
  assert.equal(error, null);
  assert.equal(data.header.alg, 'HS256');
  assert.equal(data.claims.sub, user.id);
  assert.equal(data.claims.email, email);
  assert.equal(data.claims.role, 'authenticated');

  // A signed-out session's token no longer verifies.
  const token = (await supabase.auth.getSession()).data.session.access_token;
  await supabase.auth.signOut();
  const stale = await client(server, ANON_KEY).auth.getClaims(token);
  assert.equal(stale.data, null);
  assert.equal(stale.error?.name, 'AuthSessionMissingError');
});

test('GET /auth/v1/.well-known/jwks.json lists no key for HS256 (the secret is not published)', async () => {
  const r = await fetch(`${server.url}/auth/v1/.well-known/jwks.json`);
  assert.equal(r.status, 200);
  const body = await r.json();
  assert.ok(Array.isArray(body.keys));
  for (const key of body.keys) {
    assert.notEqual(key.kty, 'oct', 'a symmetric key must never be published');
    assert.equal(key.k, undefined);
  }
});

test('GET /auth/v1/health and /settings', async () => {
  const health = await authFetch(server, '/health');
  assert.equal(health.status, 200);
  assert.equal(health.body.name, 'GoTrue');
  assert.equal(health.body.description, 'GoTrue is a user registration and authentication API');
  assert.equal(typeof health.body.version, 'string');
  const settings = await authFetch(server, '/settings');
  assert.equal(settings.status, 200);
  assert.equal(settings.body.external.anonymous_users, true);
  assert.equal(settings.body.external.email, true);
  assert.equal(settings.body.disable_signup, false);
  assert.equal(settings.body.mailer_autoconfirm, true);
});

test('GET /user with the service key (no sub claim) is 403 bad_jwt', async () => {
  const r = await authFetch(server, '/user', { token: SERVICE_ROLE_KEY, key: SERVICE_ROLE_KEY });
  assert.equal(r.status, 403);
  assert.deepEqual(r.body, { code: 'bad_jwt', message: 'invalid claim: missing sub claim' });
});
