//! A peer that has no host name can never be verified: an `[ip]` route, or an MX target
//! written as an IP address (`MX 10 127.0.0.201.`, `MX 10 fd77::25.`, zone i7tls.test in
//! scripts/lib/dns.sh). At `verify` such a peer is refused before connecting (next MX, then
//! `Z` 4.7.5); at `may` it is reached and reported unverified.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::peer::Scripted;
use crate::util::{QmailHome, peer_env};

const MSG: &[u8] = b"Subject: names\n\nhello\n";

fn self_signed(name: &str) -> Arc<ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    Arc::new(
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap(),
    )
}

fn dns_home(tlspolicy: &str) -> QmailHome {
    let home = QmailHome::new();
    home.nameserver(&peer_env("QREMOTE_DNS"));
    home.control("timeoutremote", "5\n");
    home.control(
        "tlsca",
        &std::fs::read_to_string(peer_env("QREMOTE_CA")).unwrap(),
    );
    home.control("tlspolicy", tlspolicy);
    home
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn mx_target_written_as_an_address_is_never_verified() {
    // At `may` the self-signed peer on 127.0.0.201 is reached over TLS, unverified.
    let cfg = self_signed("peer.i7tls.test");
    let server = Scripted::start_with_on("127.0.0.201:25", 1, move |_, mut c| {
        c.ehlo(&["STARTTLS"]);
        c.expect("STARTTLS");
        c.send("220 go ahead\r\n");
        let mut t = c.starttls(cfg.clone());
        t.expect("EHLO");
        t.send("250 scripted\r\n");
        t.accept_mail();
        t.transcript
    });
    dns_home(":may\n")
        .run("ipmx.i7tls.test", "a@b", &["x@ipmx.i7tls.test"], MSG)
        .expect(
            "rK",
            "unverified: the host name 127.0.0.201 is an IP address, not a name to check.",
        );
    server.finish();

    // At `verify` (by tlspolicy, or by a qmail-tls pin for that "host"), nothing connects.
    let listener = Scripted::untouched("127.0.0.201:25");
    let refused = "TLS with 127.0.0.201 failed: the host name 127.0.0.201 is an IP address, \
                   not a name to verify. (#4.7.5)";
    dns_home("ipmx.i7tls.test:verify\n")
        .run("ipmx.i7tls.test", "a@b", &["x@ipmx.i7tls.test"], MSG)
        .expect("Z", refused);
    let pinned = dns_home("");
    pinned.control(
        "tlshosts/127.0.0.201.pem",
        &std::fs::read_to_string(peer_env("QREMOTE_CA")).unwrap(),
    );
    pinned
        .run("ipmx.i7tls.test", "a@b", &["x@ipmx.i7tls.test"], MSG)
        .expect("Z", refused);
    // A CNAME to an address-like name does not resolve: no peer, no connection.
    let out =
        dns_home(":verify\n").run("ipcname.i7tls.test", "a@b", &["x@ipcname.i7tls.test"], MSG);
    out.assert_clean();
    assert_ne!(out.last().letter, 'K', "{}", out.dump());
    // MX 10 127.0.0.201 refused without a connection, then MX 20 mx1.qremote.test, verified.
    dns_home(":verify\n")
        .run(
            "ipnext.i7tls.test",
            "a@b",
            &[&format!("next-{}@ipnext.i7tls.test", std::process::id())],
            MSG,
        )
        .expect("rK", "verified as mx1.qremote.test by control/tlsca.");
    listener.assert_untouched();
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn ipv6_mx_target_is_refused() {
    // fd77::25 is the Postfix mx1 listener, whose certificate the test CA signed: only the
    // missing host name can refuse it.
    dns_home(":verify\n")
        .run("ipmx6.i7tls.test", "a@b", &["x@ipmx6.i7tls.test"], MSG)
        .expect(
            "Z",
            "TLS with fd77::25 failed: the host name fd77::25 is an IP address, not a name to \
             verify. (#4.7.5)",
        );
}

/// An `[ip]` route at `verify`: refused before connecting, since nothing the peer says can
/// give it a host name. The same for a relay written as an address without brackets
/// (`example.org:127.0.0.1:PORT`, which stock reads as an address too).
#[test]
fn verify_refuses_an_ip_route_without_connecting() {
    for bracketed in [true, false] {
        let listener = Scripted::untouched("127.0.0.1:0");
        let relay = match bracketed {
            true => listener.relay(),
            false => listener.addr.to_string(),
        };
        let home = QmailHome::new();
        home.route("example.org", &relay);
        home.control("tlspolicy", ":verify\n");
        home.run("example.org", "a@b", &["x@example.org"], MSG)
            .expect(
                "Z",
                "TLS with 127.0.0.1 failed: an [ip] route has no host name to verify. (#4.7.5)",
            );
        listener.assert_untouched();
    }
}
