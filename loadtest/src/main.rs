//! goose load-test suite for MadBase's HTTP surface.
//!
//! Each scenario is one user-visible path; goose prints throughput and p50/p99/p999 per request.
//! Run (MadBase already listening):
//!
//! ```text
//! cargo run --release --manifest-path loadtest/Cargo.toml -- \
//!     --host http://127.0.0.1:54321 --users 256 --hatch-rate 256 --run-time 30s --report-file bench/out/goose.html
//! ```
//!
//! One scenario alone: `--scenarios restgetbypk` (names as `--scenarios-list` prints them).
//!
//! Scenarios are added here as the services land (auth token refresh, storage up/downloads). The
//! WebSocket generator for Realtime is this crate's other binary (`src/bin/realtime.rs`): goose
//! cannot hold tens of thousands of sockets. `rest_get_by_pk` reads the
//! `bench_items` table that `bench/rest_roundtrip.sh` creates (10,000 rows, RLS, an anon policy);
//! create it first or that scenario reports 404s.

use goose::prelude::*;

/// The demo anon key (Supabase local development secret), the one `madbase start` prints when no
/// secret is configured. Override with `MADBASE_ANON_KEY`.
const DEMO_ANON_KEY: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4MTI5OTZ9.CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0";

fn anon_key() -> String {
    std::env::var("MADBASE_ANON_KEY").unwrap_or_else(|_| DEMO_ANON_KEY.to_owned())
}

/// Health: every shard answers and PostgreSQL is reachable (one round trip).
async fn health(user: &mut GooseUser) -> TransactionResult {
    let _ = user.get("/health").await?;
    Ok(())
}

/// The gateway's answer to an unknown route: pure HTTP path, no database.
async fn unknown_route(user: &mut GooseUser) -> TransactionResult {
    let request = user
        .get_request_builder(&GooseMethod::Get, "/no/such/route")?
        .header("apikey", anon_key());
    let goose_request = GooseRequest::builder()
        .set_request_builder(request)
        .expect_status_code(404)
        .build();
    let _ = user.request(goose_request).await?;
    Ok(())
}

/// Data API: one row by primary key as `anon`, through RLS (one PostgreSQL round trip).
async fn rest_get_by_pk(user: &mut GooseUser) -> TransactionResult {
    let id = (user.weighted_users_index * 7919 + user.get_iterations()) % 10_000 + 1;
    let key = anon_key();
    let request = user
        .get_request_builder(&GooseMethod::Get, &format!("/rest/v1/bench_items?select=*&id=eq.{id}"))?
        .header("apikey", &key)
        .header("authorization", format!("Bearer {key}"));
    let goose_request = GooseRequest::builder().set_request_builder(request).build();
    let _ = user.request(goose_request).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), GooseError> {
    GooseAttack::initialize()?
        .register_scenario(scenario!("health").register_transaction(transaction!(health)))
        .register_scenario(
            scenario!("gateway_404").register_transaction(transaction!(unknown_route)),
        )
        .register_scenario(
            scenario!("rest_get_by_pk").register_transaction(transaction!(rest_get_by_pk)),
        )
        .execute()
        .await?;
    Ok(())
}
