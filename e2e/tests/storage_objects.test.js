// Storage's object API through the unmodified supabase-js client (`supabase.storage.from(…)`):
// uploads (raw and multipart, upsert, metadata, limits), downloads (ranges, validators,
// attachments, public buckets), info and exists, list and list-v2, move, copy, remove, signed
// download and upload URLs — with row level security on `storage.objects` deciding for anon and
// for signed-in users as on Supabase, and the object store left with exactly the blobs rows name.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'node:http';
import { startMadbase, startS3Server, client, ANON_KEY, SERVICE_ROLE_KEY, signJwt, sleep } from './support.js';

let server;
let s3; // the S3 server of the S3 backend's run
let admin;
let anon;
const ALICE = 'aaaaaaaa-0000-4000-8000-0000000000a1';
const BOB = 'bbbbbbbb-0000-4000-8000-0000000000b2';
const now = () => Math.floor(Date.now() / 1000);
const userClient = (sub) => client(server, signJwt({ role: 'authenticated', sub, exp: now() + 3600 }));
let alice;
let bob;

/** The blobs in the object store (their version names). */
async function blobs() {
  if (s3) return s3.keys();
  const root = join(server.dataDir, 'storage', 'objects');
  return readdirSync(root).flatMap((fan) => readdirSync(join(root, fan)));
}

function tmpFiles() {
  return readdirSync(join(server.dataDir, 'storage', 'tmp'));
}

function versions() {
  return server.sql('select version from storage.objects where version is not null order by 1').split('\n').filter(Boolean);
}

/** A POST with the path exactly as given (no URL normalisation). */
function rawPost(path, body) {
  return new Promise((resolve, reject) => {
    const url = new URL(server.url);
    const req = request(
      { host: url.hostname, port: url.port, path, method: 'POST',
        headers: { authorization: `Bearer ${SERVICE_ROLE_KEY}`, 'content-type': 'text/plain' } },
      (res) => {
        let text = '';
        res.on('data', (d) => { text += d; });
        res.on('end', () => resolve({ status: res.statusCode, body: text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

// Every test runs against each backend: the file system under the data dir, and S3 (moto).
for (const backend of ['file', 's3']) {
describe(`${backend} backend`, () => {
  before(async () => {
    s3 = backend === 's3' ? await startS3Server() : null;
    server = await startMadbase({ env: s3?.env ?? {} });
    admin = client(server, SERVICE_ROLE_KEY);
    anon = client(server, ANON_KEY);
    alice = userClient(ALICE);
    bob = userClient(BOB);
    for (const [id, options] of [
      ['docs', {}],
      ['pics', { public: true, fileSizeLimit: 1000, allowedMimeTypes: ['image/*'] }],
      ['other', {}],
    ]) {
      assert.equal((await admin.storage.createBucket(id, options)).error, null);
    }
    // The classic Supabase policies: each user owns the folder named after their id.
    server.sql(`
      create policy "own folder insert" on storage.objects for insert to authenticated
        with check (bucket_id = 'docs' and (storage.foldername(name))[1] = auth.uid()::text);
      create policy "own folder select" on storage.objects for select to authenticated
        using (bucket_id = 'docs' and (storage.foldername(name))[1] = auth.uid()::text);
      create policy "own folder update" on storage.objects for update to authenticated
        using (bucket_id = 'docs' and (storage.foldername(name))[1] = auth.uid()::text);
      create policy "own folder delete" on storage.objects for delete to authenticated
        using (bucket_id = 'docs' and owner_id = auth.uid()::text);
    `);
  });

  after(async () => {
    await server?.stop();
    await s3?.stop();
  });

  test('upload raw and multipart bodies, download them with their type, cache control and metadata', async () => {
    const docs = admin.storage.from('docs');
    const raw = await docs.upload('shared/hello.txt', Buffer.from('hello world'), {
      contentType: 'text/plain;charset=utf-8',
      cacheControl: '60',
      metadata: { purpose: 'greeting' },
    });
    assert.equal(raw.error, null);
    assert.equal(raw.data.path, 'shared/hello.txt');
    assert.equal(raw.data.fullPath, 'docs/shared/hello.txt');
    assert.match(raw.data.id, /^[0-9a-f-]{36}$/);

    const multipart = await docs.upload('shared/blob.json', new Blob(['{"a":1}'], { type: 'application/json' }));
    assert.equal(multipart.error, null);

    const downloaded = await docs.download('shared/hello.txt');
    assert.equal(downloaded.error, null);
    assert.equal(await downloaded.data.text(), 'hello world');
    assert.equal(downloaded.data.type, 'text/plain;charset=utf-8');
    assert.deepEqual((await docs.info('shared/blob.json')).data.metadata, {}, 'no user metadata is {}');
    const blob = await docs.download('shared/blob.json');
    assert.equal(await blob.data.text(), '{"a":1}');
    assert.equal(blob.data.type, 'application/json');

    const info = await docs.info('shared/hello.txt');
    assert.equal(info.error, null);
    assert.equal(info.data.name, 'shared/hello.txt');
    assert.equal(info.data.bucketId, 'docs');
    assert.equal(info.data.size, 11);
    assert.equal(info.data.contentType, 'text/plain;charset=utf-8');
    assert.equal(info.data.cacheControl, 'max-age=60');
    assert.equal(info.data.etag, '"5eb63bbbe01eeed093cb22bb8f5acdc3"', 'the MD5 of the bytes, quoted');
    assert.deepEqual(info.data.metadata, { purpose: 'greeting' });

    assert.deepEqual(await docs.exists('shared/hello.txt'), { data: true, error: null });
    const missing = await docs.exists('shared/nope.txt');
    assert.equal(missing.data, false);

    const response = await fetch(`${server.url}/storage/v1/object/docs/shared/hello.txt`, {
      headers: { authorization: `Bearer ${SERVICE_ROLE_KEY}` },
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('cache-control'), 'max-age=60');
    assert.equal(response.headers.get('accept-ranges'), 'bytes');
    assert.equal(response.headers.get('x-robots-tag'), 'none');
    assert.equal(response.headers.get('content-length'), '11');
    assert.match(response.headers.get('last-modified'), /^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$/);
  });

  test('an existing key needs upsert; update replaces; the old bytes leave the store', async () => {
    const docs = admin.storage.from('docs');
    assert.equal((await docs.upload('replace/a.txt', 'one')).error, null);
    const again = await docs.upload('replace/a.txt', 'two');
    assert.equal(again.error.message, 'The resource already exists');
    assert.equal(again.error.statusCode, '409');
    assert.equal(await (await docs.download('replace/a.txt')).data.text(), 'one');

    assert.equal((await docs.upload('replace/a.txt', 'three', { upsert: true })).error, null);
    assert.equal(await (await docs.download('replace/a.txt')).data.text(), 'three');
    const updated = await docs.update('replace/a.txt', 'four');
    assert.equal(updated.error, null);
    assert.equal(await (await docs.download('replace/a.txt')).data.text(), 'four');
    assert.deepEqual((await blobs()).sort(), versions(), 'every blob is named by exactly one row');
    assert.deepEqual(tmpFiles(), []);
  });

  test('ranges, validators and attachments as Supabase Storage answers them', async () => {
    await admin.storage.from('docs').upload('http/digits.txt', '0123456789');
    const url = `${server.url}/storage/v1/object/docs/http/digits.txt`;
    const auth = { authorization: `Bearer ${SERVICE_ROLE_KEY}` };
    const part = await fetch(url, { headers: { ...auth, range: 'bytes=2-5' } });
    assert.equal(part.status, 206);
    assert.equal(await part.text(), '2345');
    assert.equal(part.headers.get('content-range'), 'bytes 2-5/10');
    const tail = await fetch(url, { headers: { ...auth, range: 'bytes=-3' } });
    assert.equal(await tail.text(), '789');
    const bad = await fetch(url, { headers: { ...auth, range: 'bytes=20-' } });
    assert.equal(bad.status, 416);
    assert.equal((await bad.json()).code, 'InvalidRange');

    const full = await fetch(url, { headers: auth });
    const etag = full.headers.get('etag');
    const lastModified = full.headers.get('last-modified');
    await full.arrayBuffer();
    const byTag = await fetch(url, { headers: { ...auth, 'if-none-match': etag } });
    assert.equal(byTag.status, 304);
    const byDate = await fetch(url, { headers: { ...auth, 'if-modified-since': lastModified } });
    assert.equal(byDate.status, 304);
    const stale = await fetch(url, { headers: { ...auth, 'if-none-match': '"other"' } });
    assert.equal(stale.status, 200);
    assert.equal(stale.headers.get('cache-control'), 'max-age=3600, stale-while-revalidate=30');
    await stale.arrayBuffer();

    const named = await fetch(`${url}?download=my%20digits.txt`, { headers: auth });
    assert.equal(named.headers.get('content-disposition'), "attachment; filename=my%20digits.txt; filename*=UTF-8''my%20digits.txt");
    await named.arrayBuffer();
    const head = await fetch(url, { method: 'HEAD', headers: auth });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), '10');
  });

  test('row level security decides every object operation for anon and signed-in users', async () => {
    const denied = await anon.storage.from('docs').upload(`${ALICE}/x.txt`, 'x');
    assert.equal(denied.error.message, 'new row violates row-level security policy');
    assert.equal(denied.error.statusCode, '403');

    const mine = await alice.storage.from('docs').upload(`${ALICE}/notes.txt`, 'alice notes');
    assert.equal(mine.error, null);
    const notMine = await alice.storage.from('docs').upload(`${BOB}/forged.txt`, 'x');
    assert.equal(notMine.error.statusCode, '403');

    assert.equal(await (await alice.storage.from('docs').download(`${ALICE}/notes.txt`)).data.text(), 'alice notes');
    const bobRead = await bob.storage.from('docs').download(`${ALICE}/notes.txt`);
    assert.equal(bobRead.data, null);
    assert.equal(bobRead.error.statusCode, '404');
    assert.deepEqual((await bob.storage.from('docs').list(ALICE)).data, []);
    assert.deepEqual((await bob.storage.from('docs').remove([`${ALICE}/notes.txt`])).data, []);
    const bobSign = await bob.storage.from('docs').createSignedUrl(`${ALICE}/notes.txt`, 60);
    assert.equal(bobSign.error.statusCode, '404');
    const bobMove = await bob.storage.from('docs').move(`${ALICE}/notes.txt`, `${BOB}/stolen.txt`);
    assert.notEqual(bobMove.error, null);

    const listed = await alice.storage.from('docs').list(ALICE);
    assert.deepEqual(listed.data.map((o) => o.name), ['notes.txt']);
    // The delete policy is on owner_id: the upload recorded Alice as the owner.
    const removed = await alice.storage.from('docs').remove([`${ALICE}/notes.txt`]);
    assert.equal(removed.error, null);
    assert.deepEqual(removed.data.map((o) => o.name), [`${ALICE}/notes.txt`]);
    assert.equal(removed.data[0].owner_id, ALICE);
  });

  test('buckets limit size and types; keys are checked; public buckets serve without a token', async () => {
    const pics = admin.storage.from('pics');
    const big = await pics.upload('big.png', Buffer.alloc(1001), { contentType: 'image/png' });
    assert.equal(big.error.message, 'The object exceeded the maximum allowed size');
    assert.equal(big.error.statusCode, '413');
    const text = await pics.upload('a.txt', 'x', { contentType: 'text/plain' });
    assert.equal(text.error.message, 'mime type text/plain is not supported');
    assert.equal(text.error.statusCode, '415');
    const png = await pics.upload('dir/a.png', Buffer.from([137, 80, 78, 71]), { contentType: 'image/png' });
    assert.equal(png.error, null);

    const { data } = pics.getPublicUrl('dir/a.png');
    const open = await fetch(data.publicUrl);
    assert.equal(open.status, 200);
    assert.deepEqual([...new Uint8Array(await open.arrayBuffer())], [137, 80, 78, 71]);
    const privateUrl = admin.storage.from('docs').getPublicUrl('http/digits.txt').data.publicUrl;
    const closed = await fetch(privateUrl);
    assert.equal(closed.status, 400);
    assert.equal((await closed.json()).code, 'NoSuchBucket');

    for (const key of ['ünï.txt', 'x'.repeat(1025)]) {
      const bad = await admin.storage.from('docs').upload(key, 'x');
      assert.equal(bad.error?.statusCode, '400', key);
      assert.match(bad.error.message, /^Invalid key: /, key);
    }
    // Clients resolve dot segments in URLs; sent as they are, they are refused, never resolved.
    const raw = ['docs/../escape.txt', 'docs/a/../../b.txt', 'docs/./a.txt', 'docs/a%00b.txt', 'docs/a%5Cb.txt', 'docs/tab%09.txt', 'docs/%2Fabs.txt', 'docs/bad%ff.txt'];
    for (const path of raw) {
      const answer = await rawPost(`/storage/v1/object/${path}`, 'x');
      assert.equal(answer.status, 400, path);
      assert.equal(JSON.parse(answer.body).code, 'InvalidKey', path);
    }
    const none = await admin.storage.from('nope').upload('a.txt', 'x');
    assert.equal(none.error.message, 'Bucket not found');
    assert.deepEqual(tmpFiles(), []);
  });

  test('list one folder level and list-v2 with folders and cursors', async () => {
    const docs = admin.storage.from('docs');
    for (const key of ['tree/a.txt', 'tree/b.txt', 'tree/c.txt', 'tree/sub/d.txt', 'tree/sub2/e.txt']) {
      assert.equal((await docs.upload(key, key)).error, null);
    }
    const level = await docs.list('tree', { sortBy: { column: 'name', order: 'desc' } });
    assert.equal(level.error, null);
    assert.deepEqual(level.data.map((o) => o.name), ['sub2', 'sub', 'c.txt', 'b.txt', 'a.txt']);
    assert.equal(level.data[0].id, null, 'folders have no id');
    assert.equal(level.data[4].metadata.size, 10);
    const searched = await docs.list('tree', { search: 'b' });
    assert.deepEqual(searched.data.map((o) => o.name), ['b.txt']);
    const paged = await docs.list('tree', { limit: 2, offset: 1 });
    assert.deepEqual(paged.data.map((o) => o.name), ['b.txt', 'c.txt']);

    const first = await docs.listV2({ prefix: 'tree/', with_delimiter: true, limit: 3 });
    assert.equal(first.error, null);
    assert.equal(first.data.hasNext, true);
    assert.deepEqual(first.data.objects.map((o) => o.name), ['tree/a.txt', 'tree/b.txt', 'tree/c.txt']);
    const second = await docs.listV2({ prefix: 'tree/', with_delimiter: true, limit: 3, cursor: first.data.nextCursor });
    assert.equal(second.data.hasNext, false);
    assert.deepEqual(second.data.folders.map((f) => [f.key, f.name]), [['sub', 'tree/sub/'], ['sub2', 'tree/sub2/']]);
    const flat = await docs.listV2({ prefix: 'tree/', limit: 4, sortBy: { column: 'name', order: 'desc' } });
    assert.deepEqual(flat.data.objects.map((o) => o.name), ['tree/sub2/e.txt', 'tree/sub/d.txt', 'tree/c.txt', 'tree/b.txt']);
    const rest = await docs.listV2({ prefix: 'tree/', limit: 4, cursor: flat.data.nextCursor });
    assert.deepEqual(rest.data.objects.map((o) => o.name), ['tree/a.txt']);
  });

  test('move and copy, within and across buckets, and remove many', async () => {
    const docs = admin.storage.from('docs');
    await docs.upload('mv/src.txt', 'moving', { metadata: { k: 'v' } });
    assert.deepEqual(await docs.move('mv/src.txt', 'mv/dst.txt'), { data: { message: 'Successfully moved' }, error: null });
    assert.equal((await docs.download('mv/src.txt')).error.statusCode, '404');
    assert.equal(await (await docs.download('mv/dst.txt')).data.text(), 'moving');
    const across = await docs.move('mv/dst.txt', 'elsewhere.txt', { destinationBucket: 'other' });
    assert.equal(across.error, null);
    const copied = await admin.storage.from('other').copy('elsewhere.txt', 'copy.txt', { destinationBucket: 'docs' });
    assert.equal(copied.error, null);
    assert.equal(copied.data.path, 'docs/copy.txt');
    assert.equal(await (await docs.download('copy.txt')).data.text(), 'moving');
    assert.deepEqual((await docs.info('copy.txt')).data.metadata, { k: 'v' });
    const conflict = await docs.copy('copy.txt', 'shared/hello.txt');
    assert.equal(conflict.error.statusCode, '409');

    const removed = await admin.storage.from('other').remove(['elsewhere.txt', 'never-was.txt']);
    assert.deepEqual(removed.data.map((o) => o.name), ['elsewhere.txt']);
    assert.equal(await (await docs.download('copy.txt')).data.text(), 'moving', 'a copy outlives its source');
    assert.deepEqual((await blobs()).sort(), versions());
  });

  test('signed download URLs: one, many, tampered, expired', async () => {
    const docs = admin.storage.from('docs');
    await docs.upload('signed/a.txt', 'signed bytes');
    const one = await docs.createSignedUrl('signed/a.txt', 60);
    assert.equal(one.error, null);
    assert.match(one.data.signedUrl, /\/storage\/v1\/object\/sign\/docs\/signed\/a\.txt\?token=/);
    assert.equal(await (await fetch(one.data.signedUrl)).text(), 'signed bytes');
    const attachment = await docs.createSignedUrl('signed/a.txt', 60, { download: 'x.txt' });
    const got = await fetch(attachment.data.signedUrl);
    assert.match(got.headers.get('content-disposition'), /^attachment; filename=x\.txt/);
    await got.arrayBuffer();

    const token = new URL(one.data.signedUrl).searchParams.get('token');
    const otherPath = await fetch(`${server.url}/storage/v1/object/sign/docs/shared/hello.txt?token=${token}`);
    assert.equal((await otherPath.json()).code, 'InvalidSignature');
    const forged = signJwt({ url: 'docs/signed/a.txt', scope: 'download', exp: now() + 60 }, 'x'.repeat(40));
    const bad = await fetch(`${server.url}/storage/v1/object/sign/docs/signed/a.txt?token=${forged}`);
    assert.equal((await bad.json()).code, 'InvalidJWT');
    const expired = signJwt({ url: 'docs/signed/a.txt', scope: 'download', iat: now() - 120, exp: now() - 60 });
    const late = await fetch(`${server.url}/storage/v1/object/sign/docs/signed/a.txt?token=${expired}`);
    assert.equal((await late.json()).message, '"exp" claim timestamp check failed');

    const many = await docs.createSignedUrls(['signed/a.txt', 'signed/missing.txt'], 60);
    assert.equal(many.error, null);
    assert.equal(many.data[0].error, null);
    assert.equal(await (await fetch(many.data[0].signedUrl)).text(), 'signed bytes');
    assert.deepEqual(
      { error: many.data[1].error, path: many.data[1].path, signedUrl: many.data[1].signedUrl },
      { error: 'Either the object does not exist or you do not have access to it', path: 'signed/missing.txt', signedUrl: null },
    );
  });

  test('signed upload URLs: need INSERT to make, upload once without upsert, owner from the token', async () => {
    const made = await alice.storage.from('docs').createSignedUploadUrl(`${ALICE}/via-token.txt`);
    assert.equal(made.error, null);
    assert.equal(made.data.path, `${ALICE}/via-token.txt`);
    const up = await anon.storage.from('docs').uploadToSignedUrl(`${ALICE}/via-token.txt`, made.data.token, 'by token');
    assert.equal(up.error, null);
    assert.equal(up.data.fullPath, `docs/${ALICE}/via-token.txt`);
    assert.equal(await (await alice.storage.from('docs').download(`${ALICE}/via-token.txt`)).data.text(), 'by token');
    assert.equal(server.sql(`select owner_id from storage.objects where name = '${ALICE}/via-token.txt'`).trim(), ALICE);
    const twice = await anon.storage.from('docs').uploadToSignedUrl(`${ALICE}/via-token.txt`, made.data.token, 'again');
    assert.equal(twice.error.statusCode, '409');

    const refused = await bob.storage.from('docs').createSignedUploadUrl(`${ALICE}/nope.txt`);
    assert.equal(refused.error.statusCode, '403');
    const upsert = await admin.storage.from('docs').createSignedUploadUrl('tokens/u.txt', { upsert: true });
    for (const body of ['first', 'second']) {
      assert.equal((await anon.storage.from('docs').uploadToSignedUrl('tokens/u.txt', upsert.data.token, body)).error, null);
    }
    assert.equal(await (await admin.storage.from('docs').download('tokens/u.txt')).data.text(), 'second');
    const wrongKey = await anon.storage.from('docs').uploadToSignedUrl('tokens/other.txt', upsert.data.token, 'x');
    assert.equal(wrongKey.error.message, 'Invalid signature');
  });

  test('a cut upload leaves no row, no blob and no temporary file; the old version keeps serving', async () => {
    const docs = admin.storage.from('docs');
    await docs.upload('cut/a.txt', 'original');
    const before = (await blobs()).length;
    await new Promise((resolve) => {
      const url = new URL(`${server.url}/storage/v1/object/docs/cut/a.txt`);
      const req = request(
        { host: url.hostname, port: url.port, path: url.pathname, method: 'PUT',
          headers: { authorization: `Bearer ${SERVICE_ROLE_KEY}`, 'content-length': 1_000_000, 'content-type': 'text/plain' } },
        () => resolve(),
      );
      req.on('error', () => resolve());
      req.write(Buffer.alloc(300_000, 'x'), () => setTimeout(() => { req.destroy(); resolve(); }, 200));
    });
    for (let i = 0; i < 50 && tmpFiles().length > 0; i++) await sleep(100);
    assert.deepEqual(tmpFiles(), []);
    assert.equal((await blobs()).length, before);
    assert.equal(await (await docs.download('cut/a.txt')).data.text(), 'original');
  });

  test('/metrics counts object bytes in and out, uploads and downloads', async () => {
    await sleep(1100); // the scrape is coalesced for up to a second
    const text = await (await fetch(`${server.url}/metrics`, { headers: { apikey: SERVICE_ROLE_KEY } })).text();
    const total = (name) =>
      text.split('\n').filter((l) => l.startsWith(`${name}{`)).reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
    assert.ok(total('madbase_storage_bytes_in_total') >= 1_000, text);
    assert.ok(total('madbase_storage_bytes_out_total') >= 100);
    assert.ok(total('madbase_storage_uploads_total') >= 15);
    assert.ok(total('madbase_storage_downloads_total') >= 10);
    assert.equal(total('madbase_storage_uploads_in_progress'), 0);
  });
});
}
