//! Pure decisions of framework mode: what a rollback (or a roll forward) does to the
//! schema, in which order, and when it must refuse. Inputs are plain lists: what the
//! database has applied (in applied order), what the releases recorded, and what the
//! code of the release being left knows.

use serde::Serialize;

use super::Known;
use crate::release::SchemaRecord;

/// Why a schema change is refused. Nothing has been touched when one is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The target release recorded no applied migrations.
    NoRecord(String),
    /// The release being left recorded none: what the database has cannot be checked.
    NoLeftRecord(String),
    /// The database and the release being left's record disagree.
    Disagree {
        release: String,
        unknown: Vec<String>,
        missing: Vec<String>,
    },
    /// A migration to undo is not in the code of the release being left.
    MissingCode { id: String, release: String },
    /// A migration to undo has no down step.
    Irreversible(Vec<String>),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoRecord(id) => write!(
                f,
                "release {id} recorded no applied migrations (it was deployed before framework mode, or without [database]): cannot tell which migrations to undo (use --skip-schema to switch the code only)"
            ),
            Refusal::NoLeftRecord(id) => write!(
                f,
                "release {id} recorded no applied migrations: what the database has cannot be checked against it (use --skip-schema to switch the code only)"
            ),
            Refusal::Disagree {
                release,
                unknown,
                missing,
            } => {
                write!(f, "the database and release {release}'s record disagree:")?;
                if !unknown.is_empty() {
                    write!(
                        f,
                        " applied but not recorded by any deploy: {};",
                        unknown.join(", ")
                    )?;
                }
                if !missing.is_empty() {
                    write!(f, " recorded but not applied: {};", missing.join(", "))?;
                }
                write!(
                    f,
                    " slipway does not guess which of them to undo (check with `slipway db status`; --skip-schema switches the code only)"
                )
            }
            Refusal::MissingCode { id, release } => write!(
                f,
                "migration {id} is applied but release {release} does not have its code: it cannot be undone (use --skip-schema to switch the code only)"
            ),
            Refusal::Irreversible(ids) => write!(
                f,
                "irreversible migration{}: {} (no down step): a rollback across {} refuses (use --force-schema to leave {} applied and undo the others, or --skip-schema to switch the code only)",
                if ids.len() == 1 { "" } else { "s" },
                ids.join(", "),
                if ids.len() == 1 { "it" } else { "them" },
                if ids.len() == 1 { "it" } else { "them" },
            ),
        }
    }
}

/// Which goes first: the code switch or the schema change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// Undoing only: switch the code back, then unapply (the old code meets the newer
    /// schema for the time the undo takes, as during every deploy).
    CodeThenSchema,
    /// Applying (a roll forward): migrate first, then switch the code (the old code
    /// meets the newer schema until the switch, as during every deploy).
    SchemaThenCode,
}

impl Order {
    pub fn describe(self) -> &'static str {
        match self {
            Order::CodeThenSchema => {
                "code first, then schema: the older code runs on the newer schema until the undo is done"
            }
            Order::SchemaThenCode => {
                "schema first, then code: the older code runs on the newer schema until the switch is done"
            }
        }
    }
}

/// A planned schema change between two releases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// To unapply, newest first, with the code of the release being left.
    pub undo: Vec<String>,
    /// Irreversible migrations left applied (`--force-schema`).
    pub left_applied: Vec<String>,
    /// To apply with the target release's code, in the target's recorded order.
    pub forward: Vec<String>,
    pub order: Order,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.undo.is_empty() && self.forward.is_empty()
    }
}

/// Plans the schema change from the database's state (`applied`, oldest first) to what
/// the target release recorded. `left` is the release being left (current on the db
/// host), with its record and the migrations its code knows.
pub fn change(
    applied: &[String],
    left_id: &str,
    left_record: Option<&SchemaRecord>,
    left_known: &[Known],
    target_id: &str,
    target_record: Option<&SchemaRecord>,
    force_irreversible: bool,
) -> Result<Change, Refusal> {
    let target = target_record.ok_or_else(|| Refusal::NoRecord(target_id.to_string()))?;
    let left = left_record.ok_or_else(|| Refusal::NoLeftRecord(left_id.to_string()))?;
    let unknown: Vec<String> = applied
        .iter()
        .filter(|a| !left.applied.contains(a))
        .cloned()
        .collect();
    let missing: Vec<String> = left
        .applied
        .iter()
        .filter(|r| !applied.contains(r))
        .cloned()
        .collect();
    if !unknown.is_empty() || !missing.is_empty() {
        return Err(Refusal::Disagree {
            release: left_id.to_string(),
            unknown,
            missing,
        });
    }
    let mut undo = Vec::new();
    let mut left_applied = Vec::new();
    let mut irreversible = Vec::new();
    for id in applied.iter().rev().filter(|a| !target.applied.contains(a)) {
        let known =
            left_known
                .iter()
                .find(|k| &k.id == id)
                .ok_or_else(|| Refusal::MissingCode {
                    id: id.clone(),
                    release: left_id.to_string(),
                })?;
        if known.reversible {
            undo.push(id.clone());
        } else if force_irreversible {
            left_applied.push(id.clone());
        } else {
            irreversible.push(id.clone());
        }
    }
    if !irreversible.is_empty() {
        return Err(Refusal::Irreversible(irreversible));
    }
    let forward: Vec<String> = target
        .applied
        .iter()
        .filter(|t| !applied.contains(t))
        .cloned()
        .collect();
    let order = if forward.is_empty() {
        Order::CodeThenSchema
    } else {
        Order::SchemaThenCode
    };
    Ok(Change {
        undo,
        left_applied,
        forward,
        order,
    })
}

/// The migrations a deploy applied: in `after` (applied order) but not in `before`.
pub fn applied_between(before: &[String], after: &[String]) -> Vec<String> {
    after
        .iter()
        .filter(|a| !before.contains(a))
        .cloned()
        .collect()
}

/// Migrations that were applied before and are gone after (a migrate must never do
/// that; an unapply only the ones it was given).
pub fn removed_between(before: &[String], after: &[String]) -> Vec<String> {
    applied_between(after, before)
}

/// The migration a failed `migrate` stopped at when the adapter could not say: the
/// first one the code knows that is still not applied.
pub fn first_pending(known: &[Known], after: &[String]) -> Option<String> {
    known
        .iter()
        .find(|k| !after.contains(&k.id))
        .map(|k| k.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn record(list: &[&str]) -> SchemaRecord {
        SchemaRecord {
            framework: "django".into(),
            applied: ids(list),
            applied_now: vec![],
        }
    }

    fn known(list: &[&str]) -> Vec<Known> {
        list.iter()
            .map(|id| Known {
                id: id.to_string(),
                reversible: !id.contains("irrev"),
                atomic: true,
                destructive: vec![],
            })
            .collect()
    }

    #[test]
    fn undoes_exactly_what_the_target_did_not_have_newest_first() {
        // Applied order is not plan order: sessions came last, but the target had it.
        let db = ids(&[
            "auth.0001",
            "catalog.0001",
            "catalog.0002",
            "orders.0001",
            "sessions.0001",
        ]);
        let target = record(&["auth.0001", "catalog.0001", "sessions.0001"]);
        let left = record(&[
            "auth.0001",
            "catalog.0001",
            "catalog.0002",
            "orders.0001",
            "sessions.0001",
        ]);
        let c = change(
            &db,
            "R2",
            Some(&left),
            &known(&[
                "auth.0001",
                "catalog.0001",
                "catalog.0002",
                "orders.0001",
                "sessions.0001",
            ]),
            "R1",
            Some(&target),
            false,
        )
        .unwrap();
        assert_eq!(c.undo, ids(&["orders.0001", "catalog.0002"]));
        assert!(c.forward.is_empty());
        assert_eq!(c.order, Order::CodeThenSchema);
    }

    #[test]
    fn a_newer_target_is_migrated_forward_schema_first() {
        let db = ids(&["a.1"]);
        let left = record(&["a.1"]);
        let target = record(&["a.1", "a.2", "b.1"]);
        let c = change(
            &db,
            "R1",
            Some(&left),
            &known(&["a.1"]),
            "R2",
            Some(&target),
            false,
        )
        .unwrap();
        assert!(c.undo.is_empty());
        assert_eq!(c.forward, ids(&["a.2", "b.1"]));
        assert_eq!(c.order, Order::SchemaThenCode);
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let db = ids(&["a.1", "a.2_irrev"]);
        let left = record(&["a.1", "a.2_irrev"]);
        let target = record(&["a.1"]);
        let e = change(
            &db,
            "R2",
            Some(&left),
            &known(&["a.1", "a.2_irrev"]),
            "R1",
            Some(&target),
            false,
        )
        .unwrap_err();
        assert_eq!(e, Refusal::Irreversible(ids(&["a.2_irrev"])));
        let forced = change(
            &db,
            "R2",
            Some(&left),
            &known(&["a.1", "a.2_irrev"]),
            "R1",
            Some(&target),
            true,
        )
        .unwrap();
        assert_eq!(forced.left_applied, ids(&["a.2_irrev"]));
        assert!(forced.undo.is_empty());

        let e = change(
            &db,
            "R2",
            Some(&left),
            &known(&["a.1"]),
            "R1",
            Some(&target),
            false,
        )
        .unwrap_err();
        assert!(matches!(e, Refusal::MissingCode { .. }), "{e}");

        let hand = ids(&["a.1", "a.2_irrev", "x.9"]);
        let e = change(
            &hand,
            "R2",
            Some(&left),
            &known(&["a.1"]),
            "R1",
            Some(&target),
            false,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("applied but not recorded by any deploy: x.9"),
            "{e}"
        );

        assert!(matches!(
            change(&db, "R2", Some(&left), &[], "R1", None, false),
            Err(Refusal::NoRecord(_))
        ));
        assert!(matches!(
            change(&db, "R2", None, &[], "R1", Some(&target), false),
            Err(Refusal::NoLeftRecord(_))
        ));
    }

    #[test]
    fn what_a_deploy_applied_is_the_difference_in_applied_order() {
        assert_eq!(
            applied_between(&ids(&["a", "b"]), &ids(&["a", "b", "d", "c"])),
            ids(&["d", "c"])
        );
        assert_eq!(
            removed_between(&ids(&["a", "b"]), &ids(&["b"])),
            ids(&["a"])
        );
        assert_eq!(
            first_pending(&known(&["a", "b", "c"]), &ids(&["a"])),
            Some("b".into())
        );
    }
}
