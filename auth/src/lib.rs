//! `madbase-auth`, `/auth/v1`: the GoTrue-compatible Auth API (reference/auth.md), one
//! [`AuthService`] per shard.
//!
//! A request flows down: this module routes it by method and path to one handler module —
//! [`meta`] (`/health`, `/settings`, `/.well-known/jwks.json`), [`signup`], [`grant`]
//! (`/token?grant_type=…`), [`user`] (`GET`/`PUT /user`), [`logout`] — which reads the request
//! through [`call`], does its work as one statement batch on Auth's own PostgreSQL lane (as
//! `supabase_auth_admin`, like GoTrue's connection), and answers with a session ([`session`]),
//! a user (rendered by PostgreSQL: `_madbase.auth_user_json`) or an [`AuthError`] in the shape the
//! request asked for ([`error`]).
//!
//! Invariants:
//! - one request is one batch (one round trip, one transaction) wherever the flow allows; the
//!   password grant takes two (the hash must be read before it is verified, off the shard);
//! - password hashing and verification run on the blocking pool, never on a shard;
//! - a failed request leaves nothing half-made: every multi-row change is one batch;
//! - nothing from a request reaches SQL text: values are bound parameters, and the only
//!   identifiers in SQL (hook functions) come from validated settings;
//! - every body is bounded ([`call::MAX_BODY_BYTES`]) and every string taken from one is
//!   length-checked before it is stored.

mod admin;
pub mod call;
pub mod crypto;
mod error;
mod flows;
mod go;
mod grant;
pub mod hooks;
mod logout;
pub mod mail;
mod meta;
mod mfa;
pub mod ratelimit;
mod session;
pub mod settings;
mod signup;
mod user;

use std::rc::Rc;
use std::sync::Arc;

use madbase_core::jwt::{Claims, JwtError, JwtKeys};
use madbase_core::{Cors, LaneSpec, Service, ServiceInfo, ShardCtx};
use madbase_http::{Body, Request, Response};
use madbase_pg::{Batch, PgError, Pool, StatementResult};

use crate::call::Call;
pub use crate::error::{ApiVersion, AuthError, AuthResult};
/// Text messages: the pluggable SMS sender of the phone flows.
pub use crate::flows::sms;
use crate::ratelimit::RateLimits;
use crate::settings::{Auth, Durations};

/// The role Auth's statements run as (GoTrue connects as it).
pub const AUTH_ROLE: &str = "supabase_auth_admin";

/// The headers browsers may read from Auth's answers.
const AUTH_EXPOSE_HEADERS: &str = "X-Total-Count, Link, X-Supabase-Api-Version, X-Sb-Error-Code";

/// What every shard's Auth shares: settings and process-wide state, immutable or internally
/// synchronised.
pub struct AuthShared {
    pub settings: Auth,
    pub durations: Durations,
    pub keys: Arc<JwtKeys>,
    /// `iss` of access tokens.
    pub issuer: String,
    /// Auth's public URL (`…/auth/v1`), the base of links in mail.
    pub external_url: String,
    pub limits: RateLimits,
    /// The quoted function of the custom access-token hook, when enabled.
    pub access_token_hook: Option<String>,
    /// The quoted function of the before-user-created hook, when enabled.
    pub before_user_created_hook: Option<String>,
    /// Renders and sends (or, without SMTP, logs and keeps) Auth's mail.
    pub mailer: mail::Mailer,
    /// Sends text messages (by default [`sms::LogSms`]: logs them into `sms_outbox`).
    pub sms_sender: Arc<dyn sms::SmsSender>,
    /// What the default SMS sender recorded (`GET /auth/v1/admin/mail`).
    pub sms_outbox: Arc<sms::SmsOutbox>,
}

impl AuthShared {
    /// Whether these settings send mail over SMTP (and so need the egress runtime).
    pub fn needs_egress(settings: &Auth) -> bool {
        settings.email.smtp.enabled && settings.email.smtp.host.is_some()
    }

    /// Sends text messages through `sender` (an SMS provider) instead of the default log.
    pub fn with_sms_sender(mut self, sender: Arc<dyn sms::SmsSender>) -> AuthShared {
        self.sms_sender = sender;
        self
    }

    /// Builds Auth's shared state; `api_url` is the public URL of the API (`http://127.0.0.1:54321`),
    /// `project` the Supabase project directory (`supabase/`: template paths), `egress` the runtime
    /// SMTP runs on ([`Self::needs_egress`]).
    pub fn new(
        settings: Auth,
        keys: Arc<JwtKeys>,
        api_url: &str,
        project: Option<&std::path::Path>,
        egress: Option<madbase_egress::Egress>,
    ) -> Result<AuthShared, String> {
        let durations = settings.validate()?;
        let mailer = mail::Mailer::new(&settings.email, project, egress)?;
        let sms_outbox = Arc::new(sms::SmsOutbox::default());
        let external_url =
            settings.external_url.clone().unwrap_or_else(|| format!("{}/auth/v1", api_url.trim_end_matches('/')));
        let issuer = settings.jwt_issuer.clone().unwrap_or_else(|| external_url.clone());
        Ok(AuthShared {
            durations,
            keys,
            issuer,
            external_url,
            limits: RateLimits::new(&settings.rate_limit),
            access_token_hook: hooks::function_sql(&settings.hook.custom_access_token),
            before_user_created_hook: hooks::function_sql(&settings.hook.before_user_created),
            mailer,
            sms_sender: Arc::new(sms::LogSms { outbox: sms_outbox.clone() }),
            sms_outbox,
            settings,
        })
    }
}

/// Auth on one shard.
pub struct AuthService {
    pub(crate) ctx: Rc<ShardCtx>,
    pub(crate) shared: Arc<AuthShared>,
}

impl AuthService {
    /// The PostgreSQL lane of Auth: its own connections on every shard, so token refreshes never
    /// queue behind Data API reads.
    pub const LANE: &'static str = "auth";

    /// The lane the binary creates for this service, `connections` per shard.
    pub fn lane(connections: usize) -> LaneSpec {
        LaneSpec { name: Self::LANE, connections }
    }

    pub fn new(ctx: Rc<ShardCtx>, shared: Arc<AuthShared>) -> AuthService {
        AuthService { ctx, shared }
    }

    pub(crate) fn settings(&self) -> &Auth {
        &self.shared.settings
    }

    fn pool(&self) -> &Pool {
        self.ctx.lanes.get(Self::LANE)
    }

    /// Runs `batch` as Auth's role.
    pub(crate) async fn run(&self, batch: Batch) -> AuthResult<Vec<StatementResult>> {
        self.run_raw(batch).await.map_err(db_error)
    }

    /// Runs `batch` as Auth's role, for a caller that tells some database errors apart (a
    /// unique violation is an address already registered).
    pub(crate) async fn run_raw(&self, batch: Batch) -> Result<Vec<StatementResult>, PgError> {
        let batch = Batch { settings: auth_settings(batch.settings), ..batch };
        self.pool().execute(batch).await
    }

    /// Verifies a bearer token with the platform's keys (GoTrue's `bad_jwt` on failure).
    pub(crate) fn verify(&self, token: &str) -> AuthResult<Rc<Claims>> {
        self.ctx.tokens.borrow_mut().verify(token).map_err(bad_jwt)
    }

    /// Runs `work` on the blocking pool (password hashing).
    pub(crate) async fn blocking<R: Send + 'static>(&self, work: impl FnOnce() -> R + Send + 'static) -> AuthResult<R> {
        let job =
            self.ctx.blocking.spawn(work).map_err(|_| AuthError::new(503, "", "Server busy, please retry shortly"))?;
        job.await.map_err(AuthError::internal)
    }

    async fn route(&self, call: &Call<'_>, body: Body) -> AuthResult<Response> {
        let method = call.req.method();
        match (method, call.path) {
            ("GET" | "HEAD", "/health") => Ok(meta::health()),
            ("GET" | "HEAD", "/settings") => Ok(meta::settings(self)),
            ("GET" | "HEAD", "/.well-known/jwks.json") => Ok(meta::jwks(self)),
            ("POST", "/signup") => signup::signup(self, call, body).await,
            ("POST", "/token") => grant::token(self, call, body).await,
            ("GET" | "HEAD", "/user") => user::get(self, call).await,
            ("PUT", "/user") => flows::update_user(self, call, body).await,
            ("POST", "/logout") => logout::logout(self, call).await,
            // Features MadBase does not serve yet answer as GoTrue does with them disabled.
            ("POST", "/sso") | (_, "/sso/saml/metadata" | "/sso/saml/acs") => {
                Err(AuthError::new(404, "saml_provider_disabled", "SAML 2.0 is disabled"))
            }
            (_, path) if path == "/user/identities/authorize" || path.starts_with("/user/identities/") => {
                Err(AuthError::new(404, "manual_linking_disabled", "Manual linking is disabled"))
            }
            (_, path) if path == "/invite" || path.starts_with("/admin/") => admin::route(self, call, body).await,
            (_, path) if path.starts_with("/factors") => mfa::route(self, call, body).await,
            _ => flows::route(self, call, body).await,
        }
    }
}

impl Service for AuthService {
    type Message = ();

    const INFO: ServiceInfo =
        ServiceInfo { prefix: "/auth/v1", label: "auth", cors: Cors::Expose(AUTH_EXPOSE_HEADERS) };

    async fn handle(&self, req: &Request, body: Body) -> Response {
        let call = Call::new(req, Self::INFO.prefix);
        match self.route(&call, body).await {
            Ok(response) => response,
            Err(error) => error.into_response(call.version, req.request_id()),
        }
    }

    fn on_message(&self, (): ()) {}
}

/// The request settings of every Auth batch: its role and `search_path`, before the caller's.
fn auth_settings(caller: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut settings = Vec::with_capacity(caller.len() + 2);
    settings.push(("role".to_owned(), AUTH_ROLE.to_owned()));
    settings.push(("search_path".to_owned(), "auth".to_owned()));
    settings.extend(caller);
    settings
}

/// The answer for a batch that failed: a hook's refusal as the hook asked, else GoTrue's 500.
pub(crate) fn db_error(error: PgError) -> AuthError {
    if let PgError::Db(db) = &error {
        match db.code.as_str() {
            "MBAU1" => return user::user_not_found(),
            "MBAU2" => return user::session_not_found(),
            _ => {}
        }
    }
    match hooks::rejected_by_guard(&error) {
        Some(rejected) => rejected,
        None => AuthError::from(error),
    }
}

/// GoTrue's answer to a token it cannot verify.
fn bad_jwt(error: JwtError) -> AuthError {
    let detail = match error {
        JwtError::Expired => "token has invalid claims: token is expired".to_owned(),
        JwtError::NotYetValid => "token has invalid claims: token is not valid yet".to_owned(),
        JwtError::IssuedInFuture => "token has invalid claims: token used before issued".to_owned(),
        JwtError::Signature => "token signature is invalid: signature is invalid".to_owned(),
        other => format!("token is malformed: {other}"),
    };
    AuthError::new(403, "bad_jwt", format!("invalid JWT: unable to parse or verify signature, {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Provider;

    impl sms::SmsSender for Provider {
        fn send<'a>(
            &'a self,
            _to: &'a str,
            _body: &'a str,
            _channel: &'a str,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = sms::SendResult> + 'a>> {
            Box::pin(async { Ok("provider-id".to_owned()) })
        }
    }

    #[test]
    fn an_sms_provider_replaces_the_log() {
        let keys = Arc::new(JwtKeys::new(madbase_core::platform::DEMO_JWT_SECRET, None, None).unwrap());
        let shared = AuthShared::new(Auth::default(), keys, "http://127.0.0.1:54321", None, None).unwrap();
        assert_eq!(shared.external_url, "http://127.0.0.1:54321/auth/v1");
        let provider: Arc<dyn sms::SmsSender> = Arc::new(Provider);
        let shared = shared.with_sms_sender(provider.clone());
        assert!(Arc::ptr_eq(&shared.sms_sender, &provider));
    }
}
