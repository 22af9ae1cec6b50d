//! Reading the schema cache from PostgreSQL's catalog.
//!
//! Owns the introspection SQL and its parsing into a [`SchemaCache`].
//!
//! Shape: **one statement, one round trip, set-based** — CTEs over `pg_class`, `pg_attribute`,
//! `pg_attrdef`, `pg_constraint`, `pg_proc`, `pg_type`/`pg_enum` restricted to the exposed
//! schemas, each aggregated by `json_agg` into compact positional arrays, and one
//! `json_build_object` around them (a single text cell). Nothing is queried per table, so the cost
//! grows linearly with the catalog (10,000 tables load in well under a few seconds). Columns and
//! keys are joined to their relation in Rust by oid / name.
//!
//! Invariants: the exposed schema names are the only values inlined into the SQL, as quoted
//! literals (`'` doubled, NUL refused); parsing never panics on what the server sends — anything
//! unexpected is an [`IntrospectError`].

use std::collections::HashMap;

use madbase_pg::{Connection, PgError};
use serde::Deserialize;

use super::relationships::{self, ComputedRelationship, QualifiedName};
use super::view_lineage;
use super::{ArgMode, Column, ForeignKey, Function, FunctionArg, Relation, RelationKind, SchemaCache, Volatility};

/// Why the schema cache could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IntrospectError {
    #[error("schema introspection query failed: {0}")]
    Query(#[from] PgError),
    #[error("schema introspection returned no document")]
    NoResult,
    #[error("schema introspection document is not what was expected: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid exposed schema name {0:?}")]
    SchemaName(String),
}

/// `pg_relation_is_updatable` event bits (1 << CmdType).
const CAN_UPDATE: i32 = 1 << 2;
const CAN_INSERT: i32 = 1 << 3;
const CAN_DELETE: i32 = 1 << 4;

/// Views over views are followed this many levels to their base table.
const MAX_VIEW_NESTING: usize = 8;

/// Who the introspection is for: the role the API pools log in as (whose `pgrst.*` settings are
/// read and whose member roles' settings are applied per request), and the server's major version.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub login_role: &'a str,
    /// PostgreSQL 15 added `has_parameter_privilege` (a role may be granted `SET` on a
    /// superuser-context setting); before it only `user`-context settings apply.
    pub server_major: u32,
}

impl Target<'_> {
    /// The major version from a connection's `server_version` parameter ("15.18 (Debian …)").
    pub fn major_of(conn: &Connection) -> u32 {
        conn.parameter("server_version")
            .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next().and_then(|m| m.parse().ok()))
            .unwrap_or(0)
    }
}

/// The introspection statement for `schemas`.
pub fn query(schemas: &[impl AsRef<str>], target: Target<'_>) -> Result<String, IntrospectError> {
    let mut list = String::new();
    for (i, schema) in schemas.iter().enumerate() {
        let schema = schema.as_ref();
        if schema.contains('\0') {
            return Err(IntrospectError::SchemaName(schema.to_owned()));
        }
        if i > 0 {
            list.push_str(", ");
        }
        list.push('\'');
        list.push_str(&schema.replace('\'', "''"));
        list.push('\'');
    }
    if target.login_role.contains('\0') {
        return Err(IntrospectError::SchemaName(target.login_role.to_owned()));
    }
    let login = format!("'{}'", target.login_role.replace('\'', "''"));
    let settable = if target.server_major >= 15 {
        "ps.context = 'user' or has_parameter_privilege($LOGIN, ps.name, 'SET')"
    } else {
        "ps.context = 'user'"
    };
    let settable = settable.replace("$LOGIN", &login);
    Ok(fill(QUERY, &[("$SCHEMAS", &list), ("$LOGIN", &login), ("$SETTABLE", &settable)]))
}

/// Replaces each placeholder in one pass, so a value that contains a placeholder's name (a
/// schema called `$LOGIN`) is never substituted again.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match values.iter().find(|(name, _)| rest.starts_with(name)) {
            Some((name, value)) => {
                out.push_str(value);
                rest = &rest[name.len()..];
            }
            None => {
                out.push('$');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// One statement; `$SCHEMAS` is replaced by the quoted schema list, `$LOGIN` by the quoted login
/// role and `$SETTABLE` by the condition for a setting a role may set. Every `json_agg` over no rows
/// is `null`, which parses as an empty list.
const QUERY: &str = r#"
with
exposed(nspname) as (select unnest(array[$SCHEMAS]::text[])),
rels as materialized (
  select c.oid, n.nspname, c.relname, c.relkind::text as relkind,
         pg_relation_is_updatable(c.oid::regclass, true) as upd
  from pg_class c
  join pg_namespace n on n.oid = c.relnamespace
  where n.nspname in (select nspname from exposed)
    and c.relkind in ('r', 'p', 'v', 'm', 'f')
    and not c.relispartition
),
cols as (
  select json_agg(json_build_array(
           a.attrelid::int8, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
           not a.attnotnull,
           -- PostgREST's column default: a domain's own default, an identity column's sequence
           -- (`by default` only), none for a generated column, else the column's default.
           case
             when t.typbasetype <> 0 and d.adbin is null then pg_get_expr(t.typdefaultbin, 0)
             when a.attidentity = 'd' then
               (select format('nextval(%L)', dep.objid::regclass) from pg_depend dep
                where dep.classid = 'pg_class'::regclass and dep.refobjid = a.attrelid
                  and dep.refobjsubid = a.attnum and dep.deptype = 'i' limit 1)
             when a.attgenerated <> '' then null
             else pg_get_expr(d.adbin, d.adrelid)
           end,
           a.attgenerated <> '', a.attidentity <> '')
         order by a.attrelid, a.attnum) as j
  from pg_attribute a
  join rels r on r.oid = a.attrelid
  join pg_type t on t.oid = a.atttypid
  left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
  where a.attnum > 0 and not a.attisdropped
),
keys as (
  select json_agg(json_build_array(
           con.contype::text, con.conname, cn.nspname, cc.relname,
           (select json_agg(a.attname order by k.i)
              from unnest(con.conkey) with ordinality k(attnum, i)
              join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum),
           fn.nspname, fc.relname,
           (select json_agg(a.attname order by k.i)
              from unnest(con.confkey) with ordinality k(attnum, i)
              join pg_attribute a on a.attrelid = con.confrelid and a.attnum = k.attnum))
         order by con.conname) as j
  from pg_constraint con
  join pg_class cc on cc.oid = con.conrelid
  join pg_namespace cn on cn.oid = cc.relnamespace
  left join pg_class fc on fc.oid = con.confrelid
  left join pg_namespace fn on fn.oid = fc.relnamespace
  where con.conparentid = 0
    and ((con.contype in ('p', 'u') and con.conrelid in (select oid from rels))
      or (con.contype = 'f' and (con.conrelid in (select oid from rels) or con.confrelid in (select oid from rels))))
),
funcs as (
  select json_agg(json_build_array(
           n.nspname, p.proname,
           coalesce((select json_agg(json_build_array(coalesce(p.proargnames[x.i::int], ''), format_type(x.t, null), x.m::text)
                                     order by x.i)
                       from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]),
                                   coalesce(p.proargmodes, array_fill('i'::"char", array[p.pronargs::int])))
                            with ordinality x(t, m, i)), '[]'::json),
           p.pronargdefaults, format_type(p.prorettype, null), rn.nspname, rc.relname,
           p.proretset, p.provolatile::text, p.provariadic <> 0)
         order by n.nspname, p.proname, p.oid) as j
  from pg_proc p
  join pg_namespace n on n.oid = p.pronamespace
  join pg_type rt on rt.oid = p.prorettype
  left join pg_class rc on rc.oid = rt.typrelid
  left join pg_namespace rn on rn.oid = rc.relnamespace
  where n.nspname in (select nspname from exposed) and p.prokind = 'f'
    and p.prorettype <> 'trigger'::regtype
    -- PostgREST's `callable`: no unnamed input argument (proargnames is null only when every
    -- argument is unnamed), or exactly one, of type bytea, json, jsonb, text or xml.
    and (p.proargnames is not null or p.pronargs = 0
      or (p.pronargs = 1 and p.proargtypes[0] in ('bytea'::regtype, 'json'::regtype, 'jsonb'::regtype,
                                                  'text'::regtype, 'xml'::regtype)))
),
comprels as (
  -- Computed relationships: `f(<row of a relation>) returns [setof] <row of a relation>`; to-one
  -- when it returns a single row or is declared `rows 1`.
  select json_agg(json_build_array(n.nspname, p.proname, an.nspname, ac.relname, rn.nspname, rc.relname,
                                   not p.proretset or p.prorows = 1)
         order by n.nspname, p.proname, p.oid) as j
  from pg_proc p
  join pg_namespace n on n.oid = p.pronamespace
  join pg_type at on at.oid = p.proargtypes[0]
  join pg_class ac on ac.oid = at.typrelid
  join pg_namespace an on an.oid = ac.relnamespace
  join pg_type rt on rt.oid = p.prorettype
  join pg_class rc on rc.oid = rt.typrelid
  join pg_namespace rn on rn.oid = rc.relnamespace
  where n.nspname in (select nspname from exposed) and p.prokind = 'f' and p.pronargs = 1
    and ac.relkind in ('r', 'p', 'v', 'm', 'f') and rc.relkind in ('r', 'p', 'v', 'm', 'f')
),
views as (
  select json_agg(json_build_array(c.oid::int8, r.ev_action::text)) as j
  from rels c
  join pg_rewrite r on r.ev_class = c.oid and r.rulename = '_RETURN'
  where c.relkind in ('v', 'm')
),
settings as (
  -- PostgREST's in-database configuration: `alter role authenticator set pgrst.<key> = …`.
  select json_agg(json_build_array(split_part(cfg, '=', 1), substr(cfg, strpos(cfg, '=') + 1))
                  order by s.setdatabase) as j
  from pg_db_role_setting s
  cross join lateral unnest(s.setconfig) as cfg
  where s.setrole = (select oid from pg_roles where rolname = $LOGIN)
    and s.setdatabase in (0, (select oid from pg_database where datname = current_database()))
    and cfg like 'pgrst.%'
),
role_settings as (
  -- `alter role anon set statement_timeout = '3s'`: a role's own settings, which `SET ROLE`
  -- (here `set_config('role', …)`) does not apply, so each request sets them, as PostgREST ≥ 11.1
  -- does: every role the login role can become, cluster-wide settings (`rolconfig`), values
  -- lower-cased, only settings the role may set; the isolation level is not a setting.
  select json_agg(json_build_array(r.rolname, kv.key, kv.value) order by r.rolname, cfg.ord) as j
  from pg_roles r
  cross join lateral unnest(r.rolconfig) with ordinality as cfg(setting, ord)
  cross join lateral (select substr(cfg.setting, 1, strpos(cfg.setting, '=') - 1) as key,
                             lower(substr(cfg.setting, strpos(cfg.setting, '=') + 1)) as value) kv
  join pg_settings ps on ps.name = kv.key and ($SETTABLE)
  where r.rolname <> $LOGIN and pg_has_role($LOGIN, r.oid, 'MEMBER')
    and kv.key <> 'default_transaction_isolation'
),
enums as (
  select json_agg(json_build_array(n.nspname, t.typname,
           (select json_agg(e.enumlabel order by e.enumsortorder) from pg_enum e where e.enumtypid = t.oid))) as j
  from pg_type t
  join pg_namespace n on n.oid = t.typnamespace
  where t.typtype = 'e' and n.nspname in (select nspname from exposed)
)
select json_build_object(
  'schemas', (select json_agg(nspname) from exposed),
  'relations', (select json_agg(json_build_array(oid::int8, nspname, relname, relkind, upd)) from rels),
  'columns', (select j from cols),
  'keys', (select j from keys),
  'functions', (select j from funcs),
  'computed', (select j from comprels),
  'settings', (select j from settings),
  'role_settings', (select j from role_settings),
  'views', (select j from views),
  'enums', (select j from enums)
)::text
"#;

/// Runs the introspection statement on `conn` and returns the raw document (parse it with
/// [`parse`], on a blocking thread when the schema may be large).
pub async fn fetch(
    conn: &Connection,
    schemas: &[impl AsRef<str>],
    login_role: &str,
) -> Result<String, IntrospectError> {
    let sql = query(schemas, Target { login_role, server_major: Target::major_of(conn) })?;
    let results = conn.simple_query(&sql).await?;
    results
        .into_iter()
        .find(|r| !r.columns.is_empty())
        .and_then(|r| r.rows.into_iter().next())
        .and_then(|row| row.get_str(0).map(str::to_owned))
        .ok_or(IntrospectError::NoResult)
}

/// Fetches and parses in one go (start-up, where nothing else runs on the thread).
pub async fn load(
    conn: &Connection,
    schemas: &[impl AsRef<str>],
    login_role: &str,
) -> Result<SchemaCache, IntrospectError> {
    let document = fetch(conn, schemas, login_role).await?;
    parse(&document)
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    schemas: Option<Vec<String>>,
    #[serde(default)]
    relations: Option<Vec<RawRelation>>,
    #[serde(default)]
    columns: Option<Vec<RawColumn>>,
    #[serde(default)]
    keys: Option<Vec<RawKey>>,
    #[serde(default)]
    functions: Option<Vec<RawFunction>>,
    #[serde(default)]
    enums: Option<Vec<RawEnum>>,
    #[serde(default)]
    computed: Option<Vec<RawComputed>>,
    #[serde(default)]
    settings: Option<Vec<(String, String)>>,
    /// role, setting, value
    #[serde(default)]
    role_settings: Option<Vec<(String, String, String)>>,
    /// view oid, `ev_action` text
    #[serde(default)]
    views: Option<Vec<(i64, String)>>,
}

/// oid, schema, name, relkind, pg_relation_is_updatable
#[derive(Deserialize)]
struct RawRelation(i64, String, String, String, i32);

/// relid, attnum, name, type, nullable, default, generated, identity
#[derive(Deserialize)]
struct RawColumn(i64, i16, String, String, bool, Option<String>, bool, bool);

/// contype, name, schema, table, columns, foreign schema, foreign table, foreign columns
#[derive(Deserialize)]
struct RawKey(String, String, String, String, Option<Vec<String>>, Option<String>, Option<String>, Option<Vec<String>>);

/// schema, name, args (name, type, mode), n defaults, return type, return relation schema/name,
/// returns set, volatility, variadic
#[derive(Deserialize)]
struct RawFunction(
    String,
    String,
    Vec<(String, String, String)>,
    i16,
    String,
    Option<String>,
    Option<String>,
    bool,
    String,
    bool,
);

/// function schema, function name, argument relation schema/name, returned relation schema/name, to-one
#[derive(Deserialize)]
struct RawComputed(String, String, String, String, String, String, bool);

/// schema, name, labels
#[derive(Deserialize)]
struct RawEnum(String, String, Option<Vec<String>>);

/// Relation oid → (schema, name): how columns and view lineage, which the document keys by oid,
/// find their relation.
type RelationsByOid = HashMap<i64, (String, String)>;

/// Builds a snapshot from the introspection document.
pub fn parse(document: &str) -> Result<SchemaCache, IntrospectError> {
    let raw: Raw = serde_json::from_str(document)?;
    let mut cache = SchemaCache::default();
    for schema in raw.schemas.unwrap_or_default() {
        cache.schemas.entry(schema).or_default();
    }
    let by_oid = add_relations(&mut cache, raw.relations.unwrap_or_default());
    add_columns(&mut cache, &by_oid, raw.columns.unwrap_or_default());
    add_keys(&mut cache, raw.keys.unwrap_or_default());
    add_functions(&mut cache, raw.functions.unwrap_or_default());
    for RawEnum(schema, name, labels) in raw.enums.unwrap_or_default() {
        cache.schemas.entry(schema).or_default().enums.insert(name, labels.unwrap_or_default());
    }
    add_settings(&mut cache, raw.settings.unwrap_or_default(), raw.role_settings.unwrap_or_default());

    let computed = computed_relationships(raw.computed.unwrap_or_default());
    let view_columns = resolve_view_columns(&cache, &by_oid, raw.views.unwrap_or_default());
    cache.relationships =
        relationships::derive(&cache.foreign_keys, &computed, &view_columns, |s, n| cache.relation(s, n));
    Ok(cache)
}

/// Adds each relation (without columns or keys yet) to its schema.
fn add_relations(cache: &mut SchemaCache, relations: Vec<RawRelation>) -> RelationsByOid {
    let mut by_oid = RelationsByOid::with_capacity(relations.len());
    for RawRelation(oid, schema, name, relkind, updatable) in relations {
        // Only the kinds the query selects can come back; anything else is skipped.
        let Some(kind) = RelationKind::from_relkind(&relkind) else { continue };
        by_oid.insert(oid, (schema.clone(), name.clone()));
        let relation = Relation {
            schema: schema.clone(),
            name: name.clone(),
            kind,
            insertable: updatable & CAN_INSERT != 0,
            updatable: updatable & CAN_UPDATE != 0,
            deletable: updatable & CAN_DELETE != 0,
            columns: Vec::new(),
            primary_key: Vec::new(),
            unique_keys: Vec::new(),
        };
        cache.schemas.entry(schema).or_default().relations.insert(name, relation);
    }
    by_oid
}

/// Appends each column to its relation, in `attnum` order (the order the query sends).
fn add_columns(cache: &mut SchemaCache, by_oid: &RelationsByOid, columns: Vec<RawColumn>) {
    for RawColumn(relid, position, name, type_name, nullable, default, generated, identity) in columns {
        let Some(relation) = by_oid.get(&relid).and_then(|(s, n)| relation_mut(cache, s, n)) else { continue };
        relation.columns.push(Column { name, position, type_name, nullable, default, generated, identity });
    }
}

/// Primary and unique keys go to their relation; foreign keys to the snapshot's list, dropping
/// any whose two column lists differ in length (they could not be paired).
fn add_keys(cache: &mut SchemaCache, keys: Vec<RawKey>) {
    for RawKey(contype, constraint, schema, table, columns, foreign_schema, foreign_table, foreign_columns) in keys {
        let columns = columns.unwrap_or_default();
        match contype.as_str() {
            "p" => {
                if let Some(relation) = relation_mut(cache, &schema, &table) {
                    relation.primary_key = columns;
                }
            }
            "u" => {
                if let Some(relation) = relation_mut(cache, &schema, &table) {
                    relation.unique_keys.push(columns);
                }
            }
            "f" => {
                let (Some(foreign_schema), Some(foreign_table)) = (foreign_schema, foreign_table) else { continue };
                let foreign_columns = foreign_columns.unwrap_or_default();
                if foreign_columns.len() != columns.len() {
                    continue;
                }
                cache.foreign_keys.push(ForeignKey {
                    constraint,
                    schema,
                    table,
                    foreign_schema,
                    foreign_table,
                    columns: columns.into_iter().zip(foreign_columns).collect(),
                });
            }
            _ => {}
        }
    }
}

/// Adds each function to its schema's overloads of its name, then sorts every overload list into
/// PostgREST's order.
fn add_functions(cache: &mut SchemaCache, functions: Vec<RawFunction>) {
    for raw in functions {
        let function = function(raw);
        cache
            .schemas
            .entry(function.schema.clone())
            .or_default()
            .functions
            .entry(function.name.clone())
            .or_default()
            .push(function);
    }
    for objects in cache.schemas.values_mut() {
        for overloads in objects.functions.values_mut() {
            overloads.sort_by(overload_order);
        }
    }
}

/// The login role's `pgrst.*` settings (prefix stripped) and its member roles' own settings.
fn add_settings(
    cache: &mut SchemaCache,
    settings: Vec<(String, String)>,
    role_settings: Vec<(String, String, String)>,
) {
    // Database-specific settings come last, so they override role-wide ones.
    for (key, value) in settings {
        if let Some(key) = key.strip_prefix("pgrst.") {
            cache.db_settings.insert(key.to_owned(), value);
        }
    }
    for (role, key, value) in role_settings {
        cache.role_settings.entry(role).or_default().push((key, value));
    }
}

fn computed_relationships(computed: Vec<RawComputed>) -> Vec<ComputedRelationship> {
    computed
        .into_iter()
        .map(|RawComputed(fs, f, os, o, ts, t, to_one)| ComputedRelationship {
            function: QualifiedName { schema: fs, name: f },
            origin: QualifiedName { schema: os, name: o },
            target: QualifiedName { schema: ts, name: t },
            to_one,
        })
        .collect()
}

/// View columns that show a base column unchanged, resolved to names (views of views through
/// their inner view's own lineage, a few levels deep). `views` is (view oid, `ev_action`).
fn resolve_view_columns(
    cache: &SchemaCache,
    by_oid: &RelationsByOid,
    views: Vec<(i64, String)>,
) -> Vec<relationships::ViewColumn> {
    let mut lineage: HashMap<(i64, i16), (i64, i16)> = HashMap::new();
    let mut view_names: Vec<(i64, String, i16)> = Vec::new();
    for (view, action) in views {
        let Some((schema, name)) = by_oid.get(&view) else { continue };
        let Some(relation) = cache.relation(schema, name) else { continue };
        for column in view_lineage::view_columns(&action) {
            let Some(own) = relation.column(&column.name) else { continue };
            lineage.insert((view, own.position), (column.origin_relation, column.origin_column));
            view_names.push((view, column.name, own.position));
        }
    }
    let mut view_columns = Vec::new();
    for (view, column, position) in view_names {
        let mut origin = lineage[&(view, position)];
        for _ in 0..MAX_VIEW_NESTING {
            match lineage.get(&origin) {
                Some(next) => origin = *next,
                None => break,
            }
        }
        let (Some((vs, vn)), Some((os, on))) = (by_oid.get(&view), by_oid.get(&origin.0)) else { continue };
        let Some(origin_column) =
            cache.relation(os, on).and_then(|r| r.columns.iter().find(|c| c.position == origin.1))
        else {
            continue;
        };
        view_columns.push(relationships::ViewColumn {
            view: QualifiedName::new(vs, vn),
            column,
            origin: QualifiedName::new(os, on),
            origin_column: origin_column.name.clone(),
        });
    }
    view_columns
}

/// PostgREST's order of overloads (its `Ord Routine`): fewest input parameters first, then the
/// parameters compared in turn by name, type, required, variadic. Ties keep catalog (oid) order.
fn overload_order(a: &Function, b: &Function) -> std::cmp::Ordering {
    fn key(f: &Function) -> (usize, Vec<(&str, &str, bool, bool)>) {
        let params: Vec<(&str, &str, bool, bool)> = f
            .args
            .iter()
            .filter(|a| matches!(a.mode, ArgMode::In | ArgMode::InOut | ArgMode::Variadic))
            .map(|a| (a.name.as_str(), a.type_name.as_str(), !a.has_default, a.mode == ArgMode::Variadic))
            .collect();
        (params.len(), params)
    }
    key(a).cmp(&key(b))
}

fn relation_mut<'a>(cache: &'a mut SchemaCache, schema: &str, name: &str) -> Option<&'a mut Relation> {
    cache.schemas.get_mut(schema)?.relations.get_mut(name)
}

fn function(raw: RawFunction) -> Function {
    let RawFunction(
        schema,
        name,
        args,
        n_defaults,
        return_type,
        ret_schema,
        ret_table,
        returns_set,
        volatility,
        variadic,
    ) = raw;
    let mut args: Vec<FunctionArg> = args
        .into_iter()
        .map(|(name, type_name, mode)| FunctionArg {
            name,
            type_name,
            mode: match mode.as_str() {
                "o" => ArgMode::Out,
                "b" => ArgMode::InOut,
                "v" => ArgMode::Variadic,
                "t" => ArgMode::Table,
                _ => ArgMode::In,
            },
            has_default: false,
        })
        .collect();
    // `pronargdefaults` counts the last input arguments.
    let defaults = usize::try_from(n_defaults).unwrap_or(0);
    let mut inputs: Vec<&mut FunctionArg> =
        args.iter_mut().filter(|a| matches!(a.mode, ArgMode::In | ArgMode::InOut | ArgMode::Variadic)).collect();
    let first_default = inputs.len().saturating_sub(defaults);
    for arg in inputs.iter_mut().skip(first_default) {
        arg.has_default = true;
    }
    Function {
        schema,
        name,
        args,
        return_type,
        return_relation: ret_schema.zip(ret_table),
        returns_set,
        volatility: match volatility.as_str() {
            "i" => Volatility::Immutable,
            "s" => Volatility::Stable,
            _ => Volatility::Volatile,
        },
        variadic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENT: &str = r#"{
      "schemas": ["public"],
      "relations": [
        [16400, "public", "todos", "r", 28],
        [16410, "public", "todo_view", "v", 20],
        [16420, "public", "stats", "m", 0],
        [16430, "public", "odd", "S", 0]
      ],
      "columns": [
        [16400, 1, "id", "bigint", false, null, false, true],
        [16400, 2, "title", "text", false, "''::text", false, false],
        [16400, 3, "slug", "text", true, null, true, false],
        [16410, 1, "id", "bigint", true, null, false, false],
        [99999, 1, "orphan", "int", true, null, false, false]
      ],
      "keys": [
        ["p", "todos_pkey", "public", "todos", ["id"], null, null, null],
        ["f", "todos_owner_fkey", "public", "todos", ["owner", "team"], "auth", "users", ["id", "team"]],
        ["f", "broken", "public", "todos", ["a"], "public", "x", ["b", "c"]]
      ],
      "functions": [
        ["public", "add", [["a", "integer", "i"], ["b", "integer", "i"], ["", "integer", "o"]], 1, "integer", null, null, false, "i", false],
        ["public", "add", [["a", "text", "i"]], 0, "text", null, null, false, "v", false],
        ["public", "all_todos", [], 0, "todos", "public", "todos", true, "s", false],
        ["public", "sum", [["xs", "integer[]", "v"]], 0, "integer", null, null, false, "i", true]
      ],
      "enums": [["public", "mood", ["sad", "ok", "happy"]]]
    }"#;

    #[test]
    fn parses_the_document() {
        let cache = parse(DOCUMENT).unwrap();
        assert_eq!(cache.relation_count(), 3, "relkind S is skipped");
        let todos = cache.relation("public", "todos").unwrap();
        assert_eq!(todos.kind, RelationKind::Table);
        assert!(todos.insertable && todos.updatable && todos.deletable);
        assert_eq!(todos.columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["id", "title", "slug"]);
        let id = todos.column("id").unwrap();
        assert!(id.identity && !id.nullable && !id.generated);
        assert_eq!(todos.column("title").unwrap().default.as_deref(), Some("''::text"));
        assert!(todos.column("slug").unwrap().generated);
        assert_eq!(todos.primary_key, ["id"]);

        let view = cache.relation("public", "todo_view").unwrap();
        assert_eq!(view.kind, RelationKind::View);
        assert!(!view.insertable && view.updatable && view.deletable); // 20 = update | delete
        let stats = cache.relation("public", "stats").unwrap();
        assert!(!stats.insertable && !stats.updatable && !stats.deletable);
        assert!(cache.relation("public", "nope").is_none());
        assert!(cache.relation("other", "todos").is_none());

        assert_eq!(cache.foreign_keys.len(), 1, "mismatched column lists are dropped");
        let fk = &cache.foreign_keys[0];
        assert_eq!(fk.columns, [("owner".to_owned(), "id".to_owned()), ("team".to_owned(), "team".to_owned())]);
        assert_eq!((fk.foreign_schema.as_str(), fk.foreign_table.as_str()), ("auth", "users"));
        assert_eq!(cache.relationships_of("auth", "users").len(), 1);
        assert_eq!(cache.relationships_of("public", "todos").len(), 1);

        // Overloads in PostgREST's order: fewest input parameters first.
        let add = cache.functions("public", "add");
        assert_eq!(add.len(), 2);
        assert_eq!(add[0].args.len(), 1);
        assert_eq!(add[0].volatility, Volatility::Volatile);
        assert_eq!(add[1].args.iter().map(|a| a.has_default).collect::<Vec<_>>(), [false, true, false]);
        assert_eq!(add[1].args[2].mode, ArgMode::Out);
        assert_eq!(add[1].volatility, Volatility::Immutable);
        let all = &cache.functions("public", "all_todos")[0];
        assert!(all.returns_set);
        assert_eq!(all.return_relation, Some(("public".to_owned(), "todos".to_owned())));
        assert_eq!(all.volatility, Volatility::Stable);
        let sum = &cache.functions("public", "sum")[0];
        assert!(sum.variadic && sum.args[0].mode == ArgMode::Variadic);
        assert!(cache.functions("public", "missing").is_empty());
        assert_eq!(cache.function_count(), 4);

        assert_eq!(cache.enum_labels("public", "mood").unwrap(), ["sad", "ok", "happy"]);
    }

    #[test]
    fn overloads_sorted_as_postgrest_does() {
        let cache = parse(
            r#"{"schemas":["public"],"functions":[
              ["public","f",[["a","text","i"]],0,"text",null,null,false,"i",false],
              ["public","f",[["b","integer","i"],["","integer","o"]],0,"integer",null,null,false,"i",false],
              ["public","f",[["a","integer","i"]],0,"integer",null,null,false,"i",false],
              ["public","f",[["a","integer","i"],["b","integer","i"]],0,"integer",null,null,false,"i",false],
              ["public","f",[],0,"integer",null,null,false,"i",false],
              ["public","f",[["","text","i"]],1,"text",null,null,false,"i",false]
            ]}"#,
        )
        .unwrap();
        let order: Vec<String> = cache
            .functions("public", "f")
            .iter()
            .map(|f| {
                let params: Vec<String> = f
                    .args
                    .iter()
                    .filter(|a| a.mode != ArgMode::Out)
                    .map(|a| format!("{} => {}", a.name, a.type_name))
                    .collect();
                params.join(", ")
            })
            .collect();
        assert_eq!(order, ["", " => text", "a => integer", "a => text", "b => integer", "a => integer, b => integer"]);
    }

    #[test]
    fn callable_filter_is_postgrest_s() {
        let sql = query(&["public"], Target { login_role: "authenticator", server_major: 15 }).unwrap();
        assert!(sql.contains("p.proargnames is not null or p.pronargs = 0"), "{sql}");
        assert!(sql.contains("p.prorettype <> 'trigger'::regtype"), "{sql}");
    }

    #[test]
    fn empty_schema_is_nulls() {
        let cache = parse(
            r#"{"schemas":["public"],"relations":null,"columns":null,"keys":null,"functions":null,"enums":null}"#,
        )
        .unwrap();
        assert_eq!(cache.relation_count(), 0);
        assert!(cache.schemas.contains_key("public"));
        assert_eq!(cache.closest_relation("public", "todos"), None);
    }

    #[test]
    fn malformed_documents_are_errors() {
        assert!(matches!(parse("not json"), Err(IntrospectError::Json(_))));
        assert!(matches!(parse(r#"{"relations":[[1,"public"]]}"#), Err(IntrospectError::Json(_))));
        assert!(matches!(parse(r#"{"relations":[["x","public","t","r",0]]}"#), Err(IntrospectError::Json(_))));
    }

    #[test]
    fn schema_names_are_quoted() {
        let target = Target { login_role: "o'login", server_major: 15 };
        let sql = query(&["public", "it's", "$LOGIN"], target).unwrap();
        assert!(sql.contains("array['public', 'it''s', '$LOGIN']::text[]"));
        assert!(sql.contains("pg_has_role('o''login', r.oid, 'MEMBER')"));
        assert!(sql.contains("has_parameter_privilege('o''login'"));
        assert!(!sql.contains("($LOGIN") && !sql.contains("$SETTABLE"));
        let pg14 = query(&["public"], Target { server_major: 14, ..target }).unwrap();
        assert!(!pg14.contains("has_parameter_privilege"));
        assert!(matches!(query(&["a\0b"], target), Err(IntrospectError::SchemaName(_))));
    }
}
