-- MadBase Realtime: the database side of Supabase Realtime (reference/realtime.md §6.3, §11) —
-- `realtime.messages`, `realtime.topic()`, `realtime.send()`, `realtime.broadcast_changes()`, the
-- two publications — plus MadBase's own helpers in `_madbase`: the staging of private-channel
-- probes and the deletion of old messages.
-- Idempotent: a database that already has Supabase's `realtime` objects keeps its table (even a
-- partitioned one) and its publications; the functions are replaced by equivalent ones.

-- Broadcast messages from the database and the rows private-channel policies are evaluated on.
-- Supabase partitions this table by day and creates the partitions from its server. MadBase
-- keeps it a plain table: no partition to create before an insert can land (a missing partition
-- makes `realtime.send` fail on Supabase), no partition maintenance job; old rows are removed by
-- `_madbase.realtime_delete_old_messages`, which MadBase calls, through the `inserted_at` index.
create table if not exists realtime.messages (
  topic text not null,
  extension text not null,
  payload jsonb,
  event text,
  private boolean default false,
  updated_at timestamp not null default now(),
  inserted_at timestamp not null default now(),
  id uuid not null default gen_random_uuid(),
  primary key (id, inserted_at)
);
create index if not exists messages_inserted_at_idx on realtime.messages (inserted_at);

alter table realtime.messages enable row level security;
grant select, insert, update on realtime.messages to anon, authenticated, service_role;

-- The sub-topic a private-channel check or `realtime.send` is running for.
create or replace function realtime.topic() returns text
language sql stable
as $$
  select nullif(current_setting('realtime.topic', true), '')::text
$$;

-- Broadcast `payload` as `event` to `topic` from SQL (a trigger, a function). As on Supabase, it
-- never fails the caller's transaction: an error (a policy, a constraint) becomes a warning. The
-- payload gains an `id` (the message's id) when it has none. Runs as the caller: a private
-- channel's insert policy applies.
create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void
language plpgsql volatile
as $$
declare
  message_id uuid;
begin
  begin
    message_id := gen_random_uuid();
    perform set_config('realtime.topic', topic, true);
    insert into realtime.messages (id, payload, event, topic, private, extension)
    values (message_id,
            case when payload ? 'id' then payload else jsonb_set(payload, '{id}', to_jsonb(message_id)) end,
            event, topic, private, 'broadcast');
  exception
    when others then
      raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
  end;
end
$$;

-- A row trigger's helper: broadcasts the change as
-- {"old_record": OLD, "record": NEW, "operation": …, "table": …, "schema": …} (Supabase's shape)
-- through `realtime.send` (private).
create or replace function realtime.broadcast_changes(
  topic_name text, event_name text, operation text, table_name text, table_schema text,
  new record, old record, level text default 'ROW'
) returns void
language plpgsql volatile
as $$
declare
  row_data jsonb;
begin
  if level = 'STATEMENT' then
    raise exception 'function can only be triggered for each row, not for each statement';
  end if;
  if operation in ('INSERT', 'UPDATE', 'DELETE') then
    row_data := jsonb_build_object('old_record', old, 'record', new, 'operation', operation,
                                   'table', table_name, 'schema', table_schema);
    perform realtime.send(row_data, event_name, topic_name);
  else
    raise exception 'Unexpected operation type: %', operation;
  end if;
exception
  when others then
    raise exception 'Failed to process the row: %', sqlerrm;
end
$$;

grant execute on function realtime.topic(), realtime.send(jsonb, text, text, boolean),
  realtime.broadcast_changes(text, text, text, text, text, record, record, text)
  to anon, authenticated, service_role;

-- `supabase_realtime`: the tables whose changes `postgres_changes` streams. Created empty when
-- missing; MadBase never adds user tables (the project does, as on Supabase). The messages
-- publication carries `realtime.send` inserts to the replication core.
do $$
begin
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime_messages_publication') then
    create publication supabase_realtime_messages_publication for table realtime.messages
      with (publish = 'insert');
  end if;
end
$$;

-- Deletes messages older than `older_than` (Supabase keeps 72 hours) and returns how many.
create or replace function _madbase.realtime_delete_old_messages(older_than interval default '72 hours')
returns bigint
language plpgsql volatile security definer
set search_path = ''
as $$
declare
  deleted bigint;
begin
  delete from realtime.messages m where m.inserted_at < (now() - older_than)::timestamp;
  get diagnostics deleted = row_count;
  return deleted;
end
$$;

-- Private-channel authorisation, read half (reference §11): stages one probe row per extension
-- for the sub-topic, as the table's owner (RLS does not apply to it), so that the caller can
-- SELECT them back under the user's role. The ids come from the caller, which then rolls its
-- transaction back: nothing staged is ever committed (and so never reaches the publication).
-- Only `authenticator` (the login role of MadBase's lanes) may run it, before it switches role;
-- anon, authenticated and service_role may not.
create or replace function _madbase.realtime_stage_channel_probes(p_topic text, p_broadcast uuid, p_presence uuid)
returns void
language sql volatile security definer
set search_path = ''
as $$
  insert into realtime.messages (id, topic, extension)
  values (p_broadcast, p_topic, 'broadcast'), (p_presence, p_topic, 'presence')
$$;

-- Postgres changes are decoded once their commit record is flushed, which can be a moment
-- before the committing backend leaves the proc array: a statement starting in that moment does
-- not see the rows yet, and an RLS check by primary key would wrongly answer "not visible".
-- Waits (bounded: at most about 2 s) until every given transaction (32-bit xids from pgoutput's
-- Begin) is visible to a fresh snapshot; the check statements after it, each with its own
-- snapshot, then see their rows.
create or replace function _madbase.realtime_await_visible(p_xids bigint[])
returns void
language plpgsql volatile
set search_path = ''
as $$
declare
  snap pg_snapshot;
  xmax bigint;
  tries int := 0;
begin
  loop
    snap := pg_catalog.pg_current_snapshot();
    xmax := pg_catalog.pg_snapshot_xmax(snap)::text::bigint;
    -- A 32-bit xid belongs to xmax's epoch, or the one before when it is above xmax's low half.
    if not exists (
      select 1 from unnest(p_xids) x
      where not pg_catalog.pg_visible_in_snapshot(
        ((((xmax >> 32) - (x > (xmax & 4294967295))::int) << 32) | x)::text::xid8, snap)
    ) then
      return;
    end if;
    tries := tries + 1;
    if tries > 2000 then
      raise warning 'realtime: transactions % not visible after 2 s; checking anyway', p_xids;
      return;
    end if;
    perform pg_catalog.pg_sleep(0.001);
  end loop;
end
$$;

revoke all on function _madbase.realtime_await_visible(bigint[]) from public;
grant execute on function _madbase.realtime_await_visible(bigint[]) to authenticator;
revoke all on function _madbase.realtime_delete_old_messages(interval) from public;
revoke all on function _madbase.realtime_stage_channel_probes(text, uuid, uuid) from public;
grant usage on schema _madbase to authenticator;
grant execute on function _madbase.realtime_delete_old_messages(interval) to authenticator;
grant execute on function _madbase.realtime_stage_channel_probes(text, uuid, uuid) to authenticator;
