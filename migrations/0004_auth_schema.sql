-- The `auth` schema of Supabase Auth (GoTrue), as its own migrations leave it at their latest
-- version: the same tables, columns (names, types, order), defaults, constraints, indexes and enums,
-- so SQL written for Supabase (seeds inserting into auth.users, triggers on it, foreign keys to it,
-- RLS policies) runs unchanged. Not (yet) here: GoTrue's OAuth-server, custom-provider and passkey
-- tables; `sessions.oauth_client_id` is kept without its foreign key to `oauth_clients`.
--
-- Idempotent: every object is created only if missing, so a database whose auth schema came from
-- Supabase's own migrations keeps it as it is. Tables belong to supabase_auth_admin, which MadBase's
-- Auth service becomes (`set_config('role', 'supabase_auth_admin', true)` on the authenticator
-- pool); the API roles get no table privileges (only schema usage and the auth.uid() family, 0001).
--
-- Also here: `extensions` on the database's default search_path (as on Supabase, so seeds may call
-- `crypt(...)`/`gen_salt(...)` unqualified), and the `_madbase.auth_*_json` functions that render
-- GoTrue's JSON for users, identities and factors.

-- Enums ------------------------------------------------------------------------------------------

do $$
begin
  if to_regtype('auth.aal_level') is null then
    create type auth.aal_level as enum ('aal1', 'aal2', 'aal3');
  end if;
  if to_regtype('auth.factor_type') is null then
    create type auth.factor_type as enum ('totp', 'webauthn', 'phone');
  end if;
  if to_regtype('auth.factor_status') is null then
    create type auth.factor_status as enum ('unverified', 'verified');
  end if;
  if to_regtype('auth.code_challenge_method') is null then
    create type auth.code_challenge_method as enum ('s256', 'plain');
  end if;
  if to_regtype('auth.one_time_token_type') is null then
    create type auth.one_time_token_type as enum ('confirmation_token', 'reauthentication_token',
      'recovery_token', 'email_change_token_new', 'email_change_token_current', 'phone_change_token');
  end if;
end
$$;

-- Users and their identities ---------------------------------------------------------------------

create table if not exists auth.users (
  instance_id uuid,
  id uuid not null,
  aud varchar(255),
  role varchar(255),
  email varchar(255),
  encrypted_password varchar(255),
  email_confirmed_at timestamptz,
  invited_at timestamptz,
  confirmation_token varchar(255),
  confirmation_sent_at timestamptz,
  recovery_token varchar(255),
  recovery_sent_at timestamptz,
  email_change_token_new varchar(255),
  email_change varchar(255),
  email_change_sent_at timestamptz,
  last_sign_in_at timestamptz,
  raw_app_meta_data jsonb,
  raw_user_meta_data jsonb,
  is_super_admin boolean,
  created_at timestamptz,
  updated_at timestamptz,
  phone text default null,
  phone_confirmed_at timestamptz,
  phone_change text default '',
  phone_change_token varchar(255) default '',
  phone_change_sent_at timestamptz,
  confirmed_at timestamptz generated always as (least(email_confirmed_at, phone_confirmed_at)) stored,
  email_change_token_current varchar(255) default '',
  email_change_confirm_status smallint default 0,
  banned_until timestamptz,
  reauthentication_token varchar(255) default '',
  reauthentication_sent_at timestamptz,
  is_sso_user boolean not null default false,
  deleted_at timestamptz,
  is_anonymous boolean not null default false,
  constraint users_pkey primary key (id),
  constraint users_phone_key unique (phone),
  constraint users_email_change_confirm_status_check
    check (email_change_confirm_status >= 0 and email_change_confirm_status <= 2)
);
-- SSO accounts may share an address; everyone else has a unique one.
create unique index if not exists users_email_partial_key on auth.users (email) where (is_sso_user = false);
create index if not exists users_instance_id_email_idx on auth.users (instance_id, lower(email::text));
create index if not exists users_instance_id_idx on auth.users (instance_id);
create index if not exists users_is_anonymous_idx on auth.users (is_anonymous);
-- One-time tokens are unique unless empty, blank or a numeric OTP.
create unique index if not exists confirmation_token_idx on auth.users (confirmation_token)
  where (confirmation_token::text !~ '^[0-9 ]*$');
create unique index if not exists recovery_token_idx on auth.users (recovery_token)
  where (recovery_token::text !~ '^[0-9 ]*$');
create unique index if not exists email_change_token_current_idx on auth.users (email_change_token_current)
  where (email_change_token_current::text !~ '^[0-9 ]*$');
create unique index if not exists email_change_token_new_idx on auth.users (email_change_token_new)
  where (email_change_token_new::text !~ '^[0-9 ]*$');
create unique index if not exists reauthentication_token_idx on auth.users (reauthentication_token)
  where (reauthentication_token::text !~ '^[0-9 ]*$');

create table if not exists auth.identities (
  provider_id text not null,
  user_id uuid not null,
  identity_data jsonb not null,
  provider text not null,
  last_sign_in_at timestamptz,
  created_at timestamptz,
  updated_at timestamptz,
  email text generated always as (lower(identity_data ->> 'email')) stored,
  id uuid not null default gen_random_uuid(),
  constraint identities_pkey primary key (id),
  constraint identities_provider_id_provider_unique unique (provider_id, provider),
  constraint identities_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade
);
create index if not exists identities_user_id_idx on auth.identities (user_id);
create index if not exists identities_email_idx on auth.identities (email text_pattern_ops);

-- Sessions and refresh tokens --------------------------------------------------------------------

create table if not exists auth.sessions (
  id uuid not null,
  user_id uuid not null,
  created_at timestamptz,
  updated_at timestamptz,
  factor_id uuid,
  aal auth.aal_level,
  not_after timestamptz,
  refreshed_at timestamp,
  user_agent text,
  ip inet,
  tag text,
  oauth_client_id uuid,
  refresh_token_hmac_key text,
  refresh_token_counter bigint,
  scopes text,
  constraint sessions_pkey primary key (id),
  constraint sessions_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
  constraint sessions_scopes_length check (char_length(scopes) <= 4096)
);
create index if not exists sessions_user_id_idx on auth.sessions (user_id);
create index if not exists user_id_created_at_idx on auth.sessions (user_id, created_at);
create index if not exists sessions_not_after_idx on auth.sessions (not_after desc);
create index if not exists sessions_oauth_client_id_idx on auth.sessions (oauth_client_id);

create table if not exists auth.refresh_tokens (
  instance_id uuid,
  id bigserial not null,
  token varchar(255),
  user_id varchar(255),
  revoked boolean,
  created_at timestamptz,
  updated_at timestamptz,
  parent varchar(255),
  session_id uuid,
  constraint refresh_tokens_pkey primary key (id),
  constraint refresh_tokens_token_unique unique (token),
  constraint refresh_tokens_session_id_fkey foreign key (session_id) references auth.sessions (id) on delete cascade
);
create index if not exists refresh_tokens_instance_id_idx on auth.refresh_tokens (instance_id);
create index if not exists refresh_tokens_instance_id_user_id_idx on auth.refresh_tokens (instance_id, user_id);
create index if not exists refresh_tokens_parent_idx on auth.refresh_tokens (parent);
create index if not exists refresh_tokens_session_id_revoked_idx on auth.refresh_tokens (session_id, revoked);
create index if not exists refresh_tokens_updated_at_idx on auth.refresh_tokens (updated_at desc);

-- Multi-factor authentication --------------------------------------------------------------------

create table if not exists auth.mfa_factors (
  id uuid not null,
  user_id uuid not null,
  friendly_name text,
  factor_type auth.factor_type not null,
  status auth.factor_status not null,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  secret text,
  phone text default null,
  last_challenged_at timestamptz default null,
  web_authn_credential jsonb,
  web_authn_aaguid uuid,
  last_webauthn_challenge_data jsonb,
  constraint mfa_factors_pkey primary key (id),
  constraint mfa_factors_last_challenged_at_key unique (last_challenged_at),
  constraint mfa_factors_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade
);
create unique index if not exists mfa_factors_user_friendly_name_unique on auth.mfa_factors (friendly_name, user_id)
  where (trim(friendly_name) <> '');
create unique index if not exists unique_phone_factor_per_user on auth.mfa_factors (user_id, phone);
create index if not exists mfa_factors_user_id_idx on auth.mfa_factors (user_id);
create index if not exists factor_id_created_at_idx on auth.mfa_factors (user_id, created_at);

create table if not exists auth.mfa_challenges (
  id uuid not null,
  factor_id uuid not null,
  created_at timestamptz not null,
  verified_at timestamptz,
  ip_address inet not null,
  otp_code text,
  web_authn_session_data jsonb,
  constraint mfa_challenges_pkey primary key (id),
  constraint mfa_challenges_auth_factor_id_fkey foreign key (factor_id) references auth.mfa_factors (id) on delete cascade
);
create index if not exists mfa_challenge_created_at_idx on auth.mfa_challenges (created_at desc);

create table if not exists auth.mfa_amr_claims (
  session_id uuid not null,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  authentication_method text not null,
  id uuid not null,
  constraint amr_id_pk primary key (id),
  constraint mfa_amr_claims_session_id_authentication_method_pkey unique (session_id, authentication_method),
  constraint mfa_amr_claims_session_id_fkey foreign key (session_id) references auth.sessions (id) on delete cascade
);

-- One-time tokens, PKCE/OAuth flow state, audit log, bookkeeping ---------------------------------

create table if not exists auth.one_time_tokens (
  id uuid not null,
  user_id uuid not null,
  token_type auth.one_time_token_type not null,
  token_hash text not null,
  relates_to text not null,
  created_at timestamp not null default now(),
  updated_at timestamp not null default now(),
  constraint one_time_tokens_pkey primary key (id),
  constraint one_time_tokens_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade,
  constraint one_time_tokens_token_hash_check check (char_length(token_hash) > 0)
);
create index if not exists one_time_tokens_token_hash_hash_idx on auth.one_time_tokens using hash (token_hash);
create index if not exists one_time_tokens_relates_to_hash_idx on auth.one_time_tokens using hash (relates_to);
create unique index if not exists one_time_tokens_user_id_token_type_key on auth.one_time_tokens (user_id, token_type);

create table if not exists auth.flow_state (
  id uuid not null,
  user_id uuid,
  auth_code text,
  code_challenge_method auth.code_challenge_method,
  code_challenge text,
  provider_type text not null,
  provider_access_token text,
  provider_refresh_token text,
  created_at timestamptz,
  updated_at timestamptz,
  authentication_method text not null,
  auth_code_issued_at timestamptz,
  invite_token text,
  referrer text,
  oauth_client_state_id uuid,
  linking_target_id uuid,
  email_optional boolean not null default false,
  constraint flow_state_pkey primary key (id)
);
create index if not exists idx_auth_code on auth.flow_state (auth_code);
create index if not exists idx_user_id_auth_method on auth.flow_state (user_id, authentication_method);
create index if not exists flow_state_created_at_idx on auth.flow_state (created_at desc);

create table if not exists auth.audit_log_entries (
  instance_id uuid,
  id uuid not null,
  payload json,
  created_at timestamptz,
  ip_address varchar(64) not null default '',
  constraint audit_log_entries_pkey primary key (id)
);
create index if not exists audit_logs_instance_id_idx on auth.audit_log_entries (instance_id);

create table if not exists auth.instances (
  id uuid not null,
  uuid uuid,
  raw_base_config text,
  created_at timestamptz,
  updated_at timestamptz,
  constraint instances_pkey primary key (id)
);

-- GoTrue's record of its applied migrations; MadBase leaves it empty.
create table if not exists auth.schema_migrations (
  version varchar(255) not null,
  constraint schema_migrations_pkey primary key (version)
);

-- SSO (SAML 2.0) ---------------------------------------------------------------------------------
-- The "not empty" checks compare with `= null` exactly as GoTrue's do, so they let '' through too.

create table if not exists auth.sso_providers (
  id uuid not null,
  resource_id text,
  created_at timestamptz,
  updated_at timestamptz,
  disabled boolean,
  constraint sso_providers_pkey primary key (id),
  constraint "resource_id not empty" check (resource_id = null or char_length(resource_id) > 0)
);
create unique index if not exists sso_providers_resource_id_idx on auth.sso_providers (lower(resource_id));
create index if not exists sso_providers_resource_id_pattern_idx on auth.sso_providers (resource_id text_pattern_ops);

create table if not exists auth.sso_domains (
  id uuid not null,
  sso_provider_id uuid not null,
  domain text not null,
  created_at timestamptz,
  updated_at timestamptz,
  constraint sso_domains_pkey primary key (id),
  constraint sso_domains_sso_provider_id_fkey foreign key (sso_provider_id)
    references auth.sso_providers (id) on delete cascade,
  constraint "domain not empty" check (char_length(domain) > 0)
);
create index if not exists sso_domains_sso_provider_id_idx on auth.sso_domains (sso_provider_id);
create unique index if not exists sso_domains_domain_idx on auth.sso_domains (lower(domain));

create table if not exists auth.saml_providers (
  id uuid not null,
  sso_provider_id uuid not null,
  entity_id text not null,
  metadata_xml text not null,
  metadata_url text,
  attribute_mapping jsonb,
  created_at timestamptz,
  updated_at timestamptz,
  name_id_format text,
  constraint saml_providers_pkey primary key (id),
  constraint saml_providers_entity_id_key unique (entity_id),
  constraint saml_providers_sso_provider_id_fkey foreign key (sso_provider_id)
    references auth.sso_providers (id) on delete cascade,
  constraint "metadata_xml not empty" check (char_length(metadata_xml) > 0),
  constraint "metadata_url not empty" check (metadata_url = null or char_length(metadata_url) > 0),
  constraint "entity_id not empty" check (char_length(entity_id) > 0)
);
create index if not exists saml_providers_sso_provider_id_idx on auth.saml_providers (sso_provider_id);

create table if not exists auth.saml_relay_states (
  id uuid not null,
  sso_provider_id uuid not null,
  request_id text not null,
  for_email text,
  redirect_to text,
  created_at timestamptz,
  updated_at timestamptz,
  flow_state_id uuid,
  constraint saml_relay_states_pkey primary key (id),
  constraint saml_relay_states_sso_provider_id_fkey foreign key (sso_provider_id)
    references auth.sso_providers (id) on delete cascade,
  constraint saml_relay_states_flow_state_id_fkey foreign key (flow_state_id)
    references auth.flow_state (id) on delete cascade,
  constraint "request_id not empty" check (char_length(request_id) > 0)
);
create index if not exists saml_relay_states_sso_provider_id_idx on auth.saml_relay_states (sso_provider_id);
create index if not exists saml_relay_states_for_email_idx on auth.saml_relay_states (for_email);
create index if not exists saml_relay_states_created_at_idx on auth.saml_relay_states (created_at desc);

-- Owner, row level security, privileges ----------------------------------------------------------

-- No-ops where supabase_auth_admin owns them already (a database migrated by GoTrue).
alter table auth.users owner to supabase_auth_admin;
alter table auth.identities owner to supabase_auth_admin;
alter table auth.sessions owner to supabase_auth_admin;
alter table auth.refresh_tokens owner to supabase_auth_admin;
alter table auth.mfa_factors owner to supabase_auth_admin;
alter table auth.mfa_challenges owner to supabase_auth_admin;
alter table auth.mfa_amr_claims owner to supabase_auth_admin;
alter table auth.one_time_tokens owner to supabase_auth_admin;
alter table auth.flow_state owner to supabase_auth_admin;
alter table auth.audit_log_entries owner to supabase_auth_admin;
alter table auth.instances owner to supabase_auth_admin;
alter table auth.schema_migrations owner to supabase_auth_admin;
alter table auth.sso_providers owner to supabase_auth_admin;
alter table auth.sso_domains owner to supabase_auth_admin;
alter table auth.saml_providers owner to supabase_auth_admin;
alter table auth.saml_relay_states owner to supabase_auth_admin;
alter type auth.aal_level owner to supabase_auth_admin;
alter type auth.factor_type owner to supabase_auth_admin;
alter type auth.factor_status owner to supabase_auth_admin;
alter type auth.code_challenge_method owner to supabase_auth_admin;
alter type auth.one_time_token_type owner to supabase_auth_admin;
alter function auth.uid() owner to supabase_auth_admin;
alter function auth.role() owner to supabase_auth_admin;
alter function auth.email() owner to supabase_auth_admin;
alter function auth.jwt() owner to supabase_auth_admin;

-- Enabled without policies, as on Supabase: only the owner (and roles that bypass RLS) read them.
alter table auth.users enable row level security;
alter table auth.identities enable row level security;
alter table auth.sessions enable row level security;
alter table auth.refresh_tokens enable row level security;
alter table auth.mfa_factors enable row level security;
alter table auth.mfa_challenges enable row level security;
alter table auth.mfa_amr_claims enable row level security;
alter table auth.one_time_tokens enable row level security;
alter table auth.flow_state enable row level security;
alter table auth.audit_log_entries enable row level security;
alter table auth.instances enable row level security;
alter table auth.schema_migrations enable row level security;
alter table auth.sso_providers enable row level security;
alter table auth.sso_domains enable row level security;
alter table auth.saml_providers enable row level security;
alter table auth.saml_relay_states enable row level security;

-- The administrators get everything (Supabase's dashboard_user, and `postgres` where it exists
-- without being a superuser, as on Supabase); anon, authenticated and service_role get nothing.
grant all on all tables in schema auth to dashboard_user;
grant all on all sequences in schema auth to dashboard_user;
grant all on all routines in schema auth to dashboard_user;
do $$
begin
  if exists (select 1 from pg_catalog.pg_roles where rolname = 'postgres' and not rolsuper) then
    grant usage on schema auth to postgres;
    grant all on all tables in schema auth to postgres;
    grant all on all sequences in schema auth to postgres;
    grant all on all routines in schema auth to postgres;
  end if;
end
$$;

-- MadBase's pool logs in as authenticator and runs the Auth service's statements as
-- supabase_auth_admin.
grant supabase_auth_admin to authenticator;

-- The search path of seeds and SQL sessions ------------------------------------------------------
-- Supabase's `postgres` role resolves names in `extensions` (pgcrypto's crypt, gen_salt, …) without
-- a schema; MadBase gives the database that default unless it already has its own. It applies to
-- sessions that start afterwards.

do $$
declare
  owner_or_super boolean := (
    select r.rolsuper or d.datdba = r.oid
    from pg_catalog.pg_database d, pg_catalog.pg_roles r
    where d.datname = pg_catalog.current_database() and r.rolname = current_user
  );
begin
  if exists (
    select 1 from pg_catalog.pg_db_role_setting s join pg_catalog.pg_database d on d.oid = s.setdatabase
    where d.datname = pg_catalog.current_database() and s.setrole = 0
      and exists (select 1 from pg_catalog.unnest(s.setconfig) as c where c like 'search_path=%')
  ) then
    return;
  end if;
  if not owner_or_super then
    raise warning 'MadBase: % neither owns database % nor is a superuser, so its search_path does not '
                  'include extensions; qualify extension functions (extensions.crypt)',
      current_user, pg_catalog.current_database();
    return;
  end if;
  execute pg_catalog.format('alter database %I set search_path = "$user", public, extensions',
                            pg_catalog.current_database());
end
$$;

-- GoTrue's JSON ----------------------------------------------------------------------------------
-- What Supabase Auth answers for a user (`GET /auth/v1/user`, sessions, admin endpoints), with
-- GoTrue's keys in GoTrue's order and its `omitempty` rules. Built as text and cast to json (jsonb
-- would reorder the keys). Metadata objects are the stored jsonb, nulls and all (jsonb orders their
-- keys by length, then bytes; GoTrue's Go maps by bytes: only the order differs). A NULL that Go
-- would print as its zero value is printed so: "" for strings, 0001-01-01T00:00:00Z for times.
--
-- PL/pgSQL, not SQL: with `set search_path` no function can be inlined, and a SQL function that is
-- not inlined plans its body again on every call (about 1 ms per user here, against about 0.1 ms
-- for PL/pgSQL, which keeps its plans for the session).

-- Go's time.RFC3339Nano in UTC: microseconds without trailing zeros, no fraction when zero
-- (2024-01-01T00:00:00.1234Z, 2024-01-01T00:00:00Z); JSON's timestamp text is exactly that, less
-- the zone. NULL, infinity and -infinity give NULL.
create or replace function _madbase.auth_time(t timestamptz) returns text
language plpgsql stable strict
set search_path = ''
as $$
begin
  return case when pg_catalog.isfinite(t)
              then pg_catalog.btrim(pg_catalog.to_json(t at time zone 'UTC')::text, '"') || 'Z' end;
end
$$;

-- identity_id, id (the provider's id for the user), user_id, identity_data (omitted when empty),
-- provider, last_sign_in_at?, created_at, updated_at, email?.
create or replace function _madbase.auth_identity_json(i auth.identities) returns json
language plpgsql stable
set search_path = ''
as $$
begin
  return (
    '{"identity_id":"' || i.id || '"'
    || ',"id":' || pg_catalog.to_json(i.provider_id)
    || ',"user_id":"' || i.user_id || '"'
    || case when pg_catalog.jsonb_typeof(i.identity_data) = 'object' and i.identity_data <> '{}'
            then ',"identity_data":' || i.identity_data::text else '' end
    || ',"provider":' || pg_catalog.to_json(i.provider)
    || coalesce(',"last_sign_in_at":"' || _madbase.auth_time(i.last_sign_in_at) || '"', '')
    || ',"created_at":"' || coalesce(_madbase.auth_time(i.created_at), '0001-01-01T00:00:00Z') || '"'
    || ',"updated_at":"' || coalesce(_madbase.auth_time(i.updated_at), '0001-01-01T00:00:00Z') || '"'
    || coalesce(',"email":' || pg_catalog.to_json(nullif(i.email, '')), '')
    || '}'
  )::json;
end
$$;

-- id, created_at, updated_at, status, friendly_name (omitted when empty), factor_type, phone ("" for
-- other factors), last_challenged_at (null until challenged), web_authn_aaguid?,
-- last_webauthn_challenge_data?.
create or replace function _madbase.auth_factor_json(f auth.mfa_factors) returns json
language plpgsql stable
set search_path = ''
as $$
begin
  return (
    '{"id":"' || f.id || '"'
    || ',"created_at":"' || coalesce(_madbase.auth_time(f.created_at), '0001-01-01T00:00:00Z') || '"'
    || ',"updated_at":"' || coalesce(_madbase.auth_time(f.updated_at), '0001-01-01T00:00:00Z') || '"'
    || ',"status":"' || f.status || '"'
    || coalesce(',"friendly_name":' || pg_catalog.to_json(nullif(f.friendly_name, '')), '')
    || ',"factor_type":"' || f.factor_type || '"'
    || ',"phone":' || pg_catalog.to_json(coalesce(f.phone, ''))
    || ',"last_challenged_at":' || coalesce('"' || _madbase.auth_time(f.last_challenged_at) || '"', 'null')
    || coalesce(',"web_authn_aaguid":"' || f.web_authn_aaguid || '"', '')
    || coalesce(',"last_webauthn_challenge_data":' || f.last_webauthn_challenge_data::text, '')
    || '}'
  )::json;
end
$$;

-- id, aud, role, email, email_confirmed_at?, invited_at?, phone, phone_confirmed_at?,
-- confirmation_sent_at?, confirmed_at?, recovery_sent_at?, new_email?, email_change_sent_at?,
-- new_phone?, phone_change_sent_at?, reauthentication_sent_at?, last_sign_in_at?, app_metadata,
-- user_metadata, factors? (by created_at), identities (by created_at, [] when none), created_at,
-- updated_at, banned_until?, deleted_at?, is_anonymous. `?`: omitted when NULL (or '').
create or replace function _madbase.auth_user_json(u auth.users) returns json
language plpgsql stable
set search_path = ''
as $$
declare
  factors text;
  identities text;
begin
  select pg_catalog.string_agg(_madbase.auth_factor_json(f)::text, ',' order by f.created_at, f.id)
    into factors
    from auth.mfa_factors f where f.user_id = u.id;
  select pg_catalog.string_agg(_madbase.auth_identity_json(i)::text, ',' order by i.created_at, i.id)
    into identities
    from auth.identities i where i.user_id = u.id;
  return (
    '{"id":"' || u.id || '"'
    || ',"aud":' || pg_catalog.to_json(coalesce(u.aud, '')::text)
    || ',"role":' || pg_catalog.to_json(coalesce(u.role, '')::text)
    || ',"email":' || pg_catalog.to_json(coalesce(u.email, '')::text)
    || coalesce(',"email_confirmed_at":"' || _madbase.auth_time(u.email_confirmed_at) || '"', '')
    || coalesce(',"invited_at":"' || _madbase.auth_time(u.invited_at) || '"', '')
    || ',"phone":' || pg_catalog.to_json(coalesce(u.phone, ''))
    || coalesce(',"phone_confirmed_at":"' || _madbase.auth_time(u.phone_confirmed_at) || '"', '')
    || coalesce(',"confirmation_sent_at":"' || _madbase.auth_time(u.confirmation_sent_at) || '"', '')
    || coalesce(',"confirmed_at":"' || _madbase.auth_time(u.confirmed_at) || '"', '')
    || coalesce(',"recovery_sent_at":"' || _madbase.auth_time(u.recovery_sent_at) || '"', '')
    || coalesce(',"new_email":' || pg_catalog.to_json(nullif(u.email_change, '')::text), '')
    || coalesce(',"email_change_sent_at":"' || _madbase.auth_time(u.email_change_sent_at) || '"', '')
    || coalesce(',"new_phone":' || pg_catalog.to_json(nullif(u.phone_change, '')), '')
    || coalesce(',"phone_change_sent_at":"' || _madbase.auth_time(u.phone_change_sent_at) || '"', '')
    || coalesce(',"reauthentication_sent_at":"' || _madbase.auth_time(u.reauthentication_sent_at) || '"', '')
    || coalesce(',"last_sign_in_at":"' || _madbase.auth_time(u.last_sign_in_at) || '"', '')
    || ',"app_metadata":'
    || case when pg_catalog.jsonb_typeof(u.raw_app_meta_data) = 'object' then u.raw_app_meta_data::text else '{}' end
    || ',"user_metadata":'
    || case when pg_catalog.jsonb_typeof(u.raw_user_meta_data) = 'object' then u.raw_user_meta_data::text else '{}' end
    || coalesce(',"factors":[' || factors || ']', '')
    || ',"identities":[' || coalesce(identities, '') || ']'
    || ',"created_at":"' || coalesce(_madbase.auth_time(u.created_at), '0001-01-01T00:00:00Z') || '"'
    || ',"updated_at":"' || coalesce(_madbase.auth_time(u.updated_at), '0001-01-01T00:00:00Z') || '"'
    || coalesce(',"banned_until":"' || _madbase.auth_time(u.banned_until) || '"', '')
    || coalesce(',"deleted_at":"' || _madbase.auth_time(u.deleted_at) || '"', '')
    || ',"is_anonymous":' || case when u.is_anonymous then 'true' else 'false' end
    || '}'
  )::json;
end
$$;

revoke all on function _madbase.auth_time(timestamptz), _madbase.auth_identity_json(auth.identities),
  _madbase.auth_factor_json(auth.mfa_factors), _madbase.auth_user_json(auth.users) from public;
grant usage on schema _madbase to supabase_auth_admin;
grant execute on function _madbase.auth_time(timestamptz), _madbase.auth_identity_json(auth.identities),
  _madbase.auth_factor_json(auth.mfa_factors), _madbase.auth_user_json(auth.users) to supabase_auth_admin;
