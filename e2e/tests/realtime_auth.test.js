// Realtime and tokens: a channel runs under the token it joined with; `setAuth` sends
// `access_token` to every joined channel and the server re-authorises it; an expired or forged
// token closes the channel with Supabase's system message; a token that expires while joined
// closes it at `exp`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';
import { startMadbase, ANON_KEY, signJwt, subscribeChannel, waitFor } from './support.js';

let server;
const clients = [];

before(async () => {
  server = await startMadbase();
});

after(async () => {
  for (const c of clients) await c.removeAllChannels();
  await server?.stop();
});

function rt(vsn = '2.0.0') {
  const c = createClient(server.url, ANON_KEY, {
    realtime: { transport: WebSocket, vsn },
    auth: { autoRefreshToken: false, persistSession: false, detectSessionInUrl: false },
  });
  clients.push(c);
  return c;
}



const now = () => Math.floor(Date.now() / 1000);
const user = (exp) => signJwt({ role: 'authenticated', sub: '11111111-1111-1111-1111-111111111111', exp });

test('a token that expires while joined closes the channel with a system message', async () => {
  const c = rt();
  await c.realtime.setAuth(user(now() + 2));
  const ch = c.channel(`expiring-${process.pid}`);
  const system = [];
  const statuses = [];
  ch.on('system', {}, (m) => system.push(m));
  const joined = new Promise((resolve) => {
    ch.subscribe((status) => {
      statuses.push(status);
      if (status === 'SUBSCRIBED') resolve();
    });
  });
  await joined;
  await waitFor(() => statuses.includes('CLOSED'), 'the channel to close at exp');
  const error = system.find((m) => m.status === 'error');
  assert.ok(error, JSON.stringify(system));
  assert.equal(error.extension, 'system');
  assert.match(error.message, /^Token has expired \d+ seconds ago$/);
});

test('setAuth with a fresh token keeps the channel; a forged one closes it', async () => {
  const c = rt('1.0.0');
  await c.realtime.setAuth(user(now() + 3));
  const name = `refresh-${process.pid}`;
  const ch = c.channel(name, { config: { broadcast: { self: true, ack: true } } });
  const statuses = [];
  const got = [];
  const system = [];
  ch.on('broadcast', { event: 'e' }, (m) => got.push(m));
  ch.on('system', {}, (m) => system.push(m));
  await new Promise((resolve) => {
    ch.subscribe((status) => {
      statuses.push(status);
      if (status === 'SUBSCRIBED') resolve();
    });
  });
  await c.realtime.setAuth(user(now() + 3600));
  // Past the first token's exp the channel still works under the second.
  await new Promise((r) => setTimeout(r, 4000));
  assert.equal(await ch.send({ type: 'broadcast', event: 'e', payload: { after: 'refresh' } }), 'ok');
  await waitFor(() => got.length === 1, 'the broadcast after the refresh');
  assert.ok(!statuses.includes('CLOSED'), statuses.join());

  await c.realtime.setAuth(signJwt({ role: 'authenticated', exp: now() + 3600 }, 'z'.repeat(40)));
  await waitFor(() => statuses.includes('CLOSED'), 'the channel to close on a forged token');
  const error = system.find((m) => m.status === 'error');
  assert.equal(error.message, 'Failed to validate JWT signature');
});
