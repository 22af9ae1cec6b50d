//! `/factors`: multi-factor authentication with TOTP (reference/auth.md §5) — enroll, challenge,
//! verify, unenroll — as GoTrue's `internal/api/mfa.go` answers them to auth-js
//! (`supabase.auth.mfa`).
//!
//! Owns the four handlers, their parameters and GoTrue's MFA refusals (codes and messages); the
//! database side is `migrations/0008_auth_mfa.sql` (`_madbase.auth_mfa_*`), one function per
//! step, each called after the caller's session check in the same batch.
//!
//! Round trips: enroll, challenge and unenroll are one batch each. Verify is two: the first
//! checks the factor and the challenge and reads the factor's secret; the code is checked on the
//! shard (three HMAC-SHA1s, about 2 µs, constant time, [`totp::verify`]); the second batch
//! marks the challenge used, raises the session to aal2, rotates its refresh token, deletes the
//! user's aal1 sessions and reads back the session answer. A wrong code costs one round trip
//! and writes nothing, as in GoTrue. (The SQL could check the code itself, but only by
//! re-implementing base32 and HOTP in PL/pgSQL over pgcrypto's HMAC.) Enroll draws its QR code
//! on the blocking pool: at level H that takes about 2.5 ms, too long for a shard.
//!
//! Invariants:
//! - every refusal GoTrue's middleware would give after loading the user and session
//!   (anonymous caller, malformed factor id, bad body) is given after the same session check,
//!   so a signed-out session answers `session_not_found` first, as in GoTrue;
//! - a challenge verifies at most once, even under concurrent requests (the second batch
//!   marks it only while it is unused, under the row lock); a verified challenge, like one from
//!   another address, answers `mfa_ip_address_mismatch` (GoTrue's rule);
//! - the session's AAL for enroll and unenroll is the session row's (as GoTrue's), not the
//!   token's, so a token minted before an unenroll cannot act as aal2;
//! - secrets never leave this module but in the enroll answer; codes are compared in constant
//!   time; every string taken from a request is bounded before it is used.
//!
//! Not served: phone and WebAuthn factors (off by default, reference/auth.md §5) answer
//! GoTrue's "disabled" refusals whatever `[auth.mfa.phone]` / `[auth.mfa.web_authn]` say; the
//! factor enrolled/unenrolled notification mails (off by default) are not sent. The
//! `mfa_verification_attempt` hook is run: it hears of every code checked, and its "reject"
//! signs the user out (403 `mfa_verification_rejected`). GoTrue keeps no record of used TOTP
//! codes (a code may be used again on a new challenge within its window), and neither does
//! this module.

use madbase_core::jwt::unix_now;
use madbase_http::{Body, Response};
use madbase_pg::{Batch, PgError, Statement, StatementResult};
use serde::Deserialize;
use serde_json::Value;

use crate::call::Call;
use crate::crypto::{qr, random, totp};
use crate::error::{AuthError, AuthResult};
use crate::go::go_quote;
use crate::hooks;
use crate::ratelimit::Bucket;
use crate::user::Caller;
use crate::AuthService;

/// The longest `friendly_name` accepted, in characters. GoTrue has no bound but its unique
/// index on `(friendly_name, user_id)`, which fails (500) past about 2.7 kB.
pub const MAX_FRIENDLY_NAME_CHARS: usize = 1024;

/// The longest `issuer` accepted, in characters: with any address as the account, the
/// `otpauth://` URI still fits a QR code (GoTrue fails with a 500 where it does not).
pub const MAX_ISSUER_CHARS: usize = 256;

/// `POST /factors`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EnrollParams {
    friendly_name: Option<String>,
    factor_type: Option<String>,
    issuer: Option<String>,
}

/// `POST /factors/<id>/verify` (`challenge_id` is read leniently, as Go's UUID type reads it).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct VerifyParams {
    challenge_id: Option<String>,
    code: Option<String>,
}

/// Routes `/factors…` (every path starting `/factors` comes here).
pub async fn route(auth: &AuthService, call: &Call<'_>, body: Body) -> AuthResult<Response> {
    let rest = call.path.strip_prefix("/factors").unwrap_or("");
    let method = call.req.method();
    if !(rest.is_empty() || rest.starts_with('/')) {
        return Err(AuthError::not_found());
    }
    let caller = auth.caller(call)?;
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (factor, action) = match segments.as_slice() {
        [] => (None, ""),
        [factor] => (Some(*factor), ""),
        [factor, action] => (Some(*factor), *action),
        _ => return Err(AuthError::not_found()),
    };
    let endpoint = match (method, factor, action) {
        ("POST", None, "") => Endpoint::Enroll,
        ("POST", Some(_), "challenge") => Endpoint::Challenge,
        ("POST", Some(_), "verify") => Endpoint::Verify,
        ("DELETE", Some(_), "") => Endpoint::Unenroll,
        _ => return Err(AuthError::not_found()),
    };
    if caller.is_anonymous() {
        let error = AuthError::new(403, "no_authorization", "Anonymous user not allowed to perform these actions");
        return refuse(auth, &caller, error).await;
    }
    let factor_id = match factor {
        None => None,
        Some(text) => match parse_uuid(text) {
            Some(id) => Some(id),
            None => {
                return refuse(auth, &caller, AuthError::new(404, "validation_failed", "factor_id must be an UUID"))
                    .await
            }
        },
    };
    match (endpoint, factor_id) {
        (Endpoint::Enroll, _) => enroll(auth, call, &caller, body).await,
        (Endpoint::Challenge, Some(factor)) => challenge(auth, call, &caller, &factor).await,
        (Endpoint::Verify, Some(factor)) => verify(auth, call, &caller, &factor, body).await,
        (Endpoint::Unenroll, Some(factor)) => unenroll(auth, call, &caller, &factor).await,
        _ => Err(AuthError::not_found()),
    }
}

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Enroll,
    Challenge,
    Verify,
    Unenroll,
}

/// Answers `error` after the caller's session check, the order GoTrue's middleware gives.
async fn refuse<T>(auth: &AuthService, caller: &Caller, error: AuthError) -> AuthResult<T> {
    auth.run(Batch::new().statement(caller.require_session()).read_only(true)).await?;
    Err(error)
}

/// `POST /factors`: a new unverified TOTP factor, its secret, `otpauth://` URI and QR code.
async fn enroll(auth: &AuthService, call: &Call<'_>, caller: &Caller, body: Body) -> AuthResult<Response> {
    let Some(session_id) = caller.session_id.clone() else {
        let error = AuthError::new(
            500,
            "unexpected_failure",
            "A valid session and a registered user are required to enroll a factor",
        );
        return refuse(auth, caller, error).await;
    };
    let params: EnrollParams = match call.json(body).await {
        Ok(params) => params,
        Err(error) => return refuse(auth, caller, error).await,
    };
    let settings = &auth.settings().mfa;
    let refusal = match params.factor_type.as_deref().unwrap_or("") {
        "totp" if !settings.totp.enroll_enabled => {
            Some(AuthError::new(422, "mfa_totp_enroll_not_enabled", "MFA enroll is disabled for TOTP"))
        }
        "totp" => None,
        "phone" => Some(AuthError::new(422, "mfa_phone_enroll_not_enabled", "MFA enroll is disabled for Phone")),
        "webauthn" => {
            Some(AuthError::new(422, "mfa_webauthn_enroll_not_enabled", "MFA enroll is disabled for WebAuthn"))
        }
        _ => Some(AuthError::validation("factor_type needs to be totp, phone, or webauthn")),
    };
    let friendly_name = params.friendly_name.unwrap_or_default();
    let issuer = match params.issuer.filter(|i| !i.is_empty()) {
        Some(issuer) => Ok(issuer),
        None => site_host(&auth.settings().site_url)
            .ok_or_else(|| AuthError::new(500, "unexpected_failure", "site url is improperly formatted")),
    };
    let refusal = refusal.or_else(|| match &issuer {
        Err(error) => Some(error.clone()),
        Ok(_) if friendly_name.chars().count() > MAX_FRIENDLY_NAME_CHARS => {
            Some(AuthError::validation(format!("friendly_name must be {MAX_FRIENDLY_NAME_CHARS} characters or less")))
        }
        Ok(issuer) if issuer.chars().count() > MAX_ISSUER_CHARS => {
            Some(AuthError::validation(format!("issuer must be {MAX_ISSUER_CHARS} characters or less")))
        }
        // pquerna/otp refuses an empty issuer (a site_url without a host).
        Ok(issuer) if issuer.is_empty() => Some(qr_error()),
        Ok(_) => None,
    });
    if let Some(error) = refusal {
        return refuse(auth, caller, error).await;
    }
    let issuer = issuer?;

    let factor_id = random::uuid_v4();
    let secret = totp::generate_secret();
    let max_factors = settings.max_enrolled_factors.min(i32::MAX as usize);
    let batch = Batch::new().statement(caller.require_session()).statement(
        Statement::new(
            "select error, account from _madbase.auth_mfa_enroll($1::uuid, $2::uuid, $3::uuid, $4, $5, $6::int, $7)",
        )
        .bind(caller.user_id.clone())
        .bind(session_id)
        .bind(factor_id.clone())
        .bind(friendly_name.clone())
        .bind(secret.clone())
        .bind(max_factors.to_string())
        .bind(call.ip().to_string()),
    );
    let results = auth.run(batch).await?;
    let row = first_row(&results, 1)?;
    if let Some(code) = row.get_str(0) {
        return Err(match code {
            "mfa_factor_name_conflict" => AuthError::new(
                422,
                "mfa_factor_name_conflict",
                format!("A factor with the friendly name {} for this user already exists", go_quote(&friendly_name)),
            ),
            "too_many_enrolled_mfa_factors" => AuthError::new(
                422,
                "too_many_enrolled_mfa_factors",
                "Maximum number of verified factors reached, unenroll to continue",
            ),
            "insufficient_aal" => AuthError::new(403, "insufficient_aal", "AAL2 required to enroll a new factor"),
            // pquerna/otp refuses an empty account name (a user with no email).
            "no_account" => qr_error(),
            other => AuthError::internal(format!("auth_mfa_enroll: {other}")),
        });
    }
    let account = row.get_str(1).unwrap_or_default();
    let uri = totp::uri(&issuer, account, &secret);
    // Drawing the QR code takes milliseconds (level H, eight masks scored): off the shard.
    let image_of = uri.clone();
    let qr_code = auth.blocking(move || qr::svg(&image_of)).await?;

    let mut out = String::with_capacity(qr_code.len() + uri.len() + friendly_name.len() + 160);
    out.push_str("{\"id\":");
    out.push_str(&Value::from(factor_id).to_string());
    out.push_str(",\"type\":\"totp\",\"friendly_name\":");
    out.push_str(&Value::from(friendly_name).to_string());
    out.push_str(",\"totp\":{\"qr_code\":");
    out.push_str(&Value::from(qr_code).to_string());
    out.push_str(",\"secret\":");
    out.push_str(&Value::from(secret).to_string());
    out.push_str(",\"uri\":");
    out.push_str(&Value::from(uri).to_string());
    out.push_str("}}");
    Ok(Response::json(200, out))
}

/// `POST /factors/<id>/challenge`: a challenge for 300 seconds, bound to the client's address.
async fn challenge(auth: &AuthService, call: &Call<'_>, caller: &Caller, factor: &str) -> AuthResult<Response> {
    auth.shared.limits.check(Bucket::MfaChallengeVerify, call.ip())?;
    let challenge_id = random::uuid_v4();
    let batch = Batch::new().statement(caller.require_session()).statement(
        Statement::new(
            "select error, factor_type, expires_at from _madbase.auth_mfa_challenge($1::uuid, $2::uuid, $3::uuid, $4, $5::bool)",
        )
        .bind(caller.user_id.clone())
        .bind(factor.to_owned())
        .bind(challenge_id.clone())
        .bind(call.ip().to_string())
        .bind(if auth.settings().mfa.totp.verify_enabled { "t" } else { "f" }),
    );
    let results = auth.run(batch).await?;
    let row = first_row(&results, 1)?;
    if let Some(code) = row.get_str(0) {
        return Err(refusal(code, row.get_str(1).unwrap_or_default(), ""));
    }
    let expires_at: u64 = row
        .get_str(2)
        .and_then(|e| e.parse().ok())
        .ok_or_else(|| AuthError::internal("auth_mfa_challenge: no expiry"))?;
    let body = format!("{{\"id\":\"{challenge_id}\",\"type\":\"totp\",\"expires_at\":{expires_at}}}");
    Ok(Response::json(200, body))
}

/// `POST /factors/<id>/verify`: the code against the challenge; a right one raises the session to
/// aal2 and answers it with a new refresh token.
async fn verify(
    auth: &AuthService,
    call: &Call<'_>,
    caller: &Caller,
    factor: &str,
    body: Body,
) -> AuthResult<Response> {
    auth.shared.limits.check(Bucket::MfaChallengeVerify, call.ip())?;
    // GoTrue loads the factor before it reads the body: a body refusal waits for the factor.
    let params = call.json::<VerifyParams>(body).await.and_then(|params| {
        let challenge = match params.challenge_id.as_deref() {
            None => NIL_UUID.to_owned(),
            Some(text) => parse_uuid(text).ok_or_else(|| {
                AuthError::bad_json(format!("uuid: incorrect UUID format in string {}", go_quote(text)))
            })?,
        };
        match params.code.filter(|c| !c.is_empty()) {
            Some(code) => Ok((challenge, code)),
            None => Err(AuthError::validation("Code needs to be non-empty")),
        }
    });
    let (challenge, code) = match &params {
        Ok((challenge, code)) => (challenge.as_str(), code.as_str()),
        Err(_) => (NIL_UUID, ""),
    };
    let check = Statement::new(
        "select error, factor_type, secret from \
         _madbase.auth_mfa_verify_check($1::uuid, $2::uuid, $3::uuid, $4, $5::bool, $6::bool)",
    )
    .bind(caller.user_id.clone())
    .bind(factor.to_owned())
    .bind(challenge.to_owned())
    .bind(call.ip().to_string())
    .bind(if params.is_ok() { "t" } else { "f" })
    .bind(if auth.settings().mfa.totp.verify_enabled { "t" } else { "f" });
    let results = auth.run(Batch::new().statement(caller.require_session()).statement(check)).await?;
    let row = first_row(&results, 1)?;
    if let Some(error) = row.get_str(0) {
        return Err(refusal(error, row.get_str(1).unwrap_or_default(), challenge));
    }
    if let Err(error) = &params {
        return Err(error.clone());
    }
    let secret = row.get_str(2).ok_or_else(|| AuthError::internal("auth_mfa_verify_check: no secret"))?;
    let hook = hooks::function_sql(&auth.settings().hook.mfa_verification_attempt);
    if !totp::verify(secret, code, unix_now()) {
        if let Some(hook) = &hook {
            // The hook hears of the failure too, and may sign the user out (a second round trip,
            // only with the hook on).
            let sql = format!(
                "select _madbase.auth_mfa_hook_outcome($1::uuid, \
                 {hook}(_madbase.auth_mfa_hook_input($1::uuid, $2::uuid, $3, false))::jsonb)"
            );
            let outcome =
                Statement::new(sql).bind(caller.user_id.clone()).bind(factor.to_owned()).bind(call.ip().to_string());
            let results = auth.run(Batch::new().statement(outcome)).await?;
            if let Some(message) = results.first().and_then(StatementResult::scalar) {
                return Err(AuthError::new(403, "mfa_verification_rejected", message.to_owned()));
            }
        }
        return Err(AuthError::new(422, "mfa_verification_failed", "Invalid TOTP code entered"));
    }
    let Some(session_id) = caller.session_id.clone() else {
        return Err(AuthError::new(500, "unexpected_failure", "Cannot read SessionId claim as UUID"));
    };

    let issued = auth.issue(caller.user_id.clone(), session_id, random::refresh_token(), "totp");
    // With the hook on, its answer is an argument of the finish function: a refusal's sign-out
    // commits and nothing else happens.
    let rejected = match &hook {
        None => "null".to_owned(),
        Some(hook) => format!(
            "_madbase.auth_mfa_hook_outcome($1::uuid, {hook}(_madbase.auth_mfa_hook_input($1::uuid, $3::uuid, $6, true))::jsonb)"
        ),
    };
    let finish = Statement::new(format!(
        "select _madbase.auth_mfa_verify_finish($1::uuid, $2::uuid, $3::uuid, $4::uuid, $5, $6, {rejected})"
    ))
    .bind(issued.user_id.clone())
    .bind(issued.session_id.clone())
    .bind(factor.to_owned())
    .bind(challenge.to_owned())
    .bind(issued.refresh_token.clone())
    .bind(call.ip().to_string());
    let batch = Batch::new().statement(finish).statement(auth.session_select(&issued));
    let results = match auth.run_raw(batch).await {
        Ok(results) => results,
        Err(PgError::Db(db)) if db.code == "MBMF1" => return Err(refusal(&db.message, "totp", challenge)),
        Err(error) => return Err(crate::db_error(error)),
    };
    if let Some(message) = results.first().and_then(StatementResult::scalar) {
        return Err(AuthError::new(403, "mfa_verification_rejected", message.to_owned()));
    }
    let selected = results.get(1).ok_or_else(|| AuthError::internal("verify: no session select"))?;
    auth.session_response(selected, &issued, None)
}

/// `DELETE /factors/<id>`: removes the factor; the sessions it raised go back to aal1.
async fn unenroll(auth: &AuthService, call: &Call<'_>, caller: &Caller, factor: &str) -> AuthResult<Response> {
    let batch = Batch::new().statement(caller.require_session()).statement(
        Statement::new("select _madbase.auth_mfa_unenroll($1::uuid, $2::uuid, $3::uuid, $4)")
            .bind(caller.user_id.clone())
            .bind_opt(caller.session_id.clone())
            .bind(factor.to_owned())
            .bind(call.ip().to_string()),
    );
    let results = auth.run(batch).await?;
    if let Some(code) = results.get(1).and_then(StatementResult::scalar) {
        return Err(match code {
            "insufficient_aal" => AuthError::new(422, "insufficient_aal", "AAL2 required to unenroll verified factor"),
            "no_session" => AuthError::new(
                500,
                "unexpected_failure",
                "A valid session and factor are required to unenroll a factor",
            ),
            other => refusal(other, "", ""),
        });
    }
    Ok(Response::json(200, format!("{{\"id\":\"{factor}\"}}")))
}

const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// GoTrue's answer for a refusal code of the factor functions (`factor_type`: the factor's type,
/// `challenge`: the challenge id of a verify).
fn refusal(code: &str, factor_type: &str, challenge: &str) -> AuthError {
    match code {
        "mfa_factor_not_found" => AuthError::new(404, "mfa_factor_not_found", "Factor not found"),
        "mfa_totp_verify_not_enabled" => {
            AuthError::new(422, "mfa_totp_verify_not_enabled", "MFA verification is disabled for TOTP")
        }
        "mfa_phone_verify_not_enabled" => {
            AuthError::new(422, "mfa_phone_verify_not_enabled", "MFA verification is disabled for Phone")
        }
        // GoTrue's verify answers a disabled WebAuthn with the enroll code; its challenge with the verify code.
        "mfa_webauthn_verify_not_enabled" if !challenge.is_empty() => {
            AuthError::new(422, "mfa_webauthn_enroll_not_enabled", "MFA verification is disabled for WebAuthn")
        }
        "mfa_webauthn_verify_not_enabled" => {
            AuthError::new(422, "mfa_webauthn_verify_not_enabled", "MFA verification is disabled for WebAuthn")
        }
        "mfa_challenge_not_found" => {
            AuthError::new(422, "mfa_factor_not_found", "MFA factor with the provided challenge ID not found")
        }
        "mfa_ip_address_mismatch" => {
            AuthError::new(422, "mfa_ip_address_mismatch", "Challenge and verify IP addresses mismatch.")
        }
        "mfa_challenge_expired" => AuthError::new(
            422,
            "mfa_challenge_expired",
            format!(
                "MFA challenge {challenge} has expired, verify against another challenge or create a new challenge."
            ),
        ),
        other => AuthError::internal(format!("mfa: unknown refusal {other} ({factor_type})")),
    }
}

/// GoTrue's answer when pquerna/otp cannot make a key (empty issuer or account).
fn qr_error() -> AuthError {
    AuthError::new(500, "unexpected_failure", "Error generating QR Code")
}

/// The first row of statement `index`'s result.
fn first_row(results: &[StatementResult], index: usize) -> AuthResult<&madbase_pg::Row> {
    results
        .get(index)
        .and_then(|r| r.rows.first())
        .ok_or_else(|| AuthError::internal("mfa: a factor function returned no row"))
}

/// The host (with port) of `site_url`, as Go's `url.ParseRequestURI(..).Host`: `None` when it
/// is not an absolute URL or an absolute path.
fn site_host(site_url: &str) -> Option<String> {
    if site_url.starts_with('/') {
        return Some(String::new());
    }
    let (scheme, rest) = site_url.split_once(':')?;
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return None;
    }
    let Some(authority) = rest.strip_prefix("//") else {
        // An opaque URL (`mailto:x`): no host.
        return Some(String::new());
    };
    let end = authority.find(['/', '?', '#']).unwrap_or(authority.len());
    let authority = &authority[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    Some(host.to_owned())
}

/// A UUID as Go's `uuid.FromString` reads it (hyphenated, 32 hex digits, in braces or with a
/// `urn:uuid:` prefix), lower-case and hyphenated.
fn parse_uuid(text: &str) -> Option<String> {
    let text = text.strip_prefix("urn:uuid:").unwrap_or(text);
    let text = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or(text);
    let hex: String = match text.len() {
        36 if crate::user::is_uuid(text) => text.chars().filter(|c| *c != '-').collect(),
        32 if text.bytes().all(|b| b.is_ascii_hexdigit()) => text.to_owned(),
        _ => return None,
    };
    let hex = hex.to_ascii_lowercase();
    Some(format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_read_like_go() {
        let canonical = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(parse_uuid(canonical).as_deref(), Some(canonical));
        assert_eq!(parse_uuid("0F8FAD5B-D9CB-469F-A165-70867728950E").as_deref(), Some(canonical));
        assert_eq!(parse_uuid("0f8fad5bd9cb469fa16570867728950e").as_deref(), Some(canonical));
        assert_eq!(parse_uuid("{0f8fad5b-d9cb-469f-a165-70867728950e}").as_deref(), Some(canonical));
        assert_eq!(parse_uuid("urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e").as_deref(), Some(canonical));
        for bad in ["", "f1", "0f8fad5b-d9cb-469f-a165-70867728950", "0f8fad5b_d9cb-469f-a165-70867728950e", "é"] {
            assert_eq!(parse_uuid(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn site_hosts() {
        assert_eq!(site_host("http://127.0.0.1:3000").as_deref(), Some("127.0.0.1:3000"));
        assert_eq!(site_host("https://app.example.com/path?x=1").as_deref(), Some("app.example.com"));
        assert_eq!(site_host("https://user:pw@example.com:8443/").as_deref(), Some("example.com:8443"));
        assert_eq!(site_host("http://[::1]:3000").as_deref(), Some("[::1]:3000"));
        assert_eq!(site_host("/relative").as_deref(), Some(""));
        assert_eq!(site_host("no scheme"), None);
        assert_eq!(site_host(""), None);
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("x"), "\"x\"");
        assert_eq!(go_quote(""), "\"\"");
        assert_eq!(go_quote("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\x01é\"");
    }

    #[test]
    fn refusals_are_gotrues() {
        let expired = refusal("mfa_challenge_expired", "totp", "abc");
        assert_eq!((expired.status, expired.code), (422, "mfa_challenge_expired"));
        assert_eq!(
            expired.message,
            "MFA challenge abc has expired, verify against another challenge or create a new challenge."
        );
        assert_eq!(refusal("mfa_factor_not_found", "", "").status, 404);
        assert_eq!(refusal("mfa_webauthn_verify_not_enabled", "webauthn", "c").code, "mfa_webauthn_enroll_not_enabled");
        assert_eq!(refusal("mfa_webauthn_verify_not_enabled", "webauthn", "").code, "mfa_webauthn_verify_not_enabled");
    }
}
