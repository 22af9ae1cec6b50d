//! `PUT /user` (GoTrue's `UserUpdate`): metadata, password, email and phone changes of the caller.
//!
//! Owns the update rules, in GoTrue's order: AAL2 for a user with a verified factor changing
//! email, phone or password (401 `insufficient_aal`); an anonymous user's password needs an
//! email or phone (422); a taken email or phone (422 `email_exists` / `phone_exists`);
//! `secure_password_change` (a session older than 24 h needs the nonce of `/reauthenticate`:
//! `reauthentication_needed`, `reauthentication_not_valid`); the same password again (422
//! `same_password`). An email change sends tokens to the new address and, with
//! `double_confirm_changes`, the current one; an anonymous user's email (or any phone, with SMS
//! confirmations off) is confirmed at once and the user is no longer anonymous.
//!
//! Invariants: a data-only update is one batch; with an email, phone or password the user is
//! read first (the password is compared with the stored hash and hashed off the shard between
//! the two batches); every write of the request, the audit row and the user answered are one
//! batch headed by the caller's session check; messages go out after it committed.

use madbase_http::{Body, Response};
use madbase_pg::{Batch, Statement};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::otp::INVALID_CHANNEL;
use super::{deliver, flow_error, redirect, FlowState, Issue, Sent, TokenKind, Who, SMS_OTP_EXPIRY};
use crate::call::{Call, ADMIN_ROLES};
use crate::crypto::{otp, password};
use crate::error::{AuthError, AuthResult};
use crate::ratelimit::Bucket;
use crate::signup::{metadata, pkce_params, validate_email, validate_phone};
use crate::AuthService;

const DUPLICATE_EMAIL: &str = "A user with this email address has already been registered";
const DUPLICATE_PHONE: &str = "A user with this phone number has already been registered";
const INVALID_NONCE: &str = "Nonce has expired or is invalid";

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UpdateParams {
    #[serde(deserialize_with = "crate::call::null_as_default")]
    email: String,
    password: Option<String>,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    nonce: String,
    data: Option<Map<String, Value>>,
    app_metadata: Option<Map<String, Value>>,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    phone: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    channel: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    code_challenge: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    code_challenge_method: String,
}

/// What the first batch read (`_madbase.auth_user_state`).
struct State {
    hash: String,
    email: String,
    phone: String,
    anonymous: bool,
    has_factor: bool,
    session_age: Option<f64>,
    nonce_hash: String,
    nonce_age: Option<f64>,
    email_taken: bool,
    phone_taken: bool,
}

pub async fn update_user(auth: &AuthService, call: &Call<'_>, body: Body) -> AuthResult<Response> {
    auth.shared.limits.check(Bucket::SignInSignUp, call.ip())?;
    let params: UpdateParams = call.json(body).await?;
    let caller = auth.caller(call)?;
    let settings = auth.settings();
    let email = match params.email.as_str() {
        "" => None,
        email => Some(validate_email(email)?),
    };
    let phone = match params.phone.as_str() {
        "" => None,
        phone => {
            let phone = validate_phone(phone)?;
            let channel = if params.channel.is_empty() { "sms" } else { params.channel.as_str() };
            if !matches!(channel, "sms" | "whatsapp") {
                return Err(AuthError::validation(INVALID_CHANNEL));
            }
            Some(phone)
        }
    };
    if let Some(password) = &params.password {
        auth.check_password(password)?;
    }
    let data = params.data.map(|data| metadata(Some(data))).transpose()?;
    let app_data = params.app_metadata.map(|data| metadata(Some(data))).transpose()?;
    if app_data.is_some() && !caller.claims.role().is_some_and(|role| ADMIN_ROLES.contains(&role)) {
        return Err(AuthError::new(403, "not_admin", "Updating app_metadata requires admin privileges"));
    }
    let challenge = Some(params.code_challenge.as_str()).filter(|c| !c.is_empty());
    let code_challenge = pkce_params(Some(params.code_challenge_method.as_str()), challenge)?;

    let mut new_hash = None;
    let state = if email.is_some() || phone.is_some() || params.password.is_some() {
        Some(read_state(auth, &caller, email.as_deref(), phone.as_deref()).await?)
    } else {
        None
    };
    if let Some(state) = &state {
        let new_password = params.password.as_deref().filter(|p| !p.is_empty());
        let email_changes = email.as_deref().is_some_and(|e| e != state.email);
        let phone_changes = phone.as_deref().is_some_and(|p| p != state.phone);
        if state.has_factor && caller.aal() != "aal2" && (new_password.is_some() || email_changes || phone_changes) {
            return Err(AuthError::new(
                401,
                "insufficient_aal",
                "AAL2 session is required to update email or password when MFA is enabled.",
            ));
        }
        if state.anonymous && new_password.is_some() && email.is_none() && phone.is_none() {
            return Err(AuthError::new(
                422,
                "validation_failed",
                "Updating password of an anonymous user without an email or phone is not allowed",
            ));
        }
        if email_changes && state.email_taken {
            return Err(AuthError::new(422, "email_exists", DUPLICATE_EMAIL));
        }
        if phone_changes && state.phone_taken {
            return Err(AuthError::new(422, "phone_exists", DUPLICATE_PHONE));
        }
        if let Some(password) = params.password.clone() {
            if settings.email.secure_password_change && state.session_age.is_none_or(|age| age > 24.0 * 3600.0) {
                check_nonce(auth, state, &params.nonce)?;
            }
            if !password.is_empty() && !state.hash.is_empty() {
                let (candidate, stored) = (password.clone(), state.hash.clone());
                let same = auth.blocking(move || password::verify(&candidate, &stored)).await?;
                if same {
                    return Err(AuthError::new(
                        422,
                        "same_password",
                        "New password should be different from the old password.",
                    ));
                }
            }
            new_hash = Some(auth.blocking(move || password::hash(&password)).await?);
        }
    }

    let user_id = caller.user_id.clone();
    let mut batch = Batch::new().statement(caller.require_session());
    if let Some(hash) = new_hash {
        batch = batch.statement(
            Statement::new("select _madbase.auth_set_password($1::uuid, $2::uuid, $3, $4)")
                .bind(user_id.clone())
                .bind_opt(caller.session_id.clone())
                .bind(hash)
                .bind(call.ip().to_string()),
        );
    }
    for (column, update) in [("raw_user_meta_data", data), ("raw_app_meta_data", app_data)] {
        if let Some(update) = update {
            batch = batch.statement(
                Statement::new(format!(
                    "update auth.users set {column} = _madbase.auth_meta_merge({column}, $2::jsonb), updated_at = now() \
                     where id = $1::uuid"
                ))
                .bind(user_id.clone())
                .bind(Value::Object(update).to_string()),
            );
        }
    }
    let mut issues = Vec::with_capacity(2);
    let state_email = state.as_ref().map_or("", |s| s.email.as_str());
    let state_phone = state.as_ref().map_or("", |s| s.phone.as_str());
    if let Some(email) = email.as_deref().filter(|e| *e != state_email) {
        let anonymous = state.as_ref().is_some_and(|s| s.anonymous);
        if anonymous && !settings.email.enable_confirmations {
            batch = batch.statement(change_now(&user_id, "email_change", email, "auth_change_email"));
        } else {
            let redirect_to = redirect::referrer(settings, call);
            let mut issue = Issue::email(auth, Who::Id(&user_id), TokenKind::EmailChange, redirect_to);
            issue.new_address = Some(email.to_owned());
            issue.flow = FlowState::of(&code_challenge, "email_change", "email_change");
            issues.push(issue);
        }
    }
    if let Some(phone) = phone.as_deref().filter(|p| *p != state_phone) {
        if !settings.sms.enable_confirmations {
            batch = batch.statement(change_now(&user_id, "phone_change", phone, "auth_change_phone"));
        } else {
            let channel = if params.channel.is_empty() { "sms" } else { params.channel.as_str() };
            let mut issue = Issue::phone(auth, Who::Id(&user_id), TokenKind::PhoneChange, phone, channel);
            issue.new_address = Some(phone.to_owned());
            issues.push(issue);
        }
    }
    let first_issue = batch_len(&batch);
    for issue in &issues {
        batch = batch.statement(issue.statement(auth, call));
    }
    batch = batch
        .statement(
            Statement::new("select _madbase.auth_audit($1::uuid, 'user_modified', $2, '{}'::json)")
                .bind(user_id.clone())
                .bind(call.ip().to_string()),
        )
        .statement(
            Statement::new("select _madbase.auth_user_json(u)::text from auth.users u where u.id = $1::uuid")
                .bind(user_id.clone()),
        );
    let results = auth.run_raw(batch).await.map_err(flow_error)?;
    for (i, issue) in issues.iter().enumerate() {
        let sent = Sent::parse(results.get(first_issue + i))?;
        if sent.sent() {
            deliver(auth, issue, &sent).await?;
        }
    }
    // The user as it is now, with the pending change and its sent time.
    let user = results.last().and_then(|r| r.scalar()).ok_or_else(|| AuthError::internal("user update: no user"))?;
    Ok(Response::json(200, user.to_owned()))
}

fn batch_len(batch: &Batch) -> usize {
    batch.statements.len()
}

/// The statements that make a change at once (no confirmation needed): the pending address set,
/// then confirmed by `function`, then app_metadata's providers brought up to date.
fn change_now(user_id: &str, column: &str, address: &str, function: &str) -> Statement {
    Statement::new(format!(
        "with pending as (update auth.users set {column} = $2 where id = $1::uuid returning id) \
         select _madbase.{function}(id), _madbase.auth_sync_providers(id) from pending"
    ))
    .bind(user_id.to_owned())
    .bind(address.to_owned())
}

async fn read_state(
    auth: &AuthService,
    caller: &crate::user::Caller,
    email: Option<&str>,
    phone: Option<&str>,
) -> AuthResult<State> {
    let batch = Batch::new()
        .statement(caller.require_session())
        .statement(
            Statement::new("select * from _madbase.auth_user_state($1::uuid, $2::uuid, $3, $4)")
                .bind(caller.user_id.clone())
                .bind_opt(caller.session_id.clone())
                .bind_opt(email.map(str::to_owned))
                .bind_opt(phone.map(str::to_owned)),
        )
        .read_only(true);
    let results = auth.run_raw(batch).await.map_err(flow_error)?;
    let row = results
        .get(1)
        .and_then(|r| r.rows.first())
        .ok_or_else(|| AuthError::new(403, "user_not_found", "User from sub claim in JWT does not exist"))?;
    let text = |i: usize| row.get_str(i).unwrap_or("").to_owned();
    let flag = |i: usize| row.get_str(i) == Some("t");
    let number = |i: usize| row.get_str(i).and_then(|v| v.parse::<f64>().ok());
    Ok(State {
        hash: text(0),
        email: text(1),
        phone: text(2),
        anonymous: flag(3),
        has_factor: flag(4),
        session_age: number(5),
        nonce_hash: text(6),
        nonce_age: number(7),
        email_taken: flag(8),
        phone_taken: flag(9),
    })
}

/// GoTrue's `verifyReauthentication`: the nonce hashed with the user's email (else phone), equal
/// in constant time to the stored one and younger than the OTP lifetime.
fn check_nonce(auth: &AuthService, state: &State, nonce: &str) -> AuthResult<()> {
    if nonce.is_empty() {
        return Err(AuthError::new(400, "reauthentication_needed", "Password update requires reauthentication"));
    }
    let not_valid = || AuthError::new(422, "reauthentication_not_valid", INVALID_NONCE);
    let Some(age) = state.nonce_age else { return Err(not_valid()) };
    if state.nonce_hash.is_empty() || nonce.len() > super::MAX_TOKEN {
        return Err(not_valid());
    }
    let (address, lifetime) = if !state.email.is_empty() {
        (&state.email, auth.settings().email.otp_expiry)
    } else if !state.phone.is_empty() {
        (&state.phone, SMS_OTP_EXPIRY)
    } else {
        return Err(AuthError::new(
            422,
            "reauthentication_not_valid",
            "Reauthentication requires an email or a phone number",
        ));
    };
    let hash = otp::token_hash(address, nonce);
    if !otp::ct_eq(&hash, &state.nonce_hash) || age > lifetime as f64 {
        return Err(not_valid());
    }
    Ok(())
}
