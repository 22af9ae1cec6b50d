//! `POST /otp`, `POST /magiclink` and the `/signup` of an address that must be confirmed
//! (GoTrue's `otp.go`, `magic_link.go`, and `signup.go` with autoconfirm off).
//!
//! Owns the decision GoTrue makes by calling its own sign-up handler: an unknown address gets a
//! new user (when sign-ups and `create_user` allow it) and, with confirmations on, the
//! confirmation message instead of a magic link / code; an unconfirmed one gets the
//! confirmation again. Invariants: the common case (a known, confirmed user) is one batch; the
//! creating case is one more, in which the user and its token are made together.

use madbase_http::{Body, Response};
use madbase_pg::Batch;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{deliver, empty, flow_error, message_id, redirect, FlowState, Issue, Sent, TokenKind, Who};
use crate::call::Call;
use crate::error::{AuthError, AuthResult};
use crate::ratelimit::Bucket;
use crate::signup::{is_duplicate, metadata, pkce_params, validate_email, validate_phone, NewUser, Provider};
use crate::AuthService;

#[derive(Debug, Deserialize)]
#[serde(default)]
struct OtpParams {
    email: Option<String>,
    phone: Option<String>,
    #[serde(deserialize_with = "crate::call::null_as_default")]
    create_user: bool,
    data: Option<Map<String, Value>>,
    channel: Option<String>,
    code_challenge_method: Option<String>,
    code_challenge: Option<String>,
}

impl Default for OtpParams {
    fn default() -> OtpParams {
        OtpParams {
            email: None,
            phone: None,
            create_user: true,
            data: None,
            channel: None,
            code_challenge_method: None,
            code_challenge: None,
        }
    }
}

pub async fn otp(auth: &AuthService, call: &Call<'_>, body: Body) -> AuthResult<Response> {
    auth.shared.limits.check(Bucket::SignInSignUp, call.ip())?;
    let params: OtpParams = call.json(body).await?;
    let email = params.email.as_deref().filter(|e| !e.is_empty());
    let phone = params.phone.as_deref().filter(|p| !p.is_empty());
    let channel = params.channel.as_deref().filter(|c| !c.is_empty());
    if email.is_some() && phone.is_some() {
        return Err(AuthError::validation("Only an email address or phone number should be provided"));
    }
    if email.is_some() && channel.is_some() {
        return Err(AuthError::validation("Channel should only be specified with Phone OTP"));
    }
    let challenge = params.code_challenge.as_deref().filter(|c| !c.is_empty());
    let code_challenge = pkce_params(params.code_challenge_method.as_deref(), challenge)?;
    let data = metadata(params.data)?;
    match (email, phone) {
        (Some(email), _) => magic_link(auth, call, email, data, code_challenge, params.create_user).await,
        (None, Some(phone)) => sms_otp(auth, call, phone, channel.unwrap_or("sms"), data, params.create_user).await,
        (None, None) => Err(AuthError::validation("One of email or phone must be set")),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MagicLinkParams {
    email: Option<String>,
    data: Option<Map<String, Value>>,
    code_challenge_method: Option<String>,
    code_challenge: Option<String>,
}

/// `POST /magiclink`, the older form of `/otp` with an email.
pub async fn magiclink(auth: &AuthService, call: &Call<'_>, body: Body) -> AuthResult<Response> {
    auth.shared.limits.check(Bucket::SignInSignUp, call.ip())?;
    let params: MagicLinkParams = call.json(body).await?;
    let email = params.email.unwrap_or_default();
    if email.is_empty() {
        return Err(AuthError::new(422, "validation_failed", "Password recovery requires an email"));
    }
    let challenge = params.code_challenge.as_deref().filter(|c| !c.is_empty());
    let code_challenge = pkce_params(params.code_challenge_method.as_deref(), challenge)?;
    magic_link(auth, call, &email, metadata(params.data)?, code_challenge, true).await
}

type Challenge = Option<(String, crate::crypto::pkce::Method)>;

/// GoTrue's `MagicLink`: a confirmed user gets a magic link and code; an unconfirmed or new one
/// goes through the sign-up (with confirmations off: confirmed at once, then the magic link).
async fn magic_link(
    auth: &AuthService,
    call: &Call<'_>,
    email: &str,
    data: Map<String, Value>,
    code_challenge: Challenge,
    create_user: bool,
) -> AuthResult<Response> {
    let settings = auth.settings();
    if !settings.email.enable_signup {
        return Err(AuthError::new(422, "email_provider_disabled", "Email logins are disabled"));
    }
    let email = validate_email(email)?;
    let confirmations = settings.email.enable_confirmations;
    let redirect_to = redirect::referrer(settings, call);
    let mut issue = Issue::email(auth, Who::Email(&email), TokenKind::MagicLink, redirect_to.clone());
    issue.require = if confirmations { "confirmed" } else { "any" };
    issue.flow = FlowState::of(&code_challenge, "magiclink", "magiclink");
    issue.audit = Some("user_recovery_requested");
    let results = auth.run_raw(Batch::new().statement(issue.statement(auth, call))).await.map_err(flow_error)?;
    let sent = Sent::parse(results.first())?;
    match sent.status.as_str() {
        "sent" => {
            deliver(auth, &issue, &sent).await?;
            Ok(empty())
        }
        "skipped" => {
            // Known but unconfirmed: the confirmation again (GoTrue's sign-up of an existing user).
            let mut again = Issue::email(auth, Who::Email(&email), TokenKind::Confirmation, redirect_to);
            again.flow = FlowState::of(&code_challenge, "email", "email/signup");
            again.audit = Some("user_confirmation_requested");
            let results =
                auth.run_raw(Batch::new().statement(again.statement(auth, call))).await.map_err(flow_error)?;
            let sent = Sent::parse(results.first())?;
            if sent.sent() {
                deliver(auth, &again, &sent).await?;
            }
            Ok(empty())
        }
        _ => {
            if !create_user {
                return Err(AuthError::new(422, "otp_disabled", "Signups not allowed for otp"));
            }
            if !settings.enable_signup {
                return Err(AuthError::new(422, "signup_disabled", "Signups not allowed for this instance"));
            }
            let user = new_user(Provider::Email, email.clone(), data, code_challenge.clone(), "sms");
            let mut batch = Batch::new();
            for statement in auth.create_user(&user, !confirmations) {
                batch = batch.statement(statement);
            }
            let mut issue = if confirmations {
                let mut issue = Issue::email(auth, Who::Id(&user.id), TokenKind::Confirmation, redirect_to);
                issue.flow = FlowState::of(&code_challenge, "email", "email/signup");
                issue.audit = Some("user_confirmation_requested");
                issue
            } else {
                let mut issue = Issue::email(auth, Who::Id(&user.id), TokenKind::MagicLink, redirect_to);
                issue.flow = FlowState::of(&code_challenge, "magiclink", "magiclink");
                issue.audit = Some("user_recovery_requested");
                issue
            };
            issue.require = "any";
            batch = batch.statement(issue.statement(auth, call));
            let sent = run_creating(auth, batch).await?;
            deliver(auth, &issue, &sent).await?;
            Ok(empty())
        }
    }
}

/// GoTrue's `SmsOtp`: the code goes to the number (a new number's user is created first).
async fn sms_otp(
    auth: &AuthService,
    call: &Call<'_>,
    phone: &str,
    channel: &str,
    data: Map<String, Value>,
    create_user: bool,
) -> AuthResult<Response> {
    let settings = auth.settings();
    if !settings.sms.enable_signup {
        return Err(AuthError::new(400, "phone_provider_disabled", "Unsupported phone provider"));
    }
    let phone = validate_phone(phone)?;
    if !matches!(channel, "sms" | "whatsapp") {
        return Err(AuthError::validation(INVALID_CHANNEL));
    }
    let mut issue = Issue::phone(auth, Who::Phone(&phone), TokenKind::PhoneConfirmation, &phone, channel);
    issue.audit = Some("user_recovery_requested");
    let results = auth.run_raw(Batch::new().statement(issue.statement(auth, call))).await.map_err(flow_error)?;
    let sent = Sent::parse(results.first())?;
    if sent.sent() {
        // An unconfirmed number went through GoTrue's sign-up, which answers `{}`.
        let id = deliver(auth, &issue, &sent).await?;
        return Ok(if sent.phone_confirmed { message_id(id) } else { empty() });
    }
    if !create_user {
        return Err(AuthError::new(422, "otp_disabled", "Signups not allowed for otp"));
    }
    if !settings.enable_signup {
        return Err(AuthError::new(422, "signup_disabled", "Signups not allowed for this instance"));
    }
    let confirmed = !settings.sms.enable_confirmations;
    let user = new_user(Provider::Phone, phone.clone(), data, None, channel);
    let mut batch = Batch::new();
    for statement in auth.create_user(&user, confirmed) {
        batch = batch.statement(statement);
    }
    let mut issue = Issue::phone(auth, Who::Id(&user.id), TokenKind::PhoneConfirmation, &phone, channel);
    issue.audit = Some("user_confirmation_requested");
    batch = batch.statement(issue.statement(auth, call));
    let sent = run_creating(auth, batch).await?;
    let id = deliver(auth, &issue, &sent).await?;
    Ok(if confirmed { message_id(id) } else { empty() })
}

/// GoTrue's invalid-channel message.
pub const INVALID_CHANNEL: &str =
    "Invalid channel, supported values are 'sms' or 'whatsapp'. 'whatsapp' is only supported if Twilio or Twilio Verify is used as the provider.";

fn new_user(
    provider: Provider,
    address: String,
    data: Map<String, Value>,
    challenge: Challenge,
    channel: &str,
) -> NewUser {
    NewUser {
        id: crate::crypto::random::uuid_v4(),
        provider: Some(provider),
        address: Some(address),
        encrypted_password: String::new(),
        user_metadata: data,
        code_challenge: challenge,
        channel: channel.to_owned(),
        claims_in_metadata: true,
    }
}

/// Runs a batch that creates a user and ends with an `auth_send`; a taken address (another
/// request made it meanwhile) is GoTrue's answer to a sign-up race.
async fn run_creating(auth: &AuthService, batch: Batch) -> AuthResult<Sent> {
    match auth.run_raw(batch).await {
        Ok(results) => Sent::parse(results.last()),
        Err(error) if is_duplicate(&error) => {
            Err(AuthError::new(422, "user_already_exists", "User already registered"))
        }
        Err(error) => Err(flow_error(error)),
    }
}

impl AuthService {
    /// `POST /signup` when the address must be confirmed: the user and its confirmation token
    /// in one batch, then the message; the user is the answer (no session). A taken address:
    /// a confirmed one gets GoTrue's sanitized stand-in (so addresses cannot be enumerated), an
    /// unconfirmed one the confirmation again.
    pub(crate) async fn signup_unconfirmed(&self, call: &Call<'_>, user: NewUser) -> AuthResult<Response> {
        let provider = user.provider.unwrap_or(Provider::Email);
        let address = user.address.clone().unwrap_or_default();
        let redirect_to = redirect::referrer(self.settings(), call);
        let issue_for = |who| match provider {
            Provider::Email => {
                let mut issue = Issue::email(self, who, TokenKind::Confirmation, redirect_to.clone());
                issue.flow = FlowState::of(&user.code_challenge, "email", "email/signup");
                issue.audit = Some("user_confirmation_requested");
                issue
            }
            Provider::Phone => {
                let mut issue = Issue::phone(self, who, TokenKind::PhoneConfirmation, &address, &user.channel);
                issue.audit = Some("user_confirmation_requested");
                issue
            }
        };
        let mut issue = issue_for(Who::Id(&user.id));
        if provider == Provider::Email {
            // Counted before the user exists: a refused mail leaves no user behind.
            self.shared.limits.email_sent()?;
            issue.email_limit_counted = true;
        }
        let mut batch = Batch::new();
        for statement in self.create_user(&user, false) {
            batch = batch.statement(statement);
        }
        batch = batch.statement(issue.statement(self, call));
        match self.run_raw(batch).await {
            Ok(results) => {
                let sent = Sent::parse(results.last())?;
                deliver(self, &issue, &sent).await?;
                Ok(Response::json(200, sent.user.to_string()))
            }
            Err(error) if is_duplicate(&error) => {
                let who = match provider {
                    Provider::Email => Who::Email(&address),
                    Provider::Phone => Who::Phone(&address),
                };
                let mut again = issue_for(who);
                again.email_limit_counted = issue.email_limit_counted;
                again.require = if provider == Provider::Email { "unconfirmed" } else { "phone_unconfirmed" };
                let results =
                    self.run_raw(Batch::new().statement(again.statement(self, call))).await.map_err(flow_error)?;
                let sent = Sent::parse(results.first())?;
                if !sent.sent() {
                    return Ok(Response::json(200, sanitized(&user, provider, &address, &sent.now).to_string()));
                }
                deliver(self, &again, &sent).await?;
                let mut answer = sent.user;
                if answer.get("invited_at").is_some_and(|v| !v.is_null()) {
                    answer["user_metadata"] = json!({});
                    answer["identities"] = json!([]);
                }
                Ok(Response::json(200, answer.to_string()))
            }
            Err(error) => Err(flow_error(error)),
        }
    }
}

/// GoTrue's `sanitizeUser`: what a sign-up of a taken, confirmed address answers — a user that
/// looks new (fresh id, just sent) and reveals nothing of the real one.
fn sanitized(user: &NewUser, provider: Provider, address: &str, now: &str) -> Value {
    let (email, phone) = match provider {
        Provider::Email => (address, ""),
        Provider::Phone => ("", address),
    };
    json!({
        "id": crate::crypto::random::uuid_v4(),
        "aud": "authenticated",
        "role": "",
        "email": email,
        "phone": phone,
        "confirmation_sent_at": now,
        "app_metadata": {"provider": provider.name(), "providers": [provider.name()]},
        "user_metadata": user.user_metadata,
        "identities": [],
        "created_at": now,
        "updated_at": now,
        "is_anonymous": false,
    })
}
