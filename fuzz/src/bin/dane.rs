//! TLSA matching (src/tls/dane.rs, src/tls/sig.rs): a record's selector, matching type and data
//! against any certificate bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qremote::dns::Tlsa;
use qremote::tls::dane::{Match, tlsa_matches, unusable};
use qremote::tls::sig::spki;

fuzz_target!(|data: &[u8]| {
    let [usage, selector, matching, len, rest @ ..] = data else {
        return;
    };
    let (assoc, cert) = rest.split_at(usize::from(*len).min(rest.len()));
    let verdict = tlsa_matches(*selector, *matching, assoc, cert);
    // An unknown selector or matching type never matches. (It is `No` rather than `Unusable`
    // when selector 1 meets a certificate without a readable key; the verifier drops such
    // records through `unusable` first.)
    if *selector > 1 || *matching > 2 {
        assert_ne!(verdict, Match::Yes);
    }
    let record = Tlsa {
        usage: *usage,
        selector: *selector,
        matching: *matching,
        data: assoc.to_vec(),
    };
    // A record the verifier would use matches only with data of the right length.
    if verdict == Match::Yes && unusable(&record).is_some() && *usage >= 2 && *usage <= 3 {
        assert!(*matching == 0 && assoc.is_empty(), "{record:?} matched");
    }
    if let Some(key) = spki(cert) {
        assert!(key.len() <= cert.len());
        assert_eq!(tlsa_matches(1, 0, key, cert), Match::Yes);
    }
    assert_eq!(tlsa_matches(0, 0, cert, cert), Match::Yes);
});
