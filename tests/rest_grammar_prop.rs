//! Property test: random query strings built from the PostgREST grammar with hostile atoms
//! (quotes, semicolons, comment starts, placeholders, non-ASCII) in every position — names,
//! aliases, hints, operators, values, JSON keys, casts — never panic and never put anything but
//! quoted identifiers and bound parameters into the SQL (`madbase::rest::injection`). Fixed seed,
//! plain loop; the `rest_query` fuzz target explores further.

use madbase::rest::injection::check_read_query;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Hostile and ordinary atoms, raw (before percent-encoding).
const ATOMS: &[&str] = &[
    "id",
    "c;d",
    "a\"b",
    "u/*",
    "j'",
    "f();--",
    "e' or '1'='1",
    "x\"); drop table t; --",
    "'; select pg_sleep(10); --",
    "$1",
    "\\",
    "*/",
    "--",
    "ünï",
    "",
    "0",
    "-1",
    "null",
    "(",
    ")",
    ",",
    ".",
    ":",
    "::",
    "->",
    "->>",
    "!",
    "...",
];
const OPERATORS: &[&str] = &[
    "eq",
    "neq",
    "gt",
    "like",
    "ilike",
    "in",
    "is",
    "cs",
    "fts",
    "match",
    "isdistinct",
    "eq(any)",
    "like(all)",
    "fts(english)",
    "adj",
    "not.eq",
    "bogus",
    "eq;drop",
];

/// Embeds the fixture schema resolves (quoted: the names are hostile), so that nested SQL is built.
const EMBEDS: &[&str] = &[r#""u/*"!"fk\"--""#, r#""u/*"!"j'""#, r#""u/*"!"c;d""#, r#""j'""#, r#""f();--""#];

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

fn atom(rng: &mut StdRng) -> String {
    let a = ATOMS.choose(rng).copied().unwrap_or("id");
    match rng.gen_range(0..8) {
        // Mostly quoted with escapes, so hostile characters reach the name.
        0..=4 => quoted(a),
        5 => quoted(&format!("{a}{}", ATOMS.choose(rng).copied().unwrap_or(""))),
        6 => format!("{a}{}", ATOMS.choose(rng).copied().unwrap_or("")),
        _ => a.to_owned(),
    }
}

fn select_item(rng: &mut StdRng, depth: usize) -> String {
    match rng.gen_range(0..9) {
        0 => "*".to_owned(),
        1 => format!("{}:{}", atom(rng), atom(rng)),
        2 => format!("{}->{}->>{}", atom(rng), atom(rng), atom(rng)),
        3 => format!("{}::{}", atom(rng), ["text", "int", "x;y", "numeric"].choose(rng).unwrap_or(&"text")),
        4 => format!("{}.{}()", atom(rng), ["sum", "count", "avg", "max", "drop"].choose(rng).unwrap_or(&"sum")),
        5 => "count()".to_owned(),
        6 | 7 if depth < 3 => {
            let hint = if rng.gen_bool(0.5) { format!("!{}", atom(rng)) } else { String::new() };
            let join = ["", "!inner", "!left"].choose(rng).copied().unwrap_or("");
            let spread = if rng.gen_bool(0.2) { "..." } else { "" };
            let n = rng.gen_range(0..3);
            let inner: Vec<String> = (0..n).map(|_| select_item(rng, depth + 1)).collect();
            let name = match rng.gen_range(0..4) {
                0 => format!("{}{hint}", atom(rng)),
                _ => EMBEDS.choose(rng).copied().unwrap_or("x").to_owned(),
            };
            let alias = if spread.is_empty() && rng.gen_bool(0.3) { format!("{}:", atom(rng)) } else { String::new() };
            format!("{spread}{alias}{name}{join}({})", inner.join(","))
        }
        _ => atom(rng),
    }
}

fn filter(rng: &mut StdRng) -> String {
    let value = match rng.gen_range(0..4) {
        0 => format!("({},{})", atom(rng), atom(rng)),
        1 => format!("{{{},{}}}", atom(rng), atom(rng)),
        _ => atom(rng),
    };
    format!("{}.{}", OPERATORS.choose(rng).copied().unwrap_or("eq"), value)
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(rng: &mut StdRng) -> String {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let n = rng.gen_range(1..4);
    let items: Vec<String> = (0..n).map(|_| select_item(rng, 0)).collect();
    pairs.push(("select".into(), items.join(",")));
    for _ in 0..rng.gen_range(0..5) {
        let prefix = if rng.gen_bool(0.3) { format!("{}.", atom(rng)) } else { String::new() };
        let (key, value) = match rng.gen_range(0..6) {
            0 => (
                "order".to_owned(),
                format!("{}.{}", atom(rng), ["asc", "desc.nullslast", "x"].choose(rng).unwrap_or(&"asc")),
            ),
            1 => ("limit".to_owned(), atom(rng)),
            2 => ("or".to_owned(), format!("({}.{},{}.{})", atom(rng), filter(rng), atom(rng), filter(rng))),
            3 => ("and".to_owned(), format!("(not.or({}.{}),{}.{})", atom(rng), filter(rng), atom(rng), filter(rng))),
            _ => (atom(rng), filter(rng)),
        };
        pairs.push((format!("{prefix}{key}"), value));
    }
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

#[test]
fn hostile_queries_never_reach_the_sql_text() {
    let mut rng = StdRng::seed_from_u64(0x6d61_6462_6173_6552);
    let mut built = 0;
    for _ in 0..20_000 {
        let q = query(&mut rng);
        match check_read_query(&q) {
            Ok(checked) => built += usize::from(checked),
            Err(violation) => panic!("query {q:?}: {violation}"),
        }
    }
    // Not vacuous: a good share of the hostile queries are valid and reach SQL generation.
    assert!(built > 2_000, "only {built} of 20000 queries were built");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..20_000 {
        let bytes: Vec<u8> = (0..rng.gen_range(0..96))
            .map(|_| *b"sel=ct&.,()!:\"*-><%2A;'x\\0".choose(&mut rng).unwrap_or(&b'x'))
            .collect();
        let text = String::from_utf8_lossy(&bytes);
        if let Err(violation) = check_read_query(&text).map(drop) {
            panic!("query {text:?}: {violation}");
        }
    }
}
