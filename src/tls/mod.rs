//! STARTTLS: the per-destination policy ([`policy`]), the trust anchors and the verifier
//! ([`verify`]), and the rustls handshake here, with a verifier that always checks the chain
//! and the host name and records the result, so `may` can report "unverified: why" and
//! `verify` can refuse.
//!
//! The policy is decided per peer before connecting ([`Tls::policy`]); DANE and MTA-STS plug
//! in there as further sources of a level and of trust anchors.

pub mod dane;
pub mod policy;
pub mod sig;
pub mod verify;

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ProtocolVersion, StreamOwned};

use crate::conn::handshake_by;
use crate::control;
use crate::failure::Failure;
use crate::route::Peer;

use dane::{DaneVerifier, Lookup};
use policy::Table;
pub use policy::{Anchors, Level, Policy, StsVerdict};
use verify::{Recorder, describe};

/// Loaded once per process, after routing: `control/tlspolicy`, then the recipient domain's
/// MTA-STS policy ([`Tls::set_sts`]). The qmail-tls files, CA
/// files and the client certificate are read when a connection gets to STARTTLS.
pub struct Tls {
    pub table: Table,
    sts: Option<crate::sts::Active>,
    /// The TLSA lookups of this delivery (one per MX host, made when first needed).
    dane: RefCell<Lookup>,
    provider: Arc<CryptoProvider>,
}

impl Tls {
    pub fn load() -> Result<Tls, Failure> {
        Ok(Tls {
            table: Table::load()?,
            sts: None,
            dane: RefCell::new(Lookup::load()?),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// The recipient domain's MTA-STS policy in force, from [`crate::sts::discover`].
    pub fn set_sts(&mut self, active: Option<crate::sts::Active>) {
        self.sts = active;
    }

    /// The crypto provider, shared with the MTA-STS policy fetch.
    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// The TLS policy for `peer`, reached for recipient domain `domain`: an override line
    /// ([`Table::forced`]) alone, else [`Table::policy`] with the MTA-STS policy, joined with
    /// DANE ([`policy::combine`]; this may make the one TLSA query for the host).
    pub fn policy(&self, peer: &Peer, domain: &[u8]) -> Policy {
        self.policy_given(peer, domain, self.sts.as_ref())
    }

    /// DANE's decision for `peer`, from this delivery's TLSA lookups (one query per host and
    /// port, the first time it is asked): what [`Tls::policy`] joins, and what
    /// `qremote-probe` shows. Not for a peer an override line decides: no delivery asks then.
    pub fn dane_decision(&self, peer: &Peer, domain: &[u8]) -> dane::Decision {
        match self.dane.try_borrow_mut() {
            Ok(mut lookup) => lookup.decide(peer, domain),
            Err(_) => dane::Decision::Failed {
                owner: String::from_utf8_lossy(&peer.name).into_owned(),
                why: "internal error: TLSA lookups in use twice".into(),
            },
        }
    }

    /// The policy without the MTA-STS policy: `qremote-probe` shows what that changed.
    pub fn policy_without_sts(&self, peer: &Peer, domain: &[u8]) -> Policy {
        self.policy_given(peer, domain, None)
    }

    fn policy_given(&self, peer: &Peer, domain: &[u8], sts: Option<&crate::sts::Active>) -> Policy {
        if let Some(forced) = self.table.forced(peer, domain) {
            return forced;
        }
        let others = self.table.policy(peer, domain, sts);
        policy::combine(others, self.dane_decision(peer, domain))
    }

    /// True when an MTA-STS `enforce` policy must not drop `peer` even if its `mx` patterns
    /// do not list it: an override line decides for the peer, or DANE applies to it (usable
    /// TLSA records; RFC 8461 §2: where DANE applies to an MX, DANE wins). Asked before the
    /// first connection ([`crate::sts::Sts::filter`]); the TLSA query it may make is the one
    /// [`Tls::policy`] reuses for that host, so no host is asked twice.
    pub fn sts_exempt(&self, peer: &Peer, domain: &[u8]) -> bool {
        self.overridden(peer, domain)
            || matches!(self.dane_decision(peer, domain), dane::Decision::Usable(_))
    }

    /// True if an override line decides for `peer` (published requirements do not count).
    pub fn overridden(&self, peer: &Peer, domain: &[u8]) -> bool {
        self.table.forced(peer, domain).is_some()
    }

    /// Why `peer` can never be verified, when `policy` requires verification: it has no host
    /// name (an `[ip]` route, or a name that is an IP address). Nothing the peer could say
    /// changes that, so such a peer is refused before connecting.
    pub fn unverifiable(&self, peer: &Peer, policy: &Policy) -> Option<String> {
        if policy.level < Level::Verify {
            return None;
        }
        host_name(peer, "verify").err()
    }

    /// The policy for `peer` when credentials will be sent (see [`Table::with_credentials`]).
    pub fn with_credentials(&self, policy: Policy, peer: &Peer) -> Policy {
        self.table.with_credentials(policy, peer)
    }

    /// Performs the handshake on a socket that just got 220 to STARTTLS, all of it by
    /// `deadline` (every socket read and write gets only the time left).
    pub fn handshake(
        &self,
        tcp: TcpStream,
        peer: &Peer,
        policy: &Policy,
        deadline: Instant,
    ) -> Result<(StreamOwned<ClientConnection, TcpStream>, Session), String> {
        if let Some(why) = self.unverifiable(peer, policy) {
            return Err(why);
        }
        // With DANE, the name checked and sent as SNI is the TLSA base domain (RFC 7672 8.1).
        let (name, verifier) = match policy.dane() {
            Some(d) => (
                dns_name(d.base.as_bytes(), "check"),
                Checker::Dane(Arc::new(DaneVerifier::new(self.provider.clone(), d))),
            ),
            None => {
                let name = host_name(peer, "check");
                let recorder =
                    Recorder::new(self.provider.clone(), policy, name.as_ref().err().cloned())?;
                (name, Checker::WebPki(Arc::new(recorder)))
            }
        };
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| describe(&e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.get());
        let mut note = String::new();
        let config = match client_cert() {
            Ok(Some((chain, key))) => match builder.clone().with_client_auth_cert(chain, key) {
                Ok(c) => c,
                Err(e) => {
                    let why = match e {
                        rustls::Error::InconsistentKeys(_) => {
                            "its key does not match its certificate".to_string()
                        }
                        _ => "its key cannot be used for TLS".to_string(),
                    };
                    note = format!("; control/clientcert.pem not used: {why}");
                    builder.with_no_client_auth()
                }
            },
            Ok(None) => builder.with_no_client_auth(),
            Err(e) => {
                note = format!("; control/clientcert.pem not used: {e}");
                builder.with_no_client_auth()
            }
        };
        // Without a host name: no SNI, and the verifier records why nothing was verified.
        let server_name = name.unwrap_or_else(|_| ServerName::IpAddress(peer.ip.into()));
        let conn =
            ClientConnection::new(Arc::new(config), server_name).map_err(|e| describe(&e))?;
        let mut stream = StreamOwned::new(conn, tcp);
        if let Err(e) = handshake_by(&mut stream, deadline) {
            let why = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(tls) => verifier.refusal().unwrap_or_else(|| describe(tls)),
                None => io_failure(&e),
            };
            let ciphers = if control::exists("tlsclientciphers") {
                " (control/tlsclientciphers is ignored)"
            } else {
                ""
            };
            return Err(format!("{why}{ciphers}"));
        }
        let checks = verifier.checks();
        let verified = match (verifier.outcome(), &verifier) {
            (Ok(by), Checker::Dane(_)) => Verified::Dane(by),
            (Ok(by), Checker::WebPki(_)) => Verified::Yes(by),
            (Err(why), _) => Verified::No(why),
        };
        let session = Session {
            version: match stream.conn.protocol_version() {
                Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
                Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
                _ => "TLS".into(),
            },
            cipher: stream
                .conn
                .negotiated_cipher_suite()
                .and_then(|c| c.suite().as_str())
                .unwrap_or("an unnamed cipher")
                .to_string(),
            verified,
            name: match policy.dane() {
                Some(d) => d.base.clone(),
                None if peer.name.is_empty() => format!("[{}]", peer.ip),
                None => String::from_utf8_lossy(&peer.name).into_owned(),
            },
            note: format!("{note}{}", policy.note),
            checks,
        };
        Ok((stream, session))
    }
}

/// The name to check the certificate against: a DNS name, never an address. An empty name is
/// an `[ip]` route; an MX target or relay written as an address (`127.0.0.201.`, `::1`,
/// `[192.0.2.1]`) is no more a host name than an `[ip]` route, though rustls would take it as
/// an IP-address server name. `verb` says what the missing name was needed for.
fn host_name(peer: &Peer, verb: &str) -> Result<ServerName<'static>, String> {
    dns_name(&peer.name, verb)
}

/// [`host_name`] for a name of any origin (a peer's, or a TLSA base domain).
fn dns_name(name: &[u8], verb: &str) -> Result<ServerName<'static>, String> {
    if name.is_empty() {
        return Err(format!("an [ip] route has no host name to {verb}"));
    }
    let text = std::str::from_utf8(name)
        .map_err(|_| "the host name is not a valid DNS name".to_string())?
        .trim_end_matches('.');
    let address = || format!("the host name {text} is an IP address, not a name to {verb}");
    if crate::route::literal(text.as_bytes()).is_some() {
        return Err(address());
    }
    match ServerName::try_from(text.to_string()) {
        Ok(ServerName::DnsName(d)) => Ok(ServerName::DnsName(d)),
        Ok(_) => Err(address()),
        Err(_) => Err("the host name is not a valid DNS name".into()),
    }
}

/// A handshake cut short by the connection itself, in words.
fn io_failure(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            "the handshake did not complete in time".into()
        }
        io::ErrorKind::UnexpectedEof => {
            "the server closed the connection during the handshake".into()
        }
        _ => "the connection died during the handshake".into(),
    }
}

/// The verifier of one handshake: webpki with the policy's anchors, or DANE.
enum Checker {
    WebPki(Arc<Recorder>),
    Dane(Arc<DaneVerifier>),
}

impl Checker {
    fn get(&self) -> Arc<dyn rustls::client::danger::ServerCertVerifier> {
        match self {
            Checker::WebPki(v) => v.clone(),
            Checker::Dane(v) => v.clone(),
        }
    }

    fn outcome(&self) -> Result<String, String> {
        match self {
            Checker::WebPki(v) => v.outcome(),
            Checker::Dane(v) => v.outcome(),
        }
    }

    /// Why the verifier made the handshake fail, if it did.
    fn refusal(&self) -> Option<String> {
        match self {
            Checker::WebPki(v) => v.refusal(),
            Checker::Dane(v) => v.refusal(),
        }
    }

    /// Each trust source and what it said (for `qremote-probe`).
    fn checks(&self) -> Vec<(String, Result<String, String>)> {
        match self {
            Checker::WebPki(v) => v.checks(),
            Checker::Dane(v) => vec![(v.source(), v.outcome())],
        }
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
    /// Each trust source tried, with its result (shown by `qremote-probe`).
    pub checks: Vec<(String, Result<String, String>)>,
}

pub enum Verified {
    /// Verified, by what.
    Yes(String),
    /// Authenticated by DANE, how (e.g. `DANE-EE (3 1 1)`).
    Dane(String),
    /// Not verified, why.
    No(String),
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS: {} with {}, ", self.version, self.cipher)?;
        match &self.verified {
            Verified::Yes(by) => write!(f, "verified as {} by {by}", self.name)?,
            Verified::Dane(how) => write!(f, "verified by {how} for {}", self.name)?,
            Verified::No(why) => write!(f, "unverified: {why}")?,
        }
        write!(f, "{}.", self.note)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str) -> Peer {
        Peer {
            name: name.as_bytes().to_vec(),
            ip: [127, 0, 0, 201].into(),
            port: 25,
            pref: 10,
            relay: false,
            mx_ad: false,
            addr_ad: false,
            expanded: None,
        }
    }

    #[test]
    fn only_an_override_or_usable_tlsa_exempt_a_peer_from_mta_sts() {
        let tls = Tls {
            table: Table::parse(b"forced.example:may!\n").unwrap(),
            sts: None,
            dane: RefCell::new(Lookup::load().unwrap()),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        };
        assert!(tls.sts_exempt(&peer("forced.example"), b"example"));
        // Insecure addresses: no DANE, so no TLSA query, and the policy decides.
        assert!(!tls.sts_exempt(&peer("mx.example"), b"example"));
    }

    #[test]
    fn only_dns_names_are_host_names() {
        for address in [
            "127.0.0.201",
            "127.0.0.201.",
            "::1",
            "fd77::25.",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            "IPv6:::1",
        ] {
            let why = host_name(&peer(address), "verify").unwrap_err();
            assert!(why.contains("is an IP address"), "{address}: {why}");
        }
        assert!(
            host_name(&peer(""), "verify")
                .unwrap_err()
                .contains("[ip] route")
        );
        assert!(host_name(&peer("fe80::1%lo"), "verify").is_err());
        assert!(host_name(&peer("a b"), "verify").is_err());
        assert!(matches!(
            host_name(&peer("mx.example."), "verify"),
            Ok(ServerName::DnsName(_))
        ));
    }
}
