//! Turns parsed layers into validated stages. Pure: no I/O except checking that local
//! files named by the config (ssh identity, ssh config, source dir) exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::field::{Invalid, check_name, check_relative, commands, duration, expand_home, field};
use super::{
    Compress, Host, HostLayer, KeyPath, KnownHostsPolicy, Layer, Ssh, Stage, Timeouts,
    TransportKind,
};
use crate::archive::Source;

/// Validates every stage of `top`. Errors carry the key path of the offending value
/// (in the stage when the stage sets it, else at the top level).
pub fn resolve(top: &Layer, base: &Path) -> Result<BTreeMap<String, Stage>, Invalid> {
    let root = KeyPath::root();
    if top.hosts.is_some() {
        return Err((
            root.key("hosts"),
            "hosts belong to a stage: move them into [stages.NAME] (e.g. [stages.production])"
                .into(),
        ));
    }
    let stages = match &top.stages {
        Some(stages) if !stages.is_empty() => stages,
        _ => {
            return Err((
                root.key("stages"),
                "no stages defined: add at least one, e.g. [stages.production] with hosts = [{ address = \"app1.example.com\" }]".into(),
            ));
        }
    };
    let mut resolved = BTreeMap::new();
    for (name, stage) in stages {
        let at = root.key("stages").key(name);
        check_name(name, "stage name", &at)?;
        if stage.stages.is_some() {
            return Err((at.key("stages"), "stages cannot be nested".into()));
        }
        resolved.insert(name.clone(), resolve_stage(name, top, stage, &at, base)?);
    }
    Ok(resolved)
}

fn resolve_stage(
    name: &str,
    top: &Layer,
    stage: &Layer,
    at: &KeyPath,
    base: &Path,
) -> Result<Stage, Invalid> {
    let (app, app_at) = field!(stage, top, at, app).ok_or_else(|| {
        (
            KeyPath::root().key("app"),
            "missing: set app = \"NAME\" at the top of the file".to_string(),
        )
    })?;
    check_name(app, "app", &app_at)?;

    let transport = match field!(stage, top, at, transport) {
        None => TransportKind::Ssh,
        Some((t, _)) if t == "ssh" => TransportKind::Ssh,
        Some((t, _)) if t == "local" => TransportKind::Local,
        Some((t, p)) => {
            return Err((
                p,
                format!(
                    "unknown transport `{}` (use \"ssh\" or \"local\")",
                    t.escape_debug()
                ),
            ));
        }
    };

    let (deploy_to, deploy_at) = field!(stage, top, at, deploy_to).ok_or_else(|| {
        (
            at.key("deploy_to"),
            "missing: set deploy_to = \"/srv/APP\" (an absolute path on the hosts)".to_string(),
        )
    })?;
    let deploy_to = check_deploy_to(deploy_to, &deploy_at)?;

    let keep_releases = match field!(stage, top, at, keep_releases) {
        None => 5,
        Some((&n, p)) => {
            if !(1..=1000).contains(&n) {
                return Err((p, format!("must be between 1 and 1000 (got {n})")));
            }
            n as usize
        }
    };

    let link_unchanged = field!(stage, top, at, link_unchanged)
        .map(|(v, _)| *v)
        .unwrap_or(true);
    let archive_pruned = match field!(stage, top, at, archive_pruned) {
        None => 0,
        Some((&n, p)) => {
            if !(0..=1000).contains(&n) {
                return Err((p, format!("must be between 0 (off) and 1000 (got {n})")));
            }
            n as usize
        }
    };
    let drill = field!(stage, top, at, drill)
        .map(|(v, _)| *v)
        .unwrap_or(false);
    let immutable = field!(stage, top, at, immutable)
        .map(|(v, _)| *v)
        .unwrap_or(false);
    let source = resolve_source(stage, top, at, base)?;
    let compress = match field!(stage.upload, top.upload, at, "upload", compress) {
        None => Compress::Auto,
        Some((v, _)) if v == "auto" => Compress::Auto,
        Some((v, _)) if v == "zstd" => Compress::Zstd,
        Some((v, _)) if v == "gzip" => Compress::Gzip,
        Some((v, _)) if v == "off" => Compress::Off,
        Some((v, p)) => {
            return Err((
                p,
                format!(
                    "unknown compression `{}` (use \"auto\", \"zstd\", \"gzip\" or \"off\")",
                    v.escape_debug()
                ),
            ));
        }
    };
    let relay = field!(stage.upload, top.upload, at, "upload", relay)
        .map(|(v, _)| *v)
        .unwrap_or(false);
    let relay_fanout = match field!(stage.upload, top.upload, at, "upload", relay_fanout) {
        None => 16,
        Some((&n, p)) => {
            if !(1..=64).contains(&n) {
                return Err((p, format!("must be between 1 and 64 (got {n})")));
            }
            n as usize
        }
    };
    let ssh = resolve_ssh(stage, top, at, base)?;

    let mut shared_files = Vec::new();
    let mut shared_at = at.key("shared");
    if let Some((files, p)) = field!(stage.shared, top.shared, at, "shared", files) {
        shared_at = p.clone();
        for (i, f) in files.iter().enumerate() {
            shared_files.push(check_relative(f, "shared file", &p.index(i))?);
        }
    }
    let mut shared_dirs = Vec::new();
    if let Some((dirs, p)) = field!(stage.shared, top.shared, at, "shared", dirs) {
        shared_at = p.clone();
        for (i, d) in dirs.iter().enumerate() {
            shared_dirs.push(check_relative(d, "shared dir", &p.index(i))?);
        }
    }
    check_shared_overlap(&shared_files, &shared_dirs, &shared_at)?;

    let build_hooks = commands(field!(stage.hooks, top.hooks, at, "hooks", build))?;
    let restart_hooks = commands(field!(stage.hooks, top.hooks, at, "hooks", restart))?;

    let timeouts = Timeouts {
        command: duration(
            field!(stage.timeouts, top.timeouts, at, "timeouts", command),
            Duration::from_secs(120),
        )?,
        upload: duration(
            field!(stage.timeouts, top.timeouts, at, "timeouts", upload),
            Duration::from_secs(1800),
        )?,
        hook: duration(
            field!(stage.timeouts, top.timeouts, at, "timeouts", hook),
            Duration::from_secs(1800),
        )?,
    };

    let hosts = resolve_hosts(stage.hosts.as_deref(), transport, &at.key("hosts"))?;
    let database = super::database::resolve(
        stage.database.as_ref(),
        top.database.as_ref(),
        at,
        &hosts,
        transport,
    )?;
    let rollout = super::rollout::resolve_rollout(stage, top, at, base)?;
    super::rollout::check_pools(&rollout, &hosts, at)?;
    let health = super::health::resolve_health(stage, top, at)?;
    let traffic = super::traffic::resolve_traffic(stage, top, at, app, &rollout.strategy)?;
    super::traffic::check_health(traffic.as_ref(), health.as_ref(), at)?;
    let gate = super::gate::resolve_gate(stage, top, at, traffic.is_some())?;

    Ok(Stage {
        name: name.to_string(),
        recipe: None,
        app: app.clone(),
        deploy_to,
        keep_releases,
        link_unchanged,
        immutable,
        archive_pruned,
        drill,
        transport,
        source,
        ssh,
        shared_files,
        shared_dirs,
        build_hooks,
        restart_hooks,
        timeouts,
        compress,
        relay,
        relay_fanout,
        hosts,
        database,
        rollout,
        health,
        traffic,
        gate,
    })
}

fn resolve_source(
    stage: &Layer,
    top: &Layer,
    at: &KeyPath,
    base: &Path,
) -> Result<Source, Invalid> {
    let path = field!(stage.source, top.source, at, "source", path);
    let git = field!(stage.source, top.source, at, "source", git);
    let exclude = field!(stage.source, top.source, at, "source", exclude);
    let mut patterns = Vec::new();
    if let Some((list, p)) = exclude {
        for (i, pattern) in list.iter().enumerate() {
            if pattern.trim().is_empty() || pattern.chars().any(char::is_control) {
                return Err((
                    p.index(i),
                    "an exclude pattern must be a non-empty line of text".into(),
                ));
            }
            patterns.push(pattern.clone());
        }
    }
    let dir = match &path {
        Some((p, key)) => {
            if p.contains('\0') || p.trim().is_empty() {
                return Err((key.clone(), "must be a directory path".into()));
            }
            let expanded = expand_home(p);
            if expanded.is_absolute() {
                expanded
            } else {
                base.join(expanded)
            }
        }
        None => base.to_path_buf(),
    };
    match git {
        Some((reference, key)) => {
            if reference.trim().is_empty()
                || reference.starts_with('-')
                || reference.chars().any(char::is_control)
            {
                return Err((
                    key,
                    format!(
                        "`{}` is not a git ref (write e.g. \"HEAD\", \"main\" or a tag)",
                        reference.escape_debug()
                    ),
                ));
            }
            Ok(Source::Git {
                repo: dir,
                reference: reference.clone(),
                exclude: patterns,
            })
        }
        None => Ok(Source::Dir {
            path: dir,
            exclude: patterns,
        }),
    }
}

fn resolve_ssh(stage: &Layer, top: &Layer, at: &KeyPath, base: &Path) -> Result<Ssh, Invalid> {
    let user = match field!(stage.ssh, top.ssh, at, "ssh", user) {
        Some((u, p)) => Some(check_user(u, &p)?),
        None => None,
    };
    let port = match field!(stage.ssh, top.ssh, at, "ssh", port) {
        Some((&n, p)) => Some(check_port(n, &p)?),
        None => None,
    };
    let identity_file = match field!(stage.ssh, top.ssh, at, "ssh", identity_file) {
        Some((f, p)) => Some(existing_local_file(f, base, &p)?),
        None => None,
    };
    let config_file = match field!(stage.ssh, top.ssh, at, "ssh", config_file) {
        Some((f, p)) => Some(existing_local_file(f, base, &p)?),
        None => None,
    };
    let known_hosts = match field!(stage.ssh, top.ssh, at, "ssh", known_hosts) {
        None => KnownHostsPolicy::Strict,
        Some((v, _)) if v == "strict" => KnownHostsPolicy::Strict,
        Some((v, _)) if v == "accept-new" => KnownHostsPolicy::AcceptNew,
        Some((v, p)) => {
            return Err((
                p,
                format!(
                    "unknown policy `{}` (use \"strict\" or \"accept-new\")",
                    v.escape_debug()
                ),
            ));
        }
    };
    let persist = duration(
        field!(stage.ssh, top.ssh, at, "ssh", persist),
        Duration::from_secs(60),
    )?;
    let connect_timeout = duration(
        field!(stage.ssh, top.ssh, at, "ssh", connect_timeout),
        Duration::from_secs(10),
    )?;
    Ok(Ssh {
        user,
        port,
        identity_file,
        known_hosts,
        config_file,
        persist,
        connect_timeout,
    })
}

fn resolve_hosts(
    hosts: Option<&[HostLayer]>,
    transport: TransportKind,
    at: &KeyPath,
) -> Result<Vec<Host>, Invalid> {
    if transport == TransportKind::Local {
        if hosts.is_some_and(|h| !h.is_empty()) {
            return Err((
                at.clone(),
                "a stage with transport = \"local\" deploys to this machine: remove its hosts"
                    .into(),
            ));
        }
        return Ok(vec![Host {
            name: "local".into(),
            address: "localhost".into(),
            user: None,
            port: None,
            roles: vec![],
            pool: None,
        }]);
    }
    let hosts = match hosts {
        Some(h) if !h.is_empty() => h,
        _ => {
            return Err((
                at.clone(),
                "a stage needs at least one host: hosts = [{ address = \"app1.example.com\" }] (or transport = \"local\")".into(),
            ));
        }
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let here = at.index(i);
        let address = h.address.as_ref().ok_or_else(|| {
            (
                here.clone(),
                "a host needs an address: { address = \"app1.example.com\" }".to_string(),
            )
        })?;
        check_address(address, &here.key("address"))?;
        let user = match &h.user {
            Some(u) => Some(check_user(u, &here.key("user"))?),
            None => None,
        };
        let port = match h.port {
            Some(n) => Some(check_port(n, &here.key("port"))?),
            None => None,
        };
        for (j, role) in h.roles.iter().enumerate() {
            check_name(role, "role", &here.key("roles").index(j))?;
        }
        if let Some(pool) = &h.pool
            && pool != "blue"
            && pool != "green"
        {
            return Err((
                here.key("pool"),
                format!(
                    "unknown pool `{}` (use \"blue\" or \"green\")",
                    pool.escape_debug()
                ),
            ));
        }
        let name = match port {
            Some(p) => format!("{address}:{p}"),
            None => address.clone(),
        };
        if !seen.insert((address.to_ascii_lowercase(), port, user.clone())) {
            return Err((
                here.key("address"),
                format!("host `{name}` is listed twice in this stage"),
            ));
        }
        out.push(Host {
            name,
            address: address.clone(),
            user,
            port,
            roles: h.roles.clone(),
            pool: h.pool.clone(),
        });
    }
    Ok(out)
}

/// `deploy_to`: absolute, normalised, and not the root directory. Spaces and quotes are
/// fine (every use is quoted); control characters are not.
pub fn check_deploy_to(value: &str, at: &KeyPath) -> Result<String, Invalid> {
    if value.chars().any(char::is_control) {
        return Err((
            at.clone(),
            "contains a control character (newline, tab, NUL ...): write a plain path".into(),
        ));
    }
    if !value.starts_with('/') {
        return Err((
            at.clone(),
            format!(
                "must be an absolute path on the hosts (got `{value}`); write it as `/{}`",
                value.trim_start_matches("./")
            ),
        ));
    }
    let trimmed = value.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err((
            at.clone(),
            "must not be `/`: give the application its own directory, e.g. /srv/APP".into(),
        ));
    }
    for part in trimmed[1..].split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err((
                at.clone(),
                format!("`{value}` is not a normalised path: remove empty, `.` and `..` parts"),
            ));
        }
    }
    if value.len() > 1024 {
        return Err((at.clone(), "is longer than 1024 bytes".into()));
    }
    Ok(trimmed.to_string())
}

fn check_shared_overlap(files: &[String], dirs: &[String], at: &KeyPath) -> Result<(), Invalid> {
    let all: Vec<&String> = files.iter().chain(dirs).collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            let nested =
                a == b || b.starts_with(&format!("{a}/")) || a.starts_with(&format!("{b}/"));
            if nested {
                return Err((
                    at.clone(),
                    format!(
                        "shared paths `{a}` and `{b}` overlap: list each path once, and none inside another"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_address(value: &str, at: &KeyPath) -> Result<(), Invalid> {
    // ssh reads an argument starting with `-` as an option: a host named `-oProxyCommand=..`
    // would run a command locally. Only hostname and IP address characters are allowed.
    let ok = !value.is_empty()
        && value.len() <= 253
        && !value.starts_with('-')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'));
    if ok {
        Ok(())
    } else {
        Err((
            at.clone(),
            format!(
                "`{}` is not a host name or IP address (letters, digits, `.`, `-`, `_`, `:`; not starting with `-`)",
                value.escape_debug()
            ),
        ))
    }
}

fn check_user(value: &str, at: &KeyPath) -> Result<String, Invalid> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && !value.starts_with('-')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(value.to_string())
    } else {
        Err((
            at.clone(),
            format!(
                "`{}` is not a user name (letters, digits, `.`, `_`, `-`)",
                value.escape_debug()
            ),
        ))
    }
}

fn check_port(value: i64, at: &KeyPath) -> Result<u16, Invalid> {
    u16::try_from(value)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| {
            (
                at.clone(),
                format!("port must be between 1 and 65535 (got {value})"),
            )
        })
}

fn existing_local_file(value: &str, base: &Path, at: &KeyPath) -> Result<PathBuf, Invalid> {
    if value.trim().is_empty() || value.contains('\0') {
        return Err((at.clone(), "must be a file path".into()));
    }
    let expanded = expand_home(value);
    let path = if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err((
            at.clone(),
            format!(
                "{} does not exist on this machine (fix the path or remove the key)",
                path.display()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> KeyPath {
        KeyPath::root().key("x")
    }

    #[test]
    fn deploy_to_rules() {
        assert_eq!(check_deploy_to("/srv/shop/", &at()).unwrap(), "/srv/shop");
        assert!(check_deploy_to("/srv/my shop/it's", &at()).is_ok());
        for bad in [
            "srv/shop",
            "/",
            "//",
            "/srv/../etc",
            "/srv/./x",
            "/srv//x",
            "/srv/a\nb",
            "/srv/\0",
        ] {
            assert!(check_deploy_to(bad, &at()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_and_addresses() {
        assert!(check_name("shop-2", "app", &at()).is_ok());
        for bad in ["", "-x", ".x", "a b", "a/b", "$(x)"] {
            assert!(check_name(bad, "app", &at()).is_err(), "{bad:?}");
        }
        assert!(check_address("app1.example.com", &at()).is_ok());
        assert!(check_address("[::1]", &at()).is_ok());
        for bad in ["-oProxyCommand=x", "a b", "a;b", ""] {
            assert!(check_address(bad, &at()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn overlapping_shared_paths_are_refused() {
        let files = vec!["config/db.yml".to_string()];
        let dirs = vec!["config".to_string()];
        assert!(check_shared_overlap(&files, &dirs, &at()).is_err());
        assert!(check_shared_overlap(&files, &["log".to_string()], &at()).is_ok());
    }
}
