//! Recipes: presets for common frameworks, written in TOML (`recipes/*.toml`) and
//! embedded in the binary. `recipe = "rails"` puts one beneath the top level of
//! deploy.toml, which overrides it key by key, as a stage overrides the top level.
//! Plain data: the config loader reads it, and so do `slipway recipes` and `slipway init`.

use toml::Table;

/// One embedded recipe.
#[derive(Debug, Clone, Copy)]
pub struct Recipe {
    pub name: &'static str,
    /// The recipe file as shipped, comments included.
    pub text: &'static str,
}

/// Every recipe, in the order `slipway recipes` lists them.
pub const RECIPES: &[Recipe] = &[
    Recipe {
        name: "rails",
        text: include_str!("../recipes/rails.toml"),
    },
    Recipe {
        name: "django",
        text: include_str!("../recipes/django.toml"),
    },
    Recipe {
        name: "laravel",
        text: include_str!("../recipes/laravel.toml"),
    },
    Recipe {
        name: "node",
        text: include_str!("../recipes/node.toml"),
    },
    Recipe {
        name: "rust-binary",
        text: include_str!("../recipes/rust-binary.toml"),
    },
    Recipe {
        name: "static-site",
        text: include_str!("../recipes/static-site.toml"),
    },
];

/// Top-level keys a recipe may not set: they belong to the application, not the framework.
const NOT_IN_A_RECIPE: [&str; 5] = ["app", "deploy_to", "stages", "hosts", "recipe"];

pub fn find(name: &str) -> Option<&'static Recipe> {
    RECIPES.iter().find(|r| r.name == name)
}

pub fn names() -> Vec<&'static str> {
    RECIPES.iter().map(|r| r.name).collect()
}

impl Recipe {
    /// The first comment line: what the recipe is for.
    pub fn summary(&self) -> &'static str {
        self.text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix('#'))
            .map(str::trim)
            .unwrap_or("")
    }

    /// The recipe's settings.
    pub fn table(&self) -> Result<Table, String> {
        let table: Table = toml::from_str(self.text)
            .map_err(|e| format!("recipe `{}` is broken: {}", self.name, e.message()))?;
        if let Some(key) = NOT_IN_A_RECIPE.iter().find(|k| table.contains_key(**k)) {
            return Err(format!(
                "recipe `{}` sets `{key}`, which belongs in deploy.toml",
                self.name
            ));
        }
        Ok(table)
    }

    /// A `[database]` setting of the recipe (`framework`, `migrate_command`, ...), if any.
    pub fn database_command(&self, key: &str) -> Option<String> {
        self.table()
            .ok()?
            .get("database")?
            .get(key)?
            .as_str()
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Layer;

    #[test]
    fn every_recipe_is_a_valid_layer_with_a_summary() {
        for recipe in RECIPES {
            let table = recipe.table().unwrap();
            let layer: Result<Layer, _> = toml::Value::Table(table).try_into();
            assert!(layer.is_ok(), "{}: {:?}", recipe.name, layer.err());
            assert!(!recipe.summary().is_empty(), "{}", recipe.name);
        }
    }

    #[test]
    fn the_frameworks_with_a_database_name_their_migrator() {
        for (name, framework) in [
            ("rails", "rails"),
            ("django", "django"),
            ("laravel", "laravel"),
            ("node", "knex"),
        ] {
            let recipe = find(name).unwrap();
            assert_eq!(
                recipe.database_command("framework").as_deref(),
                Some(framework)
            );
        }
        let rust = find("rust-binary").unwrap();
        for key in ["migrate_command", "rollback_command", "version_command"] {
            assert!(rust.database_command(key).is_some(), "rust-binary: {key}");
        }
        assert!(
            find("static-site")
                .unwrap()
                .table()
                .unwrap()
                .get("database")
                .is_none()
        );
    }
}
