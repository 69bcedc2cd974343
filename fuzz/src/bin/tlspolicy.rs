//! `control/tlspolicy` (src/tls/policy.rs): parse any file, then decide the level for a peer.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use qremote::control::lines;
use qremote::route::Peer;
use qremote::tls::policy::Table;

fuzz_target!(|data: &[u8]| {
    let Ok(table) = Table::parse(data) else {
        return;
    };
    for (_, line) in lines(data).take(8) {
        let key = line.split(|&b| b == b':').next().unwrap_or_default();
        let peer = Peer {
            name: key.trim_ascii().to_vec(),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 25,
            pref: 0,
            relay: false,
            mx_ad: false,
            addr_ad: false,
            expanded: None,
        };
        let policy = table.policy(&peer, key, None);
        assert!(!policy.source.is_empty());
        let _ = table.forced(&peer, key);
    }
});
