//! STARTTLS: the per-destination policy (levels ordered like Postfix's), the trust anchors, and
//! the rustls handshake with a verifier that always checks the chain and the host name, and
//! records the result, so `may` can report "unverified: why" and `verify` can refuse.
//!
//! The policy is decided per peer before connecting ([`Tls::policy`]); DANE and MTA-STS will
//! plug in there as further sources of a level and of trust anchors.

use std::fmt;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    SignatureScheme, StreamOwned,
};

use crate::control;
use crate::failure::Failure;
use crate::route::Peer;

/// TLS security levels, weakest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Never STARTTLS.
    None,
    /// Opportunistic: encrypt if offered, verify and report, deliver either way.
    May,
    /// TLS required, any certificate.
    Encrypt,
    /// TLS required, valid chain and host name.
    Verify,
}

impl Level {
    fn parse(s: &[u8]) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_slice() {
            b"none" => Level::None,
            b"may" => Level::May,
            b"encrypt" => Level::Encrypt,
            b"verify" => Level::Verify,
            _ => return None,
        })
    }

    pub fn required(self) -> bool {
        self >= Level::Encrypt
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::May => "may",
            Level::Encrypt => "encrypt",
            Level::Verify => "verify",
        }
    }
}

/// Where trust comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anchors {
    /// webpki roots, then `control/tlsca` if present.
    Public,
    /// Only the CA certificates in this file (`control/tlshosts/<host>.pem`).
    File(String),
}

/// The decision for one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub level: Level,
    pub anchors: Anchors,
    /// What set the level, for reports ("default", "control/tlspolicy", a qmail-tls file).
    pub source: String,
}

/// One `control/tlspolicy` table: `key:level`, keys as in smtproutes.
struct Table(Vec<(Vec<u8>, Level)>);

impl Table {
    fn load() -> Result<Table, Failure> {
        let Some(data) = control::read_file("tlspolicy")? else {
            return Ok(Table(Vec::new()));
        };
        let mut entries = Vec::new();
        for (n, line) in control::lines(&data) {
            let line = line.trim_ascii();
            let Some(colon) = line.iter().rposition(|&b| b == b':') else {
                return Err(control::syntax(
                    "tlspolicy",
                    n,
                    "expected destination:level",
                ));
            };
            // The last colon: a key may be an IPv6 literal such as [2001:db8::1].
            let (key, rest) = line.split_at(colon);
            let level =
                Level::parse(rest.get(1..).unwrap_or_default().trim_ascii()).ok_or_else(|| {
                    control::syntax("tlspolicy", n, "level must be none, may, encrypt or verify")
                })?;
            entries.push((key.trim_ascii().to_ascii_lowercase(), level));
        }
        Ok(Table(entries))
    }

    /// The most specific entry for `name` (exact, then `.suffix` longest first); last line wins.
    fn lookup(&self, name: &[u8]) -> Option<Level> {
        if name.is_empty() {
            return None;
        }
        control::suffix_keys(name).iter().find_map(|k| self.get(k))
    }

    fn get(&self, key: &[u8]) -> Option<Level> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, l)| *l)
    }
}

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

    /// Decides the level for `peer` (reached for recipient domain `domain`). Explicit
    /// entries (a qmail-tls `.pem`, tlspolicy lines for the domain or the host) combine by
    /// taking the strongest, so nothing silently weakens a requirement. Without one,
    /// `notlshosts/<host>` or `tlshosts/exhaustivelist` mean none, else the `:level` default
    /// line, else `may`.
    pub fn policy(&self, peer: &Peer, domain: &[u8]) -> Policy {
        let name = String::from_utf8_lossy(&peer.name).into_owned();
        let key = if peer.name.is_empty() {
            format!("[{}]", peer.ip).into_bytes()
        } else {
            peer.name.clone()
        };
        let mut best: Option<Policy> = None;
        let mut consider = |p: Policy| {
            if best.as_ref().is_none_or(|b| p.level > b.level) {
                best = Some(p);
            }
        };
        let pem = format!("tlshosts/{name}.pem");
        if !name.is_empty() && !name.contains('/') && control::exists(&pem) {
            consider(Policy {
                level: Level::Verify,
                anchors: Anchors::File(format!("control/{pem}")),
                source: format!("control/{pem}"),
            });
        }
        for (k, what) in [(&domain.to_vec(), "domain"), (&key, "host")] {
            if let Some(level) = self.table.lookup(k) {
                consider(Policy {
                    level,
                    anchors: Anchors::Public,
                    source: format!("control/tlspolicy ({what})"),
                });
            }
        }
        if let Some(p) = best {
            return p;
        }
        let no = format!("notlshosts/{name}");
        if !name.is_empty() && !name.contains('/') && control::exists(&no) {
            return Policy {
                level: Level::None,
                anchors: Anchors::Public,
                source: format!("control/{no}"),
            };
        }
        if control::exists("tlshosts/exhaustivelist") {
            return Policy {
                level: Level::None,
                anchors: Anchors::Public,
                source: "control/tlshosts/exhaustivelist".into(),
            };
        }
        match self.table.get(b"") {
            Some(level) => Policy {
                level,
                anchors: Anchors::Public,
                source: "control/tlspolicy (default)".into(),
            },
            None => Policy {
                level: Level::May,
                anchors: Anchors::Public,
                source: "default".into(),
            },
        }
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

fn roots_from_file(path: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let (added, _) = roots.add_parsable_certificates(certs.filter_map(Result::ok));
    if added == 0 {
        return Err(format!("no usable CA certificate in {path}"));
    }
    Ok(roots)
}

/// Verifies with each trust source in turn and records the result; refuses the handshake only
/// when the level requires verification. Handshake signatures are always checked.
#[derive(Debug)]
struct Recorder {
    sources: Vec<(String, Arc<WebPkiServerVerifier>)>,
    enforce: bool,
    result: Mutex<Option<Result<String, String>>>,
}

impl Recorder {
    fn new(provider: Arc<CryptoProvider>, policy: &Policy) -> Result<Recorder, String> {
        let mut stores: Vec<(String, RootCertStore)> = Vec::new();
        match &policy.anchors {
            Anchors::File(path) => stores.push((path.clone(), roots_from_file(path)?)),
            Anchors::Public => {
                stores.push((
                    "webpki roots".into(),
                    RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                ));
                if control::exists("tlsca") {
                    match roots_from_file("control/tlsca") {
                        Ok(r) => stores.push(("control/tlsca".into(), r)),
                        Err(e) if policy.level == Level::Verify => return Err(e),
                        Err(_) => {}
                    }
                }
            }
        }
        let mut sources = Vec::new();
        for (label, store) in stores {
            let v = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| e.to_string())?;
            sources.push((label, v));
        }
        Ok(Recorder {
            sources,
            enforce: policy.level == Level::Verify,
            result: Mutex::new(None),
        })
    }

    fn outcome(&self) -> Result<String, String> {
        self.result
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| Err("no certificate was checked".into()))
    }

    fn first(&self) -> Result<&Arc<WebPkiServerVerifier>, rustls::Error> {
        self.sources
            .first()
            .map(|(_, v)| v)
            .ok_or(rustls::Error::General("no trust anchors".into()))
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        ee: &CertificateDer<'_>,
        im: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let ServerName::IpAddress(_) = name {
            // Never verify against an IP address (a `verify` level refused [ip] routes before
            // the handshake): there is no host name to check, and the report says so.
            if let Ok(mut r) = self.result.lock() {
                *r = Some(Err("an [ip] route has no host name to check".into()));
            }
            return Ok(ServerCertVerified::assertion());
        }
        let mut last = None;
        let mut outcome = Err(String::new());
        for (label, v) in &self.sources {
            match v.verify_server_cert(ee, im, name, ocsp, now) {
                Ok(_) => {
                    outcome = Ok(label.clone());
                    last = None;
                    break;
                }
                Err(e) => {
                    // Keep the most telling reason: an unknown issuer in one store says
                    // less than a name or date problem in another.
                    let unknown = matches!(
                        e,
                        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
                    );
                    if last.is_none() || !unknown {
                        outcome = Err(describe_cert(&e, name));
                        last = Some(e);
                    }
                }
            }
        }
        if let Ok(mut r) = self.result.lock() {
            *r = Some(outcome);
        }
        match last {
            Some(e) if self.enforce => Err(e),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.first()?.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.first()?.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.sources
            .first()
            .map(|(_, v)| v.supported_verify_schemes())
            .unwrap_or_default()
    }
}

fn describe_cert(e: &rustls::Error, name: &ServerName<'_>) -> String {
    // IP addresses never get here: `verify_server_cert` does not verify against them.
    let shown = match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        _ => "the peer".to_string(),
    };
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate is not yet valid".into()
            }
            CertificateError::UnknownIssuer => {
                "certificate chain does not lead to a trusted CA".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("certificate is not valid for {shown}")
            }
            CertificateError::BadSignature => "certificate has a bad signature".into(),
            CertificateError::Revoked => "certificate is revoked".into(),
            other => format!("certificate rejected: {other:?}"),
        },
        other => describe(other),
    }
}

fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::AlertReceived(a) => format!("handshake failed: the server sent alert {a:?}"),
        rustls::Error::PeerIncompatible(p) => {
            format!("handshake failed: no common protocol or cipher ({p:?})")
        }
        other => format!("handshake failed: {other}"),
    }
}
