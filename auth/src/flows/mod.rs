//! The email and phone flows (reference/auth.md §4.1 unconfirmed sign-ups, §4.3–§4.5): `/otp`,
//! `/magiclink`, `/verify` (POST and the links' GET), `/recover`, `/resend`,
//! `/reauthenticate`, `PUT /user`, the PKCE exchange (`/token?grant_type=pkce`), `/invite`,
//! `/admin/generate_link` and MadBase's `GET /admin/mail` — GoTrue's `otp.go`, `magic_link.go`,
//! `verify.go`, `recover.go`, `resend.go`, `reauthenticate.go`, `user.go`, `invite.go`,
//! `mail.go` and `pkce.go`, re-done on statement batches.
//!
//! Owns the one-time tokens' life: a code is drawn here ([`random::numeric_otp`]), stored as
//! GoTrue stores it (the hash in the user's token column and in `auth.one_time_tokens` with its
//! `token_type`, `pkce_`-prefixed in a PKCE flow, with its `*_sent_at`), sent (mail: [`mail`];
//! SMS: [`sms`]), verified and consumed (`_madbase.auth_verify`); and the flow state of PKCE
//! flows. The database side of each step is a function of `migrations/0006_auth_flows.sql`.
//!
//! Invariants:
//! - a token is single use: verifying it clears its column and the user's one-time-token rows in
//!   the same transaction that starts the session; it expires `[auth.email] otp_expiry` seconds
//!   (SMS: 60 s, GoTrue's `sms.otp_exp`) after it was sent; presented tokens are compared as
//!   SHA-256 digests (`_madbase.auth_token_eq`), so a comparison's time tells nothing about how
//!   much of a guess matched, and the nonce of `PUT /user` with [`crate::crypto::otp::ct_eq`];
//! - a refusal is raised inside the batch (SQLSTATE `MBFL0`, [`flow_error`]), so a refused or
//!   failed request commits nothing: no half-made user, token, flow state or session;
//! - a message goes out only after the batch that recorded its token committed (a pipelined
//!   batch cannot stay open across an SMTP conversation). A message that cannot be sent answers
//!   GoTrue's 500 ("Error sending confirmation email", "Error sending magic link email", …; SMS:
//!   422 `sms_send_failed`) and its `*_sent_at` is cleared again, so `/resend` (or the same
//!   request) works at once; the stored token stays, unusable since nobody received its code;
//! - one round trip per request, except where a decision needs data first: a flow that may
//!   create a user (`/otp`, `/magiclink`, an unconfirmed `/signup` of a taken address, `/invite`
//!   and `generate_link` of a taken address) tries the common case in one batch and takes a second
//!   one for the other; `PUT /user` with an email, phone or password reads the user first (the
//!   password must be compared with the stored hash and hashed off the shard between the two);
//! - redirects go only where [`redirect`] allows (else to `site_url`), as GoTrue.
//!
//! Departures from GoTrue: users created by `/otp`, `/magiclink`, `generate_link` (magiclink)
//! and invitations have no password (GoTrue stores a random one nobody knows; hashing it costs
//! a bcrypt round for nothing); the email limiter is checked after the token is stored (a
//! refused message leaves an unusable token, as a failed send does).

mod admin_links;
mod mail;
mod otp;
mod pkce;
mod recover;
pub mod redirect;
pub mod sms;
mod update;
mod verify;

use madbase_http::{Body, Response};
use madbase_pg::{PgError, Statement, StatementResult};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::call::Call;
use crate::crypto::{pkce as pkce_crypto, random};
use crate::error::{AuthError, AuthResult};
use crate::AuthService;

pub use admin_links::{generate_link, invite, mail_outbox};
pub use pkce::pkce_grant;
pub use update::update_user;

/// Longest token, token hash or code accepted from a request.
pub const MAX_TOKEN: usize = 256;

/// Everything of `/auth/v1` not routed elsewhere.
pub async fn route(auth: &AuthService, call: &Call<'_>, body: Body) -> AuthResult<Response> {
    match (call.req.method(), call.path) {
        ("POST", "/otp") => otp::otp(auth, call, body).await,
        ("POST", "/magiclink") => otp::magiclink(auth, call, body).await,
        ("POST", "/verify") => verify::post(auth, call, body).await,
        ("GET", "/verify") => verify::get(auth, call).await,
        ("POST", "/recover") => recover::recover(auth, call, body).await,
        ("POST", "/resend") => recover::resend(auth, call, body).await,
        ("GET", "/reauthenticate") => recover::reauthenticate(auth, call).await,
        _ => Err(AuthError::not_found()),
    }
}

/// The token a step issues (`_madbase.auth_send`'s `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Confirmation,
    PhoneConfirmation,
    Invite,
    MagicLink,
    Recovery,
    Reauthentication,
    EmailChange,
    EmailChangeCurrent,
    EmailChangeNew,
    PhoneChange,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Confirmation => "confirmation",
            TokenKind::PhoneConfirmation => "phone_confirmation",
            TokenKind::Invite => "invite",
            TokenKind::MagicLink => "magiclink",
            TokenKind::Recovery => "recovery",
            TokenKind::Reauthentication => "reauthentication",
            TokenKind::EmailChange => "email_change",
            TokenKind::EmailChangeCurrent => "email_change_current",
            TokenKind::EmailChangeNew => "email_change_new",
            TokenKind::PhoneChange => "phone_change",
        }
    }

    fn mail(self) -> Option<mail::Kind> {
        match self {
            TokenKind::Confirmation => Some(mail::Kind::Confirmation),
            TokenKind::Invite => Some(mail::Kind::Invite),
            TokenKind::MagicLink => Some(mail::Kind::MagicLink),
            TokenKind::Recovery => Some(mail::Kind::Recovery),
            TokenKind::Reauthentication => Some(mail::Kind::Reauthentication),
            TokenKind::EmailChange => Some(mail::Kind::EmailChange),
            _ => None,
        }
    }

    /// GoTrue's `otpType` in "Error sending … OTP to provider".
    fn sms_name(self) -> &'static str {
        match self {
            TokenKind::PhoneChange => "phone_change",
            TokenKind::Reauthentication => "reauthentication",
            _ => "confirmation",
        }
    }
}

/// Which user a step is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Who<'a> {
    Id(&'a str),
    Email(&'a str),
    Phone(&'a str),
}

/// A PKCE flow state to create with a token (GoTrue's `generateFlowState`).
#[derive(Debug, Clone)]
pub(crate) struct FlowState {
    pub auth_code: String,
    pub challenge: String,
    pub method: pkce_crypto::Method,
    pub provider_type: &'static str,
    pub authentication_method: &'static str,
}

impl FlowState {
    /// The flow state of a request with `code_challenge` (none for the implicit flow).
    pub fn of(
        challenge: &Option<(String, pkce_crypto::Method)>,
        provider_type: &'static str,
        authentication_method: &'static str,
    ) -> Option<FlowState> {
        challenge.as_ref().map(|(challenge, method)| FlowState {
            auth_code: random::uuid_v4(),
            challenge: challenge.clone(),
            method: *method,
            provider_type,
            authentication_method,
        })
    }
}

/// One token to issue.
#[derive(Debug, Clone)]
pub(crate) struct Issue<'a> {
    pub who: Who<'a>,
    pub kind: TokenKind,
    /// `_madbase.auth_send`'s `require`: any, confirmed, unconfirmed, phone_unconfirmed,
    /// email_change, phone_change, reauthenticate.
    pub require: &'static str,
    pub otp: String,
    /// The code to the current address of an email change.
    pub otp_current: String,
    pub new_address: Option<String>,
    pub flow: Option<FlowState>,
    pub audit: Option<&'static str>,
    /// `sms` or `whatsapp`.
    pub channel: String,
    /// The code is a `[auth.sms.test_otp]` one: nothing is sent.
    pub test_otp: bool,
    /// Where the message's link leads.
    pub redirect_to: String,
    /// Apply `max_frequency` (not for `generate_link` and invitations, as GoTrue).
    pub frequency: bool,
    /// The email rate limit was already counted before the batch ran (a flow that creates a
    /// user counts it first, as GoTrue's refusal inside its transaction leaves no user).
    pub email_limit_counted: bool,
}

impl<'a> Issue<'a> {
    /// An email token with a fresh code of `[auth.email] otp_length` digits.
    pub fn email(auth: &AuthService, who: Who<'a>, kind: TokenKind, redirect_to: String) -> Issue<'a> {
        let digits = auth.settings().email.otp_length;
        Issue {
            who,
            kind,
            require: "any",
            otp: random::numeric_otp(digits),
            otp_current: random::numeric_otp(digits),
            new_address: None,
            flow: None,
            audit: None,
            channel: "sms".to_owned(),
            test_otp: false,
            redirect_to,
            frequency: true,
            email_limit_counted: false,
        }
    }

    /// A phone token to `phone` (the number the code goes to): its test code, or a fresh one.
    pub fn phone(auth: &AuthService, who: Who<'a>, kind: TokenKind, phone: &str, channel: &str) -> Issue<'a> {
        let test = sms::test_otp(auth.settings(), phone);
        Issue {
            who,
            kind,
            require: "any",
            otp: test.map_or_else(|| random::numeric_otp(SMS_OTP_LENGTH), str::to_owned),
            otp_current: String::new(),
            new_address: None,
            flow: None,
            audit: None,
            channel: channel.to_owned(),
            test_otp: test.is_some(),
            redirect_to: String::new(),
            frequency: true,
            email_limit_counted: false,
        }
    }

    /// The statement that issues the token (`_madbase.auth_send`); its one column is the answer.
    pub fn statement(&self, auth: &AuthService, call: &Call<'_>) -> Statement {
        let settings = auth.settings();
        let mut p = json!({
            "kind": self.kind.as_str(),
            "require": self.require,
            "otp": self.otp,
            "otp_current": self.otp_current,
            "pkce": self.flow.is_some(),
            "secure_email_change": settings.email.double_confirm_changes,
            "max_frequency": match (self.frequency, self.kind) {
                (false, _) | (_, TokenKind::Invite) => 0.0,
                (_, TokenKind::PhoneConfirmation | TokenKind::PhoneChange) => auth.shared.durations.sms_max_frequency.as_secs_f64(),
                _ => auth.shared.durations.email_max_frequency.as_secs_f64(),
            },
            "sms_max_frequency": if self.frequency { auth.shared.durations.sms_max_frequency.as_secs_f64() } else { 0.0 },
            "sms": matches!(self.kind, TokenKind::PhoneConfirmation | TokenKind::PhoneChange),
            "ip": call.ip().to_string(),
        });
        match self.who {
            Who::Id(id) => p["user_id"] = id.into(),
            Who::Email(email) => p["email"] = email.into(),
            Who::Phone(phone) => p["phone"] = phone.into(),
        }
        if let Some(address) = &self.new_address {
            p["new_address"] = address.as_str().into();
        }
        if let Some(audit) = self.audit {
            p["audit"] = audit.into();
        }
        if let Some(flow) = &self.flow {
            p["flow"] = json!({
                "auth_code": flow.auth_code, "challenge": flow.challenge, "method": flow.method.as_str(),
                "provider_type": flow.provider_type, "authentication_method": flow.authentication_method,
            });
        }
        Statement::new("select _madbase.auth_send($1::jsonb)::text").bind(p.to_string())
    }
}

/// GoTrue's `sms.otp_length` default (the CLI has no key for it).
pub const SMS_OTP_LENGTH: usize = 6;
/// GoTrue's `sms.otp_exp` default, seconds (the CLI has no key for it).
pub const SMS_OTP_EXPIRY: u64 = 60;

/// `_madbase.auth_send`'s answer.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Sent {
    /// `sent`, `not_found` or `skipped`.
    pub status: String,
    pub user_id: String,
    pub email: String,
    pub phone: String,
    pub new_address: String,
    pub token_hash: String,
    pub token_hash_current: String,
    pub confirmed: bool,
    pub phone_confirmed: bool,
    /// The user JSON after the token was stored.
    pub user: Value,
    /// The database's time, as GoTrue renders timestamps (for a sanitized user).
    pub now: String,
}

impl Sent {
    pub fn parse(result: Option<&StatementResult>) -> AuthResult<Sent> {
        let text = result.and_then(|r| r.scalar()).ok_or_else(|| AuthError::internal("auth_send returned no row"))?;
        serde_json::from_str(text).map_err(AuthError::internal)
    }

    pub fn sent(&self) -> bool {
        self.status == "sent"
    }
}

/// Sends the message of an issued token; the SMS message id when one went out by SMS.
pub(crate) async fn deliver(auth: &AuthService, issue: &Issue<'_>, sent: &Sent) -> AuthResult<Option<String>> {
    let settings = auth.settings();
    let by_sms = matches!(issue.kind, TokenKind::PhoneConfirmation | TokenKind::PhoneChange)
        || (issue.kind == TokenKind::Reauthentication && sent.email.is_empty());
    if by_sms {
        if issue.test_otp {
            return Ok(Some("test-otp".to_owned()));
        }
        if settings.sms.enable_confirmations {
            if let Err(limited) = auth.shared.limits.sms_sent() {
                unsend(auth, sent, issue.kind).await;
                return Err(limited);
            }
        }
        let to = if issue.kind == TokenKind::PhoneChange { &sent.new_address } else { &sent.phone };
        let body = sms::body(&settings.sms.template, &issue.otp);
        return match auth.shared.sms_sender.send(to, &body, &issue.channel).await {
            Ok(id) => Ok(Some(id)),
            Err(error) => {
                unsend(auth, sent, issue.kind).await;
                Err(AuthError::new(
                    422,
                    "sms_send_failed",
                    format!("Error sending {} OTP to provider: {error}", issue.kind.sms_name()),
                ))
            }
        };
    }
    let Some(kind) = issue.kind.mail() else { return Ok(None) };
    if settings.email.enable_confirmations && !issue.email_limit_counted {
        if let Err(limited) = auth.shared.limits.email_sent() {
            unsend(auth, sent, issue.kind).await;
            return Err(limited);
        }
    }
    let data = sent.user.get("user_metadata").cloned().unwrap_or_else(|| json!({}));
    let mut messages = Vec::with_capacity(2);
    if issue.kind == TokenKind::EmailChange {
        messages.push((sent.new_address.as_str(), issue.otp.as_str(), sent.token_hash.as_str()));
        if !sent.token_hash_current.is_empty() {
            messages.push((sent.email.as_str(), issue.otp_current.as_str(), sent.token_hash_current.as_str()));
        }
    } else {
        messages.push((sent.email.as_str(), issue.otp.as_str(), sent.token_hash.as_str()));
    }
    for (to, otp, token_hash) in messages {
        let out = mail::Outgoing {
            to,
            kind,
            otp,
            token_hash,
            redirect_to: &issue.redirect_to,
            email: &sent.email,
            new_email: &sent.new_address,
            data: &data,
        };
        if let Err(error) = mail::send(auth, &out).await {
            tracing::warn!(%error, kind = ?kind, "auth: sending mail failed");
            unsend(auth, sent, issue.kind).await;
            return Err(AuthError::new(500, "unexpected_failure", kind.failure()));
        }
    }
    Ok(None)
}

/// Clears the sent time of a token whose message did not go out (best effort).
async fn unsend(auth: &AuthService, sent: &Sent, kind: TokenKind) {
    let statement =
        Statement::new("select _madbase.auth_unsend($1::uuid, $2)").bind(sent.user_id.clone()).bind(kind.as_str());
    if let Err(error) = auth.run(madbase_pg::Batch::new().statement(statement)).await {
        tracing::warn!(%error, "auth: clearing the sent time of an unsent message failed");
    }
}

/// The answer for a batch of the flows that failed: a flow's refusal (SQLSTATE `MBFL0`: the
/// error code, the status in the detail, GoTrue's message in the hint), else [`crate::db_error`].
pub(crate) fn flow_error(error: PgError) -> AuthError {
    if let PgError::Db(db) = &error {
        if db.code == "MBFL0" {
            let status =
                db.detail.as_deref().and_then(|d| d.parse().ok()).filter(|s| (400..600).contains(s)).unwrap_or(500);
            let message = db.hint.clone().unwrap_or_default();
            return AuthError::new(status, static_code(&db.message), message);
        }
    }
    crate::db_error(error)
}

/// The error codes the flows' functions raise, as `'static` strings.
fn static_code(code: &str) -> &'static str {
    const CODES: &[&str] = &[
        "over_email_send_rate_limit",
        "over_sms_send_rate_limit",
        "otp_expired",
        "user_banned",
        "validation_failed",
        "flow_state_not_found",
        "flow_state_expired",
        "bad_code_verifier",
        "email_not_confirmed",
        "phone_not_confirmed",
        "email_exists",
        "phone_exists",
        "insufficient_aal",
        "reauthentication_not_valid",
        "user_not_found",
    ];
    CODES.iter().find(|c| **c == code).copied().unwrap_or("")
}

/// A string parameter checked against a bound (tokens, codes, hashes).
pub(crate) fn bounded<'s>(value: &'s str, max: usize, what: &str) -> AuthResult<&'s str> {
    if value.len() > max {
        return Err(AuthError::validation(format!("{what} is too long")));
    }
    Ok(value)
}

/// `{}`, the answer of the flows that only send something.
pub(crate) fn empty() -> Response {
    Response::json(200, "{}")
}

/// `{"message_id": …}` when there is one, else `{}`.
pub(crate) fn message_id(id: Option<String>) -> Response {
    match id {
        Some(id) if !id.is_empty() => Response::json(200, json!({"message_id": id}).to_string()),
        _ => empty(),
    }
}
