//! The other control files (src/control.rs, src/dns/mod.rs): the line splitter, the one-line
//! files (the numbers of `timeout*`, `addresspreference`, `helohost`), `outgoingip`, `nameservers`,
//! `$DNSCACHEIP` and `/etc/resolv.conf`, all from the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qremote::control::{
    check_helohost, lines, number_prefix, parse_addr_pref, parse_outgoing, split_key, suffix_keys,
};
use qremote::dns::fuzzing::{dnscacheip, nameservers, resolv_conf};

fuzz_target!(|data: &[u8]| {
    for (n, line) in lines(data) {
        assert!(n >= 1);
        assert!(!line.is_empty() && !line.starts_with(b"#"));
        assert!(!line.ends_with(b"\r") && !line.ends_with(b" "));
        if let Some((key, value)) = split_key(line) {
            assert_eq!(key.len() + 1 + value.len(), line.len());
            let keys = suffix_keys(key);
            assert_eq!(
                keys.first().map(Vec::as_slice),
                Some(key.to_ascii_lowercase().as_slice())
            );
        }
    }
    let first = data.split(|&b| b == b'\n').next().unwrap_or_default();
    if let Some(n) = number_prefix(first) {
        // The leading digits, saturating: never more than the digits could say.
        let digits = first.iter().take_while(|b| b.is_ascii_digit()).count();
        assert!(digits > 0 && (digits > 19 || n < 10u64.pow(digits as u32)));
    }
    let _ = parse_addr_pref(first);
    if check_helohost(first).is_ok() {
        assert!(!first.iter().any(|&b| b <= b' ' || b == 127));
    }
    if let Ok(ips) = parse_outgoing(data) {
        assert!(ips.len() <= 2);
        assert!(ips.iter().all(|ip| !ip.is_unspecified()));
    }
    if let Ok(servers) = nameservers(data) {
        assert!(servers.iter().all(|s| s.port() != 0));
    }
    assert!(dnscacheip(data).len() <= 16);
    let (servers, timeout, attempts) = resolv_conf(data);
    assert!(servers.len() <= 3);
    assert!(timeout.is_none_or(|t| (1..=30).contains(&t.as_secs())));
    assert!(attempts.is_none_or(|a| (1..=5).contains(&a)));
});
