// Resource embedding, spreads, embedded filters and aggregates through the unmodified
// @supabase/supabase-js query builder, against MadBase with its managed PostgreSQL.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startMadbase, client, ANON_KEY } from './support.js';

let server;

before(async () => {
  server = await startMadbase();
  server.sql(`
    create table public.authors (id bigint primary key, name text not null);
    create table public.books (
      id bigint primary key, title text not null, pages int not null,
      author_id bigint not null references public.authors);
    create table public.tags (id bigint primary key, label text not null);
    create table public.book_tags (
      book_id bigint references public.books, tag_id bigint references public.tags,
      primary key (book_id, tag_id));
    insert into public.authors values (1, 'Ursula'), (2, 'Italo'), (3, 'Nobody');
    insert into public.books values (1, 'Earthsea', 200, 1), (2, 'Dispossessed', 380, 1), (3, 'Cities', 160, 2);
    insert into public.tags values (1, 'fantasy'), (2, 'classic');
    insert into public.book_tags values (1, 1), (1, 2), (3, 2);
    alter table public.books enable row level security;
    create policy "anon reads short books" on public.books for select to anon using (pages < 300);
    grant select on public.authors, public.tags, public.book_tags to anon;
  `);
  await server.waitForRelation('book_tags');
});

after(async () => {
  await server?.stop();
});

test('to-one, to-many and many-to-many embeds, with RLS applied inside the embed', async () => {
  const supabase = client(server, ANON_KEY);
  const { data, error } = await supabase
    .from('authors')
    .select('name, books(title, tags(label))')
    .order('id')
    .order('id', { referencedTable: 'books' });
  assert.equal(error, null);
  assert.deepEqual(data, [
    { name: 'Ursula', books: [{ title: 'Earthsea', tags: [{ label: 'fantasy' }, { label: 'classic' }] }] },
    { name: 'Italo', books: [{ title: 'Cities', tags: [{ label: 'classic' }] }] },
    { name: 'Nobody', books: [] },
  ]);
  const one = await supabase.from('books').select('title, author:authors(name)').eq('id', 3).single();
  assert.equal(one.error, null);
  assert.deepEqual(one.data, { title: 'Cities', author: { name: 'Italo' } });
});

test('!inner with an embedded filter filters the parents; spreads lift columns', async () => {
  const supabase = client(server, ANON_KEY);
  const inner = await supabase
    .from('authors')
    .select('name, books!inner(title)')
    .eq('books.title', 'Cities');
  assert.equal(inner.error, null);
  assert.deepEqual(inner.data, [{ name: 'Italo', books: [{ title: 'Cities' }] }]);
  const spread = await supabase.from('books').select('title, ...authors(author_name:name)').order('id');
  assert.equal(spread.error, null);
  assert.deepEqual(spread.data, [
    { title: 'Earthsea', author_name: 'Ursula' },
    { title: 'Cities', author_name: 'Italo' },
  ]);
  const limited = await supabase
    .from('authors')
    .select('name, books(title)')
    .eq('id', 1)
    .limit(1, { referencedTable: 'books' });
  assert.equal(limited.error, null);
  assert.equal(limited.data[0].books.length, 1);
});

test('missing relationships and filters on unselected embeds are PostgREST errors', async () => {
  const supabase = client(server, ANON_KEY);
  const missing = await supabase.from('authors').select('name, book(title)');
  assert.equal(missing.status, 400);
  assert.equal(missing.error.code, 'PGRST200');
  assert.equal(missing.error.hint, "Perhaps you meant 'books' instead of 'book'.");
  const notEmbedded = await supabase.from('authors').select('name').eq('books.title', 'x');
  assert.equal(notEmbedded.error.code, 'PGRST108');
});

test('aggregates once the database enables them, as on Supabase', async () => {
  const supabase = client(server, ANON_KEY);
  const off = await supabase.from('books').select('pages.sum()');
  assert.equal(off.error.code, 'PGRST123');
  server.sql(`alter role authenticator set pgrst.db_aggregates_enabled = 'true'; notify pgrst, 'reload config';`);
  let on;
  for (let i = 0; i < 100; i++) {
    on = await supabase.from('books').select('pages.sum(), count()');
    if (!on.error) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(on.error, null);
  assert.deepEqual(on.data, [{ sum: 360, count: 2 }]);
  const grouped = await supabase.from('authors').select('name, books(count())').order('id');
  assert.deepEqual(grouped.data, [
    { name: 'Ursula', books: [{ count: 1 }] },
    { name: 'Italo', books: [{ count: 1 }] },
    { name: 'Nobody', books: [{ count: 0 }] },
  ]);
});
