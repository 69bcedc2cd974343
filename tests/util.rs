//! Test helpers: a fresh qmail home per test, the real binary run with a clean environment,
//! and report parsing with a full dump on failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_qmail-remote");

/// A temporary qmail home with `control/me` set.
pub struct QmailHome {
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// Run the binary as this user (and group) instead of the test's own.
    uid: Option<u32>,
}

impl QmailHome {
    pub fn new() -> QmailHome {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("control")).unwrap();
        std::fs::create_dir_all(dir.path().join("queue/lock")).unwrap();
        let home = QmailHome {
            dir,
            env: Vec::new(),
            uid: None,
        };
        home.control("me", "client.qremote.test\n");
        home.control("timeoutremote", "10\n");
        home.control("timeoutconnect", "5\n");
        home
    }

    /// A home that resolves with the test unbound and trusts the test CA (`control/tlsca`),
    /// for tests against the real peers of scripts/peers-up.
    pub fn with_test_peers() -> QmailHome {
        let home = QmailHome::new();
        home.nameserver(&peer_env("QREMOTE_DNS"));
        home.control(
            "tlsca",
            &std::fs::read_to_string(peer_env("QREMOTE_CA")).unwrap(),
        );
        home
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `control/<name>` (sub-directories are created).
    pub fn control(&self, name: &str, content: &str) -> &QmailHome {
        let p = self.path().join("control").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    /// Routes `domain` to `relay` (e.g. `[127.0.0.20]:25`) by appending to smtproutes.
    pub fn route(&self, domain: &str, relay: &str) -> &QmailHome {
        let p = self.path().join("control/smtproutes");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        writeln!(f, "{domain}:{relay}").unwrap();
        self
    }

    /// Points DNS at the given resolver via `control/nameservers`.
    pub fn nameserver(&self, addr: &str) -> &QmailHome {
        self.control("nameservers", &format!("{addr}\n"))
    }

    /// Runs the binary as an unprivileged user, as qmail runs it (as `qmailr`), so that file
    /// permissions apply even when the tests run as root; the home is made readable to it.
    /// Without root the binary runs as the test's own user, for whom permissions apply anyway.
    pub fn unprivileged(&mut self) -> &mut QmailHome {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if root {
            self.uid = Some(65534);
            let perm = std::fs::Permissions::from_mode(0o755);
            std::fs::set_permissions(self.path(), perm).unwrap();
        }
        self
    }

    pub fn env(&mut self, k: &str, v: &str) -> &mut QmailHome {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Runs the binary with the message as a seekable file on fd 0, like qmail-rspawn.
    pub fn run(&self, host: &str, sender: &str, recips: &[&str], msg: &[u8]) -> Outcome {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(msg).unwrap();
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        self.run_with(host, sender, recips, Stdio::from(f), None)
    }

    /// Runs the binary with the message on a pipe.
    pub fn run_pipe(&self, host: &str, sender: &str, recips: &[&str], msg: &[u8]) -> Outcome {
        self.run_with(host, sender, recips, Stdio::piped(), Some(msg))
    }

    pub fn command(&self, args: &[&[u8]]) -> Command {
        use std::os::unix::ffi::OsStrExt;
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("QMAILHOME", self.path());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(id) = self.uid {
            use std::os::unix::process::CommandExt;
            c.uid(id).gid(id);
        }
        for a in args {
            c.arg(std::ffi::OsStr::from_bytes(a));
        }
        c
    }

    fn run_with(
        &self,
        host: &str,
        sender: &str,
        recips: &[&str],
        stdin: Stdio,
        pipe: Option<&[u8]>,
    ) -> Outcome {
        let mut args: Vec<&[u8]> = vec![host.as_bytes(), sender.as_bytes()];
        args.extend(recips.iter().map(|r| r.as_bytes()));
        let mut cmd = self.command(&args);
        cmd.stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn qmail-remote");
        if let Some(msg) = pipe {
            let mut stdin = child.stdin.take().unwrap();
            let msg = msg.to_vec();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&msg);
            });
        }
        let out = child.wait_with_output().unwrap();
        Outcome::new(out, self.path().to_path_buf())
    }
}

/// One parsed report.
#[derive(Debug, Clone)]
pub struct Rep {
    pub letter: char,
    pub text: String,
}

pub struct Outcome {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub reports: Vec<Rep>,
    home: PathBuf,
}

impl Outcome {
    fn new(out: std::process::Output, home: PathBuf) -> Outcome {
        let mut reports = Vec::new();
        if let Some(body) = out.stdout.strip_suffix(b"\0") {
            for r in body.split(|&b| b == 0) {
                let letter = r.first().map_or('?', |&b| b as char);
                reports.push(Rep {
                    letter,
                    text: String::from_utf8_lossy(r.get(1..).unwrap_or(&[])).into(),
                });
            }
        }
        Outcome {
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
            reports,
            home,
        }
    }

    pub fn dump(&self) -> String {
        format!(
            "status: {:?}\nstdout: {:?}\nstderr: {:?}\nhome: {}",
            self.status,
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr),
            self.home.display()
        )
    }

    /// Exit 0, nothing on stderr, NUL-terminated reports, exactly one K/Z/D and it is last.
    pub fn assert_clean(&self) -> &Outcome {
        assert_eq!(self.status.code(), Some(0), "{}", self.dump());
        assert!(self.stderr.is_empty(), "stderr not empty\n{}", self.dump());
        assert!(
            self.stdout.ends_with(b"\0"),
            "no final NUL\n{}",
            self.dump()
        );
        let verdicts = self
            .reports
            .iter()
            .filter(|r| "KZD".contains(r.letter))
            .count();
        assert_eq!(verdicts, 1, "{}", self.dump());
        assert!("KZD".contains(self.last().letter), "{}", self.dump());
        assert!(
            self.reports[..self.reports.len() - 1]
                .iter()
                .all(|r| "rhs".contains(r.letter)),
            "{}",
            self.dump()
        );
        self
    }

    pub fn letters(&self) -> String {
        self.reports.iter().map(|r| r.letter).collect()
    }

    pub fn last(&self) -> &Rep {
        self.reports
            .last()
            .unwrap_or_else(|| panic!("no reports\n{}", self.dump()))
    }

    /// Asserts the letters and that the verdict text contains `needle`.
    pub fn expect(&self, letters: &str, needle: &str) -> &Outcome {
        self.assert_clean();
        assert_eq!(self.letters(), letters, "{}", self.dump());
        assert!(
            self.last().text.contains(needle),
            "verdict lacks {needle:?}\n{}",
            self.dump()
        );
        self
    }
}

/// A value from the environment that scripts/test sets up, or else from the env file that
/// scripts/peers-up writes (`$QREMOTE_PEERS_DIR/env`, default `/tmp/qremote-peers/env`), so
/// `cargo test -- --ignored` works after `scripts/peers-up`. Panics loudly when missing, so a
/// test never passes without its server.
pub fn peer_env(name: &str) -> String {
    if let Ok(v) = std::env::var(name) {
        return v;
    }
    let dir = std::env::var("QREMOTE_PEERS_DIR").unwrap_or_else(|_| "/tmp/qremote-peers".into());
    let file = Path::new(&dir).join("env");
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix('='));
    match value {
        Some(v) => v.to_string(),
        None => panic!(
            "{name} is not set and not in {}: run scripts/test (or scripts/peers-up), which starts \
             the real peers this test needs",
            file.display()
        ),
    }
}

/// The first piece of Rust Debug formatting in a report, if any: a CamelCase identifier
/// (`CaUsedAsEndEntity`, `HandshakeFailure`), an identifier glued to a parenthesis
/// (`Other(`, `Some(`), braces, or an `os error` number. The peer's own words ("Remote host
/// said:" lines) are not ours and are skipped.
pub fn debug_shape(report: &str) -> Option<String> {
    for line in report.lines() {
        if line.starts_with("Remote host said:") {
            continue;
        }
        if let Some(at) = line.find(['{', '}']) {
            return Some(line[at..].chars().take(20).collect());
        }
        if line.contains("os error") {
            return Some("os error".into());
        }
        let words = line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        let mut rest = line;
        for word in words {
            let Some(at) = rest.find(word) else { continue };
            let after = rest[at + word.len()..].chars().next();
            rest = &rest[at + word.len()..];
            let b = word.as_bytes();
            let camel = b.first().is_some_and(u8::is_ascii_uppercase)
                && b.windows(2)
                    .any(|w| w[0].is_ascii_lowercase() && w[1].is_ascii_uppercase());
            let called = !word.is_empty() && after == Some('(');
            if camel || called {
                return Some(word.to_string());
            }
        }
    }
    None
}
