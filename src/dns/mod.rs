//! A small synchronous DNS stub resolver (MX, A/AAAA, TLSA, TXT) that asks a recursive resolver.
//!
//! Why our own stub: DANE needs the AD bit of a validating upstream resolver's answer; libc hides
//! it, and hickory-resolver neither sets DO/AD on plain lookups nor runs without tokio, too much
//! for a process that makes a few queries and exits. We send RD=1, AD=1 (RFC 6840 5.7) and EDNS0
//! (1232 bytes, DO=1) and expose AD (trust it only from a loopback or configured resolver). It is
//! bounded (64 KiB messages, 8 CNAME hops, fixed tries), never sends ANY (RFC 8482), retries over
//! TCP on truncation (qmail's 512-byte buffer broke large MX sets), checks ID, QR and question,
//! decodes with panic-free checked code, and never writes to stdout or stderr.

#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

#[doc(hidden)]
pub mod fuzzing;
pub mod trace;
mod transport;
mod wire;

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
mod tests;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use crate::failure::Failure;
use transport::{Query, TryError, UdpOutcome};
use wire::{
    Message, Name, RCODE_FORMERR, RCODE_NOERROR, RCODE_NXDOMAIN, RData, TYPE_A, TYPE_AAAA, TYPE_MX,
    TYPE_TLSA, TYPE_TXT,
};

/// Why a lookup gave no records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsError {
    /// The name does not exist (for a CNAME chain: its target). Also returned for a name that
    /// cannot exist in the DNS (empty label, label over 63 bytes, name over 255 bytes).
    NxDomain,
    /// The name exists but has no records of the type asked for.
    NoData,
    /// No usable answer; the text is a short reason such as `SERVFAIL from 127.0.0.1`.
    Temporary(String),
}

/// One MX record. `host` keeps the case as received and has no trailing dot; the root name
/// (the null MX of RFC 7505) is empty. Its bytes are not sanitised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mx {
    pub pref: u16,
    pub host: Vec<u8>,
}

/// The addresses of a name, with what DANE needs to know about how they were found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addresses {
    pub ips: Vec<IpAddr>,
    /// Whether every answer that gave addresses had AD=1.
    pub ad: bool,
    /// The name at the end of the CNAME chain (text, no trailing dot) when the name asked for
    /// is an alias.
    pub expanded: Option<Vec<u8>>,
}

/// One TLSA record (RFC 6698).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

/// Default per-try timeout and number of rounds over all servers (glibc's defaults).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_ATTEMPTS: u32 = 2;
/// Most CNAME hops followed from the name asked for.
const MAX_CNAME: usize = 8;
/// Most servers taken from `DNSCACHEIP` (as djbdns) and `/etc/resolv.conf` (glibc's MAXNS).
const MAX_DNSCACHEIP: usize = 16;
const MAX_RESOLV_CONF: usize = 3;

/// A stub resolver: a list of recursive servers, tried in order, `attempts` rounds.
pub struct Resolver {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    attempts: u32,
    ids: RandomState,
    counter: u64,
    /// Receive buffer, allocated on the first query.
    buf: Vec<u8>,
}

impl Resolver {
    /// Resolver configuration, in this order: the `DNSCACHEIP` environment variable (djbdns:
    /// addresses separated by white space or commas, port 53; unparsable words are skipped);
    /// else `control/nameservers` (one `ip`, `ip:port` or `[ipv6]:port` per line); else the
    /// `nameserver` lines of `/etc/resolv.conf` with its `options timeout:N attempts:N`; else
    /// 127.0.0.1:53. Timeout and attempts are glibc's defaults (5 s, 2) unless resolv.conf is
    /// the source. Opens no sockets.
    pub fn from_config() -> Result<Resolver, Failure> {
        if let Some(env) = std::env::var_os("DNSCACHEIP") {
            let servers = parse_dnscacheip(env.as_encoded_bytes());
            if !servers.is_empty() {
                return Ok(Resolver::new(servers, DEFAULT_TIMEOUT, DEFAULT_ATTEMPTS));
            }
        }
        if let Some(data) = crate::control::read_file("nameservers")? {
            let servers = parse_nameservers(&data)?;
            if !servers.is_empty() {
                return Ok(Resolver::new(servers, DEFAULT_TIMEOUT, DEFAULT_ATTEMPTS));
            }
        }
        // An unreadable resolv.conf is treated as absent, as libc does.
        let conf = std::fs::read("/etc/resolv.conf")
            .map(|d| parse_resolv_conf(&d))
            .unwrap_or_default();
        let mut servers = conf.servers;
        if servers.is_empty() {
            servers.push(SocketAddr::from(([127, 0, 0, 1], 53)));
        }
        Ok(Resolver::new(
            servers,
            conf.timeout.unwrap_or(DEFAULT_TIMEOUT),
            conf.attempts.unwrap_or(DEFAULT_ATTEMPTS),
        ))
    }

    /// A resolver for explicit servers. `timeout` is per try (at least 1 ms), `attempts` the
    /// number of rounds over all servers (at least 1).
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration, attempts: u32) -> Resolver {
        Resolver {
            servers,
            timeout: timeout.max(Duration::from_millis(1)),
            attempts: attempts.max(1),
            ids: RandomState::new(),
            counter: 0,
            buf: Vec::new(),
        }
    }

    /// The servers asked, in order (to decide whether their AD bit can be trusted).
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// MX records of `name` (absolute, a trailing dot tolerated), CNAME chain followed, in
    /// answer order.
    pub fn mx(&mut self, name: &[u8]) -> Result<Vec<Mx>, DnsError> {
        self.mx_ad(name).map(|(mx, _)| mx)
    }

    /// As [`Resolver::mx`], with whether every answer used had AD=1.
    pub fn mx_ad(&mut self, name: &[u8]) -> Result<(Vec<Mx>, bool), DnsError> {
        let (records, ad) = self.lookup(name, TYPE_MX)?;
        let mx = records
            .into_iter()
            .filter_map(|r| match r {
                RData::Mx { pref, host } => Some(Mx {
                    pref,
                    host: host.to_text(),
                }),
                _ => None,
            })
            .collect();
        Ok((mx, ad))
    }

    /// A and/or AAAA of `name`, CNAME chains followed: A records first, then AAAA, each in
    /// answer order. `Ok` if either family gave addresses (even if the other failed); else
    /// `Temporary` if either was temporary; else `NxDomain` if either said NXDOMAIN; else
    /// `NoData`.
    pub fn ips(&mut self, name: &[u8], v4: bool, v6: bool) -> Result<Vec<IpAddr>, DnsError> {
        self.ips_ad(name, v4, v6).map(|(ips, _)| ips)
    }

    /// As [`Resolver::ips`], with whether every answer that gave addresses had AD=1.
    pub fn ips_ad(
        &mut self,
        name: &[u8],
        v4: bool,
        v6: bool,
    ) -> Result<(Vec<IpAddr>, bool), DnsError> {
        self.ips_expanded(name, v4, v6).map(|a| (a.ips, a.ad))
    }

    /// As [`Resolver::ips_ad`], plus the name at the end of the CNAME chain that gave the
    /// addresses when `name` is an alias (the first candidate TLSA base domain of RFC 7672
    /// 2.2.3), as text without a trailing dot.
    pub fn ips_expanded(&mut self, name: &[u8], v4: bool, v6: bool) -> Result<Addresses, DnsError> {
        let mut results = Vec::with_capacity(2);
        let mut end = None;
        for (wanted, qtype) in [(v4, TYPE_A), (v6, TYPE_AAAA)] {
            if !wanted {
                continue;
            }
            results.push(self.lookup_chain(name, qtype).map(|(records, ad, last)| {
                if end.is_none() && !records.is_empty() {
                    end = Some(last);
                }
                (records, ad)
            }));
        }
        let (ips, ad) = combine_ips(results)?;
        let asked = Name::from_text(name);
        let expanded = end
            .filter(|last| asked.as_ref().is_none_or(|a| !a.eq_ci(last)))
            .map(|last| last.to_text());
        Ok(Addresses { ips, ad, expanded })
    }

    /// TLSA records at `name` (e.g. `_25._tcp.mx.example`), CNAME chain followed, with whether
    /// every answer used had AD=1.
    pub fn tlsa(&mut self, name: &[u8]) -> Result<(Vec<Tlsa>, bool), DnsError> {
        let (records, ad) = self.lookup(name, TYPE_TLSA)?;
        let tlsa = records
            .into_iter()
            .filter_map(|r| match r {
                RData::Tlsa {
                    usage,
                    selector,
                    matching,
                    data,
                } => Some(Tlsa {
                    usage,
                    selector,
                    matching,
                    data,
                }),
                _ => None,
            })
            .collect();
        Ok((tlsa, ad))
    }

    /// TXT records at `name` (e.g. `_mta-sts.example.com`), CNAME chain followed, each with its
    /// character-strings joined, in answer order.
    pub fn txt(&mut self, name: &[u8]) -> Result<Vec<Vec<u8>>, DnsError> {
        let (records, _) = self.lookup(name, TYPE_TXT)?;
        Ok(records
            .into_iter()
            .filter_map(|r| match r {
                RData::Txt(t) => Some(t),
                _ => None,
            })
            .collect())
    }

    /// Records of `qtype` at `name`, following CNAMEs in the answers and re-asking for the end
    /// of a chain that came without the records.
    fn lookup(&mut self, name: &[u8], qtype: u16) -> Result<(Vec<RData>, bool), DnsError> {
        self.lookup_chain(name, qtype).map(|(r, ad, _)| (r, ad))
    }

    /// As `lookup`, plus the last name of the CNAME chain (`name` itself if there was none).
    fn lookup_chain(
        &mut self,
        name: &[u8],
        qtype: u16,
    ) -> Result<(Vec<RData>, bool, Name), DnsError> {
        let mut cnames = Vec::new();
        let result = self.chase_lookup(name, qtype, &mut cnames);
        trace::record(name, qtype, &cnames, &result);
        let (records, ad) = result?;
        let last = cnames.last().cloned().ok_or(DnsError::NxDomain)?;
        Ok((records, ad, last))
    }

    fn chase_lookup(
        &mut self,
        name: &[u8],
        qtype: u16,
        cnames: &mut Vec<Name>,
    ) -> Result<(Vec<RData>, bool), DnsError> {
        let name = Name::from_text(name).ok_or(DnsError::NxDomain)?;
        let mut chain = vec![name];
        let mut ad = true;
        // Each further query needs at least one more hop, so this runs at most MAX_CNAME + 1
        // times; the bound is explicit anyway.
        for _ in 0..=MAX_CNAME {
            let current = chain.last().cloned().ok_or(DnsError::NxDomain)?;
            let msg = self.query(&current, qtype)?;
            ad &= msg.ad();
            let chased = chase(&msg, &mut chain, qtype);
            cnames.clone_from(&chain);
            match chased? {
                Chase::Records(r) => return Ok((r, ad)),
                Chase::NxDomain => return Err(DnsError::NxDomain),
                Chase::NoData => return Err(DnsError::NoData),
                Chase::Requery => {}
            }
        }
        Err(DnsError::Temporary("CNAME chain too long".into()))
    }

    fn next_id(&mut self) -> u16 {
        self.counter = self.counter.wrapping_add(1);
        let h = self.ids.hash_one(self.counter);
        u16::try_from(h & 0xFFFF).unwrap_or_default()
    }

    /// One question to the servers in turn: the first NOERROR or NXDOMAIN answer.
    fn query(&mut self, name: &Name, qtype: u16) -> Result<Message, DnsError> {
        if self.buf.len() < transport::MAX_UDP {
            // UDP answers fit our advertised EDNS size; TCP grows the buffer when it is needed.
            self.buf = vec![0; transport::MAX_UDP];
        }
        // The most telling failure: an RCODE, then a bad answer, then a network error, then a
        // timeout; the first of equals.
        let mut worst: Option<(u8, String)> = None;
        for _ in 0..self.attempts {
            for i in 0..self.servers.len() {
                let Some(&server) = self.servers.get(i) else {
                    break;
                };
                let err = match self.query_server(server, name, qtype) {
                    Ok(msg) if matches!(msg.rcode, RCODE_NOERROR | RCODE_NXDOMAIN) => {
                        return Ok(msg);
                    }
                    Ok(msg) => TryError::Rcode(msg.rcode),
                    Err(e) => e,
                };
                let ip = server.ip();
                let (rank, text) = match err {
                    TryError::Rcode(r) => (3, format!("{} from {ip}", wire::rcode_name(r))),
                    TryError::Malformed => (2, format!("malformed answer from {ip}")),
                    TryError::Net(kind) => (1, format!("{kind} talking to {ip}")),
                    TryError::Timeout => (0, "timed out".to_string()),
                };
                if worst.as_ref().is_none_or(|(r, _)| rank > *r) {
                    worst = Some((rank, text));
                }
            }
        }
        Err(DnsError::Temporary(worst.map_or_else(
            || "no nameservers configured".to_string(),
            |(_, t)| t,
        )))
    }

    /// One try at one server: UDP, TCP if truncated, and once more without EDNS if the server
    /// answered FORMERR to EDNS.
    fn query_server(
        &mut self,
        server: SocketAddr,
        name: &Name,
        qtype: u16,
    ) -> Result<Message, TryError> {
        let mut last = Err(TryError::Timeout);
        for edns in [true, false] {
            let msg = match self.exchange(server, name, qtype, edns, false)? {
                UdpOutcome::Answer(msg) => msg,
                UdpOutcome::Truncated => {
                    let UdpOutcome::Answer(msg) = self.exchange(server, name, qtype, edns, true)?
                    else {
                        return Err(TryError::Malformed);
                    };
                    msg
                }
            };
            let formerr = msg.rcode == RCODE_FORMERR;
            last = Ok(msg);
            if !formerr {
                break;
            }
        }
        last
    }

    /// One query with a fresh ID, over UDP or (after truncation) TCP.
    fn exchange(
        &mut self,
        server: SocketAddr,
        name: &Name,
        qtype: u16,
        edns: bool,
        tcp: bool,
    ) -> Result<UdpOutcome, TryError> {
        let id = self.next_id();
        let bytes = wire::encode_query(id, name, qtype, edns);
        let q = Query {
            id,
            name,
            qtype,
            bytes: &bytes,
        };
        if !tcp {
            return transport::udp(server, &q, self.timeout, &mut self.buf);
        }
        if self.buf.len() < transport::MAX_MSG {
            self.buf.resize(transport::MAX_MSG, 0);
        }
        transport::tcp(server, &q, self.timeout, &mut self.buf).map(UdpOutcome::Answer)
    }
}

/// What one answer says about the chain in `chain`.
#[derive(Debug)]
enum Chase {
    Records(Vec<RData>),
    NxDomain,
    NoData,
    /// The chain grew but its end has no records here: ask for `chain.last()`.
    Requery,
}

/// Follows CNAMEs in `msg` from the last name of `chain` (which grows) and collects the records
/// of `qtype` owned by any name of the chain.
fn chase(msg: &Message, chain: &mut Vec<Name>, qtype: u16) -> Result<Chase, DnsError> {
    let start_len = chain.len();
    loop {
        let Some(current) = chain.last() else {
            return Err(DnsError::NxDomain);
        };
        let next = msg.answers.iter().find_map(|r| match &r.data {
            RData::Cname(target) if r.owner.eq_ci(current) => Some(target),
            _ => None,
        });
        let Some(target) = next else { break };
        if chain.iter().any(|n| n.eq_ci(target)) {
            return Err(DnsError::Temporary("CNAME loop".into()));
        }
        if chain.len() > MAX_CNAME {
            return Err(DnsError::Temporary("CNAME chain too long".into()));
        }
        chain.push(target.clone());
    }
    if msg.rcode == RCODE_NXDOMAIN {
        return Ok(Chase::NxDomain);
    }
    let records: Vec<RData> = msg
        .answers
        .iter()
        .filter(|r| r.data.rtype() == qtype && chain.iter().any(|n| n.eq_ci(&r.owner)))
        .map(|r| r.data.clone())
        .collect();
    Ok(if !records.is_empty() {
        Chase::Records(records)
    } else if chain.len() > start_len {
        Chase::Requery
    } else {
        Chase::NoData
    })
}

/// Combines the A and AAAA results as [`Resolver::ips`] describes.
fn combine_ips(
    results: Vec<Result<(Vec<RData>, bool), DnsError>>,
) -> Result<(Vec<IpAddr>, bool), DnsError> {
    let mut ips = Vec::new();
    let mut ad = true;
    let mut err = DnsError::NoData;
    for r in results {
        match r {
            Ok((records, a)) => {
                let before = ips.len();
                ips.extend(records.iter().filter_map(|r| match r {
                    RData::A(a) => Some(IpAddr::V4(*a)),
                    RData::Aaaa(a) => Some(IpAddr::V6(*a)),
                    _ => None,
                }));
                if ips.len() > before {
                    ad &= a;
                }
            }
            Err(e @ DnsError::Temporary(_)) => err = e,
            Err(DnsError::NxDomain) if !matches!(err, DnsError::Temporary(_)) => {
                err = DnsError::NxDomain;
            }
            Err(_) => {}
        }
    }
    if ips.is_empty() {
        Err(err)
    } else {
        Ok((ips, ad))
    }
}

/// `DNSCACHEIP`: IP addresses separated by white space or commas, port 53.
fn parse_dnscacheip(value: &[u8]) -> Vec<SocketAddr> {
    value
        .split(|b| b.is_ascii_whitespace() || *b == b',')
        .filter(|w| !w.is_empty())
        .filter_map(|w| std::str::from_utf8(w).ok()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .take(MAX_DNSCACHEIP)
        .collect()
}

/// `control/nameservers`: `ip`, `ip:port` or `[ipv6]:port` per line.
fn parse_nameservers(data: &[u8]) -> Result<Vec<SocketAddr>, Failure> {
    let mut out = Vec::new();
    for (n, line) in crate::control::lines(data) {
        let text = std::str::from_utf8(line).unwrap_or("").trim();
        let addr = text.parse::<SocketAddr>().ok().or_else(|| {
            text.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        });
        match addr {
            Some(a) if a.port() != 0 => out.push(a),
            _ => {
                return Err(crate::control::syntax(
                    "nameservers",
                    n,
                    "expected an IP address, IP:port or [IPv6]:port",
                ));
            }
        }
    }
    Ok(out)
}

/// What `/etc/resolv.conf` says that we use.
#[derive(Debug, Default, PartialEq, Eq)]
struct ResolvConf {
    servers: Vec<SocketAddr>,
    timeout: Option<Duration>,
    attempts: Option<u32>,
}

/// Parses resolv.conf as glibc does for what we need: up to 3 `nameserver` lines (IPv6 with an
/// optional `%scope`), and `options timeout:N` (1..=30) and `attempts:N` (1..=5). `search`,
/// `domain` and `ndots` do not matter: we only ask absolute names.
fn parse_resolv_conf(data: &[u8]) -> ResolvConf {
    let mut conf = ResolvConf::default();
    for line in data.split(|&b| b == b'\n') {
        let line = line
            .split(|&b| b == b'#' || b == b';')
            .next()
            .unwrap_or_default();
        let mut words = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty());
        match words.next() {
            Some(b"nameserver") => {
                if let Some(addr) = words.next().and_then(nameserver_addr)
                    && conf.servers.len() < MAX_RESOLV_CONF
                {
                    conf.servers.push(addr);
                }
            }
            Some(b"options") => {
                for opt in words {
                    let num = |prefix: &[u8]| -> Option<u32> {
                        std::str::from_utf8(opt.strip_prefix(prefix)?)
                            .ok()?
                            .parse::<u32>()
                            .ok()
                    };
                    if let Some(t) = num(b"timeout:") {
                        conf.timeout = Some(Duration::from_secs(t.clamp(1, 30).into()));
                    } else if let Some(a) = num(b"attempts:") {
                        conf.attempts = Some(a.clamp(1, 5));
                    }
                }
            }
            _ => {}
        }
    }
    conf
}

/// A resolv.conf nameserver word: IPv4, or IPv6 with an optional numeric or interface scope.
fn nameserver_addr(word: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(word).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    let (ip, scope) = text.split_once('%')?;
    let ip = ip.parse::<Ipv6Addr>().ok()?;
    let scope = match scope.parse::<u32>() {
        Ok(n) => n,
        Err(_) => {
            if scope.is_empty() || scope.contains('/') || scope.starts_with('.') {
                return None;
            }
            std::fs::read_to_string(format!("/sys/class/net/{scope}/ifindex"))
                .ok()?
                .trim()
                .parse()
                .ok()?
        }
    };
    Some(SocketAddr::V6(SocketAddrV6::new(ip, 53, 0, scope)))
}
