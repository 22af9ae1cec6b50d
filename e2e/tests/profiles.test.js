// Exposed schemas through supabase-js: `.schema('personal')` sends Accept-Profile (reads) and
// Content-Profile (writes, rpc) for a schema listed in MADBASE_DB_SCHEMAS, as PostgREST serves
// the postgrest-js suite's `personal` schema.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMadbase, client, ANON_KEY } from './support.js';

let server;

before(async () => {
  server = await startMadbase({ env: { MADBASE_DB_SCHEMAS: 'public,personal' } });
  server.sql(`
    create table public.users (username text primary key, status text not null);
    insert into public.users values ('supabot', 'ONLINE');
    create schema personal;
    create table personal.users (username text primary key, status text not null default 'ONLINE');
    insert into personal.users values ('kiwicopple', 'OFFLINE'), ('awailas', 'ONLINE');
    create function personal.get_status(name_param text) returns text language sql stable
      as $$ select status from users where username = name_param $$;
    grant usage on schema personal to anon, authenticated;
    grant all on all tables in schema personal to anon, authenticated;
    grant select on public.users to anon;
    create table public.ready (id int);
  `);
  await server.waitForRelation('ready');
});

after(async () => {
  await server?.stop();
});

test('select from another exposed schema with .schema()', async () => {
  const supabase = client(server, ANON_KEY);
  const personal = await supabase.schema('personal').from('users').select('username, status').order('username');
  assert.equal(personal.error, null);
  assert.equal(personal.status, 200);
  assert.deepEqual(personal.data, [
    { username: 'awailas', status: 'ONLINE' },
    { username: 'kiwicopple', status: 'OFFLINE' },
  ]);
  const pub = await supabase.from('users').select('username');
  assert.deepEqual(pub.data, [{ username: 'supabot' }]);
});

test('insert and rpc in another exposed schema', async () => {
  const supabase = client(server, ANON_KEY);
  const inserted = await supabase.schema('personal').from('users').insert({ username: 'dragarcia' }).select();
  assert.equal(inserted.error, null);
  assert.equal(inserted.status, 201);
  assert.deepEqual(inserted.data, [{ username: 'dragarcia', status: 'ONLINE' }]);
  const status = await supabase.schema('personal').rpc('get_status', { name_param: 'kiwicopple' });
  assert.equal(status.error, null);
  assert.equal(status.data, 'OFFLINE');
  const viaGet = await supabase.schema('personal').rpc('get_status', { name_param: 'dragarcia' }, { get: true });
  assert.equal(viaGet.data, 'ONLINE');
});

test('a schema that is not exposed is PGRST106', async () => {
  const supabase = client(server, ANON_KEY);
  const { data, error, status } = await supabase.schema('secret').from('users').select();
  assert.equal(data, null);
  assert.equal(status, 406);
  assert.deepEqual(error, {
    code: 'PGRST106',
    details: null,
    hint: 'Only the following schemas are exposed: public, personal',
    message: 'Invalid schema: secret',
  });
});
