//! `/auth/v1/factors` from the outside: TOTP multi-factor authentication as auth-js
//! (`supabase.auth.mfa`) drives it — enroll, challenge, verify to an aal2 session, unenroll —
//! with GoTrue's refusals, the session rules (the user's aal1 sessions end, unenroll downgrades)
//! and `auth.jwt()->>'aal'` in an RLS policy of the Data API. The real binary against a real
//! PostgreSQL; codes are computed here with RFC 6238 (`madbase_auth::crypto::totp`).
//!
//! The MFA rate limit (15 challenge/verify requests a minute per address) is per server, so each
//! test keeps its own count below it but the one that checks the limit.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use madbase_auth::crypto::totp;
use serde_json::{json, Value};
use support::{token, HttpResponse, TestServer};

const API_VERSION: (&str, &str) = ("X-Supabase-Api-Version", "2024-01-01");
const PASSWORD: &str = "correct horse battery";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

/// A request as auth-js sends it (JSON body, API version header), with a user token if given.
fn call(server: &TestServer, method: &str, path: &str, access_token: Option<&str>, body: &Value) -> HttpResponse {
    let bearer = access_token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![API_VERSION, ("Content-Type", "application/json;charset=UTF-8")];
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer.as_str()));
    }
    let body = if method == "GET" { Vec::new() } else { body.to_string().into_bytes() };
    server.request(method, &format!("/auth/v1{path}"), &headers, &body)
}

/// Asserts GoTrue's error answer (new shape) and returns its message.
fn assert_error(response: &HttpResponse, status: u16, code: &str) -> String {
    assert_eq!(response.status, status, "{}", response.text());
    let body = response.json();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(response.header("x-sb-error-code"), Some(code));
    body["message"].as_str().expect("message").to_owned()
}

/// The payload of a JWT.
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// A session answer: (access token, refresh token, claims).
struct Session {
    access: String,
    refresh: String,
    claims: Value,
}

fn session(response: &HttpResponse) -> Session {
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    let access = body["access_token"].as_str().expect("access_token").to_owned();
    Session {
        claims: claims(&access),
        access,
        refresh: body["refresh_token"].as_str().expect("refresh_token").to_owned(),
    }
}

fn sign_up(server: &TestServer, email: &str) -> Session {
    let response = call(server, "POST", "/signup", None, &json!({"email": email, "password": PASSWORD}));
    assert_eq!(response.status, 200, "{}\n{}", response.text(), server.log());
    session(&response)
}

fn sign_in(server: &TestServer, email: &str) -> Session {
    session(&call(server, "POST", "/token?grant_type=password", None, &json!({"email": email, "password": PASSWORD})))
}

fn enroll(server: &TestServer, access: &str, name: &str) -> Value {
    let response =
        call(server, "POST", "/factors", Some(access), &json!({"friendly_name": name, "factor_type": "totp"}));
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

fn challenge(server: &TestServer, access: &str, factor: &str) -> String {
    let response =
        call(server, "POST", &format!("/factors/{factor}/challenge"), Some(access), &json!({"factorId": factor}));
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["id"].as_str().expect("challenge id").to_owned()
}

fn verify(server: &TestServer, access: &str, factor: &str, challenge: &str, code: &str) -> HttpResponse {
    call(
        server,
        "POST",
        &format!("/factors/{factor}/verify"),
        Some(access),
        &json!({"challenge_id": challenge, "code": code}),
    )
}

fn code(secret: &str) -> String {
    totp::code_at(secret, now()).expect("valid secret")
}

/// A code of `secret` that is wrong now (and one step either side).
fn wrong_code(secret: &str) -> String {
    let t = now();
    let taken: Vec<String> = (0..=3).filter_map(|i| totp::code_at(secret, t + i * 30 - 30)).collect();
    (0..1_000_000).map(|n| format!("{n:06}")).find(|c| !taken.contains(c)).expect("a free code")
}

fn user(server: &TestServer, access: &str) -> Value {
    let response = call(server, "GET", "/user", Some(access), &Value::Null);
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

fn scalar(server: &TestServer, sql: &str) -> String {
    let results = server.sql(sql);
    results[0].rows[0].get_str(0).unwrap_or_default().to_owned()
}

fn methods(claims: &Value) -> Vec<String> {
    claims["amr"].as_array().expect("amr").iter().map(|e| e["method"].as_str().expect("method").to_owned()).collect()
}

#[test]
fn totp_enroll_challenge_verify_reaches_aal2_and_rls_sees_it() {
    let server = TestServer::start();
    server.sql(
        "create table public.vault (id int primary key, secret text);
         insert into public.vault values (1, 'gold');
         alter table public.vault enable row level security;
         create policy aal2_only on public.vault for select to authenticated
           using ((auth.jwt()->>'aal') = 'aal2');
         grant select on public.vault to authenticated;",
    );
    server.wait_for_relations(&["vault"]);

    let email = "mfa@example.com";
    let first = sign_up(&server, email);
    assert_eq!(first.claims["aal"], "aal1");
    assert_eq!(methods(&first.claims), ["password"]);
    assert!(user(&server, &first.access).get("factors").is_none(), "no factors yet");
    // A second aal1 session of the same user, which the verification will end.
    let other = sign_in(&server, email);

    // Enroll: GoTrue's answer; the issuer defaults to the host of site_url.
    let enrolled = enroll(&server, &first.access, "phone app");
    let factor = enrolled["id"].as_str().expect("id").to_owned();
    let secret = enrolled["totp"]["secret"].as_str().expect("secret").to_owned();
    let keys: Vec<&str> = enrolled.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 4, "{enrolled}");
    assert_eq!(enrolled["type"], "totp");
    assert_eq!(enrolled["friendly_name"], "phone app");
    assert_eq!(secret.len(), 32);
    assert!(secret.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)), "{secret}");
    assert_eq!(
        enrolled["totp"]["uri"],
        format!(
            "otpauth://totp/127.0.0.1:3000:{email}?algorithm=SHA1&digits=6&issuer=127.0.0.1:3000&period=30&secret={secret}"
        )
    );
    let qr = enrolled["totp"]["qr_code"].as_str().expect("qr_code");
    assert!(qr.starts_with("<svg") && qr.ends_with("</svg>"), "{qr}");
    let listed = user(&server, &first.access);
    assert_eq!(listed["factors"][0]["id"], factor.as_str());
    assert_eq!(listed["factors"][0]["status"], "unverified");
    assert_eq!(listed["factors"][0]["factor_type"], "totp");
    assert_eq!(listed["factors"][0]["friendly_name"], "phone app");
    assert!(listed["factors"][0]["last_challenged_at"].is_null());
    // A custom issuer goes into the URI, escaped as pquerna/otp escapes it.
    let custom = call(
        &server,
        "POST",
        "/factors",
        Some(&first.access),
        &json!({"friendly_name": "second", "factor_type": "totp", "issuer": "My App"}),
    );
    assert_eq!(custom.status, 200, "{}", custom.text());
    let custom_uri = custom.json()["totp"]["uri"].as_str().expect("uri").to_owned();
    assert!(custom_uri.starts_with(&format!("otpauth://totp/My%20App:{email}?")), "{custom_uri}");
    assert!(custom_uri.contains("&issuer=My%20App&"), "{custom_uri}");

    // Challenge: id, type, expiry 300 s on; recorded with the client's address.
    let response = call(&server, "POST", &format!("/factors/{factor}/challenge"), Some(&first.access), &json!({}));
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    let challenge_id = body["id"].as_str().expect("id").to_owned();
    assert_eq!(body["type"], "totp");
    let expires_at = body["expires_at"].as_u64().expect("expires_at");
    assert!((now() + 295..=now() + 301).contains(&expires_at), "{body}");
    assert_eq!(
        scalar(&server, &format!("select host(ip_address) from auth.mfa_challenges where id = '{challenge_id}'")),
        "127.0.0.1"
    );
    assert!(!user(&server, &first.access)["factors"][0]["last_challenged_at"].is_null());

    // A wrong code is refused and leaves the challenge usable.
    let wrong = verify(&server, &first.access, &factor, &challenge_id, &wrong_code(&secret));
    assert_eq!(assert_error(&wrong, 422, "mfa_verification_failed"), "Invalid TOTP code entered");

    // The right code: the same session at aal2, `totp` first in amr, a new refresh token.
    let raised = session(&verify(&server, &first.access, &factor, &challenge_id, &code(&secret)));
    assert_eq!(raised.claims["aal"], "aal2");
    assert_eq!(methods(&raised.claims), ["totp", "password"]);
    assert_eq!(raised.claims["session_id"], first.claims["session_id"]);
    assert_ne!(raised.refresh, first.refresh);
    let session_id = first.claims["session_id"].as_str().expect("session_id");
    assert_eq!(
        scalar(&server, &format!("select aal::text || ' ' || factor_id from auth.sessions where id = '{session_id}'")),
        format!("aal2 {factor}")
    );
    assert_eq!(
        scalar(&server, &format!("select revoked::text from auth.refresh_tokens where token = '{}'", first.refresh)),
        "true"
    );
    assert_eq!(
        scalar(
            &server,
            &format!("select (verified_at is not null)::text from auth.mfa_challenges where id = '{challenge_id}'")
        ),
        "true"
    );
    // The factor is verified; the other unverified TOTP factor is gone (GoTrue's clean-up).
    let factors = user(&server, &raised.access)["factors"].clone();
    assert_eq!(factors.as_array().map(Vec::len), Some(1), "{factors}");
    assert_eq!(factors[0]["status"], "verified");
    // The user's other aal1 session is over.
    assert_error(&call(&server, "GET", "/user", Some(&other.access), &Value::Null), 403, "session_not_found");

    // The used challenge does not verify again (GoTrue answers it as an address mismatch).
    let again = verify(&server, &raised.access, &factor, &challenge_id, &code(&secret));
    assert_eq!(assert_error(&again, 422, "mfa_ip_address_mismatch"), "Challenge and verify IP addresses mismatch.");

    // The new refresh token refreshes to an aal2 token.
    let refreshed = session(&call(
        &server,
        "POST",
        "/token?grant_type=refresh_token",
        None,
        &json!({"refresh_token": raised.refresh}),
    ));
    assert_eq!(refreshed.claims["aal"], "aal2");
    assert_eq!(methods(&refreshed.claims)[0], "totp");

    // RLS on auth.jwt()->>'aal': nothing at aal1, the row at aal2.
    let vault = |access: &str| {
        let auth = format!("Bearer {access}");
        let response =
            server.request("GET", "/rest/v1/vault?select=id,secret", &[("Authorization", auth.as_str())], b"");
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()
    };
    let aal1 = sign_in(&server, email);
    assert_eq!(aal1.claims["aal"], "aal1");
    assert_eq!(vault(&aal1.access), json!([]));
    assert_eq!(vault(&raised.access), json!([{"id": 1, "secret": "gold"}]));

    // That aal1 session cannot enroll another factor while one is verified (403) …
    let refused =
        call(&server, "POST", "/factors", Some(&aal1.access), &json!({"friendly_name": "x", "factor_type": "totp"}));
    assert_eq!(assert_error(&refused, 403, "insufficient_aal"), "AAL2 required to enroll a new factor");
    // … but it can step up with a new challenge (a code may be used again within its window, as in GoTrue).
    let step_up = challenge(&server, &aal1.access, &factor);
    let stepped = session(&verify(&server, &aal1.access, &factor, &step_up, &code(&secret)));
    assert_eq!(stepped.claims["aal"], "aal2");
    assert_eq!(stepped.claims["session_id"], aal1.claims["session_id"]);
    let enrolled_at_aal2 = enroll(&server, &stepped.access, "backup");
    assert_eq!(enrolled_at_aal2["type"], "totp");
}

#[test]
fn enroll_refusals() {
    let server = TestServer::start();
    let alice = sign_up(&server, "alice@example.com");
    let enroll_with = |body: Value| call(&server, "POST", "/factors", Some(&alice.access), &body);

    // No token, a bad token.
    assert_error(&call(&server, "POST", "/factors", None, &json!({"factor_type": "totp"})), 401, "no_authorization");
    assert_error(
        &call(&server, "POST", "/factors", Some("not.a.jwt"), &json!({"factor_type": "totp"})),
        403,
        "bad_jwt",
    );

    // Factor types.
    let message = assert_error(&enroll_with(json!({"factor_type": "sms"})), 400, "validation_failed");
    assert_eq!(message, "factor_type needs to be totp, phone, or webauthn");
    assert_error(&enroll_with(json!({})), 400, "validation_failed");
    let phone = enroll_with(json!({"factor_type": "phone", "phone": "+15555550100"}));
    assert_eq!(assert_error(&phone, 422, "mfa_phone_enroll_not_enabled"), "MFA enroll is disabled for Phone");
    let webauthn = enroll_with(json!({"factor_type": "webauthn"}));
    assert_eq!(assert_error(&webauthn, 422, "mfa_webauthn_enroll_not_enabled"), "MFA enroll is disabled for WebAuthn");
    assert_error(&enroll_with(json!({"factor_type": 7})), 400, "bad_json");
    let long = "n".repeat(1025);
    assert_error(&enroll_with(json!({"factor_type": "totp", "friendly_name": long})), 400, "validation_failed");

    // The same friendly name twice, GoTrue's message quoting it as Go's %q.
    enroll(&server, &alice.access, "my \"phone\"");
    let conflict = enroll_with(json!({"factor_type": "totp", "friendly_name": "my \"phone\""}));
    assert_eq!(
        assert_error(&conflict, 422, "mfa_factor_name_conflict"),
        "A factor with the friendly name \"my \\\"phone\\\"\" for this user already exists"
    );
    // No name twice is a conflict too (auth-js sends none when none is given).
    enroll(&server, &alice.access, "");
    let unnamed = enroll_with(json!({"factor_type": "totp"}));
    assert_eq!(
        assert_error(&unnamed, 422, "mfa_factor_name_conflict"),
        "A factor with the friendly name \"\" for this user already exists"
    );

    // At most max_enrolled_factors (10) factors: 2 so far, 8 more, then the refusal.
    for i in 0..8 {
        enroll(&server, &alice.access, &format!("f{i}"));
    }
    let eleventh = enroll_with(json!({"factor_type": "totp", "friendly_name": "one too many"}));
    assert_eq!(
        assert_error(&eleventh, 422, "too_many_enrolled_mfa_factors"),
        "Maximum number of verified factors reached, unenroll to continue"
    );

    // GoTrue's clean-up: unverified factors never challenged and older than 300 s go at the
    // next enrollment (anyone's), which then fits.
    server.sql("update auth.mfa_factors set created_at = now() - interval '301 seconds' where friendly_name like 'f%'");
    enroll(&server, &alice.access, "after clean-up");
    let left = scalar(&server, "select count(*) from auth.mfa_factors");
    assert_eq!(left, "3", "the two named first and the new one");

    // A phone-only user's account name is the phone number.
    let bob_id = scalar(
        &server,
        "insert into auth.users (instance_id, id, aud, role, phone, phone_confirmed_at, created_at, updated_at)
         values ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'authenticated', 'authenticated',
                 '15555550100', now(), now(), now()) returning id",
    );
    let bob_session = "0f8fad5b-d9cb-469f-a165-70867728950e";
    server.sql(&format!(
        "insert into auth.sessions (id, user_id, created_at, updated_at, aal) values ('{bob_session}', '{bob_id}', now(), now(), 'aal1')"
    ));
    let bob = token(json!({"sub": bob_id, "role": "authenticated", "aud": "authenticated", "session_id": bob_session,
                            "aal": "aal1", "exp": now() + 600}));
    let phone_user = enroll(&server, &bob, "bob");
    assert!(phone_user["totp"]["uri"].as_str().expect("uri").starts_with("otpauth://totp/127.0.0.1:3000:15555550100?"));

    // Anonymous users may not use /factors (checked after the session, as GoTrue's middleware).
    let anonymous =
        token(json!({"sub": bob_id, "role": "authenticated", "aud": "authenticated", "session_id": bob_session,
                                 "is_anonymous": true, "exp": now() + 600}));
    let refused = call(&server, "POST", "/factors", Some(&anonymous), &json!({"factor_type": "totp"}));
    assert_eq!(assert_error(&refused, 403, "no_authorization"), "Anonymous user not allowed to perform these actions");
    let factor = phone_user["id"].as_str().expect("id");
    let refused = call(&server, "POST", &format!("/factors/{factor}/challenge"), Some(&anonymous), &json!({}));
    assert_error(&refused, 403, "no_authorization");

    // A signed-out session is refused as such before anything else.
    server.sql(&format!("delete from auth.sessions where id = '{bob_session}'"));
    assert_error(
        &call(&server, "POST", "/factors", Some(&bob), &json!({"factor_type": "sms"})),
        403,
        "session_not_found",
    );
    assert_error(
        &call(&server, "POST", "/factors/not-a-uuid/challenge", Some(&bob), &json!({})),
        403,
        "session_not_found",
    );
}

#[test]
fn challenge_and_verify_refusals() {
    let server = TestServer::start();
    let alice = sign_up(&server, "alice@example.com");
    let bob = sign_up(&server, "bob@example.com");
    let enrolled = enroll(&server, &alice.access, "");
    let factor = enrolled["id"].as_str().expect("id").to_owned();
    let secret = enrolled["totp"]["secret"].as_str().expect("secret").to_owned();
    let unknown = "0f8fad5b-d9cb-469f-a165-70867728950e";

    // Factor ids: malformed → 404 validation_failed; unknown or another user's → 404 mfa_factor_not_found.
    let malformed = call(&server, "POST", "/factors/f1/challenge", Some(&alice.access), &json!({}));
    assert_eq!(assert_error(&malformed, 404, "validation_failed"), "factor_id must be an UUID");
    for (path, method) in [("challenge", "POST"), ("verify", "POST"), ("", "DELETE")] {
        let path = format!("/factors/{unknown}/{path}");
        let body = json!({"challenge_id": unknown, "code": "123456"});
        assert_eq!(
            assert_error(&call(&server, method, &path, Some(&alice.access), &body), 404, "mfa_factor_not_found"),
            "Factor not found"
        );
    }
    let theirs = call(&server, "POST", &format!("/factors/{factor}/challenge"), Some(&bob.access), &json!({}));
    assert_error(&theirs, 404, "mfa_factor_not_found");

    // Verify's body: the code must be there; challenge_id must read as a UUID.
    let path = format!("/factors/{factor}/verify");
    let empty = call(&server, "POST", &path, Some(&alice.access), &json!({"challenge_id": unknown}));
    assert_eq!(assert_error(&empty, 400, "validation_failed"), "Code needs to be non-empty");
    let bad_id = call(&server, "POST", &path, Some(&alice.access), &json!({"challenge_id": "c1", "code": "123456"}));
    assert_error(&bad_id, 400, "bad_json");
    // An unknown challenge.
    let missing = verify(&server, &alice.access, &factor, unknown, "123456");
    assert_eq!(
        assert_error(&missing, 422, "mfa_factor_not_found"),
        "MFA factor with the provided challenge ID not found"
    );

    // An expired challenge is refused, with GoTrue's message, and deleted.
    let expired = challenge(&server, &alice.access, &factor);
    server.sql(&format!(
        "update auth.mfa_challenges set created_at = now() - interval '301 seconds' where id = '{expired}'"
    ));
    let response = verify(&server, &alice.access, &factor, &expired, &code(&secret));
    assert_eq!(
        assert_error(&response, 422, "mfa_challenge_expired"),
        format!("MFA challenge {expired} has expired, verify against another challenge or create a new challenge.")
    );
    assert_eq!(scalar(&server, &format!("select count(*) from auth.mfa_challenges where id = '{expired}'")), "0");

    // A challenge made from another address.
    let moved = challenge(&server, &alice.access, &factor);
    server.sql(&format!("update auth.mfa_challenges set ip_address = '10.1.2.3' where id = '{moved}'"));
    let response = verify(&server, &alice.access, &factor, &moved, &code(&secret));
    assert_eq!(assert_error(&response, 422, "mfa_ip_address_mismatch"), "Challenge and verify IP addresses mismatch.");
    // Nothing of this raised the session.
    assert_eq!(user(&server, &alice.access)["factors"][0]["status"], "unverified");
    let session_id = alice.claims["session_id"].as_str().expect("session_id");
    assert_eq!(scalar(&server, &format!("select aal::text from auth.sessions where id = '{session_id}'")), "aal1");

    // The rate limit: 15 a minute per address, then 429.
    // (10 of them so far, and one refills every 4 s.)
    let mut limited = None;
    for _ in 0..20 {
        let response = call(&server, "POST", &format!("/factors/{factor}/challenge"), Some(&alice.access), &json!({}));
        if response.status != 200 {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("the 16th request is limited");
    assert_eq!(assert_error(&limited, 429, "over_request_rate_limit"), "Request rate limit reached");
}

#[test]
fn verification_switches_off() {
    // Both keys of [auth.mfa.totp] are set: a table given in part takes FactorType's defaults
    // (off) for the rest.
    let server = TestServer::start_with(&[
        ("MADBASE_AUTH_MFA_TOTP_ENROLL_ENABLED", "true"),
        ("MADBASE_AUTH_MFA_TOTP_VERIFY_ENABLED", "false"),
        ("MADBASE_AUTH_MFA_MAX_ENROLLED_FACTORS", "1"),
    ]);
    let alice = sign_up(&server, "alice@example.com");
    let factor = enroll(&server, &alice.access, "one")["id"].as_str().expect("id").to_owned();
    let second =
        call(&server, "POST", "/factors", Some(&alice.access), &json!({"friendly_name": "two", "factor_type": "totp"}));
    assert_error(&second, 422, "too_many_enrolled_mfa_factors");
    let refused = call(&server, "POST", &format!("/factors/{factor}/challenge"), Some(&alice.access), &json!({}));
    assert_eq!(assert_error(&refused, 422, "mfa_totp_verify_not_enabled"), "MFA verification is disabled for TOTP");
    let refused = verify(&server, &alice.access, &factor, "0f8fad5b-d9cb-469f-a165-70867728950e", "123456");
    assert_error(&refused, 422, "mfa_totp_verify_not_enabled");
    drop(server);

    let server = TestServer::start_with(&[
        ("MADBASE_AUTH_MFA_TOTP_ENROLL_ENABLED", "false"),
        ("MADBASE_AUTH_MFA_TOTP_VERIFY_ENABLED", "true"),
    ]);
    let alice = sign_up(&server, "alice@example.com");
    let refused = call(&server, "POST", "/factors", Some(&alice.access), &json!({"factor_type": "totp"}));
    assert_eq!(assert_error(&refused, 422, "mfa_totp_enroll_not_enabled"), "MFA enroll is disabled for TOTP");
}

#[test]
fn unenroll_rules_and_downgrade() {
    let server = TestServer::start();
    let email = "alice@example.com";
    let alice = sign_up(&server, email);
    let enrolled = enroll(&server, &alice.access, "app");
    let factor = enrolled["id"].as_str().expect("id").to_owned();
    let secret = enrolled["totp"]["secret"].as_str().expect("secret").to_owned();

    // An unverified factor goes at aal1.
    let spare = enroll(&server, &alice.access, "spare")["id"].as_str().expect("id").to_owned();
    let response = call(&server, "DELETE", &format!("/factors/{spare}"), Some(&alice.access), &json!({}));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), json!({"id": spare}));

    // Two verifications of one challenge at once: exactly one succeeds.
    let challenge_id = challenge(&server, &alice.access, &factor);
    let code_now = code(&secret);
    let (a, b) = std::thread::scope(|scope| {
        let first = scope.spawn(|| verify(&server, &alice.access, &factor, &challenge_id, &code_now));
        let second = scope.spawn(|| verify(&server, &alice.access, &factor, &challenge_id, &code_now));
        (first.join().expect("first"), second.join().expect("second"))
    });
    let (won, lost) = if a.status == 200 { (a, b) } else { (b, a) };
    assert_error(&lost, 422, "mfa_ip_address_mismatch");
    let raised = session(&won);
    assert_eq!(raised.claims["aal"], "aal2");

    // A verified factor needs an aal2 session to go.
    let aal1 = sign_in(&server, email);
    let refused = call(&server, "DELETE", &format!("/factors/{factor}"), Some(&aal1.access), &json!({}));
    assert_eq!(assert_error(&refused, 422, "insufficient_aal"), "AAL2 required to unenroll verified factor");

    let response = call(&server, "DELETE", &format!("/factors/{factor}"), Some(&raised.access), &json!({}));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), json!({"id": factor}));
    assert!(user(&server, &raised.access).get("factors").is_none());

    // The session it raised is back at aal1 without the `totp` method; its next token says so.
    let session_id = raised.claims["session_id"].as_str().expect("session_id");
    assert_eq!(
        scalar(&server, &format!("select aal::text || ' ' || coalesce(factor_id::text, '-') from auth.sessions where id = '{session_id}'")),
        "aal1 -"
    );
    let refreshed = session(&call(
        &server,
        "POST",
        "/token?grant_type=refresh_token",
        None,
        &json!({"refresh_token": raised.refresh}),
    ));
    assert_eq!(refreshed.claims["aal"], "aal1");
    assert_eq!(methods(&refreshed.claims), ["password"]);

    // Gone is gone.
    let again = call(&server, "DELETE", &format!("/factors/{factor}"), Some(&refreshed.access), &json!({}));
    assert_error(&again, 404, "mfa_factor_not_found");
}

#[test]
fn verification_attempt_hook() {
    let server = TestServer::start_with(&[
        ("MADBASE_AUTH_HOOK_MFA_VERIFICATION_ATTEMPT_ENABLED", "true"),
        ("MADBASE_AUTH_HOOK_MFA_VERIFICATION_ATTEMPT_URI", "pg-functions://postgres/public/mfa_attempt"),
    ]);
    // Rejects failures; records every attempt it hears of.
    server.sql(
        "create table public.attempts (event jsonb);
         grant insert on public.attempts to supabase_auth_admin;
         create function public.mfa_attempt(event jsonb) returns jsonb language plpgsql as $$
         begin
           insert into public.attempts values (event);
           if (event->>'valid')::boolean then
             return '{\"decision\": \"continue\"}';
           end if;
           return '{\"decision\": \"reject\", \"message\": \"Too many tries.\"}';
         end $$;
         grant execute on function public.mfa_attempt(jsonb) to supabase_auth_admin;",
    );
    let email = "alice@example.com";
    let alice = sign_up(&server, email);
    let enrolled = enroll(&server, &alice.access, "app");
    let factor = enrolled["id"].as_str().expect("id").to_owned();
    let secret = enrolled["totp"]["secret"].as_str().expect("secret").to_owned();

    // A right code: the hook says continue.
    let challenge_id = challenge(&server, &alice.access, &factor);
    let raised = session(&verify(&server, &alice.access, &factor, &challenge_id, &code(&secret)));
    assert_eq!(raised.claims["aal"], "aal2");
    let event: Value =
        serde_json::from_str(&scalar(&server, "select event::text from public.attempts")).expect("event JSON");
    assert_eq!(event["valid"], true);
    assert_eq!(event["factor_id"], factor.as_str());
    assert_eq!(event["factor_type"], "totp");
    assert_eq!(event["user_id"], alice.claims["sub"]);
    assert_eq!(event["metadata"]["name"], "mfa-verification");

    // A wrong code: the hook rejects, the user is signed out everywhere.
    let challenge_id = challenge(&server, &raised.access, &factor);
    let rejected = verify(&server, &raised.access, &factor, &challenge_id, &wrong_code(&secret));
    assert_eq!(assert_error(&rejected, 403, "mfa_verification_rejected"), "Too many tries.");
    assert_eq!(scalar(&server, "select count(*) from public.attempts where (event->>'valid')::boolean = false"), "1");
    let user_id = alice.claims["sub"].as_str().expect("sub");
    assert_eq!(scalar(&server, &format!("select count(*) from auth.sessions where user_id = '{user_id}'")), "0");
    assert_error(&call(&server, "GET", "/user", Some(&raised.access), &Value::Null), 403, "session_not_found");

    // A right code the hook rejects: signed out, and nothing of the verification stays.
    server.sql(
        "create or replace function public.mfa_attempt(event jsonb) returns jsonb language sql as
         $$ select '{\"decision\": \"reject\"}'::jsonb $$;",
    );
    let again = sign_in(&server, email);
    let challenge_id = challenge(&server, &again.access, &factor);
    let rejected = verify(&server, &again.access, &factor, &challenge_id, &code(&secret));
    assert_eq!(
        assert_error(&rejected, 403, "mfa_verification_rejected"),
        "Further MFA verification attempts will be rejected."
    );
    assert_eq!(scalar(&server, &format!("select count(*) from auth.sessions where user_id = '{user_id}'")), "0");
    assert_eq!(
        scalar(
            &server,
            &format!("select (verified_at is null)::text from auth.mfa_challenges where id = '{challenge_id}'")
        ),
        "true"
    );
}
