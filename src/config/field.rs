//! Reading and checking one field of a stage: the stage's value over the top-level one,
//! with the key path it came from, and the checks that several sections share (names,
//! paths inside a release, durations, command lists). Every section resolver builds on
//! these; none of them depends on another section.

use std::path::PathBuf;
use std::time::Duration;

use super::KeyPath;

/// A refused value: where it is, and what to do about it.
pub(super) type Invalid = (KeyPath, String);

/// Names slipway keeps for its own files at the top of each release.
const RESERVED_IN_RELEASE: [&str; 2] = [".slipway", "REVISION"];

/// Picks a stage's value over the top-level one, remembering where it came from.
pub(super) fn pick<'a, T>(
    stage: Option<&'a T>,
    top: Option<&'a T>,
    stage_at: &KeyPath,
    top_at: &KeyPath,
) -> Option<(&'a T, KeyPath)> {
    match (stage, top) {
        (Some(v), _) => Some((v, stage_at.clone())),
        (None, Some(v)) => Some((v, top_at.clone())),
        (None, None) => None,
    }
}

/// A key of a stage, or of one of its sections, picked over the top level:
/// `field!(stage, top, at, app)` for a top-level key, `field!(stage.ssh, top.ssh, at,
/// "ssh", port)` for a key of the `[ssh]` section (each side an `Option` of the section).
macro_rules! field {
    ($stage:expr, $top:expr, $at:expr, $section:literal, $key:ident) => {
        $crate::config::field::pick(
            $stage.as_ref().and_then(|s| s.$key.as_ref()),
            $top.as_ref().and_then(|s| s.$key.as_ref()),
            &$at.key($section).key(stringify!($key)),
            &$crate::config::KeyPath::root()
                .key($section)
                .key(stringify!($key)),
        )
    };
    ($stage:expr, $top:expr, $at:expr, $key:ident) => {
        $crate::config::field::pick(
            $stage.$key.as_ref(),
            $top.$key.as_ref(),
            &$at.key(stringify!($key)),
            &$crate::config::KeyPath::root().key(stringify!($key)),
        )
    };
}
pub(super) use field;

/// A duration field, or `default` when it is not set.
pub(super) fn duration(
    found: Option<(&String, KeyPath)>,
    default: Duration,
) -> Result<Duration, Invalid> {
    match found {
        None => Ok(default),
        Some((text, p)) => parse_duration(text).map_err(|m| (p, m)),
    }
}

/// Durations are written like `90s`, `5m`, `1h 30m`, `0s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!(
            "`{}` is not a duration ({e}); write it like \"90s\", \"5m\" or \"1h\"",
            text.escape_debug()
        )
    })
}

/// A list of hook commands (`[hooks]`, the rollout hooks): none empty, none with a NUL.
pub(super) fn commands(found: Option<(&Vec<String>, KeyPath)>) -> Result<Vec<String>, Invalid> {
    let mut out = Vec::new();
    if let Some((list, p)) = found {
        for (i, c) in list.iter().enumerate() {
            if c.trim().is_empty() {
                return Err((
                    p.index(i),
                    "a hook command is empty: remove it or write the command".into(),
                ));
            }
            if c.contains('\0') {
                return Err((p.index(i), "contains a NUL byte".into()));
            }
            out.push(c.clone());
        }
    }
    Ok(out)
}

/// Names that become parts of paths or identifiers: letters, digits, `.`, `_`, `-`,
/// not starting with `.` or `-`.
pub fn check_name(value: &str, what: &str, at: &KeyPath) -> Result<(), Invalid> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !value.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err((
            at.clone(),
            format!(
                "`{}` is not a valid {what}: use 1-64 letters, digits, `.`, `_` or `-`, not starting with `.` or `-`",
                value.escape_debug()
            ),
        ))
    }
}

/// Paths inside a release (shared files and dirs): relative, inside the release, normalised.
pub fn check_relative(value: &str, what: &str, at: &KeyPath) -> Result<String, Invalid> {
    if value.chars().any(char::is_control) {
        return Err((
            at.clone(),
            format!("{what} contains a control character (newline, tab, NUL ...)"),
        ));
    }
    if value.starts_with('/') {
        return Err((
            at.clone(),
            format!("{what} `{value}` must be relative to the release (remove the leading `/`)"),
        ));
    }
    let trimmed = value.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err((at.clone(), format!("{what} is empty")));
    }
    for part in trimmed.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err((
                at.clone(),
                format!(
                    "{what} `{value}` must stay inside the release: remove empty, `.` and `..` parts"
                ),
            ));
        }
    }
    let first = trimmed.split('/').next().unwrap_or_default();
    if RESERVED_IN_RELEASE.contains(&first) {
        return Err((
            at.clone(),
            format!("{what} `{value}` is reserved for slipway's own files in each release"),
        ));
    }
    if value.len() > 1024 {
        return Err((at.clone(), format!("{what} is longer than 1024 bytes")));
    }
    Ok(trimmed.to_string())
}

/// A path as the user wrote it, with a leading `~/` for their home directory.
pub(super) fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> KeyPath {
        KeyPath::root().key("x")
    }

    #[test]
    fn relative_paths_stay_inside_the_release() {
        assert_eq!(
            check_relative("config/db.yml", "f", &at()).unwrap(),
            "config/db.yml"
        );
        assert_eq!(check_relative("log/", "f", &at()).unwrap(), "log");
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            ".",
            "",
            ".slipway/x",
            "REVISION",
            "a\nb",
        ] {
            assert!(check_relative(bad, "f", &at()).is_err(), "{bad:?}");
        }
    }
}
