//! Relationships between relations, for resource embedding (reference/rest.md §3.2).
//!
//! Owns: deriving every embeddable relationship of a snapshot from its foreign keys, unique keys
//! and computed-relationship functions, and indexing them by origin relation. Built once per
//! snapshot, off the request path (in [`super::introspect::parse`]); requests only look them up.
//!
//! Invariants: for a foreign key on `A(a…)` referencing `B(b…)` there are exactly two
//! relationships, `A → B` (many-to-one, or one-to-one when `a…` is a primary or unique key of `A`)
//! and `B → A` (one-to-many, or one-to-one); a junction table `J` with foreign keys to `A` and `B`
//! whose columns all belong to `J`'s primary key gives `A → B` and `B → A` many-to-many. Column
//! pairs are always `(origin column, target column)` (junction pairs: `(end column, junction
//! column)`), so a join condition reads `target.col = origin.col` whatever the direction.

use std::collections::HashMap;

use super::{ForeignKey, Relation};

/// A schema-qualified relation or function name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl QualifiedName {
    pub fn new(schema: &str, name: &str) -> Self {
        QualifiedName { schema: schema.to_owned(), name: name.to_owned() }
    }
}

/// How many target rows one origin row relates to, and how PostgREST names it in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cardinality {
    ManyToOne,
    OneToMany,
    OneToOne,
    ManyToMany,
}

impl Cardinality {
    pub fn name(self) -> &'static str {
        match self {
            Cardinality::ManyToOne => "many-to-one",
            Cardinality::OneToMany => "one-to-many",
            Cardinality::OneToOne => "one-to-one",
            Cardinality::ManyToMany => "many-to-many",
        }
    }
}

/// One embeddable relationship from `origin` to `target`.
#[derive(Debug, Clone, PartialEq)]
pub struct Relationship {
    pub origin: QualifiedName,
    pub target: QualifiedName,
    pub link: Link,
}

/// What connects the two ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// A foreign key, seen from either side.
    ForeignKey {
        cardinality: Cardinality,
        constraint: String,
        /// `(origin column, target column)` pairs.
        columns: Vec<(String, String)>,
    },
    /// Many-to-many through a junction table.
    Junction {
        junction: QualifiedName,
        /// The junction's foreign key to the origin, and its `(origin column, junction column)` pairs.
        origin_constraint: String,
        origin_columns: Vec<(String, String)>,
        /// The junction's foreign key to the target, and its `(target column, junction column)` pairs.
        target_constraint: String,
        target_columns: Vec<(String, String)>,
    },
    /// A function `f(origin) returns [setof] target`.
    Computed { function: QualifiedName, to_one: bool },
}

impl Relationship {
    /// Whether an origin row relates to at most one target row (embedded as an object).
    pub fn is_to_one(&self) -> bool {
        match &self.link {
            Link::ForeignKey { cardinality, .. } => {
                matches!(cardinality, Cardinality::ManyToOne | Cardinality::OneToOne)
            }
            Link::Junction { .. } => false,
            Link::Computed { to_one, .. } => *to_one,
        }
    }

    /// Both ends are the same relation (and the link is a foreign key).
    pub fn is_self(&self) -> bool {
        self.origin == self.target && matches!(self.link, Link::ForeignKey { .. })
    }

    pub fn cardinality(&self) -> Cardinality {
        match &self.link {
            Link::ForeignKey { cardinality, .. } => *cardinality,
            Link::Junction { .. } => Cardinality::ManyToMany,
            Link::Computed { to_one: true, .. } => Cardinality::ManyToOne,
            Link::Computed { to_one: false, .. } => Cardinality::OneToMany,
        }
    }
}

/// A computed-relationship function as introspected.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputedRelationship {
    pub function: QualifiedName,
    pub origin: QualifiedName,
    pub target: QualifiedName,
    pub to_one: bool,
}

/// A view column that shows `origin.origin_column` unchanged (see [`super::view_lineage`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ViewColumn {
    pub view: QualifiedName,
    pub column: String,
    pub origin: QualifiedName,
    pub origin_column: String,
}

/// Every relationship, keyed by origin relation.
pub type RelationshipIndex = HashMap<QualifiedName, Vec<Relationship>>;

/// Derives the relationships of a snapshot. `relation` looks a relation up (for its keys).
/// A foreign key relates not only its two tables but every view that shows all of the key's
/// columns on one side (PostgREST's view relationships).
pub fn derive<'a>(
    foreign_keys: &[ForeignKey],
    computed: &[ComputedRelationship],
    view_columns: &[ViewColumn],
    relation: impl Fn(&str, &str) -> Option<&'a Relation>,
) -> RelationshipIndex {
    let mut index = RelationshipIndex::new();
    for fk in foreign_keys {
        add_foreign_key(&mut index, fk, view_columns, &relation);
    }
    add_junctions(&mut index, foreign_keys, &relation);
    for c in computed {
        index.entry(c.origin.clone()).or_default().push(Relationship {
            origin: c.origin.clone(),
            target: c.target.clone(),
            link: Link::Computed { function: c.function.clone(), to_one: c.to_one },
        });
    }
    // Deterministic candidate order for PGRST201 (by kind, then constraint/junction name).
    for rels in index.values_mut() {
        rels.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    }
    index
}

/// Whether `columns` (in any order) are exactly `relation`'s primary key or one of its unique keys.
fn is_unique_key(relation: &Relation, columns: &[&String]) -> bool {
    let same = |key: &[String]| key.len() == columns.len() && key.iter().all(|k| columns.contains(&k));
    same(&relation.primary_key) || relation.unique_keys.iter().any(|key| same(key))
}

/// Both directions of `fk` between every image of its table and every image of its foreign table
/// (see [`relation_and_views_showing`]): one-to-one both ways when the key's columns are a primary
/// or unique key of its table, else many-to-one towards the foreign side and one-to-many back.
fn add_foreign_key<'a>(
    index: &mut RelationshipIndex,
    fk: &ForeignKey,
    view_columns: &[ViewColumn],
    relation: &impl Fn(&str, &str) -> Option<&'a Relation>,
) {
    let local: Vec<&String> = fk.columns.iter().map(|(c, _)| c).collect();
    let remote: Vec<&String> = fk.columns.iter().map(|(_, f)| f).collect();
    let one_to_one = relation(&fk.schema, &fk.table).is_some_and(|r| is_unique_key(r, &local));
    let tables = relation_and_views_showing(&QualifiedName::new(&fk.schema, &fk.table), &local, view_columns);
    let foreigns =
        relation_and_views_showing(&QualifiedName::new(&fk.foreign_schema, &fk.foreign_table), &remote, view_columns);
    for (table, table_columns) in &tables {
        for (foreign, foreign_columns) in &foreigns {
            let pairs: Vec<(String, String)> =
                table_columns.iter().cloned().zip(foreign_columns.iter().cloned()).collect();
            index.entry(table.clone()).or_default().push(Relationship {
                origin: table.clone(),
                target: foreign.clone(),
                link: Link::ForeignKey {
                    cardinality: if one_to_one { Cardinality::OneToOne } else { Cardinality::ManyToOne },
                    constraint: fk.constraint.clone(),
                    columns: pairs.clone(),
                },
            });
            index.entry(foreign.clone()).or_default().push(Relationship {
                origin: foreign.clone(),
                target: table.clone(),
                link: Link::ForeignKey {
                    cardinality: if one_to_one { Cardinality::OneToOne } else { Cardinality::OneToMany },
                    constraint: fk.constraint.clone(),
                    columns: pairs.into_iter().map(|(c, f)| (f, c)).collect(),
                },
            });
        }
    }
}

/// The relation itself and every view showing all of `columns` of it, with the columns renamed.
fn relation_and_views_showing(
    table: &QualifiedName,
    columns: &[&String],
    view_columns: &[ViewColumn],
) -> Vec<(QualifiedName, Vec<String>)> {
    let mut images = vec![(table.clone(), columns.iter().map(|c| (*c).clone()).collect::<Vec<_>>())];
    let mut views: Vec<&QualifiedName> = view_columns.iter().filter(|v| v.origin == *table).map(|v| &v.view).collect();
    views.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    views.dedup();
    for view in views {
        let shown: Option<Vec<String>> = columns
            .iter()
            .map(|c| {
                view_columns
                    .iter()
                    .find(|v| v.view == *view && v.origin == *table && v.origin_column == **c)
                    .map(|v| v.column.clone())
            })
            .collect();
        if let Some(shown) = shown {
            images.push((view.clone(), shown));
        }
    }
    images
}

/// Many-to-many both ways through each junction: pairs of distinct foreign keys of one table whose
/// columns are all in its primary key, neither pointing back at the junction itself.
fn add_junctions<'a>(
    index: &mut RelationshipIndex,
    foreign_keys: &[ForeignKey],
    relation: &impl Fn(&str, &str) -> Option<&'a Relation>,
) {
    let mut by_table: HashMap<QualifiedName, Vec<&ForeignKey>> = HashMap::new();
    for fk in foreign_keys {
        by_table.entry(QualifiedName::new(&fk.schema, &fk.table)).or_default().push(fk);
    }
    for (junction, fks) in &by_table {
        let Some(primary_key) = relation(&junction.schema, &junction.name).map(|r| &r.primary_key) else { continue };
        let in_key = |fk: &ForeignKey| fk.columns.iter().all(|(c, _)| primary_key.contains(c));
        for a in fks.iter().filter(|fk| in_key(fk)) {
            for b in fks.iter().filter(|fk| in_key(fk)) {
                if a.constraint == b.constraint {
                    continue;
                }
                let origin = QualifiedName::new(&a.foreign_schema, &a.foreign_table);
                let target = QualifiedName::new(&b.foreign_schema, &b.foreign_table);
                if origin == *junction || target == *junction {
                    continue;
                }
                index.entry(origin.clone()).or_default().push(Relationship {
                    origin,
                    target,
                    link: Link::Junction {
                        junction: junction.clone(),
                        origin_constraint: a.constraint.clone(),
                        origin_columns: a.columns.iter().map(|(j, o)| (o.clone(), j.clone())).collect(),
                        target_constraint: b.constraint.clone(),
                        target_columns: b.columns.iter().map(|(j, t)| (t.clone(), j.clone())).collect(),
                    },
                });
            }
        }
    }
}

fn sort_key(r: &Relationship) -> (u8, &str, &str, &str) {
    match &r.link {
        Link::ForeignKey { constraint, .. } => (0, r.target.name.as_str(), constraint.as_str(), ""),
        Link::Junction { junction, origin_constraint, .. } => {
            (1, r.target.name.as_str(), junction.name.as_str(), origin_constraint.as_str())
        }
        Link::Computed { function, .. } => (2, function.name.as_str(), "", ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::RelationKind;

    fn table(name: &str, primary_key: &[&str], unique: &[&[&str]]) -> Relation {
        Relation {
            schema: "public".into(),
            name: name.into(),
            kind: RelationKind::Table,
            insertable: true,
            updatable: true,
            deletable: true,
            columns: Vec::new(),
            primary_key: primary_key.iter().map(|s| s.to_string()).collect(),
            unique_keys: unique.iter().map(|k| k.iter().map(|s| s.to_string()).collect()).collect(),
        }
    }

    fn fk(constraint: &str, table: &str, cols: &[(&str, &str)], foreign: &str) -> ForeignKey {
        ForeignKey {
            constraint: constraint.into(),
            schema: "public".into(),
            table: table.into(),
            foreign_schema: "public".into(),
            foreign_table: foreign.into(),
            columns: cols.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        }
    }

    #[test]
    fn cardinalities_and_junctions() {
        let tables = [
            table("users", &["id"], &[]),
            table("profiles", &["id"], &[&["user_id"]]),
            table("posts", &["id"], &[]),
            table("tags", &["id"], &[]),
            table("post_tags", &["post_id", "tag_id"], &[]),
        ];
        let fks = [
            fk("profiles_user_id_fkey", "profiles", &[("user_id", "id")], "users"),
            fk("posts_author_fkey", "posts", &[("author", "id")], "users"),
            fk("post_tags_post_id_fkey", "post_tags", &[("post_id", "id")], "posts"),
            fk("post_tags_tag_id_fkey", "post_tags", &[("tag_id", "id")], "tags"),
        ];
        let index = derive(&fks, &[], &[], |_, n| tables.iter().find(|t| t.name == n));
        let of = |name: &str| &index[&QualifiedName::new("public", name)];
        let users: Vec<_> = of("users").iter().map(|r| (r.target.name.as_str(), r.cardinality())).collect();
        assert_eq!(users, [("posts", Cardinality::OneToMany), ("profiles", Cardinality::OneToOne)]);
        assert_eq!(of("profiles")[0].cardinality(), Cardinality::OneToOne);
        assert!(of("profiles")[0].is_to_one());
        let posts: Vec<_> = of("posts").iter().map(|r| (r.target.name.as_str(), r.cardinality())).collect();
        assert_eq!(
            posts,
            [
                ("post_tags", Cardinality::OneToMany),
                ("users", Cardinality::ManyToOne),
                ("tags", Cardinality::ManyToMany)
            ]
        );
        let Link::Junction { origin_columns, target_columns, .. } = &of("posts")[2].link else { panic!() };
        assert_eq!(origin_columns, &[("id".to_string(), "post_id".to_string())]);
        assert_eq!(target_columns, &[("id".to_string(), "tag_id".to_string())]);
    }

    #[test]
    fn views_that_show_the_key_columns_relate_too() {
        let tables = [table("users", &["id"], &[]), table("posts", &["id"], &[])];
        let fks = [fk("posts_author_fkey", "posts", &[("author", "id")], "users")];
        let shown = |view: &str, column: &str, origin: &str, origin_column: &str| ViewColumn {
            view: QualifiedName::new("public", view),
            column: column.into(),
            origin: QualifiedName::new("public", origin),
            origin_column: origin_column.into(),
        };
        let views = [
            shown("active_users", "user_id", "users", "id"),
            shown("recent_posts", "writer", "posts", "author"),
            shown("titles", "id", "posts", "id"),
        ];
        let index = derive(&fks, &[], &views, |_, n| tables.iter().find(|t| t.name == n));
        let targets = |name: &str| -> Vec<(String, Vec<(String, String)>)> {
            index[&QualifiedName::new("public", name)]
                .iter()
                .map(|r| {
                    let Link::ForeignKey { columns, .. } = &r.link else { panic!() };
                    (r.target.name.clone(), columns.clone())
                })
                .collect()
        };
        let pair = |a: &str, b: &str| vec![(a.to_string(), b.to_string())];
        assert_eq!(
            targets("recent_posts"),
            [("active_users".into(), pair("writer", "user_id")), ("users".into(), pair("writer", "id"))]
        );
        assert_eq!(
            targets("active_users"),
            [("posts".into(), pair("user_id", "author")), ("recent_posts".into(), pair("user_id", "writer"))]
        );
        // `titles` does not show the key column `author`: no relationship.
        assert!(!index.contains_key(&QualifiedName::new("public", "titles")));
    }
}
