//! Auth's mailer end to end: every email kind rendered and sent through real SMTP (the test sink,
//! scripts/smtp-sink.sh) from a monoio runtime over the egress runtime, and read back; the
//! no-SMTP mode logs and keeps; a custom template from `content_path`; an unreachable or silent
//! SMTP server is an error within the timeout, not a hang; a full egress queue is refused.
//!
//! The sink needs python3 (the script installs aiosmtpd into target/smtp-sink-venv); without
//! python3 the SMTP tests say so and pass without running.

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use madbase_auth::mail::{confirmation_url, Delivery, MailError, MailKind, MailVars, Mailer, OUTBOX_CAPACITY};
use madbase_auth::settings::Email;
use madbase_egress::{Egress, EgressError};
use serde_json::{json, Value};

/// GoTrue v2.189.0's default subjects (the release `supabase start` runs).
fn default_subject(kind: MailKind) -> &'static str {
    match kind {
        MailKind::Confirmation => "Confirm Your Email",
        MailKind::Invite => "You have been invited",
        MailKind::MagicLink => "Your Magic Link",
        MailKind::Recovery => "Reset Your Password",
        MailKind::EmailChangeCurrent | MailKind::EmailChangeNew => "Confirm Email Change",
        MailKind::Reauthentication => "Confirm reauthentication",
    }
}

const EXTERNAL_URL: &str = "http://127.0.0.1:54321/auth/v1";

fn vars_for(kind: MailKind, i: usize) -> MailVars {
    let token = format!("{:06}", 100_000 + i * 1111);
    let token_hash = format!("{:056x}", 0xabcdef_u64 + i as u64);
    let redirect_to = "http://127.0.0.1:3000/welcome".to_owned();
    MailVars {
        site_url: "http://127.0.0.1:3000".to_owned(),
        confirmation_url: kind
            .verification_type()
            .map(|t| confirmation_url(EXTERNAL_URL, &token_hash, t, &redirect_to))
            .unwrap_or_default(),
        token,
        token_hash,
        redirect_to,
        email: "old+user@example.com".to_owned(),
        new_email: "new@example.com".to_owned(),
        data: json!({"name": "Ada", "locale": "es"}),
    }
}

/// Runs `f` on a fresh monoio runtime on its own thread (as a shard would), with a watchdog.
fn on_monoio<T: Send + 'static, F: Future<Output = T> + 'static>(f: impl FnOnce() -> F + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut rt =
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("monoio runtime");
        let out = rt.block_on(f());
        let _ = tx.send(out);
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(v) => {
            t.join().expect("monoio thread");
            v
        }
        // The sender is gone: the thread panicked; surface its panic.
        Err(mpsc::RecvTimeoutError::Disconnected) => match t.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the monoio side did not finish within 60 s"),
    }
}

// ---------------------------------------------------------------------------------------------
// The sink.

struct Sink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sink {
    /// Starts scripts/smtp-sink.sh on a free port; `None` (with a message) without python3.
    fn start() -> Option<Sink> {
        if Command::new("python3").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            eprintln!("SKIPPED: python3 is not installed, so the test SMTP server (scripts/smtp-sink.sh) cannot run");
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/smtp-sink.sh");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new("bash")
            .arg(&script)
            .args(["--host", "127.0.0.1", "--port", "0", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start scripts/smtp-sink.sh");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        // The first run installs aiosmtpd from PyPI.
        let line = match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("the SMTP sink did not start within 300 s");
            }
        };
        let port = line.trim().strip_prefix("listening 127.0.0.1 ").and_then(|p| p.parse().ok()).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("the SMTP sink did not announce its port: {line:?}")
        });
        Some(Sink { child, port, dir })
    }

    /// Waits until `n` messages arrived; returns them in arrival order.
    fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
                .expect("sink dir")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            if files.len() >= n {
                files.sort();
                return files
                    .iter()
                    .map(|p| serde_json::from_slice(&std::fs::read(p).expect("read")).expect("json"))
                    .collect();
            }
            assert!(Instant::now() < deadline, "{} of {n} messages arrived", files.len());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn email(&self) -> Email {
        let mut email = Email::default();
        email.smtp.enabled = true;
        email.smtp.host = Some("127.0.0.1".to_owned());
        email.smtp.port = self.port;
        email.smtp.admin_email = "admin@madbase.test".to_owned();
        email.smtp.sender_name = Some("MadBase Test".to_owned());
        email
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // The script exec'd the sink: this is the python process itself.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn every_kind_through_real_smtp() {
    let Some(sink) = Sink::start() else { return };
    let egress = Egress::start(1, 16).expect("egress");
    let mailer = Arc::new(Mailer::new(&sink.email(), None, Some(egress.clone())).expect("mailer"));
    assert_eq!(mailer.delivery(), Delivery::Smtp);

    let m = mailer.clone();
    on_monoio(move || async move {
        for (i, kind) in MailKind::ALL.into_iter().enumerate() {
            let to = match kind {
                MailKind::EmailChangeNew => "new@example.com".to_owned(),
                _ => format!("user{i}@example.com"),
            };
            m.send(&to, kind, &vars_for(kind, i)).await.unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
    });

    let got = sink.wait_for(MailKind::ALL.len());
    for (i, (kind, msg)) in MailKind::ALL.into_iter().zip(&got).enumerate() {
        let vars = vars_for(kind, i);
        let to = match kind {
            MailKind::EmailChangeNew => "new@example.com".to_owned(),
            _ => format!("user{i}@example.com"),
        };
        assert_eq!(msg["rcpt_tos"], json!([to]), "{kind}");
        assert_eq!(msg["to"], json!(to), "{kind}");
        assert_eq!(msg["mail_from"], json!("admin@madbase.test"), "{kind}");
        assert_eq!(msg["from"], json!("MadBase Test <admin@madbase.test>"), "{kind}");
        assert_eq!(msg["subject"], json!(default_subject(kind)), "{kind}");
        assert_eq!(msg["content_type"], json!("text/html"), "{kind}");
        let eml = std::fs::read_to_string(sink.dir.path().join(format!("{:06}.eml", i + 1))).expect("eml");
        assert!(eml.contains("MIME-Version: 1.0") && eml.contains("Message-ID: <"), "{kind}: {eml}");
        let body = msg["body"].as_str().expect("body");
        assert!(body.contains(&vars.token), "{kind}: the code is in {body}");
        if let Some(t) = kind.verification_type() {
            // In an href the link is attribute-escaped, as html/template does.
            let link = format!(
                "{EXTERNAL_URL}/verify?token={}&amp;type={t}&amp;redirect_to=http://127.0.0.1:3000/welcome",
                vars.token_hash
            );
            assert!(body.contains(&format!("href=\"{link}\"")), "{kind}: {link} in {body}");
        } else {
            assert!(!body.contains("href"), "{kind} has no link");
        }
        if matches!(kind, MailKind::EmailChangeCurrent | MailKind::EmailChangeNew) {
            assert!(body.contains("old&#43;user@example.com") && body.contains("new@example.com"), "{body}");
        }
    }

    // Delivered mail is kept too, marked as such.
    let outbox = mailer.outbox();
    assert_eq!(outbox.len(), MailKind::ALL.len());
    assert!(outbox.iter().all(|m| m.delivery == Delivery::Smtp));
    assert_eq!(outbox[0].kind, MailKind::Confirmation);
    assert_eq!(outbox[0].subject, "Confirm Your Email");
    assert_eq!(outbox[0].token, vars_for(MailKind::Confirmation, 0).token);
    egress.close(Duration::from_secs(1));
}

#[test]
fn custom_templates_through_real_smtp() {
    let Some(sink) = Sink::start() else { return };
    let project = tempfile::tempdir().expect("tempdir");
    let supabase = project.path().join("supabase");
    std::fs::create_dir_all(supabase.join("templates")).expect("mkdir");
    std::fs::write(
        supabase.join("templates/magic.html"),
        "<p>{{ if eq .Data.locale \"es\" }}Hola{{ else }}Hello{{ end }} {{ .Data.name }},</p>\n\
         <a href=\"{{ .SiteURL }}/auth/confirm?token_hash={{ .TokenHash }}&type=magiclink\">Entrar</a>\n\
         <!-- not sent -->\n<p>{{.Token}}</p>",
    )
    .expect("write template");
    let mut email = sink.email();
    email.template.magic_link.subject = Some("Tu enlace, {{ .Data.name }}".to_owned());
    // As the Supabase CLI writes it: relative to the project root.
    email.template.magic_link.content_path = Some("./supabase/templates/magic.html".to_owned());
    email.template.invite.content = Some("<b>Join {{ .SiteURL }}</b>".to_owned());
    let egress = Egress::start(1, 4).expect("egress");
    let mailer = Arc::new(Mailer::new(&email, Some(&supabase), Some(egress.clone())).expect("mailer"));

    let m = mailer.clone();
    on_monoio(move || async move {
        m.send("ada@example.com", MailKind::MagicLink, &vars_for(MailKind::MagicLink, 1)).await.expect("magic link");
        m.send("ada@example.com", MailKind::Invite, &vars_for(MailKind::Invite, 2)).await.expect("invite");
    });
    let got = sink.wait_for(2);
    let vars = vars_for(MailKind::MagicLink, 1);
    assert_eq!(got[0]["subject"], json!("Tu enlace, Ada"));
    let body = got[0]["body"].as_str().expect("body");
    assert!(body.contains("<p>Hola Ada,</p>"), "{body}");
    assert!(
        body.contains(&format!(
            "href=\"http://127.0.0.1:3000/auth/confirm?token_hash={}&type=magiclink\"",
            vars.token_hash
        )),
        "{body}"
    );
    assert!(body.contains(&format!("<p>{}</p>", vars.token)), "{body}");
    assert!(!body.contains("not sent"), "comments are removed: {body}");
    assert_eq!(got[1]["subject"], json!("You have been invited"));
    assert!(got[1]["body"].as_str().expect("body").contains("<b>Join http://127.0.0.1:3000</b>"));
    egress.close(Duration::from_secs(1));
}

#[test]
fn content_path_resolution_and_errors() {
    let project = tempfile::tempdir().expect("tempdir");
    let supabase = project.path().join("supabase");
    std::fs::create_dir_all(supabase.join("templates")).expect("mkdir");
    std::fs::write(supabase.join("templates/recovery.html"), "reset: {{ .ConfirmationURL }}").expect("write");

    // Relative to supabase/ works too (the settings doc's reading).
    let mut email = Email::default();
    email.template.recovery.content_path = Some("templates/recovery.html".to_owned());
    let mailer = Mailer::new(&email, Some(&supabase), None).expect("mailer");
    let vars = vars_for(MailKind::Recovery, 0);
    let r = mailer.render("a@example.com", MailKind::Recovery, &vars);
    assert_eq!(r.subject, "Reset Your Password");
    assert_eq!(r.html, format!("reset: {}", vars.confirmation_url.replace('&', "&amp;")));

    // A missing file names the key and the paths tried.
    email.template.recovery.content_path = Some("templates/nope.html".to_owned());
    let err = Mailer::new(&email, Some(&supabase), None).expect_err("missing file");
    assert!(err.contains("auth.email.template.recovery.content_path") && err.contains("nope.html"), "{err}");

    // Unsupported template syntax is a start-up error naming the key.
    let mut email = Email::default();
    email.template.invite.content = Some("{{ range .Data }}x{{ end }}".to_owned());
    let err = Mailer::new(&email, None, None).expect_err("range");
    assert!(err.contains("auth.email.template.invite") && err.contains("range"), "{err}");

    // SMTP configured but no egress runtime.
    let mut email = Email::default();
    email.smtp.host = Some("127.0.0.1".to_owned());
    let err = Mailer::new(&email, None, None).expect_err("no egress");
    assert!(err.contains("egress"), "{err}");
}

/// A `MakeWriter` into a shared buffer, to read what the mailer logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[test]
fn without_smtp_mail_is_logged_and_kept() {
    let email = Email::default();
    assert!(email.smtp.host.is_none(), "the embedded default has no SMTP server");
    let mailer = Mailer::new(&email, None, None).expect("mailer");
    assert_eq!(mailer.delivery(), Delivery::Log);

    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt().json().with_writer(logs.clone()).finish();
    let vars = vars_for(MailKind::Confirmation, 0);
    tracing::subscriber::with_default(subscriber, || {
        let mut rt =
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("monoio runtime");
        rt.block_on(mailer.send("new@example.com", MailKind::Confirmation, &vars)).expect("logged");
    });
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).expect("utf-8");
    let line: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["to"] == json!("new@example.com"))
        .unwrap_or_else(|| panic!("a log line for the mail in {text}"));
    assert_eq!(line["level"], json!("INFO"));
    assert_eq!(line["fields"]["kind"], json!("confirmation"));
    assert_eq!(line["fields"]["subject"], json!("Confirm Your Email"));
    assert_eq!(line["fields"]["token"], json!(vars.token));
    assert_eq!(line["fields"]["confirmation_url"], json!(vars.confirmation_url));

    let outbox = mailer.outbox();
    assert_eq!(outbox.len(), 1);
    let m = &outbox[0];
    assert_eq!((m.to.as_str(), m.kind, m.delivery), ("new@example.com", MailKind::Confirmation, Delivery::Log));
    assert_eq!(m.from, "admin@email.com");
    assert_eq!((m.token.as_str(), m.token_hash.as_str()), (vars.token.as_str(), vars.token_hash.as_str()));
    assert_eq!(m.confirmation_url, vars.confirmation_url);
    assert!(m.html.contains(&vars.confirmation_url.replace('&', "&amp;")), "{}", m.html);
    assert!(m.sent_at.ends_with('Z') && m.sent_at.len() == "2024-01-01T00:00:00.000000Z".len(), "{}", m.sent_at);
    // Serialisable for the admin endpoint and tests.
    let v = serde_json::to_value(m).expect("serialise");
    assert_eq!(v["kind"], json!("confirmation"));
    assert_eq!(v["delivery"], json!("log"));

    // Bounded: the newest OUTBOX_CAPACITY are kept.
    on_monoio({
        let mailer = Arc::new(mailer);
        move || async move {
            for i in 0..OUTBOX_CAPACITY + 5 {
                mailer
                    .send(&format!("u{i}@example.com"), MailKind::MagicLink, &vars_for(MailKind::MagicLink, i))
                    .await
                    .expect("logged");
            }
            let outbox = mailer.outbox();
            assert_eq!(outbox.len(), OUTBOX_CAPACITY);
            // One message was there before: 106 sent, the oldest 6 gone.
            assert_eq!(outbox[0].to, "u5@example.com");
            assert_eq!(outbox.last().expect("newest").to, format!("u{}@example.com", OUTBOX_CAPACITY + 4));
        }
    });
}

#[test]
fn an_unreachable_or_silent_smtp_server_fails_within_the_timeout() {
    // A port nobody listens on: refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    // A server that accepts connections (the kernel's backlog) and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();

    let egress = Egress::start(1, 1).expect("egress");
    let mailer = |port: u16| {
        let mut email = Email::default();
        email.smtp.host = Some("127.0.0.1".to_owned());
        email.smtp.port = port;
        Arc::new(
            Mailer::new(&email, None, Some(egress.clone())).expect("mailer").with_timeout(Duration::from_millis(500)),
        )
    };
    let refused = mailer(closed_port);
    let hung = mailer(silent_port);

    on_monoio(move || async move {
        let vars = vars_for(MailKind::Recovery, 0);
        let started = Instant::now();
        match refused.send("a@example.com", MailKind::Recovery, &vars).await {
            Err(MailError::Smtp { server, reason }) => {
                assert_eq!(server, format!("127.0.0.1:{closed_port}"));
                assert!(!reason.is_empty());
            }
            other => panic!("expected an SMTP error, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

        let started = Instant::now();
        let first = hung.send("a@example.com", MailKind::Recovery, &vars);
        // The egress queue holds one job: while the silent server holds it, a second send is
        // refused at once instead of waiting.
        let first = monoio::spawn(first);
        monoio::time::sleep(Duration::from_millis(50)).await;
        match hung.send("b@example.com", MailKind::Recovery, &vars).await {
            Err(MailError::Egress(EgressError::Busy(1))) => {}
            other => panic!("expected Busy, got {other:?}"),
        }
        match first.await {
            Err(MailError::Timeout { timeout, .. }) => assert_eq!(timeout, Duration::from_millis(500)),
            // lettre's own per-command timeout (the same 500 ms) may fire first.
            Err(MailError::Smtp { reason, .. }) => assert!(reason.to_lowercase().contains("time"), "{reason}"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(3), "{took:?}");
        // Nothing failed is kept.
        assert!(hung.outbox().is_empty() && refused.outbox().is_empty());
    });
    drop(silent);
    egress.close(Duration::from_secs(1));
}
