//! The SQL-injection property of the read path, checkable on any query string: whatever the
//! request says, the statement MadBase builds has only quoted identifiers, `$n` placeholders and
//! MadBase's own SQL outside them. Driven by the property test (`tests/rest_grammar_prop.rs`)
//! and the `rest_query` fuzz target.
//!
//! Owns: a fixture schema cache whose relation, column and constraint names are themselves
//! hostile (quotes, semicolons, comment starts), and a lexer for the built SQL. Invariants the
//! check enforces on every statement the grammar accepts: double-quoted identifiers are closed
//! (a `"` inside is doubled); outside them there is no `;`, no `--`, no `/*`, no `\`, no NUL and
//! no string literal except MadBase's own ([`OWN_LITERALS`]); every `$n` names a bound parameter
//! and every bound parameter is used.

use std::sync::OnceLock;

use super::{media, plan, query, sql};
use crate::schema::relationships::QualifiedName;
use crate::schema::{introspect, SchemaCache};

/// The only string literals MadBase writes into a read statement.
const OWN_LITERALS: &[&str] = &["'[]'", "'response.headers'", "'response.status'", "''"];

/// The relation every checked query reads.
pub const TABLE: &str = "t\"; drop table x; --";

fn fixture() -> &'static SchemaCache {
    static CACHE: OnceLock<SchemaCache> = OnceLock::new();
    CACHE.get_or_init(|| {
        let document = serde_json::json!({
            "schemas": ["public"],
            "relations": [[1, "public", TABLE, "r", 28], [2, "public", "u/*", "r", 28], [3, "public", "j'", "r", 28]],
            "columns": [
                [1, 1, "id", "bigint", false, null, false, false],
                [1, 2, "a\"b", "jsonb", true, null, false, false],
                [1, 3, "c;d", "bigint", true, null, false, false],
                [2, 1, "id", "bigint", false, null, false, false],
                [2, 2, "e' or '1'='1", "text", true, null, false, false],
                [3, 1, "t_id", "bigint", false, null, false, false],
                [3, 2, "u_id", "bigint", false, null, false, false]
            ],
            "keys": [
                ["p", "t_pkey", "public", TABLE, ["id"], null, null, null],
                ["p", "u_pkey", "public", "u/*", ["id"], null, null, null],
                ["p", "j_pkey", "public", "j'", ["t_id", "u_id"], null, null, null],
                ["f", "fk\"--", "public", TABLE, ["c;d"], "public", "u/*", ["id"]],
                ["f", "j_t", "public", "j'", ["t_id"], "public", TABLE, ["id"]],
                ["f", "j_u", "public", "j'", ["u_id"], "public", "u/*", ["id"]]
            ],
            "computed": [["public", "f();--", "public", TABLE, "public", "u/*", false]],
            "settings": [["pgrst.db_aggregates_enabled", "true"]]
        });
        introspect::parse(&document.to_string()).expect("the fixture document parses")
    })
}

/// Parses, plans and builds `query_string` as a read of [`TABLE`] (with an exact count) and
/// checks the statement. `Ok(true)`: a statement was built and is safe; `Ok(false)`: the grammar
/// or the planner refused the query (refusing is safe).
pub fn check_read_query(query_string: &str) -> Result<bool, String> {
    let Ok(read) = query::parse_read_query(query_string) else { return Ok(false) };
    let cache = fixture();
    let Ok(plan) = plan::plan(cache, "public", QualifiedName::new("public", TABLE), &read) else { return Ok(false) };
    let statement = sql::read_statement(cache, &plan, Some(&media::Media::JSON), true);
    check_sql(&statement.sql, statement.params.len()).map_err(|e| format!("{e} in {:?}", statement.sql))?;
    Ok(true)
}

/// The lexical invariants of the module doc, for a statement with `params` bound parameters.
pub fn check_sql(sql: &str, params: usize) -> Result<(), String> {
    let bytes = sql.as_bytes();
    let mut used = vec![false; params];
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // A quoted identifier: ends at a `"` that is not doubled.
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err("unterminated quoted identifier".into()),
                        Some(b'"') if bytes.get(i + 1) == Some(&b'"') => i += 2,
                        Some(b'"') => break,
                        Some(0) => return Err("NUL in an identifier".into()),
                        Some(_) => i += 1,
                    }
                }
            }
            b'\'' => {
                let Some(literal) = OWN_LITERALS.iter().find(|l| sql[i..].starts_with(**l)) else {
                    return Err(format!("string literal at byte {i}"));
                };
                i += literal.len() - 1;
            }
            b'$' => {
                let digits = bytes[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
                let n: usize = sql[i + 1..i + 1 + digits].parse().map_err(|_| format!("bare $ at byte {i}"))?;
                match n.checked_sub(1).and_then(|k| used.get_mut(k)) {
                    Some(slot) => *slot = true,
                    None => return Err(format!("${n} is not a bound parameter")),
                }
                i += digits;
            }
            b';' | b'\\' | 0 => return Err(format!("{:?} outside identifiers at byte {i}", bytes[i] as char)),
            b'-' if bytes.get(i + 1) == Some(&b'-') => return Err(format!("comment start at byte {i}")),
            b'/' if bytes.get(i + 1) == Some(&b'*') => return Err(format!("comment start at byte {i}")),
            _ => {}
        }
        i += 1;
    }
    match used.iter().position(|u| !u) {
        Some(k) => Err(format!("parameter ${} is never used", k + 1)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_catches_what_it_must() {
        assert!(check_sql(r#"SELECT "a""b" FROM "t" WHERE "x" = $1 AND y = '[]'"#, 1).is_ok());
        assert!(check_sql(r#"SELECT "a"b" FROM t"#, 0).is_err(), "an undoubled quote leaves `b\" FROM t` open");
        assert!(check_sql("SELECT 1; DROP TABLE t", 0).is_err());
        assert!(check_sql("SELECT 'x'", 0).is_err());
        assert!(check_sql("SELECT 1 -- c", 0).is_err());
        assert!(check_sql("SELECT 1 /* c */", 0).is_err());
        assert!(check_sql("SELECT $2", 1).is_err());
        assert!(check_sql("SELECT 1", 1).is_err(), "an unused parameter means a value went elsewhere");
    }

    #[test]
    fn the_fixture_reads_and_embeds_hostile_names() {
        let queries = [
            r#"select=*,"u/*"!"fk\"--"(*),"j'"(count()),m2m:"u/*"!"j'"(id)"#,
            r#"select="a\"b"->>x,"c;d",u:"u/*"!"c;d"(id)&order=u(id).desc&u=not.is.null&u.id=eq.$1"#,
            r#"select=id,"f();--"(*,"e' or '1'='1")&"c;d"=eq.1';drop&or=(id.eq.1,"a\"b"->k.eq.--)"#,
        ];
        for query in queries {
            let read = query::parse_read_query(query).unwrap();
            plan::plan(fixture(), "public", QualifiedName::new("public", TABLE), &read).unwrap();
            assert!(check_read_query(query).unwrap());
        }
    }
}
