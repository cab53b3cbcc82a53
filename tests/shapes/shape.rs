//! A generated release: what it is ([`Shape`]), the proptest strategy that makes one,
//! how it is written into a source directory, and what the host must hold afterwards
//! (or the message that must refuse it).
//!
//! What slipway promises (README, "What a release may contain"):
//! - regular files arrive byte-identical, mode 0755 if the owner may execute them in the
//!   source and 0644 otherwise; directories (also empty ones) arrive 0755;
//! - symlinks arrive as symlinks with their target as written, whatever it points at
//!   (inside the release, outside it, absolute, nothing);
//! - hard links in the source arrive as separate files with the same content (like
//!   `git archive`); they are not promised to share an inode;
//! - names may hold any UTF-8 but control characters; a name that is not UTF-8, a name
//!   or symlink target with a control character, a socket or a fifo is refused at the
//!   source, naming the path (escaped), exit 2.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::target::Via;

/// One name: a path component, as bytes (it may not be UTF-8).
pub type Name = Vec<u8>;
/// A relative path, component by component.
pub type RelPath = Vec<Name>;

#[derive(Clone)]
pub enum Item {
    File {
        path: RelPath,
        content: Vec<u8>,
        mode: u32,
    },
    Dir {
        path: RelPath,
        mode: u32,
    },
    Symlink {
        path: RelPath,
        target: Vec<u8>,
    },
    /// A hard link to the file `to` (if the shape holds one there).
    HardLink {
        path: RelPath,
        to: RelPath,
    },
}

/// One entry a release cannot carry, put into an otherwise carriable shape.
#[derive(Clone)]
pub enum Flaw {
    NotUtf8(RelPath),
    ControlChar(RelPath),
    Socket(RelPath),
    Fifo(RelPath),
    BadTarget { path: RelPath, target: Vec<u8> },
}

#[derive(Clone)]
pub struct Shape {
    pub items: Vec<Item>,
    pub flaw: Option<Flaw>,
    pub via: Via,
    /// After it deploys: change a file, flip an executable bit, drop a symlink, and
    /// deploy again (an incremental upload that hard-links the rest on the host).
    pub redeploy: bool,
}

/// An entry of the planned source tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File { content: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: Vec<u8> },
}

/// The source tree a shape makes: items whose path collides with an earlier one (a
/// file where a directory is needed, a name taken twice) are left out.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    pub nodes: BTreeMap<RelPath, Node>,
    /// (link, original): both regular files in the source, one inode.
    pub hard_links: Vec<(RelPath, RelPath)>,
}

/// What a deploy of a shape must do.
#[derive(Debug)]
pub enum Expect {
    Deploy,
    /// Refused at the source, exit 2, the message containing this text.
    Refuse(String),
}

impl Tree {
    pub fn plan(items: &[Item]) -> Tree {
        let mut tree = Tree::default();
        for item in items {
            let path = match item {
                Item::File { path, .. }
                | Item::Dir { path, .. }
                | Item::Symlink { path, .. }
                | Item::HardLink { path, .. } => path,
            };
            if path.is_empty() || !tree.room_for(path) {
                continue;
            }
            let node = match item {
                Item::File { content, mode, .. } => Node::File {
                    content: content.clone(),
                    mode: *mode,
                },
                Item::Dir { mode, .. } => Node::Dir { mode: *mode },
                Item::Symlink { target, .. } => Node::Symlink {
                    target: target.clone(),
                },
                Item::HardLink { to, .. } => match tree.nodes.get(to) {
                    Some(file @ Node::File { .. }) if !tree.is_link(to) => {
                        tree.hard_links.push((path.clone(), to.clone()));
                        file.clone()
                    }
                    _ => continue,
                },
            };
            tree.make_parents(path);
            tree.nodes.insert(path.clone(), node);
        }
        tree
    }

    fn is_link(&self, path: &RelPath) -> bool {
        self.hard_links.iter().any(|(l, _)| l == path)
    }

    /// Whether `path` is free and each of its parents is a directory or free.
    pub fn room_for(&self, path: &RelPath) -> bool {
        if self.nodes.contains_key(path) {
            return false;
        }
        (1..path.len()).all(|n| matches!(self.nodes.get(&path[..n]), None | Some(Node::Dir { .. })))
    }

    fn make_parents(&mut self, path: &RelPath) {
        for n in 1..path.len() {
            self.nodes
                .entry(path[..n].to_vec())
                .or_insert(Node::Dir { mode: 0o755 });
        }
    }

    /// Writes the tree into `root` (an empty directory).
    pub fn write(&self, root: &Path) {
        for (path, node) in &self.nodes {
            let full = join(root, path);
            if self.is_link(path) {
                continue;
            }
            match node {
                Node::Dir { .. } => fs::create_dir(&full),
                Node::File { content, mode } => fs::write(&full, content)
                    .and_then(|()| fs::set_permissions(&full, fs::Permissions::from_mode(*mode))),
                Node::Symlink { target } => symlink(std::ffi::OsStr::from_bytes(target), &full),
            }
            .unwrap_or_else(|e| panic!("write {}: {e}", full.display()));
        }
        for (link, original) in &self.hard_links {
            fs::hard_link(join(root, original), join(root, link))
                .unwrap_or_else(|e| panic!("hard link {}: {e}", show(link)));
        }
        // Directory modes last: children first, so a mode cannot stop the writing.
        for (path, node) in self.nodes.iter().rev() {
            if let Node::Dir { mode } = node {
                fs::set_permissions(join(root, path), fs::Permissions::from_mode(*mode))
                    .expect("chmod dir");
            }
        }
    }

    /// Whether the tree holds something to ship (slipway refuses a source of
    /// directories alone).
    pub fn has_content(&self) -> bool {
        self.nodes.values().any(|n| !matches!(n, Node::Dir { .. }))
    }

    /// Checks that `release` (the deployed release, as this machine sees it) holds
    /// exactly this tree as slipway promises to carry it.
    pub fn verify(&self, release: &Path) -> Result<(), String> {
        let mut found = BTreeMap::new();
        collect(release, &mut Vec::new(), &mut found)?;
        let mut problems = Vec::new();
        for (path, node) in &self.nodes {
            let Some(got) = found.remove(path) else {
                problems.push(format!("{} is missing", show(path)));
                continue;
            };
            let want = match node {
                Node::File { content, mode } => Node::File {
                    content: content.clone(),
                    mode: if mode & 0o100 != 0 { 0o755 } else { 0o644 },
                },
                Node::Dir { .. } => Node::Dir { mode: 0o755 },
                Node::Symlink { target } => Node::Symlink {
                    target: target.clone(),
                },
            };
            if got != want {
                problems.push(format!(
                    "{}: expected {}, found {}",
                    show(path),
                    describe(&want),
                    describe(&got)
                ));
            }
        }
        for path in found.keys() {
            problems.push(format!(
                "{} is in the release but not in the source",
                show(path)
            ));
        }
        for (link, original) in &self.hard_links {
            let ino = |p: &RelPath| fs::symlink_metadata(join(release, p)).map(|m| m.ino()).ok();
            if ino(link).is_some() && ino(link) == ino(original) {
                problems.push(format!(
                    "{} and {} share an inode: hard links are documented to arrive as separate files",
                    show(link),
                    show(original)
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            problems.truncate(20);
            Err(problems.join("\n"))
        }
    }

    /// The next version of the tree: the first file's content changed, the last file's
    /// executable bit flipped, the first symlink gone.
    pub fn changed(&self) -> Tree {
        let mut next = self.clone();
        let files: Vec<RelPath> = next
            .nodes
            .iter()
            .filter(|(p, n)| matches!(n, Node::File { .. }) && !self.is_link(p))
            .map(|(p, _)| p.clone())
            .filter(|p| !self.hard_links.iter().any(|(_, o)| o == p))
            .collect();
        if let Some(Node::File { content, .. }) = files.first().and_then(|p| next.nodes.get_mut(p))
        {
            content.extend_from_slice(b"+changed");
        }
        if let Some(Node::File { mode, .. }) = files.last().and_then(|p| next.nodes.get_mut(p)) {
            *mode ^= 0o100;
        }
        let link = next
            .nodes
            .iter()
            .find(|(_, n)| matches!(n, Node::Symlink { .. }))
            .map(|(p, _)| p.clone());
        if let Some(link) = link {
            next.nodes.remove(&link);
        }
        next
    }
}

/// Reads a deployed release back: every entry but slipway's own (`REVISION`,
/// `.slipway/`), as nodes with the modes found.
fn collect(
    dir: &Path,
    prefix: &mut RelPath,
    out: &mut BTreeMap<RelPath, Node>,
) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().as_bytes().to_vec();
        if prefix.is_empty() && (name == b"REVISION" || name == b".slipway") {
            continue;
        }
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        prefix.push(name);
        let node = if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(|e| e.to_string())?;
            Node::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else if meta.is_dir() {
            collect(&path, prefix, out)?;
            Node::Dir {
                mode: meta.mode() & 0o7777,
            }
        } else if meta.is_file() {
            Node::File {
                content: fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?,
                mode: meta.mode() & 0o7777,
            }
        } else {
            return Err(format!("{} is a special file", show(prefix)));
        };
        out.insert(prefix.clone(), node);
        prefix.pop();
    }
    Ok(())
}

fn describe(node: &Node) -> String {
    match node {
        Node::File { content, mode } => format!(
            "file {mode:04o} of {} bytes {:?}",
            content.len(),
            String::from_utf8_lossy(&content[..content.len().min(40)])
        ),
        Node::Dir { mode } => format!("dir {mode:04o}"),
        Node::Symlink { target } => format!("symlink -> \"{}\"", escaped(target)),
    }
}

pub fn join(root: &Path, path: &RelPath) -> PathBuf {
    let mut full = root.to_path_buf();
    for name in path {
        full.push(std::ffi::OsStr::from_bytes(name));
    }
    full
}

/// A path as slipway shows it: `/`-joined, escaped where it cannot be printed.
pub fn show(path: &RelPath) -> String {
    escaped(&path.join(&b'/'))
}

/// The escaping slipway's messages use for a name that is not UTF-8: Rust's string
/// escapes, `\xNN` for each byte outside valid UTF-8.
pub fn escaped(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.extend(chunk.valid().chars().flat_map(char::escape_debug));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

impl Flaw {
    pub fn path(&self) -> &RelPath {
        match self {
            Flaw::NotUtf8(p) | Flaw::ControlChar(p) | Flaw::Socket(p) | Flaw::Fifo(p) => p,
            Flaw::BadTarget { path, .. } => path,
        }
    }

    /// Puts the flaw into the written source at `root`. A flaw whose path collides with
    /// the tree is moved to the top level.
    pub fn write(&self, root: &Path, tree: &Tree) -> RelPath {
        let mut path = self.path().clone();
        if !tree.room_for(&path)
            || path[..path.len() - 1]
                .iter()
                .enumerate()
                .any(|(i, _)| !matches!(tree.nodes.get(&path[..=i]), Some(Node::Dir { .. })))
        {
            path = vec![path.last().cloned().unwrap_or_default()];
        }
        let full = join(root, &path);
        match self {
            Flaw::NotUtf8(_) | Flaw::ControlChar(_) => fs::write(&full, b"x").expect("write flaw"),
            Flaw::Socket(_) => {
                let listener = std::os::unix::net::UnixListener::bind(&full)
                    .unwrap_or_else(|e| panic!("bind {}: {e}", full.display()));
                // The socket file stays when the listener closes.
                drop(listener);
            }
            Flaw::Fifo(_) => {
                let status = std::process::Command::new("mkfifo")
                    .arg(&full)
                    .status()
                    .expect("run mkfifo");
                assert!(status.success(), "mkfifo {}", full.display());
            }
            Flaw::BadTarget { target, .. } => {
                symlink(std::ffi::OsStr::from_bytes(target), &full).expect("symlink")
            }
        }
        path
    }

    /// The text the refusal of this flaw at `path` must contain.
    pub fn message(&self, path: &RelPath) -> String {
        let text = || String::from_utf8(path.join(&b'/')).expect("a UTF-8 path");
        match self {
            Flaw::NotUtf8(_) => format!("path \"{}\" is not valid UTF-8", show(path)),
            Flaw::ControlChar(_) => {
                format!("path {:?} contains a newline or control character", text())
            }
            Flaw::Socket(_) => format!("source: {} is a socket,", text()),
            Flaw::Fifo(_) => format!("source: {} is a fifo,", text()),
            Flaw::BadTarget { .. } => format!("source: symlink {} has an unusable target", text()),
        }
    }
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::File {
                path,
                content,
                mode,
            } => write!(
                f,
                "file \"{}\" {mode:04o} {} bytes",
                show(path),
                content.len()
            ),
            Item::Dir { path, mode } => write!(f, "dir \"{}\" {mode:04o}", show(path)),
            Item::Symlink { path, target } => {
                write!(f, "symlink \"{}\" -> \"{}\"", show(path), escaped(target))
            }
            Item::HardLink { path, to } => {
                write!(f, "hard link \"{}\" => \"{}\"", show(path), show(to))
            }
        }
    }
}

impl fmt::Debug for Flaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Flaw::NotUtf8(p) => write!(f, "name not UTF-8 \"{}\"", show(p)),
            Flaw::ControlChar(p) => write!(f, "name with a control character \"{}\"", show(p)),
            Flaw::Socket(p) => write!(f, "socket \"{}\"", show(p)),
            Flaw::Fifo(p) => write!(f, "fifo \"{}\"", show(p)),
            Flaw::BadTarget { path, target } => write!(
                f,
                "symlink \"{}\" with target \"{}\"",
                show(path),
                escaped(target)
            ),
        }
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Shape via {:?}{}, {} items{}:",
            self.via,
            if self.redeploy {
                ", then changed and redeployed"
            } else {
                ""
            },
            self.items.len(),
            match &self.flaw {
                Some(flaw) => format!(", flaw: {flaw:?}"),
                None => String::new(),
            }
        )?;
        for item in &self.items {
            writeln!(f, "  {item:?}")?;
        }
        Ok(())
    }
}

// ---- generation ----

/// Names a release may carry: spaces, quotes, shell syntax, backslashes, globs, leading
/// dashes, UTF-8 of every width (combining marks, zero-width and line-separator
/// characters, a byte-order mark).
const ATOMS: &[&str] = &[
    "a",
    "b.txt",
    "README",
    "with space",
    " lead",
    "trail ",
    "two  spaces",
    "it's",
    "say \"hi\"",
    "$(touch pwned)",
    "`id`",
    "$HOME",
    "${x:-y}",
    "a;b",
    "x|y",
    "&&",
    "*",
    "?",
    "[x]",
    "-rf",
    "--",
    "-",
    "~root",
    "#h",
    "%s%n",
    "back\\slash",
    "\\",
    "\\n",
    "{a,b}",
    "!",
    ">out",
    "<in",
    "'",
    "\"",
    ".hidden",
    "..dots",
    "...",
    "a.b.c",
    "=",
    "@",
    ":colon",
    ",comma",
    "+plus",
    "café",
    "日本語",
    "😀",
    "n\u{303}",
    "\u{200b}",
    "line\u{2028}sep",
    "\u{feff}bom",
    "ǅ",
    "ﬁ",
    "Ω≈ç",
    "\u{a0}nbsp",
];

/// Names the walk treats specially or slipway reserves: never generated.
fn reserved(name: &[u8], top: bool) -> bool {
    matches!(name, b"." | b".." | b".git" | b".gitignore" | b".ignore")
        || (top && matches!(name, b"REVISION" | b".slipway"))
}

fn name() -> impl Strategy<Value = Name> {
    prop::collection::vec(prop::sample::select(ATOMS), 1..=3).prop_map(|atoms| {
        let mut n = atoms.concat().into_bytes();
        if reserved(&n, true) {
            n.insert(0, b'x');
        }
        n
    })
}

fn rel_path(depth: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = RelPath> {
    prop::collection::vec(name(), depth)
}

const FILE_MODES: &[u32] = &[
    0o644, 0o600, 0o664, 0o640, 0o444, 0o755, 0o700, 0o775, 0o555, 0o744, 0o4755, 0o1777,
];
const DIR_MODES: &[u32] = &[0o755, 0o700, 0o750, 0o775, 0o2775];
const DEEP_UNITS: &[&str] = &["d", "é", "日", "😀", "a b", "$(x)"];
const SHORT_PARENTS: &[&str] = &["", "tmp", "run dir", "ü"];
const NOT_UTF8: &[&[u8]] = &[b"caf\xe9.txt", b"\xff\xfe", b"ok\x80"];
const CONTROL: &[&[u8]] = &[
    b"new\nline",
    b"tab\there",
    b"esc\x1b[31m",
    b"cr\r",
    b"del\x7f",
];
const SOCKETS: &[&str] = &["dev.sock", "a sock", "ü.sock"];
const FIFOS: &[&str] = &["queue", "fifo $(x)"];
const BAD_TARGETS: &[&[u8]] = &[b"bad\xfftarget", b"line\nbreak", b"tab\tx"];

fn file_mode() -> impl Strategy<Value = u32> {
    prop::sample::select(FILE_MODES)
}

fn dir_mode() -> impl Strategy<Value = u32> {
    prop::sample::select(DIR_MODES)
}

fn content(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

fn prefixed(prefix: &str, path: RelPath) -> RelPath {
    let mut p = vec![prefix.as_bytes().to_vec()];
    p.extend(path);
    p
}

/// One file.
fn one_file() -> impl Strategy<Value = Vec<Item>> {
    (rel_path(1..=2), content(3000), file_mode()).prop_map(|(path, content, mode)| {
        vec![Item::File {
            path,
            content,
            mode,
        }]
    })
}

/// Empty files only.
fn empty_files() -> impl Strategy<Value = Vec<Item>> {
    prop::collection::vec((rel_path(1..=3), file_mode()), 1..=12).prop_map(|files| {
        files
            .into_iter()
            .map(|(path, mode)| Item::File {
                path,
                content: Vec::new(),
                mode,
            })
            .collect()
    })
}

/// Many small files, in a few directories.
fn many_small() -> impl Strategy<Value = Vec<Item>> {
    (
        prop::collection::vec(name(), 1..=6),
        20usize..=150,
        any::<u32>(),
        file_mode(),
    )
        .prop_map(|(dirs, n, salt, mode)| {
            (0..n)
                .map(|i| Item::File {
                    path: vec![
                        b"many".to_vec(),
                        dirs[i % dirs.len()].clone(),
                        format!("f{i}.txt").into_bytes(),
                    ],
                    content: format!("{salt}:{i}\n").repeat(i % 5).into_bytes(),
                    mode: if i % 11 == 0 { mode } else { 0o644 },
                })
                .collect()
        })
}

/// One deep path: long names (ASCII or multi-byte UTF-8, each at most 255 bytes) down
/// to a file, `total` bytes in all (at most 4,000).
fn deep() -> impl Strategy<Value = Vec<Item>> {
    (
        // With "deep/" in front: at most 4,000 bytes.
        100usize..=3990,
        prop::sample::select(DEEP_UNITS),
        1usize..=255,
        content(100),
    )
        .prop_map(|(total, unit, width, content)| {
            let repeat = (width / unit.len()).max(1);
            let segment = unit.repeat(repeat).into_bytes();
            let mut path: RelPath = Vec::new();
            let mut len = 0;
            while len + segment.len() < total {
                len += segment.len() + if path.is_empty() { 0 } else { 1 };
                path.push(segment.clone());
            }
            if path.is_empty() {
                path.push(b"f".to_vec());
            }
            // The last name is the file; it differs from the directories.
            if let Some(last) = path.last_mut() {
                last.truncate(last.len().saturating_sub(4));
                while std::str::from_utf8(last).is_err() {
                    last.pop();
                }
                last.extend_from_slice(b".txt");
            }
            vec![Item::File {
                path: prefixed("deep", path),
                content,
                mode: 0o644,
            }]
        })
}

/// Files with names that mean something to a shell, a glob, a checksum list, or are
/// UTF-8 of every width.
fn odd_names() -> impl Strategy<Value = Vec<Item>> {
    prop::collection::vec((rel_path(1..=3), content(64), file_mode()), 1..=10).prop_map(|files| {
        files
            .into_iter()
            .map(|(path, content, mode)| Item::File {
                path,
                content,
                mode,
            })
            .collect()
    })
}

/// Symlinks: to a file of the release, relative, absolute, dangling, outside the
/// release, to a directory, with odd or long targets.
fn symlinks() -> impl Strategy<Value = Vec<Item>> {
    let target = prop_oneof![
        Just(b"target.txt".to_vec()),
        Just(b"../links/target.txt".to_vec()),
        Just(b".".to_vec()),
        Just(b"..".to_vec()),
        Just(b"/etc/hostname".to_vec()),
        Just(b"/".to_vec()),
        Just(b"/nonexistent/x y".to_vec()),
        Just(b"no such file".to_vec()),
        Just(b"../../../../etc/passwd".to_vec()),
        Just(b"../shared/log".to_vec()),
        Just(b"dir//double/slash/".to_vec()),
        Just("t/".repeat(300).into_bytes()),
        name(),
        rel_path(1..=4).prop_map(|p| p.join(&b'/')),
    ];
    prop::collection::vec((name(), target), 1..=6).prop_map(|links| {
        let mut items = vec![Item::File {
            path: vec![b"links".to_vec(), b"target.txt".to_vec()],
            content: b"the target\n".to_vec(),
            mode: 0o644,
        }];
        for (name, target) in links {
            items.push(Item::Symlink {
                path: vec![b"links".to_vec(), name],
                target,
            });
        }
        items
    })
}

/// A file and hard links to it (one in another directory).
fn hard_links() -> impl Strategy<Value = Vec<Item>> {
    (
        name(),
        content(200),
        file_mode(),
        prop::collection::vec(rel_path(1..=2), 1..=3),
    )
        .prop_map(|(name, content, mode, links)| {
            let original = vec![b"hard".to_vec(), name];
            let mut items = vec![Item::File {
                path: original.clone(),
                content,
                mode,
            }];
            for link in links {
                items.push(Item::HardLink {
                    path: prefixed("hard", link),
                    to: original.clone(),
                });
            }
            items
        })
}

/// Executables (and files that are not), among them setuid and sticky modes.
fn executables() -> impl Strategy<Value = Vec<Item>> {
    prop::collection::vec((name(), content(100), file_mode()), 1..=8).prop_map(|files| {
        files
            .into_iter()
            .map(|(name, mut content, mode)| {
                content.splice(0..0, b"#!/bin/sh\n".iter().copied());
                Item::File {
                    path: vec![b"bin".to_vec(), name],
                    content,
                    mode,
                }
            })
            .collect()
    })
}

/// Directories without files (nested too).
fn empty_dirs() -> impl Strategy<Value = Vec<Item>> {
    prop::collection::vec((rel_path(1..=3), dir_mode()), 1..=5).prop_map(|dirs| {
        dirs.into_iter()
            .map(|(path, mode)| Item::Dir {
                path: prefixed("empty", path),
                mode,
            })
            .collect()
    })
}

fn group() -> impl Strategy<Value = Vec<Item>> {
    prop_oneof![
        one_file(),
        empty_files(),
        many_small(),
        deep(),
        odd_names(),
        symlinks(),
        hard_links(),
        executables(),
        empty_dirs(),
    ]
}

fn flaw() -> impl Strategy<Value = Flaw> {
    // Sockets need a short path (a socket address holds about 100 bytes).
    let short_parent = prop::sample::select(SHORT_PARENTS).prop_map(|p| {
        if p.is_empty() {
            Vec::new()
        } else {
            vec![p.as_bytes().to_vec()]
        }
    });
    fn at(parent: RelPath, name: &[u8]) -> RelPath {
        let mut p = parent;
        p.push(name.to_vec());
        p
    }
    prop_oneof![
        (rel_path(0..=2), prop::sample::select(NOT_UTF8))
            .prop_map(|(parent, name)| Flaw::NotUtf8(at(parent, name))),
        (rel_path(0..=2), prop::sample::select(CONTROL))
            .prop_map(|(parent, name)| Flaw::ControlChar(at(parent, name))),
        (short_parent, prop::sample::select(SOCKETS))
            .prop_map(|(parent, name)| Flaw::Socket(at(parent, name.as_bytes()))),
        (rel_path(0..=2), prop::sample::select(FIFOS))
            .prop_map(|(parent, name)| Flaw::Fifo(at(parent, name.as_bytes()))),
        (rel_path(0..=1), prop::sample::select(BAD_TARGETS)).prop_map(|(parent, target)| {
            Flaw::BadTarget {
                path: at(parent, b"badlink"),
                target: target.to_vec(),
            }
        }),
    ]
}

pub fn shape() -> impl Strategy<Value = Shape> {
    (
        prop_oneof![
            1 => group(),
            4 => prop::collection::vec(group(), 2..=4).prop_map(|g| g.concat()),
        ],
        prop::option::weighted(0.2, flaw()),
        prop::bool::weighted(0.17),
        prop::bool::weighted(0.3),
    )
        .prop_map(|(items, flaw, ssh, redeploy)| Shape {
            items,
            flaw,
            via: if ssh { Via::Ssh } else { Via::Local },
            redeploy,
        })
}

/// Writes `shape` into the empty source directory `root`: the tree it plans, and its
/// flaw. Returns the tree and what a deploy of it must do.
pub fn write_source(shape: &Shape, root: &Path) -> (Tree, Expect) {
    let tree = Tree::plan(&shape.items);
    tree.write(root);
    let expect = match &shape.flaw {
        Some(flaw) => {
            let at = flaw.write(root, &tree);
            Expect::Refuse(flaw.message(&at))
        }
        None if !tree.has_content() => Expect::Refuse("holds no files".into()),
        None => Expect::Deploy,
    };
    (tree, expect)
}
