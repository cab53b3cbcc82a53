//! The test app's migrations, in each database's dialect.
//!
//! v1: users (with two rows) and posts. v2: adds a table (tags) and a column
//! (users.email, filled). v3: v2 plus a good migration and a broken one whose first
//! statement succeeds (so MariaDB, where DDL commits at once, is left half-migrated).

use crate::scenario::{Kind, Mig};

fn pk(k: Kind) -> &'static str {
    match k {
        Kind::Postgres => "SERIAL PRIMARY KEY",
        Kind::MariaDb => "INT AUTO_INCREMENT PRIMARY KEY",
        Kind::Sqlite => "INTEGER PRIMARY KEY",
    }
}

fn text(k: Kind) -> &'static str {
    match k {
        Kind::MariaDb => "VARCHAR(200)",
        _ => "TEXT",
    }
}

pub fn v1(k: Kind) -> Vec<Mig> {
    vec![
        (
            1,
            "create_users",
            format!(
                "CREATE TABLE users (id {}, name {} NOT NULL);\nINSERT INTO users (name) VALUES ('ada'), ('bob');\n",
                pk(k),
                text(k)
            ),
            Some("DROP TABLE users;\n".into()),
        ),
        (
            2,
            "create_posts",
            format!(
                "CREATE TABLE posts (id {}, user_id INT NOT NULL, title {} NOT NULL);\n",
                pk(k),
                text(k)
            ),
            Some("DROP TABLE posts;\n".into()),
        ),
    ]
}

pub fn v2(k: Kind) -> Vec<Mig> {
    let fill = match k {
        Kind::MariaDb => "UPDATE users SET email = CONCAT(name, '@example.com');",
        _ => "UPDATE users SET email = name || '@example.com';",
    };
    let mut m = v1(k);
    m.push((
        3,
        "create_tags",
        format!(
            "CREATE TABLE tags (id {}, name {} NOT NULL);\n",
            pk(k),
            text(k)
        ),
        Some("DROP TABLE tags;\n".into()),
    ));
    m.push((
        4,
        "add_users_email",
        format!("ALTER TABLE users ADD COLUMN email {};\n{fill}\n", text(k)),
        Some("ALTER TABLE users DROP COLUMN email;\n".into()),
    ));
    m
}

/// v2 whose migration 4 has no down script.
pub fn v2_without_down(k: Kind) -> Vec<Mig> {
    let mut m = v2(k);
    m[3].3 = None;
    m
}

pub fn v3_broken(k: Kind) -> Vec<Mig> {
    let mut m = v2(k);
    m.push((
        5,
        "create_comments",
        format!(
            "CREATE TABLE comments (id {}, body {} NOT NULL);\n",
            pk(k),
            text(k)
        ),
        Some("DROP TABLE comments;\n".into()),
    ));
    m.push((
        6,
        "broken",
        "CREATE TABLE half_done (id INT);\nALTER TABLE no_such_table ADD COLUMN x INT;\n".into(),
        Some("DROP TABLE half_done;\n".into()),
    ));
    m
}
