//! Shared test support: an ephemeral cluster with Supabase-like roles.
#![allow(dead_code)]

use madbase_pg::{Cluster, ConnectConfig, Connection};

pub const AUTHENTICATOR_PW: &str = "auth pw/with:odd@chars";

/// Starts an ephemeral cluster and creates `anon`, `authenticated` and a login role
/// `authenticator` (noinherit, member of both), as Supabase does.
pub async fn cluster_with_roles() -> (Cluster, ConnectConfig) {
    let cluster = Cluster::ephemeral().expect("ephemeral cluster");
    let su = Connection::connect(&cluster.connect_config()).await.expect("superuser connect");
    su.simple_query(&format!(
        "create role anon nologin;
         create role authenticated nologin;
         create role authenticator login noinherit password '{AUTHENTICATOR_PW}';
         grant anon, authenticated to authenticator;
         create table side_effect(id serial primary key, note text);
         grant all on side_effect to anon, authenticated;
         grant usage on sequence side_effect_id_seq to anon, authenticated;
         create table gate(x int);
         grant all on gate to anon, authenticated;"
    ))
    .await
    .expect("setup roles");
    drop(su);
    let mut cfg = cluster.connect_config();
    cfg.user = "authenticator".into();
    cfg.password = Some(AUTHENTICATOR_PW.into());
    (cluster, cfg)
}
