//! The database URL: read from the deployer's environment, never shown. Everything the
//! db module reports goes through [`DbUrl::mask`], and the URL's parts reach a host only
//! on the stdin of a remote script (never on a command line, which `ps` shows).

use url::Url;

use crate::config::DbDriver;

/// A database URL and what must never be printed of it.
#[derive(Clone)]
pub struct DbUrl {
    url: Url,
    secrets: Vec<String>,
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DbUrl(***)")
    }
}

/// Where the database listens, as the db host sees it (the far end of a tunnel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp {
        host: String,
        port: u16,
    },
    /// A Unix socket file.
    Socket(String),
}

impl DbUrl {
    /// Reads the URL from `var` of the deployer's environment.
    pub fn from_env(var: &str, driver: DbDriver) -> Result<DbUrl, String> {
        let raw = std::env::var(var).map_err(|_| {
            format!(
                "the database URL is read from the environment variable {var}, which is not set (export {var}=postgres://USER:PASSWORD@HOST/DB, or set [database] url_env)"
            )
        })?;
        DbUrl::parse(&raw, driver).map_err(|m| format!("{var}: {m}"))
    }

    /// Parses `raw`. Messages never contain it.
    pub fn parse(raw: &str, driver: DbDriver) -> Result<DbUrl, String> {
        let mut secrets = vec![raw.to_string()];
        let url = Url::parse(raw).map_err(|e| format!("not a valid URL ({e})"))?;
        if let Some(p) = url.password() {
            secrets.push(p.to_string());
            if let Ok(decoded) = percent_decode(p) {
                secrets.push(decoded);
            }
        }
        secrets.retain(|s| s.len() >= 3);
        for s in &secrets {
            crate::redact::register(s);
        }
        let ok = match driver {
            DbDriver::Postgres => matches!(url.scheme(), "postgres" | "postgresql"),
            DbDriver::Mysql => matches!(url.scheme(), "mysql" | "mariadb"),
            DbDriver::Sqlite => false,
        };
        if !ok {
            return Err(format!(
                "the URL's scheme `{}` does not match driver = \"{}\"",
                url.scheme(),
                driver.as_str()
            ));
        }
        if url.path().trim_start_matches('/').is_empty() {
            return Err("the URL names no database (postgres://USER:PASSWORD@HOST/DB)".into());
        }
        let url = if url.scheme() == "mariadb" {
            let mut u = url;
            // sqlx knows mariadb as mysql.
            let text = u.as_str().replacen("mariadb://", "mysql://", 1);
            u = Url::parse(&text).map_err(|e| format!("not a valid URL ({e})"))?;
            u
        } else {
            url
        };
        Ok(DbUrl { url, secrets })
    }

    /// `text` with the URL and the password replaced by `***`.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "***");
        }
        out
    }

    /// The URL to connect with (only ever handed to sqlx).
    pub fn expose(&self) -> &str {
        self.url.as_str()
    }

    pub fn user(&self) -> String {
        percent_decode(self.url.username()).unwrap_or_default()
    }

    pub fn password(&self) -> String {
        self.url
            .password()
            .and_then(|p| percent_decode(p).ok())
            .unwrap_or_default()
    }

    pub fn database(&self) -> String {
        percent_decode(self.url.path().trim_start_matches('/')).unwrap_or_default()
    }

    fn param(&self, key: &str) -> Option<String> {
        self.url
            .query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    /// Where the database listens, from the db host's point of view.
    pub fn endpoint(&self, driver: DbDriver) -> Endpoint {
        let default_port = if driver == DbDriver::Mysql {
            3306
        } else {
            5432
        };
        let port = self.url.port().unwrap_or(default_port);
        match driver {
            DbDriver::Postgres => {
                // libpq's (and sqlx's) `?host=/dir`: a socket directory.
                if let Some(dir) = self.param("host").filter(|h| h.starts_with('/')) {
                    return Endpoint::Socket(format!(
                        "{}/.s.PGSQL.{}",
                        dir.trim_end_matches('/'),
                        self.param("port")
                            .and_then(|p| p.parse().ok())
                            .unwrap_or(port)
                    ));
                }
            }
            DbDriver::Mysql => {
                if let Some(sock) = self.param("socket") {
                    return Endpoint::Socket(sock);
                }
            }
            DbDriver::Sqlite => {}
        }
        Endpoint::Tcp {
            host: self.url.host_str().unwrap_or("localhost").to_string(),
            port,
        }
    }

    /// The same URL reaching the database through a local forward on 127.0.0.1:`port`.
    pub fn through_tunnel(&self, port: u16) -> DbUrl {
        let mut url = self.url.clone();
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "host" && k != "socket" && k != "port")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let _ = url.set_host(Some("127.0.0.1"));
        let _ = url.set_port(Some(port));
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
        DbUrl {
            url,
            secrets: self.secrets.clone(),
        }
    }

    /// The lines a host-side snapshot or restore script reads from its stdin: host (or
    /// socket), port, user, password, database. Passed on stdin, they appear in no
    /// command line and no file.
    pub fn stdin_lines(&self, driver: DbDriver) -> Result<String, String> {
        let (host, port) = match self.endpoint(driver) {
            Endpoint::Tcp { host, port } => (host, port.to_string()),
            // libpq wants the socket's directory and the port that names the file.
            Endpoint::Socket(path) if driver == DbDriver::Postgres => {
                let (dir, file) = path.rsplit_once('/').unwrap_or(("/", path.as_str()));
                let port = file.rsplit('.').next().unwrap_or("5432").to_string();
                (dir.to_string(), port)
            }
            Endpoint::Socket(path) => (path, String::new()),
        };
        let fields = [host, port, self.user(), self.password(), self.database()];
        if fields.iter().any(|f| f.contains('\n') || f.contains('\0')) {
            return Err("the database URL contains a newline or NUL in one of its parts".into());
        }
        Ok(fields.join("\n") + "\n")
    }
}

fn percent_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_the_url_and_the_password() {
        let u = DbUrl::parse(
            "postgres://app:s%40cret-pw@db1:5433/shop",
            DbDriver::Postgres,
        )
        .unwrap();
        assert_eq!(u.password(), "s@cret-pw");
        let text = format!("failed for {} with s@cret-pw and s%40cret-pw", u.expose());
        let masked = u.mask(&text);
        assert!(!masked.contains("cret"), "{masked}");
        assert_eq!(format!("{u:?}"), "DbUrl(***)");
        assert_eq!(
            u.endpoint(DbDriver::Postgres),
            Endpoint::Tcp {
                host: "db1".into(),
                port: 5433
            }
        );
    }

    #[test]
    fn socket_urls_and_tunnels() {
        let u = DbUrl::parse(
            "postgres://app:pw1@localhost/shop?host=/srv/pg&sslmode=disable",
            DbDriver::Postgres,
        )
        .unwrap();
        assert_eq!(
            u.endpoint(DbDriver::Postgres),
            Endpoint::Socket("/srv/pg/.s.PGSQL.5432".into())
        );
        let t = u.through_tunnel(40001);
        assert_eq!(
            t.expose(),
            "postgres://app:pw1@127.0.0.1:40001/shop?sslmode=disable"
        );
        let m = DbUrl::parse("mysql://a:pw2@h/d?socket=/s/m.sock", DbDriver::Mysql).unwrap();
        assert_eq!(
            m.endpoint(DbDriver::Mysql),
            Endpoint::Socket("/s/m.sock".into())
        );
    }

    #[test]
    fn refuses_a_scheme_of_another_driver_without_echoing_the_url() {
        let e = DbUrl::parse("mysql://a:topsecret@h/d", DbDriver::Postgres).unwrap_err();
        assert!(!e.contains("topsecret"));
    }
}
