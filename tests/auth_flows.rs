//! End-to-end checks of Auth's email and phone flows (auth/src/flows): the real binary, a real
//! PostgreSQL, and a real SMTP server (scripts/smtp-sink.sh) whose received mail the tests read
//! the links and codes from, as a user would.
//!
//! Needs python3 for the SMTP sink (aiosmtpd is installed into target/ on first use); without
//! it the mail-reading tests are skipped with a message.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{bearer, service_role, TestServer};

/// The SMTP sink: one process, one directory of received messages.
struct Sink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    seen: std::cell::Cell<usize>,
}

impl Sink {
    fn start() -> Option<Sink> {
        if Command::new("python3").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            eprintln!("SKIPPED: python3 is not installed, so the test SMTP server (scripts/smtp-sink.sh) cannot run");
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/smtp-sink.sh");
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
        let line = rx.recv_timeout(Duration::from_secs(300)).expect("the SMTP sink did not start within 300 s");
        let port = line
            .trim()
            .strip_prefix("listening 127.0.0.1 ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the SMTP sink did not announce its port: {line:?}"));
        Some(Sink { child, port, dir, seen: std::cell::Cell::new(0) })
    }

    /// The next message that arrives (waits up to 20 s).
    fn next(&self) -> Mail {
        let n = self.seen.get() + 1;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
                .expect("sink dir")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            if files.len() >= n {
                files.sort();
                self.seen.set(n);
                let message: Value =
                    serde_json::from_slice(&std::fs::read(&files[n - 1]).expect("read")).expect("json");
                return Mail::from(message);
            }
            assert!(Instant::now() < deadline, "message {n} did not arrive");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// No further message arrived within half a second.
    fn assert_quiet(&self) {
        std::thread::sleep(Duration::from_millis(500));
        let count = std::fs::read_dir(self.dir.path())
            .expect("sink dir")
            .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json")))
            .count();
        assert_eq!(count, self.seen.get(), "an unexpected message arrived");
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One received message, with the link and the code our templates put in it.
#[derive(Debug)]
struct Mail {
    to: String,
    link: String,
    code: String,
}

impl From<Value> for Mail {
    fn from(message: Value) -> Mail {
        let body = message["body"].as_str().unwrap_or_default().replace("&amp;", "&").replace("&#43;", "+");
        let between = |start: &str| {
            body.split_once(start)
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(v, _)| v.trim().to_owned())
                .unwrap_or_default()
        };
        let to = message["rcpt_tos"][0].as_str().or(message["to"].as_str()).unwrap_or_default().to_owned();
        Mail { to, link: between("LINK["), code: between("CODE[") }
    }
}

impl Mail {
    /// The link's path and query below `/auth/v1` (`/verify?…`).
    fn path(&self) -> String {
        let start = self.link.find("/auth/v1/").unwrap_or_else(|| panic!("no /auth/v1 link in {self:?}"));
        self.link[start + "/auth/v1".len()..].to_owned()
    }

    fn token(&self) -> String {
        let query = self.link.split_once('?').map(|(_, q)| q).unwrap_or_default();
        url_param(query, "token").unwrap_or_else(|| panic!("no token in {}", self.link))
    }
}

fn url_param(query: &str, name: &str) -> Option<String> {
    query.split('&').filter_map(|p| p.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| decode(v))
}

fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The parameters of a redirect's fragment.
fn fragment(location: &str) -> Vec<(String, String)> {
    let fragment = location.split_once('#').map(|(_, f)| f).unwrap_or_default();
    fragment.split('&').filter_map(|p| p.split_once('=')).map(|(k, v)| (k.to_owned(), decode(v))).collect()
}

const TEMPLATE: &str = "LINK[{{ .ConfirmationURL }}] CODE[{{ .Token }}]";
const SITE: &str = "http://127.0.0.1:3000";

/// A running MadBase with Auth configured by `env` (and the sink's SMTP when given).
struct Auth {
    server: TestServer,
    anon: String,
}

impl Auth {
    fn start(sink: Option<&Sink>, env: &[(&str, &str)]) -> Auth {
        let port = sink.map(|s| s.port.to_string()).unwrap_or_default();
        let mut all: Vec<(&str, &str)> = vec![
            ("MADBASE_AUTH_SITE_URL", SITE),
            ("MADBASE_AUTH_ADDITIONAL_REDIRECT_URLS", "http://localhost:5173/**"),
            ("MADBASE_AUTH_RATE_LIMIT_EMAIL_SENT", "1000"),
            ("MADBASE_AUTH_RATE_LIMIT_SMS_SENT", "1000"),
            ("MADBASE_AUTH_RATE_LIMIT_SIGN_IN_SIGN_UPS", "1000"),
            ("MADBASE_AUTH_RATE_LIMIT_TOKEN_VERIFICATIONS", "1000"),
            ("MADBASE_AUTH_EMAIL_MAX_FREQUENCY", "0s"),
            ("MADBASE_AUTH_SMS_MAX_FREQUENCY", "0s"),
        ];
        for kind in ["CONFIRMATION", "INVITE", "RECOVERY", "MAGIC_LINK", "EMAIL_CHANGE", "REAUTHENTICATION"] {
            let key: &'static str = Box::leak(format!("MADBASE_AUTH_EMAIL_TEMPLATE_{kind}_CONTENT").into_boxed_str());
            all.push((key, TEMPLATE));
        }
        if sink.is_some() {
            all.push(("MADBASE_AUTH_EMAIL_SMTP_HOST", "127.0.0.1"));
            all.push(("MADBASE_AUTH_EMAIL_SMTP_PORT", Box::leak(port.into_boxed_str())));
        }
        all.extend_from_slice(env);
        let server = TestServer::start_with(&all);
        Auth { server, anon: support::token(json!({"role": "anon", "iss": "supabase-demo"})) }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Option<Value>,
    ) -> support::HttpResponse {
        let bearer_anon = format!("Bearer {}", self.anon);
        let auth = authorization.unwrap_or(&bearer_anon);
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        let mut headers =
            vec![("apikey", self.anon.as_str()), ("authorization", auth), ("x-supabase-api-version", "2024-01-01")];
        if !text.is_empty() {
            headers.push(("content-type", "application/json"));
        }
        self.server.request(method, &format!("/auth/v1{path}"), &headers, text.as_bytes())
    }

    fn post(&self, path: &str, body: Value) -> support::HttpResponse {
        self.call("POST", path, None, Some(body))
    }

    fn get(&self, path: &str) -> support::HttpResponse {
        self.call("GET", path, None, None)
    }

    fn put_user(&self, access_token: &str, body: Value) -> support::HttpResponse {
        self.call("PUT", "/user", Some(&format!("Bearer {access_token}")), Some(body))
    }

    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> support::HttpResponse {
        self.call(method, path, Some(&service_role()), body)
    }
}

#[track_caller]
fn expect(response: &support::HttpResponse, status: u16) -> Value {
    assert_eq!(response.status, status, "{}", response.text());
    if response.body.is_empty() {
        Value::Null
    } else {
        response.json()
    }
}

#[track_caller]
fn expect_error(response: &support::HttpResponse, status: u16, code: &str, message: &str) {
    let body = expect(response, status);
    assert_eq!(body["code"], code, "{body}");
    if !message.is_empty() {
        assert_eq!(body["message"], message, "{body}");
    }
}

#[track_caller]
fn expect_session(response: &support::HttpResponse) -> Value {
    let body = expect(response, 200);
    assert!(body["access_token"].is_string() && body["refresh_token"].is_string(), "{body}");
    assert_eq!(body["token_type"], "bearer");
    body
}

fn amr(session: &Value) -> Vec<String> {
    let token = session["access_token"].as_str().expect("access_token");
    let payload = token.split('.').nth(1).expect("payload");
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64");
    let claims: Value = serde_json::from_slice(&bytes).expect("claims");
    claims["amr"].as_array().expect("amr").iter().map(|m| m["method"].as_str().unwrap_or("").to_owned()).collect()
}

/// Sign-up with confirmations on: the confirmation mail's link signs in (303 with the session in
/// the fragment) and is single use; the code verifies too; a taken address is not revealed; the
/// sending frequency is enforced.
#[test]
fn signup_confirmation_link_code_replay_and_enumeration() {
    let Some(sink) = Sink::start() else { return };
    let auth = Auth::start(
        Some(&sink),
        &[("MADBASE_AUTH_EMAIL_ENABLE_CONFIRMATIONS", "true"), ("MADBASE_AUTH_EMAIL_MAX_FREQUENCY", "3s")],
    );

    let user = expect(
        &auth.post(
            "/signup?redirect_to=http%3A%2F%2Flocalhost%3A5173%2Fwelcome",
            json!({"email": "Ann@Example.com", "password": "secret-1"}),
        ),
        200,
    );
    assert!(user["access_token"].is_null() && user["confirmation_sent_at"].is_string(), "{user}");
    assert_eq!(user["email"], "ann@example.com");
    let mail = sink.next();
    assert_eq!(mail.to, "ann@example.com");
    assert!(
        mail.link.contains("type=signup") && mail.link.contains("redirect_to=http://localhost:5173/welcome"),
        "{mail:?}"
    );
    assert_eq!(mail.code.len(), 6);

    // Not confirmed yet: no password sign-in; and a second sign-up within max_frequency is 429.
    expect_error(
        &auth.post("/token?grant_type=password", json!({"email": "ann@example.com", "password": "secret-1"})),
        400,
        "email_not_confirmed",
        "Email not confirmed",
    );
    let again = auth.post("/signup", json!({"email": "ann@example.com", "password": "secret-1"}));
    expect(&again, 429);
    assert!(again.json()["message"]
        .as_str()
        .unwrap_or("")
        .starts_with("For security purposes, you can only request this after "));

    // The link: 303 to the redirect with the session in the fragment, keys sorted.
    let followed = auth.get(&mail.path());
    assert_eq!(followed.status, 303, "{} {mail:?}", followed.text());
    let location = followed.header("location").expect("location").to_owned();
    assert!(location.starts_with("http://localhost:5173/welcome#access_token="), "{location}");
    let keys: Vec<String> = fragment(&location).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["access_token", "expires_at", "expires_in", "refresh_token", "sb", "token_type", "type"]);
    assert!(location.ends_with("&token_type=bearer&type=signup"), "{location}");

    // Single use: the link again, and the code, are refused.
    let replay = auth.get(&mail.path());
    assert_eq!(replay.status, 303);
    let error = fragment(replay.header("location").unwrap_or_default());
    assert!(error.contains(&("error_code".to_owned(), "otp_expired".to_owned())), "{error:?}");
    assert!(error.contains(&("error".to_owned(), "access_denied".to_owned())));
    expect_error(
        &auth.post("/verify", json!({"email": "ann@example.com", "token": mail.code, "type": "signup"})),
        403,
        "otp_expired",
        "Token has expired or is invalid",
    );

    // Confirmed: the password works; a sign-up of the address answers a stand-in user.
    expect_session(
        &auth.post("/token?grant_type=password", json!({"email": "ann@example.com", "password": "secret-1"})),
    );
    std::thread::sleep(Duration::from_secs(3));
    let stand_in = expect(&auth.post("/signup", json!({"email": "ann@example.com", "password": "other-22"})), 200);
    assert_ne!(stand_in["id"], user["id"]);
    assert_eq!(stand_in["identities"], json!([]));
    assert!(stand_in["email_confirmed_at"].is_null() && stand_in["access_token"].is_null());
    sink.assert_quiet();

    // A second unconfirmed user confirms with the code (POST /verify, type signup; amr otp).
    expect(&auth.post("/signup", json!({"email": "bo@example.com", "password": "secret-1"})), 200);
    let mail = sink.next();
    expect_error(
        &auth.post("/verify", json!({"email": "bo@example.com", "token": "000000x", "type": "signup"})),
        403,
        "otp_expired",
        "Token has expired or is invalid",
    );
    expect_error(
        &auth.post("/verify", json!({"email": "bo@example.com", "token": mail.code, "type": "recovery"})),
        403,
        "otp_expired",
        "Token has expired or is invalid",
    );
    let session =
        expect_session(&auth.post("/verify", json!({"email": "bo@example.com", "token": mail.code, "type": "signup"})));
    assert_eq!(amr(&session), ["otp"]);
    assert!(session["user"]["email_confirmed_at"].is_string());
    assert_eq!(session["user"]["user_metadata"]["email_verified"], true);
}

/// `/otp` and `/verify`: unknown addresses with create_user false, magic link by code and by
/// link, expiry, the request rules; `/recover` and a redirect outside the allow list.
#[test]
fn otp_magic_link_recovery_and_redirects() {
    let Some(sink) = Sink::start() else { return };
    let auth = Auth::start(Some(&sink), &[]);

    expect_error(
        &auth.post("/otp", json!({"email": "new@example.com", "create_user": false})),
        422,
        "otp_disabled",
        "Signups not allowed for otp",
    );
    sink.assert_quiet();
    expect_error(&auth.post("/otp", json!({})), 400, "validation_failed", "One of email or phone must be set");
    expect_error(
        &auth.post("/verify", json!({"token": "1"})),
        400,
        "validation_failed",
        "Verify requires a verification type",
    );
    expect_error(
        &auth.post("/verify", json!({"type": "magiclink"})),
        400,
        "validation_failed",
        "Verify requires either a token or a token hash",
    );
    expect_error(
        &auth.post("/verify", json!({"type": "magiclink", "token_hash": "x", "email": "a@b.co"})),
        400,
        "validation_failed",
        "Only the token_hash and type should be provided",
    );

    // Confirmations off: /otp creates the user and sends a magic link with a code.
    expect(&auth.post("/otp", json!({"email": "new@example.com", "data": {"plan": "free"}})), 200);
    let mail = sink.next();
    assert!(mail.link.contains("type=magiclink"), "{mail:?}");
    let session =
        expect_session(&auth.post("/verify", json!({"email": "new@example.com", "token": mail.code, "type": "email"})));
    assert_eq!(session["user"]["user_metadata"]["plan"], "free");
    expect_error(
        &auth.post("/verify", json!({"email": "new@example.com", "token": mail.code, "type": "magiclink"})),
        403,
        "otp_expired",
        "Token has expired or is invalid",
    );

    // The link of a second one, by token hash; then an expired one.
    expect(&auth.post("/otp", json!({"email": "new@example.com"})), 200);
    let mail = sink.next();
    expect_session(&auth.post("/verify", json!({"token_hash": mail.token(), "type": "magiclink"})));
    expect(&auth.post("/otp", json!({"email": "new@example.com"})), 200);
    let mail = sink.next();
    auth.server
        .sql("update auth.users set recovery_sent_at = now() - interval '2 hours' where email = 'new@example.com'");
    expect_error(
        &auth.post("/verify", json!({"token_hash": mail.token(), "type": "magiclink"})),
        403,
        "otp_expired",
        "Email link is invalid or has expired",
    );

    // Recovery: an unknown address answers the same and sends nothing.
    expect(&auth.post("/recover", json!({"email": "nobody@example.com"})), 200);
    sink.assert_quiet();
    let redirect = "/recover?redirect_to=https%3A%2F%2Fevil.example%2Fsteal";
    expect(&auth.post(redirect, json!({"email": "new@example.com"})), 200);
    let mail = sink.next();
    assert!(mail.link.contains("type=recovery") && mail.link.ends_with(&format!("redirect_to={SITE}")), "{mail:?}");
    let followed = auth.get(&mail.path());
    assert_eq!(followed.status, 303);
    let location = followed.header("location").unwrap_or_default();
    assert!(
        location.starts_with(&format!("{SITE}#access_token=")),
        "refused redirect falls back to site_url: {location}"
    );
    let recovered = fragment(location);
    let access = recovered.iter().find(|(k, _)| k == "access_token").map(|(_, v)| v.clone()).expect("access_token");
    assert!(location.ends_with("type=recovery"));

    // After recovery, a new password (not the same one twice).
    let user = expect(&auth.put_user(&access, json!({"password": "brand-new-1"})), 200);
    assert_eq!(user["email"], "new@example.com");
    expect_error(
        &auth.put_user(&access, json!({"password": "brand-new-1"})),
        422,
        "same_password",
        "New password should be different from the old password.",
    );
    expect_session(
        &auth.post("/token?grant_type=password", json!({"email": "new@example.com", "password": "brand-new-1"})),
    );
}

/// PKCE: a magic link in a PKCE flow redirects with `?code=`, which the verifier exchanges once.
#[test]
fn pkce_magic_link_exchange() {
    let auth = Auth::start(None, &[]);
    let verifier = "a-verifier-that-is-long-enough-to-be-a-real-one-0123456789abcdef";
    let challenge = madbase_auth::crypto::pkce::s256_challenge(verifier);
    expect(
        &auth.post(
            "/otp?redirect_to=http%3A%2F%2Flocalhost%3A5173%2Fcb",
            json!({"email": "pk@example.com", "code_challenge": challenge, "code_challenge_method": "s256"}),
        ),
        200,
    );
    // No SMTP server: the mail is in the outbox (admin only).
    expect_error(&auth.get("/admin/mail"), 403, "not_admin", "User not allowed");
    let outbox = expect(&auth.admin("GET", "/admin/mail", None), 200);
    let last = outbox["mail"].as_array().and_then(|m| m.last()).cloned().expect("a message");
    let token = last["token_hash"].as_str().expect("token_hash").to_owned();
    assert!(token.starts_with("pkce_"), "{last}");
    let followed = auth.get(&format!("/verify?token={token}&type=magiclink&redirect_to=http://localhost:5173/cb"));
    assert_eq!(followed.status, 303, "{}", followed.text());
    let location = followed.header("location").unwrap_or_default().to_owned();
    assert!(location.starts_with("http://localhost:5173/cb?code="), "{location}");
    let code = url_param(location.split_once('?').map(|(_, q)| q).unwrap_or_default(), "code").expect("code");

    expect_error(
        &auth.post("/token?grant_type=pkce", json!({"auth_code": code})),
        400,
        "validation_failed",
        "invalid request: both auth code and code verifier should be non-empty",
    );
    expect_error(
        &auth.post(
            "/token?grant_type=pkce",
            json!({"auth_code": code, "code_verifier": "wrong-verifier-wrong-verifier-wrong-verifier"}),
        ),
        400,
        "bad_code_verifier",
        "",
    );
    let session =
        expect_session(&auth.post("/token?grant_type=pkce", json!({"auth_code": code, "code_verifier": verifier})));
    assert_eq!(amr(&session), ["magiclink"]);
    assert_eq!(session["user"]["email"], "pk@example.com");
    expect_error(
        &auth.post("/token?grant_type=pkce", json!({"auth_code": code, "code_verifier": verifier})),
        404,
        "flow_state_not_found",
        "invalid flow state, no valid flow state found",
    );

    // An expired flow state.
    expect(
        &auth.post(
            "/recover",
            json!({"email": "pk@example.com", "code_challenge": challenge, "code_challenge_method": "s256"}),
        ),
        200,
    );
    let outbox = expect(&auth.admin("GET", "/admin/mail", None), 200);
    let token = outbox["mail"]
        .as_array()
        .and_then(|m| m.last())
        .map(|m| m["token_hash"].as_str().unwrap_or("").to_owned())
        .expect("mail");
    let followed = auth.get(&format!("/verify?token={token}&type=recovery"));
    let location = followed.header("location").unwrap_or_default().to_owned();
    assert!(location.starts_with(&format!("{SITE}?code=")), "{location}");
    let code = url_param(location.split_once('?').map(|(_, q)| q).unwrap_or_default(), "code").expect("code");
    auth.server.sql("update auth.flow_state set created_at = now() - interval '10 minutes'");
    expect_error(
        &auth.post("/token?grant_type=pkce", json!({"auth_code": code, "code_verifier": verifier})),
        422,
        "flow_state_expired",
        "invalid flow state, flow state has expired",
    );
}

/// Secure email change (both addresses confirm), a taken address, reauthentication for a
/// password change of an old session, an invitation, and generate_link.
#[test]
fn email_change_reauthentication_invite_and_generate_link() {
    let Some(sink) = Sink::start() else { return };
    let auth = Auth::start(
        Some(&sink),
        &[("MADBASE_AUTH_EMAIL_ENABLE_CONFIRMATIONS", "true"), ("MADBASE_AUTH_EMAIL_SECURE_PASSWORD_CHANGE", "true")],
    );

    // generate_link: a signup link, no mail sent; its hashed token verifies.
    let link = expect(
        &auth.admin(
            "POST",
            "/admin/generate_link",
            Some(json!({"type": "signup", "email": "cat@example.com", "password": "secret-1"})),
        ),
        200,
    );
    assert_eq!(link["verification_type"], "signup");
    assert_eq!(link["email"], "cat@example.com");
    assert!(link["action_link"].as_str().unwrap_or("").contains("/auth/v1/verify?token="), "{link}");
    assert_eq!(link["email_otp"].as_str().map(str::len), Some(6));
    sink.assert_quiet();
    let session = expect_session(&auth.post("/verify", json!({"token_hash": link["hashed_token"], "type": "signup"})));
    let access = session["access_token"].as_str().expect("token").to_owned();
    expect_error(
        &auth.admin("POST", "/admin/generate_link", Some(json!({"type": "recovery", "email": "none@example.com"}))),
        404,
        "user_not_found",
        "User with this email not found",
    );
    expect_error(
        &auth.admin("POST", "/admin/generate_link", Some(json!({"type": "bogus", "email": "cat@example.com"}))),
        400,
        "validation_failed",
        "Invalid email action link type requested: bogus",
    );

    // An invitation; the invitee verifies the invite link.
    let invited = expect(&auth.admin("POST", "/invite", Some(json!({"email": "dan@example.com"}))), 200);
    assert!(invited["invited_at"].is_string(), "{invited}");
    let mail = sink.next();
    assert_eq!(mail.to, "dan@example.com");
    assert!(mail.link.contains("type=invite"));
    let followed = auth.get(&mail.path());
    assert!(
        followed.header("location").unwrap_or_default().ends_with("type=invite"),
        "{:?}",
        followed.header("location")
    );
    expect_error(&auth.admin("POST", "/invite", Some(json!({"email": "dan@example.com"}))), 422, "email_exists", "");

    // Email change: taken address; then mails to both addresses, two confirmations.
    expect_error(
        &auth.put_user(&access, json!({"email": "dan@example.com"})),
        422,
        "email_exists",
        "A user with this email address has already been registered",
    );
    let pending = expect(&auth.put_user(&access, json!({"email": "cat2@example.com"})), 200);
    assert_eq!(pending["new_email"], "cat2@example.com");
    assert!(pending["email_change_sent_at"].is_string());
    let (first, second) = (sink.next(), sink.next());
    let (to_new, to_current) = if first.to == "cat2@example.com" { (first, second) } else { (second, first) };
    assert_eq!(to_current.to, "cat@example.com");
    let leg = expect(
        &auth.post("/verify", json!({"email": "cat@example.com", "token": to_current.code, "type": "email_change"})),
        200,
    );
    assert_eq!(
        leg,
        json!({"msg": "Confirmation link accepted. Please proceed to confirm link sent to the other email", "code": "200"})
    );
    let changed = expect_session(
        &auth.post("/verify", json!({"email": "cat2@example.com", "token": to_new.code, "type": "email_change"})),
    );
    assert_eq!(changed["user"]["email"], "cat2@example.com");
    let access = changed["access_token"].as_str().expect("token").to_owned();

    // Reauthentication: a session older than 24 h needs the nonce to change the password.
    auth.server.sql("update auth.sessions set created_at = now() - interval '25 hours'");
    expect_error(
        &auth.put_user(&access, json!({"password": "another-1"})),
        400,
        "reauthentication_needed",
        "Password update requires reauthentication",
    );
    expect(&auth.call("GET", "/reauthenticate", Some(&format!("Bearer {access}")), None), 200);
    let nonce = sink.next();
    assert_eq!(nonce.to, "cat2@example.com");
    assert_eq!(nonce.code.len(), 6);
    expect_error(
        &auth.put_user(&access, json!({"password": "another-1", "nonce": "999999"})),
        422,
        "reauthentication_not_valid",
        "Nonce has expired or is invalid",
    );
    expect(
        &auth.put_user(&access, json!({"password": "another-1", "nonce": nonce.code, "data": {"a": 1, "b": 2}})),
        200,
    );
    let user = expect(&auth.put_user(&access, json!({"data": {"a": null, "c": 3}})), 200);
    assert_eq!(user["user_metadata"]["b"], 2);
    assert_eq!(user["user_metadata"]["c"], 3);
    assert!(user["user_metadata"].get("a").is_none(), "{user}");
    expect_session(
        &auth.post("/token?grant_type=password", json!({"email": "cat2@example.com", "password": "another-1"})),
    );

    // /reauthenticate needs a confirmed email: an invited, unconfirmed user has none yet.
    let unconfirmed = expect(&auth.admin("POST", "/invite", Some(json!({"email": "eve@example.com"}))), 200);
    let _ = sink.next();
    let eve = bearer(json!({"sub": unconfirmed["id"], "role": "authenticated", "aud": "authenticated"}));
    expect_error(
        &auth.call("GET", "/reauthenticate", Some(&eve), None),
        422,
        "email_not_confirmed",
        "Please verify your email first.",
    );
}

/// Phone: a test-OTP number needs no SMS; another number's code is recorded by the default
/// sender; wrong codes are refused; /resend of an unconfirmed number.
#[test]
fn phone_otp_and_resend() {
    let auth = Auth::start(
        None,
        &[
            ("MADBASE_AUTH_SMS_ENABLE_SIGNUP", "true"),
            ("MADBASE_AUTH_SMS_ENABLE_CONFIRMATIONS", "true"),
            ("MADBASE_AUTH_SMS_TEST_OTP", "15555550100:123456"),
        ],
    );
    expect(&auth.post("/otp", json!({"phone": "+1 555 555 0100"})), 200);
    expect_error(
        &auth.post("/verify", json!({"phone": "15555550100", "token": "654321", "type": "sms"})),
        403,
        "otp_expired",
        "Token has expired or is invalid",
    );
    let session =
        expect_session(&auth.post("/verify", json!({"phone": "15555550100", "token": "123456", "type": "sms"})));
    assert_eq!(session["user"]["phone"], "15555550100");
    assert!(session["user"]["phone_confirmed_at"].is_string());

    expect(&auth.post("/signup", json!({"phone": "15555550199", "password": "secret-1"})), 200);
    let outbox = expect(&auth.admin("GET", "/admin/mail", None), 200);
    let sms = outbox["sms"].as_array().and_then(|m| m.last()).cloned().expect("an SMS");
    assert_eq!(sms["to"], "15555550199");
    let code = sms["body"].as_str().unwrap_or("").rsplit(' ').next().unwrap_or("").to_owned();
    assert_eq!(code.len(), 6, "{sms}");
    let resent = expect(&auth.post("/resend", json!({"phone": "15555550199", "type": "sms"})), 200);
    assert!(resent["message_id"].is_string(), "{resent}");
    expect_error(
        &auth.post("/verify", json!({"phone": "15555550199", "token": code, "type": "sms"})),
        403,
        "otp_expired",
        "",
    );
    let outbox = expect(&auth.admin("GET", "/admin/mail", None), 200);
    let sms = outbox["sms"].as_array().and_then(|m| m.last()).cloned().expect("an SMS");
    let code = sms["body"].as_str().unwrap_or("").rsplit(' ').next().unwrap_or("").to_owned();
    expect_session(&auth.post("/verify", json!({"phone": "15555550199", "token": code, "type": "sms"})));
    expect_error(
        &auth.post("/resend", json!({"type": "nope", "email": "a@b.co"})),
        400,
        "validation_failed",
        "Missing one of these types: signup, email_change, sms, phone_change",
    );
}

/// An anonymous user becomes permanent: a password alone is refused; an email (confirmations
/// off) is confirmed at once and the user is no longer anonymous.
#[test]
fn anonymous_user_becomes_permanent() {
    let auth = Auth::start(None, &[("MADBASE_AUTH_ENABLE_ANONYMOUS_SIGN_INS", "true")]);
    let session = expect_session(&auth.post("/signup", json!({})));
    assert_eq!(session["user"]["is_anonymous"], true);
    let access = session["access_token"].as_str().expect("token").to_owned();
    expect_error(
        &auth.put_user(&access, json!({"password": "secret-1"})),
        422,
        "validation_failed",
        "Updating password of an anonymous user without an email or phone is not allowed",
    );
    let user = expect(&auth.put_user(&access, json!({"email": "anon@example.com", "password": "secret-1"})), 200);
    assert_eq!(user["email"], "anon@example.com");
    assert_eq!(user["is_anonymous"], false);
    assert!(user["email_confirmed_at"].is_string(), "{user}");
    assert_eq!(user["app_metadata"]["provider"], "email");
    expect_session(
        &auth.post("/token?grant_type=password", json!({"email": "anon@example.com", "password": "secret-1"})),
    );
}

/// `/resend` (signup, email_change, phone_change) replaces the previous token; a phone change by
/// SMS; `GET /verify` of a type links cannot carry redirects with GoTrue's error; a magic link
/// asked for by an unconfirmed user sends the confirmation instead.
#[test]
fn resend_phone_change_and_link_errors() {
    let Some(sink) = Sink::start() else { return };
    let auth = Auth::start(
        Some(&sink),
        &[
            ("MADBASE_AUTH_EMAIL_ENABLE_CONFIRMATIONS", "true"),
            ("MADBASE_AUTH_SMS_ENABLE_SIGNUP", "true"),
            ("MADBASE_AUTH_SMS_ENABLE_CONFIRMATIONS", "true"),
        ],
    );
    expect(&auth.post("/signup", json!({"email": "fay@example.com", "password": "secret-1"})), 200);
    let first = sink.next();
    expect(&auth.post("/otp", json!({"email": "fay@example.com"})), 200);
    let confirmation = sink.next();
    assert!(
        confirmation.link.contains("type=signup"),
        "unconfirmed: the confirmation, not a magic link: {confirmation:?}"
    );
    expect(&auth.post("/resend", json!({"type": "signup", "email": "fay@example.com"})), 200);
    let latest = sink.next();
    for stale in [&first, &confirmation] {
        expect_error(
            &auth.post("/verify", json!({"token_hash": stale.token(), "type": "signup"})),
            403,
            "otp_expired",
            "Email link is invalid or has expired",
        );
    }
    let session = expect_session(&auth.post("/verify", json!({"token_hash": latest.token(), "type": "signup"})));
    let access = session["access_token"].as_str().expect("token").to_owned();
    expect(&auth.post("/resend", json!({"type": "signup", "email": "fay@example.com"})), 200);
    expect(&auth.post("/resend", json!({"type": "signup", "email": "nobody@example.com"})), 200);
    sink.assert_quiet();

    // Links of a type they cannot be: a redirect with the error; no type: 400.
    let wrong = auth.get(&format!("/verify?token={}&type=sms", latest.token()));
    assert_eq!(wrong.status, 303);
    let error = fragment(wrong.header("location").unwrap_or_default());
    assert!(error.contains(&("error".to_owned(), "invalid_request".to_owned())), "{error:?}");
    assert!(error.contains(&("error_description".to_owned(), "Invalid email verification type".to_owned())));
    expect_error(&auth.get("/verify?token=abc"), 400, "validation_failed", "Verify requires a verification type");

    // Email change, resent: the new pair replaces the first.
    expect(&auth.put_user(&access, json!({"email": "fay2@example.com"})), 200);
    let _ = (sink.next(), sink.next());
    expect(&auth.post("/resend", json!({"type": "email_change", "email": "fay@example.com"})), 200);
    let (a, b) = (sink.next(), sink.next());
    let to_current = if a.to == "fay@example.com" { a } else { b };
    let leg = expect(&auth.post("/verify", json!({"token_hash": to_current.token(), "type": "email_change"})), 200);
    assert_eq!(leg["code"], "200");

    // Phone change by SMS (the default sender records it).
    let pending = expect(&auth.put_user(&access, json!({"phone": "+1 555 555 0123"})), 200);
    assert_eq!(pending["new_phone"], "15555550123", "{pending}");
    let resent = expect(&auth.post("/resend", json!({"type": "phone_change", "phone": "15555550123"})), 200);
    assert_eq!(resent, json!({}), "phone_change resend finds the user by its current phone, which it has none of");
    let outbox = expect(&auth.admin("GET", "/admin/mail", None), 200);
    let sms = outbox["sms"].as_array().and_then(|m| m.last()).cloned().expect("an SMS");
    assert_eq!(sms["to"], "15555550123");
    let code = sms["body"].as_str().unwrap_or("").rsplit(' ').next().unwrap_or("").to_owned();
    let changed =
        expect_session(&auth.post("/verify", json!({"phone": "15555550123", "token": code, "type": "phone_change"})));
    assert_eq!(changed["user"]["phone"], "15555550123");
    assert!(changed["user"]["phone_confirmed_at"].is_string());
    let providers = changed["user"]["app_metadata"]["providers"].as_array().cloned().unwrap_or_default();
    assert!(providers.contains(&json!("phone")) && providers.contains(&json!("email")), "{providers:?}");
}
