//! End-to-end tests: the real `slipway` binary against real sshd hosts on loopback
//! (see tests/support/hosts.rs). They need root (mount namespaces) and sshd: run them
//! with `scripts/test`, which installs what is missing.

#[path = "../support/hosts.rs"]
mod hosts;
#[allow(dead_code)]
mod scenario;

mod atomic;
mod audit;
mod compress;
mod config_errors;
mod deploy;
mod failures;
mod hostile;
mod hostkeys;
mod lock;
mod new_user;
mod output;
mod quickstart;
mod relay;
mod rollout;
mod schema;
mod status;
mod trees;
