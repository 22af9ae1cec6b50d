//! `POST /token?grant_type=…`: the password grant and the refresh-token grant (reference/auth.md
//! §2.4, §4.2); the PKCE exchange is the flows' ([`crate::flows`]).
//!
//! Owns the grants' parameters, the password check (off the shard, with GoTrue's re-hash of a
//! hash of another cost) and the mapping of the refresh function's outcomes to GoTrue's errors.
//!
//! Invariants: an unknown user and a wrong password answer the same; the refresh grant is one
//! statement (`_madbase.auth_refresh` plus the claims), and its refusals that revoke a token
//! family still commit; the password grant is two batches because the hash must be verified off
//! the shard between reading it and starting the session.

use madbase_http::{Body, Response};
use madbase_pg::{Batch, Statement};
use serde::Deserialize;
use serde_json::json;

use crate::call::Call;
use crate::crypto::password;
use crate::error::{AuthError, AuthResult};
use crate::ratelimit::Bucket;
use crate::session::Method;
use crate::signup::{validate_phone, Provider};
use crate::AuthService;

const INVALID_LOGIN: &str = "Invalid login credentials";

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PasswordParams {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RefreshParams {
    refresh_token: Option<String>,
}

pub async fn token(auth: &AuthService, call: &Call<'_>, body: Body) -> AuthResult<Response> {
    let grant = call.query("grant_type").unwrap_or("");
    match grant {
        "password" | "refresh_token" | "pkce" => {}
        // No web3 chain and no OAuth/OIDC provider is enabled in MadBase yet: GoTrue's answers
        // for a disabled one.
        "web3" => return Err(AuthError::new(422, "web3_provider_disabled", "Web3 provider is disabled")),
        "id_token" => return Err(id_token_disabled(call, body).await),
        _ => return Err(AuthError::new(400, "invalid_credentials", "unsupported_grant_type")),
    }
    auth.shared.limits.check(Bucket::Token, call.ip())?;
    match grant {
        "password" => password_grant(auth, call, body).await,
        "refresh_token" => refresh_grant(auth, call, body).await,
        _ => crate::flows::pkce_grant(auth, call, body).await,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct IdTokenParams {
    provider: Option<String>,
    issuer: Option<String>,
}

/// GoTrue's refusal of an `id_token` grant for a provider that is not enabled (every one, until
/// MadBase serves OAuth providers).
async fn id_token_disabled(call: &Call<'_>, body: Body) -> AuthError {
    let params: IdTokenParams = match call.json(body).await {
        Ok(params) => params,
        Err(error) => return error,
    };
    let issuer = match (params.provider.as_deref(), params.issuer) {
        (Some("google"), _) => "https://accounts.google.com".to_owned(),
        (Some("apple"), _) => "https://appleid.apple.com".to_owned(),
        (_, Some(issuer)) => crate::call::truncate(&issuer, 256).to_owned(),
        (Some(provider), None) => crate::call::truncate(provider, 64).to_owned(),
        (None, None) => return AuthError::validation("provider or client_id and issuer required"),
    };
    AuthError::new(400, "provider_disabled", format!("Provider (issuer {issuer:?}) is not enabled"))
}

/// The user a password sign-in names: (id, hash, email confirmed, phone confirmed, banned).
const FIND_BY_EMAIL: &str = "select id::text, coalesce(encrypted_password, ''), email_confirmed_at is not null, \
     phone_confirmed_at is not null, coalesce(banned_until > now(), false) from auth.users \
     where lower(email) = $1 and aud = 'authenticated' and not is_sso_user and deleted_at is null limit 1";
const FIND_BY_PHONE: &str = "select id::text, coalesce(encrypted_password, ''), email_confirmed_at is not null, \
     phone_confirmed_at is not null, coalesce(banned_until > now(), false) from auth.users \
     where phone = $1 and aud = 'authenticated' and deleted_at is null limit 1";

async fn password_grant(auth: &AuthService, call: &Call<'_>, body: Body) -> AuthResult<Response> {
    let params: PasswordParams = call.json(body).await?;
    let email = params.email.as_deref().filter(|e| !e.is_empty());
    let phone = params.phone.as_deref().filter(|p| !p.is_empty());
    let settings = auth.settings();
    let (provider, find) = match (email, phone) {
        (Some(_), Some(_)) => {
            return Err(AuthError::validation("Only an email address or phone number should be provided on login."))
        }
        (Some(email), None) => {
            if !settings.email.enable_signup {
                return Err(AuthError::new(422, "email_provider_disabled", "Email logins are disabled"));
            }
            (Provider::Email, Statement::new(FIND_BY_EMAIL).bind(email.trim().to_lowercase()))
        }
        (None, Some(phone)) => {
            if !settings.sms.enable_signup {
                return Err(AuthError::new(422, "phone_provider_disabled", "Phone logins are disabled"));
            }
            let phone = validate_phone(phone).map_err(|_| AuthError::new(400, "invalid_credentials", INVALID_LOGIN))?;
            (Provider::Phone, Statement::new(FIND_BY_PHONE).bind(phone))
        }
        (None, None) => return Err(AuthError::validation("missing email or phone")),
    };
    let candidate = params.password.unwrap_or_default();
    if candidate.len() > 4096 {
        return Err(AuthError::new(400, "invalid_credentials", INVALID_LOGIN));
    }
    let found = auth.run(Batch::new().statement(find)).await?;
    let invalid = || AuthError::new(400, "invalid_credentials", INVALID_LOGIN);
    let row = found.first().and_then(|r| r.rows.first()).ok_or_else(invalid)?;
    let text = |i: usize| row.get_str(i).unwrap_or_default().to_owned();
    let (user_id, hash) = (text(0), text(1));
    let (email_confirmed, phone_confirmed, banned) = (text(2) == "t", text(3) == "t", text(4) == "t");
    if hash.is_empty() {
        return Err(invalid());
    }
    if banned {
        return Err(AuthError::new(400, "user_banned", "User is banned"));
    }
    let checked = candidate.clone();
    let (valid, rehash) = auth
        .blocking(move || {
            let valid = password::verify(&checked, &hash);
            let rehash = (valid && password::needs_rehash(&hash)).then(|| password::hash(&checked));
            (valid, rehash)
        })
        .await?;
    if !valid {
        return Err(invalid());
    }
    match provider {
        Provider::Email if !email_confirmed => {
            return Err(AuthError::new(400, "email_not_confirmed", "Email not confirmed"))
        }
        Provider::Phone if !phone_confirmed => {
            return Err(AuthError::new(400, "phone_not_confirmed", "Phone not confirmed"))
        }
        _ => {}
    }
    let weak_password = auth
        .check_password(&candidate)
        .err()
        .and_then(|weak| weak.weak_password.map(|reasons| json!({"reasons": reasons, "message": weak.message})));
    let mut batch = Batch::new();
    if let Some(rehashed) = rehash {
        batch = batch.statement(
            Statement::new("update auth.users set encrypted_password = $2 where id = $1::uuid")
                .bind(user_id.clone())
                .bind(rehashed),
        );
    }
    let (issued, start) =
        auth.start_session(call, &user_id, Method { amr: "password", provider: Some(provider.name()) });
    batch = batch.statement(start).statement(auth.session_select(&issued));
    let results = auth.run(batch).await?;
    auth.session_response(results.last().expect("one result per statement"), &issued, weak_password)
}

/// The refresh grant's one statement: the rotation, then the user and the claims of the new
/// access token (and the hook over them). Columns: user JSON, claims, user id or hook answer,
/// error code, refresh token.
fn refresh_statement(
    auth: &AuthService,
    call: &Call<'_>,
    token: &str,
    new_token: &str,
    iat: u64,
    exp: u64,
) -> Statement {
    let settings = auth.settings();
    let interval = |d: std::time::Duration| (!d.is_zero()).then(|| format!("{} seconds", d.as_secs_f64()));
    let inner = "select _madbase.auth_user_json(u)::text as user_json, \
         _madbase.auth_claims(u, r.session_id, $8, $9::bigint, $10::bigint) as claims, u.id as user_id, \
         r.error, r.refresh_token \
         from _madbase.auth_refresh($1, $2, $3::bool, $4::int, $5::interval, $6::interval, $7) r \
         left join auth.users u on r.error is null and u.id = r.user_id";
    let sql = match &auth.shared.access_token_hook {
        None => inner.to_owned(),
        Some(hook) => format!(
            "select user_json, claims, case when error is null then {hook}(json_build_object('user_id', user_id, \
             'claims', claims, 'authentication_method', 'token_refresh')::jsonb)::text end, error, refresh_token \
             from ({inner}) refreshed"
        ),
    };
    Statement::new(sql)
        .bind(token.to_owned())
        .bind(new_token.to_owned())
        .bind(if settings.enable_refresh_token_rotation { "t" } else { "f" })
        .bind(settings.refresh_token_reuse_interval.to_string())
        .bind_opt(interval(auth.shared.durations.session_timebox))
        .bind_opt(interval(auth.shared.durations.session_inactivity_timeout))
        .bind(call.ip().to_string())
        .bind(auth.shared.issuer.clone())
        .bind(iat.to_string())
        .bind(exp.to_string())
}

async fn refresh_grant(auth: &AuthService, call: &Call<'_>, body: Body) -> AuthResult<Response> {
    let params: RefreshParams = call.json(body).await?;
    let token = params.refresh_token.unwrap_or_default();
    // GoTrue's check: a token it issues is 12 of [a-z0-9] (its v2 format is longer; MadBase issues
    // only the first).
    if token.len() != crate::crypto::random::REFRESH_TOKEN_LEN
        || !token.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(AuthError::validation("Refresh token is not valid"));
    }
    let mut issued = auth.issue(String::new(), String::new(), crate::crypto::random::refresh_token(), "token_refresh");
    let statement = refresh_statement(auth, call, &token, &issued.refresh_token, issued.iat, issued.exp);
    let results = auth.run(Batch::new().statement(statement)).await?;
    let result = results.first().ok_or_else(|| AuthError::internal("refresh returned no result"))?;
    let row = result.rows.first().ok_or_else(|| AuthError::internal("refresh returned no row"))?;
    if let Some(error) = row.get_str(3) {
        return Err(refresh_error(error));
    }
    issued.refresh_token = row.get_str(4).unwrap_or_default().to_owned();
    auth.session_response(result, &issued, None)
}

/// GoTrue's answer for each refusal of the refresh function.
fn refresh_error(code: &str) -> AuthError {
    let (code, message) = match code {
        "user_banned" => ("user_banned", "Invalid Refresh Token: User Banned"),
        "session_not_found" => ("session_not_found", "Invalid Refresh Token: No Valid Session Found"),
        "session_expired" => ("session_expired", "Invalid Refresh Token: Session Expired"),
        "session_expired_inactivity" => ("session_expired", "Invalid Refresh Token: Session Expired (Inactivity)"),
        "refresh_token_already_used" => ("refresh_token_already_used", "Invalid Refresh Token: Already Used"),
        _ => ("refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found"),
    };
    AuthError::new(400, code, message)
}
