-- Edge Functions' deployments and secrets. MadBase's own state, in its private schema: only the
-- server's login role reads or writes it (a function's SQL runs as the caller's role, which has
-- no privilege here). Components are kept in the database so that every node of a cluster
-- serves the same versions; each node caches the compiled form on its own disk.

create table if not exists _madbase.functions (
  name text primary key check (name ~ '^[A-Za-z][A-Za-z0-9_-]{0,127}$'),
  -- The version being served; NULL never (a function exists once it has a version).
  active_version integer not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table if not exists _madbase.function_versions (
  name text not null,
  version integer not null check (version > 0),
  sha256 text not null check (sha256 ~ '^[0-9a-f]{64}$'),
  component bytea not null,
  -- verify_jwt, allowed_outbound_hosts, limits (settings::FunctionConfig).
  settings jsonb not null,
  created_at timestamptz not null default now(),
  primary key (name, version)
);

create table if not exists _madbase.function_secrets (
  name text primary key,
  -- ChaCha20-Poly1305 under the master key: nonce || ciphertext || tag, the name as AAD.
  sealed bytea not null,
  -- SHA-256 of the value, hex: what listings show.
  digest text not null,
  updated_at timestamptz not null default now()
);

-- Bumped by every change above: nodes compare it to know when to reload.
create sequence if not exists _madbase.functions_generation;

grant select, insert, update, delete on _madbase.functions, _madbase.function_versions,
  _madbase.function_secrets to authenticator;
grant usage, select, update on sequence _madbase.functions_generation to authenticator;
