//! Renders one value, as pgoutput sends it (the type's text output), to JSON text exactly as
//! PostgreSQL's `to_jsonb(value::type)::text` renders it in a session with `TimeZone=UTC`,
//! `DateStyle=ISO`, `IntervalStyle=postgres` and `extra_float_digits=1` (the replication
//! session's settings, `madbase_pg::replication`).
//!
//! Owns the rules of `to_jsonb`'s type categories: `bool` → `true`/`false`; `int2 int4 int8
//! float4 float8 numeric` → a JSON number in `numeric`'s canonical text (`1e+20` →
//! `100000000000000000000`, `-0` → `0`), or a string when it is not a JSON number (`NaN`,
//! `Infinity`, `-Infinity`); `json`/`jsonb` → the text as it is; `timestamp` → ISO 8601 with a
//! `T`; `timestamptz` → ISO 8601 with a `+HH:MM` offset; arrays (`_type`) → JSON arrays
//! (nested for several dimensions) of their elements rendered by the element's rules;
//! everything else → a JSON string escaped as PostgreSQL's `escape_json` escapes it.
//!
//! Invariants: the output is always valid JSON (an array literal that does not parse is
//! rendered as a string of its text); rendering never panics. Departures (documented, checked
//! by `tests/render_pg.rs` against a real server): `json` values are passed as they are (where
//! `to_jsonb` would re-format them as `jsonb`: same value, other spacing and key order);
//! composite types and types with a cast to `json` (hstore) are rendered as strings.
//!
//! Why here and not in PostgreSQL: the replication core receives text, and asking the database
//! to render every value would cost a round trip per transaction; the rules are few and exact.

/// How a scalar type renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarKind {
    /// `bool`.
    Bool,
    /// `int2 int4 int8 float4 float8 numeric`.
    Number,
    /// `json`, `jsonb`.
    Json,
    /// `timestamp`.
    Timestamp,
    /// `timestamptz`.
    TimestampTz,
    /// Everything else: a JSON string of the text.
    Text,
}

impl ScalarKind {
    /// The rules for a (base) type named `typname` (`pg_type.typname`).
    pub fn of_type_name(typname: &str) -> ScalarKind {
        match typname {
            "bool" => ScalarKind::Bool,
            "int2" | "int4" | "int8" | "float4" | "float8" | "numeric" => ScalarKind::Number,
            "json" | "jsonb" => ScalarKind::Json,
            "timestamp" => ScalarKind::Timestamp,
            "timestamptz" => ScalarKind::TimestampTz,
            _ => ScalarKind::Text,
        }
    }
}

/// How a column's values render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Scalar(ScalarKind),
    /// An array of `elem`, whose text form separates elements with `delimiter`
    /// (`pg_type.typdelim` of the element type: `,` for all but `box`).
    Array {
        elem: ScalarKind,
        delimiter: u8,
    },
}

impl ValueType {
    /// A scalar type by (base) name.
    pub fn scalar(typname: &str) -> ValueType {
        ValueType::Scalar(ScalarKind::of_type_name(typname))
    }
}

/// Renders `text` (the value's text output) as JSON, appending to `out`.
pub fn render_into(ty: ValueType, text: &str, out: &mut String) {
    match ty {
        ValueType::Scalar(kind) => render_scalar(kind, text, out),
        ValueType::Array { elem, delimiter } => {
            let mut p = ArrayParser { s: text.as_bytes(), i: 0, delimiter, depth: 0 };
            match p.parse() {
                Some(node) => render_node(elem, &node, out),
                None => escape_json(text, out),
            }
        }
    }
}

/// Renders `text` as JSON.
pub fn render(ty: ValueType, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    render_into(ty, text, &mut out);
    out
}

fn render_scalar(kind: ScalarKind, text: &str, out: &mut String) {
    match kind {
        ScalarKind::Bool => match text {
            "t" => out.push_str("true"),
            "f" => out.push_str("false"),
            other => escape_json(other, out),
        },
        ScalarKind::Number => match canonical_number(text) {
            Some(n) => out.push_str(&n),
            None => escape_json(text, out),
        },
        ScalarKind::Json => {
            if text.is_empty() {
                out.push_str("null");
            } else {
                out.push_str(text);
            }
        }
        ScalarKind::Timestamp => escape_json(&iso_t(text), out),
        ScalarKind::TimestampTz => {
            let mut t = iso_t(text);
            xsd_offset(&mut t);
            escape_json(&t, out)
        }
        ScalarKind::Text => escape_json(text, out),
    }
}

/// The first space (between date and time) becomes `T`; `infinity` stays.
fn iso_t(text: &str) -> String {
    let mut t = text.to_string();
    if let Some(i) = t.find(' ') {
        // The date part is digits and dashes: a space elsewhere (` BC` alone) is not it.
        if t[..i].bytes().all(|b| b.is_ascii_digit() || b == b'-') && i > 0 {
            t.replace_range(i..i + 1, "T");
        }
    }
    t
}

/// `+HH` → `+HH:MM` in the time zone offset after the time (before an optional ` BC`).
fn xsd_offset(t: &mut String) {
    let Some(tpos) = t.find('T') else { return };
    let end = t.find(" BC").unwrap_or(t.len());
    let Some(rel) = t[tpos..end].find(['+', '-']) else { return };
    let start = tpos + rel;
    let zone = &t[start + 1..end];
    if zone.len() == 2 && zone.bytes().all(|b| b.is_ascii_digit()) {
        t.insert_str(end, ":00");
    }
}

/// `numeric_out(numeric_in(text))` when `text` is a valid JSON number (what `to_jsonb` does
/// for its numeric category), else `None`.
pub fn canonical_number(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut i = 0;
    let negative = b.first() == Some(&b'-');
    if negative {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = &text[int_start..i];
    if int_digits.is_empty() {
        return None;
    }
    let mut frac_digits = "";
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = &text[s..i];
        if frac_digits.is_empty() {
            return None;
        }
    }
    let mut exp: i64 = 0;
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        let mut exp_negative = false;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            exp_negative = b[i] == b'-';
            i += 1;
        }
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &text[s..i];
        // numeric_in refuses exponents past ±1000; no float's output comes near.
        if digits.is_empty() || digits.len() > 4 {
            return None;
        }
        exp = digits.parse().ok()?;
        if exp > 1000 {
            return None;
        }
        if exp_negative {
            exp = -exp;
        }
    }
    if i != b.len() {
        return None;
    }
    if exp == 0
        && !(int_digits.len() > 1 && int_digits.starts_with('0'))
        && !(negative && all_zero(int_digits, frac_digits))
    {
        // Already canonical (what int and numeric output always are).
        return Some(text.to_string());
    }
    // Digits with the point after `point` of them; the scale numeric_in keeps.
    let digits: String = [int_digits, frac_digits].concat();
    let point = int_digits.len() as i64 + exp;
    let scale = (frac_digits.len() as i64 - exp).max(0);
    let n = digits.len() as i64;
    let mut int_part = String::new();
    let mut frac_part = String::new();
    if point <= 0 {
        int_part.push('0');
        frac_part.extend(std::iter::repeat_n('0', (-point) as usize));
        frac_part.push_str(&digits);
    } else if point >= n {
        int_part.push_str(&digits);
        int_part.extend(std::iter::repeat_n('0', (point - n) as usize));
    } else {
        int_part.push_str(&digits[..point as usize]);
        frac_part.push_str(&digits[point as usize..]);
    }
    debug_assert_eq!(frac_part.len() as i64, scale);
    let int_trimmed = int_part.trim_start_matches('0');
    let int_part = if int_trimmed.is_empty() { "0" } else { int_trimmed };
    let zero = all_zero(int_part, &frac_part);
    let mut out = String::with_capacity(int_part.len() + frac_part.len() + 2);
    if negative && !zero {
        out.push('-');
    }
    out.push_str(int_part);
    if !frac_part.is_empty() {
        out.push('.');
        out.push_str(&frac_part);
    }
    Some(out)
}

fn all_zero(a: &str, b: &str) -> bool {
    a.bytes().chain(b.bytes()).all(|c| c == b'0')
}

/// A JSON string of `text`, escaped as PostgreSQL's `escape_json` escapes it.
pub fn escape_json(text: &str, out: &mut String) {
    out.push('"');
    let mut from = 0;
    for (i, c) in text.char_indices() {
        let esc: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            c if (c as u32) < 0x20 => None,
            _ => continue,
        };
        out.push_str(&text[from..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => out.push_str(&format!("\\u{:04x}", c as u32)),
        }
        from = i + c.len_utf8();
    }
    out.push_str(&text[from..]);
    out.push('"');
}

/// One parsed element of an array literal.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Null,
    Value(String),
    List(Vec<Node>),
}

/// Parses PostgreSQL's array literal output (`array_out`): `{a,"b c",NULL,{…}}`, with an
/// optional leading dimension decoration (`[0:1]={…}`).
struct ArrayParser<'a> {
    s: &'a [u8],
    i: usize,
    delimiter: u8,
    depth: usize,
}

impl ArrayParser<'_> {
    fn parse(&mut self) -> Option<Node> {
        if self.s.first() == Some(&b'[') {
            let eq = self.s.iter().position(|&b| b == b'=')?;
            self.i = eq + 1;
        }
        self.skip_ws();
        let node = self.list()?;
        self.skip_ws();
        (self.i == self.s.len()).then_some(node)
    }

    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn list(&mut self) -> Option<Node> {
        // PostgreSQL allows at most 6 dimensions; stay far from the stack's limits.
        if self.s.get(self.i) != Some(&b'{') || self.depth >= 16 {
            return None;
        }
        self.depth += 1;
        self.i += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.s.get(self.i) == Some(&b'}') {
            self.i += 1;
            self.depth -= 1;
            return Some(Node::List(items));
        }
        loop {
            self.skip_ws();
            let item = match self.s.get(self.i)? {
                b'{' => self.list()?,
                b'"' => Node::Value(self.quoted()?),
                _ => self.unquoted()?,
            };
            items.push(item);
            self.skip_ws();
            match self.s.get(self.i)? {
                b'}' => {
                    self.i += 1;
                    self.depth -= 1;
                    return Some(Node::List(items));
                }
                &c if c == self.delimiter => self.i += 1,
                _ => return None,
            }
        }
    }

    fn quoted(&mut self) -> Option<String> {
        self.i += 1;
        let mut v = Vec::new();
        loop {
            match *self.s.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return String::from_utf8(v).ok();
                }
                b'\\' => {
                    v.push(*self.s.get(self.i + 1)?);
                    self.i += 2;
                }
                c => {
                    v.push(c);
                    self.i += 1;
                }
            }
        }
    }

    fn unquoted(&mut self) -> Option<Node> {
        let mut v = Vec::new();
        let mut escaped = false;
        // Trailing unescaped whitespace is not part of the value.
        let mut keep = 0;
        loop {
            let c = *self.s.get(self.i)?;
            if c == self.delimiter || c == b'}' {
                break;
            }
            if c == b'{' || c == b'"' {
                return None;
            }
            if c == b'\\' {
                v.push(*self.s.get(self.i + 1)?);
                self.i += 2;
                escaped = true;
                keep = v.len();
                continue;
            }
            v.push(c);
            self.i += 1;
            if !c.is_ascii_whitespace() {
                keep = v.len();
            }
        }
        v.truncate(keep);
        if v.is_empty() {
            return None;
        }
        if !escaped && v.eq_ignore_ascii_case(b"NULL") {
            return Some(Node::Null);
        }
        String::from_utf8(v).ok().map(Node::Value)
    }
}

fn render_node(elem: ScalarKind, node: &Node, out: &mut String) {
    match node {
        Node::Null => out.push_str("null"),
        Node::Value(v) => render_scalar(elem, v, out),
        Node::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render_node(elem, item, out);
            }
            out.push(']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(kind: &str, text: &str) -> String {
        render(ValueType::scalar(kind), text)
    }

    fn arr(elem: &str, text: &str) -> String {
        render(ValueType::Array { elem: ScalarKind::of_type_name(elem), delimiter: b',' }, text)
    }

    #[test]
    fn scalars() {
        assert_eq!(s("bool", "t"), "true");
        assert_eq!(s("bool", "f"), "false");
        assert_eq!(s("int8", "-42"), "-42");
        assert_eq!(s("float8", "1e+20"), "100000000000000000000");
        assert_eq!(s("float8", "1.5e-07"), "0.00000015");
        assert_eq!(s("float8", "-1.25e+02"), "-125");
        assert_eq!(s("float8", "-0"), "0");
        assert_eq!(s("float8", "NaN"), "\"NaN\"");
        assert_eq!(s("float4", "-Infinity"), "\"-Infinity\"");
        assert_eq!(s("numeric", "1.50"), "1.50");
        assert_eq!(s("jsonb", "{\"a\": 1}"), "{\"a\": 1}");
        assert_eq!(s("timestamp", "2024-01-01 00:00:00.123"), "\"2024-01-01T00:00:00.123\"");
        assert_eq!(s("timestamptz", "2024-01-01 00:00:00.123+00"), "\"2024-01-01T00:00:00.123+00:00\"");
        assert_eq!(s("timestamptz", "2024-01-01 00:00:00+05:30"), "\"2024-01-01T00:00:00+05:30\"");
        assert_eq!(s("timestamptz", "infinity"), "\"infinity\"");
        assert_eq!(s("text", "a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }

    #[test]
    fn arrays() {
        assert_eq!(arr("int4", "{1,2,NULL}"), "[1, 2, null]");
        assert_eq!(arr("int4", "{}"), "[]");
        assert_eq!(arr("int4", "{{1,2},{3,4}}"), "[[1, 2], [3, 4]]");
        assert_eq!(arr("int4", "[0:1]={5,6}"), "[5, 6]");
        assert_eq!(arr("text", "{\"a b\",\"c\\\"d\",\"NULL\",NULL,x}"), "[\"a b\", \"c\\\"d\", \"NULL\", null, \"x\"]");
        assert_eq!(arr("bool", "{t,f}"), "[true, false]");
        assert_eq!(arr("jsonb", "{\"{\\\"a\\\": 1}\",2}"), "[{\"a\": 1}, 2]");
        assert_eq!(arr("int4", "{1,2"), "\"{1,2\"");
        let boxes = ValueType::Array { elem: ScalarKind::Text, delimiter: b';' };
        assert_eq!(render(boxes, "{(1,1),(0,0);(2,2),(1,1)}"), "[\"(1,1),(0,0)\", \"(2,2),(1,1)\"]");
    }

    #[test]
    fn never_panics_on_odd_input() {
        for t in
            ["", "{", "}", "{{", "[", "[1:2]=", "{\"", "{\\", "{a,}", "{,}", "{{{{{{{{{{{{{{{{{{{{}}}}}}}}}}}}}}}}}}}}"]
        {
            let out = arr("int4", t);
            assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{t:?} → {out}");
        }
        for t in ["", "-", "1e", "1.", ".5", "1e9999999", "--1"] {
            let out = s("float8", t);
            assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{t:?} → {out}");
        }
    }
}
