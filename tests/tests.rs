//! One integration-test binary; each module exercises the real `qmail-remote` binary.

mod util;

mod invocation;
mod scripted;
