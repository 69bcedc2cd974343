//! The on-disk MTA-STS policy cache: one small text file per recipient domain in
//! `mtasts/` under the qmail home, because every delivery is a new process.
//!
//! A file holds the policy's TXT id, when it was fetched, the policy text exactly as served
//! (parsed again on every read, so a damaged file can only be "corrupt", never a wrong policy),
//! and the last failed fetch (for the back-off). Files are replaced whole: written under a
//! unique temporary name in the same directory, then renamed over the old one, so a
//! concurrent delivery sees the old file or the new one, never half of one. The last writer
//! wins, which is harmless: both wrote a policy they just fetched.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::policy::{self, Policy};

/// The cache directory, relative to the qmail home.
pub const DIR: &str = "mtasts";
const MAGIC: &str = "qremote-mta-sts-cache 1";
/// A cache file is a policy (at most 64 KiB) plus a few header lines.
const MAX_FILE: u64 = 70 * 1024;

/// A policy as fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached {
    pub id: String,
    /// Unix seconds.
    pub fetched: u64,
    /// The policy text as served.
    pub text: Vec<u8>,
    pub policy: Policy,
}

impl Cached {
    /// Unix time after which the policy no longer applies.
    pub fn expires(&self) -> u64 {
        self.fetched.saturating_add(self.policy.max_age)
    }

    /// Unix time from which a delivery fetches it again: half its `max_age`, and at most
    /// [`super::REFRESH`], after the fetch.
    pub fn refresh_at(&self) -> u64 {
        self.fetched
            .saturating_add((self.policy.max_age / 2).min(super::REFRESH))
    }

    /// How a delivery at time `now` sees this policy, the domain's TXT record publishing
    /// `live` (its id, if there is a record).
    pub fn age(&self, live: Option<&str>, now: u64) -> Age {
        if self.expires() <= now {
            Age::Expired
        } else if live.is_some_and(|id| id != self.id) {
            Age::NewId
        } else if self.fetched > now || now >= self.refresh_at() {
            // A fetch time in the future (a clock set back) never counts as fresh.
            Age::Stale
        } else {
            Age::Fresh
        }
    }
}

/// A cached policy as a delivery sees it ([`Cached::age`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Age {
    /// In force, and nothing to fetch.
    Fresh,
    /// In force, but due for a refresh (older than [`Cached::refresh_at`]).
    Stale,
    /// In force, but the TXT record now publishes another id: fetched again.
    NewId,
    /// Past its `max_age`: no longer applies.
    Expired,
}

impl Age {
    pub fn name(self) -> &'static str {
        match self {
            Age::Fresh => "fresh",
            Age::Stale => "due for a refresh",
            Age::NewId => "under an older id",
            Age::Expired => "expired",
        }
    }
}

/// The last failed fetch, for the back-off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed {
    /// Unix seconds.
    pub at: u64,
    /// The TXT id the fetch was for.
    pub id: String,
}

/// What one domain's file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub cached: Option<Cached>,
    pub failed: Option<Failed>,
}

/// The cache file name for a domain: the lowercase name itself, only when it is a plain
/// letters-digits-hyphens DNS name (so no `/`, no leading dot, no `..`: a DNS name can never
/// make a path). `None` means the domain cannot be cached (nor have MTA-STS at all).
pub fn file_name(domain: &[u8]) -> Option<String> {
    let d = domain.strip_suffix(b".").unwrap_or(domain);
    policy::valid_name(d).then(|| String::from_utf8_lossy(&d.to_ascii_lowercase()).into_owned())
}

/// The cache directory, there and usable.
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Opens `mtasts/` in the current directory (the qmail home), creating it (mode 0700)
    /// when it is missing and the home is writable. The error says why there is no cache.
    pub fn open() -> Result<Cache, String> {
        Cache::open_at(Path::new(DIR))
    }

    /// Opens `mtasts/` only if it is there: `Ok(None)` when it is missing, which holds no
    /// policy either (for `qremote-probe --no-cache-write`, which creates nothing).
    pub fn open_existing() -> Result<Option<Cache>, String> {
        match fs::metadata(DIR) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            _ => Cache::open().map(Some),
        }
    }

    pub fn open_at(dir: &Path) -> Result<Cache, String> {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("{} is not a directory", dir.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .or_else(|e| {
                    // Another delivery may have made it in the meantime.
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| format!("cannot create {}: {}", dir.display(), io_text(&e)))?,
            Err(e) => return Err(format!("cannot use {}: {}", dir.display(), io_text(&e))),
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
        })
    }

    /// The entry for `name` (from [`file_name`]); `Ok(None)` if there is none. A file that
    /// cannot be read or parsed is an error, and the caller goes on as without it.
    pub fn load(&self, name: &str) -> Result<Option<Entry>, String> {
        let path = self.dir.join(name);
        let mut data = Vec::new();
        match fs::File::open(&path) {
            Ok(f) => f
                .take(MAX_FILE + 1)
                .read_to_end(&mut data)
                .map_err(|e| format!("cannot read {}: {}", path.display(), io_text(&e)))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {}", path.display(), io_text(&e))),
        };
        if data.len() as u64 > MAX_FILE {
            return Err(format!("{} is corrupt (too large)", path.display()));
        }
        decode(&data)
            .map(Some)
            .ok_or_else(|| format!("{} is corrupt", path.display()))
    }

    /// Replaces the entry for `name` atomically (unique temporary file, then rename).
    pub fn store(&self, name: &str, entry: &Entry) -> Result<(), String> {
        // Unique by process and random number alone: with the domain in it, the name of a
        // long domain (up to 253 bytes) would pass NAME_MAX (255).
        let tmp = self.dir.join(format!(
            ".tmp.{}.{:x}",
            std::process::id(),
            crate::route::random_u64()
        ));
        let path = self.dir.join(name);
        let result = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&encode(entry)))
            .and_then(|()| fs::rename(&tmp, &path));
        result.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            format!("cannot write {}: {}", path.display(), io_text(&e))
        })
    }
}

/// An I/O error as a short sentence, without Rust's Debug formatting.
fn io_text(e: &io::Error) -> String {
    let s = e.to_string();
    // "Permission denied (os error 13)" -> "permission denied"
    let s = s.split(" (os error").next().unwrap_or(&s);
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
}

fn encode(e: &Entry) -> Vec<u8> {
    let mut out = format!("{MAGIC}\n");
    if let Some(f) = &e.failed {
        out.push_str(&format!("failed {} {}\n", f.at, f.id));
    }
    if let Some(c) = &e.cached {
        out.push_str(&format!(
            "id {}\nfetched {}\nsize {}\n",
            c.id,
            c.fetched,
            c.text.len()
        ));
    }
    out.push('\n');
    let mut out = out.into_bytes();
    if let Some(c) = &e.cached {
        out.extend_from_slice(&c.text);
    }
    out
}

fn decode(data: &[u8]) -> Option<Entry> {
    let split = data.windows(2).position(|w| w == b"\n\n")?;
    let (head, text) = data.split_at(split);
    let text = text.get(2..)?;
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let (mut id, mut fetched, mut size, mut failed) = (None, None, None, None);
    for line in lines {
        let mut w = line.split(' ');
        match (w.next()?, w.next(), w.next(), w.next()) {
            ("id", Some(i), None, None) if valid_id(i) => id = Some(i.to_string()),
            ("fetched", Some(t), None, None) => fetched = Some(t.parse().ok()?),
            ("size", Some(n), None, None) => size = Some(n.parse::<usize>().ok()?),
            ("failed", Some(t), Some(i), None) if valid_id(i) => {
                failed = Some(Failed {
                    at: t.parse().ok()?,
                    id: i.to_string(),
                });
            }
            _ => return None,
        }
    }
    let cached = match (id, fetched) {
        // The size line catches a file cut short by a crash (nothing is fsync'd).
        (Some(id), Some(fetched)) if size == Some(text.len()) => Some(Cached {
            id,
            fetched,
            text: text.to_vec(),
            policy: policy::parse_policy(text).ok()?,
        }),
        (None, None) if text.is_empty() && size.is_none() => None,
        _ => return None,
    };
    Some(Entry { cached, failed })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= super::record::MAX_ID
        && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &[u8] = b"version: STSv1\nmode: enforce\nmx: mx.example\nmax_age: 86400\n";

    fn entry() -> Entry {
        Entry {
            cached: Some(Cached {
                id: "abc1".into(),
                fetched: 1000,
                text: TEXT.to_vec(),
                policy: policy::parse_policy(TEXT).unwrap(),
            }),
            failed: Some(Failed {
                at: 2000,
                id: "abc2".into(),
            }),
        }
    }

    #[test]
    fn round_trip_and_atomic_store() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open_at(&dir.path().join("mtasts")).unwrap();
        assert_eq!(cache.load("example.com"), Ok(None));
        cache.store("example.com", &entry()).unwrap();
        assert_eq!(cache.load("example.com"), Ok(Some(entry())));
        assert_eq!(entry().cached.unwrap().expires(), 87400);
        let only_failure = Entry {
            cached: None,
            failed: entry().failed,
        };
        cache.store("example.com", &only_failure).unwrap();
        assert_eq!(cache.load("example.com"), Ok(Some(only_failure)));
        let names: Vec<_> = fs::read_dir(dir.path().join("mtasts"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["example.com"], "no temporary file is left");
    }

    #[test]
    fn the_longest_domain_names_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open_at(&dir.path().join("mtasts")).unwrap();
        let label = "a".repeat(63);
        let long = format!("{label}.{label}.{label}.{}.example", "b".repeat(53));
        assert_eq!(long.len(), 253);
        let name = file_name(long.as_bytes()).unwrap();
        cache.store(&name, &entry()).unwrap();
        assert_eq!(cache.load(&name), Ok(Some(entry())));
    }

    #[test]
    fn corrupt_files_are_errors() {
        let good = encode(&entry());
        assert!(decode(&good).is_some());
        for n in 0..good.len() {
            assert!(decode(&good[..n]).is_none(), "cut at {n}");
        }
        assert!(decode(b"garbage").is_none());
        assert!(decode(b"qremote-mta-sts-cache 1\nid ../x\nfetched 1\n\n").is_none());
        assert!(
            decode(b"qremote-mta-sts-cache 1\nid a\nfetched 1\nsize 12\n\nnot a policy").is_none()
        );
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(file_name(b"Example.COM."), Some("example.com".into()));
        for bad in [
            &b"../etc"[..],
            b"a/b.example",
            b".example",
            b"a..b",
            b"",
            b"com",
            b"a b.c",
        ] {
            assert_eq!(file_name(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
