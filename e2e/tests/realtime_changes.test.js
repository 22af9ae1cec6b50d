// Realtime Postgres changes, broadcast from the database and private channels through the
// unmodified supabase-js client, on both protocol versions: INSERT/UPDATE/DELETE with filters,
// RLS (a row a user may not see never reaches them; DELETE carries only the key), SUBSCRIBED
// meaning live (a write right after it is delivered), `realtime.send`, private channels allowed
// and refused by the supabase-js fixture policies, and the replication connection killed
// mid-stream (every committed row delivered once, in order).
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';
import { startMadbase, ANON_KEY, signJwt, subscribeChannel, waitFor } from './support.js';

let server;
const clients = [];
const ALICE = 'aaaaaaaa-0000-4000-8000-000000000001';
const BOB = 'bbbbbbbb-0000-4000-8000-000000000002';

before(async () => {
  server = await startMadbase();
  server.sql(`
    create table public.notes (id int primary key, body text, tags text[], meta jsonb, at timestamptz);
    alter table public.notes replica identity full;
    create table public.todos (id bigserial primary key, owner uuid not null, title text not null, done bool not null default false);
    alter table public.todos enable row level security;
    create policy "own todos" on public.todos for select to authenticated using (owner = auth.uid());
    grant select on public.notes, public.todos to anon, authenticated;
    create table public.ticks (n int primary key);
    create table public.resumed (n int primary key);
    alter publication supabase_realtime add table public.notes, public.todos, public.ticks, public.resumed;
    grant select on public.resumed to anon;
    grant select on public.ticks to anon;
    create policy "authenticated can receive" on realtime.messages for select to authenticated
      using (realtime.topic() like '%channel%');
    create policy "authenticated can send" on realtime.messages for insert to authenticated
      with check (realtime.topic() like '%channel%');
  `);
});

after(async () => {
  for (const c of clients) await c.removeAllChannels();
  await server?.stop();
});

const userToken = (sub) => signJwt({ role: 'authenticated', sub, aud: 'authenticated', exp: Math.floor(Date.now() / 1000) + 3600 });

async function rt(vsn, token) {
  const c = createClient(server.url, ANON_KEY, {
    realtime: { transport: WebSocket, vsn },
    auth: { autoRefreshToken: false, persistSession: false, detectSessionInUrl: false },
  });
  if (token) await c.realtime.setAuth(token);
  clients.push(c);
  return c;
}



const pause = (ms) => new Promise((r) => setTimeout(r, ms));
let n = 0;
const uniqueId = () => Number(`${process.pid % 1000}${++n}`) * 10;

for (const vsn of ['1.0.0', '2.0.0']) {
  describe(`vsn ${vsn}`, () => {
    test('INSERT, UPDATE and DELETE with filters, live at SUBSCRIBED', async () => {
      const id = uniqueId();
      const c = await rt(vsn);
      const one = [];
      const inserts = [];
      const listed = [];
      const ch = c
        .channel(`notes-${vsn}-${id}`)
        .on('postgres_changes', { event: '*', schema: 'public', table: 'notes', filter: `id=eq.${id}` }, (p) => one.push(p))
        .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'notes' }, (p) => inserts.push(p))
        .on('postgres_changes', { event: 'UPDATE', schema: 'public', table: 'notes', filter: `id=in.(${id + 1},${id + 2})` }, (p) => listed.push(p));
      const system = [];
      ch.on('system', {}, (m) => system.push(m));
      assert.equal((await subscribeChannel(ch)).status, 'SUBSCRIBED');
      // Right after SUBSCRIBED: no change may be missed.
      server.sql(`insert into public.notes values (${id}, 'first', '{a,"b c"}', '{"k": [1, true]}', '2024-01-02 03:04:05.678+00')`);
      server.sql(`insert into public.notes values (${id + 1}, 'second', null, null, null)`);
      server.sql(`update public.notes set body = 'edited' where id in (${id}, ${id + 1})`);
      server.sql(`delete from public.notes where id = ${id}`);
      await waitFor(() => one.length === 3 && inserts.length === 2 && listed.length === 1, 'every change');
      const [ins, upd, del] = one;
      assert.equal(ins.eventType, 'INSERT');
      assert.equal(ins.schema, 'public');
      assert.equal(ins.table, 'notes');
      assert.match(ins.commit_timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.equal(ins.errors, null);
      assert.deepEqual(ins.new, { id, body: 'first', tags: ['a', 'b c'], meta: { k: [1, true] }, at: '2024-01-02T03:04:05.678+00:00' });
      assert.deepEqual(ins.old, {});
      assert.equal(upd.eventType, 'UPDATE');
      assert.equal(upd.new.body, 'edited');
      assert.equal(upd.old.body, 'first', 'replica identity full carries the old row');
      assert.equal(del.eventType, 'DELETE');
      assert.deepEqual(del.new, {});
      assert.equal(del.old.id, id);
      assert.equal(listed[0].new.id, id + 1);
      assert.ok(system.some((m) => m.extension === 'postgres_changes' && m.status === 'ok' && m.message === 'Subscribed to PostgreSQL'));
    });

    test('RLS: a row reaches only the users its policy lets see it; DELETE carries the key only', async () => {
      const alice = await rt(vsn, userToken(ALICE));
      const bob = await rt(vsn, userToken(BOB));
      const anon = await rt(vsn);
      const got = { alice: [], bob: [], anon: [] };
      for (const [name, c] of [['alice', alice], ['bob', bob], ['anon', anon]]) {
        const ch = c.channel(`todos-${vsn}-${name}`).on('postgres_changes', { event: '*', schema: 'public', table: 'todos' }, (p) => got[name].push(p));
        assert.equal((await subscribeChannel(ch)).status, 'SUBSCRIBED');
      }
      const id = server.sql(`insert into public.todos (owner, title) values ('${ALICE}', 'alice only') returning id`).trim();
      server.sql(`update public.todos set done = true where id = ${id}`);
      await waitFor(() => got.alice.length === 2, 'alice to see her insert and update');
      await pause(300);
      assert.equal(got.bob.length, 0, 'bob never sees alice’s row');
      assert.equal(got.anon.length, 0, 'anon never sees it');
      assert.equal(got.alice[0].new.title, 'alice only');
      server.sql(`delete from public.todos where id = ${id}`);
      await waitFor(() => got.alice.length === 3 && got.bob.length === 1 && got.anon.length === 1, 'the delete for everyone');
      assert.deepEqual(got.bob[0].old, { id: Number(id) });
    });

    test('broadcast from the database: realtime.send reaches a public channel', async () => {
      const c = await rt(vsn);
      const got = [];
      const room = `dbroom-${vsn.replaceAll('.', '')}-${process.pid}`;
      const ch = c.channel(room).on('broadcast', { event: 'from-db' }, (m) => got.push(m));
      assert.equal((await subscribeChannel(ch)).status, 'SUBSCRIBED');
      server.sql(`select realtime.send('{"hello": "db"}', 'from-db', '${room}', false)`);
      await waitFor(() => got.length === 1, 'the database broadcast');
      assert.equal(got[0].payload.hello, 'db');
    });

    test('private channels: the fixture policies allow, refuse, and carry broadcasts', async () => {
      const alice = await rt(vsn, userToken(ALICE));
      const bob = await rt(vsn, userToken(BOB));
      const topic = `private-channel-${vsn}-${process.pid}`;
      const a = alice.channel(topic, { config: { private: true, broadcast: { ack: true } } });
      const b = bob.channel(topic, { config: { private: true } });
      const got = [];
      b.on('broadcast', { event: 'secret' }, (m) => got.push(m));
      assert.equal((await subscribeChannel(a)).status, 'SUBSCRIBED');
      assert.equal((await subscribeChannel(b)).status, 'SUBSCRIBED');
      assert.equal(await a.send({ type: 'broadcast', event: 'secret', payload: { x: 1 } }), 'ok');
      await waitFor(() => got.length === 1, 'the private broadcast');
      // Denied: anon, and a topic the policy does not name.
      const anon = await rt(vsn);
      const refused = await subscribeChannel(anon.channel(topic, { config: { private: true } }));
      assert.equal(refused.status, 'CHANNEL_ERROR');
      assert.equal(refused.error.message, `Unauthorized: You do not have permissions to read from this Channel topic: ${topic}`);
      const other = await subscribeChannel(alice.channel(`elsewhere-${vsn}`, { config: { private: true } }));
      assert.equal(other.status, 'CHANNEL_ERROR');
      // A public channel of the same name is another channel: it hears nothing private.
      const publicHeard = [];
      const pub = (await rt(vsn)).channel(topic).on('broadcast', { event: 'secret' }, (m) => publicHeard.push(m));
      assert.equal((await subscribeChannel(pub)).status, 'SUBSCRIBED');
      assert.equal(await a.send({ type: 'broadcast', event: 'secret', payload: { x: 2 } }), 'ok');
      await waitFor(() => got.length === 2, 'the second private broadcast');
      assert.equal(publicHeard.length, 0);
    });
  });
}

test('a binding on a table that does not exist gets Supabase’s system error; the others still work', async () => {
  const c = await rt('2.0.0');
  const system = [];
  const got = [];
  const ch = c
    .channel(`missing-${process.pid}`)
    .on('postgres_changes', { event: '*', schema: 'public', table: 'nosuch' }, () => {})
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'ticks', filter: 'n=eq.999999' }, (p) => got.push(p))
    .on('system', {}, (m) => system.push(m));
  assert.equal((await subscribeChannel(ch)).status, 'SUBSCRIBED');
  await waitFor(() => system.some((m) => m.status === 'error'), 'the refusal');
  const refusal = system.find((m) => m.status === 'error');
  assert.equal(refusal.extension, 'postgres_changes');
  assert.equal(
    refusal.message,
    'Unable to subscribe to changes with given parameters. An exception happened so please check your connect parameters: ' +
      '[event: *, schema: public, table: nosuch, filters: [], select: nil]. Exception: ERROR 42P01 (undefined_table) relation "public.nosuch" does not exist',
  );
  server.sql('insert into public.ticks values (999999)');
  await waitFor(() => got.length === 1, 'the change on the table that exists');
  server.sql('delete from public.ticks where n = 999999');
});

test('the old API: a join without config names its table and filter in the topic', async () => {
  const ws = new WebSocket(`${server.url.replace('http', 'ws')}/realtime/v1/websocket?apikey=${ANON_KEY}&vsn=1.0.0`);
  const frames = [];
  ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
  await new Promise((r) => ws.once('open', r));
  const topic = 'realtime:public:ticks:n=eq.777777';
  ws.send(JSON.stringify({ topic, event: 'phx_join', payload: { access_token: ANON_KEY }, ref: '1', join_ref: '1' }));
  await waitFor(() => frames.some((f) => f.event === 'phx_reply'), 'the join reply');
  assert.deepEqual(frames[0].payload, { status: 'ok', response: {} });
  server.sql('insert into public.ticks values (777778), (777777)');
  await waitFor(() => frames.some((f) => f.event === 'INSERT'), 'the change');
  await pause(200);
  const changes = frames.filter((f) => f.event === 'INSERT');
  assert.equal(changes.length, 1);
  assert.equal(changes[0].topic, topic);
  assert.equal(changes[0].ref, null);
  assert.equal(changes[0].payload.type, 'INSERT');
  assert.equal(changes[0].payload.table, 'ticks');
  assert.deepEqual(changes[0].payload.record, { n: 777777 });
  ws.close();
  server.sql('delete from public.ticks where n >= 777777');
});

test('private channels replay stored broadcasts since a time, as the caller may read them', async () => {
  const topic = `replay-channel-${process.pid}`;
  const since = Date.now() - 60_000;
  for (const i of [1, 2, 3]) server.sql(`select realtime.send('{"i": ${i}}', 'stored', '${topic}', true)`);
  server.sql(`select realtime.send('{"i": 0}', 'stored', '${topic}', false)`);
  const alice = await rt('2.0.0', userToken(ALICE));
  const got = [];
  const ch = alice
    .channel(topic, { config: { private: true, broadcast: { replay: { since, limit: 2 } } } })
    .on('broadcast', { event: 'stored' }, (m) => got.push(m));
  assert.equal((await subscribeChannel(ch)).status, 'SUBSCRIBED');
  await waitFor(() => got.length === 2, 'two replayed messages');
  assert.deepEqual(got.map((m) => m.payload.i), [1, 2]);
  assert.equal(got[0].meta.replayed, true);
  assert.ok(got[0].meta.id);
});

test('resume (a MadBase extension): payloads carry positions; a client that reconnects gets what it missed', async () => {
  const url = `${server.url.replace('http', 'ws')}/realtime/v1/websocket?apikey=${ANON_KEY}&vsn=2.0.0`;
  const open = async (position) => {
    const ws = new WebSocket(url);
    const changes = [];
    const system = [];
    ws.on('message', (d) => {
      const [, , , event, payload] = JSON.parse(d.toString());
      if (event === 'postgres_changes') changes.push(payload);
      if (event === 'system') system.push(payload);
    });
    await new Promise((r) => ws.once('open', r));
    const config = {
      postgres_changes: [{ event: 'INSERT', schema: 'public', table: 'resumed' }],
      postgres_changes_resume: { position },
    };
    ws.send(JSON.stringify(['1', '1', 'realtime:resume', 'phx_join', { config, access_token: ANON_KEY }]));
    await waitFor(() => system.length > 0, 'the subscription');
    return { ws, changes, system };
  };
  const first = await open(null);
  for (const n of [1, 2, 3]) server.sql(`insert into public.resumed values (${n})`);
  await waitFor(() => first.changes.length === 3, 'three changes');
  for (const c of first.changes) assert.match(c.position, /^[0-9A-F]+\/[0-9A-F]+:\d+$/);
  const keep = first.changes[1].position;
  first.ws.close();
  for (const n of [4, 5]) server.sql(`insert into public.resumed values (${n})`);
  const second = await open(keep);
  server.sql('insert into public.resumed values (6)');
  await waitFor(() => second.changes.length === 4, 'the missed changes, then the live one');
  assert.deepEqual(second.changes.map((c) => c.data.record.n), [3, 4, 5, 6]);
  assert.ok(second.system.every((m) => m.status === 'ok'), JSON.stringify(second.system));
  second.ws.close();
  // A position older than anything held says so.
  const third = await open('0/1:0');
  await waitFor(() => third.system.some((m) => m.status === 'error'), 'the warning');
  assert.match(third.system.find((m) => m.status === 'error').message, /may be missed/);
  third.ws.close();
});

test('the replication connection killed mid-stream: every committed row arrives once, in order', async () => {
  const c = await rt('2.0.0');
  const seen = [];
  const ch = c.channel(`ticks-${process.pid}`).on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'ticks' }, (p) => seen.push(p.new.n));
  assert.equal((await subscribeChannel(ch)).status, 'SUBSCRIBED');
  const total = 300;
  for (let i = 1; i <= total; i += 10) {
    server.sql(`insert into public.ticks select g from generate_series(${i}, ${i + 9}) g`);
    if (i === 101 || i === 201) {
      server.sql(`select pg_terminate_backend(pid) from pg_stat_replication`);
    }
  }
  await waitFor(() => seen.length >= total, `all ${total} rows`, 30000);
  await pause(500);
  assert.equal(seen.length, total, 'no duplicates');
  assert.deepEqual(seen, Array.from({ length: total }, (_, i) => i + 1));
});
