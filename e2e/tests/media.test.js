// Media types and planned counts through the unmodified @supabase/supabase-js client: .csv(),
// .geojson() (PostGIS), .explain() (plans enabled with MADBASE_DB_PLAN_ENABLED), .stripNulls() and
// count: 'planned'.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMadbase, client, ANON_KEY } from './support.js';

let server;

before(async () => {
  // This file runs in its own process: the setting reaches only its server.
  process.env.MADBASE_DB_PLAN_ENABLED = 'true';
  server = await startMadbase();
  server.sql(`
    create extension if not exists postgis schema extensions;
    create table public.users (username text primary key, status text, age_range int4range, note text);
    insert into public.users values ('supabot', 'ONLINE', '[1,2)', null), ('kiwicopple', 'OFFLINE', '[25,35)', 'a, "b"');
    create table public.shops (id int primary key, address text, location extensions.geometry(point, 4326));
    insert into public.shops values (1, '1369 Cambridge St', 'SRID=4326;POINT(-71.10044 42.373695)');
  `);
  await server.waitForRelation('users');
  await server.waitForRelation('shops');
});

after(async () => {
  await server?.stop();
});

test('csv() returns PostgreSQL-built CSV', async () => {
  const { data, error, status } = await client(server, ANON_KEY).from('users').select().order('username').csv();
  assert.equal(error, null);
  assert.equal(status, 200);
  assert.equal(data, 'username,status,age_range,note\nkiwicopple,OFFLINE,"[25,35)","a, ""b"""\nsupabot,ONLINE,"[1,2)",');
});

test('geojson() returns a FeatureCollection', async () => {
  const { data, error } = await client(server, ANON_KEY).from('shops').select().geojson();
  assert.equal(error, null);
  assert.deepEqual(data, {
    type: 'FeatureCollection',
    features: [
      {
        type: 'Feature',
        geometry: { type: 'Point', coordinates: [-71.10044, 42.373695] },
        properties: { id: 1, address: '1369 Cambridge St' },
      },
    ],
  });
});

test('explain() returns the plan as text or JSON', async () => {
  const supabase = client(server, ANON_KEY);
  const text = await supabase.from('users').select().explain();
  assert.equal(text.error, null);
  assert.match(text.data, /^Aggregate {2}\(cost=/);
  const json = await supabase.from('users').select().explain({ analyze: true, settings: true, format: 'json' });
  assert.equal(json.error, null);
  assert.equal(json.data[0].Plan['Node Type'], 'Aggregate');
  assert.equal(json.data[0].Settings.search_path, '"public", "public", "extensions"');
});

test('stripNulls() drops null members', async () => {
  const supabase = client(server, ANON_KEY);
  const { data, error } = await supabase.from('users').select('username,note').order('username').stripNulls();
  assert.equal(error, null);
  assert.deepEqual(data, [{ username: 'kiwicopple', note: 'a, "b"' }, { username: 'supabot' }]);
  const one = await supabase.from('users').select('username,note').eq('username', 'supabot').single().stripNulls();
  assert.equal(one.error, null);
  assert.deepEqual(one.data, { username: 'supabot' });
});

test("count: 'planned' reports the planner's estimate", async () => {
  // Statistics that say 500 rows while 2 are stored: the estimate shows, and the page is partial.
  server.sql(`update pg_class set reltuples = 500, relpages = 1 where oid = 'public.users'::regclass`);
  const { count, error, status } = await client(server, ANON_KEY)
    .from('users')
    .select('*', { count: 'planned', head: true });
  assert.equal(error, null);
  assert.equal(status, 206);
  assert.equal(count, 500);
});
