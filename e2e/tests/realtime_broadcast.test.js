// Realtime broadcast and presence through the unmodified supabase-js client, on both protocol
// versions (vsn 1.0.0: JSON objects; 2.0.0: JSON arrays and binary broadcast frames): self and
// ack, binary payloads, httpSend (JSON and bytes), presence merged across sockets (which land on
// either of the two shards), heartbeats, leaving, and the error replies realtime-js shows.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';
import { startMadbase, ANON_KEY, SERVICE_ROLE_KEY, signJwt, subscribeChannel, waitFor } from './support.js';

let server;

before(async () => {
  server = await startMadbase();
});

after(async () => {
  await server?.stop();
});

const clients = [];
after(async () => {
  for (const c of clients) await c.removeAllChannels();
});

function rt(vsn, key = ANON_KEY, options = {}) {
  const c = createClient(server.url, key, {
    realtime: { transport: WebSocket, vsn, ...options },
    auth: { autoRefreshToken: false, persistSession: false, detectSessionInUrl: false },
  });
  clients.push(c);
  return c;
}



let room = 0;
const uniqueRoom = (name) => `${name}-${process.pid}-${++room}`;

for (const vsn of ['1.0.0', '2.0.0']) {
  describe(`vsn ${vsn}`, () => {
    test('broadcast reaches the other sockets; self and ack as configured', async () => {
      const name = uniqueRoom('bcast');
      const sender = rt(vsn).channel(name, { config: { broadcast: { self: true, ack: true } } });
      const others = [0, 1, 2].map(() => rt(vsn).channel(name));
      const got = others.map(() => []);
      const own = [];
      sender.on('broadcast', { event: 'ev' }, (m) => own.push(m));
      others.forEach((ch, i) => ch.on('broadcast', { event: 'ev' }, (m) => got[i].push(m)));
      for (const ch of [sender, ...others]) assert.equal((await subscribeChannel(ch)).status, 'SUBSCRIBED');
      const ack = await sender.send({ type: 'broadcast', event: 'ev', payload: { hello: 'world', n: 1 } });
      assert.equal(ack, 'ok');
      await waitFor(() => got.every((g) => g.length === 1) && own.length === 1, 'every socket to get the broadcast');
      for (const [m] of got) {
        assert.equal(m.event, 'ev');
        assert.equal(m.type, 'broadcast');
        assert.deepEqual(m.payload, { hello: 'world', n: 1 });
      }
      // Without self, the sender does not hear itself.
      const quiet = rt(vsn).channel(uniqueRoom('noself'));
      const heard = [];
      quiet.on('broadcast', { event: '*' }, (m) => heard.push(m));
      assert.equal((await subscribeChannel(quiet)).status, 'SUBSCRIBED');
      assert.equal(await quiet.send({ type: 'broadcast', event: 'x', payload: {} }), 'ok');
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(heard.length, 0);
    });

    test('httpSend delivers JSON to subscribers and answers 202', async () => {
      const name = uniqueRoom('http');
      const listener = rt(vsn).channel(name);
      const got = [];
      listener.on('broadcast', { event: 'from-http' }, (m) => got.push(m));
      assert.equal((await subscribeChannel(listener)).status, 'SUBSCRIBED');
      const sender = rt(vsn).channel(name);
      const result = await sender.httpSend('from-http', { via: 'rest' });
      assert.deepEqual(result, { success: true });
      await waitFor(() => got.length === 1, 'the REST broadcast');
      assert.deepEqual(got[0].payload, { via: 'rest' });
    });

    test('presence: state on join, diffs for joins and leaves across sockets', async () => {
      const name = uniqueRoom('presence');
      const members = ['ada', 'bob', 'cy', 'dee'].map((key) => {
        const ch = rt(vsn).channel(name, { config: { presence: { key } } });
        ch.on('presence', { event: 'sync' }, () => {});
        return { key, ch };
      });
      for (const { ch } of members) assert.equal((await subscribeChannel(ch)).status, 'SUBSCRIBED');
      for (const { key, ch } of members) assert.equal(await ch.track({ name: key }), 'ok');
      for (const { ch } of members) {
        await waitFor(() => Object.keys(ch.presenceState()).length === 4, 'every member in every state');
      }
      const state = members[0].ch.presenceState();
      assert.equal(state.bob[0].name, 'bob');
      assert.ok(state.bob[0].presence_ref);
      // Re-tracking with a new payload replaces the meta; untrack and leaving remove it.
      assert.equal(await members[1].ch.track({ name: 'bob', mood: 'happy' }), 'ok');
      await waitFor(() => members[0].ch.presenceState().bob?.[0]?.mood === 'happy', 'the updated meta');
      assert.equal(members[0].ch.presenceState().bob.length, 1);
      assert.equal(await members[2].ch.untrack(), 'ok');
      await members[3].ch.unsubscribe();
      await waitFor(() => {
        const keys = Object.keys(members[0].ch.presenceState()).sort();
        return keys.join() === 'ada,bob';
      }, 'the leaves');
      // A late joiner gets the whole state at once.
      const late = rt(vsn).channel(name, { config: { presence: { key: 'late' } } });
      late.on('presence', { event: 'sync' }, () => {});
      assert.equal((await subscribeChannel(late)).status, 'SUBSCRIBED');
      await waitFor(() => Object.keys(late.presenceState()).sort().join() === 'ada,bob', 'the late state');
    });

    test('a join with a bad token is refused with Supabase reasons', async () => {
      const expired = signJwt({ role: 'anon', exp: Math.floor(Date.now() / 1000) - 100 });
      const c = rt(vsn);
      c.realtime.setAuth(expired);
      const ch = c.channel(uniqueRoom('expired'));
      const { status, error } = await subscribeChannel(ch);
      assert.equal(status, 'CHANNEL_ERROR');
      assert.match(error.message, /^InvalidJWTToken: Token has expired \d+ seconds ago$/);

      const noExp = rt(vsn);
      noExp.realtime.setAuth(signJwt({ role: 'anon' }));
      const r2 = await subscribeChannel(noExp.channel(uniqueRoom('noexp')));
      assert.equal(r2.status, 'CHANNEL_ERROR');
      assert.equal(r2.error.message, 'InvalidJWTToken: Fields `role` and `exp` are required in JWT');

      const forged = rt(vsn);
      forged.realtime.setAuth(signJwt({ role: 'service_role', exp: 4102444800 }, 'x'.repeat(40)));
      const r3 = await subscribeChannel(forged.channel(uniqueRoom('forged')));
      assert.equal(r3.status, 'CHANNEL_ERROR');
      assert.equal(r3.error.message, 'JwtSignatureError: Failed to validate JWT signature');
    });
  });
}

test('vsn 2: binary payloads travel as binary frames; httpSend with bytes too', async () => {
  const name = uniqueRoom('binary');
  const a = rt('2.0.0').channel(name, { config: { broadcast: { ack: true } } });
  const b = rt('2.0.0').channel(name);
  const got = [];
  b.on('broadcast', { event: 'bin' }, (m) => got.push(m));
  for (const ch of [a, b]) assert.equal((await subscribeChannel(ch)).status, 'SUBSCRIBED');
  const bytes = new Uint8Array([0, 1, 2, 254, 255]);
  assert.equal(await a.send({ type: 'broadcast', event: 'bin', payload: bytes.buffer }), 'ok');
  await waitFor(() => got.length === 1, 'the binary broadcast');
  assert.ok(got[0].payload instanceof ArrayBuffer);
  assert.deepEqual([...new Uint8Array(got[0].payload)], [...bytes]);
  assert.deepEqual(await a.httpSend('bin', new Uint8Array([9, 8, 7])), { success: true });
  await waitFor(() => got.length === 2, 'the binary REST broadcast');
  assert.deepEqual([...new Uint8Array(got[1].payload)], [9, 8, 7]);
});

test('REST broadcast: errors in Supabase shapes', async () => {
  const base = `${server.url}/realtime/v1/api/broadcast`;
  const headers = { apikey: ANON_KEY, 'content-type': 'application/json' };
  let r = await fetch(`${base}/room/events/ev`, { method: 'POST', headers: { ...headers, 'content-type': 'text/plain' }, body: 'x' });
  assert.equal(r.status, 415);
  assert.deepEqual(await r.json(), { error: 'Unsupported Media Type. Use application/json or application/octet-stream' });
  r = await fetch(`${base}/room/events/ev`, { method: 'POST', body: '{}' });
  assert.equal(r.status, 401);
  r = await fetch(base, { method: 'POST', headers, body: '{"messages":"no"}' });
  assert.equal(r.status, 422);
  r = await fetch(base, { method: 'POST', headers, body: JSON.stringify({ messages: [{ topic: 't', event: 'e', payload: { a: 1 } }] }) });
  assert.equal(r.status, 202);
  r = await fetch(`${base}/room/events/ev`, { method: 'POST', headers, body: '{not json' });
  assert.equal(r.status, 422);
});

test('raw socket: heartbeat, unmatched topic, malformed frames, leave', async () => {
  const ws = new WebSocket(`${server.url.replace('http', 'ws')}/realtime/v1/websocket?apikey=${ANON_KEY}&vsn=2.0.0`);
  const frames = [];
  ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
  await new Promise((r) => ws.once('open', r));
  ws.send('not json');
  ws.send('[1,2]');
  ws.send(JSON.stringify([null, '1', 'phoenix', 'heartbeat', {}]));
  ws.send(JSON.stringify([null, '2', 'realtime:nope', 'broadcast', { type: 'broadcast', event: 'e', payload: {} }]));
  ws.send(JSON.stringify(['3', '3', 'realtime:r', 'phx_join', { config: {} }]));
  ws.send(JSON.stringify(['3', '4', 'realtime:r', 'phx_leave', {}]));
  ws.send(JSON.stringify(['5', '5', 'realtime:p', 'phx_join', { config: { broadcast: { replay: { since: 0 } } } }]));
  await waitFor(() => frames.length >= 5, 'five replies');
  assert.deepEqual(frames[0], [null, '1', 'phoenix', 'phx_reply', { status: 'ok', response: {} }]);
  assert.deepEqual(frames[1], [null, '2', 'realtime:nope', 'phx_reply', { status: 'error', response: { reason: 'unmatched topic' } }]);
  assert.deepEqual(frames[2], ['3', '3', 'realtime:r', 'phx_reply', { status: 'ok', response: { postgres_changes: [] } }]);
  assert.deepEqual(frames[3], ['3', '4', 'realtime:r', 'phx_reply', { status: 'ok', response: {} }]);
  assert.deepEqual(frames[4], ['5', '5', 'realtime:p', 'phx_reply', { status: 'error', response: { reason: 'UnableToReplayMessages: Replay is not allowed for public channels' } }]);
  ws.close();
  const refusedWith = (query) =>
    new Promise((resolve) => {
      const s = new WebSocket(`${server.url.replace('http', 'ws')}/realtime/v1/websocket?${query}`);
      s.on('unexpected-response', (_req, res) => resolve(res.statusCode));
      s.on('open', () => resolve('open'));
      s.on('error', () => {});
    });
  assert.equal(await refusedWith('vsn=2.0.0'), 401);
  assert.equal(await refusedWith(`vsn=2.0.0&apikey=${signJwt({ role: 'anon', exp: 4102444800 }, 'y'.repeat(40))}`), 401);
  assert.equal(await refusedWith(`vsn=3.0.0&apikey=${ANON_KEY}`), 400);
  const service = await fetch(`${server.url}/realtime/v1/api/inspector`, { headers: { apikey: SERVICE_ROLE_KEY } });
  assert.equal(service.status, 200);
  const inspected = await service.json();
  assert.equal(inspected.shards.length, 2, 'both shards answer');
  assert.deepEqual(inspected.shards.map((s) => s.shard), [0, 1]);
  const anon = await fetch(`${server.url}/realtime/v1/api/inspector`, { headers: { apikey: ANON_KEY } });
  assert.equal(anon.status, 403);
});
