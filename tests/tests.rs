//! One integration-test binary; each module exercises the real `qmail-remote` binary.

mod peer;
mod util;

mod invocation;
mod scripted;
mod tls;
mod tls_matrix;
