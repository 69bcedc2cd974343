//! Which `qmail-remote` deliveries run. The probe shows what the qremote library it was built
//! from would do; deliveries do that only while `bin/qmail-remote` in the qmail home is the
//! same build. `qremote-switch on` installs a copy there, which a package upgrade does not
//! update (no maintainer script touches qmail), so the probe says when the two differ.

use crate::json::Json;

/// Where the package installs qremote's `qmail-remote` (scripts/package).
pub const PACKAGED: &str = "/usr/lib/qremote/qmail-remote";
/// The binary qmail-rspawn runs, relative to the qmail home (the probe runs inside it).
const FILE: &str = "bin/qmail-remote";
/// A text only qremote's `qmail-remote` contains (its panic report); qremote-switch asks the
/// same question the same way.
const MARKER: &[u8] = b"qmail-remote internal error";

pub enum Installed {
    /// No `bin/qmail-remote` (or unreadable: the probe may not run as root).
    Unknown(String),
    /// qmail's own, or another program: unless notqmail's `QMAILREMOTE` names qremote,
    /// deliveries do not do what the probe shows.
    Other,
    /// qremote, the same bytes as the packaged binary (or no packaged binary to compare).
    Qremote { packaged: bool },
    /// qremote, but not the packaged build: the package changed since `qremote-switch on`.
    Stale,
}

/// A program larger than this is not a qmail-remote: it is not read further.
const MAX_SIZE: u64 = 256 << 20;

/// The bytes of a regular file of at most [`MAX_SIZE`] (`bin/qmail-remote` could be anything:
/// a FIFO would block the probe, a link to /dev/zero would never end).
fn read_program(path: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let reason = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => "read error".into(),
    };
    let meta = std::fs::metadata(path).map_err(reason)?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SIZE).read_to_end(&mut bytes))
        .map_err(reason)?;
    Ok(bytes)
}

pub fn check() -> Installed {
    let bin = match read_program(FILE) {
        Ok(b) => b,
        Err(why) => return Installed::Unknown(why),
    };
    if memchr::memmem::find(&bin, MARKER).is_none() {
        return Installed::Other;
    }
    match read_program(PACKAGED) {
        Ok(packaged) if packaged != bin => Installed::Stale,
        Ok(_) => Installed::Qremote { packaged: true },
        Err(_) => Installed::Qremote { packaged: false },
    }
}

impl Installed {
    pub fn text(&self) -> String {
        match self {
            Installed::Unknown(why) => format!("{FILE}: cannot be read ({why})"),
            Installed::Other => format!(
                "{FILE} is not qremote (qmail's own?): deliveries do what this shows only if \
                 QMAILREMOTE (notqmail 1.08) names qremote; see qremote-switch(8)"
            ),
            Installed::Qremote { packaged: true } => {
                format!("{FILE} is qremote, the same build as {PACKAGED}")
            }
            Installed::Qremote { packaged: false } => format!("{FILE} is qremote"),
            Installed::Stale => format!(
                "WARNING: {FILE} is qremote, but not the build in {PACKAGED} (the package was \
                 upgraded since 'qremote-switch on'?): deliveries run the copy in {FILE}; run \
                 'qremote-switch on' to install the new one"
            ),
        }
    }

    pub fn json(&self) -> Json {
        let state = match self {
            Installed::Unknown(_) => "unknown",
            Installed::Other => "other",
            Installed::Qremote { .. } => "qremote",
            Installed::Stale => "qremote-stale",
        };
        Json::Obj(vec![
            ("file", Json::str(FILE)),
            ("state", Json::str(state)),
            ("text", Json::str(self.text())),
        ])
    }
}
