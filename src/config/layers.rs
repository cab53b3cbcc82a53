//! The raw layers of a configuration, before serde sees them as [`Layer`]s: `${VAR}`
//! interpolation from the environment, the recipe beneath the top level, and the masked
//! view that `slipway config STAGE` prints.
//!
//! Working on `toml::Table`s keeps the merge generic: a recipe merges beneath the top
//! level exactly as a stage merges over it (tables key by key, every other value
//! replaced whole), without a second list of keys to maintain.

use std::collections::BTreeMap;
use std::path::Path;

use toml::{Table, Value};

use super::field::Invalid;
use super::validate::resolve;
use super::{KeyPath, Layer, Segment, Stage};
use crate::recipe;

/// What secrets are replaced with in `slipway config`.
pub const MASK: &str = "********";

/// Substitutes `${VAR}` with `lookup(VAR)`; `$${` stands for a literal `${`. A `$` not
/// followed by `{` is left alone, so `$HOME` in a hook stays for the remote shell.
pub fn interpolate(
    text: &str,
    lookup: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or_else(|| {
                "`${` is not closed: write ${VAR}, or $${ for a literal ${".to_string()
            })?;
            let name = &inner[..end];
            if !is_var_name(name) {
                return Err(format!(
                    "`${{{}}}` is not an environment variable name (letters, digits, `_`); write $${{ for a literal ${{",
                    name.escape_debug()
                ));
            }
            let value = lookup(name).ok_or_else(|| {
                format!(
                    "the environment variable {name} is not set (set it, or write $${{{name}}} for a literal ${{{name}}})"
                )
            })?;
            out.push_str(&value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Interpolates every string value of `table` (keys are left as written).
pub fn interpolate_table(
    table: &mut Table,
    at: &KeyPath,
    lookup: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<(), Invalid> {
    for (key, value) in table.iter_mut() {
        interpolate_value(value, &at.key(key), lookup)?;
    }
    Ok(())
}

fn interpolate_value(
    value: &mut Value,
    at: &KeyPath,
    lookup: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<(), Invalid> {
    match value {
        Value::String(s) => *s = interpolate(s, lookup).map_err(|m| (at.clone(), m))?,
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_value(item, &at.index(i), lookup)?;
            }
        }
        Value::Table(t) => interpolate_table(t, at, lookup)?,
        _ => {}
    }
    Ok(())
}

/// Merges `over` onto `base`: tables key by key, every other value replaced whole (an
/// array in `over` replaces the one in `base`).
pub fn merge(base: &mut Table, over: &Table) {
    for (key, value) in over {
        match (base.get_mut(key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The value at `path` in `table`, if it is set there.
pub fn get<'a>(table: &'a Table, path: &KeyPath) -> Option<&'a Value> {
    let mut segments = path.0.iter();
    let Some(Segment::Key(first)) = segments.next() else {
        return None;
    };
    let mut value = table.get(first)?;
    for segment in segments {
        value = match (segment, value) {
            (Segment::Key(k), Value::Table(t)) => t.get(k)?,
            (Segment::Index(i), Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

/// The recipe a stage uses: its own `recipe`, else the top level's.
fn recipe_name<'a>(top: &'a Table, stage: Option<&'a Table>) -> Option<(&'a str, KeyPath)> {
    if let Some(name) = stage.and_then(|s| s.get("recipe")).and_then(Value::as_str) {
        return Some((name, KeyPath::root()));
    }
    top.get("recipe")
        .and_then(Value::as_str)
        .map(|n| (n, KeyPath::root().key("recipe")))
}

/// The recipe's settings for a stage, or an error naming the recipes there are. Its
/// `[database]` commands apply only when the file has a `[database]` section (top level
/// or stage): an app without a database is not made to migrate one.
fn recipe_for(
    name: &str,
    at: &KeyPath,
    top: &Table,
    stage: Option<&Table>,
) -> Result<Table, Invalid> {
    let mut table = recipe_table(name, at)?;
    if !top.contains_key("database") && !stage.is_some_and(|s| s.contains_key("database")) {
        table.remove("database");
    }
    // The file's way of migrating replaces the recipe's: its own commands drop the
    // recipe's framework, its own framework drops the recipe's commands.
    let sets = |key: &str| {
        [Some(top), stage].into_iter().flatten().any(|t| {
            t.get("database")
                .and_then(Value::as_table)
                .is_some_and(|d| d.contains_key(key))
        })
    };
    if let Some(Value::Table(db)) = table.get_mut("database") {
        if sets("migrate_command") {
            db.remove("framework");
            db.remove("runtime");
        }
        if sets("framework") {
            for key in ["migrate_command", "rollback_command", "version_command"] {
                db.remove(key);
            }
        }
    }
    Ok(table)
}

fn recipe_table(name: &str, at: &KeyPath) -> Result<Table, Invalid> {
    let recipe = recipe::find(name).ok_or_else(|| {
        (
            at.clone(),
            format!(
                "unknown recipe `{}` (recipes: {}; see `slipway recipes`)",
                name.escape_debug(),
                recipe::names().join(", ")
            ),
        )
    })?;
    recipe.table().map_err(|e| (at.clone(), e))
}

/// Interpolates `raw` (the file as written) and resolves every stage, each over its
/// recipe. Errors carry the key path in the file.
pub fn resolve_all(
    raw: &Table,
    base: &Path,
    lookup: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<BTreeMap<String, Stage>, Invalid> {
    let mut expanded = raw.clone();
    interpolate_table(&mut expanded, &KeyPath::root(), lookup)?;
    let stages = expanded.get("stages").and_then(Value::as_table);
    let Some(stages) = stages.filter(|s| !s.is_empty()) else {
        // No stages: let the validator say so, in its words.
        let top: Layer = to_layer(&expanded, &KeyPath::root())?;
        return resolve(&top, base);
    };
    let mut top = expanded.clone();
    top.remove("stages");
    let mut resolved = BTreeMap::new();
    for (name, stage) in stages {
        let stage_table = stage.as_table();
        let at = KeyPath::root().key("stages").key(name);
        let mut layered = Table::new();
        let recipe = match recipe_name(&top, stage_table) {
            Some((recipe, key)) => {
                let key = if key.0.is_empty() {
                    at.key("recipe")
                } else {
                    key
                };
                merge(&mut layered, &recipe_for(recipe, &key, &top, stage_table)?);
                Some(recipe.to_string())
            }
            None => None,
        };
        merge(&mut layered, &top);
        let mut only = Table::new();
        only.insert(name.clone(), stage.clone());
        layered.insert("stages".into(), Value::Table(only));
        let layer = to_layer(&layered, &at)?;
        let mut one = resolve(&layer, base).map_err(|(path, message)| {
            match &recipe {
                // A value the user did not write came from the recipe: say so.
                Some(r) if get(raw, &path).is_none() => (
                    path,
                    format!("{message} (set by recipe `{r}`: override it in this file)"),
                ),
                _ => (path, message),
            }
        })?;
        if let Some(mut s) = one.remove(name) {
            s.recipe = recipe;
            resolved.insert(name.clone(), s);
        }
    }
    Ok(resolved)
}

fn to_layer(table: &Table, at: &KeyPath) -> Result<Layer, Invalid> {
    Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| (at.clone(), e.message().trim().to_string()))
}

/// The configuration of one stage as its commands see it: recipe, then the top level,
/// then the stage, with `${VAR}`s filled in and secrets masked.
pub fn masked_view(
    raw: &Table,
    stage: &str,
    lookup: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<Table, Invalid> {
    let stage_table = raw
        .get("stages")
        .and_then(Value::as_table)
        .and_then(|s| s.get(stage))
        .and_then(Value::as_table);
    let mut masking = |name: &str| -> Option<String> {
        let value = lookup(name)?;
        Some(if looks_secret(name) {
            MASK.to_string()
        } else {
            value
        })
    };
    // Only what the user wrote is interpolated: recipes are shell for the hosts.
    let mut top = raw.clone();
    top.remove("stages");
    interpolate_table(&mut top, &KeyPath::root(), &mut masking)?;
    let mut stage_table = stage_table.cloned();
    if let Some(s) = stage_table.as_mut() {
        let at = KeyPath::root().key("stages").key(stage);
        interpolate_table(s, &at, &mut masking)?;
    }
    let mut view = Table::new();
    let recipe = recipe_name(&top, stage_table.as_ref()).map(|(n, k)| (n.to_string(), k));
    if let Some((name, key)) = &recipe {
        merge(
            &mut view,
            &recipe_for(name, key, &top, stage_table.as_ref())?,
        );
    }
    merge(&mut view, &top);
    if let Some(s) = &stage_table {
        merge(&mut view, s);
    }
    if let Some((name, _)) = recipe {
        view.insert("recipe".into(), Value::String(name));
    }
    mask_urls(&mut view);
    Ok(view)
}

/// Environment variable names whose values are secrets.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "PASSWORD",
        "PASSWD",
        "PASS",
        "SECRET",
        "TOKEN",
        "KEY",
        "CREDENTIAL",
        "AUTH",
        "PRIVATE",
        "DATABASE_URL",
        "DSN",
    ]
    .iter()
    .any(|w| upper.contains(w))
}

fn mask_urls(table: &mut Table) {
    for (_, value) in table.iter_mut() {
        mask_value(value);
    }
}

fn mask_value(value: &mut Value) {
    match value {
        Value::String(s) => *s = mask_url_credentials(s),
        Value::Array(items) => items.iter_mut().for_each(mask_value),
        Value::Table(t) => mask_urls(t),
        _ => {}
    }
}

const DATABASE_SCHEMES: [&str; 7] = [
    "postgres",
    "postgresql",
    "mysql",
    "mariadb",
    "mongodb",
    "redis",
    "sqlserver",
];

/// Masks the password of every `scheme://user:password@host` in `text`, and the
/// `password=` parameter of database URLs.
pub fn mask_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let scheme_start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map(|i| i + 1)
            .unwrap_or(0);
        let scheme = rest[scheme_start..at].to_ascii_lowercase();
        out.push_str(&rest[..at + 3]);
        let after = &rest[at + 3..];
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`'))
            .unwrap_or(after.len());
        let url = &after[..end];
        let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
        let mut masked = match url[..authority_end].rfind('@') {
            Some(at_sign) => {
                let userinfo = &url[..at_sign];
                let user = match userinfo.find(':') {
                    Some(colon) => format!("{}:{MASK}", &userinfo[..colon]),
                    None => userinfo.to_string(),
                };
                format!("{user}{}", &url[at_sign..])
            }
            None => url.to_string(),
        };
        if DATABASE_SCHEMES.iter().any(|s| scheme.starts_with(s)) {
            masked = mask_query_password(&masked);
        }
        out.push_str(&masked);
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn mask_query_password(url: &str) -> String {
    let Some(q) = url.find('?') else {
        return url.to_string();
    };
    let params: Vec<String> = url[q + 1..]
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if looks_secret(k) => format!("{k}={MASK}"),
            _ => p.to_string(),
        })
        .collect();
    format!("{}?{}", &url[..q], params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl FnMut(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn interpolates_escapes_and_leaves_shell_variables() {
        let mut e = env(&[("USER_NAME", "deploy"), ("X", "1")]);
        assert_eq!(
            interpolate("${USER_NAME}@host:${X}", &mut e).unwrap(),
            "deploy@host:1"
        );
        assert_eq!(
            interpolate("$${X} $HOME $", &mut e).unwrap(),
            "${X} $HOME $"
        );
        let err = interpolate("a ${MISSING} b", &mut e).unwrap_err();
        assert!(err.contains("MISSING is not set"), "{err}");
        assert!(interpolate("${X", &mut e).is_err());
        assert!(interpolate("${A B}", &mut e).is_err());
    }

    #[test]
    fn a_missing_variable_names_its_key() {
        let mut t: Table = toml::from_str("[hooks]\nbuild = [\"ok\", \"echo ${NOPE}\"]\n").unwrap();
        let (path, message) =
            interpolate_table(&mut t, &KeyPath::root(), &mut env(&[])).unwrap_err();
        assert_eq!(path.to_string(), "hooks.build[1]");
        assert!(message.contains("NOPE"));
    }

    #[test]
    fn merge_is_key_by_key_and_arrays_replace() {
        let mut base: Table =
            toml::from_str("a = 1\n[ssh]\nuser = \"x\"\nport = 22\n[shared]\nfiles = [\"a\"]\n")
                .unwrap();
        let over: Table =
            toml::from_str("[ssh]\nuser = \"y\"\n[shared]\nfiles = [\"b\", \"c\"]\n").unwrap();
        merge(&mut base, &over);
        assert_eq!(base["ssh"]["user"].as_str(), Some("y"));
        assert_eq!(base["ssh"]["port"].as_integer(), Some(22));
        assert_eq!(base["shared"]["files"].as_array().unwrap().len(), 2);
        assert_eq!(base["a"].as_integer(), Some(1));
    }

    #[test]
    fn secrets_are_masked() {
        assert!(looks_secret("DB_PASSWORD"));
        assert!(looks_secret("api_token"));
        assert!(looks_secret("AWS_SECRET_ACCESS_KEY"));
        assert!(!looks_secret("DEPLOY_USER"));
        assert_eq!(
            mask_url_credentials("postgres://app:hunter2@db:5432/shop?sslmode=require"),
            format!("postgres://app:{MASK}@db:5432/shop?sslmode=require")
        );
        assert_eq!(
            mask_url_credentials("curl https://u:p@x.io/a and mysql://h/db?password=p&x=1"),
            format!("curl https://u:{MASK}@x.io/a and mysql://h/db?password={MASK}&x=1")
        );
        assert_eq!(
            mask_url_credentials("https://example.com/x"),
            "https://example.com/x"
        );
    }

    #[test]
    fn a_host_may_be_written_as_its_address_alone() {
        let text = "app = \"a\"\ndeploy_to = \"/srv/a\"\n[stages.prod]\nhosts = [\"app1.example.com\", { address = \"app2.example.com\", port = 2222, roles = [\"db\"] }]\n";
        let config =
            crate::config::Config::parse(text, Path::new("deploy.toml"), Path::new(".")).unwrap();
        let hosts = &config.stage("prod").unwrap().hosts;
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].address, "app1.example.com");
        assert!(hosts[0].roles.is_empty() && hosts[0].port.is_none());
        assert_eq!(
            (hosts[1].address.as_str(), hosts[1].port),
            ("app2.example.com", Some(2222))
        );
        for (bad, says) in [
            ("[42]", "expected a host: its address"),
            ("[{ adress = \"x\" }]", "unknown field `adress`"),
            ("[\"-oProxyCommand=x\"]", "hosts[0]"),
        ] {
            let text =
                format!("app = \"a\"\ndeploy_to = \"/srv/a\"\n[stages.prod]\nhosts = {bad}\n");
            let err = crate::config::Config::parse(&text, Path::new("deploy.toml"), Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(says) && err.contains("deploy.toml:4:"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_stage_may_pick_its_own_recipe_and_database_commands_need_a_database_section() {
        let text = "app = \"a\"\ndeploy_to = \"/srv/a\"\nrecipe = \"static-site\"\n[stages.web]\ntransport = \"local\"\n[stages.api]\ntransport = \"local\"\nrecipe = \"node\"\n[stages.api.database]\nrole = \"db\"\n[stages.plain]\ntransport = \"local\"\nrecipe = \"node\"\n";
        let config =
            crate::config::Config::parse(text, Path::new("deploy.toml"), Path::new(".")).unwrap();
        let web = config.stage("web").unwrap();
        assert_eq!(web.recipe.as_deref(), Some("static-site"));
        assert!(web.build_hooks.is_empty());
        let api = config.stage("api").unwrap();
        assert_eq!(api.recipe.as_deref(), Some("node"));
        assert!(api.build_hooks.iter().any(|h| h.starts_with("npm ci")));
        let migrator = api
            .database
            .as_ref()
            .and_then(|d| d.framework.as_ref())
            .unwrap();
        assert_eq!(migrator.framework, crate::config::Framework::Knex);
        assert_eq!(migrator.runtime, "node");
        let plain = config.stage("plain").unwrap();
        assert!(
            plain.database.is_none(),
            "no [database] section: no migrations"
        );
    }

    #[test]
    fn the_masked_view_layers_recipe_top_and_stage() {
        let raw: Table = toml::from_str(
            "recipe = \"node\"\napp = \"a\"\n[hooks]\nrestart = [\"curl -H ${API_TOKEN} https://${HOST_NAME}/r\"]\n[stages.prod]\ndeploy_to = \"/srv/a\"\nhosts = [{ address = \"h\" }]\n",
        )
        .unwrap();
        let view = masked_view(
            &raw,
            "prod",
            &mut env(&[("API_TOKEN", "s3cr3t"), ("HOST_NAME", "example.com")]),
        )
        .unwrap();
        let restart = view["hooks"]["restart"][0].as_str().unwrap();
        assert_eq!(restart, format!("curl -H {MASK} https://example.com/r"));
        assert_eq!(view["deploy_to"].as_str(), Some("/srv/a"));
        assert!(view["hooks"].get("build").is_some(), "from the recipe");
        assert_eq!(view["recipe"].as_str(), Some("node"));
    }
}
