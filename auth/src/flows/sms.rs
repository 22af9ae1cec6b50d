//! Text messages: the pluggable [`SmsSender`], the default one (writes the message to the log and
//! keeps the last [`OUTBOX_CAPACITY`] for `GET /auth/v1/admin/mail`, like the mail outbox), and
//! the SMS body from `[auth.sms] template`.
//!
//! Owns the sender interface, the default [`LogSms`] and its [`SmsOutbox`]; Auth's shared state
//! holds the sender in use (`AuthShared::with_sms_sender` replaces the default) and the outbox.
//! Invariants: the outbox is bounded; a sender is called only after the batch that
//! stored the code committed; numbers of `[auth.sms.test_otp]` never reach a sender.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// Messages the default sender keeps.
pub const OUTBOX_CAPACITY: usize = 100;

/// What a sender returns: the provider's message id, or why it failed.
pub type SendResult = Result<String, String>;

/// Sends one text message (an SMS provider, a WhatsApp gateway, a test double).
pub trait SmsSender: Send + Sync {
    /// Sends `body` to the E.164 number `to` (without `+`) over `channel` (`sms`, `whatsapp`).
    fn send<'a>(
        &'a self,
        to: &'a str,
        body: &'a str,
        channel: &'a str,
    ) -> Pin<Box<dyn Future<Output = SendResult> + 'a>>;
}

/// The messages the default sender recorded, newest [`OUTBOX_CAPACITY`] (a cold path: one lock
/// per message).
#[derive(Default)]
pub struct SmsOutbox(Mutex<VecDeque<Value>>);

impl SmsOutbox {
    fn record(&self, message: Value) {
        let mut outbox = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if outbox.len() == OUTBOX_CAPACITY {
            outbox.pop_front();
        }
        outbox.push_back(message);
    }

    /// The recorded messages, oldest first.
    pub fn list(&self) -> Vec<Value> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned().collect()
    }
}

/// The default sender: logs the message and records it in the outbox.
pub struct LogSms {
    pub outbox: Arc<SmsOutbox>,
}

impl SmsSender for LogSms {
    fn send<'a>(
        &'a self,
        to: &'a str,
        body: &'a str,
        channel: &'a str,
    ) -> Pin<Box<dyn Future<Output = SendResult> + 'a>> {
        Box::pin(async move {
            let id = crate::crypto::random::uuid_v4();
            tracing::info!(to, channel, body, "auth: SMS (no SMS provider configured; recorded, not sent)");
            self.outbox.record(
                json!({"id": id, "to": to, "channel": channel, "body": body, "sent_at": madbase_core::jwt::unix_now()}),
            );
            Ok(id)
        })
    }
}

/// The SMS body: `template` with `{{ .Code }}` (any spacing) replaced by the code.
pub fn body(template: &str, code: &str) -> String {
    let mut out = String::with_capacity(template.len() + code.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else { break };
        let inner = rest[start + 2..start + end].trim();
        out.push_str(&rest[..start]);
        if inner == ".Code" {
            out.push_str(code);
        } else {
            out.push_str(&rest[start..start + end + 2]);
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

/// The fixed code of a `[auth.sms.test_otp]` number, if `phone` (without `+`) is one.
pub fn test_otp<'s>(settings: &'s crate::settings::Auth, phone: &str) -> Option<&'s str> {
    settings
        .sms
        .test_otp
        .iter()
        .find(|(number, _)| number.trim().trim_start_matches('+') == phone)
        .map(|(_, code)| code.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template() {
        assert_eq!(body("Your code is {{ .Code }}", "123456"), "Your code is 123456");
        assert_eq!(body("{{.Code}} / {{ .Other }}", "1"), "1 / {{ .Other }}");
        assert_eq!(body("no code {{", "1"), "no code {{");
    }

    #[test]
    fn outbox_is_bounded() {
        let outbox = SmsOutbox::default();
        for i in 0..(OUTBOX_CAPACITY + 5) {
            outbox.record(json!({"n": i}));
        }
        let kept = outbox.list();
        assert_eq!(kept.len(), OUTBOX_CAPACITY);
        assert_eq!(kept[0]["n"], 5);
    }
}
