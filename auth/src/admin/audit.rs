//! `GET /admin/audit` (GoTrue's `adminAuditLog`): audit-log entries, newest first, paged.

use madbase_http::Response;
use madbase_pg::{Batch, Statement, StatementResult};

use super::page::{count_of, query_pairs, Page};
use super::MAX_FIELD_BYTES;
use crate::call::Call;
use crate::error::{AuthError, AuthResult};
use crate::AuthService;

/// Audit-log entries, newest first, `query=author:…|action:…|type:…` filtering as GoTrue does.
pub(super) async fn audit(auth: &AuthService, call: &Call<'_>) -> AuthResult<Response> {
    let page = Page::parse(call)?;
    let (scope, value) = match call.query("query").filter(|q| !q.is_empty()) {
        None => ("", ""),
        Some(q) => {
            let (scope, value) = q.split_once(':').unwrap_or((q, ""));
            if !matches!(scope, "author" | "action" | "type") || !q.contains(':') {
                return Err(AuthError::validation(format!(
                    "Invalid query scope: {}",
                    crate::call::truncate(q, MAX_FIELD_BYTES)
                )));
            }
            (scope, value)
        }
    };
    if value.len() > MAX_FIELD_BYTES {
        return Err(AuthError::validation("query is too long"));
    }
    let batch = Batch::new()
        .statement(Statement::new(COUNT_AUDIT).bind(scope.to_owned()).bind(value.to_owned()))
        .statement(
            Statement::new(LIST_AUDIT)
                .bind(scope.to_owned())
                .bind(value.to_owned())
                .bind(page.limit().to_string())
                .bind(page.offset().to_string()),
        )
        .read_only(true);
    let results = auth.run(batch).await?;
    let count = count_of(results.first())?;
    let rows = results.get(1).and_then(StatementResult::scalar).unwrap_or("");
    let mut response = Response::json(200, format!("[{rows}]"));
    page.headers(&mut response, call, &query_pairs(call), count);
    Ok(response)
}

pub(super) const COUNT_AUDIT: &str = "select count(*) from auth.audit_log_entries a \
     where a.instance_id = '00000000-0000-0000-0000-000000000000' and ($2 = '' \
     or ($1 = 'author' and (a.payload ->> 'actor_username' ilike '%' || $2 || '%' or a.payload ->> 'actor_name' ilike '%' || $2 || '%')) \
     or ($1 = 'action' and a.payload ->> 'action' ilike '%' || $2 || '%') \
     or ($1 = 'type' and a.payload ->> 'log_type' ilike '%' || $2 || '%'))";

pub(super) const LIST_AUDIT: &str = "select string_agg('{\"id\":\"' || p.id || '\",\"payload\":' || coalesce(p.payload::text, 'null') \
     || ',\"created_at\":\"' || coalesce(_madbase.auth_time(p.created_at), '0001-01-01T00:00:00Z') \
     || '\",\"ip_address\":' || to_json(coalesce(p.ip_address, ''))::text || '}', ',' order by p.created_at desc, p.id desc) \
     from (select * from auth.audit_log_entries a \
     where a.instance_id = '00000000-0000-0000-0000-000000000000' and ($2 = '' \
     or ($1 = 'author' and (a.payload ->> 'actor_username' ilike '%' || $2 || '%' or a.payload ->> 'actor_name' ilike '%' || $2 || '%')) \
     or ($1 = 'action' and a.payload ->> 'action' ilike '%' || $2 || '%') \
     or ($1 = 'type' and a.payload ->> 'log_type' ilike '%' || $2 || '%')) \
     order by a.created_at desc, a.id desc limit $3::bigint offset $4::bigint) p";
