//! Read plans: a parsed [`ReadQuery`] resolved against the schema cache (reference/rest.md §3.2).
//!
//! Owns: finding the relationship behind every embed (PostgREST's `findRel`, with its rules for
//! self-references, column and constraint targets, hints and junctions), the embedding errors
//! (PGRST200 none found, PGRST201 ambiguous, PGRST118 related order, PGRST123 aggregates off),
//! and the relation each level reads from. It produces no SQL (that is `sql`).
//!
//! Invariants: a plan borrows the request's query and the request's snapshot, so it never outlives
//! either and never sees a reload half-way; every embed of the query has exactly one child plan,
//! in select order; a plan is only built when every relationship, related order and aggregate of
//! every level is valid, so SQL generation cannot fail.

use serde_json::{json, Value};

use super::query::{not_embedded_hint, Embed, ReadQuery, SelectItem};
use crate::schema::relationships::{Cardinality, Link, QualifiedName, Relationship};
use crate::schema::{fuzzy, RelationKind, SchemaCache};

/// What PGRST200 reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Missing {
    pub origin: String,
    pub target: String,
    pub hint: Option<String>,
    pub schema: String,
    /// (suggested name, the name it replaces).
    pub suggestion: Option<(String, String)>,
}

/// Why a read plan could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// 400 PGRST200.
    #[error("Could not find a relationship between '{}' and '{}' in the schema cache", .0.origin, .0.target)]
    NoRelationship(Box<Missing>),
    /// 300 PGRST201.
    #[error("Could not embed because more than one relationship was found for '{origin}' and '{target}'")]
    Ambiguous { origin: String, target: String, candidates: Vec<Relationship> },
    /// 400 PGRST118.
    #[error("A related order on '{target}' is not possible")]
    RelatedOrderNotToOne { origin: String, target: String },
    /// 400 PGRST108: an `order=embed(col)` naming no embed of its level.
    #[error("'{0}' is not an embedded resource in this request")]
    NotEmbedded(String),
    /// 400 PGRST123.
    #[error("Use of aggregate functions is not allowed")]
    AggregatesNotAllowed,
}

impl PlanError {
    /// `(status, code, details, hint)` of the error body.
    pub fn parts(&self) -> (u16, &'static str, Value, Value) {
        let text = |s: &Option<String>| s.as_ref().map_or(Value::Null, |s| Value::String(s.clone()));
        match self {
            PlanError::NoRelationship(missing) => {
                let Missing { origin, target, hint, schema, suggestion } = &**missing;
                let using = hint.as_ref().map(|h| format!(" using the hint '{h}'")).unwrap_or_default();
                let details = format!(
                    "Searched for a foreign key relationship between '{origin}' and '{target}'{using} in the schema \
                     '{schema}', but no matches were found."
                );
                let hint =
                    suggestion.as_ref().map(|(s, instead)| format!("Perhaps you meant '{s}' instead of '{instead}'."));
                (400, "PGRST200", Value::String(details), text(&hint))
            }
            PlanError::Ambiguous { target, candidates, .. } => {
                let details = candidates.iter().map(describe).collect();
                let entries: Vec<String> = candidates
                    .iter()
                    .map(|r| {
                        let via = match &r.link {
                            Link::ForeignKey { constraint, .. } => constraint.as_str(),
                            Link::Junction { junction, .. } => junction.name.as_str(),
                            Link::Computed { function, .. } => function.name.as_str(),
                        };
                        format!("'{}!{via}'", r.target.name)
                    })
                    .collect();
                let hint = format!(
                    "Try changing '{target}' to one of the following: {}. Find the desired relationship in the \
                     'details' key.",
                    entries.join(", ")
                );
                (300, "PGRST201", Value::Array(details), Value::String(hint))
            }
            PlanError::RelatedOrderNotToOne { origin, target } => (
                400,
                "PGRST118",
                Value::String(format!(
                    "'{origin}' and '{target}' do not form a many-to-one or one-to-one relationship"
                )),
                Value::Null,
            ),
            PlanError::NotEmbedded(name) => (400, "PGRST108", Value::Null, Value::String(not_embedded_hint(name))),
            PlanError::AggregatesNotAllowed => (400, "PGRST123", Value::Null, Value::Null),
        }
    }
}

/// One PGRST201 candidate, as PostgREST describes it.
fn describe(r: &Relationship) -> Value {
    let cols = |names: Vec<&str>| format!("({})", names.join(", "));
    let relationship = match &r.link {
        Link::ForeignKey { constraint, columns, .. } => format!(
            "{constraint} using {}{} and {}{}",
            r.origin.name,
            cols(columns.iter().map(|(o, _)| o.as_str()).collect()),
            r.target.name,
            cols(columns.iter().map(|(_, t)| t.as_str()).collect()),
        ),
        Link::Junction { junction, origin_constraint, origin_columns, target_constraint, target_columns } => format!(
            "{} using {origin_constraint}{} and {target_constraint}{}",
            junction.name,
            cols(origin_columns.iter().map(|(_, j)| j.as_str()).collect()),
            cols(target_columns.iter().map(|(_, j)| j.as_str()).collect()),
        ),
        Link::Computed { function, .. } => format!("{} using {}", function.name, r.origin.name),
    };
    json!({
        "cardinality": r.cardinality().name(),
        "embedding": format!("{} with {}", r.origin.name, r.target.name),
        "relationship": relationship,
    })
}

/// PostgREST's PGRST200 hint: a target close to `target` among the origin's related relations
/// (none when `target` is one of them), or — when the origin relates to nothing — an origin
/// close to its name, as `(suggested, instead of)`.
fn suggestion(cache: &SchemaCache, schema: &str, origin: &QualifiedName, target: &str) -> Option<(String, String)> {
    let rels = cache.relationships_of(&origin.schema, &origin.name);
    if rels.is_empty() {
        let origins = cache.relationships.keys().filter(|k| k.schema == schema).map(|k| k.name.as_str());
        return fuzzy::closest(&origin.name, origins).map(|s| (s.to_owned(), origin.name.clone()));
    }
    if rels.iter().any(|r| r.target.name == target) {
        return None;
    }
    fuzzy::closest(target, rels.iter().map(|r| r.target.name.as_str())).map(|s| (s.to_owned(), target.to_owned()))
}

/// One level of a read: its query, the relation its rows have the type of, and its embeds.
#[derive(Debug)]
pub struct ReadPlan<'a> {
    pub query: &'a ReadQuery,
    pub relation: QualifiedName,
    /// One per embed of `query.select`, in order.
    pub children: Vec<ChildPlan<'a>>,
}

/// An embed and how it relates to its parent.
#[derive(Debug)]
pub struct ChildPlan<'a> {
    pub embed: &'a Embed,
    pub relationship: &'a Relationship,
    pub plan: ReadPlan<'a>,
}

impl ReadPlan<'_> {
    /// The child planned for `embed` (by identity).
    pub fn child(&self, embed: &Embed) -> Option<&ChildPlan<'_>> {
        self.children.iter().find(|c| std::ptr::eq(c.embed, embed))
    }

    /// The child whose key (alias or name) is `key`.
    pub fn child_by_key(&self, key: &str) -> Option<&ChildPlan<'_>> {
        self.children.iter().find(|c| c.embed.key() == key)
    }
}

/// Resolves `query` read from `relation` (in `schema`, the request's schema) against `cache`.
pub fn plan<'a>(
    cache: &'a SchemaCache,
    schema: &str,
    relation: QualifiedName,
    query: &'a ReadQuery,
) -> Result<ReadPlan<'a>, PlanError> {
    if !cache.aggregates_enabled() && query.has_aggregates() {
        return Err(PlanError::AggregatesNotAllowed);
    }
    plan_level(cache, schema, relation, query)
}

fn plan_level<'a>(
    cache: &'a SchemaCache,
    schema: &str,
    relation: QualifiedName,
    query: &'a ReadQuery,
) -> Result<ReadPlan<'a>, PlanError> {
    let mut children = Vec::new();
    for item in &query.select {
        let SelectItem::Embed(embed) = item else { continue };
        let relationship = find(cache, schema, &relation, embed)?;
        let plan = plan_level(cache, schema, relationship.target.clone(), &embed.query)?;
        children.push(ChildPlan { embed, relationship, plan });
    }
    let plan = ReadPlan { query, relation, children };
    for term in &query.order {
        let Some(target) = &term.relation else { continue };
        let child = plan.child_by_key(target).ok_or_else(|| PlanError::NotEmbedded(target.clone()))?;
        if !child.relationship.is_to_one() {
            return Err(PlanError::RelatedOrderNotToOne { origin: plan.relation.name.clone(), target: target.clone() });
        }
    }
    Ok(plan)
}

/// PostgREST's `findRel`: the one relationship from `origin` that `embed` names.
fn find<'a>(
    cache: &'a SchemaCache,
    schema: &str,
    origin: &QualifiedName,
    embed: &Embed,
) -> Result<&'a Relationship, PlanError> {
    let target = embed.name.as_str();
    let hint = embed.hint.as_deref();
    let is_view =
        |name: &QualifiedName| cache.relation(&name.schema, &name.name).is_some_and(|r| r.kind == RelationKind::View);
    let rels = cache.relationships_of(&origin.schema, &origin.name);
    let found: Vec<&Relationship> = rels
        .iter()
        .filter(|r| {
            let single = match &r.link {
                Link::ForeignKey { columns, .. } if columns.len() == 1 => Some(&columns[0]),
                _ => None,
            };
            let fk_column = |name: &str| single.is_some_and(|(o, _)| o == name);
            let ref_column = |name: &str| single.is_some_and(|(_, t)| t == name);
            let constraint = |name: &str| matches!(&r.link, Link::ForeignKey { constraint, .. } if constraint == name);
            let junction = |name: &str| matches!(&r.link, Link::Junction { junction, .. } if junction.name == name);
            let cardinality = r.cardinality();
            match (&r.link, hint) {
                (Link::Computed { function, .. }, _) => function.name == target,
                _ if r.is_self() => match hint {
                    // The O2M by the table name, the M2O by the column name.
                    None => {
                        (r.target.name == target && cardinality == Cardinality::OneToMany)
                            || (fk_column(target) && cardinality == Cardinality::ManyToOne)
                    }
                    Some(h) => r.target.name == target && cardinality == Cardinality::OneToMany && ref_column(h),
                },
                (_, None) => {
                    r.target.name == target
                        || (constraint(target) && !is_view(&r.target))
                        || (fk_column(target) && !is_view(&r.target))
                }
                (_, Some(h)) => {
                    r.target.name == target && (constraint(h) || fk_column(h) || ref_column(h) || junction(h))
                }
            }
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(PlanError::NoRelationship(Box::new(Missing {
            origin: origin.name.clone(),
            target: target.to_owned(),
            hint: hint.map(str::to_owned),
            schema: schema.to_owned(),
            suggestion: suggestion(cache, schema, origin, target),
        }))),
        many => Err(PlanError::Ambiguous {
            origin: origin.name.clone(),
            target: target.to_owned(),
            candidates: many.iter().map(|r| (*r).clone()).collect(),
        }),
    }
}
