//! Framework mode: a framework's own migrator (Django, Rails, Laravel, knex, Alembic),
//! driven through a small adapter program in the framework's language (see
//! `CONTRACT.md` beside this file). The adapter reports the migrations the database has
//! applied, in applied order, and the migrations a release's code knows; slipway records
//! what each deploy applied and undoes exactly those, newest first, with the code of the
//! release that has them. A schema is a set of applied migrations, never a count.
//!
//! - [`report`]: what an adapter printed, parsed and checked (pure).
//! - [`destructive`]: migrations that break the release still serving, and the warnings.
//! - [`plan`]: which migrations a rollback undoes or applies, and when it refuses (pure).
//! - [`run`]: running an adapter on the db host, and the deploy's migrate step.
//! - [`change`]: the schema part of a rollback or roll forward, planned then applied.

pub mod change;
pub mod destructive;
pub mod plan;
pub mod report;
pub mod run;
pub mod status;

use crate::config::{Framework, FrameworkMigrator};

pub use report::{Known, Report};

/// What an adapter is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Inspect,
    Migrate,
    Unapply,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Inspect => "inspect",
            Op::Migrate => "migrate",
            Op::Unapply => "unapply",
        }
    }
}

/// The adapter program for `framework`, embedded in the binary.
pub fn program(framework: Framework) -> &'static str {
    match framework {
        Framework::Django => include_str!("django.py"),
        Framework::Rails => include_str!("rails.rb"),
        Framework::Laravel => include_str!("laravel.php"),
        Framework::Knex => include_str!("knex.js"),
        Framework::Alembic => include_str!("alembic.py"),
    }
}

/// The shell command that runs the adapter for `op` in a release directory (the
/// caller changes into it). `runtime` is the user's own shell text, like a hook; the
/// program and the migration ids go through the quoting function.
pub fn command(migrator: &FrameworkMigrator, op: Op, ids: &[String]) -> String {
    crate::script::adapter(migrator, program(migrator.framework), op, ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_the_program_are_quoted_and_the_runtime_is_the_users() {
        let m = FrameworkMigrator {
            framework: Framework::Django,
            runtime: "python3".into(),
        };
        let c = command(&m, Op::Unapply, &["a.0002_x".into(), "b.$(touch x)".into()]);
        assert!(c.starts_with("SLIPWAY_OP=unapply SLIPWAY_MIGRATIONS='a.0002_x\nb.$(touch x)' python3 manage.py shell -c '"), "{c}");
    }

    #[test]
    fn every_framework_has_a_program() {
        for f in Framework::ALL {
            assert!(program(f).contains("slipway:"), "{}", f.as_str());
        }
    }
}
