//! `madbase-auth`, `/auth/v1`: the GoTrue-compatible Auth API (reference/auth.md), one
//! [`AuthService`] per shard.
//!
//! (Module map and invariants: written as the modules land.)

pub mod crypto;
mod error;
pub mod hooks;
pub mod mail;
pub mod settings;

pub use error::{ApiVersion, AuthError, AuthResult};
