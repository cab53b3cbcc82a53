//! The command line: one subcommand per user action. Help text lives here, next to the
//! flags it documents.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "slipway",
    version,
    about = "Ship releases over SSH: immutable release directories, an atomic switch, rollbacks you can trust",
    after_help = "Exit codes: 0 done; 1 failed, every host back where it was; 2 usage or configuration error, nothing touched; 3 deploy lock held; 4 hosts left in different states (the message says what to run)."
)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        default_value = "deploy.toml",
        env = "SLIPWAY_CONFIG"
    )]
    pub config: PathBuf,

    /// Print the plan (hosts, release, steps, what would be pruned) and change nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// Show every step as it starts, and the output of remote scripts and hooks.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Only errors and the result.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Machine-readable output: one JSON event per line on stdout (schema in the README).
    #[arg(long, global = true)]
    pub json: bool,

    /// If the deploy lock is held, wait up to this long for it (e.g. 30s, 5m) instead of failing.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
    pub lock_wait: std::time::Duration,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload a new release to every host of STAGE, build it, switch to it, restart.
    Deploy {
        /// A stage of the configuration (e.g. production).
        stage: String,
    },
    /// Switch every host of STAGE back to the previous good release (or --to ID).
    Rollback {
        stage: String,
        /// The release to return to (see `slipway releases STAGE`).
        #[arg(long, value_name = "ID")]
        to: Option<String>,
        /// Why: recorded in the audit log and the release record.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Roll back across irreversible migrations: leave them applied, undo the others.
        #[arg(long)]
        force_schema: bool,
        /// Switch the code only; leave the database as it is (the output says so).
        #[arg(long, conflicts_with = "force_schema")]
        skip_schema: bool,
    },
    /// The database of STAGE: migrations and snapshots.
    #[command(subcommand)]
    Db(DbCommand),
    /// Staged rollouts ([rollout] in the config): plan, watch and steer them.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// List each host's releases with their state.
    Releases { stage: String },
    /// Show which release each host is on, and who holds the lock.
    Status { stage: String },
    /// Preflight: connection, host keys, paths, disk, shared files, clock, tools. Changes nothing.
    Check {
        stage: String,
        /// Only validate the configuration; do not connect to any host.
        #[arg(long)]
        config_only: bool,
    },
    /// Rehearse a rollback on STAGE (only with `drill = true`): roll back, verify, roll forward, report timings.
    Drill { stage: String },
    /// Print STAGE's merged configuration, secrets masked.
    ///
    /// What the stage's commands see: its recipe, the top level and the stage merged key
    /// by key, ${VAR}s filled in; values from secret-looking variables and URL passwords
    /// are masked.
    Config { stage: String },
    /// Write a commented deploy.toml for the project here, with its framework's recipe.
    ///
    /// Detects Rails, Laravel, Django, Rust binaries, Node and static sites from the
    /// project's files. Never overwrites an existing file without --force.
    Init {
        /// Overwrite an existing deploy.toml.
        #[arg(long)]
        force: bool,
        /// Use this recipe instead of the detected one (see `slipway recipes`).
        #[arg(long, value_name = "NAME")]
        recipe: Option<String>,
    },
    /// List the built-in recipes, or print one (`slipway recipes show rails`).
    Recipes {
        #[command(subcommand)]
        command: Option<RecipesCommand>,
    },
    /// Print a shell completion script (bash, zsh, fish).
    ///
    /// e.g. `slipway completions bash > ~/.local/share/bash-completion/completions/slipway`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `slipway man | man -l -`.
    Man,
    /// Break the deploy lock of STAGE (when the run that took it is gone). Recorded in the audit log.
    Unlock { stage: String },
    /// The audit log of STAGE: every deploy, rollback and unlock, merged from all hosts.
    Log {
        stage: String,
        /// Only entries newer than this: a duration (2h, 7d) or a time (2026-11-24T05:00:00Z).
        #[arg(long, value_name = "WHEN", conflicts_with = "verify")]
        since: Option<String>,
        /// Check each host's hash chain instead: name the first line changed, removed,
        /// inserted or reordered (exit 4), and print each host's head to keep elsewhere.
        #[arg(long)]
        verify: bool,
        /// With --verify: also check each host's log against the heads of an earlier
        /// `slipway --json log --verify` saved in FILE (a cut or a rewritten log fails).
        #[arg(long, value_name = "FILE", requires = "verify")]
        against: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Applied and pending migrations, the schema version each release recorded, snapshots.
    Status { stage: String },
    /// Replace the database's content with a snapshot from backups/db/ (see `db status`).
    Restore {
        stage: String,
        /// The snapshot's name, e.g. 20261124T040512Z-postgres.dump.
        snapshot: String,
        /// Yes, replace the database's current content.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Which hosts go in which step, and the worst-case promotion and rollback time (from the config; no host is contacted).
    Plan { stage: String },
    /// The rollout in progress (or the last one): step, status, last gate, every host's release.
    Status {
        stage: String,
        /// With [traffic]: which slot a request with this key value (the cookie, header
        /// or query value of [traffic] key) lands on, on each host.
        #[arg(long, value_name = "VALUE")]
        key: Option<String>,
    },
    /// Stop the rollout at its next step boundary (the deployer driving it exits "paused").
    Pause { stage: String },
    /// Go on with a paused rollout, or one whose deployer died, from where it stands.
    Resume { stage: String },
    /// Go on past the current pause to the next step (gated as always).
    Promote {
        stage: String,
        /// Through every remaining step without pausing (gates still run).
        #[arg(long)]
        full: bool,
    },
    /// Return every host to its stable release (code, and schema if the deploy migrated).
    Abort { stage: String },
    /// Start an aborted or failed rollout again from its first step.
    Retry { stage: String },
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(text)
}

#[derive(Debug, Subcommand)]
pub enum RecipesCommand {
    /// Print a recipe, comments included.
    Show {
        /// A recipe name from `slipway recipes`.
        name: String,
    },
}
