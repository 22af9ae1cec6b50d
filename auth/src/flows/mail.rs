//! The flows' mail: which message each token goes out in, its link
//! (`<external_url>/verify?token=<token_hash>&type=<type>&redirect_to=<url>`, as GoTrue's
//! `GetEmailActionLink`), and the hand-over to Auth's mailer.
//!
//! Invariants: called only after the batch that stored the token committed; every message is
//! counted against `email_sent` first when confirmations are on (GoTrue's limiter rule); a
//! failure is reported, never retried here (the user can `/resend`).

use serde_json::Value;

use crate::AuthService;

/// Which message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Confirmation,
    Invite,
    MagicLink,
    Recovery,
    EmailChange,
    Reauthentication,
}

impl Kind {
    /// GoTrue's 500 message when this message could not be sent.
    pub fn failure(self) -> &'static str {
        match self {
            Kind::Confirmation => "Error sending confirmation email",
            Kind::Invite => "Error sending invite email",
            Kind::MagicLink => "Error sending magic link email",
            Kind::Recovery => "Error sending recovery email",
            Kind::EmailChange => "Error sending email change email",
            Kind::Reauthentication => "Error sending reauthentication email",
        }
    }

    /// The `type` of the message's link (`None`: the message has only a code).
    pub fn link_type(self) -> Option<&'static str> {
        match self {
            Kind::Confirmation => Some("signup"),
            Kind::Invite => Some("invite"),
            Kind::MagicLink => Some("magiclink"),
            Kind::Recovery => Some("recovery"),
            Kind::EmailChange => Some("email_change"),
            Kind::Reauthentication => None,
        }
    }
}

/// One message to send.
pub struct Outgoing<'a> {
    pub to: &'a str,
    pub kind: Kind,
    /// The code in the message.
    pub otp: &'a str,
    /// The stored token the link carries.
    pub token_hash: &'a str,
    pub redirect_to: &'a str,
    /// The user's current address.
    pub email: &'a str,
    /// The address being changed to (email change).
    pub new_email: &'a str,
    /// The user's metadata (`{{ .Data }}`).
    pub data: &'a Value,
}

/// GoTrue's action link for a token.
pub fn action_link(external_url: &str, token_hash: &str, link_type: &str, redirect_to: &str) -> String {
    let token: String = url::form_urlencoded::byte_serialize(token_hash.as_bytes()).collect();
    format!(
        "{}/verify?token={token}&type={link_type}&redirect_to={}",
        external_url.trim_end_matches('/'),
        super::redirect::encode_for_link(redirect_to)
    )
}

/// Sends one message through Auth's mailer.
pub async fn send(auth: &AuthService, out: &Outgoing<'_>) -> Result<(), String> {
    let link = out
        .kind
        .link_type()
        .map(|link_type| action_link(&auth.shared.external_url, out.token_hash, link_type, out.redirect_to))
        .unwrap_or_default();
    let kind = match out.kind {
        Kind::Confirmation => crate::mail::MailKind::Confirmation,
        Kind::Invite => crate::mail::MailKind::Invite,
        Kind::MagicLink => crate::mail::MailKind::MagicLink,
        Kind::Recovery => crate::mail::MailKind::Recovery,
        Kind::EmailChange if out.to == out.new_email => crate::mail::MailKind::EmailChangeNew,
        Kind::EmailChange => crate::mail::MailKind::EmailChangeCurrent,
        Kind::Reauthentication => crate::mail::MailKind::Reauthentication,
    };
    let vars = crate::mail::MailVars {
        site_url: auth.settings().site_url.clone(),
        confirmation_url: link,
        token: out.otp.to_owned(),
        token_hash: out.token_hash.to_owned(),
        redirect_to: out.redirect_to.to_owned(),
        email: out.email.to_owned(),
        new_email: out.new_email.to_owned(),
        data: out.data.clone(),
    };
    auth.shared.mailer.send(out.to, kind, &vars).await.map_err(|error| error.to_string())
}
