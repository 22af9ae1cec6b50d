// Asymmetric signing keys (`[auth] signing_keys_path`, the Supabase CLI's signing_keys.json):
// access tokens are RS256 with a `kid`, `/auth/v1/.well-known/jwks.json` publishes the public
// half, and auth-js `getClaims()` verifies locally with the JWKS (no GET /user). The HS256
// project keys keep working beside them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMadbase, client, ANON_KEY, SERVICE_ROLE_KEY, AUTH_TEST_ENV, authFetch, decodeJwt, uniqueEmail } from './support.js';

let server;
let keyDir;
const kid = randomUUID();
const PASSWORD = 'correct-horse-battery';

before(async () => {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig', key_ops: ['sign', 'verify'], ext: true };
  keyDir = mkdtempSync(join(tmpdir(), 'madbase-keys-'));
  const path = join(keyDir, 'signing_keys.json');
  writeFileSync(path, JSON.stringify([jwk]));
  server = await startMadbase({ env: { ...AUTH_TEST_ENV, MADBASE_AUTH_SIGNING_KEYS_PATH: path } });
});

after(async () => {
  await server?.stop();
  if (keyDir) rmSync(keyDir, { recursive: true, force: true });
});

test('the JWKS publishes the public RSA key, never the private parts', async () => {
  const r = await authFetch(server, '/.well-known/jwks.json');
  assert.equal(r.status, 200);
  assert.equal(r.body.keys.length, 1);
  const [key] = r.body.keys;
  assert.equal(key.kid, kid);
  assert.equal(key.kty, 'RSA');
  assert.equal(key.alg, 'RS256');
  assert.equal(key.e, 'AQAB');
  assert.ok(key.n);
  for (const secret of ['d', 'p', 'q', 'dp', 'dq', 'qi']) assert.equal(key[secret], undefined, `private part ${secret}`);
});

test('access tokens are RS256 with the kid; getClaims verifies them with the JWKS', async () => {
  const email = uniqueEmail('rs256');
  const supabase = client(server, ANON_KEY);
  const signUp = await supabase.auth.signUp({ email, password: PASSWORD });
  assert.equal(signUp.error, null);
  const token = signUp.data.session.access_token;
  const claims = decodeJwt(token);
  assert.equal(claims.header.alg, 'RS256');
  assert.equal(claims.header.kid, kid);
  assert.equal(claims.email, email);

  const got = await supabase.auth.getUser();
  assert.equal(got.error, null);
  assert.equal(got.data.user.email, email);

  const verified = await supabase.auth.getClaims();
  assert.equal(verified.error, null);
  assert.equal(verified.data.header.kid, kid);
  assert.equal(verified.data.claims.sub, signUp.data.user.id);

  // Local verification does not ask Auth about the session: a signed-out token still verifies
  // (until it expires), while GET /user refuses it.
  await supabase.auth.signOut();
  const local = await client(server, ANON_KEY).auth.getClaims(token);
  assert.equal(local.error, null);
  assert.equal(local.data.claims.sub, signUp.data.user.id);
  const remote = await authFetch(server, '/user', { token });
  assert.equal(remote.status, 403);
  assert.equal(remote.body.code, 'session_not_found');
});

test('the RS256 user token reaches the Data API and the HS256 project keys still work', async () => {
  const email = uniqueEmail('rs256-rest');
  const supabase = client(server, ANON_KEY);
  await supabase.auth.signUp({ email, password: PASSWORD });
  server.sql(`create table public.whoami_probe (id int); grant select on public.whoami_probe to authenticated;
    create function public.whoami() returns text language sql stable as $$ select auth.uid()::text $$;`);
  await server.waitForRelation('whoami_probe');
  const { data, error } = await supabase.rpc('whoami');
  assert.equal(error, null);
  assert.equal(data, (await supabase.auth.getUser()).data.user.id);
  const admin = await client(server, SERVICE_ROLE_KEY).auth.admin.listUsers();
  assert.equal(admin.error, null);
  assert.ok(admin.data.users.some((u) => u.email === email));
});
