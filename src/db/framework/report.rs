//! What an adapter printed: its `slipway:` lines, parsed and checked. A host's output is
//! not trusted: an id must be a short printable word, and a line that breaks the
//! contract is an error, never guessed around.

use super::destructive::Destructive;

/// A migration a release's code has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub id: String,
    pub reversible: bool,
    /// Run in a transaction that the database rolls back on failure.
    pub atomic: bool,
    /// What it does that breaks older code still running (empty: nothing known).
    pub destructive: Vec<Destructive>,
}

/// One adapter run, as reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// In the order the framework would apply them.
    pub known: Vec<Known>,
    /// Applied migrations at the end of the run, oldest first; `None` when the adapter
    /// could not read them.
    pub applied: Option<Vec<String>>,
    pub ddl_transactions: Option<bool>,
    /// The migration that failed, and the database's error.
    pub failed: Option<(String, String)>,
    pub errors: Vec<String>,
    pub done: bool,
}

/// Longest id accepted from a host.
const MAX_ID: usize = 255;

/// Whether `id` may be a migration id: printable, no whitespace, not too long.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '\u{7f}')
}

impl Report {
    /// Parses the adapter's stdout. Lines without the `slipway:` prefix are the
    /// framework's own output and are ignored.
    pub fn parse(stdout: &str) -> Result<Report, String> {
        let mut r = Report::default();
        let mut applied: Vec<String> = Vec::new();
        // A set beside the list: a repeat is found in one look, however long the list.
        let mut seen = std::collections::HashSet::new();
        let mut saw_applied = false;
        for line in stdout.lines() {
            let Some(rest) = line.strip_prefix("slipway:") else {
                continue;
            };
            let (kind, args) = rest.split_once(' ').unwrap_or((rest, ""));
            match kind {
                "known" => {
                    let mut f = args.split(' ');
                    let (Some(id), Some(rev), Some(atomic)) = (f.next(), f.next(), f.next()) else {
                        return Err(format!("a `known` line is incomplete: {}", shown(line)));
                    };
                    let destructive = match (f.next(), f.next()) {
                        (None, _) => Vec::new(),
                        (Some(field), None) => Destructive::parse_field(field)
                            .map_err(|m| format!("{m}: {}", shown(line)))?,
                        (Some(_), Some(_)) => {
                            return Err(format!(
                                "a `known` line has too many fields: {}",
                                shown(line)
                            ));
                        }
                    };
                    let id = checked(id)?;
                    let reversible = match rev {
                        "reversible" => true,
                        "irreversible" => false,
                        other => return Err(format!("unknown reversibility {}", shown(other))),
                    };
                    let atomic = match atomic {
                        "atomic" => true,
                        "nonatomic" => false,
                        other => return Err(format!("unknown atomicity {}", shown(other))),
                    };
                    r.known.push(Known {
                        id,
                        reversible,
                        atomic,
                        destructive,
                    });
                }
                "applied" => {
                    saw_applied = true;
                    let id = checked(args)?;
                    if !seen.insert(id.clone()) {
                        return Err(format!("migration {id} is listed as applied twice"));
                    }
                    applied.push(id);
                }
                "ddl-transactions" => {
                    r.ddl_transactions = match args {
                        "yes" => Some(true),
                        "no" => Some(false),
                        other => return Err(format!("unknown ddl-transactions {}", shown(other))),
                    }
                }
                "failed" => {
                    let (id, message) = args.split_once(' ').unwrap_or((args, ""));
                    r.failed = Some((checked(id)?, clean(message)));
                }
                "error" => r.errors.push(clean(args)),
                "done" => r.done = true,
                _ => {}
            }
        }
        // An empty list is an answer only from an adapter that got through its
        // inspection: one that died first printed nothing, which is not "none applied".
        let unreadable = r.errors.iter().any(|e| e.contains("cannot read applied"));
        if !unreadable && (saw_applied || r.done || !r.known.is_empty()) {
            r.applied = Some(applied);
        }
        Ok(r)
    }

    pub fn known(&self, id: &str) -> Option<&Known> {
        self.known.iter().find(|k| k.id == id)
    }
}

fn checked(id: &str) -> Result<String, String> {
    if valid_id(id) {
        Ok(id.to_string())
    } else {
        Err(format!("not a migration id: {}", shown(id)))
    }
}

/// Host text made safe to print: control characters escaped, length bounded.
pub fn clean(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().take(2000) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if text.chars().nth(2000).is_some() {
        out.push_str("...");
    }
    out
}

fn shown(text: &str) -> String {
    format!("`{}`", clean(&text.chars().take(80).collect::<String>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_and_ignores_other_output() {
        let r = Report::parse(
            "Operations to perform:\nslipway:known a.0001 reversible atomic\nslipway:known a.0002 irreversible nonatomic\nslipway:ddl-transactions yes\nslipway:applied a.0001\nnoise\nslipway:done\n",
        )
        .unwrap();
        assert_eq!(r.known.len(), 2);
        assert!(!r.known("a.0002").unwrap().reversible);
        assert!(!r.known("a.0002").unwrap().atomic);
        assert_eq!(r.applied, Some(vec!["a.0001".to_string()]));
        assert_eq!(r.ddl_transactions, Some(true));
        assert!(r.done);
    }

    #[test]
    fn a_known_line_may_name_what_breaks_older_code() {
        let r = Report::parse(
            "slipway:known a.0003 reversible atomic destructive=drop_column:items.price,rename_table:a>b\nslipway:known a.0004 reversible atomic\n",
        )
        .unwrap();
        let d = &r.known("a.0003").unwrap().destructive;
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].describe(), "drops column items.price");
        assert_eq!(d[1].describe(), "renames table a to b");
        assert!(r.known("a.0004").unwrap().destructive.is_empty());
        for bad in [
            "slipway:known a reversible atomic destructive=drop_column:items.price extra",
            "slipway:known a reversible atomic destructive=dropped:items",
            "slipway:known a reversible atomic price",
            "slipway:known a reversible atomic ",
        ] {
            assert!(Report::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_failure_keeps_its_message_without_control_characters() {
        let r = Report::parse("slipway:failed 0003_bad relation \"x\" does not exist\u{1b}[31m\nslipway:applied 0001\n").unwrap();
        let (id, m) = r.failed.unwrap();
        assert_eq!(id, "0003_bad");
        assert!(!m.contains('\u{1b}'), "{m}");
        assert!(m.starts_with("relation \"x\" does not exist"));
    }

    #[test]
    fn hostile_ids_are_refused() {
        for bad in [
            "slipway:applied ../../etc\u{1b}[2J",
            "slipway:applied ",
            "slipway:known a b c",
            "slipway:applied x\nslipway:applied x",
        ] {
            assert!(Report::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("slipway:applied {}", "a".repeat(300));
        assert!(Report::parse(&long).is_err());
    }

    #[test]
    fn an_unreadable_database_is_not_an_empty_one() {
        let r = Report::parse("slipway:error cannot read applied migrations: connection refused\n")
            .unwrap();
        assert_eq!(r.applied, None);
        assert_eq!(Report::parse("").unwrap().applied, None);
        let r = Report::parse("slipway:known a reversible atomic\n").unwrap();
        assert_eq!(r.applied, Some(vec![]));
    }
}
