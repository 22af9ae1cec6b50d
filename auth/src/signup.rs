//! `POST /signup`: email, phone and anonymous sign-ups (reference/auth.md §4.1).
//!
//! Owns the sign-up parameters and their validation (GoTrue's messages and order), the new user
//! and identity rows, and the auto-confirmed answer (a session). A sign-up that needs a
//! confirmation hands over to the flows ([`crate::flows`]) once the user is validated and hashed.
//!
//! Invariants: the before-user-created hook, the user, its identity and its first session are one
//! batch — a refused or failed sign-up leaves nothing; an existing address is found by the
//! database's unique index (no read-then-write race); the password is hashed off the shard.

use madbase_http::{Body, Response};
use madbase_pg::{Batch, PgError, Statement};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::call::Call;
use crate::crypto::{password, pkce, random};
use crate::error::{AuthError, AuthResult};
use crate::ratelimit::Bucket;
use crate::session::Method;
use crate::AuthService;

/// The body of `POST /signup` (unknown keys, like `gotrue_meta_security`, are ignored as GoTrue does).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SignupParams {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub password: Option<String>,
    pub data: Option<Map<String, Value>>,
    pub channel: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
}

/// Which identity a sign-up creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Email,
    Phone,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::Email => "email",
            Provider::Phone => "phone",
        }
    }
}

/// A validated sign-up, ready to insert.
pub struct NewUser {
    pub id: String,
    pub provider: Option<Provider>,
    /// Lower-cased email or E.164 phone (without `+`), per `provider`.
    pub address: Option<String>,
    pub encrypted_password: String,
    pub user_metadata: Map<String, Value>,
    pub code_challenge: Option<(String, pkce::Method)>,
    pub channel: String,
    /// Copy the identity's claims (`sub`, `email`, `email_verified`, …) into `user_metadata`, as
    /// GoTrue's sign-up paths do (`/signup`, `/otp`); its admin paths (invite, `generate_link`)
    /// keep the metadata as given.
    pub claims_in_metadata: bool,
}

/// Bytes of `data` (user metadata) a sign-up may carry.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

pub async fn signup(auth: &AuthService, call: &Call<'_>, body: Body) -> AuthResult<Response> {
    let settings = auth.settings();
    if !settings.enable_signup {
        return Err(AuthError::new(422, "signup_disabled", "Signups not allowed for this instance"));
    }
    let params: SignupParams = call.json(body).await?;
    let email = params.email.as_deref().filter(|e| !e.is_empty());
    let phone = params.phone.as_deref().filter(|p| !p.is_empty());
    if email.is_none() && phone.is_none() {
        return anonymous(auth, call, params).await;
    }
    auth.shared.limits.check(Bucket::SignInSignUp, call.ip())?;
    let password = params.password.clone().unwrap_or_default();
    if password.is_empty() {
        return Err(AuthError::validation("Signup requires a valid password"));
    }
    auth.check_password(&password)?;
    if email.is_some() && phone.is_some() {
        return Err(AuthError::validation("Only an email address or phone number should be provided on signup."));
    }
    let channel = params.channel.clone().unwrap_or_else(|| "sms".to_owned());
    if phone.is_some() && !matches!(channel.as_str(), "sms" | "whatsapp") {
        return Err(AuthError::validation("Invalid channel, supported values are 'sms' or 'whatsapp'"));
    }
    let challenge = params.code_challenge.as_deref().filter(|c| !c.is_empty());
    if phone.is_some() && challenge.is_some() {
        return Err(AuthError::validation("PKCE not supported for phone signups"));
    }
    let code_challenge = pkce_params(params.code_challenge_method.as_deref(), challenge)?;
    let (provider, address) = match (email, phone) {
        (Some(email), _) => {
            if !settings.email.enable_signup {
                return Err(AuthError::new(400, "email_provider_disabled", "Email signups are disabled"));
            }
            (Provider::Email, validate_email(email)?)
        }
        (None, Some(phone)) => {
            if !settings.sms.enable_signup {
                return Err(AuthError::new(400, "phone_provider_disabled", "Phone signups are disabled"));
            }
            (Provider::Phone, validate_phone(phone)?)
        }
        (None, None) => unreachable!("anonymous sign-ups returned above"),
    };
    let data = metadata(params.data)?;
    let encrypted_password = auth.blocking(move || password::hash(&password)).await?;
    let user = NewUser {
        id: random::uuid_v4(),
        provider: Some(provider),
        address: Some(address),
        encrypted_password,
        user_metadata: data,
        code_challenge,
        channel,
        claims_in_metadata: true,
    };
    let confirmed = match provider {
        Provider::Email => !settings.email.enable_confirmations,
        Provider::Phone => !settings.sms.enable_confirmations,
    };
    if !confirmed {
        return auth.signup_unconfirmed(call, user).await;
    }
    let mut batch = Batch::new();
    for statement in auth.create_user(&user, true) {
        batch = batch.statement(statement);
    }
    let (issued, start) =
        auth.start_session(call, &user.id, Method { amr: "password", provider: Some(provider.name()) });
    batch = batch.statement(start).statement(auth.session_select(&issued));
    match auth.run_raw(batch).await {
        Ok(results) => auth.session_response(results.last().expect("one result per statement"), &issued, None),
        Err(error) if is_duplicate(&error) => {
            Err(AuthError::new(422, "user_already_exists", "User already registered"))
        }
        Err(error) => Err(crate::db_error(error)),
    }
}

/// An anonymous sign-up: a user with no email, phone or identity, and its session.
async fn anonymous(auth: &AuthService, call: &Call<'_>, params: SignupParams) -> AuthResult<Response> {
    if !auth.settings().enable_anonymous_sign_ins {
        return Err(AuthError::new(422, "anonymous_provider_disabled", "Anonymous sign-ins are disabled"));
    }
    auth.shared.limits.check(Bucket::AnonymousSignIn, call.ip())?;
    let user = NewUser {
        id: random::uuid_v4(),
        provider: None,
        address: None,
        encrypted_password: String::new(),
        user_metadata: metadata(params.data)?,
        code_challenge: None,
        channel: String::new(),
        claims_in_metadata: true,
    };
    let mut batch = Batch::new();
    for statement in auth.create_user(&user, true) {
        batch = batch.statement(statement);
    }
    let (issued, start) = auth.start_session(call, &user.id, Method { amr: "anonymous", provider: None });
    batch = batch.statement(start).statement(auth.session_select(&issued));
    let results = auth.run(batch).await?;
    auth.session_response(results.last().expect("one result per statement"), &issued, None)
}

impl AuthService {
    /// The statements that create `user` (the before-user-created hook's guard first, then the
    /// user, its identity and the audit row); `confirmed`: its address is confirmed now.
    pub(crate) fn create_user(&self, user: &NewUser, confirmed: bool) -> Vec<Statement> {
        let mut statements = Vec::with_capacity(4);
        let identity_data = user.provider.map(|provider| {
            let mut data = identity_data(&user.id, provider, user.address.as_deref());
            // GoTrue copies the sign-up data into the identity, under the provider's own claims.
            if let Value::Object(claims) = &mut data {
                for (key, value) in &user.user_metadata {
                    claims.entry(key.clone()).or_insert_with(|| value.clone());
                }
            }
            data
        });
        let mut user_metadata = user.user_metadata.clone();
        if let (true, Some(Value::Object(claims))) = (user.claims_in_metadata, &identity_data) {
            for (key, value) in claims {
                user_metadata.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        if confirmed {
            match user.provider {
                Some(Provider::Email) => {
                    user_metadata.insert("email_verified".into(), true.into());
                }
                Some(Provider::Phone) => {
                    user_metadata.insert("phone_verified".into(), true.into());
                }
                None => {}
            }
        }
        let app_metadata = match user.provider {
            Some(provider) => json!({"provider": provider.name(), "providers": [provider.name()]}),
            None => json!({}),
        };
        let (email, phone) = match user.provider {
            Some(Provider::Email) => (user.address.clone(), None),
            Some(Provider::Phone) => (None, user.address.clone()),
            None => (None, None),
        };
        if let Some(hook) = &self.shared.before_user_created_hook {
            let now = madbase_core::jwt::unix_now();
            let payload = json!({
                "metadata": {"name": "before-user-created"},
                "user": {
                    "id": user.id, "aud": "authenticated", "role": "", "email": email.clone().unwrap_or_default(),
                    "phone": phone.clone().unwrap_or_default(), "app_metadata": app_metadata,
                    "user_metadata": user_metadata, "identities": [], "created_at": now, "updated_at": now,
                    "is_anonymous": user.provider.is_none(),
                },
            });
            statements.push(
                Statement::new(format!("select _madbase.auth_hook_guard({hook}($1::jsonb))")).bind(payload.to_string()),
            );
        }
        statements.push(
            Statement::new(INSERT_USER)
                .bind(user.id.clone())
                .bind_opt(email)
                .bind_opt(phone)
                .bind(user.encrypted_password.clone())
                .bind(if confirmed && user.provider == Some(Provider::Email) { "t" } else { "f" })
                .bind(if confirmed && user.provider == Some(Provider::Phone) { "t" } else { "f" })
                .bind(app_metadata.to_string())
                .bind(Value::Object(user_metadata).to_string())
                .bind(if user.provider.is_none() { "t" } else { "f" }),
        );
        if let (Some(provider), Some(data)) = (user.provider, identity_data) {
            statements.push(
                Statement::new(INSERT_IDENTITY).bind(user.id.clone()).bind(data.to_string()).bind(provider.name()),
            );
        }
        let traits = json!({"provider": user.provider.map_or("anonymous", Provider::name)});
        statements.push(
            Statement::new("select _madbase.auth_audit($1::uuid, 'user_signedup', $2, $3::json)")
                .bind(user.id.clone())
                .bind(String::new())
                .bind(traits.to_string()),
        );
        statements
    }
}

const INSERT_USER: &str = "insert into auth.users (instance_id, id, aud, role, email, phone, encrypted_password, \
     email_confirmed_at, phone_confirmed_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at, \
     confirmation_token, recovery_token, email_change_token_new, email_change, email_change_token_current, \
     phone_change, phone_change_token, reauthentication_token, is_anonymous) \
     values ('00000000-0000-0000-0000-000000000000', $1::uuid, 'authenticated', 'authenticated', $2, $3, $4, \
     case when $5::bool then now() end, case when $6::bool then now() end, $7::jsonb, $8::jsonb, now(), now(), \
     '', '', '', '', '', '', '', '', $9::bool)";

const INSERT_IDENTITY: &str = "insert into auth.identities (id, provider_id, user_id, identity_data, provider, \
     last_sign_in_at, created_at, updated_at) values (gen_random_uuid(), $1::text, $1::text::uuid, $2::jsonb, $3, now(), now(), now())";

/// GoTrue's identity data for an email or phone identity.
pub fn identity_data(user_id: &str, provider: Provider, address: Option<&str>) -> Value {
    let mut data = Map::new();
    data.insert("sub".into(), user_id.into());
    match provider {
        Provider::Email => data.insert("email".into(), address.unwrap_or_default().into()),
        Provider::Phone => data.insert("phone".into(), address.unwrap_or_default().into()),
    };
    data.insert("email_verified".into(), false.into());
    data.insert("phone_verified".into(), false.into());
    Value::Object(data)
}

/// Did a batch fail on a unique index (an address already registered)?
pub fn is_duplicate(error: &PgError) -> bool {
    matches!(error, PgError::Db(db) if db.code == "23505")
}

/// `data` checked for size.
pub fn metadata(data: Option<Map<String, Value>>) -> AuthResult<Map<String, Value>> {
    let data = data.unwrap_or_default();
    if serde_json::to_vec(&data).map_or(usize::MAX, |bytes| bytes.len()) > MAX_METADATA_BYTES {
        return Err(AuthError::validation(format!("User metadata exceeds {MAX_METADATA_BYTES} bytes")));
    }
    Ok(data)
}

/// GoTrue's PKCE parameter rules: both or neither; a known method; a well-formed challenge.
pub fn pkce_params(method: Option<&str>, challenge: Option<&str>) -> AuthResult<Option<(String, pkce::Method)>> {
    let method = method.filter(|m| !m.is_empty());
    match (method, challenge) {
        (None, None) => Ok(None),
        (Some(method), Some(challenge)) => {
            let parsed = pkce::Method::parse(method)
                .ok_or_else(|| AuthError::validation(format!("code challenge method {method} not supported")))?;
            pkce::check_challenge(challenge).map_err(AuthError::validation)?;
            Ok(Some((challenge.to_owned(), parsed)))
        }
        _ => Err(AuthError::validation("PKCE flow requires code_challenge_method and code_challenge")),
    }
}

/// GoTrue's email check: present, at most 255 bytes, `local@domain` in the shape checkmail
/// accepts; lower-cased.
pub fn validate_email(email: &str) -> AuthResult<String> {
    if email.is_empty() {
        return Err(AuthError::validation("An email address is required"));
    }
    if email.len() > 255 {
        return Err(AuthError::validation("An email address is too long"));
    }
    if !email_format_ok(email) {
        return Err(AuthError::validation("Unable to validate email address: invalid format"));
    }
    Ok(email.to_lowercase())
}

fn email_format_ok(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else { return false };
    let local_ok =
        !local.is_empty() && local.bytes().all(|b| b.is_ascii_alphanumeric() || b".!#$%&'*+/=?^_`{|}~-".contains(&b));
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    local_ok && !domain.is_empty() && domain.split('.').all(label_ok)
}

/// GoTrue's phone check: spaces, dashes, parentheses and a leading `+` removed, then E.164.
pub fn validate_phone(phone: &str) -> AuthResult<String> {
    let digits: String = phone.trim().trim_start_matches('+').chars().filter(|c| !" -()".contains(*c)).collect();
    let valid =
        (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    if !valid {
        return Err(AuthError::validation("Invalid phone number format (E.164 required)"));
    }
    Ok(digits)
}

impl AuthService {
    /// The password policy (`minimum_password_length`, `password_requirements`) and bcrypt's
    /// length limit.
    pub(crate) fn check_password(&self, candidate: &str) -> AuthResult<()> {
        if candidate.len() > crate::crypto::policy::MAX_PASSWORD_BYTES {
            return Err(AuthError::validation(crate::crypto::policy::TOO_LONG_MESSAGE));
        }
        let settings = self.settings();
        let required_sets = crate::settings::required_character_sets(&settings.password_requirements).unwrap_or(&[]);
        let policy =
            crate::crypto::policy::PasswordPolicy { min_length: settings.min_password_length(), required_sets };
        policy.check(candidate).map_err(|weak| AuthError::weak_password(weak.message, weak.reasons))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(validate_email("A@B.co").unwrap(), "a@b.co");
        assert!(validate_email("nope").is_err());
        assert!(validate_email("a@-b.c").is_err());
        assert_eq!(
            validate_email(&format!("{}@b.c", "a".repeat(260))).unwrap_err().message,
            "An email address is too long"
        );
    }

    /// The request decoders and validators never panic, whatever the bytes (a property test over
    /// random and mutated inputs; the JSON shapes are serde's, the validators ours).
    #[test]
    fn decoders_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let seeds: &[&[u8]] = &[
            br#"{"email":"a@b.co","password":"secret","data":{"n":1},"code_challenge":"x","code_challenge_method":"s256"}"#,
            br#"{"phone":"+1 234","channel":"whatsapp"}"#,
            br#"{"email":12,"data":[1,2]}"#,
        ];
        for round in 0..20_000 {
            let mut bytes = seeds[round % seeds.len()].to_vec();
            for _ in 0..rng.gen_range(0..6) {
                let at = rng.gen_range(0..bytes.len());
                match rng.gen_range(0..3) {
                    0 => bytes[at] = rng.gen(),
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, rng.gen()),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            if let Ok(params) = serde_json::from_slice::<SignupParams>(&bytes) {
                let _ = params.email.as_deref().map(validate_email);
                let _ = params.phone.as_deref().map(validate_phone);
                let _ = metadata(params.data);
                let _ = pkce_params(params.code_challenge_method.as_deref(), params.code_challenge.as_deref());
            }
            let text = String::from_utf8_lossy(&bytes);
            let _ = validate_email(&text);
            let _ = validate_phone(&text);
        }
    }

    #[test]
    fn phones() {
        assert_eq!(validate_phone("+1 (234) 567-890").unwrap(), "1234567890");
        assert!(validate_phone("+0123").is_err());
        assert!(validate_phone("12a4").is_err());
    }
}
