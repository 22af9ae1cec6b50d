//! Realtime's HTTP API: `POST /realtime/v1/api/broadcast` (the batch `channel.send()` uses
//! without a socket), `POST /realtime/v1/api/broadcast/{topic}/events/{event}` (`httpSend`) and
//! the service-role inspector (reference/realtime.md §6.2).
//!
//! Owns: the HTTP side of broadcasting — authentication (`apikey`, then the bearer token for
//! the caller's identity), the body bounds (`max_payload_size_in_kb`), Supabase's status codes
//! (202 on success, 401, 403, 413, 415, 422) and error bodies (`{"error":…}`).
//!
//! Invariants: a broadcast sent here is encoded once and fanned out exactly as a socket's is; a
//! private topic needs the caller's write policy; nothing is sent unless the whole request is
//! valid.

use std::sync::Arc;

use bytes::Bytes;
use madbase_http::{Body, BodyError, Request, Response};
use serde_json::Value;

use crate::hub::Broadcast;
use crate::protocol::{broadcast_frames, json_str, UserPayload};
use crate::session::Caller;
use crate::{private, Inner};

/// `{"error": message}` with `status`.
pub fn error(status: u16, message: &str) -> Response {
    Response::json(status, format!("{{\"error\":{}}}", json_str(message)))
}

/// The caller of a REST request: `apikey` must be a valid key; the bearer token (else the key)
/// is the identity.
fn caller(inner: &Inner, req: &Request) -> Result<Caller, Box<Response>> {
    let query = req.query_pairs();
    let apikey = req
        .header_str("apikey")
        .map(str::to_owned)
        .or_else(|| query.iter().find(|(k, _)| k == "apikey").map(|(_, v)| v.clone()));
    let bearer = req
        .header_str("authorization")
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let Some(token) = bearer.or(apikey) else {
        return Err(Box::new(Response::json(401, r#"{"message":"No API key found in request"}"#)));
    };
    let verified = inner.ctx.tokens.borrow_mut().verify(&token);
    match verified {
        Ok(claims) => match claims.role() {
            Some(role) if !madbase_core::identity::SERVICE_ROLES.contains(&role) && !role.is_empty() => {
                Ok(Caller { token: token.clone(), role: role.to_owned(), claims })
            }
            _ => Err(Box::new(error(401, "Unauthorized"))),
        },
        Err(_) => Err(Box::new(Response::json(401, r#"{"message":"Invalid authentication credentials"}"#))),
    }
}

async fn collect(inner: &Inner, body: Body, max: usize) -> Result<Bytes, Response> {
    let _ = inner;
    body.collect(max as u64).await.map_err(|e| match e {
        BodyError::TooLarge { .. } => error(413, "Payload too large"),
        BodyError::Busy => error(503, "Server busy, please retry"),
        BodyError::Timeout => error(408, "Timed out reading the request body"),
        other => error(400, &other.to_string()),
    })
}

/// May `caller` send to `sub_topic`? Public topics: yes; private: the write policy.
async fn may_send(inner: &Inner, caller: &Caller, sub_topic: &str, private_topic: bool) -> Result<bool, Response> {
    if !private_topic {
        return Ok(!inner.settings.private_only);
    }
    match private::check(inner, caller, sub_topic).await {
        Ok(p) => Ok(p.write_broadcast),
        Err(reason) => Err(error(500, &reason)),
    }
}

fn publish(inner: &Inner, sub_topic: &str, private_topic: bool, event: &str, payload: UserPayload, binary: bool) {
    let topic = format!("realtime:{sub_topic}");
    if let Some(frames) = broadcast_frames(&topic, event, &payload, None, binary) {
        inner.hub.publish_broadcast(Arc::new(Broadcast { topic: (topic.into(), private_topic), frames, origin: None }));
    }
}

fn flag(query: &[(String, String)], key: &str) -> bool {
    query.iter().any(|(k, v)| k == key && v == "true")
}

/// `POST /api/broadcast/{topic}/events/{event}`: the body is the payload (JSON or raw bytes).
pub async fn broadcast_one(inner: &Inner, req: &Request, body: Body) -> Response {
    let caller = match caller(inner, req) {
        Ok(c) => c,
        Err(refusal) => return *refusal,
    };
    let rest = &req.path()["/realtime/v1/api/broadcast/".len()..];
    let Some((topic, event)) = rest.split_once("/events/") else {
        return Response::json(404, r#"{"message":"no Route matched with those values"}"#);
    };
    let decode = |s: &str| percent_decode(s);
    let (Some(sub_topic), Some(event)) = (decode(topic), decode(event)) else {
        return error(422, "topic and event must be UTF-8");
    };
    if sub_topic.is_empty() || event.is_empty() {
        return error(422, "topic and event are required");
    }
    let binary =
        match req.header_str("content-type").map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase()) {
            None => false,
            Some(c) if c == "application/json" => false,
            Some(c) if c == "application/octet-stream" => true,
            Some(_) => return error(415, "Unsupported Media Type. Use application/json or application/octet-stream"),
        };
    let bytes = match collect(inner, body, inner.settings.max_payload_bytes()).await {
        Ok(b) => b,
        Err(refusal) => return refusal,
    };
    let payload = if binary {
        UserPayload::Binary(bytes)
    } else {
        let text = if bytes.iter().all(u8::is_ascii_whitespace) { Bytes::from_static(b"{}") } else { bytes };
        if serde_json::from_slice::<serde::de::IgnoredAny>(&text).is_err() {
            return error(422, "The body is not valid JSON");
        }
        UserPayload::Json(text)
    };
    let query = req.query_pairs();
    let private_topic = flag(&query, "private");
    match may_send(inner, &caller, &sub_topic, private_topic).await {
        Ok(true) => {}
        Ok(false) => return error(403, "You do not have permissions to write to this Channel topic"),
        Err(refusal) => return refusal,
    }
    publish(inner, &sub_topic, private_topic, &event, payload, binary);
    Response::new(202)
}

/// `POST /api/broadcast`: `{"messages":[{"topic","event","payload","private"}]}`.
pub async fn broadcast_batch(inner: &Inner, req: &Request, body: Body) -> Response {
    let caller = match caller(inner, req) {
        Ok(c) => c,
        Err(refusal) => return *refusal,
    };
    let limit = inner.settings.max_payload_bytes() * 4;
    let bytes = match collect(inner, body, limit).await {
        Ok(b) => b,
        Err(refusal) => return refusal,
    };
    let Ok(Value::Object(mut root)) = serde_json::from_slice::<Value>(&bytes) else {
        return error(422, "The body must be a JSON object with a messages array");
    };
    let Some(Value::Array(messages)) = root.remove("messages") else {
        return error(422, "messages is required and must be an array");
    };
    let mut checked = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let topic = m.get("topic").and_then(Value::as_str).filter(|t| !t.is_empty());
        let event = m.get("event").and_then(Value::as_str).filter(|t| !t.is_empty());
        let (Some(topic), Some(event)) = (topic, event) else {
            return error(422, &format!("messages[{i}] needs a topic and an event"));
        };
        let payload = m.get("payload").cloned().unwrap_or(Value::Object(Default::default()));
        if !payload.is_object() {
            return error(422, &format!("messages[{i}].payload must be an object"));
        }
        let text = payload.to_string();
        if text.len() > inner.settings.max_payload_bytes() {
            return error(413, "Payload too large");
        }
        let private_topic = m.get("private").and_then(Value::as_bool).unwrap_or(false);
        match may_send(inner, &caller, topic, private_topic).await {
            Ok(true) => {}
            Ok(false) => return error(403, "You do not have permissions to write to this Channel topic"),
            Err(refusal) => return refusal,
        }
        checked.push((topic.to_owned(), private_topic, event.to_owned(), text));
    }
    for (topic, private_topic, event, text) in checked {
        publish(inner, &topic, private_topic, &event, UserPayload::Json(Bytes::from(text)), false);
    }
    Response::new(202)
}

/// At most this many sockets are listed per shard (the totals count all of them).
const INSPECT_SOCKETS_MAX: usize = 1000;

/// `GET /api/inspector` (service role): every shard's live sockets, their channels and
/// subscription counts.
pub async fn inspector(inner: &Inner, req: &Request) -> Response {
    match caller(inner, req) {
        Ok(c) if c.role == "service_role" => {}
        Ok(_) => return error(403, "the inspector needs the service_role key"),
        Err(refusal) => return *refusal,
    }
    let shards = inner.hub.inspect(shard_view(inner)).await;
    let body = serde_json::json!({ "connections": inner.shared.users(), "shards": shards });
    Response::json(200, body.to_string())
}

/// This shard's view for the inspector.
pub fn shard_view(inner: &Inner) -> Value {
    let sessions = inner.sessions.borrow();
    let sockets: Vec<Value> =
        sessions.values().filter_map(std::rc::Weak::upgrade).take(INSPECT_SOCKETS_MAX).map(|s| s.describe()).collect();
    let c = &inner.hub.counters;
    serde_json::json!({
        "shard": inner.hub.shard,
        "connections": c.connections.get(),
        "channels": c.channels.get(),
        "sockets": sockets,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes()).next().map(|(_, v)| v.into_owned())
}
