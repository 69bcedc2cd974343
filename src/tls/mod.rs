//! STARTTLS: the per-destination policy ([`policy`]), the trust anchors and the verifier
//! ([`verify`]), and the rustls handshake here, with a verifier that always checks the chain
//! and the host name and records the result, so `may` can report "unverified: why" and
//! `verify` can refuse.
//!
//! The policy is decided per peer before connecting ([`Tls::policy`]); DANE and MTA-STS plug
//! in there as further sources of a level and of trust anchors.

pub mod policy;
pub mod verify;

use std::fmt;
use std::net::TcpStream;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::control;
use crate::failure::Failure;
use crate::route::Peer;

use policy::Table;
pub use policy::{Anchors, Level, Policy};
use verify::{Recorder, describe};

/// Loaded once per process, after routing: `control/tlspolicy` only. The qmail-tls files, CA
/// files and the client certificate are read when a connection gets to STARTTLS.
pub struct Tls {
    table: Table,
    provider: Arc<CryptoProvider>,
}

impl Tls {
    pub fn load() -> Result<Tls, Failure> {
        Ok(Tls {
            table: Table::load()?,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// The TLS policy for `peer`, reached for recipient domain `domain` (see [`Table::policy`]).
    pub fn policy(&self, peer: &Peer, domain: &[u8]) -> Policy {
        self.table.policy(peer, domain)
    }

    /// Performs the handshake on a socket that just got 220 to STARTTLS.
    pub fn handshake(
        &self,
        tcp: TcpStream,
        peer: &Peer,
        policy: &Policy,
    ) -> Result<(StreamOwned<ClientConnection, TcpStream>, Session), String> {
        let name = std::str::from_utf8(&peer.name)
            .ok()
            .and_then(|n| ServerName::try_from(n.trim_end_matches('.').to_string()).ok());
        if policy.level == Level::Verify && name.is_none() {
            return Err(if peer.name.is_empty() {
                "an [ip] route has no host name to verify".into()
            } else {
                "the host name is not a valid DNS name".into()
            });
        }
        let verifier = Arc::new(Recorder::new(self.provider.clone(), policy)?);
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let mut note = String::new();
        let config = match client_cert() {
            Ok(Some((chain, key))) => match builder.clone().with_client_auth_cert(chain, key) {
                Ok(c) => c,
                Err(e) => {
                    note = format!("; control/clientcert.pem not used: {e}");
                    builder.with_no_client_auth()
                }
            },
            Ok(None) => builder.with_no_client_auth(),
            Err(e) => {
                note = format!("; control/clientcert.pem not used: {e}");
                builder.with_no_client_auth()
            }
        };
        let server_name = name.unwrap_or_else(|| ServerName::IpAddress(peer.ip.into()));
        let conn =
            ClientConnection::new(Arc::new(config), server_name).map_err(|e| e.to_string())?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                let why = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    Some(rustls::Error::InvalidCertificate(_)) => {
                        verifier.outcome().err().unwrap_or_else(|| e.to_string())
                    }
                    Some(tls) => describe(tls),
                    None => format!("connection died during the handshake ({e})"),
                };
                let ciphers = if control::exists("tlsclientciphers") {
                    " (control/tlsclientciphers is ignored)"
                } else {
                    ""
                };
                return Err(format!("{why}{ciphers}"));
            }
        }
        let verified = match verifier.outcome() {
            Ok(by) => Verified::Yes(by),
            Err(why) => Verified::No(why),
        };
        let session = Session {
            version: stream.conn.protocol_version().map_or("TLS".into(), |v| {
                format!("{v:?}").replace("TLSv1_", "TLSv1.")
            }),
            cipher: stream
                .conn
                .negotiated_cipher_suite()
                .map_or("unknown cipher".into(), |c| format!("{:?}", c.suite())),
            verified,
            name: if peer.name.is_empty() {
                format!("[{}]", peer.ip)
            } else {
                String::from_utf8_lossy(&peer.name).into_owned()
            },
            note,
        };
        Ok((stream, session))
    }
}

/// qmail-tls's `control/clientcert.pem`: the chain and the key in one PEM file.
fn client_cert() -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, String> {
    let Ok(Some(pem)) = control::read_file("clientcert.pem") else {
        return Ok(None);
    };
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    let key =
        PrivateKeyDer::from_pem_slice(&pem).map_err(|_| "no private key in it".to_string())?;
    if chain.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(Some((chain, key)))
}

/// The negotiated session, for the report.
pub struct Session {
    pub version: String,
    pub cipher: String,
    pub verified: Verified,
    pub name: String,
    pub note: String,
}

pub enum Verified {
    /// Verified, by what.
    Yes(String),
    /// Not verified, why.
    No(String),
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS: {} with {}, ", self.version, self.cipher)?;
        match &self.verified {
            Verified::Yes(by) => write!(f, "verified as {} by {by}", self.name)?,
            Verified::No(why) => write!(f, "unverified: {why}")?,
        }
        write!(f, "{}.", self.note)
    }
}
