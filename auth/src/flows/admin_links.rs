//! `POST /invite`, `POST /admin/generate_link` (GoTrue's `invite.go` and `adminGenerateLink` in
//! `mail.go`) and MadBase's `GET /admin/mail`. The caller (the admin router) has checked the
//! admin role.
//!
//! Invariants: a new user and its token are one batch; a taken address takes a second batch
//! that finds the user and issues the token (or refuses) in one statement; `generate_link` sends
//! nothing and applies no sending frequency (the admin hands the link over), `/invite` mails.

use madbase_http::{Body, Response};
use madbase_pg::{Batch, Statement};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::mail::action_link;
use super::{deliver, flow_error, redirect, Issue, Sent, TokenKind, Who};
use crate::call::Call;
use crate::crypto::password;
use crate::error::{AuthError, AuthResult};
use crate::signup::{is_duplicate, metadata, validate_email, NewUser, Provider};
use crate::AuthService;

const DUPLICATE_EMAIL: &str = "A user with this email address has already been registered";

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InviteParams {
    #[serde(deserialize_with = "crate::call::null_as_default")]
    email: String,
    data: Option<Map<String, Value>>,
}

/// `POST /invite`: the user (created unless it exists unconfirmed) with `invited_at`, and the
/// invitation mailed.
pub async fn invite(auth: &AuthService, call: &Call<'_>, body: Body) -> AuthResult<Response> {
    let params: InviteParams = call.json(body).await?;
    let email = validate_email(&params.email)?;
    let user = new_user(email.clone(), metadata(params.data)?, String::new());
    let redirect_to = redirect::referrer(auth.settings(), call);
    let mut issue = Issue::email(auth, Who::Id(&user.id), TokenKind::Invite, redirect_to.clone());
    issue.audit = Some("user_invited");
    let mut batch = Batch::new();
    for statement in auth.create_user(&user, false) {
        batch = batch.statement(statement);
    }
    batch = batch.statement(issue.statement(auth, call));
    let (issue, sent) = match auth.run_raw(batch).await {
        Ok(results) => (issue, Sent::parse(results.last())?),
        Err(error) if is_duplicate(&error) => {
            let mut again = Issue::email(auth, Who::Email(&email), TokenKind::Invite, redirect_to);
            again.require = "unconfirmed";
            again.audit = Some("user_invited");
            let results =
                auth.run_raw(Batch::new().statement(again.statement(auth, call))).await.map_err(flow_error)?;
            let sent = Sent::parse(results.first())?;
            if !sent.sent() {
                return Err(AuthError::new(422, "email_exists", DUPLICATE_EMAIL));
            }
            (again, sent)
        }
        Err(error) => return Err(flow_error(error)),
    };
    deliver(auth, &issue, &sent).await?;
    Ok(Response::json(200, sent.user.to_string()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GenerateLinkParams {
    #[serde(rename = "type")]
    #[serde(deserialize_with = "crate::call::null_as_default")]
    kind: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    email: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    new_email: String,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    password: String,
    data: Option<Map<String, Value>>,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    redirect_to: String,
}

/// `POST /admin/generate_link`: the token of a link stored as if mailed, answered with the user
/// and the link's properties (`action_link`, `email_otp`, `hashed_token`, `verification_type`,
/// `redirect_to`) instead of sent.
///
/// Departure: `hashed_token` is the token the link carries; GoTrue answers the hash over the
/// current address even for `email_change_new`, whose link carries the new address's.
pub async fn generate_link(auth: &AuthService, call: &Call<'_>, body: Body) -> AuthResult<Response> {
    let params: GenerateLinkParams = call.json(body).await?;
    let settings = auth.settings();
    let email = validate_email(&params.email)?;
    let redirect_to = if redirect::is_valid(settings, &params.redirect_to) {
        params.redirect_to.clone()
    } else {
        redirect::referrer(settings, call)
    };
    let data = metadata(params.data)?;
    let mut kind = params.kind.as_str();
    let token = match kind {
        "magiclink" => TokenKind::MagicLink,
        "recovery" => TokenKind::Recovery,
        "invite" => TokenKind::Invite,
        "signup" => TokenKind::Confirmation,
        "email_change_current" | "email_change_new" => {
            if !settings.email.double_confirm_changes && kind == "email_change_current" {
                return Err(AuthError::validation("Enable secure email change to generate link for current email"));
            }
            if kind == "email_change_current" {
                TokenKind::EmailChangeCurrent
            } else {
                TokenKind::EmailChangeNew
            }
        }
        other => return Err(AuthError::validation(format!("Invalid email action link type requested: {other}"))),
    };
    let mut issue = Issue::email(auth, Who::Email(&email), token, redirect_to.clone());
    issue.frequency = false;
    issue.otp_current = issue.otp.clone();
    let mut batch = Batch::new();
    match token {
        TokenKind::MagicLink | TokenKind::Recovery => issue.audit = Some("user_recovery_requested"),
        TokenKind::Invite => {
            issue.require = "unconfirmed";
            issue.audit = Some("user_invited");
        }
        TokenKind::Confirmation => {
            issue.require = "unconfirmed";
            if !data.is_empty() {
                batch = batch.statement(
                    Statement::new(
                        "update auth.users set raw_user_meta_data = _madbase.auth_meta_merge(raw_user_meta_data, $2::jsonb) \
                         where lower(email) = $1 and aud = 'authenticated' and not is_sso_user and email_confirmed_at is null",
                    )
                    .bind(email.clone())
                    .bind(Value::Object(data.clone()).to_string()),
                );
            }
        }
        _ => {
            let new_email = validate_email(&params.new_email)?;
            batch = batch.statement(
                Statement::new(
                    "select _madbase.auth_flow_fail('email_exists', 422, $3) from auth.users u \
                     where lower(u.email) = $2 and lower(u.email) <> $1 and u.aud = 'authenticated' limit 1",
                )
                .bind(email.clone())
                .bind(new_email.clone())
                .bind(DUPLICATE_EMAIL),
            );
            issue.new_address = Some(new_email);
        }
    }
    let first = batch.statements.len();
    batch = batch.statement(issue.statement(auth, call));
    let results = auth.run_raw(batch).await.map_err(flow_error)?;
    let mut sent = Sent::parse(results.get(first))?;
    if sent.status == "skipped" {
        return Err(AuthError::new(422, "email_exists", DUPLICATE_EMAIL));
    }
    if sent.status == "not_found" {
        let (create_kind, password) = match token {
            TokenKind::MagicLink => (TokenKind::Confirmation, String::new()),
            TokenKind::Confirmation => {
                if params.password.is_empty() {
                    return Err(AuthError::validation("Signup requires a valid password"));
                }
                auth.check_password(&params.password)?;
                let plain = params.password.clone();
                (TokenKind::Confirmation, auth.blocking(move || password::hash(&plain)).await?)
            }
            TokenKind::Invite => (TokenKind::Invite, String::new()),
            _ => return Err(AuthError::new(404, "user_not_found", "User with this email not found")),
        };
        if create_kind == TokenKind::Confirmation {
            kind = "signup";
        }
        let user = new_user(email.clone(), data, password);
        let mut create = Issue::email(auth, Who::Id(&user.id), create_kind, redirect_to.clone());
        create.otp = issue.otp.clone();
        create.frequency = false;
        create.audit = issue.audit;
        let mut batch = Batch::new();
        for statement in auth.create_user(&user, false) {
            batch = batch.statement(statement);
        }
        batch = batch.statement(create.statement(auth, call));
        sent = match auth.run_raw(batch).await {
            Ok(results) => Sent::parse(results.last())?,
            Err(error) if is_duplicate(&error) => return Err(AuthError::new(422, "email_exists", DUPLICATE_EMAIL)),
            Err(error) => return Err(flow_error(error)),
        };
    }
    let link_type = match kind {
        "email_change_current" | "email_change_new" => "email_change",
        other => other,
    };
    let mut answer = match sent.user {
        Value::Object(user) => user,
        _ => Map::new(),
    };
    answer.insert(
        "action_link".into(),
        action_link(&auth.shared.external_url, &sent.token_hash, link_type, &redirect_to).into(),
    );
    answer.insert("email_otp".into(), issue.otp.into());
    answer.insert("hashed_token".into(), sent.token_hash.into());
    answer.insert("verification_type".into(), kind.into());
    answer.insert("redirect_to".into(), redirect_to.into());
    Ok(Response::json(200, Value::Object(answer).to_string()))
}

fn new_user(email: String, data: Map<String, Value>, encrypted_password: String) -> NewUser {
    NewUser {
        id: crate::crypto::random::uuid_v4(),
        provider: Some(Provider::Email),
        address: Some(email),
        encrypted_password,
        user_metadata: data,
        code_challenge: None,
        channel: "sms".to_owned(),
        claims_in_metadata: false,
    }
}

/// `GET /admin/mail`: the messages the mailer recorded (and the SMS the default sender
/// recorded), so a developer without SMTP or an SMS provider can finish a flow.
pub async fn mail_outbox(auth: &AuthService) -> AuthResult<Response> {
    let mail = serde_json::to_value(auth.shared.mailer.outbox()).map_err(AuthError::internal)?;
    Ok(Response::json(200, json!({"mail": mail, "sms": auth.shared.sms_outbox.list()}).to_string()))
}
