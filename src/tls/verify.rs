//! Certificate verification: trust anchors from webpki roots, `control/tlsca` or a qmail-tls
//! file, and the [`Recorder`] verifier, which checks with each source in turn, records the
//! result for the report, and refuses the handshake only when the level requires it.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{Anchors, Level, Policy};
use crate::control;

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
pub struct Recorder {
    sources: Vec<(String, Arc<WebPkiServerVerifier>)>,
    enforce: bool,
    result: Mutex<Option<Result<String, String>>>,
}

impl Recorder {
    pub fn new(provider: Arc<CryptoProvider>, policy: &Policy) -> Result<Recorder, String> {
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

    pub fn outcome(&self) -> Result<String, String> {
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

pub fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::AlertReceived(a) => format!("handshake failed: the server sent alert {a:?}"),
        rustls::Error::PeerIncompatible(p) => {
            format!("handshake failed: no common protocol or cipher ({p:?})")
        }
        other => format!("handshake failed: {other}"),
    }
}
