//! Staged rollouts: the order and gating of switches across a stage's hosts.
//!
//! - [`plan`]: pure planning (canary ranking, rolling batches, worst-case times)
//! - [`health`]: the pure gate verdict; [`gate`]: sampling hosts for it
//! - [`http`]: the tiny HTTP client of health checks and event webhooks
//! - [`executor`]: switching step by step, gating, rolling back
//! - [`state`]: `.slipway/rollout.json` on the hosts
//! - [`command`]: the `slipway rollout ...` commands

pub mod command;
pub mod executor;
pub mod gate;
pub mod health;
pub mod http;
pub mod plan;
pub mod state;
