//! `POST /verify` and `GET /verify` (GoTrue's `verify.go`): a code or a link's token hash
//! exchanged for a session, or — for a link in a PKCE flow — for the flow's auth code.
//!
//! Owns the request rules (GoTrue's messages and order) and the redirect answers of `GET`.
//! Invariants: one batch — `_madbase.auth_verify` (find, check, consume, confirm, start the
//! session) and the session's user and claims; a failure consumes nothing; `GET` answers 303 for
//! every outcome decided in the batch (the session or `?code=` on success, GoTrue's error
//! fragment otherwise) and JSON only for a malformed request.

use madbase_http::{Body, Response, ResponseBody};
use madbase_pg::Batch;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{bounded, flow_error, redirect, sms, MAX_TOKEN, SMS_OTP_EXPIRY};
use crate::call::Call;
use crate::crypto::{otp, random};
use crate::error::{AuthError, AuthResult};
use crate::ratelimit::Bucket;
use crate::signup::{validate_email, validate_phone};
use crate::AuthService;

/// GoTrue's answer to the first of the two confirmations of a secure email change.
pub const SINGLE_CONFIRMATION: &str =
    "Confirmation link accepted. Please proceed to confirm link sent to the other email";

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct VerifyParams {
    #[serde(rename = "type")]
    #[serde(deserialize_with = "crate::call::null_as_default")]
    kind: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    token: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    token_hash: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    email: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    phone: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    redirect_to: String,
}

/// What `_madbase.auth_verify` answers.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Verified {
    #[serde(rename = "type")]
    kind: String,
    first_leg: bool,
    auth_code: Option<String>,
}

pub async fn post(auth: &AuthService, call: &Call<'_>, body: Body) -> AuthResult<Response> {
    auth.shared.limits.check(Bucket::Verify, call.ip())?;
    let mut params: VerifyParams = call.json(body).await?;
    if params.kind.is_empty() {
        return Err(AuthError::validation("Verify requires a verification type"));
    }
    if params.token.is_empty() == params.token_hash.is_empty() {
        return Err(AuthError::validation("Verify requires either a token or a token hash"));
    }
    bounded(&params.token, MAX_TOKEN, "token")?;
    bounded(&params.token_hash, MAX_TOKEN, "token_hash")?;
    let mut p = json!({"type": params.kind});
    let mut test_otp = false;
    if !params.token.is_empty() {
        if !params.phone.is_empty() && params.email.is_empty() {
            let phone = validate_phone(&params.phone)?;
            test_otp = matches!(params.kind.as_str(), "sms" | "phone_change")
                && sms::test_otp(auth.settings(), &phone).is_some_and(|code| otp::ct_eq(code, &params.token));
            params.token_hash = otp::token_hash(&phone, &params.token);
            p["phone"] = phone.into();
        } else if params.phone.is_empty() && !params.email.is_empty() {
            let email = validate_email(&params.email)
                .map_err(|_| AuthError::new(422, "validation_failed", "Invalid email format"))?;
            params.token_hash = otp::token_hash(&email, &params.token);
            p["email"] = email.into();
        } else {
            return Err(AuthError::validation("Only an email address or phone number should be provided on verify"));
        }
    } else if !params.email.is_empty() || !params.phone.is_empty() || !params.redirect_to.is_empty() {
        return Err(AuthError::validation("Only the token_hash and type should be provided"));
    }
    p["token_hash"] = params.token_hash.into();
    p["test_otp"] = test_otp.into();
    let (verified, session) = run(auth, call, p, false).await.map_err(|(error, _)| error)?;
    if verified.first_leg {
        return Ok(Response::json(200, json!({"msg": SINGLE_CONFIRMATION, "code": "200"}).to_string()));
    }
    session.ok_or_else(|| AuthError::internal("verify started no session"))
}

/// `GET /verify?token=&type=&redirect_to=`, the links in mail.
pub async fn get(auth: &AuthService, call: &Call<'_>) -> AuthResult<Response> {
    let token = call.query("token").unwrap_or("");
    let kind = call.query("type").unwrap_or("");
    let redirect_to = redirect::referrer(auth.settings(), call);
    if kind.is_empty() {
        return Err(AuthError::validation("Verify requires a verification type"));
    }
    if token.is_empty() {
        return Err(AuthError::validation("Verify requires a token or a token hash"));
    }
    let pkce = token.starts_with("pkce_");
    let p = json!({"type": kind, "token_hash": bounded(token, MAX_TOKEN, "token")?});
    auth.shared.limits.check(Bucket::Verify, call.ip())?;
    let location = match run(auth, call, p, pkce).await {
        Err((error, raised)) => {
            if !raised {
                return Err(error);
            }
            error_location(&redirect_to, &error, pkce)
        }
        Ok((verified, _)) if verified.first_leg => message_location(&redirect_to, SINGLE_CONFIRMATION, pkce),
        Ok((verified, Some(mut session))) => {
            let ResponseBody::Full(bytes) = session.take_body() else {
                return Err(AuthError::internal("session answer has no body"));
            };
            let session: Value = serde_json::from_slice(&bytes).map_err(AuthError::internal)?;
            let field = |name: &str| match &session[name] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let mut fragment = url::form_urlencoded::Serializer::new(String::new());
            fragment
                .append_pair("access_token", &field("access_token"))
                .append_pair("expires_at", &field("expires_at"))
                .append_pair("expires_in", &field("expires_in"))
                .append_pair("refresh_token", &field("refresh_token"))
                .append_pair("sb", "")
                .append_pair("token_type", "bearer")
                .append_pair("type", &verified.kind);
            format!("{redirect_to}#{}", fragment.finish())
        }
        Ok((verified, None)) => match verified.auth_code {
            Some(code) => with_query(&redirect_to, &[("code", &code)]),
            None => return Err(AuthError::internal("verify issued neither a session nor a code")),
        },
    };
    Ok(Response::new(303).header("location", location))
}

/// The batch: verify (and start the session) then, unless a PKCE link, the session's user and
/// claims. Errors carry whether the flow refused (`MBFL0`) — those redirect.
async fn run(
    auth: &AuthService,
    call: &Call<'_>,
    mut p: Value,
    pkce: bool,
) -> Result<(Verified, Option<Response>), (AuthError, bool)> {
    let settings = auth.settings();
    let issued = auth.issue(String::new(), random::uuid_v4(), random::refresh_token(), "otp");
    p["email_exp"] = settings.email.otp_expiry.into();
    p["sms_exp"] = SMS_OTP_EXPIRY.into();
    p["secure_email_change"] = settings.email.double_confirm_changes.into();
    p["mailer_autoconfirm"] = (!settings.email.enable_confirmations).into();
    p["pkce"] = pkce.into();
    p["session"] = json!({
        "id": issued.session_id, "refresh_token": issued.refresh_token, "ip": call.ip().to_string(),
        "user_agent": call.user_agent(),
    });
    let mut batch = Batch::new()
        .statement(madbase_pg::Statement::new("select _madbase.auth_verify($1::jsonb)::text").bind(p.to_string()));
    if !pkce {
        batch = batch.statement(auth.session_select_of_session(&issued));
    }
    let results = auth.run_raw(batch).await.map_err(|error| {
        let raised = matches!(&error, madbase_pg::PgError::Db(db) if db.code == "MBFL0");
        (flow_error(error), raised)
    })?;
    let internal = |e: &dyn std::fmt::Display| (AuthError::internal(e), false);
    let text = results.first().and_then(|r| r.scalar()).ok_or_else(|| internal(&"verify returned no row"))?;
    let verified: Verified = serde_json::from_str(text).map_err(|e| internal(&e))?;
    let session = match results.get(1) {
        Some(result) if !result.rows.is_empty() => {
            Some(auth.session_response(result, &issued, None).map_err(|error| (error, false))?)
        }
        _ => None,
    };
    Ok((verified, session))
}

/// GoTrue's `prepErrorRedirectURL`: `error`, `error_code`, `error_description` and `sb` in the
/// fragment (and, for a PKCE flow, the first three in the query too).
fn error_location(redirect_to: &str, error: &AuthError, pkce: bool) -> String {
    let oauth = match error.status {
        400 => Some("invalid_request"),
        401 => Some("unauthorized_client"),
        403 => Some("access_denied"),
        500 => Some("server_error"),
        503 => Some("temporarily_unavailable"),
        _ => None,
    };
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(4);
    if let Some(oauth) = oauth {
        pairs.push(("error", oauth));
    }
    pairs.push(("error_code", error.code));
    pairs.push(("error_description", &error.message));
    let base = if pkce { with_query(redirect_to, &pairs) } else { redirect_to.to_owned() };
    pairs.push(("sb", ""));
    with_fragment(&base, &pairs)
}

/// GoTrue's `prepRedirectURL`: `message` and `sb` in the fragment (PKCE: `message` in the query).
fn message_location(redirect_to: &str, message: &str, pkce: bool) -> String {
    let base = if pkce { with_query(redirect_to, &[("message", message)]) } else { redirect_to.to_owned() };
    with_fragment(&base, &[("message", message), ("sb", "")])
}

/// `url` with `pairs` set in its query (Go's `url.Values.Set` then `Encode`: keys sorted), the
/// rest of the URL as written (no normalisation, as Go's `URL.String()` of a parsed URL).
fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (url, None),
    };
    let (base, query) = before_fragment.split_once('?').unwrap_or((before_fragment, ""));
    let mut merged: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .filter(|(k, _)| !pairs.iter().any(|(p, _)| p == k))
        .collect();
    merged.extend(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(merged).finish();
    match fragment {
        Some(fragment) => format!("{base}?{encoded}#{fragment}"),
        None => format!("{base}?{encoded}"),
    }
}

/// `url` with its fragment replaced by `pairs`, keys sorted.
fn with_fragment(url: &str, pairs: &[(&str, &str)]) -> String {
    let mut sorted = pairs.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(sorted).finish();
    let base = url.split_once('#').map_or(url, |(before, _)| before);
    format!("{base}#{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_redirects() {
        let error = AuthError::new(403, "otp_expired", "Email link is invalid or has expired");
        assert_eq!(
            error_location("http://localhost:3000/cb", &error, false),
            "http://localhost:3000/cb#error=access_denied&error_code=otp_expired\
             &error_description=Email+link+is+invalid+or+has+expired&sb="
        );
        assert_eq!(
            error_location("http://localhost:3000/cb?x=1", &error, true),
            "http://localhost:3000/cb?error=access_denied&error_code=otp_expired\
             &error_description=Email+link+is+invalid+or+has+expired&x=1#error=access_denied\
             &error_code=otp_expired&error_description=Email+link+is+invalid+or+has+expired&sb="
        );
        assert_eq!(with_query("http://a/b?z=1", &[("code", "c")]), "http://a/b?code=c&z=1");
        assert_eq!(with_query("http://a:3000", &[("code", "c")]), "http://a:3000?code=c");
    }
}
