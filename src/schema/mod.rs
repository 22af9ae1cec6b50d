//! The schema cache: what the Data API knows about the exposed schemas (reference/rest.md §10).
//!
//! Owns: the [`SchemaCache`] snapshot (relations with their columns, keys and capabilities,
//! foreign keys, functions, enums), how it is read from the catalog ([`introspect`]), how it is
//! kept current ([`reload`]: a `LISTEN pgrst` connection on shard 0), and the fuzzy "Perhaps you
//! meant" suggestion ([`fuzzy`]).
//!
//! Invariants:
//! - a snapshot is immutable once built; nothing ever mutates a `SchemaCache` in place;
//! - it is built off the shards' request path (at start-up before any shard runs; on reload by
//!   the reloader task, parsed on the blocking pool when it can be) and published as a whole
//!   `Arc`: every shard swaps its `Arc` in one assignment (`ShardState::set_schema`);
//! - a request takes the shard's current snapshot once, at its start (a shard-local `Rc` around
//!   the shared `Arc`), and uses it to the end: a reload never blocks a request nor changes what a
//!   running request sees;
//! - a failed reload keeps the previous snapshot (PostgREST's "best effort" reload).

pub mod fuzzy;
pub mod introspect;
pub mod relationships;
pub mod reload;
pub mod view_lineage;

pub use introspect::IntrospectError;

use std::collections::HashMap;
use std::time::SystemTime;

/// The schemas the Data API exposes, the first being the default (PostgREST's `db-schemas`).
pub const EXPOSED_SCHEMAS: &[&str] = &["public"];

/// One immutable snapshot of the exposed schemas.
#[derive(Debug, Default)]
pub struct SchemaCache {
    /// Exposed schema name → its objects. Keyed by (schema, name) through the two levels, so a
    /// lookup borrows `&str`s and allocates nothing.
    pub schemas: HashMap<String, SchemaObjects>,
    /// Foreign keys touching at least one relation of an exposed schema (for embedding).
    pub foreign_keys: Vec<ForeignKey>,
    /// PostgREST's in-database configuration of the API role (`pgrst.db_aggregates_enabled` …),
    /// without the `pgrst.` prefix.
    pub db_settings: HashMap<String, String>,
    /// Every embeddable relationship, by origin relation (derived from the keys and functions).
    pub relationships: relationships::RelationshipIndex,
    #[allow(dead_code)] // read by the Data API as it grows (writes, RPC, embedding)
    /// When this snapshot was read from the catalog.
    pub loaded_at: Option<SystemTime>,
}

/// The objects of one schema.
#[derive(Debug, Default)]
pub struct SchemaObjects {
    pub relations: HashMap<String, Relation>,
    /// Function name → its overloads.
    pub functions: HashMap<String, Vec<Function>>,
    /// Enum type name → its labels in sort order.
    pub enums: HashMap<String, Vec<String>>,
}

/// What kind of relation a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    Table,
    PartitionedTable,
    View,
    MaterializedView,
    ForeignTable,
}

impl RelationKind {
    /// From `pg_class.relkind`.
    pub fn from_relkind(relkind: &str) -> Option<RelationKind> {
        Some(match relkind {
            "r" => RelationKind::Table,
            "p" => RelationKind::PartitionedTable,
            "v" => RelationKind::View,
            "m" => RelationKind::MaterializedView,
            "f" => RelationKind::ForeignTable,
            _ => return None,
        })
    }
}

/// A table, view, materialized view, foreign or partitioned table.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub schema: String,
    pub name: String,
    pub kind: RelationKind,
    /// `pg_relation_is_updatable(oid, true)`: what the relation itself allows (not privileges).
    pub insertable: bool,
    pub updatable: bool,
    pub deletable: bool,
    /// In `attnum` order.
    pub columns: Vec<Column>,
    /// Primary key columns in key order (empty: none).
    pub primary_key: Vec<String>,
    /// The column lists of its unique constraints.
    pub unique_keys: Vec<Vec<String>>,
}

impl Relation {
    #[allow(dead_code)] // read by the Data API as it grows (writes, RPC, embedding)
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// One column of a relation.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// `attnum`.
    pub position: i16,
    /// `format_type(atttypid, atttypmod)`, e.g. `character varying(20)`, `bigint`, `public.mood`.
    pub type_name: String,
    pub nullable: bool,
    /// The default expression (`pg_get_expr`), if any.
    pub default: Option<String>,
    /// A stored generated column (`generated always as (...) stored`): never written.
    pub generated: bool,
    /// An identity column (`generated ... as identity`).
    pub identity: bool,
}

/// A foreign key: `columns[i].0` of `schema.table` references `columns[i].1` of
/// `foreign_schema.foreign_table`.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignKey {
    pub constraint: String,
    pub schema: String,
    pub table: String,
    pub foreign_schema: String,
    pub foreign_table: String,
    pub columns: Vec<(String, String)>,
}

/// `provolatile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Volatility {
    Immutable,
    Stable,
    Volatile,
}

/// `proargmodes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgMode {
    In,
    Out,
    InOut,
    Variadic,
    Table,
}

/// One argument of a function.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionArg {
    /// Empty for an unnamed argument.
    pub name: String,
    pub type_name: String,
    pub mode: ArgMode,
    /// An input argument with a default value (may be omitted in a call).
    pub has_default: bool,
}

/// One function (one overload).
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub schema: String,
    pub name: String,
    /// Every argument in declaration order (input and output).
    pub args: Vec<FunctionArg>,
    /// `format_type(prorettype, null)`.
    pub return_type: String,
    /// The relation the function returns rows of, when its return type is a table's row type.
    pub return_relation: Option<(String, String)>,
    /// `returns setof …` / `returns table (…)`.
    pub returns_set: bool,
    pub volatility: Volatility,
    pub variadic: bool,
}

impl SchemaCache {
    /// The relation `schema.name`, if it is in an exposed schema.
    pub fn relation(&self, schema: &str, name: &str) -> Option<&Relation> {
        self.schemas.get(schema)?.relations.get(name)
    }

    /// The overloads of function `schema.name` (empty when unknown).
    pub fn functions(&self, schema: &str, name: &str) -> &[Function] {
        self.schemas.get(schema).and_then(|s| s.functions.get(name)).map_or(&[], Vec::as_slice)
    }

    #[allow(dead_code)] // read by the Data API as it grows (writes, RPC, embedding)
    /// The labels of enum type `schema.name`.
    pub fn enum_labels(&self, schema: &str, name: &str) -> Option<&[String]> {
        self.schemas.get(schema)?.enums.get(name).map(Vec::as_slice)
    }

    /// Whether the in-database boolean setting `pgrst.<key>` is on.
    pub fn setting_enabled(&self, key: &str) -> bool {
        self.db_settings.get(key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// Whether aggregates (`count()`, `col.sum()` …) may be used (`db-aggregates-enabled`).
    pub fn aggregates_enabled(&self) -> bool {
        self.setting_enabled("db_aggregates_enabled")
    }

    /// The relationships whose origin is `schema.name` (empty when none).
    pub fn relationships_of(&self, schema: &str, name: &str) -> &[relationships::Relationship] {
        let key = relationships::QualifiedName::new(schema, name);
        self.relationships.get(&key).map_or(&[], Vec::as_slice)
    }

    /// The closest relation name in `schema` to `name` (PostgREST's PGRST205 hint), if any is close.
    pub fn closest_relation(&self, schema: &str, name: &str) -> Option<&str> {
        let objects = self.schemas.get(schema)?;
        fuzzy::closest(name, objects.relations.keys().map(String::as_str))
    }

    /// Number of relations over every exposed schema.
    pub fn relation_count(&self) -> usize {
        self.schemas.values().map(|s| s.relations.len()).sum()
    }

    /// Number of functions (overloads counted) over every exposed schema.
    pub fn function_count(&self) -> usize {
        self.schemas.values().map(|s| s.functions.values().map(Vec::len).sum::<usize>()).sum()
    }
}
