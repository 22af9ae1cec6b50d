// Smoke test: the unmodified @supabase/supabase-js client against MadBase with its managed
// PostgreSQL (`madbase start`, no DATABASE_URL), exactly as an app would use it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMadbase, client, ANON_KEY, SERVICE_ROLE_KEY } from './support.js';

let server;

before(async () => {
  server = await startMadbase();
  server.sql(`
    create table public.todos (id bigint primary key, title text not null, done boolean not null default false);
    alter table public.todos enable row level security;
    create policy "anon reads open todos" on public.todos for select to anon using (not done);
    insert into public.todos values (1, 'write the foundation', true), (2, 'ship the Data API', false),
                                    (3, 'measure it', false);
  `);
  await server.waitForRelation('todos');
});

after(async () => {
  await server?.stop();
});

test('madbase start prints the URL and both keys', () => {
  const out = server.output();
  assert.match(out, /API URL: http:\/\/127\.0\.0\.1:\d+/);
  assert.ok(out.includes(ANON_KEY), 'prints the demo anon key');
  assert.ok(out.includes(SERVICE_ROLE_KEY), 'prints the demo service_role key');
});

test('select through supabase-js honours RLS for anon', async () => {
  const supabase = client(server, ANON_KEY);
  const { data, error, status } = await supabase
    .from('todos')
    .select('id,title')
    .eq('done', false)
    .order('id', { ascending: false });
  assert.equal(error, null);
  assert.equal(status, 200);
  assert.deepEqual(data, [
    { id: 3, title: 'measure it' },
    { id: 2, title: 'ship the Data API' },
  ]);
});

test('exact counts through supabase-js, with and without rows', async () => {
  const supabase = client(server, ANON_KEY);
  const head = await supabase.from('todos').select('*', { count: 'exact', head: true });
  assert.equal(head.error, null);
  assert.equal(head.count, 2);
  const page = await supabase.from('todos').select('id', { count: 'exact' }).order('id').range(0, 0);
  assert.equal(page.error, null);
  assert.equal(page.status, 206);
  assert.equal(page.count, 2);
  assert.deepEqual(page.data, [{ id: 2 }]);
});

test('single() returns one object and refuses several', async () => {
  const supabase = client(server, ANON_KEY);
  const one = await supabase.from('todos').select('id,title').eq('id', 2).single();
  assert.equal(one.error, null);
  assert.deepEqual(one.data, { id: 2, title: 'ship the Data API' });
  const many = await supabase.from('todos').select('id').single();
  assert.equal(many.data, null);
  assert.equal(many.status, 406);
  assert.equal(many.error.code, 'PGRST116');
});

test('insert().select().single() as service_role, then delete', async () => {
  const admin = client(server, SERVICE_ROLE_KEY);
  const inserted = await admin.from('todos').insert({ id: 9, title: 'from supabase-js' }).select('id,title,done').single();
  assert.equal(inserted.error, null);
  assert.equal(inserted.status, 201);
  assert.deepEqual(inserted.data, { id: 9, title: 'from supabase-js', done: false });
  const removed = await admin.from('todos').delete().eq('id', 9);
  assert.equal(removed.error, null);
  assert.equal(removed.status, 204);
});

test('service_role bypasses RLS', async () => {
  const admin = client(server, SERVICE_ROLE_KEY);
  const { data, error } = await admin.from('todos').select('id').order('id');
  assert.equal(error, null);
  assert.deepEqual(data, [{ id: 1 }, { id: 2 }, { id: 3 }]);
});

test('errors reach the client in PostgREST shape', async () => {
  const supabase = client(server, ANON_KEY);
  const { data, error, status } = await supabase.from('no_such_table').select();
  assert.equal(data, null);
  assert.equal(status, 404);
  assert.equal(typeof error.code, 'string');
  assert.equal(typeof error.message, 'string');
});

test('unknown routes get the gateway 404', async () => {
  const res = await fetch(`${server.url}/nowhere`, { headers: { apikey: ANON_KEY } });
  assert.equal(res.status, 404);
  assert.deepEqual(await res.json(), { message: 'no Route matched with those values' });
});

