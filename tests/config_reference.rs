//! The README's configuration reference and the loader agree, both ways: every key in
//! the reference is accepted, and every key the loader accepts (read from its serde
//! definitions by `slipway::config::accepted_keys`) is in the reference.

use std::collections::BTreeSet;

use slipway::config::{Layer, accepted_keys};

/// The TOML block of the README's "Configuration reference" section.
fn reference_block() -> String {
    let readme = include_str!("../README.md");
    let section = readme
        .split("## Configuration reference")
        .nth(1)
        .expect("README has a Configuration reference section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the section has a ```toml block");
    block.to_string()
}

/// Key paths of a table as the loader names them: `ssh.user`, `hosts.address`; a
/// stage's keys count as the top-level keys they override.
fn keys_of(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if prefix.is_empty() && key == "stages" {
            out.insert(path);
            for stage in value.as_table().into_iter().flat_map(|t| t.values()) {
                if let Some(stage) = stage.as_table() {
                    keys_of(stage, "", out);
                }
            }
            continue;
        }
        out.insert(path.clone());
        value_keys(value, &path, out);
    }
}

fn value_keys(value: &toml::Value, path: &str, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(t) => keys_of(t, path, out),
        toml::Value::Array(items) => {
            for item in items {
                value_keys(item, path, out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_key_in_the_reference_is_accepted_by_the_loader() {
    let block = reference_block();
    let parsed: Result<Layer, _> = toml::from_str(&block);
    assert!(
        parsed.is_ok(),
        "the reference does not load: {:?}",
        parsed.err()
    );
    let documented = {
        let mut keys = BTreeSet::new();
        keys_of(&block.parse::<toml::Table>().unwrap(), "", &mut keys);
        keys
    };
    let accepted = accepted_keys();
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        unknown.is_empty(),
        "documented but not accepted: {unknown:?}"
    );
}

#[test]
fn every_key_the_loader_accepts_is_in_the_reference() {
    let block = reference_block();
    let mut documented = BTreeSet::new();
    keys_of(&block.parse::<toml::Table>().unwrap(), "", &mut documented);
    let accepted = accepted_keys();
    let missing: Vec<_> = accepted.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "accepted by the loader but missing from the README reference: {missing:?}"
    );
}
