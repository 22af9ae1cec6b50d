-- Schema cache reloads (reference/rest.md §10): every DDL command and every drop notifies
-- PostgREST's channel, `NOTIFY pgrst, 'reload schema'`, so MadBase (and a PostgREST next to it)
-- reloads its schema cache without being told. Supabase's `pgrst_ddl_watch`/`pgrst_drop_watch` do the
-- same; where those already exist they are kept and MadBase's own triggers are not added (one
-- notification per change is enough; identical ones in a transaction are merged by PostgreSQL anyway).
-- Objects in pg_temp never notify. Creating event triggers needs a superuser: without one this
-- migration installs the functions only and warns (reloads then need an explicit NOTIFY).
-- Idempotent.

create or replace function _madbase.schema_reload_ddl() returns event_trigger
language plpgsql as $$
begin
  if exists (select 1 from pg_event_trigger_ddl_commands() where schema_name is distinct from 'pg_temp') then
    perform pg_notify('pgrst', 'reload schema');
  end if;
end
$$;

create or replace function _madbase.schema_reload_drop() returns event_trigger
language plpgsql as $$
begin
  if exists (select 1 from pg_event_trigger_dropped_objects() where not is_temporary) then
    perform pg_notify('pgrst', 'reload schema');
  end if;
end
$$;

do $$
begin
  if not coalesce((select rolsuper from pg_roles where rolname = current_user), false) then
    raise warning 'MadBase: % is not a superuser, so no DDL event trigger was installed; run NOTIFY pgrst, ''reload schema'' after schema changes', current_user;
    return;
  end if;
  if not exists (select 1 from pg_event_trigger where evtname in ('madbase_schema_reload_ddl', 'pgrst_ddl_watch')) then
    create event trigger madbase_schema_reload_ddl on ddl_command_end
      execute function _madbase.schema_reload_ddl();
  end if;
  if not exists (select 1 from pg_event_trigger where evtname in ('madbase_schema_reload_drop', 'pgrst_drop_watch')) then
    create event trigger madbase_schema_reload_drop on sql_drop
      execute function _madbase.schema_reload_drop();
  end if;
end
$$;
