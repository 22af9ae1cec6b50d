-- MadBase Storage: the tables and functions of Supabase Storage's schema (reference/storage.md §3,
-- §4, §7) as Supabase Storage's own tenant migrations leave it, so that existing storage policies,
-- seeds and SQL apply unchanged and the API can list objects with the same functions:
-- `storage.buckets` (with the `storage.buckettype` enum), `storage.objects`, their indexes, row
-- level security, grants and owners; the policy helpers `foldername`/`filename`/`extension` and
-- `operation`/`allow_only_operation`/`allow_any_operation`; the listing functions `search` (list
-- v1), `search_v2` (list v2 with a delimiter) with `list_objects_with_delimiter`,
-- `search_by_timestamp` and `get_common_prefix`; `get_size_by_bucket`; the `updated_at` trigger,
-- the bucket name length check, and the triggers that refuse deletes from outside the Storage API.
--
-- Idempotent: a database that already has Supabase's storage objects keeps its tables (columns it
-- lacks are added) and gets equivalent functions; overloads that older Supabase versions left and
-- that would make calls ambiguous are dropped, as Supabase's later migrations drop them.
--
-- Left out, because nothing MadBase serves reads or writes them yet: `storage.migrations`
-- (Supabase Storage's own bookkeeping; MadBase keeps `_madbase.migrations`), S3 multipart uploads
-- (`s3_multipart_uploads`, `s3_multipart_uploads_parts`, `list_multipart_uploads_with_delimiter`),
-- analytics and vector buckets (`buckets_analytics`, `iceberg_namespaces`, `iceberg_tables`,
-- `buckets_vectors`, `vector_indexes`; the enum keeps their values), the object versioning
-- columns that upstream adds disabled (`buckets.versioning_status`, `objects.archived_at`,
-- `is_delete_marker`, `is_versioned`), and `can_insert_object`, which Supabase's server no longer
-- calls. Absent as in Supabase Storage today: the `prefixes` table, `objects.level` and their
-- triggers, which it added and dropped again in favour of the listing functions below (a database
-- that still has them keeps them).

do $$
begin
  if not exists (select 1 from pg_type t join pg_namespace n on n.oid = t.typnamespace
                 where n.nspname = 'storage' and t.typname = 'buckettype') then
    create type storage.buckettype as enum ('STANDARD', 'ANALYTICS', 'VECTOR');
  end if;
  -- Supabase added VECTOR after the others; a database from before then lacks it.
  if not exists (select 1 from pg_enum e join pg_type t on t.oid = e.enumtypid
                 join pg_namespace n on n.oid = t.typnamespace
                 where n.nspname = 'storage' and t.typname = 'buckettype' and e.enumlabel = 'VECTOR') then
    alter type storage.buckettype add value 'VECTOR';
  end if;
end $$;
alter type storage.buckettype owner to supabase_storage_admin;

create table if not exists storage.buckets (
  id text not null primary key,
  name text not null,
  owner uuid,
  created_at timestamptz default now(),
  updated_at timestamptz default now()
);
alter table storage.buckets add column if not exists public boolean default false;
alter table storage.buckets add column if not exists avif_autodetection boolean default false;
alter table storage.buckets add column if not exists file_size_limit bigint;
alter table storage.buckets add column if not exists allowed_mime_types text[];
alter table storage.buckets add column if not exists owner_id text;
alter table storage.buckets add column if not exists type storage.buckettype not null default 'STANDARD';
create unique index if not exists bname on storage.buckets using btree (name);
comment on column storage.buckets.owner is 'Field is deprecated, use owner_id instead';

create table if not exists storage.objects (
  id uuid not null default gen_random_uuid() primary key,
  bucket_id text references storage.buckets (id),
  name text,
  owner uuid,
  created_at timestamptz default now(),
  updated_at timestamptz default now(),
  last_accessed_at timestamptz default now(),
  metadata jsonb
);
alter table storage.objects add column if not exists path_tokens text[] generated always as (string_to_array(name, '/')) stored;
alter table storage.objects add column if not exists version text;
alter table storage.objects add column if not exists owner_id text;
alter table storage.objects add column if not exists user_metadata jsonb;
create unique index if not exists bucketid_objname on storage.objects using btree (bucket_id, name);
create index if not exists name_prefix_search on storage.objects using btree (name text_pattern_ops);
-- The listing functions walk these in byte order: names as stored (list v2, S3) and lowercased
-- (list v1, which matches case-insensitively).
create index if not exists idx_objects_bucket_id_name on storage.objects (bucket_id, (name collate "C"));
create index if not exists idx_objects_bucket_id_name_lower on storage.objects (bucket_id, (lower(name) collate "C"));
comment on column storage.objects.owner is 'Field is deprecated, use owner_id instead';

alter table storage.buckets enable row level security;
alter table storage.objects enable row level security;
alter table storage.buckets owner to supabase_storage_admin;
alter table storage.objects owner to supabase_storage_admin;
-- As on Supabase: the API roles hold every privilege and the policies decide.
grant all on storage.buckets, storage.objects to anon, authenticated, service_role;

-- The folders of an object name (all but its last segment).
create or replace function storage.foldername(name text) returns text[]
language plpgsql immutable as $$
declare
  parts text[] := string_to_array(name, '/');
begin
  return parts[1 : array_length(parts, 1) - 1];
end $$;

-- The last segment of an object name.
create or replace function storage.filename(name text) returns text
language plpgsql immutable as $$
declare
  parts text[] := string_to_array(name, '/');
begin
  return parts[array_length(parts, 1)];
end $$;

-- What follows the last dot of the file name (the whole file name when it has none).
create or replace function storage.extension(name text) returns text
language plpgsql immutable as $$
declare
  parts text[] := string_to_array(name, '/');
begin
  return reverse(split_part(reverse(parts[array_length(parts, 1)]), '.', 1));
end $$;

-- The operation the Storage API is performing (`storage.operation`, set per request, e.g.
-- `storage.object.list`), so that a policy can tell apart requests that need the same privilege.
create or replace function storage.operation() returns text
language sql stable as $$
  select current_setting('storage.operation', true)
$$;

-- Whether the current operation is `expected_operation`; either may carry the `storage.` prefix.
create or replace function storage.allow_only_operation(expected_operation text) returns boolean
language sql stable as $$
  select case
    when coalesce(expected_operation, '') = '' then false
    else coalesce(
      regexp_replace(storage.operation(), '^storage\.', '') = regexp_replace(expected_operation, '^storage\.', ''),
      false)
  end
$$;

-- Whether the current operation is any of `expected_operations` (empty entries never match).
create or replace function storage.allow_any_operation(expected_operations text[]) returns boolean
language sql stable as $$
  select exists (
    select 1 from unnest(expected_operations) as expected
    where coalesce(expected, '') <> ''
      and regexp_replace(expected, '^storage\.', '') = regexp_replace(storage.operation(), '^storage\.', '')
  )
$$;

-- Bytes stored per bucket, from the objects' recorded sizes. Supabase's first version named the
-- second column `bucket`; a function with another result shape cannot be replaced in place.
do $$
begin
  if exists (select 1 from pg_proc
             where oid = to_regprocedure('storage.get_size_by_bucket()')
               and proargnames is distinct from array['size', 'bucket_id']) then
    drop function storage.get_size_by_bucket();
  end if;
end $$;
create or replace function storage.get_size_by_bucket() returns table (size bigint, bucket_id text)
language sql stable as $$
  select sum((o.metadata ->> 'size')::bigint)::bigint, o.bucket_id from storage.objects o group by o.bucket_id
$$;

-- The key prefix up to and including the first delimiter after `p_prefix`: the "folder" a key
-- lists under at that level, or NULL when the key is a leaf there (or there is no delimiter).
-- 'data/a/b.txt' under 'data/' → 'data/a/'; 'data/b.txt' → NULL.
create or replace function storage.get_common_prefix(p_key text, p_prefix text, p_delimiter text) returns text
language sql immutable as $$
  select case
    when coalesce(p_delimiter, '') = '' then null
    when position(p_delimiter in substring(p_key from length(p_prefix) + 1)) > 0 then
      left(p_key, length(p_prefix) + position(p_delimiter in substring(p_key from length(p_prefix) + 1))
                  + length(p_delimiter) - 1)
  end
$$;

-- Older signatures that the ones below replace; left in place they would make calls ambiguous.
-- One that something still depends on stays rather than stopping the start.
do $$
declare
  old text;
begin
  foreach old in array array[
    'storage.search(text, text, integer, integer, integer)',
    'storage.search_v2(text, text, integer, integer, text)',
    'storage.list_objects_with_delimiter(text, text, text, integer, text, text)'
  ] loop
    begin
      execute 'drop function if exists ' || old;
    exception when dependent_objects_still_exist then
      raise warning 'kept %: other objects depend on it', old;
    end;
  end loop;
end $$;

-- List v1 (`POST /object/list/{bucket}`): one folder level under `prefix` (which ends with '/'
-- unless empty) whose names start with `prefix || search`, matched case-insensitively. Names are
-- relative to `prefix`; a sub-folder is one row with NULL id, timestamps and metadata. Sorted by
-- `sortcolumn` (name, updated_at, created_at or last_accessed_at; anything else means name) in
-- `sortorder` ('asc'; anything else is descending), then `offsets` rows skipped and at most
-- `limits` (capped at 1500) returned. By name, folders and files interleave in the byte order of
-- the lowercased names; by a timestamp, folders (by name) come before files. `levels` is not used
-- (the level follows from `prefix`) and stays for callers that pass it. Runs as the caller, so
-- the policies on `storage.objects` decide what is listed.
create or replace function storage.search(
  prefix text,
  bucketname text,
  limits int default 100,
  levels int default 1,
  offsets int default 0,
  search text default '',
  sortcolumn text default 'name',
  sortorder text default 'asc'
) returns table (
  name text,
  id uuid,
  updated_at timestamptz,
  created_at timestamptz,
  last_accessed_at timestamptz,
  metadata jsonb
)
language plpgsql stable security invoker
-- The ordered reads restart once per folder with new bounds: planned once, not at every restart.
set plan_cache_mode = force_generic_plan
as $$
declare
  v_limit int := least(coalesce(limits, 100), 1500);
  v_offset int := greatest(coalesce(offsets, 0), 0);
  v_base_len int := length(coalesce(prefix, ''));
  v_match text := coalesce(prefix, '') || coalesce(search, '');
  v_low text := lower(coalesce(prefix, '') || coalesce(search, ''));
  v_asc boolean := lower(coalesce(sortorder, 'asc')) = 'asc';
  v_dir text;
  v_column text;
  v_first int;
  v_levels int;
  v_high text;
  v_last int;
  v_seek text;
  v_want int;
  v_folder text;
  v_more boolean;
  v_count int := 0;
  v_skipped int := 0;
  c refcursor;
  r record;
begin
  v_dir := case when v_asc then 'asc' else 'desc' end;
  v_column := case lower(coalesce(sortcolumn, 'name'))
    when 'updated_at' then 'updated_at'
    when 'created_at' then 'created_at'
    when 'last_accessed_at' then 'last_accessed_at'
    else 'name'
  end;
  if v_limit <= 0 then
    return;
  end if;

  if v_column <> 'name' then
    -- By a timestamp: the folder and file names are the path segments from the prefix's level
    -- to the level of `prefix || search`.
    v_first := coalesce(array_length(string_to_array(coalesce(prefix, ''), '/'), 1), 1);
    v_levels := coalesce(array_length(string_to_array(v_match, '/'), 1), 1);
    return query execute format(
      $sql$
      select e.name, e.id, e.updated_at, e.created_at, e.last_accessed_at, e.metadata
      from (
        select array_to_string(o.path_tokens[$1:$2], '/') as name, null::uuid as id,
               null::timestamptz as updated_at, null::timestamptz as created_at,
               null::timestamptz as last_accessed_at, null::jsonb as metadata, 0 as kind
        from storage.objects o
        where o.bucket_id = $3 and o.name ilike $4 || '%%' and array_length(o.path_tokens, 1) <> $2
        group by 1
        union all
        select array_to_string(o.path_tokens[$1:$2], '/'), o.id, o.updated_at, o.created_at,
               o.last_accessed_at, o.metadata, 1
        from storage.objects o
        where o.bucket_id = $3 and o.name ilike $4 || '%%' and array_length(o.path_tokens, 1) = $2
      ) e
      order by e.kind, case when e.kind = 0 then e.name end %1$s, e.%2$I %1$s, e.name %1$s
      limit $5 offset $6
      $sql$, v_dir, v_column)
      using v_first, v_levels, bucketname, v_match, v_limit, v_offset;
    return;
  end if;

  -- By name: walk the lowercased names in byte order (the `idx_objects_bucket_id_name_lower`
  -- index). Files stream from one ordered read; at the first key inside a sub-folder the folder
  -- is emitted and the read restarts past the folder's whole key range, so a listing costs one
  -- index seek per folder, however many objects the folder holds.
  -- `v_high`: the smallest string above every string that starts with `v_low` (NULL: none).
  if v_low <> '' then
    v_last := ascii(right(v_low, 1)) + 1;
    if v_last <= 1114111 and v_last not between 55296 and 57343 then
      v_high := left(v_low, -1) || chr(v_last);
    end if;
  end if;
  -- Ascending: read from v_seek on; descending: read below v_seek (NULL: from the top).
  v_seek := case when v_asc then v_low else v_high end;
  loop
    exit when v_count >= v_limit;
    v_want := v_limit - v_count + (v_offset - v_skipped);
    if v_asc and v_high is not null then
      open c for
        select o.name, o.id, o.updated_at, o.created_at, o.last_accessed_at, o.metadata
        from storage.objects o
        where o.bucket_id = bucketname and lower(o.name) collate "C" >= v_seek
          and lower(o.name) collate "C" < v_high and starts_with(lower(o.name), v_low)
        order by lower(o.name) collate "C"
        limit v_want;
    elsif v_asc then
      open c for
        select o.name, o.id, o.updated_at, o.created_at, o.last_accessed_at, o.metadata
        from storage.objects o
        where o.bucket_id = bucketname and lower(o.name) collate "C" >= v_seek
          and starts_with(lower(o.name), v_low)
        order by lower(o.name) collate "C"
        limit v_want;
    elsif v_seek is not null then
      open c for
        select o.name, o.id, o.updated_at, o.created_at, o.last_accessed_at, o.metadata
        from storage.objects o
        where o.bucket_id = bucketname and lower(o.name) collate "C" < v_seek
          and lower(o.name) collate "C" >= v_low and starts_with(lower(o.name), v_low)
        order by lower(o.name) collate "C" desc
        limit v_want;
    else
      open c for
        select o.name, o.id, o.updated_at, o.created_at, o.last_accessed_at, o.metadata
        from storage.objects o
        where o.bucket_id = bucketname and lower(o.name) collate "C" >= v_low
          and starts_with(lower(o.name), v_low)
        order by lower(o.name) collate "C" desc
        limit v_want;
    end if;
    v_more := false;
    loop
      fetch c into r;
      exit when not found;
      v_folder := storage.get_common_prefix(lower(r.name), v_low, '/');
      if v_skipped < v_offset then
        v_skipped := v_skipped + 1;
      elsif v_folder is not null then
        name := substring(left(storage.get_common_prefix(r.name, v_match, '/'), -1) from v_base_len + 1);
        id := null;
        updated_at := null;
        created_at := null;
        last_accessed_at := null;
        metadata := null;
        return next;
        v_count := v_count + 1;
      else
        name := substring(r.name from v_base_len + 1);
        id := r.id;
        updated_at := r.updated_at;
        created_at := r.created_at;
        last_accessed_at := r.last_accessed_at;
        metadata := r.metadata;
        return next;
        v_count := v_count + 1;
      end if;
      if v_folder is not null then
        -- Past the folder: 'a/b/' → from 'a/b0' on ('0' follows '/'), or below 'a/b/'.
        v_seek := case when v_asc then left(v_folder, -1) || '0' else v_folder end;
        v_more := v_count < v_limit;
        exit;
      end if;
      exit when v_count >= v_limit;
    end loop;
    close c;
    exit when not v_more;
  end loop;
end $$;

-- S3-style listing: keys under `prefix_param`, in byte order (`sort_order` 'asc', anything else
-- descending), keys with `delimiter_param` after the prefix rolled up into one row per common
-- prefix (full name without the trailing delimiter, NULL id, timestamps and metadata), after the
-- cursor `next_token` (else `start_after`): a folder cursor resumes after the whole folder, a key
-- cursor after that key. At most `max_keys` rows. Runs as the caller (policies decide).
create or replace function storage.list_objects_with_delimiter(
  _bucket_id text,
  prefix_param text,
  delimiter_param text,
  max_keys integer default 100,
  start_after text default '',
  next_token text default '',
  sort_order text default 'asc'
) returns table (
  name text,
  id uuid,
  metadata jsonb,
  updated_at timestamptz,
  created_at timestamptz,
  last_accessed_at timestamptz
)
language plpgsql stable security invoker
set plan_cache_mode = force_generic_plan
as $$
declare
  v_prefix text := coalesce(prefix_param, '');
  v_delim text := coalesce(delimiter_param, '');
  v_max int := coalesce(max_keys, 100);
  v_asc boolean := lower(coalesce(sort_order, 'asc')) = 'asc';
  v_start text := coalesce(nullif(next_token, ''), nullif(start_after, ''), '');
  v_high text;
  v_last int;
  v_seek text;
  v_next text;
  v_want int;
  v_folder text;
  v_more boolean;
  v_count int := 0;
  c refcursor;
  r record;
begin
  if v_max <= 0 then
    return;
  end if;
  -- `v_high`: the smallest string above every string that starts with the prefix (NULL: none).
  if v_prefix <> '' then
    v_last := ascii(right(v_prefix, 1)) + 1;
    if v_last <= 1114111 and v_last not between 55296 and 57343 then
      v_high := left(v_prefix, -1) || chr(v_last);
    end if;
  end if;
  -- Ascending: read from v_seek on; descending: read below v_seek (NULL: from the top).
  v_seek := case when v_asc then v_prefix else v_high end;
  if v_start <> '' then
    -- Is the cursor a folder (some key starts with it and the delimiter)?
    if v_delim <> '' then
      select o.name into v_next from storage.objects o
      where o.bucket_id = _bucket_id and o.name collate "C" >= v_start || v_delim
      order by o.name collate "C" limit 1;
    end if;
    if v_delim <> '' and starts_with(v_next, v_start || v_delim) then
      -- Past every key in the folder.
      if v_asc then
        v_next := v_start || v_delim;
        v_next := left(v_next, -1) || chr(ascii(right(v_next, 1)) + 1);
      else
        v_next := v_start || v_delim;
      end if;
    elsif v_asc then
      -- The first string after the key ('\x01' is the smallest character).
      v_next := v_start || chr(1);
    else
      v_next := v_start;
    end if;
    if v_asc and v_next collate "C" > v_seek then
      v_seek := v_next;
    elsif not v_asc and (v_seek is null or v_next collate "C" < v_seek) then
      v_seek := v_next;
    end if;
  end if;

  -- As in `storage.search`: files stream from one ordered read, each folder costs one seek.
  loop
    exit when v_count >= v_max;
    v_want := v_max - v_count;
    if v_asc and v_high is not null then
      open c for
        select o.name, o.id, o.updated_at, o.created_at, o.last_accessed_at, o.metadata
        from storage.objects o
        where o.bucket_id = _bucket_id and o.name collate "C" >= v_seek and o.name collate "C" < v_high
          and starts_with(o.name, v_prefix)
        order by o.name collate "C"
        limit v_want;
    elsif v_asc then
      open c for
        select o.name, o.id, o.updated_at, o.created_at, o.last_accessed_at, o.metadata
        from storage.objects o
        where o.bucket_id = _bucket_id and o.name collate "C" >= v_seek and starts_with(o.name, v_prefix)
        order by o.name collate "C"
        limit v_want;
    elsif v_seek is not null then
      open c for
        select o.name, o.id, o.updated_at, o.created_at, o.last_accessed_at, o.metadata
        from storage.objects o
        where o.bucket_id = _bucket_id and o.name collate "C" < v_seek and o.name collate "C" >= v_prefix
          and starts_with(o.name, v_prefix)
        order by o.name collate "C" desc
        limit v_want;
    else
      open c for
        select o.name, o.id, o.updated_at, o.created_at, o.last_accessed_at, o.metadata
        from storage.objects o
        where o.bucket_id = _bucket_id and o.name collate "C" >= v_prefix and starts_with(o.name, v_prefix)
        order by o.name collate "C" desc
        limit v_want;
    end if;
    v_more := false;
    loop
      fetch c into r;
      exit when not found;
      v_folder := storage.get_common_prefix(r.name, v_prefix, v_delim);
      if v_folder is not null then
        name := left(v_folder, -length(v_delim));
        id := null;
        metadata := null;
        updated_at := null;
        created_at := null;
        last_accessed_at := null;
        return next;
        v_count := v_count + 1;
        -- Past the folder: from the first string above its range, or below the folder.
        v_seek := case when v_asc then left(v_folder, -1) || chr(ascii(right(v_folder, 1)) + 1) else v_folder end;
        v_more := v_count < v_max;
        exit;
      end if;
      name := r.name;
      id := r.id;
      metadata := r.metadata;
      updated_at := r.updated_at;
      created_at := r.created_at;
      last_accessed_at := r.last_accessed_at;
      return next;
      v_count := v_count + 1;
      exit when v_count >= v_max;
    end loop;
    close c;
    exit when not v_more;
  end loop;
end $$;

-- List v2 ordered by a timestamp: the entries one level under `p_prefix` (folders as one row each,
-- dated by their oldest object's created_at for both timestamps), ordered by `p_sort_column`
-- ('created_at' or 'updated_at', to the millisecond) then name, after the cursor
-- (`p_sort_column_after`, `p_start_after`), at most `p_limit`. `key` is the name's segment at
-- `p_level`. Runs as the caller (policies decide).
create or replace function storage.search_by_timestamp(
  p_prefix text,
  p_bucket_id text,
  p_limit int,
  p_level int,
  p_start_after text,
  p_sort_order text,
  p_sort_column text,
  p_sort_column_after text
) returns table (
  key text,
  name text,
  id uuid,
  updated_at timestamptz,
  created_at timestamptz,
  last_accessed_at timestamptz,
  metadata jsonb
)
language plpgsql stable security invoker as $$
declare
  v_dir text := case when lower(coalesce(p_sort_order, 'asc')) = 'asc' then 'asc' else 'desc' end;
  v_column text := lower(coalesce(p_sort_column, ''));
begin
  if v_column not in ('created_at', 'updated_at') then
    raise exception 'storage.search_by_timestamp: cannot sort by "%"', p_sort_column using errcode = '22023';
  end if;
  return query execute format(
    $sql$
    with matched as (
      select o.name, o.id, o.updated_at, o.created_at, o.last_accessed_at, o.metadata,
             storage.get_common_prefix(o.name, $1, '/') as folder
      from storage.objects o
      where o.bucket_id = $2 and o.name collate "C" >= $1 and starts_with(o.name, $1)
    ),
    entries as (
      select left(m.folder, -1) as name, null::uuid as id, min(m.created_at) as updated_at,
             min(m.created_at) as created_at, null::timestamptz as last_accessed_at, null::jsonb as metadata
      from matched m where m.folder is not null group by m.folder
      union all
      select m.name, m.id, m.updated_at, m.created_at, m.last_accessed_at, m.metadata
      from matched m where m.folder is null
    )
    select split_part(e.name, '/', $3), e.name, e.id, e.updated_at, e.created_at, e.last_accessed_at, e.metadata
    from entries e
    where $5 = ''
       or (coalesce(date_trunc('milliseconds', e.%1$I), 'epoch'::timestamptz), e.name collate "C")
          %2$s (coalesce(nullif($6, '')::timestamptz, 'epoch'::timestamptz), $5)
    order by coalesce(date_trunc('milliseconds', e.%1$I), 'epoch'::timestamptz) %3$s, e.name collate "C" %3$s
    limit $4
    $sql$, v_column, case when v_dir = 'asc' then '>' else '<' end, v_dir)
    using coalesce(p_prefix, ''), p_bucket_id, p_level, p_limit, coalesce(p_start_after, ''),
          coalesce(p_sort_column_after, '');
end $$;

-- List v2 with a delimiter (`POST /object/list-v2/{bucket}` with `with_delimiter`, the S3 API
-- with '/'): one level under `prefix` after the cursor `start_after` (and, by a timestamp,
-- `sort_column_after`), at most `limits` (capped at 1500) rows; `sort_column` is name (anything
-- else but created_at/updated_at means name), `sort_order` asc or desc (else asc). Folders are
-- rows with their full name without the trailing '/' and NULL id; `key` is the segment at
-- `levels`. Runs as the caller (policies decide).
create or replace function storage.search_v2(
  prefix text,
  bucket_name text,
  limits int default 100,
  levels int default 1,
  start_after text default '',
  sort_order text default 'asc',
  sort_column text default 'name',
  sort_column_after text default ''
) returns table (
  key text,
  name text,
  id uuid,
  updated_at timestamptz,
  created_at timestamptz,
  last_accessed_at timestamptz,
  metadata jsonb
)
language plpgsql stable security invoker as $$
declare
  v_limit int := least(coalesce(limits, 100), 1500);
  v_dir text := lower(coalesce(sort_order, 'asc'));
  v_column text := lower(coalesce(sort_column, 'name'));
begin
  if v_dir not in ('asc', 'desc') then
    v_dir := 'asc';
  end if;
  if v_column not in ('name', 'updated_at', 'created_at') then
    v_column := 'name';
  end if;
  if v_column = 'name' then
    return query
      select split_part(l.name, '/', levels), l.name, l.id, l.updated_at, l.created_at, l.last_accessed_at, l.metadata
      from storage.list_objects_with_delimiter(bucket_name, coalesce(prefix, ''), '/', v_limit,
                                               coalesce(start_after, ''), '', v_dir) l;
  else
    return query
      select * from storage.search_by_timestamp(prefix, bucket_name, v_limit, levels, start_after,
                                                v_dir, v_column, sort_column_after);
  end if;
end $$;

create or replace function storage.update_updated_at_column() returns trigger
language plpgsql as $$
begin
  new.updated_at = now();
  return new;
end $$;
drop trigger if exists update_objects_updated_at on storage.objects;
create trigger update_objects_updated_at before update on storage.objects
  for each row execute function storage.update_updated_at_column();

-- Bucket names are at most 100 characters, also when written with SQL.
create or replace function storage.enforce_bucket_name_length() returns trigger
language plpgsql as $$
begin
  if length(new.name) > 100 then
    raise exception 'bucket name "%" is too long (% characters). Max is 100.', new.name, length(new.name);
  end if;
  return new;
end $$;
drop trigger if exists enforce_bucket_name_length_trigger on storage.buckets;
create trigger enforce_bucket_name_length_trigger before insert or update of name on storage.buckets
  for each row execute function storage.enforce_bucket_name_length();

-- Rows of these tables go only through the Storage API, which says so with
-- `storage.allow_delete_query`: a direct delete would orphan the objects' bytes.
create or replace function storage.protect_delete() returns trigger
language plpgsql as $$
begin
  if coalesce(current_setting('storage.allow_delete_query', true), 'false') != 'true' then
    raise exception 'Direct deletion from storage tables is not allowed. Use the Storage API instead.'
      using hint = 'This prevents accidental data loss from orphaned objects.', errcode = '42501';
  end if;
  return null;
end $$;
drop trigger if exists protect_buckets_delete on storage.buckets;
create trigger protect_buckets_delete before delete on storage.buckets
  for each statement execute function storage.protect_delete();
drop trigger if exists protect_objects_delete on storage.objects;
create trigger protect_objects_delete before delete on storage.objects
  for each statement execute function storage.protect_delete();

-- Supabase's storage functions belong to the storage admin, as its tables do.
alter function storage.foldername(text) owner to supabase_storage_admin;
alter function storage.filename(text) owner to supabase_storage_admin;
alter function storage.extension(text) owner to supabase_storage_admin;
alter function storage.operation() owner to supabase_storage_admin;
alter function storage.allow_only_operation(text) owner to supabase_storage_admin;
alter function storage.allow_any_operation(text[]) owner to supabase_storage_admin;
alter function storage.get_size_by_bucket() owner to supabase_storage_admin;
alter function storage.get_common_prefix(text, text, text) owner to supabase_storage_admin;
alter function storage.search(text, text, integer, integer, integer, text, text, text) owner to supabase_storage_admin;
alter function storage.list_objects_with_delimiter(text, text, text, integer, text, text, text)
  owner to supabase_storage_admin;
alter function storage.search_by_timestamp(text, text, integer, integer, text, text, text, text)
  owner to supabase_storage_admin;
alter function storage.search_v2(text, text, integer, integer, text, text, text, text) owner to supabase_storage_admin;
alter function storage.update_updated_at_column() owner to supabase_storage_admin;
alter function storage.enforce_bucket_name_length() owner to supabase_storage_admin;
alter function storage.protect_delete() owner to supabase_storage_admin;
