//! From the recipient domain to an ordered list of peers: smtproutes first, then MX (with
//! CNAME-tolerant lookups, implicit MX and null MX), equal preferences shuffled, address
//! families ordered by `control/addresspreference`, and qmail's "MX points back to me" cut.
//! The list is then bounded as Postfix bounds it: each address once, and at most
//! `control/mxaddresslimit` addresses, so that no DNS answer can make one delivery try
//! hundreds of hosts.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

use crate::control::{AddrPref, Config};
use crate::dns::{Addresses, DnsError, Resolver};
use crate::failure::Failure;
use crate::ipme;
use crate::smtproutes::Route;

/// One address to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The host name the address came from (MX target, relay or domain): the name TLS checks.
    /// Empty for IP literals, which have no name to check.
    pub name: Vec<u8>,
    pub ip: IpAddr,
    pub port: u16,
    pub pref: u32,
    /// True when smtproutes chose this peer.
    pub relay: bool,
    /// The AD bit of the answer that chose `name`: the MX RRset (true for an smtproutes relay
    /// and for the implicit MX, whose name is not taken from the DNS). Whether the resolver's
    /// AD bit can be believed at all is decided in `tls::dane`.
    pub mx_ad: bool,
    /// The AD bit of every address answer for `name` (false for an IP literal).
    pub addr_ad: bool,
    /// When `name`'s addresses came through a CNAME chain: the name at its end (for DANE,
    /// the first candidate TLSA base domain, RFC 7672 2.2.3).
    pub expanded: Option<Vec<u8>>,
}

/// A host written as `[1.2.3.4]`, `[ipv6]` or a bare IP address.
pub fn literal(host: &[u8]) -> Option<IpAddr> {
    let inner = host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(host);
    let inner = inner.strip_prefix(b"IPv6:").unwrap_or(inner);
    std::str::from_utf8(inner).ok()?.parse().ok()
}

/// A random number from std's OS-seeded hasher keys (no extra crate, no global state).
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

pub(crate) fn order(mut ips: Vec<IpAddr>, pref: AddrPref) -> Vec<IpAddr> {
    match pref {
        AddrPref::V4First => ips.sort_by_key(|ip| ip.is_ipv6()),
        AddrPref::V6First => ips.sort_by_key(|ip| ip.is_ipv4()),
        AddrPref::Any | AddrPref::V4Only | AddrPref::V6Only => {}
    }
    ips.retain(|ip| {
        if ip.is_ipv4() {
            pref.wants_v4()
        } else {
            pref.wants_v6()
        }
    });
    ips
}

/// The route for this delivery: `control/authsenders` by envelope sender first (sagredo's
/// order), then `control/smtproutes` by recipient host.
pub fn route(cfg: &Config, host: &[u8], sender: &[u8]) -> Route {
    cfg.authsenders
        .lookup(sender)
        .unwrap_or_else(|| cfg.routes.lookup(host))
}

/// The addresses to try for `host` (argv[1]) along `route` (see [`route`]).
pub fn peers(cfg: &Config, host: &[u8], route: &Route) -> Result<Vec<Peer>, Failure> {
    Ok(bound(candidates(cfg, host, route)?, cfg.mx_address_limit))
}

/// Drops repeated addresses (two MX names with one address, say), keeping the first, then
/// keeps at most `limit` of them (0: all).
fn bound(mut peers: Vec<Peer>, limit: usize) -> Vec<Peer> {
    let mut seen = std::collections::HashSet::new();
    peers.retain(|p| seen.insert((p.ip, p.port)));
    if limit > 0 {
        peers.truncate(limit);
    }
    peers
}

fn candidates(cfg: &Config, host: &[u8], route: &Route) -> Result<Vec<Peer>, Failure> {
    match route {
        Route::Relay {
            host: relay, port, ..
        } => {
            let port = *port;
            let found = match literal(relay) {
                Some(ip) => literal_address(ip),
                None => {
                    let mut dns = Resolver::from_config()?;
                    addresses(&mut dns, cfg, relay).map_err(|e| host_error(e, relay))?
                }
            };
            let name: &[u8] = if literal(relay).is_some() { b"" } else { relay };
            Ok(peers_at(found, name, port, 0, true, true))
        }
        Route::Mx => {
            let peers = match literal(host) {
                Some(ip) => peers_at(literal_address(ip), b"", 25, 0, false, false),
                None => mx_peers(cfg, host)?,
            };
            cut_me(peers, &ipme::addresses())
        }
    }
}

/// The addresses of `name` in the configured order (never empty), with their AD bit and
/// CNAME expansion for DANE.
fn addresses(dns: &mut Resolver, cfg: &Config, name: &[u8]) -> Result<Addresses, DnsError> {
    let mut found = dns.ips_expanded(name, cfg.addr_pref.wants_v4(), cfg.addr_pref.wants_v6())?;
    found.ips = order(found.ips, cfg.addr_pref);
    if found.ips.is_empty() {
        Err(DnsError::NoData)
    } else {
        Ok(found)
    }
}

/// One peer per address in `found`, all reached through `name` (empty for an IP literal).
/// `mx_ad` is the AD bit of the answer that chose `name` (see [`Peer::mx_ad`]).
fn peers_at(
    found: Addresses,
    name: &[u8],
    port: u16,
    pref: u32,
    relay: bool,
    mx_ad: bool,
) -> Vec<Peer> {
    let Addresses { ips, ad, expanded } = found;
    ips.into_iter()
        .map(|ip| Peer {
            name: name.to_vec(),
            ip,
            port,
            pref,
            relay,
            mx_ad,
            addr_ad: ad,
            expanded: expanded.clone(),
        })
        .collect()
}

/// An IP literal: no name, nothing secure about it.
fn literal_address(ip: IpAddr) -> Addresses {
    Addresses {
        ips: vec![ip],
        ad: false,
        expanded: None,
    }
}

fn host_error(e: DnsError, host: &[u8]) -> Failure {
    match e {
        DnsError::Temporary(_) => Failure::DnsSoft,
        DnsError::NxDomain | DnsError::NoData => Failure::DnsHard {
            host: host.to_vec(),
        },
    }
}

fn mx_peers(cfg: &Config, host: &[u8]) -> Result<Vec<Peer>, Failure> {
    let mut dns = Resolver::from_config()?;
    let (mut mxs, mx_ad) = match dns.mx_ad(host) {
        Ok((mxs, ad)) if !mxs.is_empty() => (mxs, ad),
        Ok(_) | Err(DnsError::NoData) => {
            // Implicit MX (RFC 5321 5.1): the domain's own addresses.
            let found = addresses(&mut dns, cfg, host).map_err(|e| host_error(e, host))?;
            return Ok(peers_at(found, host, 25, 0, false, true));
        }
        Err(e) => return Err(host_error(e, host)),
    };
    // RFC 7505: a lone "MX 0 ." means the domain takes no mail; a root target among others is junk.
    if let [only] = mxs.as_slice()
        && only.host.is_empty()
    {
        return Err(Failure::NullMx {
            host: host.to_vec(),
        });
    }
    mxs.retain(|m| !m.host.is_empty());
    shuffle(&mut mxs);
    mxs.sort_by_key(|m| m.pref); // stable: the shuffle decides among equals
    let mut peers = Vec::new();
    let mut soft = false;
    for mx in mxs {
        let found = match literal(&mx.host) {
            Some(ip) => literal_address(ip),
            None => match addresses(&mut dns, cfg, &mx.host) {
                Ok(found) => found,
                Err(DnsError::Temporary(_)) => {
                    soft = true;
                    continue;
                }
                Err(_) => continue,
            },
        };
        peers.extend(peers_at(
            found,
            &mx.host,
            25,
            u32::from(mx.pref),
            false,
            mx_ad,
        ));
    }
    match (peers.is_empty(), soft) {
        (false, _) => Ok(peers),
        (true, true) => Err(Failure::DnsSoft),
        (true, false) => Err(Failure::NoMx),
    }
}

fn shuffle<T>(items: &mut [T]) {
    let mut state = random_u64() | 1;
    for i in (1..items.len()).rev() {
        // xorshift64: plenty for spreading load across equal MX hosts.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

/// qmail's rule: only hosts strictly better than the best preference that is us.
fn cut_me(peers: Vec<Peer>, me: &[IpAddr]) -> Result<Vec<Peer>, Failure> {
    let prefme = peers
        .iter()
        .filter(|p| me.contains(&p.ip))
        .map(|p| p.pref)
        .min();
    let kept: Vec<Peer> = match prefme {
        Some(limit) => peers.into_iter().filter(|p| p.pref < limit).collect(),
        None => peers,
    };
    if kept.is_empty() {
        Err(Failure::AmbiguousMx)
    } else {
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: [u8; 4], pref: u32) -> Peer {
        Peer {
            name: b"mx".to_vec(),
            ip: ip.into(),
            port: 25,
            pref,
            relay: false,
            mx_ad: false,
            addr_ad: false,
            expanded: None,
        }
    }

    #[test]
    fn literals() {
        assert_eq!(literal(b"[10.1.2.3]"), Some([10, 1, 2, 3].into()));
        assert_eq!(literal(b"10.1.2.3"), Some([10, 1, 2, 3].into()));
        assert_eq!(literal(b"[IPv6:::1]"), "::1".parse().ok());
        assert_eq!(literal(b"mx.example"), None);
    }

    #[test]
    fn me_cut() {
        let me: Vec<IpAddr> = vec![[127, 0, 0, 1].into()];
        let got = cut_me(
            vec![
                peer([1, 1, 1, 1], 10),
                peer([127, 0, 0, 1], 20),
                peer([2, 2, 2, 2], 30),
            ],
            &me,
        )
        .unwrap();
        assert_eq!(got, vec![peer([1, 1, 1, 1], 10)]);
        let tie = cut_me(vec![peer([127, 0, 0, 1], 10), peer([2, 2, 2, 2], 10)], &me);
        assert_eq!(tie, Err(Failure::AmbiguousMx));
    }

    #[test]
    fn bound_drops_repeats_then_limits() {
        let list = vec![
            peer([1, 1, 1, 1], 10),
            peer([1, 1, 1, 1], 20),
            peer([2, 2, 2, 2], 20),
            peer([3, 3, 3, 3], 30),
        ];
        assert_eq!(
            bound(list.clone(), 2),
            vec![peer([1, 1, 1, 1], 10), peer([2, 2, 2, 2], 20)]
        );
        assert_eq!(bound(list.clone(), 0).len(), 3);
        let other_port = Peer {
            port: 2525,
            ..peer([1, 1, 1, 1], 10)
        };
        assert_eq!(bound(vec![list[0].clone(), other_port], 0).len(), 2);
    }

    #[test]
    fn shuffle_really_varies() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut v = [1, 2, 3];
            shuffle(&mut v);
            seen.insert(v);
        }
        assert_eq!(seen.len(), 6, "all orders of three equal MX hosts appear");
    }

    #[test]
    fn family_order() {
        let v: Vec<IpAddr> = vec!["::1".parse().unwrap(), [1, 2, 3, 4].into()];
        assert!(order(v.clone(), AddrPref::V4First)[0].is_ipv4());
        assert!(order(v.clone(), AddrPref::V6First)[0].is_ipv6());
        assert_eq!(order(v, AddrPref::V4Only).len(), 1);
    }
}
