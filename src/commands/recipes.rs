//! `slipway recipes` and `slipway recipes show NAME`: the embedded recipes, listed or
//! printed as shipped.

use serde_json::json;

use crate::error::{Error, Result};
use crate::recipe::{RECIPES, find, names};
use crate::run::Outcome;

/// `slipway recipes`: every recipe with its summary.
pub fn list() -> Outcome {
    let width = RECIPES.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut human = String::new();
    for r in RECIPES {
        human.push_str(&format!("{:<width$}  {}\n", r.name, r.summary()));
    }
    human.push_str(
        "\nUse one with recipe = \"NAME\" in deploy.toml; `slipway recipes show NAME` prints it.\n",
    );
    Outcome {
        human,
        data: json!({
            "recipes": RECIPES
                .iter()
                .map(|r| json!({ "name": r.name, "summary": r.summary() }))
                .collect::<Vec<_>>()
        }),
    }
}

/// `slipway recipes show NAME`: the recipe file, comments included.
pub fn show(name: &str) -> Result<Outcome> {
    let recipe = find(name).ok_or_else(|| {
        Error::Usage(format!(
            "no recipe `{name}` (recipes: {})",
            names().join(", ")
        ))
    })?;
    Ok(Outcome {
        human: recipe.text.to_string(),
        data: json!({ "name": recipe.name, "text": recipe.text }),
    })
}
