//! The MTA-STS TXT record (src/sts/record.rs): the input's lines are the TXT records of one
//! name, as `select` gets them; each line is also parsed on its own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qremote::sts::record::{MAX_ID, Record, parse_record, select};

fn check(r: &Record) {
    assert!(
        (1..=MAX_ID).contains(&r.id.len()),
        "id of {} bytes",
        r.id.len()
    );
    assert!(
        r.id.bytes().all(|b| b.is_ascii_alphanumeric()),
        "id {:?}",
        r.id
    );
}

fuzz_target!(|data: &[u8]| {
    let records: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    if let Ok(r) = select(&records) {
        check(&r);
    }
    for r in &records {
        if let Ok(r) = parse_record(r) {
            check(&r);
        }
    }
});
