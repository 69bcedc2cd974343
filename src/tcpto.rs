//! `queue/lock/tcpto`, byte-compatible with qmail's `tcpto.c` so qmail-tcpto and qmail-tcpok keep
//! working: 64 records of 16 bytes (IPv4 address, error count, little-endian time of the last
//! counted timeout), locked with flock. IPv6 peers are not recorded (the format has no room).
//! A missing file turns the whole mechanism off, as in qmail.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

const PATH: &str = "queue/lock/tcpto";
const RECORDS: usize = 64;

fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

fn read_table() -> Option<[u8; RECORDS * 16]> {
    let mut table = [0u8; RECORDS * 16];
    let mut f = File::open(PATH).ok()?;
    let mut n = 0;
    while n < table.len() {
        match f.read(&mut table[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    Some(table)
}

fn record(table: &[u8], i: usize) -> ([u8; 4], u8, u32) {
    let r = &table[i * 16..i * 16 + 16];
    (
        [r[0], r[1], r[2], r[3]],
        r[4],
        u32::from_le_bytes([r[8], r[9], r[10], r[11]]),
    )
}

/// True if this address timed out at least twice recently (64 to 97 minutes, by pid).
pub fn should_skip(ip: IpAddr) -> bool {
    let IpAddr::V4(v4) = ip else { return false };
    let Some(table) = read_table() else {
        return false;
    };
    let window = (60 + (std::process::id() & 31)) * 64;
    let now = now();
    (0..RECORDS)
        .map(|i| record(&table, i))
        .any(|(addr, count, when)| {
            addr == v4.octets() && count >= 2 && now.wrapping_sub(when) < window
        })
}

/// Records the result of a connection attempt: a timeout counts, anything else clears.
pub fn note(ip: IpAddr, timed_out: bool) {
    let IpAddr::V4(v4) = ip else { return };
    let Ok(mut w) = OpenOptions::new().write(true).open(PATH) else {
        return;
    };
    if w.lock().is_err() {
        return;
    }
    let Some(table) = read_table() else { return };
    let addr = v4.octets();
    let now = now();
    let existing = (0..RECORDS).find(|&i| record(&table, i).0 == addr);
    let (slot, count, when) = match (existing, timed_out) {
        (None, false) => return,
        (Some(i), false) => {
            let (_, count, when) = record(&table, i);
            if count == 0 {
                return;
            }
            (i, 0, when)
        }
        (Some(i), true) => {
            let (_, count, when) = record(&table, i);
            // Stock's rule: a second timeout within 120 s of the last counted one is the same
            // outage. A count of 0 (cleared by a later success) always counts again.
            if count != 0 && now.wrapping_sub(when) < 120 {
                return;
            }
            (i, count.saturating_add(1).min(10), now)
        }
        (None, true) => {
            let slot = (0..RECORDS)
                .find(|&i| record(&table, i).1 == 0)
                .unwrap_or_else(|| {
                    (0..RECORDS)
                        .min_by_key(|&i| {
                            let (_, c, w) = record(&table, i);
                            u64::from(w) + u64::from(c) * 1024
                        })
                        .unwrap_or(0)
                });
            (slot, 1, now)
        }
    };
    let mut rec = [0u8; 16];
    rec[..4].copy_from_slice(&addr);
    rec[4] = count;
    rec[8..12].copy_from_slice(&when.to_le_bytes());
    let _ = w
        .seek(SeekFrom::Start((slot * 16) as u64))
        .and_then(|_| w.write_all(&rec));
}
