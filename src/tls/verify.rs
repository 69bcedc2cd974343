//! Certificate verification: trust anchors from webpki roots, `control/tlsca` or a qmail-tls
//! file, pinned certificates ([`is_pinned`]), and the [`Recorder`] verifier, which checks with
//! each source in turn, records the result for the report, and refuses the handshake only when
//! the level requires it. Handshake signatures are checked by [`super::sig`], and every failure
//! is put in words by [`describe`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{Anchors, Level, Policy, sig};
use crate::control;

/// The certificates of a trust file, and a store of those webpki can use as trust anchors.
/// A certificate it cannot use as an anchor can still be pinned (see [`is_pinned`]).
fn roots_from_file(path: &str) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), String> {
    let mut roots = RootCertStore::empty();
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(path, &e))?
        .filter_map(Result::ok)
        .collect();
    roots.add_parsable_certificates(certs.iter().cloned());
    if certs.is_empty() {
        return Err(format!("no usable CA certificate in {path}"));
    }
    Ok((roots, certs))
}

/// True when the certificate the peer presented is itself one of `trusted` (byte for byte):
/// the admin named this very certificate, as a DANE-EE record or a qmail-tls pin does, so no
/// chain is needed and the certificate's form (CA:TRUE, X.509 version 1) does not matter.
/// The handshake signature ([`super::sig`]) proves the peer holds its key.
pub fn is_pinned(presented: &CertificateDer<'_>, trusted: &[CertificateDer<'_>]) -> bool {
    trusted.iter().any(|t| t.as_ref() == presented.as_ref())
}

/// One trust source: a label for reports, a chain verifier (when the source has usable
/// anchors), and its certificates for pin matching (none for the public roots).
#[derive(Debug)]
struct Source {
    label: String,
    chains: Option<Arc<WebPkiServerVerifier>>,
    pins: Vec<CertificateDer<'static>>,
    /// A per-host file (`control/tlshosts/<host>.pem`): its name is the host's, so a pinned
    /// certificate from it needs no name check.
    per_host: bool,
}

/// Why a trust file could not be opened, in plain words (not Rust's error formatting).
fn unreadable(path: &str, e: &rustls::pki_types::pem::Error) -> String {
    use std::io::ErrorKind;
    let why = match e {
        rustls::pki_types::pem::Error::Io(io) => match io.kind() {
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::NotFound => "no such file",
            ErrorKind::IsADirectory => "it is a directory",
            _ => "read error",
        },
        _ => "not a PEM file",
    };
    format!("cannot read {path} ({why})")
}

/// What the certificate check of one handshake found: `Ok(by what)` or `Err(why)`, kept for
/// the report (a verifier is called inside rustls and can only say yes or no there).
#[derive(Debug, Default)]
pub struct Checked(Mutex<Option<Result<String, String>>>);

impl Checked {
    pub fn set(&self, outcome: Result<String, String>) {
        if let Ok(mut r) = self.0.lock() {
            *r = Some(outcome);
        }
    }

    /// What was found, if a certificate was checked.
    pub fn found(&self) -> Option<Result<String, String>> {
        self.0.lock().ok().and_then(|r| r.clone())
    }

    pub fn get(&self) -> Result<String, String> {
        self.found()
            .unwrap_or_else(|| Err("no certificate was checked".into()))
    }
}

/// The proof of possession of one handshake: signatures checked against the presented leaf's
/// key ([`super::sig`]), remembering whether one did not verify (a forgery).
#[derive(Debug)]
pub struct Possession {
    algs: WebPkiSupportedAlgorithms,
    forged: AtomicBool,
}

impl Possession {
    pub fn new(provider: &CryptoProvider) -> Possession {
        Possession {
            algs: provider.signature_verification_algorithms,
            forged: AtomicBool::new(false),
        }
    }

    /// True when a handshake signature did not verify against the presented leaf.
    pub fn forged(&self) -> bool {
        self.forged.load(Ordering::Relaxed)
    }

    fn seen(
        &self,
        checked: Result<HandshakeSignatureValid, rustls::Error>,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only a signature that does not verify is a forgery; an unreadable certificate or an
        // unadvertised scheme keeps its own description.
        if let Err(rustls::Error::InvalidCertificate(CertificateError::BadSignature)) = checked {
            self.forged.store(true, Ordering::Relaxed);
        }
        checked
    }

    pub fn tls12(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.seen(sig::verify_tls12(m, c, d, &self.algs))
    }

    pub fn tls13(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.seen(sig::verify_tls13(m, c, d, &self.algs))
    }

    pub fn schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Verifies with each trust source in turn and records the result; refuses the handshake only
/// when the level requires verification. Handshake signatures are always checked, against the
/// presented leaf's key whatever its form ([`super::sig`]).
#[derive(Debug)]
pub struct Recorder {
    sources: Vec<Source>,
    possession: Possession,
    enforce: bool,
    /// Why the peer cannot be verified whatever it presents (no host name), if so.
    no_name: Option<String>,
    result: Checked,
    /// Each trust source tried, with its result (for `qremote-probe`).
    checks: Mutex<Vec<(String, Result<String, String>)>>,
}

/// Why the handshake failed when the peer's signature was not made with its certificate's key.
pub const FORGED: &str =
    "the server's handshake signature does not match its certificate (it lacks the key)";

impl Recorder {
    pub fn new(
        provider: Arc<CryptoProvider>,
        policy: &Policy,
        no_name: Option<String>,
    ) -> Result<Recorder, String> {
        let mut files: Vec<(String, RootCertStore, Vec<CertificateDer<'static>>, bool)> =
            Vec::new();
        match &policy.anchors {
            Anchors::File(path) => {
                let (store, certs) = roots_from_file(path)?;
                files.push((path.clone(), store, certs, true));
            }
            // DANE has its own verifier (`dane::DaneVerifier`), never this one.
            Anchors::Dane(_) => return Err("DANE records need the DANE verifier".into()),
            Anchors::Public => {
                files.push((
                    "webpki roots".into(),
                    RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                    Vec::new(),
                    false,
                ));
                if control::exists("tlsca") {
                    match roots_from_file("control/tlsca") {
                        Ok((store, certs)) => {
                            files.push(("control/tlsca".into(), store, certs, false));
                        }
                        Err(e) if policy.level >= Level::Verify => return Err(e),
                        Err(_) => {}
                    }
                }
            }
        }
        let mut sources = Vec::new();
        for (label, store, pins, per_host) in files {
            let chains = if store.is_empty() {
                None
            } else {
                Some(
                    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                        .build()
                        .map_err(|_| format!("no usable CA certificate in {label}"))?,
                )
            };
            sources.push(Source {
                label,
                chains,
                pins,
                per_host,
            });
        }
        Ok(Recorder {
            possession: Possession::new(&provider),
            sources,
            // Every level from `verify` up must authenticate (issue 7: a level added above
            // `verify` must not silently accept what this verifier rejects).
            enforce: policy.level >= Level::Verify,
            no_name,
            result: Checked::default(),
            checks: Mutex::new(Vec::new()),
        })
    }

    /// Why the verifier made the handshake fail, if it did: a forged handshake signature, or
    /// (when verification is enforced) the certificate.
    pub fn refusal(&self) -> Option<String> {
        if self.possession.forged() {
            return Some(FORGED.into());
        }
        match self.result.found() {
            Some(Err(why)) if self.enforce => Some(why),
            _ => None,
        }
    }

    /// Each trust source tried on the last certificate, in order: what verified it, or why not.
    pub fn checks(&self) -> Vec<(String, Result<String, String>)> {
        self.checks.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn outcome(&self) -> Result<String, String> {
        self.result.get()
    }

    /// A pin match in one source: `Some(Ok)` verified, `Some(Err)` pinned but for another name,
    /// `None` not pinned there.
    fn pinned(
        &self,
        source: &Source,
        ee: &CertificateDer<'_>,
        name: &ServerName<'_>,
    ) -> Option<Result<String, rustls::Error>> {
        if !is_pinned(ee, &source.pins) {
            return None;
        }
        let label = format!("{} (the pinned certificate itself)", source.label);
        if source.per_host {
            return Some(Ok(label));
        }
        // A shared file (control/tlsca) is not bound to a host: the certificate must name it.
        let named = ParsedCertificate::try_from(ee)
            .and_then(|cert| rustls::client::verify_server_name(&cert, name));
        Some(named.map(|()| label))
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
        if let Some(why) = &self.no_name {
            // No host name (an [ip] route, an MX written as an address): nothing the peer
            // presents can be verified. `verify` refuses such peers before connecting; this
            // keeps the refusal should a caller get here anyway.
            self.result.set(Err(why.clone()));
            return if self.enforce {
                Err(rustls::Error::General(why.clone()))
            } else {
                Ok(ServerCertVerified::assertion())
            };
        }
        let mut last = None;
        let mut outcome = Err(String::new());
        let mut checks = Vec::new();
        for source in &self.sources {
            let result = match self.pinned(source, ee, name) {
                Some(r) => r,
                None => match &source.chains {
                    Some(v) => v
                        .verify_server_cert(ee, im, name, ocsp, now)
                        .map(|_| source.label.clone()),
                    None => Err(rustls::Error::InvalidCertificate(
                        CertificateError::UnknownIssuer,
                    )),
                },
            };
            checks.push((
                source.label.clone(),
                result.clone().map_err(|e| describe_cert(&e, name)),
            ));
            match result {
                Ok(label) => {
                    outcome = Ok(label);
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
        self.result.set(outcome);
        if let Ok(mut c) = self.checks.lock() {
            *c = checks;
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
        self.possession.tls12(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.possession.tls13(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.possession.schemes()
    }
}

/// A verification failure for `name` in words an admin understands.
pub(super) fn describe_cert(e: &rustls::Error, name: &ServerName<'_>) -> String {
    match (e, name) {
        (rustls::Error::InvalidCertificate(c), ServerName::DnsName(d)) => {
            cert_problem(c, d.as_ref())
        }
        (rustls::Error::InvalidCertificate(c), _) => cert_problem(c, "the peer"),
        _ => describe(e),
    }
}

/// A certificate problem in words an admin understands (never Rust's Debug text); `shown` is
/// the name the certificate was checked against.
fn cert_problem(c: &CertificateError, shown: &str) -> String {
    match c {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "certificate has expired".into()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "certificate is not yet valid".into()
        }
        CertificateError::UnknownIssuer => "certificate chain does not lead to a trusted CA".into(),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!("certificate is not valid for {shown}")
        }
        CertificateError::BadSignature => "certificate has a bad signature".into(),
        CertificateError::Revoked => "certificate is revoked".into(),
        CertificateError::BadEncoding => "certificate is not valid DER (it cannot be read)".into(),
        CertificateError::UnhandledCriticalExtension => {
            "certificate has a critical extension this client does not know".into()
        }
        CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "certificate is signed with an algorithm this client does not support".into()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "certificate is not meant for TLS servers (extended key usage)".into()
        }
        CertificateError::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
            Some(w) => describe_webpki(w),
            None => "certificate rejected".into(),
        },
        _ => "certificate rejected".into(),
    }
}

/// The webpki problems rustls passes on without a variant of its own.
fn describe_webpki(e: &webpki::Error) -> String {
    use webpki::Error as W;
    match e {
        W::CaUsedAsEndEntity => {
            "certificate is a CA certificate (CA:TRUE), not a server certificate".into()
        }
        W::EndEntityUsedAsCa => "certificate chain uses a server certificate as a CA".into(),
        W::UnsupportedCertVersion => {
            "certificate is X.509 version 1, which has no host names to verify".into()
        }
        W::PathLenConstraintViolated | W::MaximumPathDepthExceeded => {
            "certificate chain is longer than its CA allows".into()
        }
        W::NameConstraintViolation => "certificate is outside its CA's name constraints".into(),
        W::CertDistrusted => "certificate's CA is distrusted".into(),
        W::MalformedExtensions | W::ExtensionValueInvalid | W::EmptyEkuExtension => {
            "certificate has malformed extensions".into()
        }
        W::UnsupportedCriticalExtension => {
            "certificate has a critical extension this client does not know".into()
        }
        _ => "certificate rejected".into(),
    }
}

/// A handshake failure in words an admin understands (never Rust's Debug text).
pub fn describe(e: &rustls::Error) -> String {
    use rustls::PeerIncompatible as P;
    let why = match e {
        rustls::Error::AlertReceived(a) => match a.as_str() {
            Some(name) => format!("the server sent the alert \"{}\"", words(name)),
            None => format!("the server sent TLS alert {}", u8::from(*a)),
        },
        rustls::Error::PeerIncompatible(p) => match p {
            P::NoCipherSuitesInCommon => "no cipher suite in common".into(),
            P::NoKxGroupsInCommon => "no key exchange group in common".into(),
            P::NoSignatureSchemesInCommon => "no signature algorithm in common".into(),
            P::ServerDoesNotSupportTls12Or13
            | P::Tls12NotOffered
            | P::Tls12NotOfferedOrEnabled
            | P::ServerTlsVersionIsDisabledByOurConfig
            | P::SupportedVersionsExtensionRequired => {
                "the server offers no TLS version this client allows (TLS 1.2 or 1.3)".into()
            }
            _ => "the server's TLS lacks something this client requires".into(),
        },
        rustls::Error::InvalidCertificate(c) => cert_problem(c, "the peer"),
        rustls::Error::NoCertificatesPresented => "the server sent no certificate".into(),
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => {
            "the server's answer is not the TLS it should be".into()
        }
        rustls::Error::PeerMisbehaved(_) => "the server broke the TLS protocol".into(),
        rustls::Error::DecryptError => "the server's data could not be decrypted".into(),
        rustls::Error::PeerSentOversizedRecord => "the server sent an oversized TLS record".into(),
        rustls::Error::General(why) => why.clone(),
        _ => "TLS error in this client".into(),
    };
    format!("handshake failed: {why}")
}

/// "HandshakeFailure" -> "handshake failure".
fn words(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_names_become_words() {
        assert_eq!(words("HandshakeFailure"), "handshake failure");
        let e = rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion);
        assert_eq!(
            describe(&e),
            "handshake failed: the server sent the alert \"protocol version\""
        );
    }

    /// Words like `CaUsedAsEndEntity`, or `Other(`: what `{:?}` leaves in a text.
    fn looks_like_debug(text: &str) -> bool {
        let camel = text.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| {
            w.as_bytes()
                .windows(2)
                .any(|p| p[0].is_ascii_lowercase() && p[1].is_ascii_uppercase())
        });
        let glued = text
            .as_bytes()
            .windows(2)
            .any(|p| p[0].is_ascii_alphanumeric() && p[1] == b'(');
        camel || glued || text.contains('{')
    }

    #[test]
    fn every_failure_is_a_sentence() {
        let other = |w: webpki::Error| {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                Arc::new(w),
            )))
        };
        let errors = [
            rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
            rustls::Error::AlertReceived(rustls::AlertDescription::Unknown(200)),
            rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NoCipherSuitesInCommon),
            rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NullCompressionRequired),
            rustls::Error::PeerMisbehaved(rustls::PeerMisbehaved::IllegalMiddleboxChangeCipherSpec),
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
            rustls::Error::DecryptError,
            rustls::Error::NoCertificatesPresented,
            rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure),
            rustls::Error::InvalidCertificate(CertificateError::UnknownRevocationStatus),
            other(webpki::Error::CaUsedAsEndEntity),
            other(webpki::Error::UnsupportedCertVersion),
            other(webpki::Error::MaximumPathBuildCallsExceeded),
            rustls::Error::Other(rustls::OtherError(Arc::new(webpki::Error::BadDer))),
        ];
        let name = ServerName::try_from("mx.example").unwrap();
        for e in &errors {
            for text in [describe(e), describe_cert(e, &name)] {
                assert!(!looks_like_debug(&text), "{text}");
            }
        }
        assert!(looks_like_debug(&format!("{:?}", errors[10])));
    }

    /// Every level from `verify` up enforces: a peer without a host name is refused at
    /// `dane` too, should such a policy ever reach this verifier.
    #[test]
    fn levels_above_verify_enforce() {
        for (level, enforced) in [
            (Level::May, false),
            (Level::Encrypt, false),
            (Level::Verify, true),
            (Level::Dane, true),
        ] {
            let policy = Policy::public(level, "test");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let r = Recorder::new(provider, &policy, Some("no host name".into())).unwrap();
            let cert = CertificateDer::from(vec![0u8; 4]);
            let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
            let got = r.verify_server_cert(&cert, &[], &name, &[], UnixTime::now());
            assert_eq!(got.is_err(), enforced, "{level:?}");
        }
    }
}
