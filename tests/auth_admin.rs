//! `/auth/v1/admin/…` and `/auth/v1/invite` end to end (reference/auth.md §3.2): the admin gate,
//! paging headers, create/get/update/delete, bans, soft and hard deletes, a user's factors, and
//! the audit log, against a real PostgreSQL and the real binary.

mod support;

use serde_json::{json, Value};
use support::{bearer, service_role, HttpResponse, TestServer};

const PASSWORD: &str = "correct-horse-battery";
const VERSION: (&str, &str) = ("x-supabase-api-version", "2024-01-01");

fn anon() -> String {
    bearer(json!({"iss": "supabase-demo", "role": "anon", "exp": 1983812996}))
}

/// A request to `/auth/v1<path>` with `authorization` (none when `None`), the new error shape and,
/// with a body, JSON.
fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<Value>,
) -> HttpResponse {
    let path = format!("/auth/v1{path}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut headers = vec![VERSION, ("content-type", "application/json")];
    if let Some(authorization) = authorization {
        headers.push(("authorization", authorization));
    }
    let response = server.request(method, &path, &headers, body.as_bytes());
    if response.status >= 500 {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let log = server.log();
        eprintln!("{method} {path}: {}\n{}", response.text(), &log[log.len().saturating_sub(3000)..]);
    }
    response
}

fn admin(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> HttpResponse {
    call(server, method, path, Some(&service_role()), body)
}

/// Asserts a GoTrue error (new shape) and returns nothing.
#[track_caller]
fn assert_error(response: &HttpResponse, status: u16, code: &str, message: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.json(), json!({"code": code, "message": message}), "{}", response.text());
    assert_eq!(response.header("x-sb-error-code"), Some(code));
}

#[track_caller]
fn create(server: &TestServer, body: Value) -> Value {
    let r = admin(server, "POST", "/admin/users", Some(body));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn sign_in(server: &TestServer, email: &str, password: &str) -> HttpResponse {
    call(
        server,
        "POST",
        "/token?grant_type=password",
        Some(&anon()),
        Some(json!({"email": email, "password": password, "gotrue_meta_security": {}})),
    )
}

fn scalar(server: &TestServer, sql: &str) -> String {
    let results = server.sql(sql);
    let result = results.last().expect("a result");
    result.rows.first().and_then(|row| row.get_str(0)).unwrap_or_default().to_owned()
}

fn ids(list: &Value) -> Vec<String> {
    list["users"].as_array().expect("users").iter().map(|u| u["id"].as_str().unwrap_or_default().to_owned()).collect()
}

#[test]
fn the_admin_gate_and_path_errors() {
    let server = TestServer::start();
    let user_path = "/admin/users/0f8fad5b-d9cb-469f-a165-70867728950e";
    for (method, path) in [
        ("GET", "/admin/users"),
        ("POST", "/admin/users"),
        ("GET", user_path),
        ("DELETE", user_path),
        ("GET", "/admin/audit"),
        ("POST", "/invite"),
        ("POST", "/admin/generate_link"),
        ("GET", "/admin/nothing-here"),
    ] {
        let missing = call(&server, method, path, None, Some(json!({})));
        assert_error(&missing, 401, "no_authorization", "This endpoint requires a valid Bearer token");
        let user_token = bearer(json!({"sub": support::ALICE, "role": "authenticated", "exp": 1983812996}));
        for key in [anon(), user_token] {
            let refused = call(&server, method, path, Some(&key), Some(json!({})));
            assert_error(&refused, 403, "not_admin", "User not allowed");
        }
    }

    // The auth-js suite's admin token: role supabase_admin, a `sub` that is not a UUID.
    let suite_admin = bearer(json!({"sub": "1234567890", "role": "supabase_admin"}));
    let listed = call(&server, "GET", "/admin/users", Some(&suite_admin), None);
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json(), json!({"users": [], "aud": "authenticated"}));

    assert_error(
        &admin(&server, "GET", "/admin/users/not-a-uuid", None),
        404,
        "validation_failed",
        "user_id must be an UUID",
    );
    assert_error(
        &admin(&server, "DELETE", &format!("{user_path}/factors/nope"), None),
        404,
        "validation_failed",
        "factor_id must be an UUID",
    );
    for (method, body) in [("GET", None), ("PUT", Some(json!({"role": "x"}))), ("DELETE", Some(json!({})))] {
        assert_error(&admin(&server, method, user_path, body), 404, "user_not_found", "User not found");
    }
    assert_error(
        &admin(&server, "GET", &format!("{user_path}/factors"), None),
        404,
        "user_not_found",
        "User not found",
    );
    assert_eq!(admin(&server, "GET", "/admin/nothing-here", None).status, 404);
    assert_eq!(admin(&server, "GET", &format!("{user_path}/elsewhere"), None).status, 404);
    assert_eq!(admin(&server, "PATCH", "/admin/users", Some(json!({}))).status, 405);

    // Without X-Supabase-Api-Version: the legacy shape.
    let legacy = server.request("GET", &format!("/auth/v1{user_path}"), &[("authorization", &service_role())], b"");
    assert_eq!(legacy.status, 404);
    assert_eq!(legacy.json(), json!({"code": 404, "error_code": "user_not_found", "msg": "User not found"}));

    assert_error(
        &admin(&server, "GET", "/admin/users?page=-1", None),
        400,
        "validation_failed",
        "Bad Pagination Parameters: strconv.ParseUint: parsing \"-1\": invalid syntax",
    );
    assert_error(
        &admin(&server, "GET", "/admin/users?sort=email", None),
        400,
        "validation_failed",
        "Bad Sort Parameters: bad field for sort 'email'",
    );
    let bad_json = call(&server, "POST", "/admin/users", Some(&service_role()), None);
    assert_eq!(bad_json.status, 400, "an empty body is {{}}: no email or phone");
    let broken = server.request(
        "POST",
        "/auth/v1/admin/users",
        &[VERSION, ("authorization", &service_role()), ("content-type", "application/json")],
        b"{\"email\":",
    );
    assert_eq!(broken.status, 400);
    assert_eq!(broken.json()["code"], "bad_json");
}

#[test]
fn listing_pages_newest_first_with_gotrue_headers() {
    let server = TestServer::start();

    // No users: a total of 0, no next page, the last page 0 (auth-js sends both parameters empty).
    let empty = admin(&server, "GET", "/admin/users?page=&per_page=", None);
    assert_eq!(empty.status, 200, "{}", empty.text());
    assert_eq!(empty.header("x-total-count"), Some("0"));
    assert_eq!(empty.header("link"), Some("</admin/users?page=0&per_page=>; rel=\"last\""));
    assert_eq!(empty.json(), json!({"users": [], "aud": "authenticated"}));
    let bare = admin(&server, "GET", "/admin/users", None);
    assert_eq!(bare.header("link"), Some("</admin/users?page=0>; rel=\"last\""));

    let mut made = Vec::new();
    for i in 0..5 {
        let user = create(
            &server,
            json!({"email": format!("list{i}@example.com"), "password": PASSWORD, "user_metadata": {"full_name": format!("Person {i}")}}),
        );
        made.push(user["id"].as_str().expect("id").to_owned());
        if i == 0 {
            // One user, one page.
            let one = admin(&server, "GET", "/admin/users?page=1&per_page=2", None);
            assert_eq!(one.header("x-total-count"), Some("1"));
            assert_eq!(one.header("link"), Some("</admin/users?page=1&per_page=2>; rel=\"last\""));
            assert_eq!(ids(&one.json()), vec![made[0].clone()]);
        }
    }

    let page1 = admin(&server, "GET", "/admin/users?page=1&per_page=2", None);
    assert_eq!(page1.header("x-total-count"), Some("5"));
    assert_eq!(
        page1.header("link"),
        Some("</admin/users?page=2&per_page=2>; rel=\"next\", </admin/users?page=3&per_page=2>; rel=\"last\"")
    );
    assert_eq!(ids(&page1.json()), vec![made[4].clone(), made[3].clone()]);
    assert_eq!(page1.json()["aud"], "authenticated");
    assert_eq!(page1.json()["users"][0]["email"], "list4@example.com");

    let page2 = admin(&server, "GET", "/admin/users?per_page=2&page=2", None);
    assert_eq!(
        page2.header("link"),
        Some("</admin/users?page=3&per_page=2>; rel=\"next\", </admin/users?page=3&per_page=2>; rel=\"last\"")
    );
    assert_eq!(ids(&page2.json()), vec![made[2].clone(), made[1].clone()]);

    let page3 = admin(&server, "GET", "/admin/users?page=3&per_page=2", None);
    assert_eq!(page3.header("link"), Some("</admin/users?page=3&per_page=2>; rel=\"last\""));
    assert_eq!(ids(&page3.json()), vec![made[0].clone()]);

    let beyond = admin(&server, "GET", "/admin/users?page=9&per_page=2", None);
    assert_eq!(ids(&beyond.json()), Vec::<String>::new());
    assert_eq!(beyond.header("x-total-count"), Some("5"));

    let all = admin(&server, "GET", "/admin/users", None);
    assert_eq!(ids(&all.json()).len(), 5);
    assert_eq!(all.header("link"), Some("</admin/users?page=1>; rel=\"last\""));

    let oldest_first = admin(&server, "GET", "/admin/users?sort=created_at%20asc&per_page=2", None);
    assert_eq!(ids(&oldest_first.json()), vec![made[0].clone(), made[1].clone()]);
    assert_eq!(
        oldest_first.header("link"),
        Some(
            "</admin/users?page=2&per_page=2&sort=created_at+asc>; rel=\"next\", \
             </admin/users?page=3&per_page=2&sort=created_at+asc>; rel=\"last\""
        )
    );

    // `filter`: the email (LIKE) or user_metadata.full_name (ILIKE).
    let by_email = admin(&server, "GET", "/admin/users?filter=list3", None);
    assert_eq!(ids(&by_email.json()), vec![made[3].clone()]);
    assert_eq!(by_email.header("x-total-count"), Some("1"));
    let by_name = admin(&server, "GET", "/admin/users?filter=PERSON%202", None);
    assert_eq!(ids(&by_name.json()), vec![made[2].clone()]);

    // Another audience has none of them.
    let other = server.request(
        "GET",
        "/auth/v1/admin/users",
        &[VERSION, ("authorization", &service_role()), ("x-jwt-aud", "elsewhere")],
        b"",
    );
    assert_eq!(other.json(), json!({"users": [], "aud": "elsewhere"}));

    // The audit log: five sign-ups by the admin, newest first, paged the same way.
    let audit = admin(&server, "GET", "/admin/audit?page=1&per_page=2&query=action:user_signedup", None);
    assert_eq!(audit.status, 200, "{}", audit.text());
    assert_eq!(audit.header("x-total-count"), Some("5"));
    let rows = audit.json();
    assert_eq!(rows.as_array().map(Vec::len), Some(2));
    assert_eq!(rows[0]["payload"]["action"], "user_signedup");
    assert_eq!(rows[0]["payload"]["actor_username"], "service_role");
    assert_eq!(rows[0]["payload"]["actor_id"], "00000000-0000-0000-0000-000000000000");
    assert_eq!(rows[0]["payload"]["log_type"], "team");
    assert_eq!(rows[0]["payload"]["traits"]["user_email"], "list4@example.com");
    assert_eq!(rows[0]["payload"]["traits"]["provider"], "email");
    assert!(rows[0]["id"].is_string() && rows[0]["created_at"].is_string() && rows[0]["ip_address"].is_string());
    assert_error(
        &admin(&server, "GET", "/admin/audit?query=nope", None),
        400,
        "validation_failed",
        "Invalid query scope: nope",
    );
}

#[test]
fn create_get_update_and_bans() {
    let server = TestServer::start();

    let user = create(
        &server,
        json!({
            "email": "Ann@Example.com", "password": PASSWORD, "email_confirm": true,
            "user_metadata": {"name": "Ann"}, "app_metadata": {"plan": "pro"},
        }),
    );
    let id = user["id"].as_str().expect("id").to_owned();
    assert_eq!(user["email"], "ann@example.com");
    assert_eq!(user["aud"], "authenticated");
    assert_eq!(user["role"], "authenticated");
    assert_eq!(user["phone"], "");
    assert!(user["email_confirmed_at"].is_string() && user["confirmed_at"].is_string());
    assert_eq!(user["app_metadata"], json!({"provider": "email", "providers": ["email"], "plan": "pro"}));
    assert_eq!(user["user_metadata"], json!({"name": "Ann", "email_verified": true}));
    assert_eq!(user["is_anonymous"], false);
    let identities = user["identities"].as_array().expect("identities");
    assert_eq!(identities.len(), 1);
    assert_eq!(identities[0]["provider"], "email");
    assert_eq!(identities[0]["id"], id.as_str());
    assert_eq!(
        identities[0]["identity_data"],
        json!({"sub": id, "email": "ann@example.com", "email_verified": false, "phone_verified": false})
    );
    let session = sign_in(&server, "ann@example.com", PASSWORD);
    assert_eq!(session.status, 200, "{}", session.text());
    let refresh_token = session.json()["refresh_token"].as_str().expect("refresh token").to_owned();

    let got = admin(&server, "GET", &format!("/admin/users/{id}"), None);
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["id"], id.as_str());
    assert_eq!(got.json()["email"], "ann@example.com");

    // Duplicates: the address in any case; a phone number in any spelling.
    let dup = admin(&server, "POST", "/admin/users", Some(json!({"email": "ANN@example.com"})));
    assert_error(&dup, 422, "email_exists", "A user with this email address has already been registered");
    let phone_user = create(&server, json!({"phone": "+1 555 0100", "phone_confirm": true}));
    assert_eq!(phone_user["phone"], "15550100");
    assert!(phone_user["phone_confirmed_at"].is_string());
    assert_eq!(phone_user["email"], "");
    assert_eq!(phone_user["app_metadata"], json!({"provider": "phone", "providers": ["phone"]}));
    assert_eq!(phone_user["identities"][0]["provider"], "phone");
    let dup_phone = admin(&server, "POST", "/admin/users", Some(json!({"phone": "15550100"})));
    assert_error(&dup_phone, 422, "phone_exists", "Phone number already registered by another user");

    // Both addresses: two identities, email first.
    let both = create(&server, json!({"email": "both@example.com", "phone": "15550101"}));
    assert_eq!(both["app_metadata"], json!({"provider": "email", "providers": ["email", "phone"]}));
    assert_eq!(both["identities"].as_array().map(Vec::len), Some(2));
    assert!(both.get("email_confirmed_at").is_none(), "not confirmed without email_confirm");

    // Validation, in GoTrue's words.
    let cases = [
        (
            json!({"password": PASSWORD}),
            400,
            "validation_failed",
            "Cannot create a user without either an email or phone",
        ),
        (json!({"email": "nope"}), 400, "validation_failed", "Unable to validate email address: invalid format"),
        (json!({"phone": "12ab"}), 400, "validation_failed", "Invalid phone number format (E.164 required)"),
        (
            json!({"email": "x1@example.com", "password": "p", "password_hash": "h"}),
            400,
            "validation_failed",
            "Only a password or a password hash should be provided",
        ),
        (
            json!({"email": "x2@example.com", "password": "x".repeat(73)}),
            400,
            "validation_failed",
            "bcrypt: password length exceeds 72 bytes",
        ),
        (
            json!({"email": "x3@example.com", "id": "123"}),
            400,
            "validation_failed",
            "ID must conform to the uuid v4 format",
        ),
        (
            json!({"email": "x4@example.com", "id": "00000000-0000-0000-0000-000000000000"}),
            400,
            "validation_failed",
            "ID cannot be a nil uuid",
        ),
        (
            json!({"email": "x5@example.com", "ban_duration": "1d"}),
            400,
            "validation_failed",
            "invalid format for ban duration: time: unknown unit \"d\" in duration \"1d\"",
        ),
        (
            json!({"email": "x6@example.com", "password_hash": "not-a-hash"}),
            500,
            "unexpected_failure",
            "Error creating user",
        ),
    ];
    for (body, status, code, message) in cases {
        assert_error(&admin(&server, "POST", "/admin/users", Some(body)), status, code, message);
    }
    assert_eq!(scalar(&server, "select count(*) from auth.users where email like 'x_@example.com'"), "0");

    // GoTrue checks no password policy on create; a chosen id and a banned start are kept.
    let chosen = "5b7c9a0e-1111-4222-8333-444455556666";
    let short = create(
        &server,
        json!({"email": "short@example.com", "password": "123", "email_confirm": true, "id": chosen, "ban_duration": "1h", "role": "staff"}),
    );
    assert_eq!(short["id"], chosen);
    assert_eq!(short["role"], "staff");
    assert!(short["banned_until"].is_string());
    assert_error(&sign_in(&server, "short@example.com", "123"), 400, "user_banned", "User is banned");

    // An imported bcrypt hash signs in with its password.
    let hash = scalar(&server, &format!("select encrypted_password from auth.users where id = '{id}'"));
    let imported =
        create(&server, json!({"email": "imported@example.com", "password_hash": hash, "email_confirm": true}));
    assert_eq!(
        scalar(
            &server,
            &format!(
                "select encrypted_password from auth.users where id = '{}'",
                imported["id"].as_str().unwrap_or_default()
            )
        ),
        hash
    );
    assert_eq!(sign_in(&server, "imported@example.com", PASSWORD).status, 200);
    // Without a password: a random one, so no password signs in.
    create(&server, json!({"email": "nopass@example.com", "email_confirm": true}));
    assert_error(
        &sign_in(&server, "nopass@example.com", PASSWORD),
        400,
        "invalid_credentials",
        "Invalid login credentials",
    );

    // Updates: metadata merges (null deletes), role, email with confirmation, a phone identity.
    let updated = admin(
        &server,
        "PUT",
        &format!("/admin/users/{id}"),
        Some(json!({
            "user_metadata": {"name": null, "age": 3}, "app_metadata": {"plan": "team", "flag": true},
            "role": "editor", "email": "ann2@example.com", "email_confirm": true, "phone": "15550199",
        })),
    );
    assert_eq!(updated.status, 200, "{}", updated.text());
    let updated = updated.json();
    assert_eq!(updated["user_metadata"], json!({"email_verified": true, "age": 3}));
    assert_eq!(
        updated["app_metadata"],
        json!({"provider": "email", "providers": ["email"], "plan": "team", "flag": true})
    );
    assert_eq!(updated["role"], "editor");
    assert_eq!(updated["email"], "ann2@example.com");
    assert_eq!(updated["phone"], "15550199");
    let identities = updated["identities"].as_array().expect("identities");
    assert_eq!(identities.len(), 2);
    let email_identity = identities.iter().find(|i| i["provider"] == "email").expect("email identity");
    assert_eq!(email_identity["identity_data"]["email"], "ann2@example.com");
    assert_eq!(email_identity["identity_data"]["email_verified"], true);
    let phone_identity = identities.iter().find(|i| i["provider"] == "phone").expect("phone identity");
    assert_eq!(phone_identity["identity_data"]["phone"], "15550199");
    assert_eq!(phone_identity["identity_data"]["phone_verified"], false);
    assert_error(
        &admin(&server, "PUT", &format!("/admin/users/{id}"), Some(json!({"email": "both@example.com"}))),
        422,
        "email_exists",
        "A user with this email address has already been registered",
    );
    let weak = admin(&server, "PUT", &format!("/admin/users/{id}"), Some(json!({"password": "123"})));
    assert_eq!(weak.status, 422);
    assert_eq!(
        weak.json(),
        json!({"code": "weak_password", "message": "Password should be at least 6 characters.", "weak_password": {"reasons": ["length"]}})
    );

    // A new password signs every session out.
    let changed = admin(&server, "PUT", &format!("/admin/users/{id}"), Some(json!({"password": "another-password"})));
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert_eq!(scalar(&server, &format!("select count(*) from auth.sessions where user_id = '{id}'")), "0");
    let refresh = call(
        &server,
        "POST",
        "/token?grant_type=refresh_token",
        Some(&anon()),
        Some(json!({"refresh_token": refresh_token})),
    );
    assert_eq!(refresh.status, 400, "{}", refresh.text());
    assert_eq!(sign_in(&server, "ann2@example.com", PASSWORD).status, 400);
    let session = sign_in(&server, "ann2@example.com", "another-password");
    assert_eq!(session.status, 200, "{}", session.text());
    let refresh_token = session.json()["refresh_token"].as_str().expect("refresh token").to_owned();

    // Bans: 24 h; sign-in and refresh refused; "none" lifts it.
    let banned = admin(&server, "PUT", &format!("/admin/users/{id}"), Some(json!({"ban_duration": "24h"})));
    assert_eq!(banned.status, 200, "{}", banned.text());
    assert!(banned.json()["banned_until"].is_string());
    let hours = scalar(
        &server,
        &format!("select round(extract(epoch from banned_until - now()) / 3600) from auth.users where id = '{id}'"),
    );
    assert_eq!(hours, "24");
    assert_error(&sign_in(&server, "ann2@example.com", "another-password"), 400, "user_banned", "User is banned");
    let refused = call(
        &server,
        "POST",
        "/token?grant_type=refresh_token",
        Some(&anon()),
        Some(json!({"refresh_token": refresh_token})),
    );
    assert_error(&refused, 400, "user_banned", "Invalid Refresh Token: User Banned");
    assert_error(
        &admin(&server, "PUT", &format!("/admin/users/{id}"), Some(json!({"ban_duration": "forever"}))),
        400,
        "validation_failed",
        "invalid format for ban duration: time: invalid duration \"forever\"",
    );
    let lifted = admin(&server, "PUT", &format!("/admin/users/{id}"), Some(json!({"ban_duration": "none"})));
    assert_eq!(lifted.status, 200);
    assert!(lifted.json().get("banned_until").is_none());
    assert_eq!(sign_in(&server, "ann2@example.com", "another-password").status, 200);

    // Each change is audited as the admin's.
    assert_eq!(
        scalar(
            &server,
            &format!(
                "select count(*) from auth.audit_log_entries where payload->>'action' = 'user_modified' \
                 and payload->'traits'->>'user_id' = '{id}' and payload->>'actor_username' = 'service_role'"
            )
        ),
        "4"
    );
}

#[test]
fn deletes_and_factors() {
    let server = TestServer::start();

    // Hard delete: the user and everything of it are gone; a second delete is 404.
    let hard = create(&server, json!({"email": "hard@example.com", "password": PASSWORD, "email_confirm": true}));
    let hard_id = hard["id"].as_str().expect("id").to_owned();
    assert_eq!(sign_in(&server, "hard@example.com", PASSWORD).status, 200);
    let deleted =
        admin(&server, "DELETE", &format!("/admin/users/{hard_id}"), Some(json!({"should_soft_delete": false})));
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.json(), json!({}));
    assert_eq!(admin(&server, "GET", &format!("/admin/users/{hard_id}"), None).status, 404);
    for table in ["users", "identities", "sessions"] {
        let column = if table == "users" { "id" } else { "user_id" };
        assert_eq!(scalar(&server, &format!("select count(*) from auth.{table} where {column} = '{hard_id}'")), "0");
    }
    assert_error(
        &sign_in(&server, "hard@example.com", PASSWORD),
        400,
        "invalid_credentials",
        "Invalid login credentials",
    );
    assert_error(
        &admin(&server, "DELETE", &format!("/admin/users/{hard_id}"), None),
        404,
        "user_not_found",
        "User not found",
    );

    // No body: a hard delete.
    let quiet = create(&server, json!({"email": "quiet@example.com"}));
    let quiet_id = quiet["id"].as_str().expect("id");
    let r = server.request(
        "DELETE",
        &format!("/auth/v1/admin/users/{quiet_id}"),
        &[VERSION, ("authorization", &service_role())],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(scalar(&server, &format!("select count(*) from auth.users where id = '{quiet_id}'")), "0");

    // Soft delete: the row stays, obfuscated, with deleted_at; sessions and factors go.
    let soft = create(
        &server,
        json!({"email": "soft@example.com", "phone": "15550123", "password": PASSWORD, "email_confirm": true, "user_metadata": {"a": 1}}),
    );
    let soft_id = soft["id"].as_str().expect("id").to_owned();
    assert_eq!(sign_in(&server, "soft@example.com", PASSWORD).status, 200);
    server.sql(&format!(
        "insert into auth.mfa_factors (id, user_id, friendly_name, factor_type, status, created_at, updated_at, secret) \
         values (gen_random_uuid(), '{soft_id}', 'f', 'totp', 'verified', now(), now(), 'S')"
    ));
    let r = admin(&server, "DELETE", &format!("/admin/users/{soft_id}"), Some(json!({"should_soft_delete": true})));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({}));
    let row = server.sql(&format!(
        "select email, phone, encrypted_password is null, raw_user_meta_data::text, raw_app_meta_data::text, \
         deleted_at is not null from auth.users where id = '{soft_id}'"
    ));
    let first = row.last().expect("result").rows.first().expect("the row stays");
    let cells: Vec<Option<String>> = (0..6).map(|i| first.get_str(i).map(str::to_owned)).collect();
    let email = cells[0].clone().unwrap_or_default();
    assert_eq!(email.len(), 43, "base64url of a SHA-256: {email}");
    assert_ne!(email, "soft@example.com");
    assert_eq!(cells[1].as_deref().map(str::len), Some(15));
    assert_eq!(cells[2].as_deref(), Some("t"));
    assert_eq!(cells[3].as_deref(), Some("{}"));
    assert_eq!(cells[4].as_deref(), Some("{}"));
    assert_eq!(cells[5].as_deref(), Some("t"));
    for table in ["sessions", "mfa_factors"] {
        assert_eq!(scalar(&server, &format!("select count(*) from auth.{table} where user_id = '{soft_id}'")), "0");
    }
    assert_eq!(
        scalar(
            &server,
            &format!("select count(*) from auth.identities where user_id = '{soft_id}' and identity_data = '{{}}'")
        ),
        "2"
    );
    assert_eq!(
        scalar(
            &server,
            &format!("select count(*) from auth.identities where user_id = '{soft_id}' and provider_id = '{soft_id}'")
        ),
        "0"
    );
    assert_error(
        &sign_in(&server, "soft@example.com", PASSWORD),
        400,
        "invalid_credentials",
        "Invalid login credentials",
    );
    let shown = admin(&server, "GET", &format!("/admin/users/{soft_id}"), None);
    assert!(shown.json()["deleted_at"].is_string());
    let again = admin(&server, "DELETE", &format!("/admin/users/{soft_id}"), Some(json!({"should_soft_delete": true})));
    assert_eq!(again.status, 200);
    assert_eq!(scalar(&server, &format!("select email from auth.users where id = '{soft_id}'")), email);
    // The address is free again.
    create(&server, json!({"email": "soft@example.com"}));

    // Factors: listed oldest first, renamed, phone changed, deleted with the sessions downgraded.
    let owner = create(&server, json!({"email": "mfa@example.com", "password": PASSWORD, "email_confirm": true}));
    let owner_id = owner["id"].as_str().expect("id").to_owned();
    let empty = admin(&server, "GET", &format!("/admin/users/{owner_id}/factors"), None);
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json(), json!([]));
    let totp = "aaaaaaaa-0000-4000-8000-000000000001";
    let phone = "aaaaaaaa-0000-4000-8000-000000000002";
    server.sql(&format!(
        "insert into auth.mfa_factors (id, user_id, friendly_name, factor_type, status, created_at, updated_at, secret, phone) values \
         ('{totp}', '{owner_id}', 'app', 'totp', 'verified', now() - interval '1 minute', now(), 'S', null), \
         ('{phone}', '{owner_id}', 'sms', 'phone', 'unverified', now(), now(), null, '15550000')"
    ));
    let session = sign_in(&server, "mfa@example.com", PASSWORD);
    assert_eq!(session.status, 200, "{}", session.text());
    server.sql(&format!(
        "update auth.sessions set aal = 'aal2', factor_id = '{totp}' where user_id = '{owner_id}'; \
         insert into auth.mfa_amr_claims (id, session_id, created_at, updated_at, authentication_method) \
         select gen_random_uuid(), id, now(), now(), 'totp' from auth.sessions where user_id = '{owner_id}'"
    ));

    let listed = admin(&server, "GET", &format!("/admin/users/{owner_id}/factors"), None);
    let factors = listed.json();
    assert_eq!(factors.as_array().map(Vec::len), Some(2), "{factors}");
    assert_eq!(factors[0]["id"], totp);
    assert_eq!(factors[0]["factor_type"], "totp");
    assert_eq!(factors[0]["friendly_name"], "app");
    assert_eq!(factors[0]["status"], "verified");
    assert_eq!(factors[1]["id"], phone);
    assert_eq!(factors[1]["phone"], "15550000");

    let factor_path = |factor: &str| format!("/admin/users/{owner_id}/factors/{factor}");
    let renamed = admin(&server, "PUT", &factor_path(totp), Some(json!({"friendly_name": "renamed", "phone": "junk"})));
    assert_eq!(renamed.status, 200, "{}", renamed.text());
    assert_eq!(renamed.json()["friendly_name"], "renamed");
    assert_eq!(renamed.json()["phone"], "");
    let clash = admin(&server, "PUT", &factor_path(phone), Some(json!({"friendly_name": "renamed"})));
    assert_eq!(clash.status, 422, "{}", clash.text());
    assert_eq!(clash.json()["code"], "mfa_factor_name_conflict");
    let bad_phone = admin(&server, "PUT", &factor_path(phone), Some(json!({"friendly_name": "x", "phone": "junk"})));
    assert_error(&bad_phone, 400, "validation_failed", "Invalid phone number format (E.164 required)");
    assert_eq!(scalar(&server, &format!("select friendly_name from auth.mfa_factors where id = '{phone}'")), "sms");
    let rephoned = admin(&server, "PUT", &factor_path(phone), Some(json!({"phone": "+1 555 0001"})));
    assert_eq!(rephoned.json()["phone"], "15550001");
    assert_eq!(rephoned.json()["friendly_name"], "sms");
    let unknown = "aaaaaaaa-0000-4000-8000-000000000009";
    assert_error(
        &admin(&server, "PUT", &factor_path(unknown), Some(json!({}))),
        404,
        "mfa_factor_not_found",
        "Factor not found",
    );

    let removed = admin(&server, "DELETE", &factor_path(totp), None);
    assert_eq!(removed.status, 200, "{}", removed.text());
    assert_eq!(removed.json()["id"], totp);
    assert_eq!(removed.json()["friendly_name"], "renamed");
    assert_eq!(
        scalar(
            &server,
            &format!("select aal::text || ',' || coalesce(factor_id::text, '-') from auth.sessions where user_id = '{owner_id}'")
        ),
        "aal1,-"
    );
    assert_eq!(
        scalar(
            &server,
            &format!(
                "select count(*) from auth.mfa_amr_claims c join auth.sessions s on s.id = c.session_id \
                 where s.user_id = '{owner_id}' and c.authentication_method = 'totp'"
            )
        ),
        "0"
    );
    assert_error(&admin(&server, "DELETE", &factor_path(totp), None), 404, "mfa_factor_not_found", "Factor not found");
    assert_eq!(
        admin(&server, "GET", &format!("/admin/users/{owner_id}/factors"), None).json().as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        scalar(
            &server,
            &format!(
                "select payload->>'actor_id' from auth.audit_log_entries where payload->>'action' = 'factor_deleted' \
                 and payload->'traits'->>'factor_id' = '{totp}'"
            )
        ),
        owner_id
    );
}

/// `/invite`, `/admin/generate_link` and `/admin/mail` pass the admin gate to the flows.
#[test]
fn the_flows_behind_the_gate() {
    let server = TestServer::start();
    let invited = admin(&server, "POST", "/invite", Some(json!({"email": "guest@example.com", "data": {"a": 1}})));
    assert_eq!(invited.status, 200, "{}", invited.text());
    assert_eq!(invited.json()["email"], "guest@example.com");
    assert!(invited.json()["invited_at"].is_string());

    let link = admin(
        &server,
        "POST",
        "/admin/generate_link",
        Some(json!({"type": "magiclink", "email": "guest@example.com"})),
    );
    assert_eq!(link.status, 200, "{}", link.text());
    assert!(link.json()["action_link"].is_string());

    let outbox = admin(&server, "GET", "/admin/mail", None);
    assert_eq!(outbox.status, 200, "{}", outbox.text());
    assert!(outbox.json().is_object());

    assert_eq!(admin(&server, "GET", "/invite", None).status, 405);
    assert_eq!(admin(&server, "POST", "/admin/mail", Some(json!({}))).status, 405);
}
