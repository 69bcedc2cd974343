//! The Debian package built by `scripts/package` (scripts/test builds it first and sets
//! `QREMOTE_DEB`): installed with dpkg -i on the test machine, a delivery with the installed
//! binary and a probe against the real peers, qremote-switch on both qmail layouts (with a
//! simulated qmail reinstall and a qmail package upgrade), and a removal that leaves nothing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::postfix::{delivered, unique};
use crate::util::{QmailHome, peer_env};

const QMAIL_REMOTE: &str = "/usr/lib/qremote/qmail-remote";
const PROBE: &str = "/usr/bin/qremote-probe";
const SWITCH: &str = "/usr/sbin/qremote-switch";

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs dpkg, waiting for the dpkg lock while another apt/dpkg holds it (a shared machine).
fn dpkg(args: &[&str]) -> Output {
    for _ in 0..600 {
        let out = Command::new("dpkg").args(args).output().expect("run dpkg");
        let locked = String::from_utf8_lossy(&out.stderr).contains("lock");
        if out.status.success() || !locked {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    panic!("the dpkg lock stayed taken for 10 minutes");
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", show(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn switch(home: &Path, action: &str) -> String {
    ok(Command::new(SWITCH)
        .args(["--home", home.to_str().unwrap(), action])
        .output()
        .unwrap())
}

fn same(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// The installed probe, for the qmail home `home`.
fn installed_probe(home: &Path, args: &[&str]) -> Output {
    Command::new(PROBE)
        .env_clear()
        .env("QMAILHOME", home)
        .args(args)
        .output()
        .unwrap()
}

/// Replaces the packaged qmail-remote as dpkg does on an upgrade (a new file renamed over).
fn replace_packaged(bytes: &[u8]) {
    let new = Path::new(QMAIL_REMOTE).with_extension("dpkg-new");
    std::fs::write(&new, bytes).unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&new, QMAIL_REMOTE).unwrap();
}

/// Where dpkg puts the qmail package's /usr/sbin/qmail-remote (the diversion, if any).
fn sbin_truename() -> String {
    ok(Command::new("dpkg-divert")
        .args(["--truename", "/usr/sbin/qmail-remote"])
        .output()
        .unwrap())
    .trim()
    .to_string()
}

/// A fake "qmail" package that owns /usr/sbin/qmail-remote, as Debian's qmail packages do.
fn fake_qmail_deb(dir: &Path, version: &str) -> PathBuf {
    let root = dir.join(format!("fakeqmail-{version}"));
    std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: qremote-test-qmail\nVersion: {version}\nArchitecture: all\n\
             Maintainer: qremote tests <t@localhost>\nDescription: stands in for qmail in tests\n"
        ),
    )
    .unwrap();
    let bin = root.join("usr/sbin/qmail-remote");
    std::fs::write(&bin, format!("#!/bin/sh\necho qmail {version}\n")).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let deb = dir.join(format!("fakeqmail-{version}.deb"));
    ok(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&deb)
        .output()
        .unwrap());
    deb
}

#[test]
#[ignore = "needs real peers: scripts/test"]
fn package_installs_delivers_switches_and_removes_cleanly() {
    let deb = peer_env("QREMOTE_DEB");
    // What an earlier, interrupted run may have left.
    let _ = dpkg(&["-P", "qremote-test-qmail"]);
    let _ = Command::new("dpkg-divert")
        .args(["--local", "--remove", "/usr/sbin/qmail-remote"])
        .output();
    ok(dpkg(&["-i", &deb]));
    let files: Vec<PathBuf> = ok(dpkg(&["-L", "qremote"]))
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect();
    for f in [
        QMAIL_REMOTE,
        PROBE,
        SWITCH,
        "/usr/share/man/man1/qremote-probe.1.gz",
        "/usr/share/man/man8/qremote.8.gz",
        "/usr/share/man/man8/qremote-switch.8.gz",
        "/usr/share/doc/qremote/README.md",
    ] {
        assert!(files.contains(&PathBuf::from(f)), "{f} not in the package");
    }
    let file_out = Command::new("sh")
        .args(["-c", &format!("od -An -c -N4 {QMAIL_REMOTE}")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&file_out.stdout).contains("E   L   F"));
    // Both binaries stripped: no symbol table.
    for bin in [QMAIL_REMOTE, PROBE] {
        let syms = Command::new("sh")
            .args(["-c", &format!("LC_ALL=C readelf -S {bin} | grep -c symtab")])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&syms.stdout).trim(), "0", "{bin}");
    }
    // No maintainer scripts: installing, upgrading or removing touches no qmail.
    let control = ok(Command::new("sh")
        .args(["-c", &format!("dpkg-deb --ctrl-tarfile {deb} | tar -t")])
        .output()
        .unwrap());
    let members: Vec<&str> = control.lines().filter(|l| *l != "./").collect();
    assert_eq!(members, ["./control"], "{control}");

    // /var/qmail layout: bin/qmail-remote is a real file, root:<group> 0711.
    let home = QmailHome::new();
    home.nameserver(&peer_env("QREMOTE_DNS"));
    home.control(
        "tlsca",
        &std::fs::read_to_string(peer_env("QREMOTE_CA")).unwrap(),
    );
    home.route("pkg.qremote.test", "mx1.qremote.test");
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let qr = bin.join("qmail-remote");
    let orig = bin.join("qmail-remote.orig");
    std::fs::write(&qr, "#!/bin/sh\necho qmail 1.03\n").unwrap();
    std::os::unix::fs::chown(&qr, Some(0), Some(65534)).unwrap();
    std::fs::set_permissions(&qr, std::fs::Permissions::from_mode(0o711)).unwrap();
    assert!(switch(home.path(), "status").starts_with("off"));
    // A rollback without a switch changes nothing.
    assert!(switch(home.path(), "off").starts_with("already off"));
    assert!(!orig.exists());
    switch(home.path(), "on");
    assert!(same(&qr, Path::new(QMAIL_REMOTE)));
    // Twice is once: qmail's saved binary is not replaced by qremote's.
    assert!(switch(home.path(), "on").starts_with("already on"));
    assert!(
        std::fs::read_to_string(&orig)
            .unwrap()
            .contains("qmail 1.03")
    );
    let meta = std::fs::metadata(&qr).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, 65534, 0o711)
    );
    assert!(switch(home.path(), "status").starts_with("on: "));

    // A delivery with the switched binary, and a probe with the installed one.
    let local = unique("pkg");
    let mut msg = tempfile::tempfile().unwrap();
    std::io::Write::write_all(&mut msg, b"Subject: package test\n\nhello\n").unwrap();
    std::io::Seek::rewind(&mut msg).unwrap();
    let out = Command::new(&qr)
        .env_clear()
        .env("QMAILHOME", home.path())
        .args([
            "pkg.qremote.test",
            "sender@client.qremote.test",
            &format!("{local}@pkg.qremote.test"),
        ])
        .stdin(Stdio::from(msg))
        .output()
        .unwrap();
    let reports = String::from_utf8_lossy(&out.stdout);
    assert!(
        reports.starts_with("r\0K127.0.0.20 accepted message.") && out.stderr.is_empty(),
        "{}",
        show(&out)
    );
    assert!(reports.contains("verified as mx1.qremote.test by control/tlsca."));
    delivered("pkg.qremote.test", &local);
    let probe = installed_probe(home.path(), &["--json", "simple.qremote.test"]);
    assert_eq!(probe.status.code(), Some(0), "{}", show(&probe));
    let j: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    assert_eq!(j["peers"][0]["attempts"][0]["tls"]["verified"], true);
    assert_eq!(j["qmail_remote"]["state"], "qremote", "{}", show(&probe));

    // A package upgrade replaces /usr/lib/qremote/qmail-remote, not the switched copy: the
    // probe and `status` say so, and `on` installs the new build.
    let packaged = std::fs::read(QMAIL_REMOTE).unwrap();
    let mut upgraded = packaged.clone();
    upgraded.extend_from_slice(b"\0upgraded");
    replace_packaged(&upgraded);
    let stale = installed_probe(home.path(), &["simple.qremote.test"]);
    assert!(
        String::from_utf8_lossy(&stale.stdout).contains(
            "qmail-remote: WARNING: bin/qmail-remote is qremote, but not the build in \
             /usr/lib/qremote/qmail-remote"
        ),
        "{}",
        show(&stale)
    );
    assert!(switch(home.path(), "status").starts_with("on, but an older qremote"));
    switch(home.path(), "on");
    assert!(same(&qr, Path::new(QMAIL_REMOTE)));
    let probe = installed_probe(home.path(), &["--json", "simple.qremote.test"]);
    let j: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    assert_eq!(j["qmail_remote"]["state"], "qremote", "{}", show(&probe));
    replace_packaged(&packaged);
    switch(home.path(), "on");

    // notqmail 1.08's QMAILREMOTE: `status` names what each running qmail-rspawn was given.
    let fake = tempfile::tempdir().unwrap();
    let rspawn = fake.path().join("qmail-rspawn");
    std::fs::copy("/bin/sleep", &rspawn).unwrap();
    let mut with = Command::new(&rspawn)
        .env_clear()
        .env("QMAILREMOTE", QMAIL_REMOTE)
        .arg("600")
        .spawn()
        .unwrap();
    let mut without = Command::new(&rspawn)
        .env_clear()
        .arg("600")
        .spawn()
        .unwrap();
    let status = switch(home.path(), "status");
    with.kill().unwrap();
    without.kill().unwrap();
    with.wait().unwrap();
    without.wait().unwrap();
    assert!(
        status.contains(&format!(
            "qmail-rspawn (pid {}): QMAILREMOTE={QMAIL_REMOTE}, qremote",
            with.id()
        )),
        "{status}"
    );
    assert!(
        status.contains(&format!(
            "qmail-rspawn (pid {}): no QMAILREMOTE, runs bin/qmail-remote",
            without.id()
        )),
        "{status}"
    );

    // qmail's installer reinstalls through open(O_TRUNC): the copy is overwritten, never the
    // package's file, and that is a rollback the switch recognises.
    let packaged = std::fs::read(QMAIL_REMOTE).unwrap();
    std::fs::write(&qr, "#!/bin/sh\necho qmail reinstalled\n").unwrap();
    assert_eq!(std::fs::read(QMAIL_REMOTE).unwrap(), packaged);
    assert!(switch(home.path(), "status").contains("qmail reinstalled?"));
    switch(home.path(), "on");
    assert!(same(&qr, Path::new(QMAIL_REMOTE)));
    assert!(
        std::fs::read_to_string(&orig)
            .unwrap()
            .contains("reinstalled")
    );
    switch(home.path(), "off");
    assert!(
        std::fs::read_to_string(&qr)
            .unwrap()
            .contains("reinstalled")
    );
    assert!(!orig.exists());
    assert!(switch(home.path(), "off").starts_with("already off"));
    assert!(
        std::fs::read_to_string(&qr)
            .unwrap()
            .contains("reinstalled")
    );
    let meta = std::fs::metadata(&qr).unwrap();
    assert_eq!((meta.gid(), meta.mode() & 0o7777), (65534, 0o711));

    // Debian layout: bin/qmail-remote -> /usr/sbin/qmail-remote, owned by a package.
    let tmp = tempfile::tempdir().unwrap();
    ok(dpkg(&[
        "-i",
        fake_qmail_deb(tmp.path(), "1").to_str().unwrap(),
    ]));
    let deb_home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(deb_home.path().join("bin")).unwrap();
    std::os::unix::fs::symlink(
        "/usr/sbin/qmail-remote",
        deb_home.path().join("bin/qmail-remote"),
    )
    .unwrap();
    let sbin = Path::new("/usr/sbin/qmail-remote");
    let sbin_orig = Path::new("/usr/sbin/qmail-remote.orig");
    assert!(switch(deb_home.path(), "off").starts_with("already off"));
    switch(deb_home.path(), "on");
    assert!(same(sbin, Path::new(QMAIL_REMOTE)));
    assert!(switch(deb_home.path(), "on").starts_with("already on"));
    assert!(
        std::fs::read_to_string(sbin_orig)
            .unwrap()
            .contains("qmail 1")
    );
    assert_eq!(sbin_truename(), "/usr/sbin/qmail-remote.orig");
    // A qmail package upgrade goes to the diverted name and leaves qremote in place.
    ok(dpkg(&[
        "-i",
        fake_qmail_deb(tmp.path(), "2").to_str().unwrap(),
    ]));
    assert!(same(sbin, Path::new(QMAIL_REMOTE)));
    assert!(
        std::fs::read_to_string(sbin_orig)
            .unwrap()
            .contains("qmail 2")
    );
    switch(deb_home.path(), "off");
    assert!(std::fs::read_to_string(sbin).unwrap().contains("qmail 2"));
    assert!(switch(deb_home.path(), "off").starts_with("already off"));
    assert!(std::fs::read_to_string(sbin).unwrap().contains("qmail 2"));
    assert_eq!(sbin_truename(), "/usr/sbin/qmail-remote");
    // A home whose bin/ is itself a link to the package's directory: the packaged file is
    // diverted too (renamed over without a diversion, a qmail upgrade would undo the switch).
    let linked_home = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/usr/sbin", linked_home.path().join("bin")).unwrap();
    assert!(switch(linked_home.path(), "on").contains("/usr/sbin/qmail-remote.orig"));
    assert_eq!(sbin_truename(), "/usr/sbin/qmail-remote.orig");
    assert!(same(sbin, Path::new(QMAIL_REMOTE)));
    switch(linked_home.path(), "off");
    assert!(std::fs::read_to_string(sbin).unwrap().contains("qmail 2"));
    assert_eq!(sbin_truename(), "/usr/sbin/qmail-remote");
    ok(dpkg(&["-P", "qremote-test-qmail"]));
    assert!(!sbin.exists() && !sbin_orig.exists());

    // Removal leaves nothing behind.
    ok(dpkg(&["-P", "qremote"]));
    for f in &files {
        assert!(!f.exists(), "{} left after dpkg -P", f.display());
    }
    assert!(!Path::new("/usr/lib/qremote").exists());
    assert!(!dpkg(&["-s", "qremote"]).status.success());
}
