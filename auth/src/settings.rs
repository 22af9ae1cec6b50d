//! Auth's settings: the Supabase CLI's `[auth]` table and its sub-tables, with the CLI's names,
//! meanings and local-development defaults, so a project's `supabase/config.toml` `[auth]` part
//! pastes into MadBase's file unchanged (reference/auth.md §8).
//!
//! Owns every `[auth…]` key, including `jwt_secret` and `signing_keys_path` (the platform reads
//! them from here to build its verification keys). Durations are Go duration strings as the CLI
//! writes them (`"1s"`, `"5m0s"`, `"24h"`), parsed once by [`Auth::validate`].
//!
//! Invariants: a value that passed [`Auth::validate`] is usable as it is: durations parse, the
//! OTP length is 6–10, `jwt_expiry` is 1..=604800, the minimum password length is at least 6
//! (GoTrue raises lower values to 6), `password_requirements` is one of the CLI's names, every
//! enabled hook has a `pg-functions://` URI.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use madbase_core::section;

section! {
    /// `[auth]`: Supabase Auth (GoTrue).
    pub struct Auth {
        /// Serve `/auth/v1`.
        pub enabled: bool = true,
        /// The base URL of the app: the default redirect target and the first entry of the redirect allow list.
        pub site_url: String = "http://127.0.0.1:3000".to_owned(),
        /// The public URL Auth serves on (links in emails, the token issuer). Default: the API URL with `/auth/v1` appended.
        pub external_url: Option<String> = None,
        /// Further URLs (globs as GoTrue matches them) that redirects may go to.
        pub additional_redirect_urls: Vec<String> = vec!["https://127.0.0.1:3000".to_owned()],
        /// Access-token lifetime, seconds (at most 604800).
        pub jwt_expiry: u64 = 3600,
        /// The `iss` claim of access tokens. Default: `external_url`.
        pub jwt_issuer: Option<String> = None,
        /// HS256 secret, at least 32 characters. Default: the local-development demo secret (announced at start).
        #[alias("MADBASE_JWT_SECRET")]
        pub jwt_secret: Option<String> = None,
        /// The Supabase CLI's `signing_keys.json` (a JWK array with private halves): the first key signs access tokens, every key verifies.
        pub signing_keys_path: Option<PathBuf> = None,
        /// Rotate the refresh token on every use.
        pub enable_refresh_token_rotation: bool = true,
        /// Seconds a rotated refresh token may still be presented (and gets the current one).
        pub refresh_token_reuse_interval: u64 = 10,
        /// Allow new users to sign up.
        pub enable_signup: bool = true,
        /// Allow anonymous sign-ins.
        pub enable_anonymous_sign_ins: bool = false,
        /// Allow users to link identities themselves.
        pub enable_manual_linking: bool = false,
        /// Shortest password accepted (at least 6).
        pub minimum_password_length: usize = 6,
        /// Characters a password must contain: ``, `letters_digits`, `lower_upper_letters_digits` or `lower_upper_letters_digits_symbols`.
        pub password_requirements: String = String::new(),
        /// Rate limits.
        pub rate_limit: RateLimit = RateLimit::default(),
        /// Email sign-ups, confirmations, OTPs and the mail they send.
        pub email: Email = Email::default(),
        /// Phone sign-ups and OTPs.
        pub sms: Sms = Sms::default(),
        /// Multi-factor authentication.
        pub mfa: Mfa = Mfa::default(),
        /// Session lifetimes.
        pub sessions: Sessions = Sessions::default(),
        /// Postgres-function hooks.
        pub hook: Hooks = Hooks::default(),
    }
}

section! {
    /// `[auth.rate_limit]`: GoTrue's token buckets, per client IP unless noted.
    pub struct RateLimit {
        /// Emails sent per hour (all addresses together).
        pub email_sent: u64 = 2,
        /// SMS messages sent per hour.
        pub sms_sent: u64 = 30,
        /// Anonymous sign-ins per hour.
        pub anonymous_users: u64 = 30,
        /// Token requests (`/token`) per 5 minutes.
        pub token_refresh: u64 = 150,
        /// Sign-ups and sign-ins (OTP requests, `/signup`, `/recover`, `PUT /user`) per 5 minutes.
        pub sign_in_sign_ups: u64 = 30,
        /// OTP and magic-link verifications per 5 minutes.
        pub token_verifications: u64 = 30,
        /// Web3 sign-ins per 5 minutes.
        pub web3: u64 = 30,
    }
}

section! {
    /// `[auth.email]`.
    pub struct Email {
        /// Allow sign-ups with an email address.
        pub enable_signup: bool = true,
        /// Confirm an email change on both the old and the new address.
        pub double_confirm_changes: bool = true,
        /// Users confirm their email address before they can sign in.
        pub enable_confirmations: bool = false,
        /// A password change needs a recent sign-in or a reauthentication nonce.
        pub secure_password_change: bool = false,
        /// Shortest interval between two confirmation or recovery emails to one user (Go duration).
        pub max_frequency: String = "1s".to_owned(),
        /// Digits of email OTPs (6–10).
        pub otp_length: usize = 6,
        /// Seconds before an email OTP or link expires.
        pub otp_expiry: u64 = 3600,
        /// Outgoing mail server.
        pub smtp: Smtp = Smtp::default(),
        /// Email templates, by kind.
        pub template: Templates = Templates::default(),
    }
}

section! {
    /// `[auth.email.smtp]`: unset or disabled, every message is written to the log instead (and kept for the service role at `GET /auth/v1/admin/mail`).
    pub struct Smtp {
        /// Send mail through this server.
        pub enabled: bool = true,
        /// Host name of the SMTP server.
        pub host: Option<String> = None,
        /// Port of the SMTP server (465: implicit TLS; otherwise plain, upgraded with STARTTLS when offered).
        pub port: u16 = 587,
        /// User name.
        pub user: Option<String> = None,
        /// Password.
        pub pass: Option<String> = None,
        /// The sender address.
        pub admin_email: String = "admin@email.com".to_owned(),
        /// The sender display name.
        pub sender_name: Option<String> = None,
    }
}

section! {
    /// `[auth.email.template.*]`: per kind, a subject and a Go-template body (inline or a file).
    pub struct Templates {
        /// Invitation.
        pub invite: EmailTemplate = EmailTemplate::default(),
        /// Sign-up confirmation.
        pub confirmation: EmailTemplate = EmailTemplate::default(),
        /// Password recovery.
        pub recovery: EmailTemplate = EmailTemplate::default(),
        /// Magic link and email OTP.
        pub magic_link: EmailTemplate = EmailTemplate::default(),
        /// Email change.
        pub email_change: EmailTemplate = EmailTemplate::default(),
        /// Reauthentication nonce.
        pub reauthentication: EmailTemplate = EmailTemplate::default(),
    }
}

section! {
    /// One email template.
    pub struct EmailTemplate {
        /// Subject line (Go template). Default: Supabase's.
        pub subject: Option<String> = None,
        /// Body HTML (Go template). Default: Supabase's.
        pub content: Option<String> = None,
        /// File holding the body, relative to the `supabase/` directory (or the working directory).
        pub content_path: Option<String> = None,
    }
}

section! {
    /// `[auth.sms]`.
    pub struct Sms {
        /// Allow sign-ups with a phone number.
        pub enable_signup: bool = false,
        /// Users confirm their phone number before they can sign in.
        pub enable_confirmations: bool = false,
        /// The SMS body (Go template; `{{ .Code }}` is the OTP).
        pub template: String = "Your code is {{ .Code }}".to_owned(),
        /// Shortest interval between two SMS to one user (Go duration).
        pub max_frequency: String = "5s".to_owned(),
        /// Phone numbers with a fixed OTP that need no SMS provider (`number:code,…` in the environment).
        pub test_otp: BTreeMap<String, String> = BTreeMap::new(),
    }
}

section! {
    /// `[auth.mfa]`.
    pub struct Mfa {
        /// Factors one user may have enrolled.
        pub max_enrolled_factors: usize = 10,
        /// App authenticator (TOTP).
        pub totp: TotpFactor = TotpFactor::default(),
        /// Phone factors.
        pub phone: PhoneFactor = PhoneFactor::default(),
        /// WebAuthn factors.
        pub web_authn: FactorType = FactorType::default(),
    }
}

section! {
    /// `[auth.mfa.totp]` (on by default, as GoTrue's TOTP is).
    pub struct TotpFactor {
        /// Users may enroll TOTP factors.
        pub enroll_enabled: bool = true,
        /// Users may verify TOTP factors.
        pub verify_enabled: bool = true,
    }
}

section! {
    /// `[auth.mfa.web_authn]`.
    pub struct FactorType {
        /// Users may enroll factors of this type.
        pub enroll_enabled: bool = false,
        /// Users may verify factors of this type.
        pub verify_enabled: bool = false,
    }
}

section! {
    /// `[auth.mfa.phone]`.
    pub struct PhoneFactor {
        /// Users may enroll phone factors.
        pub enroll_enabled: bool = false,
        /// Users may verify phone factors.
        pub verify_enabled: bool = false,
        /// Digits of the code.
        pub otp_length: usize = 6,
        /// The SMS body (`{{ .Code }}` is the code).
        pub template: String = "Your code is {{ .Code }}".to_owned(),
        /// Shortest interval between two codes (Go duration).
        pub max_frequency: String = "5s".to_owned(),
    }
}

section! {
    /// `[auth.sessions]`.
    pub struct Sessions {
        /// Sign a session out this long after it began (Go duration; empty: never).
        pub timebox: String = String::new(),
        /// Sign a session out after this long without a refresh (Go duration; empty: never).
        pub inactivity_timeout: String = String::new(),
    }
}

section! {
    /// `[auth.hook.*]`.
    pub struct Hooks {
        /// Rewrites the claims of every access token issued.
        pub custom_access_token: Hook = Hook::default(),
        /// Accepts or rejects every user about to be created.
        pub before_user_created: Hook = Hook::default(),
        /// Decides on each MFA verification attempt.
        pub mfa_verification_attempt: Hook = Hook::default(),
        /// Decides on each password verification attempt.
        pub password_verification_attempt: Hook = Hook::default(),
        /// Sends SMS instead of the provider.
        pub send_sms: Hook = Hook::default(),
        /// Sends email instead of SMTP.
        pub send_email: Hook = Hook::default(),
    }
}

section! {
    /// One hook.
    pub struct Hook {
        /// Call the hook.
        pub enabled: bool = false,
        /// `pg-functions://<database>/<schema>/<function>`.
        pub uri: String = String::new(),
        /// Secrets of HTTP hooks (`v1,whsec_…`); unused by Postgres-function hooks.
        pub secrets: Option<String> = None,
    }
}

/// Parses a Go duration as `time.ParseDuration` does (`"1s"`, `"1m30s"`, `"24h"`, `"500ms"`);
/// empty is zero; negative durations are refused.
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Duration::ZERO);
    }
    let nanos = crate::go::go_parse_duration(text)?;
    u64::try_from(nanos).map(Duration::from_nanos).map_err(|_| format!("negative duration {text:?}"))
}

/// The password character classes of `password_requirements`.
pub fn required_character_sets(requirements: &str) -> Option<&'static [&'static str]> {
    const LETTERS_DIGITS: &[&str] = &["abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789"];
    const LOWER_UPPER_DIGITS: &[&str] = &["abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789"];
    const LOWER_UPPER_DIGITS_SYMBOLS: &[&str] = &[
        "abcdefghijklmnopqrstuvwxyz",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        "!@#$%^&*()_+-=[]{};'\\:\"|<>?,./`~",
    ];
    match requirements {
        "" => Some(&[]),
        "letters_digits" => Some(LETTERS_DIGITS),
        "lower_upper_letters_digits" => Some(LOWER_UPPER_DIGITS),
        "lower_upper_letters_digits_symbols" => Some(LOWER_UPPER_DIGITS_SYMBOLS),
        _ => None,
    }
}

/// The durations of the settings, parsed once.
#[derive(Debug, Clone, Copy)]
pub struct Durations {
    pub email_max_frequency: Duration,
    pub sms_max_frequency: Duration,
    /// Zero: no timebox.
    pub session_timebox: Duration,
    /// Zero: no inactivity timeout.
    pub session_inactivity_timeout: Duration,
}

impl Auth {
    /// Rejects settings Auth cannot run with, naming the key; returns the parsed durations.
    pub fn validate(&self) -> Result<Durations, String> {
        let duration = |key: &str, text: &str| go_duration(text).map_err(|e| format!("auth.{key}: {e}"));
        let durations = Durations {
            email_max_frequency: duration("email.max_frequency", &self.email.max_frequency)?,
            sms_max_frequency: duration("sms.max_frequency", &self.sms.max_frequency)?,
            session_timebox: duration("sessions.timebox", &self.sessions.timebox)?,
            session_inactivity_timeout: duration("sessions.inactivity_timeout", &self.sessions.inactivity_timeout)?,
        };
        // Phone factors are not served yet; their key is still checked, as Supabase's CLI does.
        duration("mfa.phone.max_frequency", &self.mfa.phone.max_frequency)?;
        if self.jwt_secret.as_ref().is_some_and(|secret| secret.len() < 32) {
            return Err("auth.jwt_secret must be at least 32 characters".to_owned());
        }
        if self.jwt_expiry == 0 || self.jwt_expiry > 604_800 {
            return Err("auth.jwt_expiry must be between 1 and 604800 seconds".to_owned());
        }
        if !(6..=10).contains(&self.email.otp_length) {
            return Err("auth.email.otp_length must be between 6 and 10".to_owned());
        }
        if !(6..=10).contains(&self.mfa.phone.otp_length) {
            return Err("auth.mfa.phone.otp_length must be between 6 and 10".to_owned());
        }
        if self.email.otp_expiry == 0 {
            return Err("auth.email.otp_expiry must be greater than 0".to_owned());
        }
        if self.minimum_password_length > 72 {
            return Err("auth.minimum_password_length must be at most 72 (bcrypt's limit)".to_owned());
        }
        if required_character_sets(&self.password_requirements).is_none() {
            return Err(format!(
                "auth.password_requirements must be one of \"\", letters_digits, lower_upper_letters_digits, \
                 lower_upper_letters_digits_symbols (got {:?})",
                self.password_requirements
            ));
        }
        for (name, hook) in self.hook.named() {
            if hook.enabled && crate::hooks::parse_uri(&hook.uri).is_none() {
                return Err(format!(
                    "auth.hook.{name}.uri must be pg-functions://<database>/<schema>/<function> (got {:?})",
                    hook.uri
                ));
            }
        }
        let rates = [
            ("email_sent", self.rate_limit.email_sent),
            ("sms_sent", self.rate_limit.sms_sent),
            ("anonymous_users", self.rate_limit.anonymous_users),
            ("token_refresh", self.rate_limit.token_refresh),
            ("sign_in_sign_ups", self.rate_limit.sign_in_sign_ups),
            ("token_verifications", self.rate_limit.token_verifications),
            ("web3", self.rate_limit.web3),
        ];
        if let Some((key, _)) = rates.iter().find(|(_, v)| *v == 0) {
            return Err(format!("auth.rate_limit.{key} must be greater than 0"));
        }
        Ok(durations)
    }

    /// The minimum password length in effect (GoTrue raises values below 6 to 6).
    pub fn min_password_length(&self) -> usize {
        self.minimum_password_length.max(6)
    }

    /// The HS256 secret in effect, and whether it is the public demo secret.
    pub fn effective_jwt_secret(&self) -> (&str, bool) {
        match &self.jwt_secret {
            Some(secret) => (secret, false),
            None => (madbase_core::platform::DEMO_JWT_SECRET, true),
        }
    }
}

impl Hooks {
    /// Every hook with its key name.
    pub fn named(&self) -> [(&'static str, &Hook); 6] {
        [
            ("custom_access_token", &self.custom_access_token),
            ("before_user_created", &self.before_user_created),
            ("mfa_verification_attempt", &self.mfa_verification_attempt),
            ("password_verification_attempt", &self.password_verification_attempt),
            ("send_sms", &self.send_sms),
            ("send_email", &self.send_email),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(go_duration("5m0s").unwrap(), Duration::from_secs(300));
        assert_eq!(go_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(go_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(go_duration("").unwrap(), Duration::ZERO);
        assert!(go_duration("5 minutes").is_err());
        assert!(go_duration("s").is_err());
        assert!(go_duration("-1s").is_err());
    }

    #[test]
    fn defaults_validate() {
        let auth = Auth::default();
        let durations = auth.validate().unwrap();
        assert_eq!(durations.email_max_frequency, Duration::from_secs(1));
        assert!(!auth.enable_anonymous_sign_ins && !auth.email.enable_confirmations);
        assert_eq!((auth.jwt_expiry, auth.refresh_token_reuse_interval), (3600, 10));
    }
}
