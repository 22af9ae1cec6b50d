//! `/admin/users` and `/admin/users/<id>` (GoTrue's `adminUsers`, `adminUserCreate`,
//! `adminUserGet`, `adminUserUpdate`, `adminUserDelete`).

use madbase_http::{Body, Response};
use madbase_pg::{Batch, Statement, StatementResult};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::go::{ban_micros, valid_password_hash};
use super::page::{count_of, query_pairs, sort_ascending, Page};
use super::*;
use crate::crypto::{password, random};
use crate::signup::{identity_data, validate_email, validate_phone, Provider};

/// The body of `POST /admin/users` and `PUT /admin/users/<id>` (GoTrue's `AdminUserParams`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct UserParams {
    id: Option<String>,
    aud: Option<String>,
    role: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    password_hash: Option<String>,
    email_confirm: Option<bool>,
    phone_confirm: Option<bool>,
    user_metadata: Option<Map<String, Value>>,
    app_metadata: Option<Map<String, Value>>,
    ban_duration: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct DeleteParams {
    should_soft_delete: Option<bool>,
}

/// Users of the audience, newest first (or `sort=created_at asc`), `filter` matching the email
/// (`LIKE`) or `user_metadata.full_name` (`ILIKE`), one page of them with the total.
pub(super) async fn list(auth: &AuthService, call: &Call<'_>) -> AuthResult<Response> {
    let query = query_pairs(call);
    let ascending = sort_ascending(&query)?;
    let page = Page::parse(call)?;
    let filter = call.query("filter").unwrap_or_default();
    if filter.len() > MAX_FIELD_BYTES {
        return Err(AuthError::validation("filter is too long"));
    }
    let aud = request_aud(call);
    let page_sql = if ascending { LIST_USERS_ASC } else { LIST_USERS_DESC };
    let batch = Batch::new()
        .statement(Statement::new(COUNT_USERS).bind(aud.to_owned()).bind(filter.to_owned()))
        .statement(
            Statement::new(page_sql)
                .bind(aud.to_owned())
                .bind(filter.to_owned())
                .bind(page.limit().to_string())
                .bind(page.offset().to_string()),
        )
        .read_only(true);
    let results = auth.run(batch).await?;
    let count = count_of(results.first())?;
    let users = results.get(1).and_then(StatementResult::scalar).unwrap_or("");
    let mut text = String::with_capacity(users.len() + 48);
    text.push_str("{\"users\":[");
    text.push_str(users);
    text.push_str("],\"aud\":");
    text.push_str(&Value::from(aud).to_string());
    text.push('}');
    let mut response = Response::json(200, text);
    page.headers(&mut response, call, &query, count);
    Ok(response)
}

pub(super) const COUNT_USERS: &str = "select count(*) from auth.users u \
     where u.instance_id = '00000000-0000-0000-0000-000000000000' and u.aud = $1 \
     and ($2 = '' or u.email like '%' || $2 || '%' or u.raw_user_meta_data ->> 'full_name' ilike '%' || $2 || '%')";

pub(super) const LIST_USERS_DESC: &str =
    "select string_agg(_madbase.auth_user_json(p)::text, ',' order by p.created_at desc, p.id desc) \
     from (select * from auth.users u where u.instance_id = '00000000-0000-0000-0000-000000000000' and u.aud = $1 \
     and ($2 = '' or u.email like '%' || $2 || '%' or u.raw_user_meta_data ->> 'full_name' ilike '%' || $2 || '%') \
     order by u.created_at desc, u.id desc limit $3::bigint offset $4::bigint) p";

pub(super) const LIST_USERS_ASC: &str =
    "select string_agg(_madbase.auth_user_json(p)::text, ',' order by p.created_at, p.id) \
     from (select * from auth.users u where u.instance_id = '00000000-0000-0000-0000-000000000000' and u.aud = $1 \
     and ($2 = '' or u.email like '%' || $2 || '%' or u.raw_user_meta_data ->> 'full_name' ilike '%' || $2 || '%') \
     order by u.created_at, u.id limit $3::bigint offset $4::bigint) p";

pub(super) async fn get(auth: &AuthService, user_id: &str) -> AuthResult<Response> {
    let batch = Batch::new().statement(Statement::new(SELECT_USER).bind(user_id.to_owned())).read_only(true);
    let results = auth.run(batch).await?;
    let user = results.first().and_then(StatementResult::scalar).ok_or_else(user_not_found)?;
    Ok(Response::json(200, user.to_owned()))
}

pub(super) const SELECT_USER: &str = "select _madbase.auth_user_json(u)::text from auth.users u where u.id = $1::uuid";

/// A `password_hash` or a password to hash.
pub(super) enum Secret {
    Hash(String),
    Password(String),
}

pub(super) async fn create(auth: &AuthService, call: &Call<'_>, body: Body, admin: &Admin) -> AuthResult<Response> {
    let params: UserParams = call.json(body).await?;
    let aud = match params.aud.as_deref().filter(|a| !a.is_empty()) {
        Some(aud) => bounded("aud", aud)?.to_owned(),
        None => request_aud(call).to_owned(),
    };
    let email = params.email.as_deref().filter(|e| !e.is_empty());
    let phone = params.phone.as_deref().filter(|p| !p.is_empty());
    if email.is_none() && phone.is_none() {
        return Err(AuthError::validation("Cannot create a user without either an email or phone"));
    }
    let email = email.map(validate_email).transpose()?;
    let phone = phone.map(validate_phone).transpose()?;
    let password_hash = params.password_hash.as_deref().filter(|h| !h.is_empty());
    if params.password.is_some() && password_hash.is_some() {
        return Err(AuthError::validation("Only a password or a password hash should be provided"));
    }
    let secret = match (params.password.as_deref().filter(|p| !p.is_empty()), password_hash) {
        (_, Some(hash)) => {
            if !valid_password_hash(hash) {
                return Err(AuthError::new(500, "unexpected_failure", "Error creating user"));
            }
            Secret::Hash(hash.to_owned())
        }
        (Some(password), None) => {
            if password.len() > crate::crypto::policy::MAX_PASSWORD_BYTES {
                return Err(AuthError::validation("bcrypt: password length exceeds 72 bytes"));
            }
            Secret::Password(password.to_owned())
        }
        (None, None) => Secret::Password(random::url_token(48)),
    };
    let user_id = match params.id.as_deref().filter(|i| !i.is_empty()) {
        None => random::uuid_v4(),
        Some(id) => {
            let id = parse_uuid(id).ok_or_else(|| AuthError::validation("ID must conform to the uuid v4 format"))?;
            if id == NIL_UUID {
                return Err(AuthError::validation("ID cannot be a nil uuid"));
            }
            id
        }
    };
    let mut providers = Vec::with_capacity(2);
    if email.is_some() {
        providers.push(Provider::Email);
    }
    if phone.is_some() {
        providers.push(Provider::Phone);
    }
    let names: Vec<&str> = providers.iter().map(|p| p.name()).collect();
    let mut app_metadata = Map::new();
    app_metadata.insert("provider".into(), names[0].into());
    app_metadata.insert("providers".into(), json!(names));
    if let Some(updates) = params.app_metadata {
        merge(&mut app_metadata, bounded_metadata(updates)?);
    }
    let mut user_metadata = bounded_metadata(params.user_metadata.unwrap_or_default())?;
    let email_confirm = params.email_confirm.unwrap_or(false);
    let phone_confirm = params.phone_confirm.unwrap_or(false);
    if email_confirm {
        user_metadata.insert("email_verified".into(), true.into());
    }
    let ban = ban_micros(params.ban_duration.as_deref())?;
    let role = match params.role.as_deref().filter(|r| !r.is_empty()) {
        Some(role) => bounded("role", role)?.trim().to_owned(),
        None => DEFAULT_ROLE.to_owned(),
    };
    let encrypted_password = match secret {
        Secret::Hash(hash) => hash,
        Secret::Password(password) => auth.blocking(move || password::hash(&password)).await?,
    };

    let mut batch = Batch::new()
        .statement(
            Statement::new("select _madbase.auth_admin_check_addresses(null, $1, $2, $3)")
                .bind_opt(email.clone())
                .bind_opt(phone.clone())
                .bind(aud.clone()),
        )
        .statement(
            Statement::new(INSERT_USER)
                .bind(user_id.clone())
                .bind(aud)
                .bind(role)
                .bind_opt(email.clone())
                .bind_opt(phone.clone())
                .bind(encrypted_password)
                .bind(bool_text(email_confirm))
                .bind(bool_text(phone_confirm))
                .bind(Value::Object(app_metadata).to_string())
                .bind(Value::Object(user_metadata).to_string())
                .bind_opt(ban.flatten().map(|micros| micros.to_string())),
        );
    for (provider, address) in [(Provider::Email, &email), (Provider::Phone, &phone)] {
        if let Some(address) = address {
            let data = identity_data(&user_id, provider, Some(address));
            batch = batch.statement(
                Statement::new(INSERT_IDENTITY).bind(user_id.clone()).bind(data.to_string()).bind(provider.name()),
            );
        }
    }
    let traits = json!({"provider": names[0]});
    batch = batch
        .statement(audit_statement(&user_id, Some(&admin.role), "user_signedup", "team", true, &traits, ""))
        .statement(Statement::new(SELECT_USER).bind(user_id.clone()));
    let results =
        auth.run_raw(batch).await.map_err(|error| address_error(error, "Database error creating new user"))?;
    let user = results
        .last()
        .and_then(StatementResult::scalar)
        .ok_or_else(|| AuthError::internal("admin: created user not found"))?;
    Ok(Response::json(200, user.to_owned()))
}

pub(super) const INSERT_USER: &str =
    "insert into auth.users (instance_id, id, aud, role, email, phone, encrypted_password, \
     email_confirmed_at, phone_confirmed_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at, \
     confirmation_token, recovery_token, email_change_token_new, email_change, email_change_token_current, \
     phone_change, phone_change_token, reauthentication_token, is_anonymous, banned_until) \
     values ('00000000-0000-0000-0000-000000000000', $1::uuid, $2, $3, $4, $5, $6, \
     case when $7::bool then now() end, case when $8::bool then now() end, $9::jsonb, $10::jsonb, now(), now(), \
     '', '', '', '', '', '', '', '', false, now() + $11::bigint * interval '1 microsecond')";

/// An email or phone identity of user `$1`: `$2` identity data, `$3` provider.
pub(super) const INSERT_IDENTITY: &str = "insert into auth.identities (id, provider_id, user_id, identity_data, provider, \
     last_sign_in_at, created_at, updated_at) \
     select gen_random_uuid(), u.id::text, u.id, $2::jsonb, $3, now(), now(), now() from auth.users u where u.id = $1::uuid";

/// [`INSERT_IDENTITY`], or, when the user has that identity already, `$4` merged into its data
/// (GoTrue's `UpdateIdentityData`).
pub(super) const UPSERT_IDENTITY: &str = "insert into auth.identities (id, provider_id, user_id, identity_data, provider, \
     last_sign_in_at, created_at, updated_at) \
     select gen_random_uuid(), u.id::text, u.id, $2::jsonb, $3, now(), now(), now() from auth.users u where u.id = $1::uuid \
     on conflict (provider_id, provider) do update \
     set identity_data = _madbase.auth_jsonb_merge(auth.identities.identity_data, $4::jsonb), updated_at = now()";

/// Metadata checked for size.
pub(super) fn bounded_metadata(data: Map<String, Value>) -> AuthResult<Map<String, Value>> {
    crate::signup::metadata(Some(data))
}

/// GoTrue's metadata merge: a null deletes its key, anything else replaces it.
pub(super) fn merge(base: &mut Map<String, Value>, updates: Map<String, Value>) {
    for (key, value) in updates {
        if value.is_null() {
            base.remove(&key);
        } else {
            base.insert(key, value);
        }
    }
}

pub(super) async fn update(
    auth: &AuthService,
    call: &Call<'_>,
    body: Body,
    admin: &Admin,
    user_id: &str,
) -> AuthResult<Response> {
    let params: UserParams = call.json(body).await?;
    let email = params.email.as_deref().filter(|e| !e.is_empty()).map(validate_email).transpose()?;
    let phone = params.phone.as_deref().filter(|p| !p.is_empty()).map(validate_phone).transpose()?;
    let ban = ban_micros(params.ban_duration.as_deref())?;
    let password = match params.password {
        Some(password) => {
            auth.check_password(&password)?;
            Some(auth.blocking(move || password::hash(&password)).await?)
        }
        None => None,
    };
    let role = match params.role.as_deref().filter(|r| !r.is_empty()) {
        Some(role) => Some(bounded("role", role)?.trim().to_owned()),
        None => None,
    };
    let user_metadata = params.user_metadata.map(bounded_metadata).transpose()?;
    let app_metadata = params.app_metadata.map(bounded_metadata).transpose()?;
    let email_confirm = params.email_confirm.unwrap_or(false);
    let phone_confirm = params.phone_confirm.unwrap_or(false);
    let id = || user_id.to_owned();

    let mut batch = Batch::new()
        .statement(Statement::new("select 1 from auth.users u where u.id = $1::uuid for update").bind(id()));
    if email.is_some() || phone.is_some() {
        batch = batch.statement(
            Statement::new("select _madbase.auth_admin_check_addresses($1::uuid, $2, $3, null)")
                .bind(id())
                .bind_opt(email.clone())
                .bind_opt(phone.clone()),
        );
    }
    if let Some(role) = role {
        batch = batch.statement(
            Statement::new("update auth.users set role = $2, updated_at = now() where id = $1::uuid")
                .bind(id())
                .bind(role),
        );
    }
    if email_confirm {
        batch = batch
            .statement(
                Statement::new(
                    "update auth.users set confirmation_token = '', email_confirmed_at = now(), updated_at = now(), \
                     raw_user_meta_data = _madbase.auth_jsonb_merge(raw_user_meta_data, '{\"email_verified\":true}') \
                     where id = $1::uuid",
                )
                .bind(id()),
            )
            .statement(Statement::new(DELETE_ONE_TIME_TOKENS).bind(id()));
    }
    if phone_confirm {
        batch = batch
            .statement(
                Statement::new(
                    "update auth.users set confirmation_token = '', phone_confirmed_at = now(), updated_at = now() \
                     where id = $1::uuid",
                )
                .bind(id()),
            )
            .statement(Statement::new(DELETE_ONE_TIME_TOKENS).bind(id()));
    }
    if let Some(hash) = password {
        batch = batch
            .statement(Statement::new(SET_PASSWORD).bind(id()).bind(hash))
            .statement(Statement::new(DELETE_ONE_TIME_TOKENS).bind(id()))
            .statement(Statement::new("delete from auth.sessions where user_id = $1::uuid").bind(id()));
    }
    for (provider, address, confirm) in
        [(Provider::Email, &email, email_confirm), (Provider::Phone, &phone, phone_confirm)]
    {
        let Some(address) = address else { continue };
        let (field, verified) = match provider {
            Provider::Email => ("email", "email_verified"),
            Provider::Phone => ("phone", "phone_verified"),
        };
        let mut data = identity_data(user_id, provider, Some(address));
        data[verified] = confirm.into();
        let updates = json!({ field: address, verified: confirm });
        let set_address = match provider {
            Provider::Email => SET_EMAIL,
            Provider::Phone => SET_PHONE,
        };
        batch = batch
            .statement(
                Statement::new(UPSERT_IDENTITY)
                    .bind(id())
                    .bind(data.to_string())
                    .bind(provider.name())
                    .bind(updates.to_string()),
            )
            .statement(Statement::new(set_address).bind(id()).bind(address.clone()).bind(bool_text(confirm)));
    }
    for (column, updates) in [("app", app_metadata), ("user", user_metadata)] {
        let Some(updates) = updates else { continue };
        let sql = if column == "app" { MERGE_APP_METADATA } else { MERGE_USER_METADATA };
        batch = batch.statement(Statement::new(sql).bind(id()).bind(Value::Object(updates).to_string()));
    }
    if let Some(ban) = ban {
        batch = batch.statement(
            Statement::new(
                "update auth.users set banned_until = now() + $2::bigint * interval '1 microsecond', updated_at = now() \
                 where id = $1::uuid",
            )
            .bind(id())
            .bind_opt(ban.map(|micros| micros.to_string())),
        );
    }
    batch = batch
        .statement(audit_statement(user_id, Some(&admin.role), "user_modified", "user", true, &json!({}), ""))
        .statement(Statement::new(SELECT_USER).bind(id()));
    let results = auth.run_raw(batch).await.map_err(|error| address_error(error, "Error updating user"))?;
    if results.first().is_none_or(|r| r.rows.is_empty()) {
        return Err(user_not_found());
    }
    let user = results.last().and_then(StatementResult::scalar).ok_or_else(user_not_found)?;
    Ok(Response::json(200, user.to_owned()))
}

pub(super) const DELETE_ONE_TIME_TOKENS: &str = "delete from auth.one_time_tokens where user_id = $1::uuid";

/// `models.User.UpdatePassword`: the new hash, and every pending token and its time cleared.
pub(super) const SET_PASSWORD: &str = "update auth.users set encrypted_password = $2, confirmation_token = '', \
     confirmation_sent_at = null, recovery_token = '', recovery_sent_at = null, email_change_token_current = '', \
     email_change_token_new = '', email_change_sent_at = null, phone_change_token = '', phone_change_sent_at = null, \
     reauthentication_token = '', reauthentication_sent_at = null, updated_at = now() where id = $1::uuid";

/// `$3`: confirmed in this request (an anonymous user becomes permanent).
pub(super) const SET_EMAIL: &str = "update auth.users set email = $2, updated_at = now(), \
     is_anonymous = is_anonymous and not $3::bool where id = $1::uuid";

pub(super) const SET_PHONE: &str = "update auth.users set phone = $2, updated_at = now(), \
     is_anonymous = is_anonymous and not $3::bool where id = $1::uuid";

pub(super) const MERGE_APP_METADATA: &str = "update auth.users set updated_at = now(), \
     raw_app_meta_data = _madbase.auth_jsonb_merge(raw_app_meta_data, $2::jsonb) where id = $1::uuid";

pub(super) const MERGE_USER_METADATA: &str = "update auth.users set updated_at = now(), \
     raw_user_meta_data = _madbase.auth_jsonb_merge(raw_user_meta_data, $2::jsonb) where id = $1::uuid";

/// Hard delete (the user and, by cascade, its identities, sessions, factors and tokens) or soft
/// delete (`_madbase.auth_admin_soft_delete`); either way after the audit row. Answers `{}`.
pub(super) async fn delete(
    auth: &AuthService,
    call: &Call<'_>,
    body: Body,
    admin: &Admin,
    user_id: &str,
) -> AuthResult<Response> {
    let params: DeleteParams = call.json(body).await?;
    let audit = audit_statement(user_id, Some(&admin.role), "user_deleted", "team", true, &json!({}), "");
    let action = if params.should_soft_delete.unwrap_or(false) {
        Statement::new("select 1 where _madbase.auth_admin_soft_delete($1::uuid)").bind(user_id.to_owned())
    } else {
        Statement::new("delete from auth.users where id = $1::uuid returning 1").bind(user_id.to_owned())
    };
    let results = auth.run(Batch::new().statement(audit).statement(action)).await?;
    if results.get(1).is_none_or(|r| r.rows.is_empty()) {
        return Err(user_not_found());
    }
    Ok(Response::json(200, "{}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges() {
        let mut base = json!({"a": 1, "b": 2}).as_object().cloned().unwrap();
        merge(&mut base, json!({"a": null, "c": 3}).as_object().cloned().unwrap());
        assert_eq!(Value::Object(base), json!({"b": 2, "c": 3}));
    }
}
