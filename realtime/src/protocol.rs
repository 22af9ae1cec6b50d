//! The Phoenix channel wire format realtime-js speaks (reference/realtime.md §2): decoding the
//! client's frames and encoding the server's, for both serializer versions.
//!
//! Owns: [`Vsn`], [`Inbound`] (one decoded client frame), the encoders of replies, pushes and
//! broadcasts, and [`BroadcastFrames`] (one broadcast encoded once per protocol version, shared by
//! every subscriber as reference-counted bytes).
//!
//! Invariants: decoding never panics and never allocates more than the frame's size (the
//! WebSocket layer bounds frames); every header string of a binary frame is at most 255 bytes
//! (its length is one byte), so an encoder that cannot honour that falls back to text or says
//! it cannot encode; JSON strings are escaped here, payloads that arrive as JSON are re-emitted
//! byte for byte (never re-serialised).

use bytes::{BufMut, Bytes, BytesMut};
use madbase_http::ws::{Message, Utf8Bytes};
use serde_json::Value;

/// The serializer a socket asked for with `vsn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vsn {
    /// `1.0.0`: JSON objects.
    V1,
    /// `2.0.0`: JSON arrays plus binary broadcast frames.
    V2,
}

impl Vsn {
    /// The `vsn` query parameter; absent means Phoenix's default, 1.0.0.
    pub fn parse(vsn: Option<&str>) -> Option<Vsn> {
        match vsn {
            None | Some("1.0.0") => Some(Vsn::V1),
            Some("2.0.0") => Some(Vsn::V2),
            Some(_) => None,
        }
    }
}

/// Why a client frame was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not valid JSON")]
    Json,
    #[error("frame has the wrong shape: {0}")]
    Shape(&'static str),
    #[error("binary frame kind {0} is not accepted from clients")]
    Kind(u8),
    #[error("binary frame is truncated")]
    Truncated,
}

/// A broadcast payload as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserPayload {
    /// JSON text.
    Json(Bytes),
    /// Raw bytes (a client `ArrayBuffer`, an `application/octet-stream` body).
    Binary(Bytes),
}

/// The payload of a client frame.
#[derive(Debug, Clone, PartialEq)]
pub enum InPayload {
    /// A text frame's payload.
    Json(Value),
    /// A vsn 2 binary user broadcast (kind 3).
    UserBroadcast { event: String, payload: UserPayload },
}

/// One client frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub join_ref: Option<String>,
    pub reference: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: InPayload,
}

fn ref_of(value: Value) -> Result<Option<String>, DecodeError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err(DecodeError::Shape("ref must be a string or null")),
    }
}

fn string_of(value: Value, what: &'static str) -> Result<String, DecodeError> {
    match value {
        Value::String(s) => Ok(s),
        _ => Err(DecodeError::Shape(what)),
    }
}

/// Decodes a text frame.
pub fn decode_text(vsn: Vsn, text: &str) -> Result<Inbound, DecodeError> {
    let value: Value = serde_json::from_str(text).map_err(|_| DecodeError::Json)?;
    match (vsn, value) {
        (Vsn::V2, Value::Array(items)) => {
            let [join_ref, reference, topic, event, payload]: [Value; 5] =
                items.try_into().map_err(|_| DecodeError::Shape("a vsn 2 frame is an array of 5"))?;
            Ok(Inbound {
                join_ref: ref_of(join_ref)?,
                reference: ref_of(reference)?,
                topic: string_of(topic, "topic must be a string")?,
                event: string_of(event, "event must be a string")?,
                payload: InPayload::Json(payload),
            })
        }
        (Vsn::V1, Value::Object(mut map)) => Ok(Inbound {
            join_ref: ref_of(map.remove("join_ref").unwrap_or(Value::Null))?,
            reference: ref_of(map.remove("ref").unwrap_or(Value::Null))?,
            topic: string_of(map.remove("topic").unwrap_or(Value::Null), "topic must be a string")?,
            event: string_of(map.remove("event").unwrap_or(Value::Null), "event must be a string")?,
            payload: InPayload::Json(map.remove("payload").unwrap_or(Value::Null)),
        }),
        (Vsn::V1, _) => Err(DecodeError::Shape("a vsn 1 frame is a JSON object")),
        (Vsn::V2, _) => Err(DecodeError::Shape("a vsn 2 frame is a JSON array")),
    }
}

/// Kind of a client user broadcast push.
const KIND_USER_BROADCAST_PUSH: u8 = 3;
/// Kind of a server user broadcast.
const KIND_USER_BROADCAST: u8 = 4;

fn utf8(bytes: &[u8]) -> Result<String, DecodeError> {
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| DecodeError::Shape("header strings must be UTF-8"))
}

/// Decodes a vsn 2 binary frame (kind 3, the only kind realtime-js sends).
pub fn decode_binary(frame: &Bytes) -> Result<Inbound, DecodeError> {
    let (&kind, rest) = frame.split_first().ok_or(DecodeError::Truncated)?;
    if kind != KIND_USER_BROADCAST_PUSH {
        return Err(DecodeError::Kind(kind));
    }
    let header = rest.get(..6).ok_or(DecodeError::Truncated)?;
    let lens = [header[0], header[1], header[2], header[3], header[4]].map(usize::from);
    let encoding = header[5];
    let mut at: usize = 1 + 6;
    let mut take = |len: usize| -> Result<Bytes, DecodeError> {
        let end = at.checked_add(len).filter(|&end| end <= frame.len()).ok_or(DecodeError::Truncated)?;
        let part = frame.slice(at..end);
        at = end;
        Ok(part)
    };
    let join_ref = take(lens[0])?;
    let reference = take(lens[1])?;
    let topic = take(lens[2])?;
    let event = take(lens[3])?;
    let _metadata = take(lens[4])?;
    let data = frame.slice(at..);
    let payload = match encoding {
        0 => UserPayload::Binary(data),
        1 => {
            std::str::from_utf8(&data).map_err(|_| DecodeError::Shape("a JSON payload must be UTF-8"))?;
            UserPayload::Json(data)
        }
        _ => return Err(DecodeError::Shape("payload encoding must be 0 or 1")),
    };
    let nonempty = |b: Bytes| -> Result<Option<String>, DecodeError> {
        if b.is_empty() {
            Ok(None)
        } else {
            utf8(&b).map(Some)
        }
    };
    Ok(Inbound {
        join_ref: nonempty(join_ref)?,
        reference: nonempty(reference)?,
        topic: utf8(&topic)?,
        event: "broadcast".to_owned(),
        payload: InPayload::UserBroadcast { event: utf8(&event)?, payload },
    })
}

/// Appends `s` as a JSON string.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// A JSON string of `s`.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_str(&mut out, s);
    out
}

fn push_ref(out: &mut String, r: Option<&str>) {
    match r {
        Some(r) => push_json_str(out, r),
        None => out.push_str("null"),
    }
}

/// One server frame: `[join_ref, ref, topic, event, payload]` (vsn 2) or the same as an object
/// (vsn 1). `payload` is JSON text.
pub fn frame(
    vsn: Vsn,
    join_ref: Option<&str>,
    reference: Option<&str>,
    topic: &str,
    event: &str,
    payload: &str,
) -> Message {
    let mut out = String::with_capacity(payload.len() + topic.len() + event.len() + 48);
    match vsn {
        Vsn::V2 => {
            out.push('[');
            push_ref(&mut out, join_ref);
            out.push(',');
            push_ref(&mut out, reference);
            out.push(',');
            push_json_str(&mut out, topic);
            out.push(',');
            push_json_str(&mut out, event);
            out.push(',');
            out.push_str(payload);
            out.push(']');
        }
        Vsn::V1 => {
            out.push_str("{\"topic\":");
            push_json_str(&mut out, topic);
            out.push_str(",\"event\":");
            push_json_str(&mut out, event);
            out.push_str(",\"payload\":");
            out.push_str(payload);
            out.push_str(",\"ref\":");
            push_ref(&mut out, reference);
            if join_ref.is_some() {
                out.push_str(",\"join_ref\":");
                push_ref(&mut out, join_ref);
            }
            out.push('}');
        }
    }
    Message::text(out)
}

/// A `phx_reply`: `{"status":…,"response":…}` echoing the request's refs.
pub fn reply(
    vsn: Vsn,
    join_ref: Option<&str>,
    reference: Option<&str>,
    topic: &str,
    ok: bool,
    response: &str,
) -> Message {
    let status = if ok { "ok" } else { "error" };
    let payload = format!("{{\"status\":\"{status}\",\"response\":{response}}}");
    frame(vsn, join_ref, reference, topic, "phx_reply", &payload)
}

/// An error reply `{"reason":…}`.
pub fn error_reply(vsn: Vsn, join_ref: Option<&str>, reference: Option<&str>, topic: &str, reason: &str) -> Message {
    reply(vsn, join_ref, reference, topic, false, &format!("{{\"reason\":{}}}", json_str(reason)))
}

/// A `system` message's payload.
pub fn system_payload(extension: &str, ok: bool, message: &str, channel: &str) -> String {
    format!(
        "{{\"extension\":{},\"status\":\"{}\",\"message\":{},\"channel\":{}}}",
        json_str(extension),
        if ok { "ok" } else { "error" },
        json_str(message),
        json_str(channel)
    )
}

/// A broadcast encoded once for each protocol version; subscribers share the bytes.
#[derive(Debug, Clone)]
pub struct BroadcastFrames {
    /// For vsn 1 sockets; `None` when the payload is binary (vsn 1 cannot carry it).
    pub v1: Option<Message>,
    /// For vsn 2 sockets (text, or a kind-4 binary frame).
    pub v2: Message,
}

impl BroadcastFrames {
    /// The frame for a socket of `vsn`.
    pub fn for_vsn(&self, vsn: Vsn) -> Option<&Message> {
        match vsn {
            Vsn::V1 => self.v1.as_ref(),
            Vsn::V2 => Some(&self.v2),
        }
    }

    /// Bytes of the largest frame (for accounting).
    pub fn len(&self) -> usize {
        self.v2.len().max(self.v1.as_ref().map_or(0, Message::len))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The `{"type":"broadcast","event":…,"payload":…[,"meta":…]}` object of a text broadcast.
fn broadcast_object(event: &str, payload_json: &str, meta: Option<&str>) -> String {
    let mut out = String::with_capacity(payload_json.len() + event.len() + 48);
    out.push_str("{\"type\":\"broadcast\",\"event\":");
    push_json_str(&mut out, event);
    out.push_str(",\"payload\":");
    out.push_str(payload_json);
    if let Some(meta) = meta {
        out.push_str(",\"meta\":");
        out.push_str(meta);
    }
    out.push('}');
    out
}

/// A kind-4 frame, if the topic and event fit the one-byte lengths.
fn user_broadcast_binary(topic: &str, event: &str, meta: Option<&str>, payload: &UserPayload) -> Option<Message> {
    let meta = meta.unwrap_or("");
    let (encoding, data) = match payload {
        UserPayload::Binary(b) => (0u8, b),
        UserPayload::Json(b) => (1u8, b),
    };
    let lens = [topic.len(), event.len(), meta.len()];
    if lens.iter().any(|&l| l > 255) {
        return None;
    }
    let mut out = BytesMut::with_capacity(5 + lens.iter().sum::<usize>() + data.len());
    out.put_u8(KIND_USER_BROADCAST);
    for len in lens {
        out.put_u8(len as u8);
    }
    out.put_u8(encoding);
    out.put_slice(topic.as_bytes());
    out.put_slice(event.as_bytes());
    out.put_slice(meta.as_bytes());
    out.put_slice(data);
    Some(Message::binary(out.freeze()))
}

/// Encodes one broadcast on `topic` (the full `realtime:…` topic) for every protocol version.
/// `binary_in`: the message arrived as a binary frame (kind 3, or an octet-stream REST body),
/// so vsn 2 sockets get a binary frame too; text in, text out. `None` when no version can
/// carry it (a binary payload on a topic too long for the binary header).
pub fn broadcast_frames(
    topic: &str,
    event: &str,
    payload: &UserPayload,
    meta: Option<&str>,
    binary_in: bool,
) -> Option<BroadcastFrames> {
    let text = |vsn: Vsn, json: &Bytes| {
        // UserPayload::Json is checked UTF-8 where it is made.
        let json = std::str::from_utf8(json).unwrap_or("null");
        frame(vsn, None, None, topic, "broadcast", &broadcast_object(event, json, meta))
    };
    match payload {
        UserPayload::Binary(_) => {
            Some(BroadcastFrames { v1: None, v2: user_broadcast_binary(topic, event, meta, payload)? })
        }
        UserPayload::Json(json) => {
            let v2 = if binary_in { user_broadcast_binary(topic, event, meta, payload) } else { None };
            Some(BroadcastFrames { v1: Some(text(Vsn::V1, json)), v2: v2.unwrap_or_else(|| text(Vsn::V2, json)) })
        }
    }
}

/// Text of a message, for tests and logs.
pub fn text_of(message: &Message) -> Option<&str> {
    match message {
        Message::Text(t) => Some(t.as_str()),
        _ => None,
    }
}

/// A static text message.
pub fn static_text(s: &'static str) -> Message {
    Message::Text(Utf8Bytes::from_static(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The captured kind-3 frame of reference/realtime.md §2.2.
    const CAPTURED: &str = "0301010e02000136377265616c74696d653a726f6f6d3165767b2268656c6c6f223a22776f726c64227d";

    fn hex(s: &str) -> Bytes {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect::<Vec<u8>>().into()
    }

    #[test]
    fn decodes_the_captured_binary_push() {
        let inbound = decode_binary(&hex(CAPTURED)).unwrap();
        assert_eq!(inbound.join_ref.as_deref(), Some("6"));
        assert_eq!(inbound.reference.as_deref(), Some("7"));
        assert_eq!(inbound.topic, "realtime:room1");
        assert_eq!(
            inbound.payload,
            InPayload::UserBroadcast {
                event: "ev".into(),
                payload: UserPayload::Json(Bytes::from_static(br#"{"hello":"world"}"#))
            }
        );
    }

    #[test]
    fn truncated_and_foreign_binary_frames_are_errors() {
        assert_eq!(decode_binary(&Bytes::new()), Err(DecodeError::Truncated));
        assert_eq!(decode_binary(&Bytes::from_static(&[4, 1])), Err(DecodeError::Kind(4)));
        assert_eq!(decode_binary(&Bytes::from_static(&[3, 9, 0, 0, 0, 0, 1])), Err(DecodeError::Truncated));
        for len in 0..CAPTURED.len() / 2 {
            let frame = hex(CAPTURED).slice(..len);
            let _ = decode_binary(&frame);
        }
    }

    #[test]
    fn text_frames_of_both_versions() {
        let v2 = decode_text(Vsn::V2, r#"["6","6","realtime:room1","phx_join",{"config":{}}]"#).unwrap();
        assert_eq!((v2.join_ref.as_deref(), v2.event.as_str()), (Some("6"), "phx_join"));
        let v1 = decode_text(Vsn::V1, r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"8"}"#).unwrap();
        assert_eq!((v1.join_ref, v1.reference.as_deref(), v1.topic.as_str()), (None, Some("8"), "phoenix"));
        assert!(decode_text(Vsn::V2, r#"{"topic":"x"}"#).is_err());
        assert!(decode_text(Vsn::V1, "[1,2]").is_err());
        assert!(decode_text(Vsn::V2, "[null,null,1,\"e\",{}]").is_err());
        assert_eq!(decode_text(Vsn::V2, "not json"), Err(DecodeError::Json));
    }

    #[test]
    fn replies_and_broadcasts_encode_as_realtime_js_reads_them() {
        let r = reply(Vsn::V2, None, Some("8"), "phoenix", true, "{}");
        assert_eq!(text_of(&r), Some(r#"[null,"8","phoenix","phx_reply",{"status":"ok","response":{}}]"#));
        let r = reply(Vsn::V1, Some("6"), Some("6"), "realtime:a", true, "{}");
        assert_eq!(
            text_of(&r),
            Some(
                r#"{"topic":"realtime:a","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"6","join_ref":"6"}"#
            )
        );
        let json = UserPayload::Json(Bytes::from_static(br#"{"hello":"world"}"#));
        let frames = broadcast_frames("realtime:room1", "ev", &json, None, true).unwrap();
        assert_eq!(
            frames.v2,
            Message::binary(
                hex("040e020001").iter().copied().chain(*b"realtime:room1ev{\"hello\":\"world\"}").collect::<Vec<u8>>()
            )
        );
        assert_eq!(
            text_of(frames.v1.as_ref().unwrap()),
            Some(
                r#"{"topic":"realtime:room1","event":"broadcast","payload":{"type":"broadcast","event":"ev","payload":{"hello":"world"}},"ref":null}"#
            )
        );
        let frames = broadcast_frames("realtime:room1", "ev", &json, None, false).unwrap();
        assert_eq!(
            text_of(&frames.v2),
            Some(
                r#"[null,null,"realtime:room1","broadcast",{"type":"broadcast","event":"ev","payload":{"hello":"world"}}]"#
            )
        );
        let binary = UserPayload::Binary(Bytes::from_static(&[1, 2]));
        let frames = broadcast_frames("realtime:r", "e", &binary, None, true).unwrap();
        assert!(frames.v1.is_none());
        assert!(broadcast_frames(&"t".repeat(300), "e", &binary, None, true).is_none());
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\n\u{1}é"), r#""a\"b\\c\n\u0001é""#);
    }
}
