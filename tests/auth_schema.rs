//! The `auth` schema (migration 0004) from the outside: Supabase-style seeds into `auth.users`, the
//! usual `handle_new_user` trigger, RLS on `auth.uid()` through `/rest/v1`, who may touch the auth
//! tables, GoTrue's JSON as `_madbase.auth_*_json` renders it, and running the migration again.

mod support;

use support::{bearer, TestServer, ALICE, BOB};

const MIGRATION: &str = include_str!("../migrations/0004_auth_schema.sql");

/// What a project's migration typically adds on top of Supabase Auth (run as the superuser).
const PROJECT: &str = r#"
create table public.profiles (
  id uuid primary key references auth.users (id) on delete cascade,
  full_name text
);
alter table public.profiles enable row level security;
create policy "own profile" on public.profiles for select to authenticated using (id = auth.uid());

create function public.handle_new_user() returns trigger language plpgsql security definer set search_path = ''
as $$ begin insert into public.profiles (id, full_name) values (new.id, new.raw_user_meta_data->>'full_name'); return new; end $$;
create trigger on_auth_user_created after insert on auth.users for each row execute procedure public.handle_new_user();

create table public.notes (
  id int primary key,
  owner uuid not null default auth.uid() references auth.users (id),
  body text not null
);
alter table public.notes enable row level security;
create policy "own notes" on public.notes for select to authenticated using (owner = auth.uid());
"#;

/// A Supabase seed as the docs write it: pgcrypto's functions unqualified (they live in
/// `extensions`), the token columns '' rather than NULL.
fn full_seed(id: &str, email: &str, full_name: &str) -> String {
    format!(
        "insert into auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
           raw_app_meta_data, raw_user_meta_data, created_at, updated_at, confirmation_token, email_change,
           email_change_token_new, recovery_token)
         values ('00000000-0000-0000-0000-000000000000', '{id}', 'authenticated', 'authenticated', '{email}',
           crypt('pw', gen_salt('bf')), now(), '{{\"provider\":\"email\",\"providers\":[\"email\"]}}',
           '{{\"full_name\":\"{full_name}\"}}', now(), now(), '', '', '', '')"
    )
}

/// The single value of the last statement's first row (NULL as "NULL").
fn value(server: &TestServer, sql: &str) -> String {
    let sets = server.sql(sql);
    let last = sets.iter().rev().find(|set| !set.rows.is_empty()).unwrap_or_else(|| panic!("no rows: {sql}"));
    last.rows[0].get_str(0).unwrap_or("NULL").to_owned()
}

fn user_json(server: &TestServer, id: &str) -> String {
    value(server, &format!("select _madbase.auth_user_json(u) from auth.users u where id = '{id}'"))
}

#[test]
fn seeds_trigger_rls_and_privileges() {
    let server = TestServer::start();
    // New sessions have `extensions` on their search path, as Supabase's `postgres` role does.
    assert_eq!(value(&server, "show search_path"), "\"$user\", public, extensions");
    server.sql(PROJECT);

    // The seed Supabase's docs show, and one that leaves every other column to its default.
    server.sql(&full_seed(ALICE, "alice@example.com", "Alice"));
    server.sql(&format!(
        "insert into auth.users (id, email, encrypted_password, email_confirmed_at)
         values ('{BOB}', 'bob@example.com', extensions.crypt('pw', extensions.gen_salt('bf')), now())"
    ));
    assert_eq!(
        value(
            &server,
            &format!(
                "select encrypted_password = crypt('pw', encrypted_password) from auth.users where id = '{ALICE}'"
            )
        ),
        "t"
    );
    assert_eq!(
        value(
            &server,
            "select count(*) from auth.users
             where confirmed_at = email_confirmed_at and not is_sso_user and not is_anonymous"
        ),
        "2"
    );
    // GoTrue's '' defaults on the token columns it added later.
    let tokens = format!(
        "select phone_change || phone_change_token || email_change_token_current || reauthentication_token
         from auth.users where id = '{BOB}'"
    );
    assert_eq!(value(&server, &tokens), "");
    // The partial unique index: one non-SSO account per address; SSO accounts may share it.
    let duplicate = support::run_sql(
        &server.cluster.connection_url(),
        "insert into auth.users (id, email) values (gen_random_uuid(), 'alice@example.com')",
    );
    assert!(duplicate.is_err_and(|e| e.to_string().contains("users_email_partial_key")));
    server.sql("insert into auth.users (id, email, is_sso_user) values (gen_random_uuid(), 'alice@example.com', true)");

    // MadBase's Auth service: logged in as authenticator, acting as supabase_auth_admin. The
    // trigger (security definer, owned by the superuser) still fills public.profiles.
    server.sql("alter role authenticator password 'authenticator-test'");
    let superuser = format!("postgres:{}@", server.cluster.password());
    let as_authenticator = server.cluster.connection_url().replacen(&superuser, "authenticator:authenticator-test@", 1);
    let carol = "33333333-3333-3333-3333-333333333333";
    let sets = support::run_sql(
        &as_authenticator,
        &format!(
            "begin;
             select set_config('role', 'supabase_auth_admin', true);
             insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data,
               created_at, updated_at)
             values ('00000000-0000-0000-0000-000000000000', '{carol}', 'authenticated', 'authenticated',
               'carol@example.com', '{{}}', '{{\"full_name\":\"Carol\"}}', now(), now());
             insert into auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at)
             values ('{carol}', '{carol}', '{{\"sub\":\"{carol}\",\"email\":\"Carol@Example.com\"}}', 'email',
               now(), now());
             select count(*) from auth.users;
             select _madbase.auth_user_json(u)::text from auth.users u where id = '{carol}';
             commit;"
        ),
    )
    .expect("authenticator acts as supabase_auth_admin");
    assert_eq!(sets[4].rows[0].get_str(0), Some("4"));
    let carol_json: serde_json::Value = serde_json::from_str(sets[5].rows[0].get_str(0).unwrap()).unwrap();
    assert_eq!(carol_json["identities"][0]["email"], "carol@example.com");
    // Without that role the auth tables are out of reach.
    let direct = support::run_sql(&as_authenticator, "select count(*) from auth.users");
    assert!(direct.is_err_and(|e| e.to_string().contains("permission denied")));
    assert_eq!(value(&server, "select count(*) from public.profiles"), "4");
    assert_eq!(
        value(&server, "select string_agg(full_name, ',' order by full_name) from public.profiles"),
        "Alice,Carol"
    );

    // RLS policies on auth.uid() through /rest/v1, next to foreign keys into auth.users.
    server.sql(&format!(
        "insert into public.notes values (1, '{ALICE}', 'mine'), (2, '{BOB}', 'his'), (3, '{ALICE}', 'also mine')"
    ));
    server.wait_for_relations(&["notes", "profiles"]);
    let alice = bearer(serde_json::json!({"sub": ALICE, "role": "authenticated"}));
    let notes = server.request("GET", "/rest/v1/notes?select=id,body&order=id", &[("authorization", &alice)], b"");
    assert_eq!(notes.status, 200, "{}", notes.text());
    assert_eq!(notes.json(), serde_json::json!([{"id": 1, "body": "mine"}, {"id": 3, "body": "also mine"}]));
    let profile = server.request("GET", "/rest/v1/profiles?select=full_name", &[("authorization", &alice)], b"");
    assert_eq!(profile.json(), serde_json::json!([{"full_name": "Alice"}]));
    let anon = server.request("GET", "/rest/v1/notes", &[], b"");
    assert_eq!(anon.json(), serde_json::json!([]), "{}", anon.text());

    // Supabase's privileges: the API roles reach none of the auth tables; the owner and the
    // dashboard role reach all of them; the renderers are for supabase_auth_admin.
    let tables = "select c.oid from pg_class c where c.relnamespace = 'auth'::regnamespace and c.relkind = 'r'";
    for role in ["anon", "authenticated", "service_role", "authenticator"] {
        let reachable = value(
            &server,
            &format!(
                "select count(*) from ({tables}) t
                 where has_table_privilege('{role}', t.oid, 'select,insert,update,delete,truncate,references,trigger')"
            ),
        );
        assert_eq!(reachable, "0", "{role} reaches auth tables");
        let renders = value(
            &server,
            &format!("select has_function_privilege('{role}', '_madbase.auth_user_json(auth.users)', 'execute')"),
        );
        assert_eq!(renders, "f", "{role} may render users");
    }
    assert_eq!(
        value(
            &server,
            &format!(
                "select count(*) from ({tables}) t join pg_class c on c.oid = t.oid
                 where pg_get_userbyid(c.relowner) = 'supabase_auth_admin' and c.relrowsecurity
                   and has_table_privilege('dashboard_user', t.oid, 'select,insert,update,delete')"
            )
        ),
        "16"
    );
    assert_eq!(
        value(
            &server,
            "select has_function_privilege('supabase_auth_admin', '_madbase.auth_user_json(auth.users)', 'execute')"
        ),
        "t"
    );
}

#[test]
fn gotrue_json() {
    let server = TestServer::start();
    // Go's RFC3339Nano in UTC whatever the session's time zone: trailing zeros of the fraction
    // trimmed, no dot when it is zero.
    let times = server.sql(
        "set timezone = 'Asia/Kolkata';
         select _madbase.auth_time('2024-01-02 03:04:05+00'), _madbase.auth_time('2024-01-02 08:34:05.123+05:30'),
                _madbase.auth_time('2024-01-02 03:04:05.123456+00'), _madbase.auth_time('2024-01-02 03:04:05.120000+00'),
                _madbase.auth_time('2024-01-02 03:04:05.000001+00'), _madbase.auth_time(null),
                _madbase.auth_time('infinity')",
    );
    let row = &times[1].rows[0];
    let got: Vec<Option<&str>> = (0..7).map(|i| row.get_str(i)).collect();
    assert_eq!(
        got,
        [
            Some("2024-01-02T03:04:05Z"),
            Some("2024-01-02T03:04:05.123Z"),
            Some("2024-01-02T03:04:05.123456Z"),
            Some("2024-01-02T03:04:05.12Z"),
            Some("2024-01-02T03:04:05.000001Z"),
            None,
            None
        ]
    );

    let identity = "aaaaaaaa-0000-0000-0000-000000000001";
    let github = "aaaaaaaa-0000-0000-0000-000000000002";
    let totp = "ffffffff-0000-0000-0000-000000000001";
    let phone = "ffffffff-0000-0000-0000-000000000002";
    server.sql(&format!(
        r#"set timezone = 'America/New_York';
        insert into auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
          confirmation_sent_at, email_change, email_change_sent_at, last_sign_in_at, raw_app_meta_data,
          raw_user_meta_data, created_at, updated_at, phone, phone_confirmed_at, confirmation_token,
          recovery_token, email_change_token_new)
        values ('00000000-0000-0000-0000-000000000000', '{ALICE}', 'authenticated', 'authenticated',
          'alice@example.com', 'x', '2024-01-02 03:04:05+00', '2024-01-01 00:00:00.5+00', 'new@example.com',
          '2024-01-03 00:00:00+00', '2024-01-04 05:06:07.123+00',
          '{{"provider":"email","providers":["email","phone"]}}',
          '{{"full_name":"Alice \"A\" <a>","avatar":null,"n":{{"b":[1,null],"a":1.50}}}}',
          '2024-01-01 00:00:00.123456+00', '2024-01-05 00:00:00.120000+00', '15550001111',
          '2024-01-06 00:00:00+00', '', '', '');
        insert into auth.identities (id, provider_id, user_id, identity_data, provider, created_at, updated_at)
        values
          ('{identity}', '{ALICE}', '{ALICE}', '{{"sub":"{ALICE}","email":"Alice@Example.com","email_verified":true}}',
           'email', '2024-01-01 00:00:01+00', '2024-01-01 00:00:02+00'),
          ('{github}', '4242', '{ALICE}', '{{}}', 'github', '2024-01-01 00:00:03+00', '2024-01-01 00:00:04+00');
        insert into auth.mfa_factors (id, user_id, friendly_name, factor_type, status, created_at, updated_at,
          secret, phone, last_challenged_at)
        values
          ('{phone}', '{ALICE}', 'Work phone', 'phone', 'unverified', '2024-01-07 00:00:00+00',
           '2024-01-07 00:00:01+00', null, '15550002222', '2024-01-07 00:00:02.5+00'),
          ('{totp}', '{ALICE}', '', 'totp', 'verified', '2024-01-06 00:00:00+00', '2024-01-06 00:00:01+00',
           'SECRET', null, null);
        insert into auth.users (id, email, encrypted_password, email_confirmed_at)
        values ('{BOB}', 'bob@example.com', 'x', '2024-02-03 04:05:06.7+00');"#
    ));

    let totp_json = format!(
        r#"{{"id":"{totp}","created_at":"2024-01-06T00:00:00Z","updated_at":"2024-01-06T00:00:01Z","status":"verified","factor_type":"totp","phone":"","last_challenged_at":null}}"#
    );
    let phone_json = format!(
        r#"{{"id":"{phone}","created_at":"2024-01-07T00:00:00Z","updated_at":"2024-01-07T00:00:01Z","status":"unverified","friendly_name":"Work phone","factor_type":"phone","phone":"15550002222","last_challenged_at":"2024-01-07T00:00:02.5Z"}}"#
    );
    let email_identity = format!(
        r#"{{"identity_id":"{identity}","id":"{ALICE}","user_id":"{ALICE}","identity_data":{{"sub": "{ALICE}", "email": "Alice@Example.com", "email_verified": true}},"provider":"email","created_at":"2024-01-01T00:00:01Z","updated_at":"2024-01-01T00:00:02Z","email":"alice@example.com"}}"#
    );
    let github_identity = format!(
        r#"{{"identity_id":"{github}","id":"4242","user_id":"{ALICE}","provider":"github","created_at":"2024-01-01T00:00:03Z","updated_at":"2024-01-01T00:00:04Z"}}"#
    );
    // GoTrue's keys in GoTrue's order; NULL `omitempty` fields absent; the metadata as stored,
    // nulls included.
    let expected = [
        format!(r#"{{"id":"{ALICE}","aud":"authenticated","role":"authenticated","email":"alice@example.com""#),
        r#","email_confirmed_at":"2024-01-02T03:04:05Z","phone":"15550001111","phone_confirmed_at":"2024-01-06T00:00:00Z""#.into(),
        r#","confirmation_sent_at":"2024-01-01T00:00:00.5Z","confirmed_at":"2024-01-02T03:04:05Z""#.into(),
        r#","new_email":"new@example.com","email_change_sent_at":"2024-01-03T00:00:00Z","last_sign_in_at":"2024-01-04T05:06:07.123Z""#.into(),
        r#","app_metadata":{"provider": "email", "providers": ["email", "phone"]}"#.into(),
        r#","user_metadata":{"n": {"a": 1.50, "b": [1, null]}, "avatar": null, "full_name": "Alice \"A\" <a>"}"#.into(),
        format!(r#","factors":[{totp_json},{phone_json}],"identities":[{email_identity},{github_identity}]"#),
        r#","created_at":"2024-01-01T00:00:00.123456Z","updated_at":"2024-01-05T00:00:00.12Z","is_anonymous":false}"#.into(),
    ]
    .concat();
    let alice = user_json(&server, ALICE);
    assert_eq!(alice, expected);
    let parsed: serde_json::Value = serde_json::from_str(&alice).expect("valid JSON");
    assert_eq!(parsed["confirmed_at"], parsed["email_confirmed_at"]);
    assert_eq!(
        value(
            &server,
            &format!("select _madbase.auth_factor_json(f)::text from auth.mfa_factors f where id = '{phone}'")
        ),
        phone_json
    );
    assert_eq!(
        value(
            &server,
            &format!("select _madbase.auth_identity_json(i)::text from auth.identities i where id = '{github}'")
        ),
        github_identity
    );

    // The minimal seed: Go's zero values where GoTrue has no default, no factors key, no identities.
    assert_eq!(
        user_json(&server, BOB),
        format!(
            r#"{{"id":"{BOB}","aud":"","role":"","email":"bob@example.com","email_confirmed_at":"2024-02-03T04:05:06.7Z","phone":"","confirmed_at":"2024-02-03T04:05:06.7Z","app_metadata":{{}},"user_metadata":{{}},"identities":[],"created_at":"0001-01-01T00:00:00Z","updated_at":"0001-01-01T00:00:00Z","is_anonymous":false}}"#
        )
    );
    // Banned, soft-deleted, anonymous, a pending phone change.
    server.sql(&format!(
        "update auth.users set banned_until = '2030-01-01 00:00:00+00', deleted_at = '2024-03-01 00:00:00+00',
           is_anonymous = true, phone_change = '15550003333', phone_change_sent_at = '2024-03-02 00:00:00+00',
           email_change = '', raw_app_meta_data = 'null', raw_user_meta_data = '[1]'
         where id = '{BOB}'"
    ));
    let bob: serde_json::Value = serde_json::from_str(&user_json(&server, BOB)).unwrap();
    assert_eq!(bob["new_phone"], "15550003333");
    assert_eq!(bob["phone_change_sent_at"], "2024-03-02T00:00:00Z");
    assert_eq!(bob["banned_until"], "2030-01-01T00:00:00Z");
    assert_eq!(bob["deleted_at"], "2024-03-01T00:00:00Z");
    assert_eq!(bob["is_anonymous"], true);
    assert_eq!(
        (bob["app_metadata"].clone(), bob["user_metadata"].clone()),
        (serde_json::json!({}), serde_json::json!({}))
    );
    assert!(bob.get("new_email").is_none());
}

#[test]
fn migration_runs_again_harmlessly() {
    let server = TestServer::start();
    server.sql(&full_seed(ALICE, "alice@example.com", "Alice"));
    // Tables and their owners, ACLs and RLS; columns with types and defaults; constraints; indexes;
    // the search_path setting; the functions' definitions and ACLs.
    let catalog = "select string_agg(line, E'\\n' order by line) from (
        select format('%s %s %s %s %s', relname, relkind, pg_get_userbyid(relowner), relacl, relrowsecurity)
        from pg_class where relnamespace = 'auth'::regnamespace
      union all
        select format('%s.%s %s %s', attrelid::regclass, attname, format_type(atttypid, atttypmod),
                      pg_get_expr(adbin, adrelid))
        from pg_attribute left join pg_attrdef on adrelid = attrelid and adnum = attnum
        where attrelid in (select oid from pg_class where relnamespace = 'auth'::regnamespace) and attnum > 0
      union all
        select format('%s %s', conname, pg_get_constraintdef(oid))
        from pg_constraint where connamespace = 'auth'::regnamespace
      union all
        select indexdef from pg_indexes where schemaname = 'auth'
      union all
        select array_to_string(setconfig, ',') from pg_db_role_setting
      union all
        select format('%s %s %s', oid::regprocedure, proacl, md5(prosrc))
        from pg_proc where pronamespace in ('auth'::regnamespace, '_madbase'::regnamespace)
    ) as catalog (line)";
    let before = value(&server, catalog);
    let rendered = user_json(&server, ALICE);
    for expected in [
        "users r supabase_auth_admin",
        "auth.users.confirmed_at timestamp with time zone",
        "users_email_partial_key",
        "search_path=\"$user\", public, extensions",
        "_madbase.auth_user_json(auth.users) {postgres=X/postgres,supabase_auth_admin=X/postgres}",
    ] {
        assert!(before.contains(expected), "{expected} not in\n{before}");
    }
    server.sql(MIGRATION);
    server.sql(MIGRATION);
    assert_eq!(value(&server, catalog), before);
    assert_eq!(user_json(&server, ALICE), rendered);
    assert_eq!(value(&server, "select count(*) from auth.users"), "1");
    assert_eq!(value(&server, "select name from _madbase.migrations where version = 4"), "auth_schema");
}
