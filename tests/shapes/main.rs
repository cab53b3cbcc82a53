//! Release shapes: every tree a source can hold either deploys byte-identical (contents,
//! modes, symlink targets, directories, verified on the host) or is refused at the source
//! with a message naming the path, exit 2, nothing changed on any host.
//!
//! - `generated.rs`: a seeded property test over generated release shapes, most of them
//!   through the `local` transport and a share through an sshd test host
//!   (`SLIPWAY_SHAPES_SEED` replays a run, `SLIPWAY_SHAPES_CASES` sets the count);
//! - `fixed.rs`: 100,000 small files, one 3 GiB file, sockets and fifos, a path too long
//!   for the host;
//! - `shape.rs`: what a generated release is, how it is written, what the host must hold;
//! - `target.rs`: one deploy target (a `local` directory or an sshd host) and a
//!   snapshot of everything under its `deploy_to`.
//!
//! Needs root and sshd, like tests/e2e (run with `scripts/test`).

#[path = "../support/hosts.rs"]
mod hosts;

mod fixed;
mod generated;
mod shape;
mod target;
