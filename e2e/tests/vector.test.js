// pgvector through the unmodified @supabase/supabase-js client: MadBase's managed cluster runs a
// PostgreSQL build that has the `vector` extension (MADBASE_TEST_PGVECTOR_BIN, which
// scripts/test.sh sets; otherwise scripts/pgvector-postgres.sh provisions it, and a failure fails
// the test). `.insert()` with vectors as number[] and as strings, `.select()` reading them back,
// `.rpc('match_documents', …)` ordered by cosine distance, and an HNSW index.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import { startMadbase, client, SERVICE_ROLE_KEY, ANON_KEY } from './support.js';

function pgvectorBin() {
  if (process.env.MADBASE_TEST_PGVECTOR_BIN) return process.env.MADBASE_TEST_PGVECTOR_BIN;
  const out = execFileSync('bash', [resolve('..', 'scripts', 'pgvector-postgres.sh')], { encoding: 'utf8' });
  return out.trim().split('\n').pop();
}

let server;

before(async () => {
  server = await startMadbase({ pgBin: pgvectorBin() });
  server.sql(`
    create extension vector with schema extensions;
    set search_path = public, extensions;
    create table public.documents (id bigserial primary key, content text not null, embedding vector(3));
    grant select on public.documents to anon;
    create function public.match_documents(query_embedding vector(3), match_threshold float, match_count int)
      returns table (id bigint, content text, similarity float) language sql stable as $$
        select d.id, d.content, 1 - (d.embedding <=> query_embedding) as similarity
        from public.documents d
        where 1 - (d.embedding <=> query_embedding) > match_threshold
        order by d.embedding <=> query_embedding, d.id
        limit match_count $$;
  `);
  await server.waitForRelation('documents');
});

after(async () => {
  await server?.stop();
});

test('insert() and select() carry vectors as number[] and strings', async () => {
  const supabase = client(server, SERVICE_ROLE_KEY);
  const one = await supabase.from('documents').insert({ content: 'east', embedding: [1, 0, 0] }).select();
  assert.equal(one.error, null);
  assert.equal(one.status, 201);
  assert.deepEqual(one.data, [{ id: 1, content: 'east', embedding: '[1,0,0]' }]);
  const bulk = await supabase
    .from('documents')
    .insert([
      { content: 'north-east', embedding: '[0.7,0.7,0]' },
      { content: 'north', embedding: [0, 1, 0] },
      { content: 'far east', embedding: [10, 0, 0] },
    ])
    .select('id');
  assert.equal(bulk.error, null);
  assert.deepEqual(bulk.data, [{ id: 2 }, { id: 3 }, { id: 4 }]);

  const anon = client(server, ANON_KEY);
  const read = await anon.from('documents').select('content,embedding').eq('embedding', '[0,1,0]');
  assert.equal(read.error, null);
  assert.deepEqual(read.data, [{ content: 'north', embedding: '[0,1,0]' }]);

  const bad = await supabase.from('documents').insert({ content: 'flat', embedding: [1, 2] });
  assert.equal(bad.status, 400);
  assert.equal(bad.error.code, '22000');
  assert.equal(bad.error.message, 'expected 3 dimensions, not 2');
});

test("rpc('match_documents') orders by cosine distance, with and without an HNSW index", async () => {
  const supabase = client(server, ANON_KEY);
  const args = { query_embedding: [1, 0.1, 0], match_threshold: 0.5, match_count: 10 };
  const expected = ['east', 'far east', 'north-east'];
  const { data, error, status } = await supabase.rpc('match_documents', args);
  assert.equal(error, null);
  assert.equal(status, 200);
  assert.deepEqual(
    data.map((d) => d.content),
    expected,
  );
  assert.ok(Math.abs(data[2].similarity - 0.7739) < 1e-3, JSON.stringify(data));

  const limited = await supabase.rpc('match_documents', { ...args, query_embedding: '[0,1,0]' }).select('content').limit(1);
  assert.equal(limited.error, null);
  assert.deepEqual(limited.data, [{ content: 'north' }]);

  server.sql('create index on public.documents using hnsw (embedding extensions.vector_cosine_ops)');
  const indexed = await supabase.rpc('match_documents', args);
  assert.equal(indexed.error, null);
  assert.deepEqual(
    indexed.data.map((d) => d.content),
    expected,
  );
});
