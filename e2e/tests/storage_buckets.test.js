// Storage's bucket API through the unmodified supabase-js client (`supabase.storage`): create,
// get, list (search, sort, paging), update, empty and delete, with Supabase Storage's answers and
// errors, and row level security on `storage.buckets` deciding for anon and signed-in users as on
// Supabase (the service role bypasses it); the schema helpers, the delete guard and the
// migration applied twice.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMadbase, client, ANON_KEY, SERVICE_ROLE_KEY, signJwt } from './support.js';

let server;
let admin;
const ALICE = 'aaaaaaaa-0000-4000-8000-0000000000a1';
const now = () => Math.floor(Date.now() / 1000);
const userClient = (sub) => client(server, signJwt({ role: 'authenticated', sub, exp: now() + 3600 }));

before(async () => {
  server = await startMadbase();
  admin = client(server, SERVICE_ROLE_KEY);
  server.sql(`
    create policy "authenticated create buckets" on storage.buckets for insert to authenticated with check (true);
    create policy "owners see their buckets" on storage.buckets for select to authenticated using (owner = auth.uid());
    create policy "owners update their buckets" on storage.buckets for update to authenticated using (owner = auth.uid());
    create policy "owners delete their buckets" on storage.buckets for delete to authenticated using (owner = auth.uid());
  `);
});

after(async () => {
  await server?.stop();
});

test('create, get, update and delete a bucket as the service role', async () => {
  const created = await admin.storage.createBucket('avatars', {
    public: true,
    fileSizeLimit: '20mb',
    allowedMimeTypes: ['image/png', 'image/*', ''],
  });
  assert.equal(created.error, null);
  assert.deepEqual(created.data, { name: 'avatars' });

  const got = await admin.storage.getBucket('avatars');
  assert.equal(got.error, null);
  assert.deepEqual(Object.keys(got.data), [
    'id', 'name', 'owner', 'public', 'file_size_limit', 'allowed_mime_types', 'created_at', 'updated_at',
  ]);
  assert.equal(got.data.id, 'avatars');
  assert.equal(got.data.owner, '', 'the service key has no sub: no owner');
  assert.equal(got.data.public, true);
  assert.equal(got.data.file_size_limit, 20000000);
  assert.deepEqual(got.data.allowed_mime_types, ['image/png', 'image/*']);
  assert.match(got.data.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

  const updated = await admin.storage.updateBucket('avatars', { public: false, fileSizeLimit: 1000, allowedMimeTypes: null });
  assert.equal(updated.error, null);
  assert.deepEqual(updated.data, { message: 'Successfully updated' });
  const after = (await admin.storage.getBucket('avatars')).data;
  assert.equal(after.public, false);
  assert.equal(after.file_size_limit, 1000);
  assert.equal(after.allowed_mime_types, null);

  const deleted = await admin.storage.deleteBucket('avatars');
  assert.deepEqual(deleted, { data: { message: 'Successfully deleted' }, error: null });
  const gone = await admin.storage.getBucket('avatars');
  assert.equal(gone.data, null);
  assert.equal(gone.error.message, 'Bucket not found');
  assert.equal(gone.error.statusCode, '404');
});

test('list buckets with search, sort and paging; each has its type', async () => {
  for (const id of ['list-a', 'list-b', 'list-c', 'other']) {
    assert.equal((await admin.storage.createBucket(id)).error, null);
  }
  const { data, error } = await admin.storage.listBuckets({ search: 'list-', sortColumn: 'name', sortOrder: 'desc' });
  assert.equal(error, null);
  assert.deepEqual(data.map((b) => b.name), ['list-c', 'list-b', 'list-a']);
  assert.deepEqual(Object.keys(data[0]), [
    'id', 'name', 'owner', 'public', 'type', 'file_size_limit', 'allowed_mime_types', 'created_at', 'updated_at',
  ]);
  assert.equal(data[0].type, 'STANDARD');
  const page = await admin.storage.listBuckets({ search: 'list-', sortColumn: 'name', limit: 1, offset: 1 });
  assert.deepEqual(page.data.map((b) => b.name), ['list-b']);
  // A search is literal: `_` and `%` match themselves only.
  assert.deepEqual((await admin.storage.listBuckets({ search: 'list_' })).data, []);
});

test("Supabase Storage's errors: bad names, sizes and types, duplicates, unknown buckets", async () => {
  const bad = await admin.storage.createBucket('no/slashes');
  assert.equal(bad.error.message, 'Bucket name invalid');
  assert.equal(bad.error.statusCode, '400');
  const tooBig = await admin.storage.createBucket('huge', { fileSizeLimit: '1GB' });
  assert.equal(tooBig.error.message, 'The object exceeded the maximum allowed size');
  assert.equal(tooBig.error.statusCode, '413');
  const mime = await admin.storage.createBucket('mimes', { allowedMimeTypes: ['not a type'] });
  assert.equal(mime.error.message, 'mime type not a type is not supported');
  assert.equal(mime.error.statusCode, '415');
  assert.equal((await admin.storage.createBucket('twice')).error, null);
  const twice = await admin.storage.createBucket('twice');
  assert.equal(twice.error.message, 'The resource already exists');
  assert.equal(twice.error.statusCode, '409');
  const missing = await admin.storage.updateBucket('missing', { public: true });
  assert.equal(missing.error.message, 'Bucket not found');

  // The wire: HTTP 400 with the logical status as a string, keys in Supabase's order.
  const res = await fetch(`${server.url}/storage/v1/bucket/missing`, {
    headers: { apikey: SERVICE_ROLE_KEY, authorization: `Bearer ${SERVICE_ROLE_KEY}` },
  });
  assert.equal(res.status, 400);
  assert.equal(
    await res.text(),
    '{"statusCode":"404","error":"Bucket not found","message":"Bucket not found","code":"NoSuchBucket"}',
  );
  const noToken = await fetch(`${server.url}/storage/v1/bucket`);
  assert.equal(noToken.status, 400);
  assert.deepEqual(await noToken.json(), {
    statusCode: '403', error: 'Unauthorized', message: 'Invalid Compact JWS', code: 'AccessDenied',
  });
});

test('a bucket with objects is not deleted; emptying it is for the service role', async () => {
  assert.equal((await admin.storage.createBucket('full')).error, null);
  server.sql(`insert into storage.objects (bucket_id, name) values ('full', 'a.txt'), ('full', 'dir/b.txt')`);
  const refused = await admin.storage.deleteBucket('full');
  assert.equal(refused.error.message, 'The bucket you tried to delete is not empty');
  assert.equal(refused.error.statusCode, '409');

  const asUser = await userClient(ALICE).storage.emptyBucket('full');
  assert.equal(asUser.error.message, 'Access denied: Invalid role');
  assert.equal(asUser.error.status, 403);

  const emptied = await admin.storage.emptyBucket('full');
  assert.deepEqual(emptied, {
    data: { message: 'Empty bucket has been queued. Completion may take up to an hour.' },
    error: null,
  });
  assert.equal(server.sql(`select count(*) from storage.objects where bucket_id = 'full'`).trim(), '0');
  assert.equal((await admin.storage.deleteBucket('full')).error, null);
  assert.equal((await admin.storage.emptyBucket('full')).error.message, 'Bucket not found');
});

test('row level security on storage.buckets decides for users and anon', async () => {
  const alice = userClient(ALICE);
  const bob = userClient('bbbbbbbb-0000-4000-8000-0000000000b2');
  assert.equal((await alice.storage.createBucket('alice-bucket')).error, null);
  assert.equal((await alice.storage.getBucket('alice-bucket')).data.owner, ALICE);
  assert.deepEqual((await alice.storage.listBuckets()).data.map((b) => b.id), ['alice-bucket']);

  // Bob sees nothing of it and cannot change it; anon may not create buckets at all.
  assert.equal((await bob.storage.getBucket('alice-bucket')).error.message, 'Bucket not found');
  assert.deepEqual((await bob.storage.listBuckets()).data, []);
  assert.equal((await bob.storage.updateBucket('alice-bucket', { public: true })).error.message, 'Bucket not found');
  assert.equal((await bob.storage.deleteBucket('alice-bucket')).error.message, 'Bucket not found');
  const anon = await client(server, ANON_KEY).storage.createBucket('anon-bucket');
  assert.equal(anon.error.message, 'new row violates row-level security policy');
  assert.equal(anon.error.statusCode, '403');

  assert.equal((await alice.storage.deleteBucket('alice-bucket')).error, null);
});

test("Supabase's storage helpers and guards are in the schema; the migration runs again", async () => {
  assert.equal(
    server.sql(`select storage.foldername('a/b/c.png')::text, storage.filename('a/b/c.png'), storage.extension('a/b/c.tar.gz')`).trim(),
    '{a,b}|c.png|gz',
  );
  assert.throws(() => server.sql(`delete from storage.buckets where id = 'nothing'`), /Direct deletion from storage tables is not allowed/);
  const migration = readFileSync(new URL('../../migrations/0010_storage.sql', import.meta.url), 'utf8');
  server.sql(migration);
  assert.equal(server.sql(`select count(*) from pg_trigger where tgname in ('protect_buckets_delete', 'protect_objects_delete')`).trim(), '2');
});

test('buckets declared in the configuration exist at start, with their settings and their objects_path uploaded', async () => {
  const seed = mkdtempSync(join(tmpdir(), 'madbase-seed-'));
  mkdirSync(join(seed, 'docs/nested deeper'), { recursive: true });
  writeFileSync(join(seed, 'docs/readme.md'), '# Hello\n');
  writeFileSync(join(seed, 'docs/nested deeper/data.json'), '{"a": 1}\n');
  writeFileSync(join(seed, 'docs/page.html'), '<!DOCTYPE html><html><body>hi</body></html>');
  symlinkSync(join(seed, 'docs/readme.md'), join(seed, 'docs/link.md'));
  mkdirSync(join(seed, 'avatars'));
  const png = Buffer.from('89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cfc0f01f0005000201a3a9a7d00000000049454e44ae426082', 'hex');
  writeFileSync(join(seed, 'avatars/me.png'), png);
  writeFileSync(join(seed, 'avatars/notes.txt'), 'not an image');
  const declared = {
    'declared-avatars': { public: true, file_size_limit: '1MiB', allowed_mime_types: ['image/*'], objects_path: join(seed, 'avatars') },
    'declared-docs': { objects_path: join(seed, 'docs') },
    'declared-one': { objects_path: join(seed, 'docs/readme.md') },
  };
  const dataDir = mkdtempSync(join(tmpdir(), 'madbase-e2e-'));
  const other = await startMadbase({ dataDir, env: { MADBASE_STORAGE_BUCKETS: JSON.stringify(declared) } });
  try {
    const service = client(other, SERVICE_ROLE_KEY);
    const avatars = await service.storage.getBucket('declared-avatars');
    assert.equal(avatars.error, null);
    assert.equal(avatars.data.public, true);
    assert.equal(avatars.data.file_size_limit, 1024 * 1024);
    assert.deepEqual(avatars.data.allowed_mime_types, ['image/*']);
    const docs = (await service.storage.getBucket('declared-docs')).data;
    assert.deepEqual([docs.public, docs.file_size_limit, docs.allowed_mime_types], [false, null, null]);
    const refused = await service.storage.from('declared-avatars').upload('a.txt', 'x', { contentType: 'text/plain' });
    assert.equal(refused.error.statusCode, '415', 'the declared limits are enforced');

    // objects_path: every regular file, under its relative path, typed as the Supabase CLI types it.
    const listed = await service.storage.from('declared-docs').list('', { sortBy: { column: 'name', order: 'asc' } });
    assert.deepEqual(listed.data.map((o) => o.name), ['nested deeper', 'page.html', 'readme.md'], 'links are skipped');
    const info = (path) => service.storage.from('declared-docs').info(path).then(({ data }) => data);
    assert.equal((await info('readme.md')).contentType, 'text/markdown; charset=utf-8');
    assert.equal((await info('page.html')).contentType, 'text/html; charset=utf-8');
    assert.equal((await info('nested deeper/data.json')).contentType, 'application/json');
    assert.equal((await info('readme.md')).cacheControl, 'max-age=3600');
    const json = await service.storage.from('declared-docs').download('nested deeper/data.json');
    assert.equal(await json.data.text(), '{"a": 1}\n');
    const open = await fetch(service.storage.from('declared-avatars').getPublicUrl('me.png').data.publicUrl);
    assert.equal(open.headers.get('content-type'), 'image/png', await open.clone().text() + other.output());
    assert.deepEqual(Buffer.from(await open.arrayBuffer()), png);
    const avatarNames = (await service.storage.from('declared-avatars').list()).data.map((o) => o.name);
    assert.deepEqual(avatarNames, ['me.png'], "a file the bucket refuses is not uploaded");
    assert.match(other.output(), /cannot upload a declared bucket's object.*notes\.txt.*415/);
    assert.deepEqual((await service.storage.from('declared-one').list()).data.map((o) => o.name), ['readme.md']);
  } finally {
    await other.stop();
  }

  // A second start on the same data overwrites with the folder's current files.
  writeFileSync(join(seed, 'docs/readme.md'), '# Changed\n');
  const again = await startMadbase({ dataDir, env: { MADBASE_STORAGE_BUCKETS: JSON.stringify(declared) } });
  try {
    const readme = await client(again, SERVICE_ROLE_KEY).storage.from('declared-docs').download('readme.md');
    assert.equal(await readme.data.text(), '# Changed\n');
  } finally {
    await again.stop();
    rmSync(seed, { recursive: true, force: true });
    rmSync(dataDir, { recursive: true, force: true });
  }
});
