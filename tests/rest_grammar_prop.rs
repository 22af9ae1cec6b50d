//! Property test: random requests built from the PostgREST grammar with hostile atoms (quotes,
//! semicolons, comment starts, placeholders, non-ASCII) in every position — names, aliases, hints,
//! operators, values, JSON keys, casts, `columns=`, `on_conflict=`, body keys, function arguments,
//! `Prefer` and `Accept` — never panic and never put anything but quoted identifiers, bound
//! parameters and MadBase's own SQL words into the SQL (`madbase_rest::injection`): reads with
//! every count, media type and plan; writes by every method; RPC by GET and POST; the request
//! settings. Fixed seed, plain loop; the `rest_query` fuzz target explores further.

use madbase_rest::injection::{check_read_query, check_request, check_settings, CheckedRequest, FUNCTIONS};
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

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
const PREFERS: &[&str] = &[
    "return=representation",
    "return=headers-only",
    "return=minimal",
    "resolution=merge-duplicates",
    "resolution=ignore-duplicates",
    "missing=default",
    "missing=null",
    "count=exact",
    "count=planned",
    "count=estimated",
    "handling=strict",
    "max-affected=2",
    "tx=rollback",
    "timezone='; drop",
    "count=';--",
];
const ACCEPTS: &[&str] = &[
    "",
    "application/json",
    "text/csv",
    "application/geo+json",
    "application/vnd.pgrst.object+json",
    "application/vnd.pgrst.object+json;nulls=stripped",
    "application/vnd.pgrst.array+json;nulls=stripped",
    "application/vnd.pgrst.plan",
    "application/vnd.pgrst.plan+json; for=\"text/csv\"; options=analyze|verbose",
    "application/vnd.pgrst.plan+text; for=\"application/geo+json\"; options=buffers|wal|settings",
    "text/csv;q=0.5, application/x-'; drop",
];
/// Column names the fixture has, so that writes resolve defaults and conflicts on real columns.
const COLUMNS: &[&str] = &["id", "c;d", "a\"b"];

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn column_list(rng: &mut StdRng) -> String {
    let n = rng.gen_range(1..4);
    let names: Vec<String> = (0..n)
        .map(|_| {
            let name =
                if rng.gen_bool(0.5) { COLUMNS.choose(rng).copied().unwrap_or("id").to_owned() } else { atom(rng) };
            if name.starts_with('"') {
                name
            } else {
                quoted(&name)
            }
        })
        .collect();
    names.join(",")
}

fn body(rng: &mut StdRng) -> Vec<u8> {
    let keys: Vec<String> = (0..rng.gen_range(0..4))
        .map(|_| if rng.gen_bool(0.6) { COLUMNS.choose(rng).copied().unwrap_or("id").to_owned() } else { atom(rng) })
        .collect();
    let object = |rng: &mut StdRng| {
        let fields: Vec<String> =
            keys.iter().map(|k| format!("{}: {}", json_string(k), json_string(&atom(rng)))).collect();
        format!("{{{}}}", fields.join(", "))
    };
    let text = match rng.gen_range(0..5) {
        0 => format!("[{}, {}]", object(rng), object(rng)),
        1 => format!("[{}]", json_string(&atom(rng))),
        2 => atom(rng),
        _ => object(rng),
    };
    text.into_bytes()
}

fn request(rng: &mut StdRng) -> (String, Option<&'static str>, String, String, &'static str, Vec<u8>) {
    let rpc = rng.gen_bool(0.35);
    let method = if rpc {
        ["GET", "POST", "HEAD"].choose(rng).copied().unwrap_or("GET")
    } else {
        METHODS.choose(rng).copied().unwrap_or("GET")
    };
    let function = rpc.then(|| FUNCTIONS.choose(rng).copied().unwrap_or("void--"));
    let mut query_string = if rng.gen_bool(if rpc { 0.4 } else { 0.8 }) { query(rng) } else { String::new() };
    // Writes rarely come with order/limit (refused); drop them half the time by starting over.
    if !rpc && method != "GET" && method != "HEAD" && rng.gen_bool(0.5) {
        query_string = format!("select={}", enc(&select_item(rng, 0)));
        if rng.gen_bool(0.5) {
            query_string.push_str(&format!("&{}={}", enc(&atom(rng)), enc(&filter(rng))));
        }
    }
    for key in ["columns", "on_conflict"] {
        if !rpc && rng.gen_bool(0.4) {
            query_string.push_str(&format!("&{key}={}", enc(&column_list(rng))));
        }
    }
    if rpc {
        for _ in 0..rng.gen_range(0..3) {
            let name = ["a'b", "x\"y", "n;", "n", "v--", ""].choose(rng).copied().unwrap_or("n");
            query_string.push_str(&format!("&{}={}", enc(name), enc(&atom(rng))));
        }
    }
    let prefer: Vec<&str> = (0..rng.gen_range(0..4)).map(|_| PREFERS.choose(rng).copied().unwrap_or("")).collect();
    let accept = ACCEPTS.choose(rng).copied().unwrap_or("");
    (method.to_owned(), function, query_string, prefer.join(", "), accept, body(rng))
}

#[test]
fn hostile_writes_calls_counts_plans_and_media_never_reach_the_sql_text() {
    let mut rng = StdRng::seed_from_u64(0x7772_6974_6573);
    let mut built = std::collections::BTreeMap::<(String, bool), usize>::new();
    for _ in 0..20_000 {
        let (method, function, query, prefer, accept, body) = request(&mut rng);
        let checked = CheckedRequest { method: &method, function, query: &query, prefer: &prefer, accept, body: &body };
        match check_request(&checked) {
            Ok(true) => *built.entry((method.clone(), function.is_some())).or_default() += 1,
            Ok(false) => {}
            Err(violation) => panic!("{checked:?}: {violation}"),
        }
    }
    // Not vacuous: every method, table and RPC, reaches SQL generation many times.
    for method in METHODS {
        let n = built.get(&(method.to_string(), false)).copied().unwrap_or(0);
        assert!(n > 200, "only {n} {method} table requests were built: {built:?}");
    }
    for method in ["GET", "POST", "HEAD"] {
        let n = built.get(&(method.to_string(), true)).copied().unwrap_or(0);
        assert!(n > 100, "only {n} {method} calls were built: {built:?}");
    }
}

#[test]
fn hostile_schema_names_stay_whole_in_the_settings() {
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..2_000 {
        let raw = |rng: &mut StdRng| {
            format!("{}{}", ATOMS.choose(rng).copied().unwrap_or(""), ATOMS.choose(rng).copied().unwrap_or(""))
        };
        let schema = raw(&mut rng);
        let extra: Vec<String> = (0..rng.gen_range(0..3)).map(|_| raw(&mut rng)).collect();
        let pre_request = format!("{}.{}", atom(&mut rng), atom(&mut rng));
        if let Err(violation) = check_settings(&schema, &extra, &pre_request) {
            panic!("{schema:?} {extra:?} {pre_request:?}: {violation}");
        }
    }
}
