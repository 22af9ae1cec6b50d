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
//! Scenarios are added here as the services land (REST reads/writes, auth token refresh, storage
//! up/downloads); the WebSocket generator for realtime lives beside this crate.

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

#[tokio::main]
async fn main() -> Result<(), GooseError> {
    GooseAttack::initialize()?
        .register_scenario(scenario!("health").register_transaction(transaction!(health)))
        .register_scenario(
            scenario!("gateway_404").register_transaction(transaction!(unknown_route)),
        )
        .execute()
        .await?;
    Ok(())
}
