//! The qmail home and the control files, read once before any network I/O. Reading follows
//! qmail's `control.c`: a missing file means the default, an unreadable one defers the message,
//! trailing white space is stripped, and in list files blank lines and `#` lines are skipped.
//! Unlike stock, a trailing CR (DOS line ends) is stripped too. Numbers are read as stock's
//! `scan_ulong` reads them: the leading digits count and the rest of the line is ignored.

use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::authsenders::AuthSenders;
use crate::failure::Failure;
use crate::smtproutes::Routes;

/// Every control file this program reads: name, default, meaning. The man page is checked
/// against this table by the test suite.
pub const CONTROLS: &[(&str, &str, &str)] = &[
    ("me", "none", "this host's name; default for helohost"),
    ("helohost", "me", "name sent with EHLO/HELO"),
    (
        "smtproutes",
        "none",
        "artificial routes: domain:relay:port[|user|password]",
    ),
    (
        "authsenders",
        "none",
        "routes by sender: sender:relay:port[|user|password]",
    ),
    (
        "timeoutconnect",
        "60",
        "seconds to wait for a TCP connection",
    ),
    (
        "timeoutremote",
        "1200",
        "seconds to wait for each read or write",
    ),
    (
        "mxaddresslimit",
        "5",
        "most distinct addresses tried per delivery (0: no limit)",
    ),
    (
        "mxsessionlimit",
        "2",
        "most sessions with a 220 greeting per delivery (0: no limit)",
    ),
    (
        "outgoingip",
        "none",
        "local source address(es), one IPv4 and/or one IPv6",
    ),
    (
        "addresspreference",
        "ipv4",
        "ipv4, ipv6, any, ipv4only or ipv6only",
    ),
    (
        "nameservers",
        "/etc/resolv.conf",
        "DNS resolvers to use instead of resolv.conf",
    ),
    (
        "tlspolicy",
        "may",
        "TLS levels, globally and per destination",
    ),
    (
        "dnssecresolvers",
        "none",
        "non-loopback resolvers whose DNSSEC (AD) flag is believed, for DANE",
    ),
    (
        "tlsca",
        "none",
        "extra trusted CA certificates (PEM), on top of webpki roots",
    ),
    (
        "tlshosts/<host>.pem",
        "none",
        "qmail-tls: TLS required, verified against this CA file",
    ),
    (
        "tlshosts/exhaustivelist",
        "none",
        "qmail-tls: only hosts with a .pem get TLS",
    ),
    (
        "notlshosts/<host>",
        "none",
        "qmail-tls: never TLS with this host",
    ),
    (
        "clientcert.pem",
        "none",
        "qmail-tls: client certificate chain and key (PEM)",
    ),
    (
        "tlsclientciphers",
        "none",
        "qmail-tls: OpenSSL cipher string; ignored (see man page)",
    ),
];

/// Largest control file we are willing to read.
const MAX_CONTROL: u64 = 16 << 20;

/// Which address families to use and in which order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrPref {
    /// IPv4 addresses of a host before its IPv6 addresses (default).
    V4First,
    V6First,
    /// DNS order, A records before AAAA records.
    Any,
    V4Only,
    V6Only,
}

impl AddrPref {
    pub fn wants_v4(self) -> bool {
        self != AddrPref::V6Only
    }
    pub fn wants_v6(self) -> bool {
        self != AddrPref::V4Only
    }
}

/// Everything read from `control/`.
pub struct Config {
    pub helohost: Vec<u8>,
    pub routes: Routes,
    pub authsenders: AuthSenders,
    /// Those of `smtproutes` and `authsenders` that hold credentials and that every local
    /// user may read: the report of an authenticated delivery warns about them.
    pub exposed: Vec<&'static str>,
    pub timeout_connect: Duration,
    pub timeout_remote: Duration,
    pub outgoing: Vec<IpAddr>,
    pub addr_pref: AddrPref,
    /// Most distinct addresses on the list of peers to try; 0 for no limit.
    pub mx_address_limit: usize,
    /// Most sessions that got a 220 greeting; 0 for no limit.
    pub mx_session_limit: usize,
}

/// Finds the qmail home and makes it the working directory, as qmail-remote's first act.
pub fn enter_home() -> Result<PathBuf, Failure> {
    let home = match std::env::var_os("QMAILHOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ if Path::new("/var/qmail").is_dir() => PathBuf::from("/var/qmail"),
        _ => PathBuf::from("/var/lib/qmail"),
    };
    std::env::set_current_dir(&home).map_err(|_| Failure::HomeDir)?;
    Ok(home)
}

/// Reads a control file relative to the qmail home. `Ok(None)` if it does not exist.
pub fn read_file(name: &str) -> Result<Option<Vec<u8>>, Failure> {
    let path = Path::new("control").join(name);
    match std::fs::File::open(&path) {
        Ok(f) => {
            let mut data = Vec::new();
            f.take(MAX_CONTROL)
                .read_to_end(&mut data)
                .map_err(|_| Failure::ControlUnreadable)?;
            Ok(Some(data))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(_) => Err(Failure::ControlUnreadable),
    }
}

/// [`read_file`] for the files that may hold passwords: an unreadable one is named in the
/// report, because the usual cause is the owner or mode chosen to keep the secrets in.
fn read_secret_file(name: &'static str) -> Result<Option<Vec<u8>>, Failure> {
    read_file(name).map_err(|_| Failure::SecretsUnreadable { file: name })
}

/// True if `control/<name>` grants read permission to every user.
fn readable_by_all(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(Path::new("control").join(name))
        .is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// True if `control/<name>` exists (qmail-tls flag files).
pub fn exists(name: &str) -> bool {
    Path::new("control").join(name).exists()
}

fn strip(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .map_or(0, |i| i + 1);
    line.split_at(end).0
}

/// Splits `key:value` at the first colon, as qmail's constmap files are keyed.
pub fn split_key(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (key, rest) = line.split_at(colon);
    Some((key, rest.get(1..).unwrap_or_default()))
}

/// The keys qmail tries for a host, most specific first: the whole (lowercased) name, then
/// every suffix starting at a dot, longest first (`a.b.c`, `.b.c`, `.c`).
pub fn suffix_keys(name: &[u8]) -> Vec<Vec<u8>> {
    let name = name.to_ascii_lowercase();
    let suffixes = name
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'.')
        .map(|(i, _)| name.split_at(i).1.to_vec());
    let mut keys = vec![name.clone()];
    keys.extend(suffixes);
    keys
}

/// The meaningful lines of a list file, with their 1-based line numbers.
pub fn lines(data: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    data.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, strip(l)))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with(b"#"))
}

/// The first line of a one-line file, stripped; `None` if absent or empty.
pub fn read_line(name: &str) -> Result<Option<Vec<u8>>, Failure> {
    Ok(read_file(name)?.and_then(|d| {
        let first = strip(d.split(|&b| b == b'\n').next().unwrap_or(&[])).to_vec();
        (!first.is_empty()).then_some(first)
    }))
}

/// The number at the start of `text`, as qmail's `scan_ulong` reads it: the leading digits,
/// whatever follows them (`25 # comment` is 25). `None` without a leading digit. Saturates
/// instead of wrapping around.
pub fn number_prefix(text: &[u8]) -> Option<u64> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    let digits = text.get(..digits).filter(|d| !d.is_empty())?;
    Some(digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// A one-line numeric file, read as stock's `control_readint`: the leading digits of the first
/// line; an absent file, or a line that does not start with a digit, means the default.
fn read_number(name: &'static str, default: u64) -> Result<u64, Failure> {
    let line = read_line(name)?;
    Ok(line
        .and_then(|l| number_prefix(l.trim_ascii_start()))
        .unwrap_or(default))
}

fn read_seconds(name: &'static str, default: u64) -> Result<Duration, Failure> {
    let secs = read_number(name, default)?;
    // 0 would mean "no timeout" to the socket layer; qmail's 0 times out at once. Use 1 s.
    Ok(Duration::from_secs(secs.clamp(1, 86_400)))
}

fn read_limit(name: &'static str, default: u64) -> Result<usize, Failure> {
    Ok(usize::try_from(read_number(name, default)?).unwrap_or(usize::MAX))
}

pub fn syntax(file: &'static str, line: usize, what: &str) -> Failure {
    Failure::ControlSyntax {
        file,
        line,
        what: what.to_string(),
    }
}

fn read_outgoing() -> Result<Vec<IpAddr>, Failure> {
    match read_file("outgoingip")? {
        Some(data) => parse_outgoing(&data),
        None => Ok(Vec::new()),
    }
}

/// `control/outgoingip`: at most one address per family; `0.0.0.0` and `::` are skipped.
pub fn parse_outgoing(data: &[u8]) -> Result<Vec<IpAddr>, Failure> {
    let mut out: Vec<IpAddr> = Vec::new();
    for (n, line) in lines(data) {
        // The first word is the address; the rest of the line (a comment, say) is ignored, as
        // the outgoingip patches' ip_scan ignores what follows the address.
        let word = line
            .split(|b| b.is_ascii_whitespace())
            .find(|w| !w.is_empty())
            .unwrap_or_default();
        let ip: IpAddr = std::str::from_utf8(word)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| syntax("outgoingip", n, "not an IP address"))?;
        if ip.is_unspecified() {
            continue;
        }
        if out.iter().any(|o| o.is_ipv4() == ip.is_ipv4()) {
            return Err(syntax(
                "outgoingip",
                n,
                "more than one address of this family",
            ));
        }
        out.push(ip);
    }
    Ok(out)
}

fn read_addr_pref() -> Result<AddrPref, Failure> {
    match read_line("addresspreference")? {
        Some(line) => parse_addr_pref(&line),
        None => Ok(AddrPref::V4First),
    }
}

/// `control/addresspreference`'s first line.
pub fn parse_addr_pref(line: &[u8]) -> Result<AddrPref, Failure> {
    Ok(match line.to_ascii_lowercase().as_slice() {
        b"ipv4" => AddrPref::V4First,
        b"ipv6" => AddrPref::V6First,
        b"any" => AddrPref::Any,
        b"ipv4only" => AddrPref::V4Only,
        b"ipv6only" => AddrPref::V6Only,
        _ => {
            return Err(syntax(
                "addresspreference",
                1,
                "expected ipv4, ipv6, any, ipv4only or ipv6only",
            ));
        }
    })
}

/// The name sent in EHLO/HELO: no white space or control characters (they would end the
/// command early or inject another).
pub fn check_helohost(helohost: &[u8]) -> Result<(), Failure> {
    if helohost.iter().any(|&b| b <= b' ' || b == 127) {
        return Err(syntax(
            "helohost",
            1,
            "white space or control characters in the name",
        ));
    }
    Ok(())
}

impl Config {
    /// Reads every control file qmail-remote needs before routing. TLS files are read later
    /// (`tlspolicy` after routing, the rest only when a connection reaches STARTTLS).
    pub fn load() -> Result<Config, Failure> {
        let me = read_line("me")?;
        let helohost = match read_line("helohost")? {
            Some(h) => h,
            None => me.ok_or(Failure::ControlMissing)?,
        };
        check_helohost(&helohost)?;
        let routes = match read_secret_file("smtproutes")? {
            Some(data) => Routes::parse(&data)?,
            None => Routes::default(),
        };
        let authsenders = match read_secret_file("authsenders")? {
            Some(data) => AuthSenders::parse(&data)?,
            None => AuthSenders::default(),
        };
        let exposed = [
            ("smtproutes", routes.has_credentials()),
            ("authsenders", authsenders.has_credentials()),
        ]
        .into_iter()
        .filter(|&(name, secret)| secret && readable_by_all(name))
        .map(|(name, _)| name)
        .collect();
        Ok(Config {
            helohost,
            routes,
            authsenders,
            exposed,
            timeout_connect: read_seconds("timeoutconnect", 60)?,
            timeout_remote: read_seconds("timeoutremote", 1200)?,
            outgoing: read_outgoing()?,
            addr_pref: read_addr_pref()?,
            mx_address_limit: read_limit("mxaddresslimit", 5)?,
            mx_session_limit: read_limit("mxsessionlimit", 2)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_as_scan_ulong_reads_them() {
        assert_eq!(number_prefix(b"25"), Some(25));
        assert_eq!(number_prefix(b"25 # comment"), Some(25));
        assert_eq!(number_prefix(b"30s"), Some(30));
        assert_eq!(number_prefix(b"0"), Some(0));
        assert_eq!(number_prefix(b"x25"), None);
        assert_eq!(number_prefix(b""), None);
        assert_eq!(number_prefix(b"99999999999999999999999"), Some(u64::MAX));
    }

    #[test]
    fn lines_skip_comments_blank_and_strip_crlf() {
        let got: Vec<_> = lines(b"# c\n\na:b \r\n  lead\n").collect();
        assert_eq!(got, vec![(3, &b"a:b"[..]), (4, b"  lead")]);
    }
}
