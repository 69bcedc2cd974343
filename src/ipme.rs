//! The addresses that are "me" for the MX loop check: every address of every interface that is
//! up (IPv4 and IPv6), plus the unspecified addresses, as netqmail's `ipme.c` (which saw IPv4
//! only). Other 127/8 addresses are not ours unless an interface carries them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub fn addresses() -> Vec<IpAddr> {
    let mut out = vec![
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ];
    if let Ok(ifs) = if_addrs::get_if_addrs() {
        out.extend(ifs.into_iter().map(|i| i.ip()));
    }
    out
}
