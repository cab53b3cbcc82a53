//! Canary by users behind a real nginx: two releases live on each host, sticky
//! percentage steps, zero failed requests, automatic rollback. Real sshd hosts
//! (tests/support/hosts.rs), a real nginx per host, a tiny Python app per slot. Needs
//! root, sshd and nginx: run with `scripts/test`, which installs them.

#[allow(dead_code)]
mod harness;
#[path = "../support/hosts.rs"]
mod hosts;

#[path = "../e2e/schema.rs"]
mod schema;

mod ab;
mod chart;
mod feed;
mod gate;
mod host_gate;
mod input;
mod load;
mod prometheus;
mod rollback;
mod split;
