//! `slipway init`: a commented starter deploy.toml for the project in the current
//! directory, with the recipe of the framework its files show.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::error::{Error, Result};
use crate::recipe::{self, Recipe};
use crate::run::Outcome;

/// What the project looks like, and why we think so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub recipe: &'static str,
    /// The files that gave it away, for the comment at the top of the file.
    pub evidence: String,
}

/// The recipe for the project in `dir`, from its files. The most specific framework
/// wins: a Rails or Laravel app also has a package.json.
pub fn detect(dir: &Path) -> Option<Detected> {
    let has = |p: &str| dir.join(p).exists();
    let found = |recipe, evidence: &str| {
        Some(Detected {
            recipe,
            evidence: evidence.to_string(),
        })
    };
    if has("Gemfile") && has("config/application.rb") {
        return found("rails", "Gemfile and config/application.rb");
    }
    if has("artisan") && has("composer.json") {
        return found("laravel", "artisan and composer.json");
    }
    if has("manage.py") {
        return found("django", "manage.py");
    }
    if has("Cargo.toml") && (has("src/main.rs") || cargo_has_bin(&dir.join("Cargo.toml"))) {
        return found("rust-binary", "Cargo.toml with a binary");
    }
    if has("package.json") {
        return found("node", "package.json");
    }
    if has("index.html") {
        return found("static-site", "index.html");
    }
    if dir.join("public").is_dir() {
        return found("static-site", "public/");
    }
    None
}

fn cargo_has_bin(manifest: &Path) -> bool {
    std::fs::read_to_string(manifest)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| {
            t.get("bin")
                .and_then(|b| b.as_array())
                .map(|b| !b.is_empty())
        })
        .unwrap_or(false)
}

/// An app name from a directory name: letters, digits, `.`, `_`, `-`.
pub fn app_name(dir: &Path) -> String {
    let raw = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name
        .trim_start_matches(['.', '-'])
        .chars()
        .take(64)
        .collect();
    if name.is_empty() { "app".into() } else { name }
}

/// Whether the project in `dir` uses the recipe's migration tool: always for the
/// frameworks that ship one (Rails, Django, Laravel); for Node and Rust only when the
/// project shows it uses knex or sqlx (their recipes' choices), so that a first deploy
/// does not fail on a migrator the app never had.
pub fn uses_migrations(recipe: &str, dir: &Path) -> bool {
    let mentions = |file: &str, word: &str| {
        std::fs::read_to_string(dir.join(file)).is_ok_and(|t| t.contains(word))
    };
    match recipe {
        "rails" | "django" | "laravel" => true,
        "node" => {
            dir.join("knexfile.js").exists()
                || dir.join("knexfile.ts").exists()
                || mentions("package.json", "\"knex\"")
        }
        "rust-binary" => dir.join("migrations").is_dir() && mentions("Cargo.toml", "sqlx"),
        _ => false,
    }
}

/// The text of the starter deploy.toml. `database`: whether to turn on the recipe's
/// migration commands (an active `[database]` section) or only show them.
pub fn render(
    app: &str,
    source_path: &str,
    detected: Option<&Detected>,
    recipe: Option<&Recipe>,
    database: bool,
) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut t = String::new();
    t.push_str(&format!(
        "# deploy.toml for {app}, written by `slipway init`.\n"
    ));
    match (recipe, detected) {
        (Some(r), Some(d)) if d.recipe == r.name => t.push_str(&format!(
            "# Recipe `{}`: found {}.\n",
            r.name, d.evidence
        )),
        (Some(r), _) => t.push_str(&format!("# Recipe `{}`: chosen with --recipe.\n", r.name)),
        (None, _) => t.push_str(
            "# No framework recognised: no recipe. Set hooks below (or recipe = \"NAME\", see `slipway recipes`).\n",
        ),
    }
    t.push_str(
        "# Every key is explained in the README's configuration reference. Check this file with\n\
         # `slipway check production --config-only`, see what a stage gets with\n\
         # `slipway config production`, then `slipway check production` and `slipway deploy production`.\n\n",
    );
    t.push_str(&format!("app = {}\n", q(app)));
    t.push_str(&format!(
        "deploy_to = {}          # on the hosts; owned by the ssh user\n",
        q(&format!("/srv/{app}"))
    ));
    t.push_str(
        "keep_releases = 5                   # good releases kept on each host, to roll back to\n",
    );
    let restarts_a_unit = recipe
        .and_then(|r| r.table().ok())
        .and_then(|t| t.get("hooks")?.get("restart")?.as_array().cloned())
        .is_some_and(|hooks| {
            hooks
                .iter()
                .any(|h| h.as_str().is_some_and(|h| h.contains("systemctl")))
        });
    if restarts_a_unit {
        t.push_str(&format!(
            "# After each switch the recipe restarts the systemd unit {app}.service (named after\n\
             # deploy_to) with sudo: set it up on the hosts, or set restart in [hooks] below.\n"
        ));
    }
    if let Some(r) = recipe {
        t.push_str(&format!(
            "\n# The recipe's settings lie beneath this file: any key set here overrides the recipe's,\n\
             # section by section and key by key. `slipway recipes show {0}` prints them.\n\
             recipe = {1}\n",
            r.name,
            q(r.name)
        ));
    }
    t.push_str(&format!(
        "\n[source]\n\
         path = {}                          # the directory shipped (honours .gitignore)\n\
         # git = \"HEAD\"                     # or: ship this ref of the git repository (git archive)\n\
         # exclude = [\"*.log\"]              # more patterns to leave out\n",
        q(source_path)
    ));
    t.push_str(
        "\n[ssh]\n\
         user = \"deploy\"                    # the user slipway logs in as on every host\n\
         # port = 22\n\
         # identity_file = \"~/.ssh/id_ed25519\"\n\
         # known_hosts = \"accept-new\"       # default \"strict\": the host keys must be in ~/.ssh/known_hosts\n",
    );
    let table = recipe.and_then(|r| r.table().ok());
    match &table {
        Some(table) => {
            for section in ["shared", "hooks"] {
                if let Some(toml::Value::Table(s)) = table.get(section) {
                    t.push_str(&format!(
                        "\n# From the recipe (uncomment a key to override it):\n# [{section}]\n"
                    ));
                    for (key, value) in s {
                        t.push_str(&format!("# {key} = {value}\n"));
                    }
                }
            }
        }
        None => t.push_str(
            "\n[shared]                            # kept in <deploy_to>/shared, linked into every release\n\
             files = []                          # e.g. [\".env\"]: must exist on every host\n\
             dirs = []                           # e.g. [\"log\"]: created on the first deploy\n\
             \n[hooks]                             # shell commands on each host, in the release directory\n\
             build = []                          # before the switch, e.g. [\"bin/build\"]\n\
             restart = []                        # after the switch, e.g. [\"sudo systemctl restart APP\"]\n",
        ),
    }
    let commands = table
        .as_ref()
        .and_then(|t| t.get("database"))
        .and_then(|d| d.as_table());
    let database = database && commands.is_some();
    if let Some(db) = commands {
        if database {
            t.push_str(
                "\n# Migrations with the framework's own tool, once per deploy, on the host with the role\n\
                 # below, in the new release before the switch; a rollback runs rollback_command.\n\
                 # No database? Remove this section.\n\
                 [database]\n\
                 role = \"db\"\n",
            );
        } else {
            t.push_str(
                "\n# The recipe's migration commands run only with a [database] section: uncomment\n\
                 # these two lines to use them (and give one host the role \"db\").\n\
                 # [database]\n\
                 # role = \"db\"\n",
            );
        }
        for (key, value) in db {
            t.push_str(&format!("# {key} = {value}\n"));
        }
    }
    let roles = if database {
        "[\"app\", \"db\"]"
    } else {
        "[\"app\"]"
    };
    t.push_str(&format!(
        "\n# A stage may override any key above (e.g. deploy_to, [ssh] user, [hooks]).\n\
         [stages.production]\n\
         hosts = [\n  {{ address = \"app1.example.com\", roles = {roles} }},\n  # {{ address = \"app2.example.com\", roles = [\"app\"] }},\n]\n\
         \n[stages.staging]\n\
         hosts = [{{ address = \"staging.example.com\", roles = {roles} }}]\n\
         \n# A stage on this machine, to try things out: no server needed.\n\
         [stages.local]\n\
         transport = \"local\"\n\
         deploy_to = {}\n",
        q(&format!("/tmp/{app}-local"))
    ));
    t
}

/// `slipway init [--force] [--recipe NAME]`: writes `config` for the project in `dir`.
pub fn run(
    config: &Path,
    dir: &Path,
    force: bool,
    recipe: Option<&str>,
    dry_run: bool,
) -> Result<Outcome> {
    let detected = detect(dir);
    let chosen = match recipe {
        Some(name) => Some(recipe::find(name).ok_or_else(|| {
            Error::Usage(format!(
                "--recipe: no recipe `{name}` (recipes: {})",
                recipe::names().join(", ")
            ))
        })?),
        None => detected.as_ref().and_then(|d| recipe::find(d.recipe)),
    };
    let app = app_name(dir);
    let source_path = source_path(config, dir);
    let database = chosen.is_some_and(|r| uses_migrations(r.name, dir));
    let text = render(&app, &source_path, detected.as_ref(), chosen, database);
    let recipe_name = chosen.map(|r| r.name);
    let data = json!({ "file": config.display().to_string(), "app": app, "recipe": recipe_name, "written": !dry_run });
    if dry_run {
        return Ok(Outcome {
            human: format!("{text}\n# Nothing was written (--dry-run).\n"),
            data,
        });
    }
    if config.exists() && !force {
        return Err(Error::Usage(format!(
            "{} already exists: not overwritten (use --force to replace it, or -c OTHER.toml)",
            config.display()
        )));
    }
    write(config, &text, force)
        .map_err(|e| Error::Usage(format!("cannot write {}: {e}", config.display())))?;
    Ok(Outcome {
        human: format!(
            "wrote {} for {app} ({}); next: edit the hosts, then `slipway check production`",
            config.display(),
            match recipe_name {
                Some(r) => format!("recipe {r}"),
                None => "no recipe: no framework recognised".into(),
            }
        ),
        data,
    })
}

/// `[source] path`: the project directory, relative to the config file's directory.
fn source_path(config: &Path, dir: &Path) -> String {
    let parent = config.parent().filter(|p| !p.as_os_str().is_empty());
    match parent {
        None => ".".into(),
        Some(p) => {
            let abs = |x: &Path| -> PathBuf {
                std::fs::canonicalize(x).unwrap_or_else(|_| x.to_path_buf())
            };
            let (p, d) = (abs(p), abs(dir));
            if p == d {
                ".".into()
            } else {
                d.display().to_string()
            }
        }
    }
}

fn write(path: &Path, text: &str, force: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        // Never replaces a file that appeared since the check above.
        options.create_new(true);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn project(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            if f.ends_with('/') {
                std::fs::create_dir_all(&path).unwrap();
            } else {
                std::fs::write(&path, "").unwrap();
            }
        }
        dir
    }

    #[test]
    fn detects_each_framework() {
        let cases: [(&[&str], Option<&str>); 9] = [
            (
                &["Gemfile", "config/application.rb", "package.json"],
                Some("rails"),
            ),
            (
                &["artisan", "composer.json", "package.json"],
                Some("laravel"),
            ),
            (&["manage.py", "requirements.txt"], Some("django")),
            (&["Cargo.toml", "src/main.rs"], Some("rust-binary")),
            (&["Cargo.toml", "src/lib.rs"], None),
            (&["package.json"], Some("node")),
            (&["index.html"], Some("static-site")),
            (&["public/"], Some("static-site")),
            (&["README.md"], None),
        ];
        for (files, expected) in cases {
            let dir = project(files);
            assert_eq!(detect(dir.path()).map(|d| d.recipe), expected, "{files:?}");
        }
        let dir = project(&["src/lib.rs"]);
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"x\"\n[[bin]]\nname = \"x\"\npath = \"src/x.rs\"\n",
        )
        .unwrap();
        assert_eq!(detect(dir.path()).unwrap().recipe, "rust-binary");
    }

    #[test]
    fn migrations_are_turned_on_only_where_the_project_shows_its_migrator() {
        assert!(uses_migrations("rails", project(&[]).path()));
        assert!(!uses_migrations("node", project(&["package.json"]).path()));
        assert!(uses_migrations(
            "node",
            project(&["package.json", "knexfile.js"]).path()
        ));
        let dir = project(&[]);
        std::fs::write(
            dir.path().join("package.json"),
            "{\"dependencies\": {\"knex\": \"3\"}}",
        )
        .unwrap();
        assert!(uses_migrations("node", dir.path()));
        let dir = project(&["migrations/"]);
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[dependencies]\nsqlx = \"0.8\"\n",
        )
        .unwrap();
        assert!(uses_migrations("rust-binary", dir.path()));
        assert!(!uses_migrations(
            "rust-binary",
            project(&["Cargo.toml"]).path()
        ));
        assert!(!uses_migrations("static-site", project(&[]).path()));
    }

    #[test]
    fn app_names_are_valid() {
        assert_eq!(app_name(Path::new("/x/My Shop")), "my-shop");
        assert_eq!(app_name(Path::new("/x/.hidden")), "hidden");
        assert_eq!(app_name(Path::new("/")), "app");
    }

    #[test]
    fn every_rendered_config_loads_with_its_recipe() {
        let dir = project(&[]);
        let mut all: Vec<Option<&Recipe>> = recipe::RECIPES.iter().map(Some).collect();
        all.push(None);
        for r in all {
            for database in [true, false] {
                let text = render("shop", ".", None, r, database);
                let config = Config::parse(&text, Path::new("deploy.toml"), dir.path())
                    .unwrap_or_else(|e| panic!("{:?}: {e}\n{text}", r.map(|r| r.name)));
                let stage = config.stage("production").unwrap();
                assert_eq!(stage.recipe.as_deref(), r.map(|r| r.name));
                assert_eq!(stage.hosts.len(), 1);
                let has_commands = r.is_some_and(|r| {
                    r.database_command("migrate_command").is_some()
                        || r.database_command("framework").is_some()
                });
                assert_eq!(stage.database.is_some(), database && has_commands);
            }
        }
    }
}
