//! Release backups: `archive_pruned = N` archives releases before pruning; `rollback
//! --to ID` restores an archived release whose directory is gone, verifying it.

use crate::scenario::Scenario;

fn archives(s: &Scenario, i: usize) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(s.app_path(i, "backups/releases"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn pruned_releases_are_archived_and_restored_by_rollback_to() {
    let mut s = Scenario::new().hosts(2).keep_releases(1).shared_dir("log");
    s.extra = "archive_pruned = 2\nimmutable = true\n".into();
    let mut ids = Vec::new();
    for v in 1..=5 {
        s.app_file("index.html", &format!("v{v}"));
        ids.push(s.deploy_ok());
    }
    // keep_releases = 1: v5 live and v4 (rollback target) kept; v1..v3 pruned, the
    // newest two archives kept (v2, v3).
    for i in 0..s.host_count() {
        assert_eq!(
            s.releases(i),
            vec![ids[3].clone(), ids[4].clone()],
            "host {i}"
        );
        assert_eq!(
            archives(&s, i),
            vec![format!("{}.tar.zst", ids[1]), format!("{}.tar.zst", ids[2])],
            "host {i}"
        );
    }
    let check = s.slipway(&["check", "test"]);
    assert!(
        check.all_output().contains("zstd is installed"),
        "{}",
        check.all_output()
    );

    // The archived v3 comes back and is verified before the switch.
    let run = s.rollback(&["--to", &ids[2], "--reason", "restore from archive"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    assert!(run.stderr.contains("restored release"), "{}", run.stderr);
    s.assert_current_everywhere(&ids[2]);
    for i in 0..s.host_count() {
        let text = std::fs::read_to_string(s.app_path(i, "current/index.html")).expect("read");
        assert_eq!(text, "v3");
    }

    // An archive that does not exist: refused, nothing switched.
    let run = s.rollback(&["--to", &ids[0]]);
    assert_eq!(run.code, 1, "{}", run.all_output());
    s.assert_current_everywhere(&ids[2]);
}

#[test]
fn a_restored_release_whose_archive_was_tampered_with_is_refused() {
    let mut s = Scenario::new().hosts(2).keep_releases(1);
    s.extra = "archive_pruned = 3\n".into();
    let mut ids = Vec::new();
    for v in 1..=3 {
        s.app_file("index.html", &format!("v{v}"));
        ids.push(s.deploy_ok());
    }
    // v1 is archived. Rebuild host 2's archive of v1 with a modified index.html.
    let work = s.dir().join("tamper");
    std::fs::create_dir_all(&work).expect("mkdir");
    let archive = s.app_path(1, &format!("backups/releases/{}.tar.zst", ids[0]));
    let sh = format!(
        "set -e; cd {w}; zstd -dc {a} | tar -x; echo evil > {id}/index.html; tar -cf - {id} | zstd -q -f -o {a}",
        w = work.display(),
        a = archive.display(),
        id = ids[0]
    );
    assert!(
        std::process::Command::new("sh")
            .args(["-c", &sh])
            .status()
            .expect("sh")
            .success()
    );
    let run = s.rollback(&["--to", &ids[0]]);
    assert_eq!(run.code, 1, "{}", run.all_output());
    assert!(
        run.stderr.contains("index.html") && run.stderr.contains("does not match its manifest"),
        "{}",
        run.stderr
    );
    s.assert_current_everywhere(&ids[2]);
}
