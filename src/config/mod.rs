//! `deploy.toml`: the schema users write, stage merging, and validation with line and
//! column.
//!
//! The file is read in two passes: serde (with `deny_unknown_fields`) turns the text into
//! [`Layer`]s, then [`validate`] checks the values and resolves each stage into a
//! [`Stage`], the plain data every command works from. Errors of either pass carry the
//! key path and its line and column.

mod database;
mod field;
mod gate;
mod health;
mod keys;
mod layers;
mod locate;
mod rollout;
mod traffic;
mod validate;

pub use database::{Database, DbCommands, DbDriver, Framework, FrameworkMigrator};
pub use gate::{Gate, GateLayer, GateSource, Queries, QueriesLayer};
pub use health::{Check, Health, HealthLayer, OnInconclusive};
pub use rollout::{AbTest, Batch, Pause, Rollout, RolloutLayer, Strategy, WinnerRule};
pub use traffic::{Endpoint, ProxyKind, SlotsLayer, SplitKey, Traffic, TrafficLayer, parse_key};

pub use field::parse_duration;
pub use keys::accepted_keys;
pub use layers::{MASK, interpolate, looks_secret, mask_url_credentials};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use locate::{KeyPath, Segment, line_column, locate};

use crate::archive::Source;

/// An error in the configuration: where, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The key path (`stages.production.deploy_to`), empty for file-level errors.
    pub key: String,
    pub message: String,
}

impl std::error::Error for ConfigError {}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        if self.key.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": `{}`: {}", self.key, self.message)
        }
    }
}

/// One layer of settings: the top level of the file, or one `[stages.NAME]` table, which
/// may override any top-level key. Sections merge key by key (a stage that sets only
/// `ssh.user` keeps the top-level `ssh.port`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub app: Option<String>,
    pub deploy_to: Option<String>,
    pub keep_releases: Option<i64>,
    pub link_unchanged: Option<bool>,
    pub immutable: Option<bool>,
    pub archive_pruned: Option<i64>,
    pub drill: Option<bool>,
    pub transport: Option<String>,
    /// A preset beneath the top level: `rails`, `node`, ... (see `slipway recipes`).
    pub recipe: Option<String>,
    pub source: Option<SourceLayer>,
    pub ssh: Option<SshLayer>,
    pub shared: Option<SharedLayer>,
    pub hooks: Option<HooksLayer>,
    pub timeouts: Option<TimeoutsLayer>,
    pub upload: Option<UploadLayer>,
    pub database: Option<DatabaseLayer>,
    pub rollout: Option<RolloutLayer>,
    pub health: Option<HealthLayer>,
    pub traffic: Option<TrafficLayer>,
    pub gate: Option<GateLayer>,
    /// Only in a stage.
    #[serde(default, deserialize_with = "host_entry::list")]
    pub hosts: Option<Vec<HostLayer>>,
    /// Only at the top level.
    pub stages: Option<BTreeMap<String, Layer>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceLayer {
    pub path: Option<String>,
    pub git: Option<String>,
    pub exclude: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshLayer {
    pub user: Option<String>,
    pub port: Option<i64>,
    pub identity_file: Option<String>,
    pub known_hosts: Option<String>,
    pub config_file: Option<String>,
    pub persist: Option<String>,
    pub connect_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedLayer {
    pub files: Option<Vec<String>>,
    pub dirs: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksLayer {
    pub build: Option<Vec<String>>,
    pub restart: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsLayer {
    pub command: Option<String>,
    pub upload: Option<String>,
    pub hook: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadLayer {
    pub compress: Option<String>,
    pub relay: Option<bool>,
    pub relay_fanout: Option<i64>,
}

/// `[database]`: see [`Database`] for what each key means.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseLayer {
    pub driver: Option<String>,
    pub url_env: Option<String>,
    pub migrations: Option<String>,
    pub role: Option<String>,
    pub tunnel: Option<bool>,
    pub keep_snapshots: Option<i64>,
    pub path: Option<String>,
    pub migrate_command: Option<String>,
    pub rollback_command: Option<String>,
    pub version_command: Option<String>,
    pub framework: Option<String>,
    pub runtime: Option<String>,
}

/// One host of a stage: a table (`{ address = "app1", roles = ["db"] }`), or just its
/// address as a string (`"app1.example.com"`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostLayer {
    pub address: Option<String>,
    pub user: Option<String>,
    pub port: Option<i64>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Blue-green: "blue" or "green".
    pub pool: Option<String>,
}

/// A host entry as written: the address alone, or the whole table.
pub(crate) mod host_entry {
    use super::HostLayer;
    use serde::Deserialize;
    use serde::de::{self, MapAccess, Visitor, value::MapAccessDeserializer};

    const FIELDS: &[&str] = &["address", "user", "port", "roles", "pool"];

    struct Entry;

    impl<'de> Visitor<'de> for Entry {
        type Value = HostLayer;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(r#"a host: its address ("app1.example.com") or a table ({ address = "app1.example.com", roles = ["app"] })"#)
        }

        fn visit_str<E: de::Error>(self, address: &str) -> Result<HostLayer, E> {
            Ok(HostLayer {
                address: Some(address.to_string()),
                ..HostLayer::default()
            })
        }

        fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<HostLayer, M::Error> {
            HostLayer::deserialize(MapAccessDeserializer::new(map))
        }
    }

    pub fn deserialize<'de, D: de::Deserializer<'de>>(d: D) -> Result<HostLayer, D::Error> {
        d.deserialize_struct("HostLayer", FIELDS, Entry)
    }

    /// For `Option<Vec<HostLayer>>` fields.
    pub fn list<'de, D: de::Deserializer<'de>>(d: D) -> Result<Option<Vec<HostLayer>>, D::Error> {
        #[derive(Deserialize)]
        struct One(#[serde(deserialize_with = "deserialize")] HostLayer);
        let list: Option<Vec<One>> = Option::deserialize(d)?;
        Ok(list.map(|v| v.into_iter().map(|One(h)| h).collect()))
    }
}

/// How a stage reaches its hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// System ssh through the `openssh` crate.
    Ssh,
    /// `deploy_to` on this machine: no server needed.
    Local,
}

/// `[upload] compress`: how the release stream travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compress {
    /// zstd where the host has it, gzip otherwise; not at all when a sample of the
    /// stream shows it does not pay (already-compressed files).
    Auto,
    /// zstd, or the whole stream uncompressed on a host without it.
    Zstd,
    /// gzip on every host.
    Gzip,
    Off,
}

/// What to do with a host key that is not in known_hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownHostsPolicy {
    /// Refuse unknown and changed keys (the default).
    Strict,
    /// Record unknown keys on first contact; still refuse changed keys.
    AcceptNew,
}

/// Resolved ssh settings of a stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Ssh {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: KnownHostsPolicy,
    pub config_file: Option<PathBuf>,
    pub persist: Duration,
    pub connect_timeout: Duration,
}

/// One host of a stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// How the host is named in messages: its address, with `:port` when one is set.
    pub name: String,
    pub address: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub roles: Vec<String>,
    /// Blue-green: the pool the host belongs to ("blue" or "green").
    pub pool: Option<String>,
}

/// Per-step time limits: a host that stops answering ends the step with a message
/// instead of hanging the deploy.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    pub command: Duration,
    pub upload: Duration,
    pub hook: Duration,
}

/// Everything one command needs to know about one stage, validated.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    /// The recipe beneath this stage's settings, if any.
    pub recipe: Option<String>,
    pub app: String,
    pub deploy_to: String,
    pub keep_releases: usize,
    /// Hard-link files unchanged since the current release instead of sending them.
    pub link_unchanged: bool,
    /// Make each release read-only once built (`chmod -R a-w`, `.slipway/` excepted).
    pub immutable: bool,
    /// Archive releases to `backups/releases/ID.tar.zst` before pruning; keep this many (0: off).
    pub archive_pruned: usize,
    /// `slipway drill` may run on this stage (it switches every host back and forth).
    pub drill: bool,
    pub transport: TransportKind,
    pub source: Source,
    pub ssh: Ssh,
    pub shared_files: Vec<String>,
    pub shared_dirs: Vec<String>,
    pub build_hooks: Vec<String>,
    pub restart_hooks: Vec<String>,
    pub timeouts: Timeouts,
    /// `[upload] compress`.
    pub compress: Compress,
    /// `[upload] relay`: a release many hosts get goes to one of them, which serves it
    /// to the others over the hosts' network (see `deploy::relay`).
    pub relay: bool,
    /// `[upload] relay_fanout`: how many hosts one relay serves at once.
    pub relay_fanout: usize,
    pub hosts: Vec<Host>,
    /// `[database]`, when the app has one.
    pub database: Option<Database>,
    /// `[rollout]`: how the switch moves across the hosts.
    pub rollout: Rollout,
    /// `[health]`: the gate after each step, when there is one.
    pub health: Option<Health>,
    /// `[traffic]`: two releases live per host behind a proxy; steps are users.
    pub traffic: Option<Traffic>,
    /// `[gate]`: each `[traffic]` step judged by the access log, when there is one.
    pub gate: Option<Gate>,
}

impl Stage {
    /// The paths `[shared]` links into every release: its files, then its dirs.
    pub fn shared_paths(&self) -> Vec<String> {
        self.shared_files
            .iter()
            .chain(&self.shared_dirs)
            .cloned()
            .collect()
    }
}

/// A loaded and validated configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub stages: BTreeMap<String, Stage>,
    /// The file as written (before `${VAR}` interpolation), for `slipway config`.
    pub raw: toml::Table,
}

impl Config {
    /// Reads and validates `file`. Every stage is validated, not only the one about to be
    /// used, so a mistake in `production` is found while deploying `staging`.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            line: None,
            column: None,
            key: String::new(),
            message: format!(
                "cannot read the configuration: {e} (pass another file with -c, or create one with `slipway init`)"
            ),
        })?;
        let base = file
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&text, file, &base)
    }

    /// Parses `text` as if read from `file`; relative local paths resolve against `base`.
    pub fn parse(text: &str, file: &Path, base: &Path) -> Result<Config, ConfigError> {
        // The shape of the file as written, for errors with a line and column; the layers
        // (recipe, `${VAR}`s) are applied to the raw table below.
        let _shape: Layer = toml::from_str(text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => {
                    let (l, c) = line_column(text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            // serde names unknown keys itself; for a wrong type it names only the value.
            let key = e
                .span()
                .and_then(|s| locate::key_at(text, s.start))
                .map(|k| k.to_string())
                .unwrap_or_default();
            ConfigError {
                file: file.to_path_buf(),
                line,
                column,
                key,
                message: e.message().trim().to_string(),
            }
        })?;
        let raw: toml::Table = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            line: None,
            column: None,
            key: String::new(),
            message: e.message().trim().to_string(),
        })?;
        let mut env = |name: &str| std::env::var(name).ok();
        let stages = layers::resolve_all(&raw, base, &mut env).map_err(|(path, message)| {
            let (line, column) = match locate(text, &path) {
                Some((l, c)) => (Some(l), Some(c)),
                None => (None, None),
            };
            ConfigError {
                file: file.to_path_buf(),
                line,
                column,
                key: path.to_string(),
                message,
            }
        })?;
        Ok(Config {
            file: file.to_path_buf(),
            stages,
            raw,
        })
    }

    /// Stage `name` as its commands see it, as TOML: recipe, top level and stage merged,
    /// `${VAR}`s filled in, secrets masked.
    pub fn show(&self, name: &str) -> Result<toml::Table, ConfigError> {
        self.stage(name)?;
        let mut env = |var: &str| std::env::var(var).ok();
        layers::masked_view(&self.raw, name, &mut env).map_err(|(path, message)| ConfigError {
            file: self.file.clone(),
            line: None,
            column: None,
            key: path.to_string(),
            message,
        })
    }

    /// The stage named `name`, or an error listing the stages there are.
    pub fn stage(&self, name: &str) -> Result<&Stage, ConfigError> {
        self.stages.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.stages.keys().map(String::as_str).collect();
            ConfigError {
                file: self.file.clone(),
                line: None,
                column: None,
                key: String::new(),
                message: if known.is_empty() {
                    format!("no stage `{name}`: the file defines no stages (add a [stages.{name}] table)")
                } else {
                    format!("no stage `{name}` (stages defined: {})", known.join(", "))
                },
            }
        })
    }
}
