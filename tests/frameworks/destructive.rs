//! A migration that drops what the release still serving reads: the deploy names it in a
//! warning before migrating (the old code keeps running until every host has switched),
//! `check` names it while it is pending for the live code, and a deploy whose
//! migrations only add prints no such warning.

use crate::scenario::{Fw, Kind, Scenario};

const WARNING: &str =
    "the release still serving (old code) may fail until every host runs the new code";

/// v5's migration: drops v2's `items.price`.
fn drops_price(fw: Fw) -> &'static str {
    match fw {
        Fw::Django => "catalog.0003_remove_item_price",
        Fw::Rails => "20240105000001",
        _ => unreachable!("only the Django and Rails apps have a v5"),
    }
}

fn a_deploy_that_drops_a_column_warns_before_migrating(fw: Fw) {
    let mut s = Scenario::new(fw, Kind::Postgres);
    s.app("v1", false);
    s.ok(&["deploy", "test"]);
    s.app("v2", false);
    let adding = s.ok(&["deploy", "test"]);
    assert!(
        !adding.all().contains(WARNING),
        "adding a column and a table warns of nothing:\n{}",
        adding.all()
    );
    let r2 = s.current();
    let check = s.ok(&["check", "test"]);
    assert!(!check.all().contains(WARNING), "{}", check.all());

    s.app("v5", false);
    let dropping = s.ok(&["deploy", "test"]);
    let r5 = s.current();
    assert_ne!(r2, r5);
    let expected = format!(
        "migration {} drops column items.price: {WARNING}",
        drops_price(fw)
    );
    // Progress and warnings go to stderr, in the order they happen.
    let text = &dropping.stderr;
    let at = text
        .find(&expected)
        .unwrap_or_else(|| panic!("the deploy names the migration and the column:\n{text}"));
    let migrated = text.find(" migrate ok").unwrap_or_else(|| panic!("{text}"));
    assert!(at < migrated, "the warning comes before migrating:\n{text}");

    // Back to v2 (the column returns), then v5's code without its migration: `check`
    // names the pending migration that would break the release serving.
    s.ok(&["rollback", "test"]);
    assert_eq!(s.current(), r2);
    s.ok(&["rollback", "test", "--to", r5.as_str(), "--skip-schema"]);
    assert_eq!(s.current(), r5);
    let check = s.ok(&["check", "test"]);
    assert!(check.stdout.contains(&expected), "{}", check.all());
    assert!(check.stdout.contains("1 pending"), "{}", check.all());
    s.assert_no_password_anywhere();
}

#[test]
fn django_a_deploy_that_drops_a_column_warns_before_migrating() {
    a_deploy_that_drops_a_column_warns_before_migrating(Fw::Django)
}

#[test]
fn rails_a_deploy_that_drops_a_column_warns_before_migrating() {
    a_deploy_that_drops_a_column_warns_before_migrating(Fw::Rails)
}
