//! The hash chain of a host's audit log, and its check (`slipway log --verify`).
//!
//! Each line of `.slipway/log.jsonl` begins with `"seq"` (1, 2, 3, ... along the chain)
//! and `"prev"`: the SHA-256 (hex) of the bytes of the line before it, without its
//! newline, or [`GENESIS`] for the first line of a log. Both are computed on the host by
//! the script that appends (src/script/audit.rs). Lines written by slipway versions
//! before the chain have neither field: a chain starts at the first line that has them,
//! and chains to the older line before it.
//!
//! What a check proves: no line of the chain was changed, removed, inserted or moved,
//! except at its end. What it cannot prove: that the end is still there (the last
//! entries can be cut off), or that the whole chain was not rewritten by someone who
//! can write the file. Comparing the head (last entry and its hash) with one kept
//! elsewhere (printed by `log --verify`, kept in CI artifacts) covers both.

use serde::Serialize;
use sha2::Digest;

/// The `prev` of the first line of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The last entry of a chain: what to keep elsewhere to detect a cut or a rewrite later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Head {
    /// Its line number in the file.
    pub line: usize,
    pub seq: u64,
    /// SHA-256 of the line's bytes: the `prev` the next entry will carry.
    pub hash: String,
}

/// What is wrong at the first line where the chain breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Breach {
    Changed,
    Removed,
    Inserted,
    Reordered,
}

impl Breach {
    pub fn as_str(self) -> &'static str {
        match self {
            Breach::Changed => "changed",
            Breach::Removed => "removed",
            Breach::Inserted => "inserted",
            Breach::Reordered => "reordered",
        }
    }
}

/// The first break of a chain: the line (1-based) it names and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    pub line: usize,
    pub kind: Breach,
    pub message: String,
}

/// The check of one host's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub lines: usize,
    /// Lines before the chain's first entry (written before slipway chained its log).
    pub unchained: usize,
    /// The line where the chain starts (`None`: no chained line yet).
    pub chain_from: Option<usize>,
    pub head: Option<Head>,
    pub broken: Option<Break>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Line<'a> {
    bytes: &'a [u8],
    /// `None`: not a JSON object.
    fields: Option<(Option<u64>, Option<String>)>,
}

impl Line<'_> {
    fn seq(&self) -> Option<u64> {
        self.fields.as_ref().and_then(|f| f.0)
    }
    fn prev(&self) -> Option<&str> {
        self.fields.as_ref().and_then(|f| f.1.as_deref())
    }
}

/// Checks the chain of one log (the file's text) and names its first break.
pub fn verify(text: &str) -> ChainReport {
    let mut raw: Vec<&[u8]> = text.as_bytes().split(|b| *b == b'\n').collect();
    if raw.last().is_some_and(|l| l.is_empty()) {
        raw.pop();
    }
    let lines: Vec<Line> = raw
        .iter()
        .map(|bytes| Line {
            bytes,
            fields: serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .filter(|v| v.is_object())
                .map(|v| (v["seq"].as_u64(), v["prev"].as_str().map(str::to_string))),
        })
        .collect();
    let hash = |i: usize| sha256_hex(lines[i].bytes);
    let mut report = ChainReport {
        lines: lines.len(),
        unchained: 0,
        chain_from: None,
        head: None,
        broken: None,
    };
    let Some(start) = lines.iter().position(|l| l.seq().is_some()) else {
        report.unchained = lines.len();
        return report;
    };
    report.unchained = start;
    report.chain_from = Some(start + 1);
    report.broken = first_break(&lines, start, &hash);
    let last = lines.len() - 1;
    if let Some(seq) = lines[last].seq() {
        report.head = Some(Head {
            line: last + 1,
            seq,
            hash: hash(last),
        });
    }
    report
}

fn first_break(lines: &[Line], start: usize, hash: &dyn Fn(usize) -> String) -> Option<Break> {
    let at = |i: usize, kind: Breach, message: String| {
        Some(Break {
            line: i + 1,
            kind,
            message,
        })
    };
    // The chain's first entry: entry 1, chained to the line before it (or the genesis).
    let seq = lines[start].seq().unwrap_or(0);
    let expected = if start == 0 {
        GENESIS.to_string()
    } else {
        hash(start - 1)
    };
    if seq != 1 {
        return at(
            start,
            Breach::Removed,
            format!(
                "the chain's first line is entry {seq}: entries 1 to {} before it were removed",
                seq.saturating_sub(1)
            ),
        );
    }
    if lines[start].prev() != Some(expected.as_str()) {
        return if start > 0 && lines[start].prev() == Some(GENESIS) {
            at(
                0,
                Breach::Inserted,
                format!(
                    "line {} starts the log's chain, yet {start} line(s) precede it: inserted",
                    start + 1
                ),
            )
        } else if start == 0 {
            at(
                0,
                Breach::Removed,
                "the first line chains to a line that is no longer there: lines at the start of the log were removed".into(),
            )
        } else {
            at(
                start - 1,
                Breach::Changed,
                format!(
                    "line {start} no longer has the hash that line {} (the chain's first entry) recorded for it: it was changed, or lines just before line {} were removed or inserted",
                    start + 1,
                    start + 1
                ),
            )
        };
    }
    for i in start + 1..lines.len() {
        let want = lines[i - 1].seq().unwrap_or(0) + 1;
        let Some(seq) = lines[i].seq() else {
            let what = if lines[i].fields.is_none() {
                "is not a readable record"
            } else {
                "is not a chain entry (no seq/prev)"
            };
            return at(
                i,
                if lines[i].fields.is_none() {
                    Breach::Changed
                } else {
                    Breach::Inserted
                },
                format!("line {} {what}: changed or inserted", i + 1),
            );
        };
        if seq == want {
            if lines[i].prev() == Some(hash(i - 1).as_str()) {
                continue;
            }
            return at(
                i - 1,
                Breach::Changed,
                format!(
                    "line {i} (entry {}) was changed: line {} records a different hash for it",
                    want - 1,
                    i + 1
                ),
            );
        }
        if seq > want {
            if let Some(j) = (i + 1..lines.len()).find(|&j| lines[j].seq() == Some(want)) {
                return at(
                    i,
                    Breach::Reordered,
                    format!(
                        "line {} is entry {seq}, but entry {want} comes later, at line {}: lines were reordered",
                        i + 1,
                        j + 1
                    ),
                );
            }
            return at(
                i,
                Breach::Removed,
                if seq == want + 1 {
                    format!(
                        "entry {want} is missing between line {i} and line {}: removed",
                        i + 1
                    )
                } else {
                    format!(
                        "entries {want} to {} are missing between line {i} and line {}: removed",
                        seq - 1,
                        i + 1
                    )
                },
            );
        }
        // An entry number that was already used.
        let earlier = (start..i).find(|&j| lines[j].seq() == Some(seq));
        return at(
            i,
            if earlier.is_some() {
                Breach::Inserted
            } else {
                Breach::Reordered
            },
            match earlier {
                Some(j) if lines[j].bytes == lines[i].bytes => {
                    format!("line {} repeats line {}: inserted", i + 1, j + 1)
                }
                Some(j) => format!(
                    "line {} claims entry {seq}, which line {} already is: inserted",
                    i + 1,
                    j + 1
                ),
                None => format!(
                    "line {} is entry {seq}, after entry {}: out of order",
                    i + 1,
                    want - 1
                ),
            },
        );
    }
    None
}

/// Checks a log against a head saved earlier (its entry number and line hash, as
/// `log --verify` printed it): that entry must still be in the log, unchanged. A log
/// cut before it, or rewritten up to it, fails here even when its chain is intact.
pub fn check_saved_head(text: &str, seq: u64, hash: &str) -> Option<Break> {
    let lines: Vec<&[u8]> = text
        .as_bytes()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let found = lines.iter().enumerate().find(|(_, l)| {
        serde_json::from_slice::<serde_json::Value>(l)
            .ok()
            .and_then(|v| v["seq"].as_u64())
            == Some(seq)
    });
    match found {
        None => Some(Break {
            line: lines.len() + 1,
            kind: Breach::Removed,
            message: format!(
                "entry {seq}, the head saved earlier (sha256 {hash}), is no longer in the log: it was cut or rewritten"
            ),
        }),
        Some((i, line)) => {
            let now = sha256_hex(line);
            (now != hash).then(|| Break {
                line: i + 1,
                kind: Breach::Changed,
                message: format!(
                    "line {} is entry {seq}, but not the one saved earlier (sha256 {hash}, now {now}): the log was rewritten up to it",
                    i + 1
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chained log of `n` entries, optionally after some older unchained lines.
    fn chain(older: usize, n: usize) -> Vec<String> {
        let mut lines: Vec<String> = (0..older)
            .map(|i| format!("{{\"action\":\"old{i}\"}}"))
            .collect();
        for seq in 1..=n {
            let prev = lines
                .last()
                .map(|l| sha256_hex(l.as_bytes()))
                .unwrap_or_else(|| GENESIS.to_string());
            lines.push(format!(
                "{{\"seq\":{seq},\"prev\":\"{prev}\",\"action\":\"deploy\",\"n\":{seq}}}"
            ));
        }
        lines
    }

    fn text(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn broken(lines: &[String]) -> Break {
        verify(&text(lines)).broken.expect("a break")
    }

    #[test]
    fn an_intact_chain_verifies_and_names_its_head() {
        let lines = chain(0, 5);
        let r = verify(&text(&lines));
        assert_eq!(r.broken, None);
        assert_eq!(r.chain_from, Some(1));
        let head = r.head.unwrap();
        assert_eq!((head.line, head.seq), (5, 5));
        assert_eq!(head.hash, sha256_hex(lines[4].as_bytes()));
        assert_eq!(verify("").broken, None);
    }

    #[test]
    fn older_unchained_lines_are_counted_and_the_chain_starts_after_them() {
        let r = verify(&text(&chain(3, 2)));
        assert_eq!((r.unchained, r.chain_from, r.broken), (3, Some(4), None));
        let r = verify(&text(&chain(2, 0)));
        assert_eq!((r.unchained, r.chain_from, r.head), (2, None, None));
    }

    #[test]
    fn an_edited_line_is_named() {
        let mut lines = chain(0, 5);
        lines[2] = lines[2].replace("deploy", "rollback");
        let b = broken(&lines);
        assert_eq!((b.line, b.kind), (3, Breach::Changed), "{b:?}");
        // After older unchained lines.
        let mut lines = chain(1, 4);
        lines[3] = lines[3].replace("\"n\":3", "\"n\":4");
        assert_eq!(broken(&lines).line, 4);
        // Edited into garbage.
        let mut lines = chain(0, 4);
        lines[2] = "not json".into();
        let b = broken(&lines);
        assert_eq!((b.line, b.kind), (3, Breach::Changed), "{b:?}");
    }

    #[test]
    fn a_removed_line_is_named() {
        let mut lines = chain(0, 5);
        lines.remove(2);
        let b = broken(&lines);
        assert_eq!((b.line, b.kind), (3, Breach::Removed), "{b:?}");
        assert!(b.message.contains("entry 3 is missing"), "{}", b.message);
        // The first entries removed.
        let mut lines = chain(0, 5);
        lines.drain(0..2);
        let b = broken(&lines);
        assert_eq!((b.line, b.kind), (1, Breach::Removed), "{b:?}");
        // The older line just before the chain removed.
        let mut lines = chain(2, 3);
        lines.remove(1);
        assert_eq!(broken(&lines).kind, Breach::Changed);
    }

    #[test]
    fn an_inserted_line_is_named() {
        let mut lines = chain(0, 5);
        lines.insert(3, "{\"action\":\"deploy\",\"forged\":true}".into());
        let b = broken(&lines);
        assert_eq!((b.line, b.kind), (4, Breach::Inserted), "{b:?}");
        let mut lines = chain(0, 5);
        let copy = lines[1].clone();
        lines.insert(3, copy);
        let b = broken(&lines);
        assert_eq!((b.line, b.kind), (4, Breach::Inserted), "{b:?}");
        // Older lines put in front of a log that began chained.
        let mut lines = chain(0, 3);
        lines.insert(0, "{\"action\":\"forged\"}".into());
        assert_eq!(broken(&lines).kind, Breach::Inserted);
    }

    #[test]
    fn reordered_lines_are_named() {
        let mut lines = chain(0, 5);
        lines.swap(1, 2);
        let b = broken(&lines);
        assert_eq!((b.line, b.kind), (2, Breach::Reordered), "{b:?}");
        let mut lines = chain(0, 6);
        let moved = lines.remove(1);
        lines.insert(4, moved);
        let b = broken(&lines);
        assert_eq!((b.line, b.kind), (2, Breach::Reordered), "{b:?}");
    }

    #[test]
    fn a_saved_head_shows_a_cut_and_a_rewrite() {
        let lines = chain(0, 5);
        let head = verify(&text(&lines)).head.unwrap();
        assert_eq!(check_saved_head(&text(&lines), head.seq, &head.hash), None);
        // More entries since: still fine.
        let longer = chain(0, 7);
        assert_eq!(check_saved_head(&text(&longer), head.seq, &head.hash), None);
        // Cut before the saved head.
        let b = check_saved_head(&text(&lines[..3]), head.seq, &head.hash).unwrap();
        assert_eq!((b.line, b.kind), (4, Breach::Removed));
        // Rewritten as a whole, the chain recomputed: intact, yet not the saved head.
        let mut forged = chain(0, 5);
        forged[1] = forged[1].replace("deploy", "rollback");
        let mut rechained = Vec::new();
        for (i, l) in forged.iter().enumerate() {
            let prev = rechained
                .last()
                .map(|p: &String| sha256_hex(p.as_bytes()))
                .unwrap_or_else(|| GENESIS.to_string());
            let body = &l[l.find(",\"action\"").unwrap()..];
            rechained.push(format!("{{\"seq\":{},\"prev\":\"{prev}\"{body}", i + 1));
        }
        assert_eq!(verify(&text(&rechained)).broken, None);
        let b = check_saved_head(&text(&rechained), head.seq, &head.hash).unwrap();
        assert_eq!((b.line, b.kind), (5, Breach::Changed), "{b:?}");
    }

    #[test]
    fn a_cut_tail_is_not_a_break_but_changes_the_head() {
        let lines = chain(0, 5);
        let r = verify(&text(&lines[..3]));
        assert_eq!(r.broken, None);
        assert_ne!(
            r.head.unwrap().hash,
            verify(&text(&lines)).head.unwrap().hash
        );
    }
}
