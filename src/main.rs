//! `qmail-remote host sender recip [recip ...]`: see qmail-remote(8). Always exits 0; the
//! result is in the reports on fd 1, and nothing is ever written to fd 2.

fn main() {
    qremote::install_panic_hook();
    let (reporter, report) = qremote::run(std::env::args_os().collect());
    reporter.finish(&report)
}
