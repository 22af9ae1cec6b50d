//! The six email templates, loaded once from `[auth.email.template.*]`.
//!
//! Owns: each kind's parsed subject and body, and where they came from.
//!
//! Per template: the subject is `subject` when set and not empty, else the default subject of the
//! GoTrue release the Supabase CLI runs locally (v2.189.0: "Confirm Your Email", "You have been
//! invited", …); the body is `content` when set, else the file at `content_path`, else MadBase's
//! default body (our wording; like GoTrue's it carries the link and the code).
//!
//! `content_path` resolution: an absolute path as it is; a relative one, with the project's
//! `supabase/` directory as `base_dir`, first against the project root (its parent: the Supabase
//! CLI resolves email template paths against the repository, as its
//! `content_path = "./supabase/templates/invite.html"` examples show), then against `base_dir`
//! itself; without a `base_dir`, against the working directory.
//!
//! Subjects are rendered like bodies, in the HTML text context (GoTrue parses them with
//! html/template too): a substituted `+`, `&` or `<` reads `&#43;`, `&amp;`, `&lt;` there, as
//! GoTrue sends it. Line breaks in a rendered subject become spaces.
//!
//! Invariants: every template parsed at load (a syntax error is a start-up error naming the key);
//! a template file is at most [`MAX_TEMPLATE_BYTES`]; loading is the only file access.

use std::path::{Path, PathBuf};

use crate::settings;

use super::template::{Data, Template};
use super::{MailKind, MailVars};

/// The largest template body file read.
pub const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;

/// GoTrue's template names, in `[auth.email.template.<name>]` order of the six kinds we send.
const NAMES: [&str; 6] = ["invite", "confirmation", "recovery", "magic_link", "email_change", "reauthentication"];

/// Default subjects: GoTrue v2.189.0's (the release the Supabase CLI runs locally).
fn default_subject(name: &str) -> &'static str {
    match name {
        "invite" => "You have been invited",
        "confirmation" => "Confirm Your Email",
        "recovery" => "Reset Your Password",
        "magic_link" => "Your Magic Link",
        "email_change" => "Confirm Email Change",
        "reauthentication" => "Confirm reauthentication",
        _ => unreachable!("unknown template {name}"),
    }
}

/// Default bodies: MadBase's wording, with the link and the one-time code.
fn default_body(name: &str) -> &'static str {
    match name {
        "invite" => {
            "<h2>You're invited</h2>\n\n\
             <p>You were invited to create an account on {{ .SiteURL }}. Follow the link below to accept:</p>\n\
             <p><a href=\"{{ .ConfirmationURL }}\">Accept the invitation</a></p>\n\
             <p>Or enter the code {{ .Token }}</p>\n"
        }
        "confirmation" => {
            "<h2>Confirm your sign-up</h2>\n\n\
             <p>Follow the link below to confirm {{ .Email }}:</p>\n\
             <p><a href=\"{{ .ConfirmationURL }}\">Confirm your email</a></p>\n\
             <p>Or enter the code {{ .Token }}</p>\n"
        }
        "recovery" => {
            "<h2>Reset your password</h2>\n\n\
             <p>Follow the link below to choose a new password:</p>\n\
             <p><a href=\"{{ .ConfirmationURL }}\">Reset password</a></p>\n\
             <p>Or enter the code {{ .Token }}</p>\n\
             <p>If you did not ask for this, ignore this email.</p>\n"
        }
        "magic_link" => {
            "<h2>Sign in</h2>\n\n\
             <p>Follow the link below to sign in:</p>\n\
             <p><a href=\"{{ .ConfirmationURL }}\">Sign in</a></p>\n\
             <p>Or enter the code {{ .Token }}</p>\n"
        }
        "email_change" => {
            "<h2>Confirm the new email address</h2>\n\n\
             <p>Follow the link below to change your email address from {{ .Email }} to {{ .NewEmail }}:</p>\n\
             <p><a href=\"{{ .ConfirmationURL }}\">Confirm the change</a></p>\n\
             <p>Or enter the code {{ .Token }}</p>\n"
        }
        "reauthentication" => {
            "<h2>Confirm it is you</h2>\n\n\
             <p>Enter the code {{ .Token }}</p>\n"
        }
        _ => unreachable!("unknown template {name}"),
    }
}

/// Where a template's body came from (for the start-up log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodySource {
    /// MadBase's default.
    Default,
    /// `content`, inline.
    Inline,
    /// `content_path`, read from this file.
    File(PathBuf),
}

#[derive(Debug, Clone)]
struct Loaded {
    subject: Template,
    body: Template,
    source: BodySource,
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject line (one line: line breaks become spaces).
    pub subject: String,
    /// The HTML body.
    pub html: String,
}

/// The six templates, parsed.
#[derive(Debug, Clone)]
pub struct Templates {
    loaded: [Loaded; 6],
}

impl Templates {
    /// Loads every template (see the module doc for the order of sources and path resolution).
    /// Errors name the settings key.
    pub fn load(cfg: &settings::Templates, base_dir: Option<&Path>) -> Result<Templates, String> {
        let by_name =
            [&cfg.invite, &cfg.confirmation, &cfg.recovery, &cfg.magic_link, &cfg.email_change, &cfg.reauthentication];
        let mut loaded = Vec::with_capacity(6);
        for (name, t) in NAMES.iter().zip(by_name) {
            let key = format!("auth.email.template.{name}");
            let subject_src = t.subject.as_deref().filter(|s| !s.is_empty()).unwrap_or(default_subject(name));
            let subject = Template::parse(&format!("{key}.subject"), subject_src)?;
            let (body_src, source) = match (&t.content, &t.content_path) {
                (Some(c), path) => {
                    if path.is_some() {
                        tracing::warn!(template = %key, "both content and content_path are set; content is used");
                    }
                    (c.clone(), BodySource::Inline)
                }
                (None, Some(p)) if !p.is_empty() => {
                    let file = resolve(p, base_dir).map_err(|e| format!("{key}.content_path: {e}"))?;
                    let text =
                        read_bounded(&file).map_err(|e| format!("{key}.content_path: {}: {e}", file.display()))?;
                    (text, BodySource::File(file))
                }
                _ => (default_body(name).to_owned(), BodySource::Default),
            };
            let body = Template::parse(&format!("{key} body"), &body_src)?;
            loaded.push(Loaded { subject, body, source });
        }
        let loaded: [Loaded; 6] = loaded.try_into().expect("six templates");
        Ok(Templates { loaded })
    }

    fn get(&self, kind: MailKind) -> &Loaded {
        let name = kind.template_name();
        let i = NAMES.iter().position(|n| *n == name).expect("every kind has a template");
        &self.loaded[i]
    }

    /// Where `kind`'s body came from.
    pub fn source(&self, kind: MailKind) -> &BodySource {
        &self.get(kind).source
    }

    /// Renders `kind` for the recipient `to` (`{{ .SendingTo }}`).
    pub fn render(&self, kind: MailKind, to: &str, vars: &MailVars) -> Rendered {
        let t = self.get(kind);
        let data = Data { vars, sending_to: to };
        let subject = t.subject.render(&data);
        let subject = if subject.contains(['\r', '\n']) { subject.replace(['\r', '\n'], " ") } else { subject };
        Rendered { subject, html: t.body.render(&data) }
    }
}

fn resolve(p: &str, base_dir: Option<&Path>) -> Result<PathBuf, String> {
    let path = Path::new(p);
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    let candidates: Vec<PathBuf> = match base_dir {
        Some(base) => {
            let mut c = Vec::new();
            if let Some(root) = base.parent() {
                c.push(root.join(path));
            }
            c.push(base.join(path));
            c
        }
        None => vec![std::env::current_dir().map_err(|e| format!("no working directory: {e}"))?.join(path)],
    };
    candidates.iter().find(|c| c.is_file()).cloned().ok_or_else(|| {
        let tried: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
        format!("{p} not found (tried {})", tried.join(", "))
    })
}

fn read_bounded(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_TEMPLATE_BYTES {
        return Err(format!("{} bytes, over the limit of {MAX_TEMPLATE_BYTES}", meta.len()));
    }
    std::fs::read_to_string(path).map_err(|e| e.to_string())
}
