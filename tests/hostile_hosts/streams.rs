//! A host that answers too much, forever, or never: slipway stops reading at its cap and
//! ends every step within its timeout, naming the host; the honest hosts are untouched.

use std::time::Duration;

use super::{Bench, TIMEOUT};

/// A command whose steps each wait at most [`TIMEOUT`] (probe or lock, then the unlock
/// on the others, then connection close) ends well within this.
fn stall_bound() -> Duration {
    TIMEOUT * 3 + Duration::from_secs(8)
}

#[test]
fn floods_and_stalls_end_within_the_cap_and_the_timeout() {
    let mut b = Bench::new(1);
    let liar = b.liar();

    // 1. A 2 GiB line on stdout (never stored: `head -c | tr`): the cap stops it.
    let before = b.honest();
    b.lie("flood");
    b.run("2 GiB line on stdout (status)", &["status", "test"])
        .fails()
        .blames(&liar)
        .says(&["more than 32.0 MiB on stdout"])
        .within(Duration::from_secs(30));
    b.assert_honest_unchanged(&before, "flood");

    // 2. The same during a deploy (the lock script carries the probe): refused before
    //    anything was uploaded anywhere.
    let before = b.honest();
    b.run("2 GiB line on stdout (deploy)", &["deploy", "test"])
        .fails()
        .blames(&liar)
        .says(&["more than 32.0 MiB on stdout"])
        .within(Duration::from_secs(40));
    b.assert_honest_unchanged(&before, "flood deploy");

    // 3. 2 GiB on stderr.
    b.lie("flood-stderr");
    b.run("2 GiB on stderr (status)", &["status", "test"])
        .fails()
        .blames(&liar)
        .says(&["more than 32.0 MiB on stderr"])
        .within(Duration::from_secs(30));

    // 4. Output that never ends (`yes`).
    b.lie("endless");
    b.run("output that never ends (status)", &["status", "test"])
        .fails()
        .blames(&liar)
        .says(&["more than 32.0 MiB on stdout"])
        .within(Duration::from_secs(30));

    // 5. A command that never returns (sleep 600): cut by [timeouts] command.
    b.lie("stall");
    b.run("command that never returns (status)", &["status", "test"])
        .fails()
        .blames(&liar)
        .says(&["no answer within 4s"])
        .within(stall_bound());

    // 6. The same during a deploy: the others' locks are released, nothing moved.
    let before = b.honest();
    b.run("command that never returns (deploy)", &["deploy", "test"])
        .fails()
        .blames(&liar)
        .says(&["lock", "no answer within 4s"])
        .within(stall_bound());
    b.assert_honest_unchanged(&before, "stall deploy");

    // 7. A shell that stops itself (SIGSTOP): the same.
    b.lie("stop");
    b.run("shell stopped by SIGSTOP (releases)", &["releases", "test"])
        .fails()
        .blames(&liar)
        .says(&["no answer within 4s"])
        .within(stall_bound());

    // 8. The stalled host in --json: the events stay valid JSON and name the host.
    b.lie("stall");
    let ran = b.run("stall with --json (status)", &["--json", "status", "test"]);
    ran.fails().within(stall_bound());
    let events = ran.json_lines();
    let last = events.last().expect("a result event");
    assert_eq!(last["event"], "result", "{events:?}");
    assert!(
        last["message"].as_str().unwrap_or("").contains(&liar),
        "{last}"
    );

    // Honest again: everything works, the lying host included.
    b.lie("honest");
    let before = b.honest();
    b.s.app_file("index.html", "<h1>after the floods</h1>\n");
    b.run("honest again: deploy", &["deploy", "test"]).expect(0);
    b.assert_honest_deployed(&before, "honest again");
    b.print_table("floods and stalls");
}
