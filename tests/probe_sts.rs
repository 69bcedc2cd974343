//! `qremote-probe` and MTA-STS, against the real peers of tests/sts.rs (nginx serving the
//! sts.test policies, nsd/unbound publishing their TXT records, Postfix as the MX hosts): the
//! TXT id, the cache file state, the fetch, the cache write (or not, `--no-cache-write`), the
//! policy, the MX hosts it drops and what it did to each peer's level, in text and in JSON.

use crate::probe::{Run, home, probe};
use crate::sts::{now, policy, write_cache};
use crate::util::QmailHome;

fn cache_file(home: &QmailHome, domain: &str) -> std::path::PathBuf {
    home.path().join("mtasts").join(domain)
}

/// A home with the cache directory the README's install step makes: the probe writes into
/// it, but never creates it.
fn cache_home() -> QmailHome {
    let home = home();
    std::fs::create_dir(home.path().join("mtasts")).unwrap();
    home
}

fn json(home: &QmailHome, args: &[&str]) -> (Run, serde_json::Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let r = probe(home, &all);
    let j = r.json();
    (r, j)
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn an_enforce_policy_is_fetched_cached_and_raises_the_level() {
    let home = cache_home();
    let r = probe(&home, &["enforce.sts.test"]);
    r.code(0)
        .has("TXT _mta-sts.enforce.sts.test: \"v=STSv1; id=1\" [DNSSEC: not validated, AD=0]")
        .has("MTA-STS for enforce.sts.test:\n")
        .has("  TXT _mta-sts.enforce.sts.test: v=STSv1, id 1\n")
        .has("  cache mtasts/enforce.sts.test: absent\n")
        .has(
            "  fetch: fetched https://mta-sts.enforce.sts.test/.well-known/mta-sts.txt, as a \
             delivery would\n",
        )
        .has("  cache write: mtasts/enforce.sts.test written, as a delivery writes it")
        .has(
            "  policy in force: mode enforce, id 1 (fetched now), max_age 86400 s (1 d 0 h), \
             mx: mx1.sts.test\n",
        )
        .has("  report line: MTA-STS: enforce policy of enforce.sts.test (id 1, fetched).\n")
        .has(
            "1. 127.0.18.20:25 (mx1.sts.test, MX 10)  TLS policy: verify from MTA-STS policy \
             of enforce.sts.test",
        )
        .has(
            "  MTA-STS: the enforce policy lists this MX: level verify from MTA-STS policy of \
             enforce.sts.test (without the policy: may from default)\n",
        )
        .has("verification: verified as mx1.sts.test by control/tlsca");
    assert!(!r.stdout.contains("drops"), "{}", r.dump());
    let written = std::fs::read(cache_file(&home, "enforce.sts.test")).expect("cache written");
    assert!(written.starts_with(b"qremote-mta-sts-cache 1\nid 1\n"));

    // The second probe, like the second delivery, uses the cache and fetches nothing.
    let (r, j) = json(&home, &["enforce.sts.test"]);
    r.code(0);
    let s = &j["mta_sts"];
    assert_eq!(s["looked_up"], true);
    assert_eq!(s["txt"]["state"], "published");
    assert_eq!(s["txt"]["id"], "1");
    assert_eq!(s["cache"]["file"], "mtasts/enforce.sts.test");
    assert_eq!(s["cache"]["state"], "fresh");
    assert_eq!(s["cache"]["id"], "1");
    let fetched = s["cache"]["fetched"].as_u64().unwrap();
    assert!(fetched <= now() && fetched + 600 > now(), "{fetched}");
    assert_eq!(s["cache"]["expires"].as_u64(), Some(fetched + 86_400));
    assert_eq!(s["cache"]["refresh_at"].as_u64(), Some(fetched + 43_200));
    assert_eq!(s["fetch"]["state"], "not-needed");
    assert_eq!(s["cache_write"]["state"], "not-needed");
    assert_eq!(s["policy"]["mode"], "enforce");
    assert_eq!(s["policy"]["origin"], "cached");
    assert_eq!(s["policy"]["max_age"], 86_400);
    assert_eq!(s["policy"]["mx"][0], "mx1.sts.test");
    assert_eq!(s["dropped"].as_array().unwrap().len(), 0);
    assert_eq!(
        s["line"],
        "MTA-STS: enforce policy of enforce.sts.test (id 1, cached)."
    );
    let p = &j["peers"][0];
    assert_eq!(p["policy"]["level"], "verify");
    assert_eq!(p["mta_sts"]["verdict"], "enforce");
    assert_eq!(p["mta_sts"]["listed"], true);
    assert_eq!(p["mta_sts"]["changed"], true);
    assert_eq!(p["mta_sts"]["level_without"], "may");
    assert_eq!(p["mta_sts"]["source_without"], "default");
    assert_eq!(
        std::fs::read(cache_file(&home, "enforce.sts.test")).unwrap(),
        written,
        "the cache file is unchanged"
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn no_cache_write_fetches_but_creates_and_changes_nothing() {
    let home = home();
    let r = probe(&home, &["--no-cache-write", "enforce.sts.test"]);
    r.code(0)
        .has("  cache mtasts/enforce.sts.test: absent\n")
        .has("  fetch: fetched https://mta-sts.enforce.sts.test/")
        .has(
            "  cache write: not written (--no-cache-write); a delivery writes \
             mtasts/enforce.sts.test\n",
        )
        .has("policy in force: mode enforce, id 1 (fetched now)");
    assert!(!home.path().join("mtasts").exists(), "{}", r.dump());

    // A policy due for a refresh (older than half its max_age): fetched, the file untouched.
    write_cache(
        &home,
        "enforce.sts.test",
        "1",
        50_000,
        &policy("enforce", "mx1.sts.test"),
    );
    let before = std::fs::read(cache_file(&home, "enforce.sts.test")).unwrap();
    let (r, j) = json(&home, &["--no-cache-write", "enforce.sts.test"]);
    r.code(0);
    let s = &j["mta_sts"];
    assert_eq!(s["cache"]["state"], "stale");
    assert_eq!(s["fetch"]["state"], "fetched");
    assert_eq!(s["cache_write"]["state"], "skipped");
    assert_eq!(s["policy"]["origin"], "fetched");
    assert_eq!(
        std::fs::read(cache_file(&home, "enforce.sts.test")).unwrap(),
        before
    );
    let r = probe(&home, &["--no-cache-write", "enforce.sts.test"]);
    r.has("cache mtasts/enforce.sts.test: policy id 1 fetched 13 h 53 min ago: due for a refresh (refresh due 1 h 53 min ago, expires in 10 h 6 min)");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn the_mx_hosts_an_enforce_policy_drops_are_named() {
    let r = probe(&home(), &["unlisted.sts.test"]);
    r.code(2)
        .has("  policy in force: mode enforce, id 1 (fetched now), max_age 86400 s (1 d 0 h), mx: other.sts.test\n")
        .has("  MX hosts the enforce policy drops (not listed): mx1.sts.test (127.0.18.20)\n")
        // Every address dropped: the numbered list still shows it, and why.
        .has(
            "  1. 127.0.18.20:25 (mx1.sts.test, MX 10)  not used: dropped by the MTA-STS \
             enforce policy\n     the enforce policy of unlisted.sts.test (id 1, mx: \
             other.sts.test) does not list mx1.sts.test, and neither DANE nor an override line \
             in control/tlspolicy applies to it",
        )
        .has(
            "no address to try; qmail-remote would report:\n  ZNone of the MX hosts of \
             unlisted.sts.test (mx1.sts.test) is allowed by its MTA-STS policy. (#4.7.5)\n  \
             MTA-STS: enforce policy of unlisted.sts.test (id 1, fetched).\n",
        )
        .has("result: CRITICAL");
    let (r, j) = json(&home(), &["unlisted.sts.test"]);
    r.code(2);
    let peers = j["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{}", r.dump());
    assert_eq!(peers[0]["plan"], "mta-sts-drop");
    assert_eq!(peers[0]["probed"], false);
    assert_eq!(peers[0]["mta_sts"]["verdict"], "dropped");
    assert!(j["route_failure"].as_str().unwrap().contains("(#4.7.5)"));

    // fallback.sts.test: MX 10 mx2 (not listed) is dropped, MX 20 mx1 takes the message.
    // The numbered list keeps routing's order, the dropped host in its place.
    let r = probe(&home(), &["fallback.sts.test"]);
    r.code(0)
        .has(
            "  1. 127.0.0.20:25 (mx2.sts.test, MX 10)  not used: dropped by the MTA-STS enforce \
             policy\n     the enforce policy of fallback.sts.test (id 1, mx: mx1.sts.test) does \
             not list mx2.sts.test",
        )
        .has("  2. 127.0.18.20:25 (mx1.sts.test, MX 20)  TLS policy: verify from MTA-STS policy")
        .has("result: OK");
    assert!(!r.stdout.contains("peer 127.0.0.20"), "{}", r.dump());
    let (r, j) = json(&home(), &["--all", "fallback.sts.test"]);
    r.code(0);
    let dropped = j["mta_sts"]["dropped"].as_array().unwrap();
    assert_eq!(dropped.len(), 1, "{}", r.dump());
    assert_eq!(dropped[0]["name"], "mx2.sts.test");
    assert_eq!(dropped[0]["ip"], "127.0.0.20");
    let peers = j["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2, "{}", r.dump());
    // Not connected to even with --all: a delivery never would.
    assert_eq!(peers[0]["name"], "mx2.sts.test");
    assert_eq!(peers[0]["plan"], "mta-sts-drop");
    assert_eq!(peers[0]["probed"], false);
    assert_eq!(peers[0]["attempts"].as_array().unwrap().len(), 0);
    assert_eq!(peers[0]["mta_sts"]["verdict"], "dropped");
    assert_eq!(peers[0]["mta_sts"]["listed"], false);
    assert!(
        peers[0]["dropped_because"]
            .as_str()
            .unwrap()
            .contains("does not list mx2.sts.test"),
        "{}",
        r.dump()
    );
    assert_eq!(peers[1]["name"], "mx1.sts.test");
    assert_eq!(peers[1]["plan"], "connect");
    assert!(peers[1]["dropped_because"].is_null());
    assert_eq!(peers[1]["attempts"][0]["state"], "ready");
    // --peer names a dropped address: said so, not probed.
    let r = probe(&home(), &["--peer", "127.0.0.20", "fallback.sts.test"]);
    r.code(3);
    assert!(
        r.stderr
            .contains("127.0.0.20 is dropped by the domain's MTA-STS enforce policy"),
        "{}",
        r.dump()
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_testing_policy_changes_no_level_and_the_report_says_what_enforce_would_do() {
    let r = probe(&home(), &["testing.sts.test"]);
    r.code(1)
        .has("policy in force: mode testing, id 1 (fetched now)")
        .has(
            "  MTA-STS: the testing policy lists this MX: level unchanged: may from default; \
             the TLS line says what enforce would have done\n",
        )
        .has("MTA-STS testing: enforce would have refused this host: certificate has expired.");
    let (_, j) = json(&home(), &["testing.sts.test"]);
    let p = &j["peers"][0]["mta_sts"];
    assert_eq!(p["verdict"], "testing");
    assert_eq!(p["listed"], true);
    assert_eq!(p["changed"], false);
    // Mode none: a policy, but none in force for the peers.
    let (r, j) = json(&home(), &["none.sts.test"]);
    assert_eq!(j["mta_sts"]["policy"]["mode"], "none", "{}", r.dump());
    assert!(j["peers"][0]["mta_sts"].is_null(), "{}", r.dump());
    assert_eq!(
        j["mta_sts"]["line"],
        "MTA-STS: the policy of none.sts.test has mode none (id 1, fetched)."
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_failed_fetch_is_backed_off_and_a_corrupt_cache_is_named() {
    let home = cache_home();
    let r = probe(&home, &["missing.sts.test"]);
    r.code(1)
        .has("  cache mtasts/missing.sts.test: absent\n")
        .has(
            "  fetch: https://mta-sts.missing.sts.test/.well-known/mta-sts.txt: policy fetch \
             failed: mta-sts.missing.sts.test (127.0.18.1): HTTP status 404\n",
        )
        .has("  cache write: mtasts/missing.sts.test written")
        .has("  policy in force: none\n")
        .has("  report line: MTA-STS: no policy for missing.sts.test: policy fetch failed: ")
        .has("MTA-STS: no policy for missing.sts.test: policy fetch failed: mta-sts.missing.sts.test (127.0.18.1): HTTP status 404.");
    let (r, j) = json(&home, &["missing.sts.test"]);
    let s = &j["mta_sts"];
    assert_eq!(s["cache"]["state"], "failure-only", "{}", r.dump());
    let at = s["cache"]["last_failure"]["at"].as_u64().unwrap();
    assert_eq!(s["cache"]["last_failure"]["id"], "1");
    assert_eq!(s["fetch"]["state"], "backed-off");
    assert_eq!(s["fetch"]["backoff_until"].as_u64(), Some(at + 300));
    assert_eq!(s["cache_write"]["state"], "not-needed");
    assert!(s["policy"].is_null());
    let r = probe(&home, &["missing.sts.test"]);
    r.has("for id 1\n").has(
        "  fetch: not tried: the last attempt failed less than 5 minutes ago (a delivery tries \
         again in ",
    );

    std::fs::write(cache_file(&home, "enforce.sts.test"), "garbage\n").unwrap();
    let r = probe(&home, &["enforce.sts.test"]);
    r.code(0).has(
        "  cache mtasts/enforce.sts.test: corrupt: mtasts/enforce.sts.test is corrupt (used as \
         absent; a fetch replaces it)\n",
    );
    let (_, j) = json(&home, &["enforce.sts.test"]);
    assert_eq!(
        j["mta_sts"]["cache"]["state"], "fresh",
        "rewritten by the probe"
    );
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn a_cached_policy_under_an_older_id_outlives_a_dead_policy_host() {
    let home = cache_home();
    write_cache(
        &home,
        "down.sts.test",
        "0",
        60,
        &policy("enforce", "mx1.sts.test"),
    );
    let r = probe(&home, &["down.sts.test"]);
    r.code(0)
        .has("cache mtasts/down.sts.test: policy id 0 fetched 1 min ago: under an older id")
        .has("  fetch: https://mta-sts.down.sts.test/.well-known/mta-sts.txt: policy fetch failed: cannot connect to 127.0.18.99: connection refused\n")
        .has("  policy in force: mode enforce, id 0 (from the cache)")
        .has("MTA-STS: the enforce policy lists this MX: level verify");
    let (_, j) = json(&home, &["down.sts.test"]);
    assert_eq!(j["mta_sts"]["cache"]["state"], "new-id");
    assert_eq!(j["mta_sts"]["fetch"]["state"], "backed-off");
    assert_eq!(j["mta_sts"]["policy"]["id"], "0");
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn overrides_relays_and_domains_without_mta_sts() {
    let home = home();
    home.control("tlspolicy", "expired.sts.test:may!\n");
    let r = probe(&home, &["expired.sts.test"]);
    r.code(1).has(
        "MTA-STS for expired.sts.test:\n  not looked up: control/tlspolicy has an override \
         line (may!) for the domain\n",
    );
    assert!(!home.path().join("mtasts").exists());
    let (_, j) = json(&home, &["expired.sts.test"]);
    assert_eq!(j["mta_sts"]["looked_up"], false);
    assert_eq!(j["mta_sts"]["skipped"], "override");
    assert_eq!(j["mta_sts"]["override_level"], "may");

    // An override for the MX host: the policy is looked up, but not consulted for that host.
    home.control("tlspolicy", "expired.qremote.test:may!\n");
    let (r, j) = json(&home, &["expired.sts.test"]);
    assert_eq!(j["mta_sts"]["policy"]["mode"], "enforce", "{}", r.dump());
    assert_eq!(j["peers"][0]["mta_sts"]["verdict"], "not-consulted");
    probe(&home, &["expired.sts.test"])
        .has("  MTA-STS: not consulted for this MX (override line in control/tlspolicy)\n");

    let home = crate::probe::home();
    home.route("enforce.sts.test", "expired.qremote.test");
    probe(&home, &["enforce.sts.test"]).has(
        "MTA-STS for enforce.sts.test:\n  not looked up: no MX is chosen for an smtproutes \
         relay or an address literal\n",
    );
    let (_, j) = json(&home, &["enforce.sts.test"]);
    assert_eq!(j["mta_sts"]["skipped"], "no-mx");

    let r = probe(&crate::probe::home(), &["plain.sts.test"]);
    r.code(0).has(
        "MTA-STS for plain.sts.test: none (no _mta-sts TXT record, nothing cached; a delivery \
         adds no MTA-STS line)\n",
    );
    assert!(!r.stdout.contains("  MTA-STS: "), "{}", r.dump());
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn the_probe_never_creates_the_cache_directory_and_leaves_files_to_its_owner() {
    use std::os::unix::fs::MetadataExt;
    let home = home();
    probe(&home, &["enforce.sts.test"]).code(0).has(
        "  cache write: not written: there is no mtasts/ directory, and the probe does not \
         create one (a delivery does)\n",
    );
    assert!(!home.path().join("mtasts").exists());
    let (_, j) = json(&home, &["enforce.sts.test"]);
    assert_eq!(j["mta_sts"]["cache_write"]["state"], "no-directory");
    assert_eq!(j["mta_sts"]["fetch"]["state"], "fetched");

    // Run as root (as the test suite is), the probe gives the file the directory's owner,
    // as if qmailr had written it.
    let home = cache_home();
    let dir = home.path().join("mtasts");
    let root = std::fs::metadata(&dir).unwrap().uid() == 0;
    if root {
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    }
    probe(&home, &["enforce.sts.test"]).code(0);
    let file = std::fs::metadata(cache_file(&home, "enforce.sts.test")).unwrap();
    let dir = std::fs::metadata(&dir).unwrap();
    assert_eq!((file.uid(), file.gid()), (dir.uid(), dir.gid()));
}

#[test]
fn cache_and_sender_options_do_not_go_with_send() {
    let home = QmailHome::new();
    for (args, why) in [
        (
            &[
                "--no-cache-write",
                "--send",
                "a@b.test",
                "c@d.test",
                "d.test",
            ][..],
            "not with --no-cache-write",
        ),
        (
            &[
                "--sender", "a@b.test", "--send", "a@b.test", "c@d.test", "d.test",
            ],
            "not with --sender",
        ),
        (&["--sender"], "--sender needs an envelope sender"),
        (
            &[
                "--level", "verify", "--send", "a@b.test", "c@d.test", "d.test",
            ],
            "not with --all, --peer or --level",
        ),
        (
            &["--send", "a@b.test", "c@d.test", "--all", "d.test"],
            "not with --all, --peer or --level",
        ),
        (
            &[
                "--peer",
                "127.0.0.1",
                "--send",
                "a@b.test",
                "c@d.test",
                "d.test",
            ],
            "not with --all, --peer or --level",
        ),
    ] {
        let r = probe(&home, args);
        r.code(3);
        assert!(r.stderr.contains(why), "{}", r.dump());
        assert!(!home.path().join("mtasts").exists());
    }
}
