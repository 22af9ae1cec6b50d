-- Storage's object store names each blob by the version of the row that holds it; the sweeper
-- that removes blobs no row names (an upload cut between its durable write and its commit) asks
-- for versions by value, so they are indexed. Not in Supabase's schema; harmless to it.
create index if not exists objects_version_idx on storage.objects (version) where version is not null;
