//! DANE for SMTP (RFC 7672, 7671, 6698): when DNSSEC answers can be trusted, the TLSA lookup
//! for an MX host, the decision it leads to ([`Decision`]), the pure record matcher
//! ([`tlsa_matches`], bytes in, verdict out, so it can be fuzzed; the public key for selector
//! 1 comes from [`super::sig::spki`]), and the verifier that authenticates a peer by its TLSA
//! records ([`DaneVerifier`]).
//!
//! Trust in DNSSEC is the AD bit of a validating resolver. The bit travels in clear over the
//! network, so it is believed only from resolvers on a loopback address (the path cannot be
//! touched by anyone else) or listed by the admin in `control/dnssecresolvers` (a resolver
//! the admin vouches for, e.g. on a protected link). With any other resolver DANE is off, and
//! the `TLS:` line says so whenever an answer claimed to be secure.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ring::digest;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::sig::spki;
use super::verify::{Checked, FORGED, Possession, describe_cert};
use crate::control;
use crate::dns::{DnsError, Resolver, Tlsa};
use crate::failure::Failure;
use crate::route::Peer;

/// Certificate usages (RFC 6698 2.1.1, RFC 7218 names).
pub const DANE_TA: u8 = 2;
pub const DANE_EE: u8 = 3;

/// The published DANE requirement for one MX host: its usable TLSA records and the names a
/// DANE-TA chain may be issued for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dane {
    /// The TLSA base domain (the MX host, or the smtproutes relay): also the SNI name.
    pub base: String,
    /// Where the records were found, e.g. `_25._tcp.mx.example.net`.
    pub owner: String,
    /// Usable records only (usages 2 and 3, selectors 0 and 1, matching types 0, 1 and 2).
    pub records: Vec<Tlsa>,
    /// The whole RRset as published, usable or not (`qremote-probe` shows each record).
    pub rrset: Vec<Tlsa>,
    /// Reference identifiers for DANE-TA (RFC 7672 3.2.2): the base domain, and the
    /// recipient domain when the MX answer was secure.
    pub names: Vec<String>,
}

/// What DANE says about one peer, decided before connecting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// DANE does not apply (no name, insecure addresses or TLSA, no records). The text, if
    /// any, is a note for the `TLS:` line (e.g. a resolver whose AD bit is not trusted).
    None(Option<String>),
    /// Usable records: TLS is mandatory and the certificate must match one of them.
    Usable(Dane),
    /// Records exist but none is usable: TLS is mandatory, unauthenticated (as Postfix).
    Unusable { owner: String, rrset: Vec<Tlsa> },
    /// The TLSA lookup failed for a host whose addresses were secure: this MX is not used.
    Failed { owner: String, why: String },
}

/// Why DANE cannot apply to `peer` whatever its TLSA records say, or `None`: an address
/// literal has no name, and insecure addresses mean no DANE (RFC 7672 2.2.2).
pub fn inapplicable(peer: &Peer) -> Option<&'static str> {
    if peer.name.is_empty() {
        Some("an address literal has no host name")
    } else if !peer.addr_ad {
        Some("the host's addresses are not DNSSEC-validated (AD=0)")
    } else {
        None
    }
}

/// "1 TLSA record", "2 TLSA records": how reports count an RRset.
pub fn count(n: usize) -> String {
    format!("{n} TLSA record{}", if n == 1 { "" } else { "s" })
}

/// Why a record cannot be used, or `None` if it can (RFC 7672 3.1.3, RFC 7671 5).
pub fn unusable(t: &Tlsa) -> Option<&'static str> {
    if t.usage != DANE_TA && t.usage != DANE_EE {
        return Some("certificate usage other than DANE-TA(2) or DANE-EE(3)");
    }
    if t.selector > 1 {
        return Some("unknown selector");
    }
    let len_ok = match t.matching {
        0 => !t.data.is_empty(),
        1 => t.data.len() == 32,
        2 => t.data.len() == 64,
        _ => return Some("unknown matching type"),
    };
    (!len_ok).then_some("association data of the wrong length")
}

/// The verdict of one record against one certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    Yes,
    No,
    /// The selector or matching type is unknown: the record cannot match anything.
    Unusable,
}

/// Does the TLSA association (`selector`, `matching`, `data`) match the DER certificate
/// `cert`? Pure and total: any bytes in, a verdict out. A certificate whose public key cannot
/// be found does not match a selector-1 record.
pub fn tlsa_matches(selector: u8, matching: u8, data: &[u8], cert: &[u8]) -> Match {
    let subject = match selector {
        0 => cert,
        1 => match spki(cert) {
            Some(s) => s,
            None => return Match::No,
        },
        _ => return Match::Unusable,
    };
    let equal = match matching {
        0 => subject == data,
        1 => digest::digest(&digest::SHA256, subject).as_ref() == data,
        2 => digest::digest(&digest::SHA512, subject).as_ref() == data,
        _ => return Match::Unusable,
    };
    if equal { Match::Yes } else { Match::No }
}

/// Is the AD bit of these resolvers to be believed? Every server asked must be on a loopback
/// address or listed in `control/dnssecresolvers`; `Err` names the first that is not.
pub fn resolver_trust(servers: &[SocketAddr], listed: &[IpAddr]) -> Result<(), IpAddr> {
    match servers
        .iter()
        .map(SocketAddr::ip)
        .find(|ip| !ip.is_loopback() && !listed.contains(ip))
    {
        Some(ip) => Err(ip),
        None => Ok(()),
    }
}

/// `control/dnssecresolvers`: one IP address per line.
fn listed_resolvers() -> Result<Vec<IpAddr>, Failure> {
    let Some(data) = control::read_file("dnssecresolvers")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (n, line) in control::lines(&data) {
        let ip = std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .ok_or_else(|| control::syntax("dnssecresolvers", n, "expected an IP address"))?;
        out.push(ip);
    }
    Ok(out)
}

/// The configured resolver, if its AD bit can be believed; else the note for the report.
fn trusted_resolver(listed: &[IpAddr]) -> Result<Resolver, String> {
    let r = Resolver::from_config().map_err(|_| "DANE not used: control/nameservers is invalid")?;
    match resolver_trust(r.servers(), listed) {
        Ok(()) => Ok(r),
        Err(ip) => Err(format!(
            "DANE not used: the DNSSEC status from resolver {ip} is not trusted \
             (not loopback, not in control/dnssecresolvers)"
        )),
    }
}

/// The TLSA lookups of one delivery: the resolver (made when first needed) and one decision
/// per host and port, so the addresses of one MX host share one query.
pub struct Lookup {
    listed: Vec<IpAddr>,
    resolver: Option<Result<Resolver, String>>,
    decided: Vec<(Vec<u8>, u16, Decision)>,
}

impl Lookup {
    /// Reads `control/dnssecresolvers`; asks nothing yet.
    pub fn load() -> Result<Lookup, Failure> {
        Ok(Lookup {
            listed: listed_resolvers()?,
            resolver: None,
            decided: Vec::new(),
        })
    }

    /// The DANE decision for `peer`, reached for the recipient domain `domain`.
    pub fn decide(&mut self, peer: &Peer, domain: &[u8]) -> Decision {
        if inapplicable(peer).is_some() {
            return Decision::None(None);
        }
        if let Some((_, _, d)) = self
            .decided
            .iter()
            .find(|(n, p, _)| n.eq_ignore_ascii_case(&peer.name) && *p == peer.port)
        {
            return d.clone();
        }
        let d = self.lookup(peer, domain);
        self.decided.push((peer.name.clone(), peer.port, d.clone()));
        d
    }

    fn lookup(&mut self, peer: &Peer, domain: &[u8]) -> Decision {
        let text = |n: &[u8]| {
            String::from_utf8_lossy(n)
                .trim_end_matches('.')
                .to_ascii_lowercase()
        };
        let initial = text(&peer.name);
        // RFC 7672 2.2.3: when the host is an alias (its chain was secure, as `addr_ad`
        // says), the expanded name first, then the name the MX record gave.
        let mut candidates = Vec::with_capacity(2);
        if let Some(expanded) = &peer.expanded {
            candidates.push(text(expanded));
        }
        candidates.push(initial.clone());
        let listed = &self.listed;
        let resolver = self
            .resolver
            .get_or_insert_with(|| trusted_resolver(listed));
        let resolver = match resolver {
            Ok(r) => r,
            Err(why) => return Decision::None(Some(why.clone())),
        };
        for base in candidates {
            let owner = format!("_{}._tcp.{base}", peer.port);
            let (records, ad) = match resolver.tlsa(owner.as_bytes()) {
                Ok(r) => r,
                Err(DnsError::NxDomain | DnsError::NoData) => continue,
                Err(DnsError::Temporary(why)) => return Decision::Failed { owner, why },
            };
            if !ad || records.is_empty() {
                continue;
            }
            let usable: Vec<Tlsa> = records
                .iter()
                .filter(|t| unusable(t).is_none())
                .cloned()
                .collect();
            if usable.is_empty() {
                return Decision::Unusable {
                    owner,
                    rrset: records,
                };
            }
            // RFC 7672 3.2.2: the base domain, the MX host name, and the recipient domain
            // when the MX answer was secure.
            let next_hop = (peer.mx_ad && !peer.relay).then(|| text(domain));
            let mut names: Vec<String> = Vec::with_capacity(3);
            for n in [Some(base.clone()), Some(initial.clone()), next_hop]
                .into_iter()
                .flatten()
            {
                if !n.is_empty() && !names.contains(&n) {
                    names.push(n);
                }
            }
            return Decision::Usable(Dane {
                base,
                owner,
                records: usable,
                rrset: records,
                names,
            });
        }
        Decision::None(None)
    }
}

/// Authenticates the peer by its TLSA records only (no webpki roots, no `control/tlsca`), and
/// records how. DANE-EE: the leaf or its public key matches, with no name and no date checks.
/// DANE-TA: a certificate of the presented chain (or a full certificate in a `2 0 0` record)
/// matches and is the only trust anchor; chain, dates and name are then checked by webpki.
#[derive(Debug)]
pub struct DaneVerifier {
    dane: Dane,
    provider: Arc<CryptoProvider>,
    possession: Possession,
    result: Checked,
}

impl DaneVerifier {
    pub fn new(provider: Arc<CryptoProvider>, dane: &Dane) -> DaneVerifier {
        DaneVerifier {
            dane: dane.clone(),
            possession: Possession::new(&provider),
            provider,
            result: Checked::default(),
        }
    }

    /// `Ok(how)` (e.g. `DANE-EE (3 1 1)`) or `Err(why)`, as [`super::verify::Recorder`].
    pub fn outcome(&self) -> Result<String, String> {
        self.result.get()
    }

    /// What the report and `qremote-probe` call this trust source.
    pub fn source(&self) -> String {
        format!("DANE (TLSA records at {})", self.dane.owner)
    }

    /// Why this verifier made the handshake fail, if it did: a forged handshake signature, or
    /// no match (DANE always refuses then).
    pub fn refusal(&self) -> Option<String> {
        if self.possession.forged() {
            return Some(FORGED.into());
        }
        self.result.found().and_then(Result::err)
    }

    fn check(
        &self,
        ee: &CertificateDer<'_>,
        im: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<String, String> {
        let label =
            |t: &Tlsa, what: &str| format!("{what} ({} {} {})", t.usage, t.selector, t.matching);
        for t in self.dane.records.iter().filter(|t| t.usage == DANE_EE) {
            if tlsa_matches(t.selector, t.matching, &t.data, ee) == Match::Yes {
                return Ok(label(t, "DANE-EE"));
            }
        }
        let mut why = None;
        for t in self.dane.records.iter().filter(|t| t.usage == DANE_TA) {
            let mut anchors: Vec<CertificateDer<'_>> = im
                .iter()
                .filter(|c| tlsa_matches(t.selector, t.matching, &t.data, c) == Match::Yes)
                .cloned()
                .collect();
            if t.selector == 0 && t.matching == 0 {
                anchors.push(CertificateDer::from(t.data.as_slice()));
            }
            for anchor in anchors {
                match self.chain_to(anchor, ee, im, now) {
                    Ok(()) => return Ok(label(t, "DANE-TA")),
                    Err(e) => why = Some(format!("{}: {e}", label(t, "DANE-TA"))),
                }
            }
        }
        Err(why.unwrap_or_else(|| {
            format!(
                "no TLSA record at {} matched the certificate chain (DANE)",
                self.dane.owner
            )
        }))
    }

    /// webpki with `anchor` as the only root, for each reference identifier in turn.
    fn chain_to(
        &self,
        anchor: CertificateDer<'_>,
        ee: &CertificateDer<'_>,
        im: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), String> {
        let mut roots = RootCertStore::empty();
        roots
            .add(anchor)
            .map_err(|_| "the matching certificate is not a usable trust anchor".to_string())?;
        let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| e.to_string())?;
        let mut why = String::new();
        for name in &self.dane.names {
            let Ok(sn) = ServerName::try_from(name.as_str()) else {
                continue;
            };
            match v.verify_server_cert(ee, im, &sn, &[], now) {
                Ok(_) => return Ok(()),
                Err(e) => why = ta_failure(&e, &sn, &self.dane.names),
            }
        }
        Err(why)
    }
}

/// Why a DANE-TA chain failed; a name mismatch lists every reference identifier tried.
fn ta_failure(e: &rustls::Error, name: &ServerName<'_>, names: &[String]) -> String {
    match e {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("certificate is not valid for {}", names.join(" or ")),
        other => describe_cert(other, name),
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        ee: &CertificateDer<'_>,
        im: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let outcome = self.check(ee, im, now);
        let ok = outcome.is_ok();
        self.result.set(outcome);
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    // The peer must hold the key of the certificate it showed, matched or not.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> (Vec<u8>, Vec<u8>) {
        use rcgen::PublicKeyData;
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let c = params.self_signed(&key).unwrap();
        (c.der().to_vec(), key.subject_public_key_info())
    }

    fn rec(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching,
            data,
        }
    }

    #[test]
    fn spki_is_the_public_key_of_the_certificate() {
        let (der, public) = cert(&["mx.example"]);
        assert_eq!(spki(&der), Some(public.as_slice()));
    }

    #[test]
    fn every_selector_and_matching_type() {
        let (der, public) = cert(&["mx.example"]);
        let (other, _) = cert(&["mx.example"]);
        for (sel, subject) in [(0u8, &der), (1, &public)] {
            let data = [
                subject.to_vec(),
                digest::digest(&digest::SHA256, subject).as_ref().to_vec(),
                digest::digest(&digest::SHA512, subject).as_ref().to_vec(),
            ];
            for (m, d) in data.iter().enumerate() {
                let m = m as u8;
                assert_eq!(tlsa_matches(sel, m, d, &der), Match::Yes, "{sel} {m}");
                assert_eq!(tlsa_matches(sel, m, d, &other), Match::No, "{sel} {m}");
                assert_eq!(unusable(&rec(3, sel, m, d.clone())), None);
            }
        }
        assert_eq!(tlsa_matches(2, 1, &[0; 32], &der), Match::Unusable);
        assert_eq!(tlsa_matches(1, 3, &[0; 32], &der), Match::Unusable);
    }

    #[test]
    fn rrsets_are_counted_in_words() {
        assert_eq!(count(1), "1 TLSA record");
        assert_eq!(count(2), "2 TLSA records");
    }

    #[test]
    fn unusable_records() {
        assert!(unusable(&rec(0, 0, 1, vec![0; 32])).is_some());
        assert!(unusable(&rec(1, 1, 1, vec![0; 32])).is_some());
        assert!(unusable(&rec(4, 1, 1, vec![0; 32])).is_some());
        assert!(unusable(&rec(3, 2, 1, vec![0; 32])).is_some());
        assert!(unusable(&rec(3, 1, 255, vec![0; 32])).is_some());
        assert!(unusable(&rec(3, 1, 1, vec![0; 31])).is_some());
        assert!(unusable(&rec(2, 1, 2, vec![0; 32])).is_some());
        assert!(unusable(&rec(3, 0, 0, vec![])).is_some());
        assert!(unusable(&rec(2, 1, 1, vec![0; 32])).is_none());
    }

    #[test]
    fn matcher_never_panics_on_garbage() {
        // Every truncation of a real certificate, and pseudo-random bytes.
        let (der, public) = cert(&["mx.example"]);
        let want = digest::digest(&digest::SHA256, &public);
        for n in 0..der.len() {
            let _ = tlsa_matches(1, 1, want.as_ref(), &der[..n]);
            assert_eq!(spki(&der[..n]), None, "truncated at {n}");
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..600 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8 | if len % 3 == 0 { 0x30 } else { 0 }
                })
                .collect();
            let _ = tlsa_matches(1, 2, &bytes, &bytes);
            let _ = spki(&bytes);
        }
    }

    #[test]
    fn only_loopback_or_listed_resolvers_are_trusted() {
        let lo: SocketAddr = "127.0.0.54:53".parse().unwrap();
        let lo6: SocketAddr = "[::1]:53".parse().unwrap();
        let ula: SocketAddr = "[fd77::8:54]:53".parse().unwrap();
        let lan: SocketAddr = "192.0.2.53:53".parse().unwrap();
        assert_eq!(resolver_trust(&[lo, lo6], &[]), Ok(()));
        assert_eq!(resolver_trust(&[lo, ula], &[]), Err(ula.ip()));
        assert_eq!(resolver_trust(&[lo, ula], &[ula.ip()]), Ok(()));
        assert_eq!(resolver_trust(&[lan], &[ula.ip()]), Err(lan.ip()));
    }
}
