//! WebSocket opening handshake (RFC 6455 §4.2) validation.
//!
//! Owns: deciding whether a request is an acceptable upgrade and computing
//! `Sec-WebSocket-Accept`. Invariant: only `GET` HTTP/1.1 requests without a body, with
//! `Upgrade: websocket`, `Connection: upgrade`, a 16-byte base64 key and version 13 are upgraded.

use base64::Engine;
use sha1::{Digest, Sha1};

use crate::head::{Framing, Request, Version};
use crate::response::Response;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

fn has_token(v: Option<&[u8]>, token: &str) -> bool {
    v.is_some_and(|v| v.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes())))
}

/// `Sec-WebSocket-Accept` for a client key.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Ok(accept value) for a valid upgrade request, else the refusal to send.
pub(crate) fn validate(req: &Request) -> Result<String, Box<Response>> {
    let bad = |m: &str| Box::new(Response::error_json(400, m));
    if req.method() != "GET" || req.version() != Version::Http11 {
        return Err(bad("websocket upgrade requires GET over HTTP/1.1"));
    }
    if req.framing != Framing::Length(0) {
        return Err(bad("websocket upgrade request must not have a body"));
    }
    if !has_token(req.header("upgrade"), "websocket") {
        return Err(bad("missing Upgrade: websocket"));
    }
    if !has_token(req.header("connection"), "upgrade") {
        return Err(bad("missing Connection: upgrade"));
    }
    if req.header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(Box::new(
            Response::error_json(426, "unsupported websocket version").header("sec-websocket-version", "13"),
        ));
    }
    let Some(key) = req.header("sec-websocket-key").map(<[u8]>::trim_ascii) else {
        return Err(bad("missing Sec-WebSocket-Key"));
    };
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(k) if k.len() == 16 => Ok(accept_key(key)),
        _ => Err(bad("invalid Sec-WebSocket-Key")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc_example() {
        assert_eq!(super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
