// Storage's resumable uploads (TUS 1.0.0 at /storage/v1/upload/resumable) with the unmodified
// tus-js-client, configured as Supabase documents it (6 MiB chunks, data during creation), and
// raw requests where the protocol's edges need exact control: chunks in 6 MiB pieces downloaded
// back through supabase-js, row level security and bucket limits at creation, upsert, a
// connection cut mid-chunk and the resume after it, one request per upload at a time, the object
// invisible until complete, termination, signed uploads, bad input, and the state surviving a
// restart and expiring.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import * as tus from 'tus-js-client';
import { startMadbase, startS3Server, client, ANON_KEY, SERVICE_ROLE_KEY, signJwt, sleep } from './support.js';

const MiB = 1024 * 1024;
const CHUNK = 6 * MiB;
const ALICE = 'aaaaaaaa-0000-4000-8000-0000000000a1';
const BOB = 'bbbbbbbb-0000-4000-8000-0000000000b2';
const now = () => Math.floor(Date.now() / 1000);
const ALICE_TOKEN = signJwt({ role: 'authenticated', sub: ALICE, exp: now() + 3600 });
const BOB_TOKEN = signJwt({ role: 'authenticated', sub: BOB, exp: now() + 3600 });

// The data directory outlives the first server: the restart test starts a second one on it.
const dataDir = mkdtempSync(join(tmpdir(), 'madbase-e2e-tus-'));
let server;
let admin;

const endpoint = () => `${server.url}/storage/v1/upload/resumable`;
const auth = (token) => ({ authorization: `Bearer ${token}`, apikey: ANON_KEY });
const meta = (bucket, key, extra = {}) => ({ bucketName: bucket, objectName: key, contentType: 'application/octet-stream', cacheControl: '3600', ...extra });
const encodeMeta = (m) => Object.entries(m).map(([k, v]) => `${k} ${Buffer.from(v).toString('base64')}`).join(',');
const versionOf = (location) => Buffer.from(location.split('/').pop(), 'base64url').toString('utf8').split('/').pop();
const uploadDir = (location) => join(dataDir, 'storage', 'uploads', versionOf(location));

/** Uploads `bytes` with tus-js-client; resolves with the upload URL and every response seen. */
function tusUpload(bytes, { endpoint: url = endpoint(), uploadUrl, headers, metadata, chunkSize = CHUNK, retryDelays = [0, 200, 500, 1000, 2000] }) {
  const responses = [];
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(bytes, {
      ...(uploadUrl ? { uploadUrl } : { endpoint: url }),
      headers,
      metadata,
      chunkSize,
      uploadDataDuringCreation: true,
      removeFingerprintOnSuccess: true,
      retryDelays,
      onAfterResponse(req, res) {
        responses.push({ method: req.getMethod(), status: res.getStatus(), offset: res.getHeader('Upload-Offset') });
      },
      onError: (error) => reject(Object.assign(error, { responses })),
      onSuccess: () => resolve({ url: upload.url, responses }),
    });
    upload.start();
  });
}

/** What a failed tus upload's last response was: `{status, body}`. */
function failure(error) {
  assert.ok(error.originalResponse, `a response, not ${error}`);
  return { status: error.originalResponse.getStatus(), body: error.originalResponse.getBody() };
}

/** A TUS request with fetch (the protocol header added). */
function tusFetch(url, { method, headers = {}, body }) {
  return fetch(url, { method, headers: { 'tus-resumable': '1.0.0', ...headers }, body });
}

/** Creates an upload without data; resolves with its absolute URL. */
async function create(bucket, key, length, token = SERVICE_ROLE_KEY, extra = {}) {
  const r = await tusFetch(endpoint(), {
    method: 'POST',
    headers: { ...auth(token), 'upload-length': String(length), 'upload-metadata': encodeMeta(meta(bucket, key)), ...extra },
  });
  assert.equal(r.status, 201, await r.text());
  return r.headers.get('location');
}

async function headOffset(url, token = SERVICE_ROLE_KEY) {
  const r = await tusFetch(url, { method: 'HEAD', headers: auth(token) });
  return { status: r.status, offset: Number(r.headers.get('upload-offset')), length: Number(r.headers.get('upload-length')), headers: r.headers };
}

function patch(url, offset, body, token = SERVICE_ROLE_KEY, headers = {}) {
  return tusFetch(url, {
    method: 'PATCH',
    headers: { ...auth(token), 'upload-offset': String(offset), 'content-type': 'application/offset+octet-stream', ...headers },
    body,
  });
}

/**
 * A PATCH written by hand on its own socket: the head declaring `declared` bytes, then `sent`.
 * Returns the socket and a promise of the status line the server answers (if any).
 */
function rawPatch(url, offset, declared, sent, token = SERVICE_ROLE_KEY, extraHead = '') {
  const u = new URL(url);
  const socket = connect(Number(u.port), u.hostname);
  // The status line of the answer, once its head arrived (or what came before the socket closed).
  const answered = new Promise((resolve) => {
    let text = '';
    socket.on('data', (d) => {
      text += d;
      if (text.includes('\r\n\r\n')) resolve(text.split('\r\n')[0]);
    });
    socket.on('close', () => resolve(text.split('\r\n')[0]));
    socket.on('error', () => {});
  });
  socket.write(
    `PATCH ${u.pathname} HTTP/1.1\r\nhost: ${u.host}\r\ntus-resumable: 1.0.0\r\nauthorization: Bearer ${token}\r\n` +
      `upload-offset: ${offset}\r\ncontent-type: application/offset+octet-stream\r\ncontent-length: ${declared}\r\n${extraHead}\r\n`,
  );
  socket.write(sent);
  return { socket, answered };
}

/** Polls HEAD until the offset is `want` (a cut request is still finishing on the server). */
async function waitForOffset(url, want, token = SERVICE_ROLE_KEY) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const { offset } = await headOffset(url, token);
    if (offset === want) return offset;
    if (Date.now() > deadline) throw new Error(`offset stayed ${offset}, wanted ${want}`);
    await sleep(50);
  }
}

async function downloaded(bucket, key) {
  const { data, error } = await admin.storage.from(bucket).download(key);
  assert.equal(error, null, `download ${bucket}/${key}`);
  return Buffer.from(await data.arrayBuffer());
}

async function listed(bucket, prefix) {
  const { data, error } = await admin.storage.from(bucket).list(prefix);
  assert.equal(error, null);
  return data.map((o) => o.name);
}

before(async () => {
  server = await startMadbase({ dataDir });
  admin = client(server, SERVICE_ROLE_KEY);
  for (const [id, options] of [
    ['docs', {}],
    ['small', { fileSizeLimit: 1000 }],
    ['pics', { allowedMimeTypes: ['image/*'] }],
  ]) {
    assert.equal((await admin.storage.createBucket(id, options)).error, null);
  }
  // Each signed-in user writes only their own folder of `docs` (Supabase's classic policies).
  server.sql(`
    create policy "own folder insert" on storage.objects for insert to authenticated
      with check (bucket_id = 'docs' and (storage.foldername(name))[1] = auth.uid()::text);
    create policy "own folder select" on storage.objects for select to authenticated
      using (bucket_id = 'docs' and (storage.foldername(name))[1] = auth.uid()::text);
    create policy "own folder update" on storage.objects for update to authenticated
      using (bucket_id = 'docs' and (storage.foldername(name))[1] = auth.uid()::text);
  `);
});

after(async () => {
  await server?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

test('OPTIONS advertises the protocol', async () => {
  const r = await fetch(endpoint(), { method: 'OPTIONS' });
  assert.equal(r.status, 204);
  assert.equal(r.headers.get('tus-version'), '1.0.0');
  assert.equal(r.headers.get('tus-resumable'), '1.0.0');
  assert.match(r.headers.get('tus-extension'), /creation,creation-with-upload,termination,expiration/);
  assert.equal(r.headers.get('tus-max-size'), String(50 * MiB));
  assert.match(r.headers.get('tus-extension'), /(^|,)checksum(,|$)/);
  assert.equal(r.headers.get('tus-checksum-algorithm'), 'sha1,sha256,sha512,md5');
});

test('the checksum extension: matching bytes count, a mismatch or a cut keeps none of them', async () => {
  const digest = (algorithm, text) => `${algorithm} ${createHash(algorithm).update(text).digest('base64')}`;
  const url = await create('docs', `${ALICE}/checked.txt`, 15, ALICE_TOKEN);
  const first = await patch(url, 0, 'hello', ALICE_TOKEN, { 'upload-checksum': digest('sha1', 'hello') });
  assert.equal(first.status, 204, await first.text());
  assert.equal(first.headers.get('upload-offset'), '5');

  const mismatch = await patch(url, 5, 'XXXXX', ALICE_TOKEN, { 'upload-checksum': digest('sha1', 'world') });
  assert.equal(mismatch.status, 460);
  assert.equal(mismatch.statusText, 'Checksum Mismatch');
  assert.equal(await mismatch.text(), 'Checksum Mismatch\n');
  assert.equal((await headOffset(url, ALICE_TOKEN)).offset, 5, 'the refused bytes were not kept');
  for (const [header, text] of [
    ['crc32 AAAAAA==', 'Unsupported Upload-Checksum algorithm\n'],
    ['sha1 !!!', 'Invalid upload-checksum\n'],
    [digest('md5', 'world').replace('md5', 'sha256'), 'Invalid upload-checksum\n'],
  ]) {
    const refused = await patch(url, 5, 'world', ALICE_TOKEN, { 'upload-checksum': header });
    assert.deepEqual([refused.status, await refused.text()], [400, text], header);
  }

  // Cut mid-request: what arrived cannot be verified, so it is dropped.
  const { socket } = rawPatch(url, 5, 5, 'wor', ALICE_TOKEN, `upload-checksum: ${digest('sha256', 'world')}\r\n`);
  await sleep(200);
  socket.destroy();
  const deadline = Date.now() + 10_000;
  let second;
  for (;;) {
    second = await patch(url, 5, 'world', ALICE_TOKEN, { 'upload-checksum': digest('sha256', 'world') });
    const text = await second.text();
    if (second.status !== 409 || !text.startsWith('The upload is in use')) break;
    assert.ok(Date.now() < deadline, 'the cut request let go of the upload');
    await sleep(50);
  }
  assert.equal(second.status, 204, 'the offset was still 5');
  const last = await patch(url, 10, '!!!!!', ALICE_TOKEN, { 'upload-checksum': digest('md5', '!!!!!') });
  assert.equal(last.status, 204);
  assert.equal(last.headers.get('tus-complete'), '1');
  assert.equal((await downloaded('docs', `${ALICE}/checked.txt`)).toString(), 'helloworld!!!!!');

  // With the creation: a mismatch stores nothing.
  const created = await tusFetch(endpoint(), {
    method: 'POST',
    headers: {
      ...auth(ALICE_TOKEN),
      'upload-length': '3',
      'upload-metadata': encodeMeta(meta('docs', `${ALICE}/checked-create.txt`)),
      'content-type': 'application/offset+octet-stream',
      'upload-checksum': digest('sha1', 'abd'),
    },
    body: 'abc',
  });
  assert.equal(created.status, 460);
  assert.ok(!(await listed('docs', ALICE)).includes('checked-create.txt'));
});

test('an unfinished upload says until when it can be resumed (Upload-Expires, an hour by default)', async () => {
  const r = await tusFetch(endpoint(), {
    method: 'POST',
    headers: { ...auth(SERVICE_ROLE_KEY), 'upload-length': '10', 'upload-metadata': encodeMeta(meta('docs', 'expires/a.bin')) },
  });
  assert.equal(r.status, 201, await r.text());
  const expires = Date.parse(r.headers.get('upload-expires'));
  assert.ok(Math.abs(expires - (Date.now() + 3600_000)) < 5_000, r.headers.get('upload-expires'));
  const done = await patch(r.headers.get('location'), 0, Buffer.alloc(10));
  assert.equal(done.status, 204);
  assert.equal(done.headers.get('upload-expires'), null, 'a finished upload does not expire');
});

test('a 13 MiB upload in 6 MiB chunks (the first with the creation) downloads back byte for byte', async () => {
  const bytes = randomBytes(13 * MiB);
  const key = `${ALICE}/big.bin`;
  const { url, responses } = await tusUpload(bytes, {
    headers: auth(ALICE_TOKEN),
    metadata: meta('docs', key, { metadata: JSON.stringify({ k: 'v' }), contentType: 'application/x-test' }),
  });
  assert.deepEqual(
    responses.map((r) => [r.method, r.status, r.offset]),
    [['POST', 201, String(CHUNK)], ['PATCH', 204, String(2 * CHUNK)], ['PATCH', 204, String(13 * MiB)]],
  );
  assert.ok(url.startsWith(`${endpoint()}/`), url);
  assert.equal(Buffer.from(url.split('/').pop(), 'base64url').toString(), `docs/${key}/${versionOf(url)}`);

  const alice = client(server, ALICE_TOKEN);
  const { data, error } = await alice.storage.from('docs').download(key);
  assert.equal(error, null);
  assert.ok(Buffer.from(await data.arrayBuffer()).equals(bytes), 'the same bytes');
  const info = await alice.storage.from('docs').info(key);
  assert.equal(info.data.size, 13 * MiB);
  assert.equal(info.data.contentType, 'application/x-test');
  assert.equal(info.data.cacheControl, 'max-age=3600');
  assert.deepEqual(info.data.metadata, { k: 'v' });
  assert.equal(server.sql(`select owner_id from storage.objects where name = '${key}'`).trim(), ALICE);
  assert.equal(server.sql(`select version from storage.objects where name = '${key}'`).trim(), versionOf(url), 'the id names the version');

  const head = await headOffset(url, ALICE_TOKEN);
  assert.deepEqual([head.status, head.offset, head.length], [200, 13 * MiB, 13 * MiB], 'a finished upload stays finished');
  assert.equal(head.headers.get('cache-control'), 'no-store');
  assert.ok(!existsSync(join(uploadDir(url), 'data')), 'the bytes live on as the blob only');
});

test('creation is authorised as a normal upload: RLS, bucket size and type limits', async () => {
  const anon = await tusUpload(Buffer.from('x'), { headers: auth(ANON_KEY), metadata: meta('docs', `${ALICE}/anon.txt`), retryDelays: [] }).catch((e) => e);
  assert.deepEqual(failure(anon), { status: 403, body: 'new row violates row-level security policy' });

  const other = await tusUpload(Buffer.from('x'), { headers: auth(BOB_TOKEN), metadata: meta('docs', `${ALICE}/bob.txt`), retryDelays: [] }).catch((e) => e);
  assert.equal(failure(other).status, 403);

  const noToken = await tusFetch(endpoint(), { method: 'POST', headers: { 'upload-length': '1', 'upload-metadata': encodeMeta(meta('docs', 'x')) } });
  assert.equal(noToken.status, 403);
  assert.equal(await noToken.text(), 'Invalid Compact JWS');

  const big = await tusUpload(randomBytes(2000), { headers: auth(SERVICE_ROLE_KEY), metadata: meta('small', 'big.bin'), retryDelays: [] }).catch((e) => e);
  assert.deepEqual(failure(big), { status: 413, body: 'Maximum size exceeded\n' });

  const text = await tusUpload(Buffer.from('hi'), { headers: auth(SERVICE_ROLE_KEY), metadata: meta('pics', 'a.txt', { contentType: 'text/plain' }), retryDelays: [] }).catch((e) => e);
  assert.deepEqual(failure(text), { status: 415, body: 'mime type text/plain is not supported' });

  const noBucket = await tusUpload(Buffer.from('hi'), { headers: auth(SERVICE_ROLE_KEY), metadata: meta('nope', 'a.txt'), retryDelays: [] }).catch((e) => e);
  assert.deepEqual(failure(noBucket), { status: 404, body: 'Bucket not found' });

  assert.equal(server.sql(`select count(*) from storage.objects where name in ('${ALICE}/anon.txt', '${ALICE}/bob.txt', 'big.bin', 'a.txt')`).trim(), '0');
});

test('without x-upsert an existing object is a 409; with it the object is replaced', async () => {
  const key = `${ALICE}/upsert.txt`;
  await tusUpload(Buffer.from('first'), { headers: auth(ALICE_TOKEN), metadata: meta('docs', key) });
  const again = await tusUpload(Buffer.from('second'), { headers: auth(ALICE_TOKEN), metadata: meta('docs', key), retryDelays: [] }).catch((e) => e);
  assert.deepEqual(failure(again), { status: 409, body: 'The resource already exists' });
  assert.equal((await downloaded('docs', key)).toString(), 'first');

  await tusUpload(Buffer.from('second'), { headers: { ...auth(ALICE_TOKEN), 'x-upsert': 'true' }, metadata: meta('docs', key) });
  assert.equal((await downloaded('docs', key)).toString(), 'second');
});

test('two uploads of one key: the first to finish wins, the other meets 409', async () => {
  const key = 'race/one.bin';
  const first = await create('docs', key, 5);
  const second = await create('docs', key, 6);
  assert.equal((await patch(second, 0, 'sec')).status, 204);
  assert.equal((await patch(first, 0, 'first')).status, 204);
  const late = await patch(second, 3, 'ond');
  assert.equal(late.status, 409);
  assert.equal(await late.text(), 'The resource already exists');
  assert.equal((await downloaded('docs', key)).toString(), 'first');
});

test('a connection cut mid-chunk: the bytes that arrived are kept and the client resumes to the exact bytes', async () => {
  // A proxy that cuts the connection carrying the 8th MiB from the client: 2 MiB into the first
  // PATCH, after the 6 MiB of the creation. The server sees the body end early (a FIN).
  const upstream = new URL(server.url);
  let cut = false;
  let forwarded = 0;
  const proxy = createServer((downstream) => {
    const up = connect(Number(upstream.port), upstream.hostname);
    downstream.on('data', (d) => {
      forwarded += d.length;
      if (!cut && forwarded > 8 * MiB) {
        cut = true;
        up.end(d.subarray(0, d.length - (forwarded - 8 * MiB)));
        downstream.destroy();
        return;
      }
      up.write(d);
    });
    up.on('data', (d) => downstream.write(d));
    for (const s of [up, downstream]) {
      s.on('error', () => {});
      s.on('close', () => { up.destroy(); downstream.destroy(); });
    }
  });
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  try {
    const bytes = randomBytes(13 * MiB);
    const key = 'cut/big.bin';
    const { url, responses } = await tusUpload(bytes, {
      endpoint: `http://127.0.0.1:${proxy.address().port}/storage/v1/upload/resumable`,
      headers: auth(SERVICE_ROLE_KEY),
      metadata: meta('docs', key),
    });
    assert.ok(cut, 'the proxy cut a connection');
    const heads = responses.filter((r) => r.method === 'HEAD');
    assert.ok(heads.length >= 1, JSON.stringify(responses));
    assert.ok(heads.some((h) => Number(h.offset) > CHUNK), `bytes of the cut chunk were kept: ${JSON.stringify(responses)}`);
    assert.ok((await downloaded('docs', key)).equals(bytes), 'the exact bytes');
    assert.ok(url.includes(`127.0.0.1:${proxy.address().port}`), 'Location follows the Host the client used');
  } finally {
    proxy.close();
  }
});

test('HEAD after a cut reports exactly the bytes received; the object stays invisible until complete', async () => {
  const bytes = randomBytes(3 * MiB);
  const key = 'partial/file.bin';
  const url = await create('docs', key, bytes.length);
  const { socket, answered } = rawPatch(url, 0, bytes.length, bytes.subarray(0, MiB));
  socket.end(); // the client half-closes after 1 MiB of the 3 it declared
  await answered;
  assert.equal(await waitForOffset(url, MiB), MiB);
  const head = await headOffset(url);
  assert.equal(head.length, bytes.length);
  assert.equal(head.headers.get('cache-control'), 'no-store');
  assert.equal(head.headers.get('upload-metadata'), encodeMeta(meta('docs', key)));

  const early = await admin.storage.from('docs').download(key);
  assert.equal(early.data, null);
  assert.equal(early.error.statusCode, '404');
  assert.deepEqual(await listed('docs', 'partial'), [], 'not listed');
  assert.equal(server.sql(`select count(*) from storage.objects where name = '${key}'`).trim(), '0');

  await tusUpload(bytes, { uploadUrl: url, headers: auth(SERVICE_ROLE_KEY) });
  assert.ok((await downloaded('docs', key)).equals(bytes));
  assert.deepEqual(await listed('docs', 'partial'), ['file.bin']);
});

test('one request per upload at a time: a concurrent PATCH is a 409', async () => {
  const length = 2 * MiB;
  const bytes = randomBytes(length);
  const url = await create('docs', 'busy/file.bin', length);
  // Past half the staging size, so the server has written (and holds the upload) when HEAD sees it.
  const first = rawPatch(url, 0, length, bytes.subarray(0, 600 * 1024));
  const deadline = Date.now() + 10_000;
  while ((await headOffset(url)).offset === 0) {
    assert.ok(Date.now() < deadline, 'the first PATCH never wrote');
    await sleep(20);
  }
  // The second lands on either shard; the lock is the upload's, not the shard's.
  for (let i = 0; i < 4; i++) {
    const second = await patch(url, 0, 'x');
    assert.equal(second.status, 409);
    assert.equal(await second.text(), 'The upload is in use by another request\n');
  }
  first.socket.write(bytes.subarray(600 * 1024));
  assert.equal(await first.answered, 'HTTP/1.1 204 No Content');
  first.socket.destroy();
  assert.ok((await downloaded('docs', 'busy/file.bin')).equals(bytes));
});

test('PATCH refuses wrong offsets, types and bytes past the length; HEAD and PATCH find nothing for others', async () => {
  const url = await create('docs', `${ALICE}/strict.bin`, 10, ALICE_TOKEN);
  const conflict = await patch(url, 3, 'abc', ALICE_TOKEN);
  assert.equal(conflict.status, 409);
  assert.equal(await conflict.text(), 'Upload-Offset conflict\n');
  const type = await patch(url, 0, 'abc', ALICE_TOKEN, { 'content-type': 'text/plain' });
  assert.equal(type.status, 415);
  const over = await patch(url, 0, 'x'.repeat(11), ALICE_TOKEN);
  assert.equal(over.status, 413);
  assert.equal(await over.text(), "upload's size exceeded\n");
  const noOffset = await tusFetch(url, { method: 'PATCH', headers: { ...auth(ALICE_TOKEN), 'content-type': 'application/offset+octet-stream' }, body: 'a' });
  assert.equal(noOffset.status, 400);
  for (const bad of ['-1', '01', '1.5', '99999999999999999999']) {
    const r = await patch(url, bad, 'a', ALICE_TOKEN);
    assert.equal(r.status, 400, bad);
    assert.equal(await r.text(), 'Invalid upload-offset\n');
  }
  assert.equal((await headOffset(url, ALICE_TOKEN)).offset, 0, 'nothing was written');

  assert.equal((await headOffset(url, BOB_TOKEN)).status, 404, "another user's token finds nothing");
  assert.equal((await headOffset(url, SERVICE_ROLE_KEY)).status, 404, 'nor does another role');
  assert.equal((await patch(url, 0, 'a', BOB_TOKEN)).status, 404);
  assert.equal((await headOffset(`${endpoint()}/${Buffer.from('docs/x/not-a-version').toString('base64url')}`)).status, 404);
  assert.equal((await headOffset(`${endpoint()}/garbage`)).status, 404);
  const missingVersion = await fetch(url, { method: 'HEAD', headers: auth(ALICE_TOKEN) });
  assert.equal(missingVersion.status, 412);
});

test('creation refuses bad headers and writes nothing', async () => {
  const post = (headers) => tusFetch(endpoint(), { method: 'POST', headers: { ...auth(SERVICE_ROLE_KEY), ...headers } });
  const good = { 'upload-length': '5', 'upload-metadata': encodeMeta(meta('docs', 'bad/a.txt')) };
  const cases = [
    [{ ...good, 'upload-length': '-1' }, 400, 'Invalid upload-length\n'],
    [{ ...good, 'upload-length': '1e3' }, 400, 'Invalid upload-length\n'],
    [{ ...good, 'upload-length': '9007199254740992' }, 400, 'Invalid upload-length\n'],
    [{ 'upload-metadata': good['upload-metadata'] }, 400, 'Upload-Length or Upload-Defer-Length header required\n'],
    [{ ...good, 'upload-defer-length': '1' }, 501, 'creation-defer-length extension is not (yet) supported.\n'],
    [{ ...good, 'upload-metadata': 'bucketName !!!' }, 400, 'Invalid upload-metadata\n'],
    [{ ...good, 'upload-metadata': 'bucketName ZG9jcw==,bucketName ZG9jcw==' }, 400, 'Invalid upload-metadata\n'],
    [{ ...good, 'upload-metadata': `k ${'A'.repeat(9000)}` }, 400, 'The Upload-Metadata header is too large\n'],
    [{ 'upload-length': '5' }, 400, 'Metadata header is required'],
    [{ ...good, 'upload-metadata': encodeMeta({ bucketName: 'docs' }) }, 400, 'Invalid key: '],
    [{ ...good, 'upload-metadata': encodeMeta(meta('docs', '../escape.txt')) }, 400, 'Invalid key: ../escape.txt'],
    [{ ...good, 'upload-metadata': encodeMeta(meta('bad/bucket', 'a.txt')) }, 400, 'Bucket name invalid'],
    [{ ...good, 'x-forwarded-proto': 'gopher' }, 400, 'Invalid x-forwarded-proto\n'],
  ];
  for (const [headers, status, text] of cases) {
    const r = await post(headers);
    assert.equal(r.status, status, JSON.stringify(headers).slice(0, 200));
    assert.equal(await r.text(), text);
    assert.equal(r.headers.get('location'), null);
  }
  const version = await tusFetch(endpoint(), { method: 'POST', headers: { ...auth(SERVICE_ROLE_KEY), ...good, 'tus-resumable': '0.2.2' } });
  assert.equal(version.status, 412);
  assert.equal(version.headers.get('tus-version'), '1.0.0');

  const forwarded = await post({ ...good, 'x-forwarded-host': 'project.example.com', 'x-forwarded-proto': 'https' });
  assert.equal(forwarded.status, 201);
  assert.match(forwarded.headers.get('location'), /^https:\/\/project\.example\.com\/storage\/v1\/upload\/resumable\/[A-Za-z0-9_-]+$/);
  assert.equal(forwarded.headers.get('upload-offset'), '0');
  assert.equal(server.sql("select count(*) from storage.objects where name like 'bad/%' or name like '%escape%'").trim(), '0');
});

test('termination removes an unfinished upload; a finished one cannot be terminated', async () => {
  const url = await create('docs', 'term/a.bin', 10);
  assert.equal((await patch(url, 0, 'abc')).status, 204);
  assert.ok(existsSync(uploadDir(url)));
  const deleted = await tusFetch(url, { method: 'DELETE', headers: auth(SERVICE_ROLE_KEY) });
  assert.equal(deleted.status, 204);
  assert.ok(!existsSync(uploadDir(url)), 'its files are gone');
  assert.equal((await headOffset(url)).status, 404);
  assert.equal((await patch(url, 3, 'def')).status, 404);

  const { url: done } = await tusUpload(Buffer.from('done'), { headers: auth(SERVICE_ROLE_KEY), metadata: meta('docs', 'term/done.txt') });
  const refused = await tusFetch(done, { method: 'DELETE', headers: auth(SERVICE_ROLE_KEY) });
  assert.equal(refused.status, 400);
  assert.equal(await refused.text(), 'Cannot terminate an already completed upload\n');
  assert.equal((await downloaded('docs', 'term/done.txt')).toString(), 'done');
});

test('a signed upload URL token uploads through /upload/resumable/sign without other credentials', async () => {
  const alice = client(server, ALICE_TOKEN);
  const key = `${ALICE}/signed.bin`;
  const { data, error } = await alice.storage.from('docs').createSignedUploadUrl(key);
  assert.equal(error, null);
  const bytes = randomBytes(7 * MiB);
  const { url } = await tusUpload(bytes, {
    endpoint: `${endpoint()}/sign`,
    headers: { 'x-signature': data.token },
    metadata: meta('docs', key),
  });
  assert.ok(url.startsWith(`${endpoint()}/sign/`), url);
  assert.ok((await downloaded('docs', key)).equals(bytes));
  assert.equal(server.sql(`select owner_id from storage.objects where name = '${key}'`).trim(), ALICE, "the token's owner");

  const head = await tusFetch(url, { method: 'HEAD', headers: auth(ALICE_TOKEN) });
  assert.equal(head.status, 400, 'the signed URL takes the signature, not a JWT');
  const missing = await tusUpload(Buffer.from('x'), { endpoint: `${endpoint()}/sign`, headers: {}, metadata: meta('docs', key), retryDelays: [] }).catch((e) => e);
  assert.deepEqual(failure(missing), { status: 400, body: 'Missing x-signature header' });
  const elsewhere = await tusUpload(Buffer.from('x'), { endpoint: `${endpoint()}/sign`, headers: { 'x-signature': data.token }, metadata: meta('docs', `${ALICE}/other.bin`), retryDelays: [] }).catch((e) => e);
  assert.deepEqual(failure(elsewhere), { status: 400, body: 'Invalid signature' });
  const bad = await tusUpload(Buffer.from('x'), { endpoint: `${endpoint()}/sign`, headers: { 'x-signature': 'not-a-token' }, metadata: meta('docs', key), retryDelays: [] }).catch((e) => e);
  assert.deepEqual(failure(bad), { status: 400, body: 'Invalid Compact JWS' });
  const used = await tusUpload(Buffer.from('x'), { endpoint: `${endpoint()}/sign`, headers: { 'x-signature': data.token }, metadata: meta('docs', key), retryDelays: [] }).catch((e) => e);
  assert.deepEqual(failure(used), { status: 409, body: 'The resource already exists' }, 'a token without upsert does not replace');
});

test('uploads survive a restart and expire when left untouched', async () => {
  const bytes = randomBytes(3 * MiB);
  const resumed = await create('docs', 'restart/kept.bin', bytes.length);
  assert.equal((await patch(resumed, 0, bytes.subarray(0, MiB))).status, 204);
  const abandoned = await create('docs', 'restart/abandoned.bin', 10);
  const idOf = (url) => url.split('/').pop();

  await server.stop();
  server = await startMadbase({ dataDir });
  admin = client(server, SERVICE_ROLE_KEY);
  const url = `${endpoint()}/${idOf(resumed)}`;
  assert.equal((await headOffset(url)).offset, MiB, 'the offset is where it was');
  await tusUpload(bytes, { uploadUrl: url, headers: auth(SERVICE_ROLE_KEY) });
  assert.ok((await downloaded('docs', 'restart/kept.bin')).equals(bytes));

  await server.stop();
  server = await startMadbase({ dataDir, env: { MADBASE_STORAGE_TUS_URL_EXPIRY_MS: '1000' } });
  admin = client(server, SERVICE_ROLE_KEY);
  assert.equal((await headOffset(`${endpoint()}/${idOf(abandoned)}`)).status, 404, 'expired');
  const deadline = Date.now() + 15_000;
  while (readdirSync(join(dataDir, 'storage', 'uploads')).length > 0) {
    assert.ok(Date.now() < deadline, `expired uploads were not removed: ${readdirSync(join(dataDir, 'storage', 'uploads'))}`);
    await sleep(200);
  }
  assert.ok((await downloaded('docs', 'restart/kept.bin')).equals(bytes), 'expiry leaves finished objects alone');
});

test('with the S3 backend, a finished resumable upload is streamed up and served from S3', async () => {
  const s3 = await startS3Server();
  const other = await startMadbase({ env: s3.env });
  try {
    const service = client(other, SERVICE_ROLE_KEY);
    assert.equal((await service.storage.createBucket('s3docs')).error, null);
    const bytes = randomBytes(7 * MiB);
    const { url } = await tusUpload(bytes, {
      endpoint: `${other.url}/storage/v1/upload/resumable`,
      headers: auth(SERVICE_ROLE_KEY),
      metadata: meta('s3docs', 'big.bin'),
    });
    assert.deepEqual(await s3.keys(), [versionOf(url)], 'the blob is in S3, named by the version');
    const { data, error } = await service.storage.from('s3docs').download('big.bin');
    assert.equal(error, null);
    assert.ok(Buffer.from(await data.arrayBuffer()).equals(bytes), 'the same bytes');
  } finally {
    await other.stop();
    await s3.stop();
  }
});
