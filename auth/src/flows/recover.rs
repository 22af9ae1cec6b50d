//! `POST /recover`, `POST /resend` and `GET /reauthenticate` (GoTrue's `recover.go`,
//! `resend.go`, `reauthenticate.go`): a token issued to a known user and sent.
//!
//! Invariants: one batch each (the user is found, checked and given the token in one
//! `_madbase.auth_send`); an unknown address answers the same `{}` as a known one.

use madbase_http::{Body, Response};
use madbase_pg::Batch;
use serde::Deserialize;

use super::{deliver, empty, flow_error, message_id, redirect, FlowState, Issue, Sent, TokenKind, Who};
use crate::call::Call;
use crate::error::{AuthError, AuthResult};
use crate::ratelimit::Bucket;
use crate::signup::{pkce_params, validate_email, validate_phone};
use crate::AuthService;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RecoverParams {
    #[serde(deserialize_with = "crate::call::null_as_default")]
    email: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    code_challenge: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    code_challenge_method: String,
}

pub async fn recover(auth: &AuthService, call: &Call<'_>, body: Body) -> AuthResult<Response> {
    auth.shared.limits.check(Bucket::SignInSignUp, call.ip())?;
    let params: RecoverParams = call.json(body).await?;
    if params.email.is_empty() {
        return Err(AuthError::validation("Password recovery requires an email"));
    }
    let email = validate_email(&params.email)?;
    let challenge = Some(params.code_challenge.as_str()).filter(|c| !c.is_empty());
    let code_challenge = pkce_params(Some(params.code_challenge_method.as_str()), challenge)?;
    let redirect_to = redirect::referrer(auth.settings(), call);
    let mut issue = Issue::email(auth, Who::Email(&email), TokenKind::Recovery, redirect_to);
    issue.flow = FlowState::of(&code_challenge, "recovery", "recovery");
    issue.audit = Some("user_recovery_requested");
    let results = auth.run_raw(Batch::new().statement(issue.statement(auth, call))).await.map_err(flow_error)?;
    let sent = Sent::parse(results.first())?;
    if sent.sent() {
        deliver(auth, &issue, &sent).await?;
    }
    Ok(empty())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ResendParams {
    #[serde(rename = "type")]
    #[serde(deserialize_with = "crate::call::null_as_default")]
    kind: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    email: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    phone: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    code_challenge: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    code_challenge_method: String,
}

pub async fn resend(auth: &AuthService, call: &Call<'_>, body: Body) -> AuthResult<Response> {
    auth.shared.limits.check(Bucket::SignInSignUp, call.ip())?;
    let params: ResendParams = call.json(body).await?;
    let settings = auth.settings();
    let challenge = Some(params.code_challenge.as_str()).filter(|c| !c.is_empty());
    let code_challenge = match params.kind.as_str() {
        "signup" | "email_change" => pkce_params(Some(params.code_challenge_method.as_str()), challenge)?,
        "sms" | "phone_change" => None,
        _ => return Err(AuthError::validation("Missing one of these types: signup, email_change, sms, phone_change")),
    };
    if params.email.is_empty() && params.kind == "signup" {
        return Err(AuthError::validation("Type provided requires an email address"));
    }
    if params.phone.is_empty() && params.kind == "sms" {
        return Err(AuthError::validation("Type provided requires a phone number"));
    }
    let (email, phone);
    let who = if !params.email.is_empty() && !params.phone.is_empty() {
        return Err(AuthError::validation("Only an email address or phone number should be provided."));
    } else if !params.email.is_empty() {
        if !settings.email.enable_signup {
            return Err(AuthError::new(400, "email_provider_disabled", "Email logins are disabled"));
        }
        email = validate_email(&params.email)?;
        Who::Email(&email)
    } else if !params.phone.is_empty() {
        if !settings.sms.enable_signup {
            return Err(AuthError::new(400, "phone_provider_disabled", "Phone logins are disabled"));
        }
        phone = validate_phone(&params.phone)?;
        Who::Phone(&phone)
    } else {
        return Err(AuthError::validation("Missing email address or phone number"));
    };
    let redirect_to = redirect::referrer(settings, call);
    let mut issue = match params.kind.as_str() {
        "signup" => {
            let mut issue = Issue::email(auth, who, TokenKind::Confirmation, redirect_to);
            issue.require = "unconfirmed";
            issue.flow = FlowState::of(&code_challenge, "email", "email/signup");
            issue.audit = Some("user_confirmation_requested");
            issue
        }
        "email_change" => {
            let mut issue = Issue::email(auth, who, TokenKind::EmailChange, redirect_to);
            issue.require = "email_change";
            issue.flow = FlowState::of(&code_challenge, "email_change", "email_change");
            issue
        }
        kind => {
            // The code's number is the user's (sms) or the pending one (phone_change): the test
            // codes are looked up for the number the request names.
            let number = match who {
                Who::Phone(phone) => phone,
                _ => "",
            };
            let (token, require) = if kind == "sms" {
                (TokenKind::PhoneConfirmation, "phone_unconfirmed")
            } else {
                (TokenKind::PhoneChange, "phone_change")
            };
            let mut issue = Issue::phone(auth, who, token, number, "sms");
            issue.require = require;
            if kind == "sms" {
                issue.audit = Some("user_recovery_requested");
            }
            issue
        }
    };
    if issue.kind == TokenKind::PhoneChange {
        // The code goes to the pending number, which only the database knows: no test code.
        issue.test_otp = false;
        issue.otp = crate::crypto::random::numeric_otp(super::SMS_OTP_LENGTH);
    }
    let results = auth.run_raw(Batch::new().statement(issue.statement(auth, call))).await.map_err(flow_error)?;
    let sent = Sent::parse(results.first())?;
    if !sent.sent() {
        return Ok(empty());
    }
    let id = deliver(auth, &issue, &sent).await?;
    Ok(message_id(id))
}

/// `GET /reauthenticate`: a nonce to the user's confirmed email (or, without one, phone).
pub async fn reauthenticate(auth: &AuthService, call: &Call<'_>) -> AuthResult<Response> {
    let caller = auth.caller(call)?;
    let claim = |name: &str| caller.claims.object.get(name).and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let (email, phone) = (claim("email"), claim("phone"));
    let mut issue = if email.is_empty() && !phone.is_empty() {
        Issue::phone(auth, Who::Id(&caller.user_id), TokenKind::Reauthentication, &phone, "sms")
    } else {
        Issue::email(auth, Who::Id(&caller.user_id), TokenKind::Reauthentication, String::new())
    };
    issue.require = "reauthenticate";
    issue.audit = Some("user_reauthenticate_requested");
    let batch = Batch::new().statement(caller.require_session()).statement(issue.statement(auth, call));
    let results = auth.run_raw(batch).await.map_err(flow_error)?;
    let sent = Sent::parse(results.get(1))?;
    if !sent.sent() {
        return Err(AuthError::new(403, "user_not_found", "User from sub claim in JWT does not exist"));
    }
    let id = deliver(auth, &issue, &sent).await?;
    Ok(message_id(id))
}
