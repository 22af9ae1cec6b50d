//! What Auth says about itself: `GET /health`, `GET /settings` (GoTrue's provider switches as this
//! configuration sets them) and `GET /.well-known/jwks.json` (the public keys access tokens are
//! signed with). None of them touches PostgreSQL.

use madbase_http::Response;
use serde_json::json;

use crate::AuthService;

/// The GoTrue version MadBase answers as (what `/health` reports).
pub const GOTRUE_VERSION: &str = "v2.180.0";

/// External providers GoTrue lists in `/settings`; MadBase serves none of them yet.
const OAUTH_PROVIDERS: &[&str] = &[
    "apple",
    "azure",
    "bitbucket",
    "discord",
    "facebook",
    "snapchat",
    "figma",
    "fly",
    "github",
    "gitlab",
    "google",
    "keycloak",
    "kakao",
    "linkedin",
    "linkedin_oidc",
    "notion",
    "spotify",
    "slack",
    "slack_oidc",
    "workos",
    "twitch",
    "twitter",
    "zoom",
];

pub fn health() -> Response {
    let body = json!({
        "version": GOTRUE_VERSION,
        "name": "GoTrue",
        "description": "GoTrue is a user registration and authentication API",
    });
    Response::json(200, body.to_string())
}

pub fn settings(auth: &AuthService) -> Response {
    let s = auth.settings();
    let mut external = serde_json::Map::new();
    external.insert("anonymous_users".into(), s.enable_anonymous_sign_ins.into());
    for provider in OAUTH_PROVIDERS {
        external.insert((*provider).into(), false.into());
    }
    external.insert("email".into(), s.email.enable_signup.into());
    external.insert("phone".into(), s.sms.enable_signup.into());
    let body = json!({
        "external": external,
        "disable_signup": !s.enable_signup,
        "mailer_autoconfirm": !s.email.enable_confirmations,
        "phone_autoconfirm": !s.sms.enable_confirmations,
        "sms_provider": "",
        "saml_enabled": false,
        "saml_private_key_next_configured": false,
        "passkeys_enabled": false,
    });
    Response::json(200, body.to_string())
}

pub fn jwks(auth: &AuthService) -> Response {
    Response::json(200, auth.shared.keys.public_jwks().to_string()).header("cache-control", "public, max-age=600")
}
