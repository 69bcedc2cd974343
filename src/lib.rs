//! qremote: a drop-in replacement for qmail's `qmail-remote`.
#![forbid(unsafe_code)]

pub mod control;
pub mod dns;
pub mod failure;
pub mod reply;
pub mod report;
pub mod smtproutes;
