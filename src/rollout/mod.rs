//! Staged rollouts: the order and gating of switches across a stage's hosts.
//!
//! - [`plan`]: pure planning (canary ranking, rolling batches, worst-case times)
//! - [`health`]: the pure gate verdict; [`gate`]: sampling hosts for it
//! - [`http`]: the tiny HTTP client of health checks and event webhooks
//! - [`executor`]: switching step by step, gating, rolling back
//! - [`state`]: `.slipway/rollout.json` on the hosts
//! - [`command`]: the `slipway rollout ...` commands; [`abort`]: every host back to its
//!   stable release; [`blue_green`]: moving traffic back to the previous pool

pub mod abort;
pub mod blue_green;
pub mod command;
pub mod executor;
pub mod gate;
pub mod health;
pub mod http;
pub mod plan;
pub mod state;
