//! `render.rs` checked against a real PostgreSQL: for each sample value, the value's text
//! output (what pgoutput sends, in a session with the replication core's settings) rendered by
//! `madbase_realtime::render` must equal `to_jsonb(value)::text`.

use madbase_pg::{BlockingConnection, Cluster, Host, SessionMode};
use madbase_realtime::render::{render, ScalarKind, ValueType};

fn value_type(sql_type: &str) -> ValueType {
    match sql_type.strip_suffix("[]") {
        Some(elem) => ValueType::Array {
            elem: ScalarKind::of_type_name(elem),
            delimiter: if elem == "box" { b';' } else { b',' },
        },
        None => ValueType::scalar(sql_type),
    }
}

#[test]
fn rendering_matches_to_jsonb() {
    let cluster = Cluster::ephemeral().unwrap();
    // Over the unix socket (the replication tests use TCP).
    let mut cfg = cluster.connect_config();
    cfg.host = Host::Unix(cluster.socket_dir());
    let mut db = BlockingConnection::connect(&cfg, SessionMode::Normal, 1 << 20).unwrap();
    let samples: &[(&str, &[&str])] = &[
        ("bool", &["true", "false"]),
        ("int2", &["-32768", "0", "7"]),
        ("int4", &["-2147483648", "42"]),
        ("int8", &["9223372036854775807", "-1"]),
        ("float4", &["1.5", "3.4e38", "1e-7", "-0", "NaN", "Infinity", "-Infinity", "0.1"]),
        (
            "float8",
            &[
                "1e20",
                "1.5e-7",
                "-0",
                "NaN",
                "Infinity",
                "-Infinity",
                "0.1",
                "123.456",
                "1e-300",
                "1.7976931348623157e308",
                "1e15",
                "1e16",
            ],
        ),
        ("numeric", &["1.50", "NaN", "Infinity", "-Infinity", "-0.0", "1e-5", "12345678901234567890.000001", "0"]),
        ("jsonb", &[r#"{"b": [1, 2.50, null], "a": "x\ny"}"#, "[]", "\"s\"", "1e2", "null"]),
        (
            "timestamp",
            &["2024-01-01 00:00:00.123", "2024-02-29 23:59:59", "infinity", "-infinity", "0044-03-15 12:00:00 BC"],
        ),
        (
            "timestamptz",
            &[
                "2024-01-01 00:00:00.123+00",
                "2024-06-01 12:30:00+05:30",
                "infinity",
                "-infinity",
                "0044-03-15 12:00:00+00 BC",
                "1900-01-01 00:00:00.000001+00",
            ],
        ),
        ("date", &["2024-01-01", "infinity", "0044-03-15 BC"]),
        ("time", &["12:34:56.789"]),
        ("timetz", &["12:34:56+02"]),
        ("interval", &["1 day 02:03:04", "-1 mons"]),
        ("uuid", &["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]),
        ("text", &["plain", "quote \" backslash \\ newline \n tab \t bell \u{7} del \u{7f} é ✓"]),
        ("bytea", &["\\x00ff"]),
        ("oid", &["12345"]),
        ("money", &["12.34"]),
        ("int4[]", &["{1,2,NULL}", "{}", "{{1,2},{3,4}}", "[0:1]={5,6}"]),
        ("text[]", &[r#"{a,"b c","NULL",NULL,"d,e","f}","g\"h","i\\j",""," k "}"#]),
        ("float8[]", &["{1.5,NaN,1e20,-0}"]),
        ("numeric[]", &["{1.50,NaN}"]),
        ("bool[]", &["{t,f,NULL}"]),
        ("jsonb[]", &[r#"{"{\"a\": 1}","[1, 2]",null}"#]),
        ("timestamptz[]", &["{\"2024-01-01 00:00:00+00\",infinity}"]),
        ("timestamp[]", &["{\"2024-01-01 00:00:00\"}"]),
        ("date[]", &["{2024-01-01}"]),
        ("box[]", &["{(1,1),(0,0);(2,2),(1,1)}"]),
        ("uuid[]", &["{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"]),
    ];
    let mut failures = Vec::new();
    let mut checked = 0;
    for (ty, values) in samples {
        for v in *values {
            let lit = format!("'{}'::{ty}", v.replace('\'', "''"));
            let res = db.simple_query(&format!("select {lit}, to_jsonb({lit})::text")).unwrap();
            let row = &res[0].rows[0];
            let (text, expected) = (row.get_str(0).unwrap(), row.get_str(1).unwrap());
            let got = render(value_type(ty), text);
            checked += 1;
            if got != expected {
                failures.push(format!("{ty} {v:?}: text {text:?} → {got}, to_jsonb gives {expected}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {checked} differ:\n{}", failures.len(), failures.join("\n"));

    // `json` is passed as it is: the same value as to_jsonb's, not the same text.
    for v in [r#"{"b":1,  "a":[1,2]}"#, "[1,2.50]"] {
        let res = db.simple_query(&format!("select '{v}'::json, to_jsonb('{v}'::json)::text")).unwrap();
        let row = &res[0].rows[0];
        let got = render(ValueType::scalar("json"), row.get_str(0).unwrap());
        let a: serde_json::Value = serde_json::from_str(&got).unwrap();
        let b: serde_json::Value = serde_json::from_str(row.get_str(1).unwrap()).unwrap();
        assert_eq!(a, b);
    }
}
