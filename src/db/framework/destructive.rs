//! Schema changes that break the release still serving traffic: during a deploy (and
//! through a whole rollout) the old code runs on the migrated schema, so a migration
//! that drops or renames a table or column the old code reads makes it fail until every
//! host runs the new code. Adapters report these per migration (the `destructive=`
//! field of a `known` line, see `CONTRACT.md`); this file parses that field and words
//! the warnings (pure).

use super::Known;

/// What a destructive operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    DropTable,
    DropColumn,
    RenameTable,
    RenameColumn,
    ChangeType,
    SetNotNull,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::DropTable,
        Kind::DropColumn,
        Kind::RenameTable,
        Kind::RenameColumn,
        Kind::ChangeType,
        Kind::SetNotNull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::DropTable => "drop_table",
            Kind::DropColumn => "drop_column",
            Kind::RenameTable => "rename_table",
            Kind::RenameColumn => "rename_column",
            Kind::ChangeType => "change_type",
            Kind::SetNotNull => "set_not_null",
        }
    }

    fn renames(self) -> bool {
        matches!(self, Kind::RenameTable | Kind::RenameColumn)
    }
}

/// One operation of a migration that breaks older code, as its adapter named it:
/// `drop_column:items.price`, `rename_table:a>b`, `rename_column:items.price>cost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destructive {
    pub kind: Kind,
    /// The table, or `TABLE.COLUMN` for a column (a table may be schema-qualified).
    pub target: String,
    /// For a rename: the new name (of the table, or of the column).
    pub to: Option<String>,
}

/// Most operations accepted on one `known` line.
const MAX_OPS: usize = 100;
/// Longest name accepted from a host.
const MAX_NAME: usize = 255;

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '\u{7f}' && !",:>=".contains(c))
}

impl Destructive {
    /// Parses the 4th field of a `known` line: `destructive=OP:TARGET[,OP:TARGET...]`.
    /// Strict: an unknown operation, an empty list or a malformed target is an error.
    pub fn parse_field(field: &str) -> Result<Vec<Destructive>, String> {
        let list = field
            .strip_prefix("destructive=")
            .ok_or_else(|| "the 4th field of a `known` line must be destructive=...".to_string())?;
        if list.is_empty() {
            return Err("destructive= lists no operation (leave the field out)".into());
        }
        let items: Vec<&str> = list.split(',').collect();
        if items.len() > MAX_OPS {
            return Err(format!(
                "destructive= lists {} operations, more than {MAX_OPS}",
                items.len()
            ));
        }
        items.into_iter().map(Destructive::parse_one).collect()
    }

    fn parse_one(item: &str) -> Result<Destructive, String> {
        let bad = || format!("not a destructive operation: `{item}`");
        let (op, target) = item.split_once(':').ok_or_else(bad)?;
        let kind = Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == op)
            .ok_or_else(|| format!("unknown destructive operation `{op}`"))?;
        let (target, to) = match target.split_once('>') {
            Some((from, to)) if kind.renames() => (from, Some(to)),
            Some(_) => return Err(bad()),
            None if kind.renames() => return Err(bad()),
            None => (target, None),
        };
        if !valid_name(target) || !to.is_none_or(valid_name) {
            return Err(bad());
        }
        let column = !matches!(kind, Kind::DropTable | Kind::RenameTable);
        if column && !target.contains('.') {
            return Err(format!("`{item}` names no table: TABLE.COLUMN expected"));
        }
        Ok(Destructive {
            kind,
            target: target.to_string(),
            to: to.map(str::to_string),
        })
    }

    /// The field as an adapter prints it (the inverse of [`Destructive::parse_field`]).
    pub fn field(ops: &[Destructive]) -> String {
        let items: Vec<String> = ops
            .iter()
            .map(|d| match &d.to {
                Some(to) => format!("{}:{}>{to}", d.kind.as_str(), d.target),
                None => format!("{}:{}", d.kind.as_str(), d.target),
            })
            .collect();
        format!("destructive={}", items.join(","))
    }

    /// What it does, in words: "drops column items.price".
    pub fn describe(&self) -> String {
        let to = self.to.as_deref().unwrap_or_default();
        match self.kind {
            Kind::DropTable => format!("drops table {}", self.target),
            Kind::DropColumn => format!("drops column {}", self.target),
            Kind::RenameTable => format!("renames table {} to {to}", self.target),
            Kind::RenameColumn => format!("renames column {} to {to}", self.target),
            Kind::ChangeType => format!("changes the type of column {}", self.target),
            Kind::SetNotNull => format!("makes column {} NOT NULL without a default", self.target),
        }
    }
}

/// One warning per pending migration (known to the code, not in `applied`) that breaks
/// the release still serving, in the order the framework would apply them. None while
/// nothing is applied: no older code runs on a database that was never migrated (and
/// the framework's own first migrations, which drop and alter, are no news).
pub fn warnings(known: &[Known], applied: &[String]) -> Vec<String> {
    if applied.is_empty() {
        return Vec::new();
    }
    known
        .iter()
        .filter(|k| !k.destructive.is_empty() && !applied.contains(&k.id))
        .map(|k| {
            let what: Vec<String> = k.destructive.iter().map(Destructive::describe).collect();
            let advice = if k.destructive.iter().all(|d| d.kind.renames()) {
                "deploy code that works with both names first"
            } else {
                "deploy the code that stops using it first"
            };
            format!(
                "migration {} {}: the release still serving (old code) may fail until every host runs the new code; {advice}",
                k.id,
                join_and(&what)
            )
        })
        .collect()
}

fn join_and(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(id: &str, field: Option<&str>) -> Known {
        Known {
            id: id.into(),
            reversible: true,
            atomic: true,
            destructive: field
                .map(|f| Destructive::parse_field(f).unwrap())
                .unwrap_or_default(),
        }
    }

    #[test]
    fn parses_every_operation_and_prints_it_back() {
        let field = "destructive=drop_column:items.price,rename_table:a>b,rename_column:public.items.x>y,drop_table:notes,change_type:items.qty,set_not_null:items.name";
        let ops = Destructive::parse_field(field).unwrap();
        assert_eq!(ops.len(), 6);
        assert_eq!(ops[0].kind, Kind::DropColumn);
        assert_eq!(ops[0].target, "items.price");
        assert_eq!(ops[1].to.as_deref(), Some("b"));
        assert_eq!(ops[2].target, "public.items.x");
        assert_eq!(Destructive::field(&ops), field);
    }

    #[test]
    fn a_malformed_field_is_refused() {
        for bad in [
            "destructive=",
            "destructive",
            "destroys=drop_table:a",
            "destructive=drop_table",
            "destructive=drop_table:",
            "destructive=truncate:items",
            "destructive=drop_column:price",
            "destructive=rename_table:a",
            "destructive=rename_table:a>",
            "destructive=drop_table:a>b",
            "destructive=drop_table:a,,drop_table:b",
            "destructive=drop_table:a\u{1b}[2J",
        ] {
            assert!(Destructive::parse_field(bad).is_err(), "{bad:?}");
        }
        let many = format!(
            "destructive={}",
            vec!["drop_table:a"; MAX_OPS + 1].join(",")
        );
        assert!(Destructive::parse_field(&many).is_err());
    }

    #[test]
    fn warns_once_per_pending_destructive_migration_only() {
        let known = vec![
            known("a.0001", Some("destructive=drop_table:old")),
            known("a.0002", None),
            known(
                "a.0003",
                Some("destructive=drop_column:items.price,rename_table:a>b"),
            ),
            known("a.0004", Some("destructive=rename_column:items.x>y")),
        ];
        let w = warnings(&known, &["a.0001".to_string()]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("migration a.0003 drops column items.price and renames table a to b: the release still serving (old code) may fail until every host runs the new code; deploy the code that stops using it first"),
            "{}",
            w[0]
        );
        assert!(w[1].contains("renames column items.x to y"), "{}", w[1]);
        assert!(w[1].ends_with("works with both names first"), "{}", w[1]);
        let all: Vec<String> = known.iter().map(|k| k.id.clone()).collect();
        assert!(warnings(&known, &all).is_empty());
        assert!(warnings(&[known_plain()], &["x".to_string()]).is_empty());
        assert!(
            warnings(&known, &[]).is_empty(),
            "a database never migrated has no older code running on it"
        );
    }

    fn known_plain() -> Known {
        known("b.0001", None)
    }
}
