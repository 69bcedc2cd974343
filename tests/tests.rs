//! One integration-test binary; each module exercises the real `qmail-remote` binary.

mod peer;
mod util;

mod auth;
mod auth_postfix;
mod dane;
mod dane_sts;
mod dns;
mod docs;
mod exim;
#[cfg(feature = "fault-injection")]
mod faults;
mod invocation;
mod issue7;
mod package;
mod postfix;
mod probe;
mod probe_auth;
mod probe_dane;
mod probe_sts;
mod scripted;
mod sts;
mod tls;
mod tls_matrix;
mod tls_names;
