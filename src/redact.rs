//! Credentials out of everything slipway shows, logs or stores. Frameworks print their
//! connection settings in errors (Rails' `:password=>"..."`, URLs with user-info,
//! `PGPASSWORD=...`); whatever a host or a framework prints passes through [`scrub`]
//! before it reaches the terminal, `--json`, the audit log or a release record.

use std::sync::{Mutex, OnceLock};

const MASK: &str = "***";

/// Keys whose value is a secret, matched case-insensitively anywhere in a word
/// (`PGPASSWORD`, `DB_PASSWORD`, `:password`, `"password"`).
const KEYS: [&str; 5] = ["password", "passwd", "secret", "pwd", "token"];

fn known() -> &'static Mutex<Vec<String>> {
    static KNOWN: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    KNOWN.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remembers a secret slipway knows (a database password, a URL): it is masked wherever
/// it appears, whatever surrounds it. Short values are ignored (they would mask words).
pub fn register(secret: &str) {
    if secret.len() < 4 {
        return;
    }
    if let Ok(mut k) = known().lock()
        && !k.iter().any(|s| s == secret)
    {
        k.push(secret.to_string());
        // Longest first, so that a URL is masked whole before its password.
        k.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `text` with every known secret, URL password and `password=`-style value masked.
pub fn scrub(text: &str) -> String {
    let mut out = text.to_string();
    if let Ok(k) = known().lock() {
        for s in k.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
    }
    scrub_values(&scrub_urls(&out))
}

/// `url` as it may be shown: scheme, host and port, with the path and query (where
/// webhooks carry their tokens) and any user-info masked:
/// `https://hooks.example.com/services/T0/B0/x?k=v` → `https://hooks.example.com/***`.
pub fn url(url: &url::Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    if url.path() == "/" && url.query().is_none() && url.fragment().is_none() {
        shown.push('/');
    } else {
        shown.push_str("/***");
    }
    shown
}

/// Every string in a JSON value, scrubbed.
pub fn scrub_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            let clean = scrub(s);
            if clean != *s {
                *s = clean;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(scrub_json),
        serde_json::Value::Object(o) => o.values_mut().for_each(scrub_json),
        _ => {}
    }
}

/// `scheme://user:password@host` → `scheme://user:***@host`.
fn scrub_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || "\"'<>`".contains(c))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(a), Some(c)) if c < a => {
                out.push_str(&authority[..=c]);
                out.push_str(MASK);
                out.push_str(&authority[a..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// `password=x`, `password: x`, `:password=>"x"`, `"password": "x"`, `PGPASSWORD=x`.
fn scrub_values(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Bytes, not str: `i` steps byte by byte, also inside multi-byte characters (a
        // key is ASCII, so where one matches, `i` is a character boundary).
        let Some(key) = KEYS
            .iter()
            .find(|k| lower.as_bytes()[i..].starts_with(k.as_bytes()))
        else {
            i += 1;
            continue;
        };
        let mut j = i + key.len();
        // A file's name, not a key: `/etc/passwd: No such file` has no secret in it.
        if i > 0 && matches!(bytes[i - 1], b'/' | b'.') {
            i = j;
            continue;
        }
        // The rest of the key's word (`password_hash` is not a password).
        if j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
            i = j;
            continue;
        }
        while j < bytes.len() && (bytes[j] == b'"' || bytes[j] == b'\'') {
            j += 1;
        }
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        let sep = if text[j..].starts_with("=>") {
            2
        } else if j < bytes.len() && (bytes[j] == b'=' || bytes[j] == b':') {
            1
        } else {
            i = j.max(i + 1);
            continue;
        };
        j += sep;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        let (start, end) = match bytes.get(j) {
            Some(&q) if q == b'"' || q == b'\'' => {
                let close = text[j + 1..]
                    .find(q as char)
                    .map_or(bytes.len(), |e| j + 1 + e);
                (j + 1, close)
            }
            _ => {
                let e = text[j..]
                    .find(|c: char| c.is_whitespace() || ",;&)}]\"'\\".contains(c))
                    .map_or(bytes.len(), |e| j + e);
                (j, e)
            }
        };
        if end > start {
            out.push_str(&text[copied..start]);
            out.push_str(MASK);
            copied = end;
        }
        i = end.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_ending_in_a_key_word_is_not_a_secret() {
        let text = "cannot open ../../etc/passwd: No such file or directory";
        assert_eq!(scrub(text), text);
        assert_eq!(scrub("~/.secret: missing"), "~/.secret: missing");
        assert_eq!(scrub("DB_PASSWORD: hunter22"), "DB_PASSWORD: ***");
    }

    #[test]
    fn text_with_multi_byte_characters_is_scrubbed_without_a_panic() {
        let plain = "source: ü.sock is a socket, which a release cannot carry";
        assert_eq!(scrub(plain), plain);
        assert_eq!(
            scrub("日本語 password=hunter2 😀 token: é"),
            "日本語 password=*** 😀 token: ***"
        );
    }

    #[test]
    fn masks_the_forms_frameworks_print() {
        for (input, secret) in [
            (
                r#"{:adapter=>"postgresql", :password=>"hunter22", :host=>"db"}"#,
                "hunter22",
            ),
            (
                "could not connect to postgres://app:hunter22@db:5432/shop",
                "hunter22",
            ),
            ("PGPASSWORD=hunter22 pg_dump shop", "hunter22"),
            (r#"{"password": "hunter22", "user": "app"}"#, "hunter22"),
            ("host=db password=hunter22 dbname=shop", "hunter22"),
            ("  password: hunter22\n  host: db", "hunter22"),
            ("'PASSWORD': 'hunter22',", "hunter22"),
            ("DB_PASSWORD=hunter22\nDB_HOST=db", "hunter22"),
            ("mysql://root:hunter22@127.0.0.1/x?a=b", "hunter22"),
        ] {
            let out = scrub(input);
            assert!(!out.contains(secret), "{input} -> {out}");
            assert!(out.contains(MASK), "{input} -> {out}");
        }
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        for text in [
            "migration catalog.0002_item_price failed: relation \"x\" does not exist",
            "password_hash column added",
            "https://example.com/path",
            "user@host: exit status 1",
            "ünïcödé \u{fffd} ✓ 日本語 secret",
        ] {
            assert_eq!(scrub(text), text);
        }
    }

    #[test]
    fn a_url_is_shown_without_its_path_query_or_credentials() {
        let shown = |u: &str| url(&url::Url::parse(u).unwrap());
        assert_eq!(
            shown("https://hooks.example.com/services/T0/B0/Zq9?token=abc"),
            "https://hooks.example.com/***"
        );
        assert_eq!(
            shown("http://u:pw@127.0.0.1:9000/hook"),
            "http://127.0.0.1:9000/***"
        );
        assert_eq!(shown("http://[::1]:8080/"), "http://[::1]:8080/");
    }

    #[test]
    fn registered_secrets_are_masked_anywhere() {
        register("Zq9-unusual-value");
        assert_eq!(scrub("token was Zq9-unusual-value."), "token was ***.");
        register("ab");
        assert_eq!(scrub("ab"), "ab");
    }
}
