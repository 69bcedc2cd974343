//! Proof of key possession, whatever the certificate's form: the TLS 1.2 / 1.3 handshake
//! signature is checked against the SubjectPublicKeyInfo of the leaf the peer presented,
//! found by a small bounded DER walk. webpki refuses to parse X.509 version 1 certificates
//! as end-entity certificates (and so would refuse their handshake signatures); here only
//! *verification* (chain, names, dates: [`super::verify`]) depends on the certificate's form,
//! never the proof that the peer holds the key. DANE-EE (RFC 7672) needs exactly this too,
//! as well as [`spki`] for its "SPKI" selector.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls13_signature_with_raw_key};
use rustls::pki_types::{SignatureVerificationAlgorithm, SubjectPublicKeyInfoDer};
use rustls::{DigitallySignedStruct, Error, PeerMisbehaved, SignatureScheme};

const SEQUENCE: u8 = 0x30;
const BIT_STRING: u8 = 0x03;
/// `[0] EXPLICIT Version` in a TBSCertificate (absent in version 1).
const VERSION_TAG: u8 = 0xa0;

/// One DER element read from the front of some input (also `qremote-probe`'s certificate
/// display).
pub struct Der<'a> {
    pub tag: u8,
    /// The whole element, header included.
    pub whole: &'a [u8],
    pub contents: &'a [u8],
    /// What follows the element.
    pub rest: &'a [u8],
}

/// The DER element at the front of `input`. Only single-byte tags and definite lengths up to
/// 4 bytes: what certificates use. Every length is checked against what is there.
pub fn element(input: &[u8]) -> Option<Der<'_>> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes.iter().fold(0usize, |a, &b| (a << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    let whole = input.get(..input.len() - after.len())?;
    Some(Der {
        tag,
        whole,
        contents,
        rest: after,
    })
}

/// The DER SubjectPublicKeyInfo (whole SEQUENCE) of an X.509 certificate of any version.
pub fn spki(cert: &[u8]) -> Option<&[u8]> {
    let certificate = sequence(cert)?.contents;
    let tbs = sequence(certificate)?.contents;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION_TAG) {
        rest = element(rest)?.rest;
    }
    // serialNumber, signature, issuer, validity, subject: skipped.
    for _ in 0..5 {
        rest = element(rest)?.rest;
    }
    sequence(rest).map(|d| d.whole)
}

fn sequence(input: &[u8]) -> Option<Der<'_>> {
    element(input).filter(|d| d.tag == SEQUENCE)
}

/// Splits a SubjectPublicKeyInfo into the contents of its AlgorithmIdentifier (the form of
/// [`SignatureVerificationAlgorithm::public_key_alg_id`]) and the key bits.
fn split_spki(spki: &[u8]) -> Option<(&[u8], &[u8])> {
    let alg = sequence(sequence(spki)?.contents)?;
    let bits = element(alg.rest).filter(|d| d.tag == BIT_STRING)?;
    // The first byte counts unused bits: keys are whole bytes.
    match bits.contents.split_first()? {
        (0, key) => Some((alg.contents, key)),
        _ => None,
    }
}

fn candidates(
    scheme: SignatureScheme,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<&'static [&'static dyn SignatureVerificationAlgorithm], Error> {
    algs.mapping
        .iter()
        .find(|(s, _)| *s == scheme)
        .map(|(_, a)| *a)
        .ok_or_else(|| PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into())
}

fn check(
    message: &[u8],
    cert: &[u8],
    dss: &DigitallySignedStruct,
    algs: &[&'static dyn SignatureVerificationAlgorithm],
) -> Result<HandshakeSignatureValid, Error> {
    let (alg_id, key) = spki(cert)
        .and_then(split_spki)
        .ok_or(Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))?;
    let usable = algs
        .iter()
        .filter(|a| a.public_key_alg_id().as_ref() == alg_id);
    for alg in usable {
        if alg.verify_signature(key, message, dss.signature()).is_ok() {
            return Ok(HandshakeSignatureValid::assertion());
        }
    }
    Err(Error::InvalidCertificate(
        rustls::CertificateError::BadSignature,
    ))
}

/// A TLS 1.2 handshake signature by the key of `cert` (any X.509 version). TLS 1.2 schemes do
/// not name the curve, so each algorithm of the scheme is tried.
pub fn verify_tls12(
    message: &[u8],
    cert: &[u8],
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, Error> {
    check(message, cert, dss, candidates(dss.scheme, algs)?)
}

/// A TLS 1.3 handshake signature by the key of `cert` (any X.509 version): rustls's own
/// raw-key check (only TLS 1.3 schemes, the scheme's first algorithm) on the leaf's SPKI.
pub fn verify_tls13(
    message: &[u8],
    cert: &[u8],
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, Error> {
    let spki = spki(cert).ok_or(Error::InvalidCertificate(
        rustls::CertificateError::BadEncoding,
    ))?;
    verify_tls13_signature_with_raw_key(message, &SubjectPublicKeyInfoDer::from(spki), dss, algs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_of_a_v3_certificate_matches_webpki() {
        let ck = rcgen::generate_simple_self_signed(vec!["a.example".to_string()]).unwrap();
        let der = ck.cert.der().to_vec();
        let ours = spki(&der).unwrap();
        let cert = rustls::pki_types::CertificateDer::from(der.clone());
        let parsed = rustls::server::ParsedCertificate::try_from(&cert).unwrap();
        assert_eq!(ours, parsed.subject_public_key_info().as_ref());
        assert!(split_spki(ours).is_some());
    }

    #[test]
    fn truncated_and_hostile_input_is_refused() {
        let ck = rcgen::generate_simple_self_signed(vec!["a.example".to_string()]).unwrap();
        let der = ck.cert.der().to_vec();
        for n in 0..der.len() {
            let _ = spki(der.get(..n).unwrap());
        }
        assert_eq!(spki(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(spki(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(spki(b""), None);
    }
}
