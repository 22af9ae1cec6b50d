//! The client side of the Phoenix channel wire format realtime-js speaks
//! (shared/reference/realtime.md §2–§8), reduced to what the generator sends and reads: joins,
//! heartbeats, broadcasts (text, or vsn 2's binary kind 3 out / kind 4 in), and the fields it
//! measures (`"t"` of its own broadcast payloads, a timestamp column of a Postgres change).
//!
//! Invariants: nothing here allocates per received message except a failed fast path's fallback;
//! a frame that does not parse is counted by the caller, never a panic.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The Supabase local-development demo secret (MadBase's default when none is configured).
pub const DEMO_JWT_SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";

/// The demo anon key signed with [`DEMO_JWT_SECRET`].
pub const DEMO_ANON_KEY: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4MTI5OTZ9.CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0";

/// The serializer (`vsn` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vsn {
    V1,
    V2,
}

impl Vsn {
    pub fn as_str(self) -> &'static str {
        match self {
            Vsn::V1 => "1.0.0",
            Vsn::V2 => "2.0.0",
        }
    }
}

/// A JSON string literal (quotes and escapes); the generator's own strings are plain ASCII.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

fn opt(s: Option<&str>) -> String {
    s.map(quote).unwrap_or_else(|| "null".to_owned())
}

/// One frame in the socket's serializer.
pub fn frame(
    vsn: Vsn,
    join_ref: Option<&str>,
    reference: Option<&str>,
    topic: &str,
    event: &str,
    payload: &str,
) -> String {
    match vsn {
        Vsn::V2 => format!("[{},{},{},{},{}]", opt(join_ref), opt(reference), quote(topic), quote(event), payload),
        Vsn::V1 => format!(
            "{{\"topic\":{},\"event\":{},\"payload\":{},\"ref\":{},\"join_ref\":{}}}",
            quote(topic),
            quote(event),
            payload,
            opt(reference),
            opt(join_ref)
        ),
    }
}

/// A `postgres_changes` binding of the join.
#[derive(Debug, Clone)]
pub struct ChangeBinding {
    pub event: String,
    pub schema: String,
    pub table: String,
    pub filter: Option<String>,
}

/// The `phx_join` payload realtime-js sends (reference §3), with broadcast self/ack off and an
/// empty presence key.
pub fn join_payload(access_token: &str, changes: Option<&ChangeBinding>) -> String {
    let changes = match changes {
        None => "[]".to_owned(),
        Some(b) => {
            let filter = b.filter.as_deref().map(|f| format!(",\"filter\":{}", quote(f))).unwrap_or_default();
            format!(
                "[{{\"event\":{},\"schema\":{},\"table\":{}{}}}]",
                quote(&b.event),
                quote(&b.schema),
                quote(&b.table),
                filter
            )
        }
    };
    format!(
        "{{\"config\":{{\"broadcast\":{{\"self\":false,\"ack\":false}},\"presence\":{{\"key\":\"\"}},\"postgres_changes\":{changes},\"private\":false}},\"access_token\":{}}}",
        quote(access_token)
    )
}

/// A user broadcast push as realtime-js sends it in vsn 2 (binary kind 3, JSON encoding).
pub fn broadcast_kind3(join_ref: &str, reference: &str, topic: &str, event: &str, payload: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(7 + join_ref.len() + reference.len() + topic.len() + event.len() + payload.len());
    out.extend_from_slice(&[
        3,
        join_ref.len() as u8,
        reference.len() as u8,
        topic.len() as u8,
        event.len() as u8,
        0,
        1,
    ]);
    out.extend_from_slice(join_ref.as_bytes());
    out.extend_from_slice(reference.as_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(payload.as_bytes());
    out
}

/// A user broadcast push as a text frame (vsn 1 always; vsn 2 with `--broadcast-format text`).
pub fn broadcast_text(vsn: Vsn, join_ref: &str, reference: &str, topic: &str, event: &str, payload: &str) -> String {
    let body = format!("{{\"type\":\"broadcast\",\"event\":{},\"payload\":{}}}", quote(event), payload);
    frame(vsn, Some(join_ref), Some(reference), topic, "broadcast", &body)
}

/// The user payload of a server kind-4 frame (vsn 2 binary user broadcast), if it is one.
pub fn kind4_payload(frame: &[u8]) -> Option<&[u8]> {
    if frame.len() < 5 || frame[0] != 4 {
        return None;
    }
    let skip = 5 + frame[1] as usize + frame[2] as usize + frame[3] as usize;
    frame.get(skip..)
}

/// One server text frame, its payload left as raw JSON.
#[derive(Debug)]
pub struct Inbound<'a> {
    pub reference: Option<&'a str>,
    pub topic: &'a str,
    pub event: &'a str,
    pub payload: &'a RawValue,
}

#[derive(Deserialize)]
struct V1Frame<'a> {
    #[serde(borrow)]
    topic: &'a str,
    #[serde(borrow)]
    event: &'a str,
    #[serde(borrow)]
    payload: &'a RawValue,
    #[serde(borrow, rename = "ref", default)]
    reference: Option<&'a str>,
}

type V2Frame<'a> = (Option<&'a str>, Option<&'a str>, &'a str, &'a str, &'a RawValue);

pub fn parse_text(vsn: Vsn, text: &str) -> Option<Inbound<'_>> {
    match vsn {
        Vsn::V2 => {
            let (_join_ref, reference, topic, event, payload): V2Frame<'_> = serde_json::from_str(text).ok()?;
            Some(Inbound { reference, topic, event, payload })
        }
        Vsn::V1 => {
            let f: V1Frame<'_> = serde_json::from_str(text).ok()?;
            Some(Inbound { reference: f.reference, topic: f.topic, event: f.event, payload: f.payload })
        }
    }
}

/// `{"status": …, "response": {"reason": …}}` of a `phx_reply`.
#[derive(Deserialize)]
pub struct Reply<'a> {
    #[serde(borrow, default)]
    pub status: Option<&'a str>,
    #[serde(borrow, default)]
    pub response: Option<&'a RawValue>,
}

/// `{"extension": …, "status": …, "message": …}` of a `system` push.
#[derive(Deserialize)]
pub struct System {
    #[serde(default)]
    pub extension: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The unsigned integer right after `key` (e.g. `"t":`), optional spaces allowed.
pub fn u64_after(hay: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(hay, key)? + key.len();
    let rest = &hay[at..];
    let rest = &rest[rest.iter().take_while(|b| **b == b' ').count()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The string value of `"<col>":"…"` inside the `"record":` object of a Postgres change.
pub fn record_string<'a>(payload: &'a [u8], col_key: &[u8]) -> Option<&'a [u8]> {
    let rec = find(payload, b"\"record\":")?;
    let body = &payload[rec..];
    let at = find(body, col_key)? + col_key.len();
    let rest = &body[at..];
    let rest = &rest[rest.iter().take_while(|b| **b == b' ').count()..];
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|b| *b == b'"')?;
    Some(&rest[..end])
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Microseconds since the Unix epoch of a `timestamptz` as PostgreSQL's text output or JSON
/// renders it: `2026-12-06 11:10:05.123456+00`, `2026-12-06T11:10:05.123456+00:00`, `…Z`.
pub fn parse_timestamp_us(s: &[u8]) -> Option<i64> {
    let num = |r: &[u8]| -> Option<i64> {
        if r.is_empty() || !r.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(r).ok()?.parse().ok()
    };
    if s.len() < 19
        || s[4] != b'-'
        || s[7] != b'-'
        || !(s[10] == b'T' || s[10] == b' ')
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(&s[0..4])?, num(&s[5..7])?, num(&s[8..10])?);
    let (h, mi, se) = (num(&s[11..13])?, num(&s[14..16])?, num(&s[17..19])?);
    let mut rest = &s[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|b| b.is_ascii_digit()).count();
        let digits = &frac[..n.min(6)];
        micros = num(digits)? * 10i64.pow(6 - digits.len() as u32);
        rest = &frac[n..];
    }
    let offset_s = match rest.first() {
        None | Some(b'Z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let parts: Vec<&[u8]> = rest[1..].split(|b| *b == b':').collect();
            let (oh, om) = match parts.as_slice() {
                [hhmm] if hhmm.len() == 4 => (num(&hhmm[..2])?, num(&hhmm[2..])?),
                [hh] => (num(hh)?, 0),
                [hh, mm, ..] => (num(hh)?, num(mm)?),
                _ => return None,
            };
            let o = oh * 3600 + om * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    Some(secs * 1_000_000 + micros)
}

/// The user id of subscriber `i` in `changes` mode; `bench/realtime_changes.sh`'s inserter writes
/// the same text: `'00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0')`.
pub fn user_uuid(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012x}")
}

/// An HS256 JWT over `claims` (a JSON object).
pub fn hs256(secret: &str, claims: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.as_bytes());
    let signing_input = format!("{header}.{body}");
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// An `authenticated` user's token for subscriber `i` (exp in 2100).
pub fn user_token(secret: &str, i: usize, now_s: u64) -> String {
    let claims = format!(
        "{{\"aud\":\"authenticated\",\"exp\":4102444800,\"iat\":{now_s},\"iss\":\"madbase-loadtest\",\"role\":\"authenticated\",\"sub\":\"{}\"}}",
        user_uuid(i)
    );
    hs256(secret, &claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind3_matches_the_captured_frame() {
        let f = broadcast_kind3("6", "7", "realtime:room1", "ev", "{\"hello\":\"world\"}");
        assert_eq!(&f[..7], &[3, 1, 1, 14, 2, 0, 1]);
        assert_eq!(&f[7..], b"67realtime:room1ev{\"hello\":\"world\"}");
    }

    #[test]
    fn kind4_payload_is_found() {
        let mut f = vec![4, 14, 2, 0, 1];
        f.extend_from_slice(b"realtime:room1ev{\"t\":12}");
        assert_eq!(kind4_payload(&f), Some(&b"{\"t\":12}"[..]));
        assert_eq!(u64_after(kind4_payload(&f).unwrap(), b"\"t\":"), Some(12));
    }

    #[test]
    fn frames_parse_in_both_versions() {
        let v2 = r#"["1","1","realtime:a","phx_reply",{"status":"ok","response":{"postgres_changes":[]}}]"#;
        let f = parse_text(Vsn::V2, v2).unwrap();
        assert_eq!((f.reference, f.topic, f.event), (Some("1"), "realtime:a", "phx_reply"));
        let v1 = r#"{"topic":"phoenix","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"2"}"#;
        let f = parse_text(Vsn::V1, v1).unwrap();
        assert_eq!((f.reference, f.topic, f.event), (Some("2"), "phoenix", "phx_reply"));
        let bc = r#"[null,null,"realtime:a","broadcast",{"type":"broadcast","event":"b","payload":{"t":5}}]"#;
        let f = parse_text(Vsn::V2, bc).unwrap();
        assert_eq!(u64_after(f.payload.get().as_bytes(), b"\"t\":"), Some(5));
    }

    #[test]
    fn timestamps_in_every_rendering() {
        let base = parse_timestamp_us(b"2026-12-06T11:10:05.123456+00:00").unwrap();
        assert_eq!(parse_timestamp_us(b"2026-12-06 11:10:05.123456+00"), Some(base));
        assert_eq!(parse_timestamp_us(b"2026-12-06T11:10:05.123456Z"), Some(base));
        assert_eq!(parse_timestamp_us(b"2026-12-06 12:10:05.123456+01"), Some(base));
        assert_eq!(parse_timestamp_us(b"2026-12-06 11:10:05.1234+00"), Some(base - 56));
        assert_eq!(parse_timestamp_us(b"1970-01-01 00:00:01+00"), Some(1_000_000));
    }

    #[test]
    fn record_column_is_found() {
        let p = br#"{"ids":[1],"data":{"columns":[{"name":"ts","type":"timestamptz"}],"record":{"id":1,"owner":"u","ts":"2026-12-06T11:10:05+00:00"}}}"#;
        assert_eq!(record_string(p, b"\"ts\":"), Some(&b"2026-12-06T11:10:05+00:00"[..]));
        assert_eq!(record_string(p, b"\"owner\":"), Some(&b"u"[..]));
    }

    #[test]
    fn jwt_has_three_parts_and_a_stable_signature() {
        let t = user_token(DEMO_JWT_SECRET, 7, 0);
        assert_eq!(t.split('.').count(), 3);
        assert_eq!(t, user_token(DEMO_JWT_SECRET, 7, 0));
        assert_eq!(user_uuid(255), "00000000-0000-4000-8000-0000000000ff");
    }
}
