//! Finds where a key path (`stages.production.hosts[1].address`) sits in the TOML text,
//! so that errors found after parsing still name a line and column.

use toml_edit::{Document, Item, Table, Value};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A dotted key path with array indices, as printed in error messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPath(pub Vec<Segment>);

impl KeyPath {
    pub fn root() -> KeyPath {
        KeyPath(Vec::new())
    }
    pub fn key(&self, key: &str) -> KeyPath {
        let mut next = self.0.clone();
        next.push(Segment::Key(key.to_string()));
        KeyPath(next)
    }
    pub fn index(&self, index: usize) -> KeyPath {
        let mut next = self.0.clone();
        next.push(Segment::Index(index));
        KeyPath(next)
    }
}

impl std::fmt::Display for KeyPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Line and column (both 1-based) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The line and column of the deepest part of `path` present in `text`: the key itself
/// when it exists, else the nearest table that should hold it.
pub fn locate(text: &str, path: &KeyPath) -> Option<(usize, usize)> {
    let doc = Document::parse(text).ok()?;
    let mut best: Option<usize> = None;
    let mut cursor = Cursor::Item(doc.as_item());
    for segment in &path.0 {
        let (next, span) = match (segment, cursor) {
            (Segment::Key(key), Cursor::Item(item)) => {
                let Some((k, v)) = item.as_table_like().and_then(|t| t.get_key_value(key)) else {
                    break;
                };
                (Cursor::Item(v), k.span().or_else(|| v.span()))
            }
            (Segment::Key(key), Cursor::Table(table)) => {
                let Some((k, v)) = table.get_key_value(key) else {
                    break;
                };
                (Cursor::Item(v), k.span().or_else(|| v.span()))
            }
            (Segment::Key(key), Cursor::Value(value)) => {
                let Some((k, v)) = value.as_inline_table().and_then(|t| t.get_key_value(key))
                else {
                    break;
                };
                (Cursor::Item(v), k.span().or_else(|| v.span()))
            }
            (Segment::Index(n), Cursor::Item(item)) => {
                if let Some(table) = item.as_array_of_tables().and_then(|t| t.get(*n)) {
                    (Cursor::Table(table), table.span())
                } else if let Some(value) = item.as_array().and_then(|a| a.get(*n)) {
                    (Cursor::Value(value), value.span())
                } else {
                    break;
                }
            }
            (Segment::Index(n), Cursor::Value(value)) => {
                let Some(v) = value.as_array().and_then(|a| a.get(*n)) else {
                    break;
                };
                (Cursor::Value(v), v.span())
            }
            (Segment::Index(_), Cursor::Table(_)) => break,
        };
        if let Some(span) = span {
            best = Some(span.start);
        }
        cursor = next;
    }
    best.map(|offset| line_column(text, offset))
}

/// The key path whose key or value covers byte `offset` (the deepest one), so that an
/// error serde reports at a value ("invalid type") can name its key.
pub fn key_at(text: &str, offset: usize) -> Option<KeyPath> {
    let doc = Document::parse(text).ok()?;
    let mut best = None;
    walk_table(doc.as_table(), &KeyPath::root(), offset, &mut best);
    best
}

fn covers(span: Option<std::ops::Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
}

fn walk_table(
    table: &dyn toml_edit::TableLike,
    at: &KeyPath,
    offset: usize,
    best: &mut Option<KeyPath>,
) {
    for (key, item) in table.iter() {
        let here = at.key(key);
        let key_span = table.key(key).and_then(|k| k.span());
        if covers(key_span, offset) || covers(item.span(), offset) {
            *best = Some(here.clone());
        }
        walk_item(item, &here, offset, best);
    }
}

fn walk_item(item: &Item, at: &KeyPath, offset: usize, best: &mut Option<KeyPath>) {
    match item {
        Item::Table(t) => walk_table(t, at, offset, best),
        Item::ArrayOfTables(tables) => {
            for (i, t) in tables.iter().enumerate() {
                walk_table(t, &at.index(i), offset, best);
            }
        }
        Item::Value(v) => walk_value(v, at, offset, best),
        Item::None => {}
    }
}

fn walk_value(value: &Value, at: &KeyPath, offset: usize, best: &mut Option<KeyPath>) {
    match value {
        Value::Array(array) => {
            for (i, v) in array.iter().enumerate() {
                let here = at.index(i);
                if covers(v.span(), offset) {
                    *best = Some(here.clone());
                }
                walk_value(v, &here, offset, best);
            }
        }
        Value::InlineTable(t) => walk_table(t, at, offset, best),
        _ => {}
    }
}

#[derive(Clone, Copy)]
enum Cursor<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_in_tables_inline_tables_and_arrays() {
        let text = "app = \"x\"\n[stages.prod]\nhosts = [\n  { address = \"a\" },\n  { address = \"b\" },\n]\n";
        let path = KeyPath::root()
            .key("stages")
            .key("prod")
            .key("hosts")
            .index(1)
            .key("address");
        assert_eq!(path.to_string(), "stages.prod.hosts[1].address");
        assert_eq!(locate(text, &path), Some((5, 5)));
        assert_eq!(locate(text, &KeyPath::root().key("app")), Some((1, 1)));
        // A missing key points at the nearest existing parent.
        assert_eq!(
            locate(text, &KeyPath::root().key("stages").key("prod").key("nope")),
            Some((2, 9))
        );
    }

    #[test]
    fn key_at_names_the_key_of_a_value() {
        let text = "app = \"x\"\nkeep_releases = \"five\"\n[stages.prod]\nhosts = [{ address = \"a\", port = \"p\" }]\n";
        let offset = text.find("\"five\"").unwrap();
        assert_eq!(key_at(text, offset).unwrap().to_string(), "keep_releases");
        let offset = text.find("\"p\"").unwrap();
        assert_eq!(
            key_at(text, offset).unwrap().to_string(),
            "stages.prod.hosts[0].port"
        );
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
    }
}
