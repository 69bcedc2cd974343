//! Fault injection (built only with `--features fault-injection`, which scripts/test does): a
//! panic anywhere must become a `Z` report and exit 0, never a bounce.

use crate::peer::Scripted;
use crate::util::QmailHome;

#[test]
fn panic_at_the_final_dot_is_z_possible_duplicate() {
    let server = Scripted::start(1, |_, c| {
        c.ehlo(&[]);
        c.accept_until_data();
        c.drain();
    });
    let mut home = QmailHome::new();
    home.route("example.org", &server.relay());
    home.env("QREMOTE_PANIC_AT_DOT", "1");
    let out = home.run(
        "example.org",
        "a@b",
        &["x@example.org"],
        b"Subject: x\n\nbody\n",
    );
    out.expect(
        "Z",
        "qmail-remote internal error. Possible duplicate! (#4.3.0)",
    );
    server.finish();
}
