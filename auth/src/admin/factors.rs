//! `/admin/users/<id>/factors[/<factor id>]` (GoTrue's `adminUserGetFactors`,
//! `adminUserUpdateFactor`, `adminUserDeleteFactor`).

use madbase_http::{Body, Response};
use madbase_pg::{Batch, PgError, Statement, StatementResult};
use serde::Deserialize;

use super::*;
use crate::go::go_quote;
use crate::signup::validate_phone;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct FactorParams {
    friendly_name: Option<String>,
    phone: Option<String>,
}

/// The user's factors, oldest first.
pub(super) async fn list_factors(auth: &AuthService, user_id: &str) -> AuthResult<Response> {
    let batch = Batch::new()
        .statement(Statement::new(USER_EXISTS).bind(user_id.to_owned()))
        .statement(
            Statement::new(
                "select string_agg(_madbase.auth_factor_json(f)::text, ',' order by f.created_at, f.id) \
                 from auth.mfa_factors f where f.user_id = $1::uuid",
            )
            .bind(user_id.to_owned()),
        )
        .read_only(true);
    let results = auth.run(batch).await?;
    require_exists(&results)?;
    let factors = results.get(1).and_then(StatementResult::scalar).unwrap_or("");
    Ok(Response::json(200, format!("[{factors}]")))
}

/// `friendly_name` (when not empty) and, for a phone factor, `phone` (E.164, when not empty).
pub(super) async fn update_factor(
    auth: &AuthService,
    call: &Call<'_>,
    body: Body,
    admin: &Admin,
    user_id: &str,
    factor_id: &str,
) -> AuthResult<Response> {
    let params: FactorParams = call.json(body).await?;
    let name = params.friendly_name.as_deref().filter(|n| !n.is_empty());
    if let Some(name) = name {
        bounded("friendly_name", name)?;
    }
    let phone_given = params.phone.as_deref().is_some_and(|p| !p.is_empty());
    let phone = params.phone.as_deref().filter(|p| !p.is_empty()).and_then(|p| validate_phone(p).ok());
    let bad_phone = phone_given && phone.is_none();
    let batch = Batch::new()
        .statement(Statement::new(USER_EXISTS).bind(user_id.to_owned()))
        .statement(
            Statement::new(UPDATE_FACTOR)
                .bind(user_id.to_owned())
                .bind(factor_id.to_owned())
                .bind_opt(name.map(str::to_owned))
                .bind_opt(phone)
                .bind(bool_text(bad_phone)),
        )
        .statement(
            Statement::new(
                "select _madbase.auth_admin_audit($1::uuid, $3, 'factor_updated', 'factor', false, \
                 jsonb_build_object('user_id', $1::uuid, 'factor_id', f.id, 'factor_type', f.factor_type), '') \
                 from auth.mfa_factors f where f.id = $2::uuid and f.user_id = $1::uuid and not ($4::bool and f.factor_type = 'phone')",
            )
            .bind(user_id.to_owned())
            .bind(factor_id.to_owned())
            .bind(admin.role.clone())
            .bind(bool_text(bad_phone)),
        )
        .statement(
            Statement::new("select f.factor_type::text from auth.mfa_factors f where f.id = $2::uuid and f.user_id = $1::uuid")
                .bind(user_id.to_owned())
                .bind(factor_id.to_owned()),
        );
    let results = auth.run_raw(batch).await.map_err(|error| match &error {
        PgError::Db(db)
            if db.code == "23505" && db.constraint.as_deref() == Some("mfa_factors_user_friendly_name_unique") =>
        {
            AuthError::new(
                422,
                "mfa_factor_name_conflict",
                format!(
                    "A factor with the friendly name {} for this user already exists",
                    go_quote(name.unwrap_or(""))
                ),
            )
        }
        _ => crate::db_error(error),
    })?;
    require_exists(&results)?;
    if let Some(factor) = results.get(1).and_then(StatementResult::scalar) {
        return Ok(Response::json(200, factor.to_owned()));
    }
    match results.get(3).and_then(StatementResult::scalar) {
        Some(_) => Err(AuthError::validation("Invalid phone number format (E.164 required)")),
        None => Err(factor_not_found()),
    }
}

/// `$3` friendly name or NULL, `$4` valid phone or NULL, `$5` a phone was given but is invalid
/// (then a phone factor is left as it is and the request fails).
pub(super) const UPDATE_FACTOR: &str = "update auth.mfa_factors f set \
     friendly_name = coalesce($3::text, f.friendly_name), \
     phone = case when f.factor_type = 'phone' and $4::text is not null then $4::text else f.phone end, \
     updated_at = now() \
     where f.id = $2::uuid and f.user_id = $1::uuid and not ($5::bool and f.factor_type = 'phone') \
     returning _madbase.auth_factor_json(f)::text";

/// Deletes the factor and downgrades the sessions it raised to aal1 (their amr entry of its kind
/// removed, as GoTrue's `DowngradeSessionsToAAL1`); answers the deleted factor.
pub(super) async fn delete_factor(
    auth: &AuthService,
    call: &Call<'_>,
    user_id: &str,
    factor_id: &str,
) -> AuthResult<Response> {
    let batch = Batch::new()
        .statement(Statement::new(USER_EXISTS).bind(user_id.to_owned()))
        .statement(
            Statement::new(
                "select _madbase.auth_admin_audit($1::uuid, null, 'factor_deleted', 'factor', false, \
                 jsonb_build_object('user_id', $1::uuid, 'factor_id', f.id), $3) \
                 from auth.mfa_factors f where f.id = $2::uuid and f.user_id = $1::uuid",
            )
            .bind(user_id.to_owned())
            .bind(factor_id.to_owned())
            .bind(call.ip().to_string()),
        )
        .statement(
            Statement::new(
                "delete from auth.mfa_amr_claims c using auth.sessions s, auth.mfa_factors f \
                 where f.id = $2::uuid and f.user_id = $1::uuid and s.factor_id = f.id and c.session_id = s.id \
                 and c.authentication_method = case f.factor_type when 'totp' then 'totp' when 'phone' then 'mfa/phone' \
                 else 'mfa/webauthn' end",
            )
            .bind(user_id.to_owned())
            .bind(factor_id.to_owned()),
        )
        .statement(
            Statement::new(
                "update auth.sessions set aal = 'aal1', factor_id = null, updated_at = now() \
                 where user_id = $1::uuid and factor_id = $2::uuid",
            )
            .bind(user_id.to_owned())
            .bind(factor_id.to_owned()),
        )
        .statement(
            Statement::new(
                "delete from auth.mfa_factors f where f.id = $2::uuid and f.user_id = $1::uuid \
                 returning _madbase.auth_factor_json(f)::text",
            )
            .bind(user_id.to_owned())
            .bind(factor_id.to_owned()),
        );
    let results = auth.run(batch).await?;
    require_exists(&results)?;
    let factor = results.get(4).and_then(StatementResult::scalar).ok_or_else(factor_not_found)?;
    Ok(Response::json(200, factor.to_owned()))
}
