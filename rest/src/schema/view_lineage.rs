//! Which base-table column each view column shows, read from the view's stored rewrite rule
//! (`pg_rewrite.ev_action`, PostgreSQL's node-tree text), so that foreign keys of the base tables
//! also relate the views that expose their columns (PostgREST does the same, reference/rest.md §3.2).
//!
//! Owns: a small reader of the node-tree text. Only the top-level query's target list is read —
//! each `TARGETENTRY` there names its output column (`:resname`) and, when it is a plain column
//! of a table or view, its origin (`:resorigtbl` oid, `:resorigcol` attnum). Invariants: target
//! entries of sub-queries, CTEs and set operations are never taken for the view's own (they sit
//! deeper in the tree, or carry no origin); junk entries are skipped; input that is not what
//! PostgreSQL writes yields fewer columns, never a panic.

/// One view column that shows a column of another relation unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewColumn {
    pub name: String,
    pub origin_relation: i64,
    pub origin_column: i16,
}

/// Reads the view columns of one `ev_action` text.
pub fn view_columns(action: &str) -> Vec<ViewColumn> {
    // Depth 1: the rule's action list, 2: the QUERY node, 3: its target list, 4: a TARGETENTRY.
    const QUERY: usize = 2;
    const ENTRY: usize = 4;
    let mut columns = Vec::new();
    let mut depth = 0usize;
    let mut in_target_list = false;
    let mut seen_target_list_key = false;
    let mut key: Option<String> = None;
    let (mut name, mut relation, mut column, mut junk) = (None::<String>, 0i64, 0i16, false);
    let mut chars = action.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' | '(' => {
                depth += 1;
                if seen_target_list_key && c == '(' && depth == QUERY + 1 {
                    in_target_list = true;
                }
                seen_target_list_key = false;
            }
            '}' | ')' => {
                if in_target_list && depth == ENTRY && c == '}' {
                    if let Some(name) = name.take().filter(|_| relation != 0 && column > 0 && !junk) {
                        columns.push(ViewColumn { name, origin_relation: relation, origin_column: column });
                    }
                    (relation, column, junk) = (0, 0, false);
                }
                if in_target_list && depth == QUERY + 1 {
                    // The top-level target list ends: nothing after it is the view's.
                    return columns;
                }
                depth = depth.saturating_sub(1);
            }
            c if c.is_whitespace() => {}
            _ => {
                // A token: everything up to whitespace or a bracket, `\x` standing for `x`.
                let mut token = String::new();
                let mut next = Some(c);
                while let Some(ch) = next {
                    if ch == '\\' {
                        if let Some(escaped) = chars.next() {
                            token.push(escaped);
                        }
                    } else {
                        token.push(ch);
                    }
                    next = match chars.peek() {
                        Some(&p) if !p.is_whitespace() && !matches!(p, '{' | '}' | '(' | ')') => chars.next(),
                        _ => None,
                    };
                }
                if depth == QUERY && token == ":targetList" {
                    seen_target_list_key = true;
                } else if in_target_list && depth == ENTRY {
                    match key.take() {
                        Some(k) => match k.as_str() {
                            ":resname" => name = Some(token),
                            ":resorigtbl" => relation = token.parse().unwrap_or(0),
                            ":resorigcol" => column = token.parse().unwrap_or(0),
                            ":resjunk" => junk = token == "true",
                            _ => key = token.starts_with(':').then_some(token),
                        },
                        None if token.starts_with(':') => key = Some(token),
                        None => {}
                    }
                } else {
                    seen_target_list_key = false;
                }
            }
        }
    }
    columns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_target_list_only() {
        // Shortened from `create view v as select username, 1 as one, "odd name" from users where
        // exists (select 1 from t where t.x = users.username)` (PostgreSQL 15 output shape).
        let action = r#"({QUERY :commandType 1 :querySource 0 :canSetTag true :utilityStmt <> :resultRelation 0
            :rtable ({RANGETBLENTRY :alias <> :eref {ALIAS :aliasname users :colnames ("username" "odd\ name")} :rtekind 0 :relid 16390})
            :jointree {FROMEXPR :fromlist ({RANGETBLREF :rtindex 1}) :quals {SUBLINK :subLinkType 0 :subselect {QUERY
              :targetList ({TARGETENTRY :expr {CONST :consttype 23} :resno 1 :resname username :ressortgroupref 0
              :resorigtbl 16400 :resorigcol 1 :resjunk false})}}}
            :targetList ({TARGETENTRY :expr {VAR :varno 1 :varattno 1 :vartype 25} :resno 1 :resname username
              :ressortgroupref 0 :resorigtbl 16390 :resorigcol 1 :resjunk false}
              {TARGETENTRY :expr {CONST :consttype 23 :constvalue 4 [ 1 0 0 0 0 0 0 0 ]} :resno 2 :resname one
              :ressortgroupref 0 :resorigtbl 0 :resorigcol 0 :resjunk false}
              {TARGETENTRY :expr {VAR :varno 1 :varattno 3} :resno 3 :resname odd\ name :ressortgroupref 0
              :resorigtbl 16390 :resorigcol 3 :resjunk false})
            :override 0 :onConflict <> :returningList <> :groupClause <>})"#;
        assert_eq!(
            view_columns(action),
            [
                ViewColumn { name: "username".into(), origin_relation: 16390, origin_column: 1 },
                ViewColumn { name: "odd name".into(), origin_relation: 16390, origin_column: 3 },
            ]
        );
        assert!(view_columns("").is_empty());
        assert!(view_columns("({QUERY :targetList (").is_empty());
        assert!(view_columns(")))}}} :targetList").is_empty());
    }
}
