// Storage's image transformations through the unmodified supabase-js client: `download` and
// `getPublicUrl` with `transform`, signed URLs with `transform`, `/render/image/…` with Supabase's
// parameters and `X-Transformations`, Accept negotiation, row level security as for downloads,
// and hostile images (a decompression bomb, garbage) refused with Storage's errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { deflateSync, crc32 } from 'node:zlib';
import { startMadbase, client, ANON_KEY, SERVICE_ROLE_KEY, signJwt, sleep } from './support.js';

let server;
let admin;
const ALICE = 'aaaaaaaa-0000-4000-8000-0000000000a1';
const now = () => Math.floor(Date.now() / 1000);

function chunk(type, data) {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  data.copy(out, 8);
  out.writeUInt32BE(crc32(Buffer.concat([Buffer.from(type, 'ascii'), data])), 8 + data.length);
  return out;
}

/** An RGB PNG of `width` x `height` (a gradient), or one that only declares those dimensions. */
function png(width, height, { declareOnly = false } = {}) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  let pixels = Buffer.alloc(0);
  if (!declareOnly) {
    pixels = Buffer.alloc((width * 3 + 1) * height);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        pixels.set([(x * 255) / width, (y * 255) / height, 128], y * (width * 3 + 1) + 1 + x * 3);
      }
    }
  }
  const signature = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);
  return Buffer.concat([signature, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(pixels)), chunk('IEND', Buffer.alloc(0))]);
}

/** Width and height of a PNG, JPEG or WebP (VP8 / VP8L / VP8X). */
function dimensions(bytes) {
  if (bytes.subarray(1, 4).toString('ascii') === 'PNG') return [bytes.readUInt32BE(16), bytes.readUInt32BE(20)];
  if (bytes.subarray(8, 12).toString('ascii') === 'WEBP') {
    const kind = bytes.subarray(12, 16).toString('ascii');
    if (kind === 'VP8 ') return [bytes.readUInt16LE(26) & 0x3fff, bytes.readUInt16LE(28) & 0x3fff];
    if (kind === 'VP8L') {
      const b = bytes.readUInt32LE(21);
      return [(b & 0x3fff) + 1, ((b >> 14) & 0x3fff) + 1];
    }
    return [bytes.readUIntLE(24, 3) + 1, bytes.readUIntLE(27, 3) + 1];
  }
  throw new Error(`not an image this test reads: ${bytes.subarray(0, 16).toString('hex')}`);
}

before(async () => {
  server = await startMadbase();
  admin = client(server, SERVICE_ROLE_KEY);
  assert.equal((await admin.storage.createBucket('imgs')).error, null);
  assert.equal((await admin.storage.createBucket('pubimgs', { public: true })).error, null);
  for (const bucket of ['imgs', 'pubimgs']) {
    const up = await admin.storage.from(bucket).upload('photo.png', png(400, 300), { contentType: 'image/png' });
    assert.equal(up.error, null);
  }
  server.sql(`create policy "alice reads imgs" on storage.objects for select to authenticated
                using (bucket_id = 'imgs' and auth.uid() = '${ALICE}')`);
});

after(async () => {
  await server?.stop();
});

test('download with a transform: cover, contain and fill boxes, quality, the applied options', async () => {
  const cover = await admin.storage.from('imgs').download('photo.png', { transform: { width: 100, height: 100, resize: 'cover' } });
  assert.equal(cover.error, null);
  assert.deepEqual(dimensions(Buffer.from(await cover.data.arrayBuffer())), [100, 100]);

  const url = `${server.url}/storage/v1/render/image/authenticated/imgs/photo.png`;
  const auth = { authorization: `Bearer ${SERVICE_ROLE_KEY}` };
  const contain = await fetch(`${url}?width=100&height=100&resize=contain&format=origin`, { headers: auth });
  assert.equal(contain.status, 200);
  assert.equal(contain.headers.get('content-type'), 'image/png');
  assert.deepEqual(dimensions(Buffer.from(await contain.arrayBuffer())), [100, 75]);
  assert.equal(contain.headers.get('x-transformations'), 'height:100,width:100,resizing_type:fit');
  assert.match(contain.headers.get('etag'), /^"[0-9a-f]{32}"$/, "the object's ETag");

  const fill = await fetch(`${url}?width=120&height=50&resize=fill&format=origin`, { headers: auth });
  assert.deepEqual(dimensions(Buffer.from(await fill.arrayBuffer())), [120, 50]);
  const onlyWidth = await fetch(`${url}?width=200&format=origin`, { headers: auth });
  assert.deepEqual(dimensions(Buffer.from(await onlyWidth.arrayBuffer())), [200, 150], 'one side keeps the aspect');

  const webp = await fetch(`${url}?width=100&height=100`, { headers: { ...auth, accept: 'image/avif,image/webp,*/*' } });
  assert.equal(webp.headers.get('content-type'), 'image/webp');
  const small = Buffer.from(await (await fetch(`${url}?width=300&quality=20`, { headers: { ...auth, accept: 'image/webp' } })).arrayBuffer());
  const large = Buffer.from(await (await fetch(`${url}?width=300&quality=100`, { headers: { ...auth, accept: 'image/webp' } })).arrayBuffer());
  assert.ok(small.length < large.length, `quality 20 (${small.length} B) is smaller than 100 (${large.length} B)`);
  await webp.arrayBuffer();

  // AVIF by name (supabase-js passes `format` through); never picked from Accept alone.
  const { data: avif, error } = await admin.storage
    .from('imgs')
    .download('photo.png', { transform: { width: 100, height: 100, format: 'avif' } });
  assert.equal(error, null);
  assert.equal(avif.type, 'image/avif');
  const avifBytes = Buffer.from(await avif.arrayBuffer());
  assert.equal(avifBytes.subarray(4, 12).toString('latin1'), 'ftypavif');
  const ispe = avifBytes.indexOf('ispe');
  assert.deepEqual([avifBytes.readUInt32BE(ispe + 8), avifBytes.readUInt32BE(ispe + 12)], [100, 100], 'cover crops to the box');
  const named = await fetch(`${url}?width=100&format=avif`, { headers: auth });
  assert.equal(named.headers.get('x-transformations'), 'width:100,resizing_type:fill,format:avif');
  await named.arrayBuffer();
});

test('public buckets render without a token; private ones by RLS; signed URLs carry the transform', async () => {
  const { data } = anonClient().storage.from('pubimgs').getPublicUrl('photo.png', { transform: { width: 40, height: 30 } });
  const open = await fetch(data.publicUrl);
  assert.equal(open.status, 200);
  await open.arrayBuffer();
  const closed = await fetch(`${server.url}/storage/v1/render/image/public/imgs/photo.png?width=40`);
  assert.equal((await closed.json()).code, 'NoSuchBucket');

  const alice = client(server, signJwt({ role: 'authenticated', sub: ALICE, exp: now() + 3600 }));
  assert.equal((await alice.storage.from('imgs').download('photo.png', { transform: { width: 10 } })).error, null);
  const other = client(server, signJwt({ role: 'authenticated', sub: 'bbbbbbbb-0000-4000-8000-0000000000b2', exp: now() + 3600 }));
  const refused = await other.storage.from('imgs').download('photo.png', { transform: { width: 10 } });
  assert.equal(refused.error.statusCode, '404');

  const signed = await admin.storage.from('imgs').createSignedUrl('photo.png', 60, { transform: { width: 64, height: 48, resize: 'fill' } });
  assert.equal(signed.error, null);
  assert.match(signed.data.signedUrl, /\/render\/image\/sign\/imgs\/photo\.png\?token=/);
  const got = await fetch(signed.data.signedUrl, { headers: { accept: 'image/png' } });
  assert.equal(got.status, 200);
  assert.deepEqual(dimensions(Buffer.from(await got.arrayBuffer())), [64, 48]);
  const plain = await admin.storage.from('imgs').createSignedUrl('photo.png', 60, { transform: {} });
  assert.match(plain.data.signedUrl, /\/object\/sign\/imgs\/photo\.png\?token=/, 'an empty transform is a plain download');
});

test('hostile images are refused with Storage errors and nothing is allocated for a bomb', async () => {
  const imgs = admin.storage.from('imgs');
  assert.equal((await imgs.upload('bomb.png', png(100_000, 100_000, { declareOnly: true }), { contentType: 'image/png' })).error, null);
  assert.equal((await imgs.upload('junk.png', Buffer.from('not an image at all'), { contentType: 'image/png' })).error, null);
  const url = (key) => `${server.url}/storage/v1/render/image/authenticated/imgs/${key}?width=10`;
  const auth = { authorization: `Bearer ${SERVICE_ROLE_KEY}` };
  const bomb = await fetch(url('bomb.png'), { headers: auth });
  assert.equal(bomb.status, 400);
  assert.equal((await bomb.json()).message, 'The source image resolution is too large to process');
  const junk = await fetch(url('junk.png'), { headers: auth });
  assert.equal(junk.status, 400);
  assert.equal((await junk.json()).message, 'The source image is invalid or unsupported for rendering');
  const badWidth = await fetch(`${server.url}/storage/v1/render/image/authenticated/imgs/photo.png?width=abc`, { headers: auth });
  assert.equal(badWidth.status, 400);
  // The server is still there and rendering.
  assert.equal((await fetch(url('photo.png'), { headers: auth })).status, 200);
});

test('a repeated render is served from the cache', async () => {
  const url = `${server.url}/storage/v1/render/image/authenticated/imgs/photo.png?width=77&format=origin`;
  const auth = { authorization: `Bearer ${SERVICE_ROLE_KEY}` };
  const first = Buffer.from(await (await fetch(url, { headers: auth })).arrayBuffer());
  for (let i = 0; i < 4; i++) {
    assert.ok(Buffer.from(await (await fetch(url, { headers: auth })).arrayBuffer()).equals(first));
  }
  await sleep(1100); // the scrape is coalesced for up to a second
  const text = await (await fetch(`${server.url}/metrics`, { headers: { apikey: SERVICE_ROLE_KEY } })).text();
  const total = (name) =>
    text.split('\n').filter((l) => l.startsWith(`${name}{`)).reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
  assert.ok(total('madbase_storage_transform_cache_hits_total') >= 2, 'two shards at most miss');
  const timed = text.split('\n').find((l) => l.startsWith('madbase_operation_duration_seconds_count{operation="storage_transform"}'));
  assert.ok(Number(timed?.split(' ').pop()) >= 1, 'transform times are a histogram');
});

function anonClient() {
  return client(server, ANON_KEY);
}
