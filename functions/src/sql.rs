//! `madbase:functions/database.query` on the shard: each statement a guest sends runs on the
//! shard's Functions lane in its own transaction, as the caller's role with the caller's claims
//! (`request.jwt.claims`), so row level security decides exactly as for `/rest/v1`.
//!
//! A statement that returns rows is answered by PostgreSQL itself as a JSON array
//! (`with q as (<statement>) select json_agg(q)`): values rendered by `to_json`, one round trip.
//! A statement that cannot be wrapped (DDL, or DML without `RETURNING`) runs as it is and is
//! answered `[]` (or its rows with text values).
//!
//! Invariants: a statement never runs as another role than the caller's; an answer is at most
//! `max_result_bytes`; one statement per call (the extended protocol refuses several).

use std::rc::Rc;

use bytes::Bytes;
use futures_channel::mpsc;
use madbase_core::ShardCtx;
use madbase_pg::{Batch, PgError, Statement, StatementResult, TxEnd};
use serde_json::{Map, Value};

use crate::host::bindings::madbase::functions::database::DatabaseError;
use crate::host::DbCall;
use crate::LANE;

/// Answers the guest's statements until it ends; never completes on its own.
pub async fn serve(
    ctx: &Rc<ShardCtx>,
    mut calls: mpsc::Receiver<DbCall>,
    role: &str,
    claims: Option<&str>,
    max_result_bytes: u64,
) {
    let anonymous = format!("{{\"role\":\"{}\"}}", madbase_core::identity::ANON_ROLE);
    let claims = claims.unwrap_or(&anonymous);
    loop {
        let next = std::future::poll_fn(|cx| {
            use futures_core::Stream;
            std::pin::Pin::new(&mut calls).poll_next(cx)
        })
        .await;
        let Some(call) = next else {
            // The guest's store is gone; the race that polls this ends with the guest.
            return std::future::pending().await;
        };
        let answer = query(ctx, role, claims, &call.sql, call.params, max_result_bytes).await;
        let _ = call.reply.send(answer);
    }
}

async fn query(
    ctx: &ShardCtx,
    role: &str,
    claims: &str,
    sql: &str,
    params: Vec<Option<String>>,
    max_result_bytes: u64,
) -> Result<String, DatabaseError> {
    let statement = sql.trim().trim_end_matches(';').trim_end();
    let wrapped =
        format!("with _madbase_q as ({statement}\n) select coalesce(json_agg(_madbase_q), '[]')::text from _madbase_q");
    let answer = match run(ctx, role, claims, &wrapped, &params).await {
        Ok(result) => result.scalar().unwrap_or("[]").to_owned(),
        // Not wrappable: a statement without rows (0A000: DML without RETURNING) or one a CTE
        // cannot hold (42601: DDL, utility statements). Run it as it is.
        Err(PgError::Db(e)) if e.code == "0A000" || e.code == "42601" => {
            let result = run(ctx, role, claims, statement, &params).await.map_err(database_error)?;
            text_rows(&result)
        }
        Err(e) => return Err(database_error(e)),
    };
    if answer.len() as u64 > max_result_bytes {
        return Err(DatabaseError {
            code: "MB001".to_owned(),
            message: format!("the answer is larger than edge_runtime.max_db_result_bytes ({max_result_bytes} bytes)"),
        });
    }
    Ok(answer)
}

async fn run(
    ctx: &ShardCtx,
    role: &str,
    claims: &str,
    sql: &str,
    params: &[Option<String>],
) -> Result<StatementResult, PgError> {
    let mut statement = Statement::new(sql);
    for param in params {
        statement = statement.bind_opt(param.as_ref().map(|p| Bytes::copy_from_slice(p.as_bytes())));
    }
    let batch = Batch::new().role(role).jwt_claims(claims).statement(statement).end(TxEnd::Commit);
    let mut results = ctx.lanes.get(LANE).execute(batch).await?;
    Ok(results.pop().unwrap_or_default())
}

/// Rows of an unwrapped statement as JSON objects with text values.
fn text_rows(result: &StatementResult) -> String {
    let rows: Vec<Value> = result
        .rows
        .iter()
        .map(|row| {
            let object: Map<String, Value> = result
                .columns
                .iter()
                .enumerate()
                .map(|(i, column)| {
                    (column.clone(), row.get_str(i).map_or(Value::Null, |v| Value::String(v.to_owned())))
                })
                .collect();
            Value::Object(object)
        })
        .collect();
    Value::Array(rows).to_string()
}

fn database_error(e: PgError) -> DatabaseError {
    match e {
        PgError::Db(db) => DatabaseError { code: db.code.clone(), message: db.message.clone() },
        other => DatabaseError { code: "MB003".to_owned(), message: other.to_string() },
    }
}
