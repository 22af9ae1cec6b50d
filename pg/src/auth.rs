//! The client side of PostgreSQL authentication during startup, shared by the pipelined
//! [`crate::connection`] (monoio) and the blocking [`crate::replication`] client.
//!
//! Owns the state of one authentication exchange (cleartext, md5, SCRAM-SHA-256). It is
//! synchronous on purpose: it only turns a server message into the reply bytes, so either
//! transport can drive it. Invariant: `AuthenticationOk` after a SCRAM start is accepted only
//! once the server's final message (its proof) was verified.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::{backend::Message, frontend};

use crate::config::ConnectConfig;
use crate::error::PgError;

/// The client side of authentication during startup.
pub(crate) struct Auth<'a> {
    cfg: &'a ConnectConfig,
    scram: Option<ScramSha256>,
    scram_done: bool,
}

impl<'a> Auth<'a> {
    pub(crate) fn new(cfg: &'a ConnectConfig) -> Self {
        Auth { cfg, scram: None, scram_done: false }
    }

    /// Handles one authentication message, appending the reply (if one is due) to `w`. Any
    /// other message is unexpected during startup.
    pub(crate) fn respond(&mut self, msg: Message, w: &mut BytesMut) -> Result<(), PgError> {
        match msg {
            Message::AuthenticationOk => {
                if self.scram.is_some() && !self.scram_done {
                    return Err(PgError::Auth("server skipped the SCRAM final message".into()));
                }
            }
            Message::AuthenticationCleartextPassword => {
                frontend::password_message(self.password()?.as_bytes(), w)?;
            }
            Message::AuthenticationMd5Password(body) => {
                let hash = postgres_protocol::authentication::md5_hash(
                    self.cfg.user.as_bytes(),
                    self.password()?.as_bytes(),
                    body.salt(),
                );
                frontend::password_message(hash.as_bytes(), w)?;
            }
            Message::AuthenticationSasl(body) => {
                let mut mechs = body.mechanisms();
                let mut has_scram = false;
                while let Some(m) = mechs.next()? {
                    has_scram |= m == sasl::SCRAM_SHA_256;
                }
                if !has_scram {
                    return Err(PgError::Auth("server offers no supported SASL mechanism (need SCRAM-SHA-256)".into()));
                }
                let s = ScramSha256::new(self.password()?.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(sasl::SCRAM_SHA_256, s.message(), w)?;
                self.scram = Some(s);
            }
            Message::AuthenticationSaslContinue(body) => {
                let s =
                    self.scram.as_mut().ok_or_else(|| PgError::Protocol("SASL continue without SASL start".into()))?;
                s.update(body.data()).map_err(|e| PgError::Auth(format!("SCRAM: {e}")))?;
                frontend::sasl_response(s.message(), w)?;
            }
            Message::AuthenticationSaslFinal(body) => {
                let s = self.scram.as_mut().ok_or_else(|| PgError::Protocol("SASL final without SASL start".into()))?;
                s.finish(body.data()).map_err(|e| PgError::Auth(format!("SCRAM server proof invalid: {e}")))?;
                self.scram_done = true;
            }
            Message::AuthenticationGss
            | Message::AuthenticationSspi
            | Message::AuthenticationKerberosV5
            | Message::AuthenticationScmCredential
            | Message::AuthenticationGssContinue(_) => {
                return Err(PgError::Auth("unsupported authentication method (GSS/SSPI/Kerberos/SCM)".into()))
            }
            _ => return Err(PgError::Protocol("unexpected message during startup".into())),
        }
        Ok(())
    }

    fn password(&self) -> Result<&str, PgError> {
        self.cfg
            .password
            .as_deref()
            .ok_or_else(|| PgError::Auth("the server requires a password but none was configured".into()))
    }
}
