//! Auth's mailer: renders GoTrue's six emails from `[auth.email.template.*]` and delivers them
//! through `[auth.email.smtp]`, or, without an SMTP server, writes them to the log and keeps them.
//!
//! Owns: the parsed templates ([`Templates`]), the SMTP transport (a `lettre` tokio transport
//! that runs only on the egress runtime), the outbox of recent mail.
//!
//! One [`Mailer`] per process, shared by `Arc` across the shards (`Send + Sync`). A shard calls
//! [`Mailer::send`] and awaits the future: rendering happens in the call; the SMTP conversation
//! runs as one job on the egress runtime ([`madbase_egress::Egress`]) and its outcome comes back
//! over the egress runtime's oneshot, so the shard never polls a tokio future and never blocks.
//!
//! Delivery modes (decided once, in [`Mailer::new`]):
//! - **SMTP** (`[auth.email.smtp] enabled` and a `host`): port 465 is implicit TLS, any other
//!   port is plain with STARTTLS when the server offers it (`lettre`'s `Tls::Opportunistic`,
//!   rustls with ring and the bundled webpki roots); `user`/`pass` when set; From is
//!   `sender_name <admin_email>`; an HTML body. The info log line names recipient, kind,
//!   subject and server, never the token or link. Mail the server accepted is also kept in the
//!   outbox, marked [`Delivery::Smtp`]; a failed send is only an error (and a warning).
//! - **Log** (the embedded default): the message (recipient, subject, link, code) is written to
//!   the log at info level with structured fields and kept in the outbox, marked
//!   [`Delivery::Log`], so a developer or a test can finish the flow.
//!
//! Invariants:
//! - Every SMTP send ends within the mailer's timeout ([`Mailer::DEFAULT_TIMEOUT`], or
//!   [`Mailer::with_timeout`]): connect, TLS, AUTH and DATA together, and each SMTP command
//!   alone; past it the send is [`MailError::Timeout`].
//! - The egress runtime's bound applies: a full queue is [`MailError::Egress`]`(Busy)` at once.
//! - A rendered body is at most [`MAX_MESSAGE_BYTES`]; larger is [`MailError::TooLarge`].
//! - The outbox keeps the newest [`OUTBOX_CAPACITY`] messages, each body cut to
//!   [`OUTBOX_HTML_BYTES`]; it is a `Mutex<VecDeque>` taken once per message (a cold path).
//! - Templates are read and parsed once, in [`Mailer::new`]; sending reads no file.

mod template;
mod templates;

use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::message::{Mailbox, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use madbase_egress::{Egress, EgressError};
use serde::{Deserialize, Serialize};

use crate::settings;

pub use templates::{BodySource, Rendered, Templates, MAX_TEMPLATE_BYTES};

/// The most messages the outbox keeps (the oldest goes first).
pub const OUTBOX_CAPACITY: usize = 100;

/// The most bytes of a body the outbox keeps per message (longer ones are cut, marked `…`).
pub const OUTBOX_HTML_BYTES: usize = 64 * 1024;

/// The largest rendered body sent.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Which email: GoTrue's templates, with the email change split by recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    /// Sign-up confirmation (`confirmation` template, verification type `signup`).
    Confirmation,
    /// Invitation (`invite`, type `invite`).
    Invite,
    /// Magic link and email OTP (`magic_link`, type `magiclink`).
    MagicLink,
    /// Password recovery (`recovery`, type `recovery`).
    Recovery,
    /// Email change, the copy to the current address (`email_change`, type `email_change`).
    EmailChangeCurrent,
    /// Email change, the copy to the new address (`email_change`, type `email_change`).
    EmailChangeNew,
    /// Reauthentication nonce (`reauthentication`; a code, no link).
    Reauthentication,
}

impl MailKind {
    /// Every kind.
    pub const ALL: [MailKind; 7] = [
        MailKind::Confirmation,
        MailKind::Invite,
        MailKind::MagicLink,
        MailKind::Recovery,
        MailKind::EmailChangeCurrent,
        MailKind::EmailChangeNew,
        MailKind::Reauthentication,
    ];

    /// The kind's name in the outbox and the log (`email_change_current` as GoTrue's
    /// `generate_link` types say it).
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Confirmation => "confirmation",
            MailKind::Invite => "invite",
            MailKind::MagicLink => "magic_link",
            MailKind::Recovery => "recovery",
            MailKind::EmailChangeCurrent => "email_change_current",
            MailKind::EmailChangeNew => "email_change_new",
            MailKind::Reauthentication => "reauthentication",
        }
    }

    /// GoTrue's template name: the `[auth.email.template.<name>]` table.
    pub fn template_name(self) -> &'static str {
        match self {
            MailKind::Confirmation => "confirmation",
            MailKind::Invite => "invite",
            MailKind::MagicLink => "magic_link",
            MailKind::Recovery => "recovery",
            MailKind::EmailChangeCurrent | MailKind::EmailChangeNew => "email_change",
            MailKind::Reauthentication => "reauthentication",
        }
    }

    /// The `type` of the `/verify` link the email carries (`None`: no link).
    pub fn verification_type(self) -> Option<&'static str> {
        match self {
            MailKind::Confirmation => Some("signup"),
            MailKind::Invite => Some("invite"),
            MailKind::MagicLink => Some("magiclink"),
            MailKind::Recovery => Some("recovery"),
            MailKind::EmailChangeCurrent | MailKind::EmailChangeNew => Some("email_change"),
            MailKind::Reauthentication => None,
        }
    }

    /// GoTrue's message for the 500 when this email cannot be sent.
    pub fn send_error_message(self) -> &'static str {
        match self {
            MailKind::Confirmation => "Error sending confirmation email",
            MailKind::Invite => "Error sending invite email",
            MailKind::MagicLink => "Error sending magic link email",
            MailKind::Recovery => "Error sending recovery email",
            MailKind::EmailChangeCurrent | MailKind::EmailChangeNew => "Error sending email change email",
            MailKind::Reauthentication => "Error sending reauthentication email",
        }
    }
}

impl std::fmt::Display for MailKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The template variables of one message (GoTrue's names in the doc of each field). Empty
/// strings for what a kind does not have (reauthentication has no link).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MailVars {
    /// `{{ .SiteURL }}`: `[auth] site_url`.
    pub site_url: String,
    /// `{{ .ConfirmationURL }}`: the `/verify` link ([`confirmation_url`]).
    pub confirmation_url: String,
    /// `{{ .Token }}`: the one-time code.
    pub token: String,
    /// `{{ .TokenHash }}`: the hashed token (the link's `token`).
    pub token_hash: String,
    /// `{{ .RedirectTo }}`: where the link sends the user after verifying.
    pub redirect_to: String,
    /// `{{ .Email }}`: the user's (current) address.
    pub email: String,
    /// `{{ .NewEmail }}`: the address an email change goes to.
    pub new_email: String,
    /// `{{ .Data }}`: the user's metadata (`user_metadata`), a JSON object.
    pub data: serde_json::Value,
}

/// GoTrue's email link: `<external_url>/verify?token=<token_hash>&type=<type>&redirect_to=<url>`
/// (the Supabase CLI points GoTrue's URL paths at `<external_url>/verify`). The token and type are
/// query-escaped; `redirect_to` is escaped only when it contains `&`, `=` or `#` (GoTrue takes a
/// value without them as already encoded), and the parameter is there, empty, when there is none.
pub fn confirmation_url(external_url: &str, token_hash: &str, verification_type: &str, redirect_to: &str) -> String {
    let redirect =
        if redirect_to.contains(['&', '=', '#']) { query_escape(redirect_to) } else { redirect_to.to_owned() };
    format!(
        "{}/verify?token={}&type={}&redirect_to={}",
        external_url.trim_end_matches('/'),
        query_escape(token_hash),
        query_escape(verification_type),
        redirect
    )
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// How a kept message left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Written to the log only (no SMTP server configured).
    Log,
    /// Accepted by the SMTP server.
    Smtp,
}

/// One message in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentMail {
    /// The recipient.
    pub to: String,
    /// The sender (`sender_name <admin_email>`).
    pub from: String,
    /// The rendered subject.
    pub subject: String,
    /// Which email.
    pub kind: MailKind,
    /// When it was logged or the SMTP server accepted it, RFC 3339 UTC with microseconds
    /// (`2024-01-01T00:00:00.000000Z`).
    pub sent_at: String,
    /// The rendered HTML body (cut to [`OUTBOX_HTML_BYTES`]).
    pub html: String,
    /// The one-time code (`{{ .Token }}`).
    pub token: String,
    /// The hashed token (`{{ .TokenHash }}`).
    pub token_hash: String,
    /// The link (`{{ .ConfirmationURL }}`), empty for reauthentication.
    pub confirmation_url: String,
    /// `{{ .RedirectTo }}`.
    pub redirect_to: String,
    /// How it left.
    pub delivery: Delivery,
}

/// Why a message was not sent. Auth answers each with a 500 carrying
/// [`MailKind::send_error_message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// The recipient is not a usable address.
    #[error("invalid recipient address {0:?}")]
    InvalidRecipient(String),
    /// The rendered body is over [`MAX_MESSAGE_BYTES`].
    #[error("the {kind} email is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Which email.
        kind: MailKind,
        /// Its rendered size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The message could not be assembled (a header value lettre refuses).
    #[error("the {kind} email could not be built: {reason}")]
    Build {
        /// Which email.
        kind: MailKind,
        /// lettre's reason.
        reason: String,
    },
    /// The egress runtime did not run the send (busy, shut down, or the job panicked).
    #[error("the egress runtime did not send the mail: {0}")]
    Egress(#[from] EgressError),
    /// The SMTP conversation did not finish in time.
    #[error("the SMTP server {server} did not complete the send within {timeout:?}")]
    Timeout {
        /// `host:port`.
        server: String,
        /// The mailer's timeout.
        timeout: Duration,
    },
    /// The SMTP server could not be reached, or refused the message.
    #[error("sending through the SMTP server {server} failed: {reason}")]
    Smtp {
        /// `host:port`.
        server: String,
        /// lettre's reason (connection, TLS, authentication or the server's answer).
        reason: String,
    },
}

/// What the SMTP transport is built from.
struct SmtpParams {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

/// The SMTP side: the transport and the runtime it runs on.
struct Smtp {
    egress: Egress,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    params: SmtpParams,
    from: Mailbox,
    server: String,
}

// The mailer is shared by `Arc` across shard threads.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Mailer>();
};

/// Auth's mailer (see the module doc). `Send + Sync`; share it by `Arc`.
pub struct Mailer {
    templates: Templates,
    smtp: Option<Smtp>,
    from: String,
    timeout: Duration,
    outbox: Arc<Mutex<VecDeque<SentMail>>>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("delivery", &self.delivery())
            .field("server", &self.smtp.as_ref().map(|s| &s.server))
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Mailer {
    /// The default bound on one SMTP send.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// Builds the mailer from `[auth.email]`: loads and parses the templates (`content_path`
    /// relative to `base_dir`, the project's `supabase/` directory when there is one; see
    /// [`Templates`]) and, when `[auth.email.smtp]` is enabled with a host, the SMTP transport,
    /// which needs `egress`. Reads files: call it at start-up, not on a request.
    pub fn new(email: &settings::Email, base_dir: Option<&Path>, egress: Option<Egress>) -> Result<Mailer, String> {
        let templates = Templates::load(&email.template, base_dir)?;
        let smtp_cfg = &email.smtp;
        let name = smtp_cfg.sender_name.as_deref().map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned);
        let host = smtp_cfg.host.as_deref().map(str::trim).filter(|h| !h.is_empty());
        let (smtp, from) = match (smtp_cfg.enabled, host) {
            (true, Some(host)) => {
                let egress = egress.ok_or_else(|| {
                    "auth.email.smtp is enabled with a host, but no egress runtime was started for it".to_owned()
                })?;
                let address = smtp_cfg
                    .admin_email
                    .parse()
                    .map_err(|e| format!("auth.email.smtp.admin_email {:?}: {e}", smtp_cfg.admin_email))?;
                let from = Mailbox::new(name, address);
                let params = SmtpParams {
                    host: host.to_owned(),
                    port: smtp_cfg.port,
                    credentials: smtp_cfg
                        .user
                        .as_deref()
                        .filter(|u| !u.is_empty())
                        .map(|u| (u.to_owned(), smtp_cfg.pass.clone().unwrap_or_default())),
                };
                let transport = params.transport(Self::DEFAULT_TIMEOUT)?;
                let server = format!("{host}:{}", smtp_cfg.port);
                tracing::info!(server = %server, from = %from, "auth mail goes through SMTP");
                let from_s = from.to_string();
                (Some(Smtp { egress, transport, params, from, server }), from_s)
            }
            _ => {
                let from = match &name {
                    Some(n) => format!("{n} <{}>", smtp_cfg.admin_email),
                    None => smtp_cfg.admin_email.clone(),
                };
                tracing::info!("no SMTP server configured: auth mail is written to the log and kept in the outbox");
                (None, from)
            }
        };
        for kind in MailKind::ALL {
            if let BodySource::File(path) = templates.source(kind) {
                tracing::debug!(template = kind.template_name(), path = %path.display(), "email template loaded");
            }
        }
        Ok(Mailer {
            templates,
            smtp,
            from,
            timeout: Self::DEFAULT_TIMEOUT,
            outbox: Arc::new(Mutex::new(VecDeque::with_capacity(OUTBOX_CAPACITY))),
        })
    }

    /// Replaces the send timeout (the whole send and each SMTP command).
    pub fn with_timeout(mut self, timeout: Duration) -> Mailer {
        self.timeout = timeout;
        if let Some(smtp) = &mut self.smtp {
            // lettre's transport takes its per-command timeout when built: build it again.
            smtp.transport = smtp.params.transport(timeout).expect("these parameters built a transport before");
        }
        self
    }

    /// How mail leaves.
    pub fn delivery(&self) -> Delivery {
        if self.smtp.is_some() {
            Delivery::Smtp
        } else {
            Delivery::Log
        }
    }

    /// The templates.
    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// Renders `kind` for `to` without sending it.
    pub fn render(&self, to: &str, kind: MailKind, vars: &MailVars) -> Rendered {
        self.templates.render(kind, to, vars)
    }

    /// Sends `kind` to `to`. Renders now; the returned future (`Send`, `'static`: it may be
    /// awaited on a shard or spawned) does the delivery when polled and resolves when the SMTP
    /// server accepted the message, or at once in log mode.
    pub fn send(
        &self,
        to: &str,
        kind: MailKind,
        vars: &MailVars,
    ) -> impl Future<Output = Result<(), MailError>> + Send + 'static {
        let prepared = self.prepare(to, kind, vars);
        let outbox = self.outbox.clone();
        let timeout = self.timeout;
        let smtp = self.smtp.as_ref().map(|s| (s.egress.clone(), s.transport.clone(), s.server.clone()));
        async move {
            let (mail, message) = prepared?;
            let Some((egress, transport, server)) = smtp else {
                tracing::info!(
                    to = %mail.to,
                    kind = %mail.kind,
                    subject = %mail.subject,
                    confirmation_url = %mail.confirmation_url,
                    token = %mail.token,
                    token_hash = %mail.token_hash,
                    redirect_to = %mail.redirect_to,
                    "mail not sent (no SMTP server configured); kept in the outbox"
                );
                keep(&outbox, mail);
                return Ok(());
            };
            let message = message.expect("SMTP mode builds the message");
            let job = egress.run(move || async move {
                match tokio::time::timeout(timeout, transport.send(message)).await {
                    Ok(Ok(_response)) => Ok(()),
                    Ok(Err(e)) => Err(smtp_reason(&e)),
                    Err(_elapsed) => Err(None),
                }
            });
            let result = match job {
                Ok(job) => match job.await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(Some(reason))) => Err(MailError::Smtp { server: server.clone(), reason }),
                    Ok(Err(None)) => Err(MailError::Timeout { server: server.clone(), timeout }),
                    Err(e) => Err(MailError::Egress(e)),
                },
                Err(e) => Err(MailError::Egress(e)),
            };
            match result {
                Ok(()) => {
                    tracing::info!(to = %mail.to, kind = %mail.kind, subject = %mail.subject, server = %server, "mail sent");
                    keep(&outbox, mail);
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(to = %mail.to, kind = %mail.kind, server = %server, error = %e, "mail not sent");
                    Err(e)
                }
            }
        }
    }

    /// The kept messages, oldest first (at most [`OUTBOX_CAPACITY`]).
    pub fn outbox(&self) -> Vec<SentMail> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    /// Renders and checks one message; in SMTP mode also builds the lettre message.
    fn prepare(&self, to: &str, kind: MailKind, vars: &MailVars) -> Result<(SentMail, Option<Message>), MailError> {
        let to = to.trim();
        if to.is_empty() || to.contains(['\r', '\n']) {
            return Err(MailError::InvalidRecipient(to.to_owned()));
        }
        let rendered = self.templates.render(kind, to, vars);
        if rendered.html.len() > MAX_MESSAGE_BYTES {
            return Err(MailError::TooLarge { kind, size: rendered.html.len(), limit: MAX_MESSAGE_BYTES });
        }
        let message = match &self.smtp {
            None => None,
            Some(smtp) => {
                let to_box: Mailbox = to.parse().map_err(|_| MailError::InvalidRecipient(to.to_owned()))?;
                let m = Message::builder()
                    .from(smtp.from.clone())
                    .to(to_box)
                    .subject(rendered.subject.clone())
                    .message_id(None)
                    .singlepart(SinglePart::html(rendered.html.clone()))
                    .map_err(|e| MailError::Build { kind, reason: e.to_string() })?;
                Some(m)
            }
        };
        let mail = SentMail {
            to: to.to_owned(),
            from: self.from.clone(),
            subject: rendered.subject,
            kind,
            sent_at: String::new(),
            html: cut(rendered.html, OUTBOX_HTML_BYTES),
            token: vars.token.clone(),
            token_hash: vars.token_hash.clone(),
            confirmation_url: vars.confirmation_url.clone(),
            redirect_to: vars.redirect_to.clone(),
            delivery: self.delivery(),
        };
        Ok((mail, message))
    }
}

impl SmtpParams {
    /// The transport: port 465 implicit TLS, else plain with opportunistic STARTTLS.
    fn transport(&self, timeout: Duration) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let tls = TlsParameters::new(self.host.clone())
            .map_err(|e| format!("auth.email.smtp: TLS set-up for {}: {e}", self.host))?;
        let tls = if self.port == 465 { Tls::Wrapper(tls) } else { Tls::Opportunistic(tls) };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host)
            .port(self.port)
            .tls(tls)
            .timeout(Some(timeout));
        if let Some((user, pass)) = &self.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(builder.build())
    }
}

/// lettre's error as one line; `Some` always (the `None` of the job's result means timeout).
fn smtp_reason(e: &lettre::transport::smtp::Error) -> Option<String> {
    use std::error::Error as _;
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    Some(s)
}

/// Keeps `mail` (stamped now: when it was logged or the server accepted it).
fn keep(outbox: &Mutex<VecDeque<SentMail>>, mut mail: SentMail) {
    mail.sent_at = rfc3339_now();
    let mut list = outbox.lock().unwrap_or_else(|p| p.into_inner());
    while list.len() >= OUTBOX_CAPACITY {
        list.pop_front();
    }
    list.push_back(mail);
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Now as RFC 3339 UTC with microseconds.
fn rfc3339_now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmation_url_as_gotrue_builds_it() {
        assert_eq!(
            confirmation_url("http://127.0.0.1:54321/auth/v1", "abc123", "signup", "http://127.0.0.1:3000"),
            "http://127.0.0.1:54321/auth/v1/verify?token=abc123&type=signup&redirect_to=http://127.0.0.1:3000"
        );
        // A redirect with &, = or # is escaped; one without is taken as already encoded.
        assert_eq!(
            confirmation_url("https://x.test/auth/v1/", "h", "magiclink", "https://app.test/cb?a=1&b=two words"),
            "https://x.test/auth/v1/verify?token=h&type=magiclink&redirect_to=https%3A%2F%2Fapp.test%2Fcb%3Fa%3D1%26b%3Dtwo+words"
        );
        assert_eq!(
            confirmation_url("https://x.test/auth/v1", "h", "recovery", ""),
            "https://x.test/auth/v1/verify?token=h&type=recovery&redirect_to="
        );
    }

    #[test]
    fn kinds_name_gotrue_templates_types_and_errors() {
        assert_eq!(MailKind::MagicLink.template_name(), "magic_link");
        assert_eq!(MailKind::MagicLink.verification_type(), Some("magiclink"));
        assert_eq!(MailKind::EmailChangeNew.template_name(), "email_change");
        assert_eq!(MailKind::Reauthentication.verification_type(), None);
        assert_eq!(MailKind::Confirmation.send_error_message(), "Error sending confirmation email");
        assert_eq!(serde_json::to_value(MailKind::EmailChangeCurrent).unwrap(), "email_change_current");
    }

    #[test]
    fn timestamps_and_cuts() {
        let now = rfc3339_now();
        assert_eq!(now.len(), "2024-01-01T00:00:00.000000Z".len(), "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
        assert_eq!(cut("héllo".to_owned(), 2), "h…");
        assert_eq!(cut("abc".to_owned(), 3), "abc");
    }
}
