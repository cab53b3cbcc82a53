//! Fixed release shapes, too large or too particular to generate: 100,000 small files, one
//! 3 GiB file, sockets and fifos, paths at and over the 4,000-byte limit.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::shape::{Item, Tree};
use crate::target::{Run, Target};

fn deployed(run: Run) -> String {
    assert_eq!(run.code, 0, "the deploy failed: {}", run.describe());
    run.release_id()
        .unwrap_or_else(|| panic!("no release id: {}", run.describe()))
}

/// A deploy that must be refused at the source: exit 2, `message` on stderr, nothing
/// changed under `deploy_to`.
fn refused(target: &Target, message: &str) {
    let before = target.snapshot();
    let run = target.deploy();
    assert_eq!(run.code, 2, "{:?}: {}", target.via, run.describe());
    assert!(
        run.stderr.contains(message),
        "{:?}: expected {message:?} in {}",
        target.via,
        run.describe()
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    let after = target.snapshot();
    assert!(
        before == after,
        "{:?}: a refused deploy changed the host: {:?}",
        target.via,
        before.differences(&after)
    );
}

#[test]
fn a_hundred_thousand_small_files_deploy_through_local_and_ssh() {
    let local = Target::local(2);
    let ssh = Target::ssh(2);
    let items: Vec<Item> = (0..100_000)
        .map(|i| Item::File {
            path: vec![
                format!("d{:03}", i / 500).into_bytes(),
                format!("f{i}.txt").into_bytes(),
            ],
            content: format!("{i}\n").into_bytes(),
            mode: if i % 1000 == 0 { 0o755 } else { 0o644 },
        })
        .collect();
    let tree = Tree::plan(&items);
    tree.write(&local.source());
    ssh.use_source_of(&local);
    for target in [&local, &ssh] {
        let started = Instant::now();
        let id = deployed(target.deploy_within(Duration::from_secs(300)));
        let took = started.elapsed();
        let release = target.current_release().expect("a current release");
        assert!(release.ends_with(&id));
        tree.verify(&release)
            .unwrap_or_else(|e| panic!("{:?}: {e}", target.via));
        println!(
            "100,000 files through {:?}: deployed in {:.1} s",
            target.via,
            took.as_secs_f64()
        );
    }
}

#[test]
fn a_3_gib_file_arrives_byte_identical_through_ssh() {
    const SIZE: u64 = 3 << 30;
    let ssh = Target::ssh(1);
    // Sparse at the source, with bytes at its start, middle and end so that a truncated
    // or shifted copy cannot pass for it.
    let big = ssh.source().join("big.bin");
    let file = fs::File::create(&big).expect("create big.bin");
    file.set_len(SIZE).expect("size big.bin");
    for (offset, bytes) in [
        (0, &b"start"[..]),
        (SIZE / 2 + 7, b"middle"),
        (SIZE - 4, b"end\n"),
    ] {
        file.write_all_at(bytes, offset).expect("write big.bin");
    }
    drop(file);
    let want = b2sum_here(&big);

    let started = Instant::now();
    deployed(ssh.deploy_within(Duration::from_secs(600)));
    let took = started.elapsed();
    let on_host = ssh
        .on_host_sh("b2sum /srv/app/current/big.bin && stat -c '%s %a' /srv/app/current/big.bin");
    let mut lines = on_host.lines();
    let got = lines.next().and_then(|l| l.split_whitespace().next());
    assert_eq!(got, Some(want.as_str()), "b2sum on the host: {on_host}");
    assert_eq!(lines.next(), Some(format!("{SIZE} 644").as_str()));
    println!(
        "3 GiB file through ssh: deployed in {:.1} s (bound: 600 s), BLAKE2b on the host matches",
        took.as_secs_f64()
    );
}

fn b2sum_here(path: &Path) -> String {
    let out = Command::new("b2sum").arg(path).output().expect("run b2sum");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

#[test]
fn sockets_and_fifos_in_the_source_are_refused_naming_them() {
    for target in [Target::local(2), Target::ssh(2)] {
        let source = target.source();
        fs::write(source.join("index.html"), "v1\n").unwrap();
        fs::create_dir(source.join("tmp")).unwrap();
        deployed(target.deploy());

        let socket = std::os::unix::net::UnixListener::bind(source.join("tmp/dev.sock")).unwrap();
        fs::write(source.join("index.html"), "v2\n").unwrap();
        refused(
            &target,
            "source: tmp/dev.sock is a socket, which a release cannot carry (remove it, or add it to [source] exclude or .gitignore)",
        );
        drop(socket);
        fs::remove_file(source.join("tmp/dev.sock")).unwrap();

        let status = Command::new("mkfifo")
            .arg(source.join("tmp/work queue"))
            .status()
            .expect("mkfifo");
        assert!(status.success());
        refused(
            &target,
            "source: tmp/work queue is a fifo, which a release cannot carry",
        );

        // The remedy the message names works.
        fs::write(source.join(".gitignore"), "/tmp/work queue\n").unwrap();
        deployed(target.deploy());
        let release = target.current_release().unwrap();
        assert_eq!(
            fs::read_to_string(release.join("index.html")).unwrap(),
            "v2\n"
        );
        assert!(!release.join("tmp/work queue").exists());
    }
}

/// A path of `len` bytes: names of 250 bytes (the last one shorter), `unit` repeated.
fn deep_path(len: usize, unit: char) -> String {
    let mut parts = Vec::new();
    let mut left = len;
    while left > 251 {
        parts.push(unit.to_string().repeat(250));
        left -= 251;
    }
    parts.push("f".repeat(left));
    let path = parts.join("/");
    assert_eq!(path.len(), len);
    path
}

#[test]
fn a_path_over_4000_bytes_is_refused_naming_it() {
    for target in [Target::local(2), Target::ssh(2)] {
        let source = target.source();
        fs::write(source.join("index.html"), "v1\n").unwrap();
        deployed(target.deploy());
        let long = deep_path(4001, 'd');
        fs::create_dir_all(source.join(&long).parent().unwrap()).unwrap();
        fs::write(source.join(&long), "too deep").unwrap();
        refused(
            &target,
            &format!(
                "source: path {long} is 4001 bytes long, more than the 4000 a release path may have"
            ),
        );
    }
}

#[test]
fn a_4000_byte_path_deploys_and_is_linked_under_a_long_deploy_to() {
    // deploy_to's release directory plus the path exceed PATH_MAX (4,096) as absolute
    // paths: the hosts' commands must reach the files by relative paths.
    let target = Target::local_padded(2, 400);
    assert!(target.deploy_to().len() > 400);
    let source = target.source();
    let deep = deep_path(4000, 'd');
    fs::create_dir_all(source.join(&deep).parent().unwrap()).unwrap();
    fs::write(source.join(&deep), "deep\n").unwrap();
    fs::write(source.join("index.html"), "v1\n").unwrap();
    let first = deployed(target.deploy());
    fs::write(source.join("index.html"), "v2\n").unwrap();
    let second = deployed(target.deploy());

    let in_release = |id: &str, script: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("cd -- \"$1\" && {script}"))
            .arg("sh")
            .arg(format!("{}/releases/{id}", target.deploy_to()))
            .arg(&deep)
            .output()
            .expect("run sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(in_release(&second, "cat -- \"$2\""), "deep\n");
    assert_eq!(in_release(&second, "cat index.html"), "v2\n");
    // The second deploy linked the unchanged deep file from the first release.
    assert_eq!(
        in_release(&first, "stat -c %i -- \"$2\""),
        in_release(&second, "stat -c %i -- \"$2\"")
    );
}

#[test]
fn a_whole_release_refused_after_an_incremental_one_stops_the_deploy_before_the_switch() {
    // A host whose checkers reject everything: the incremental upload is refused (the
    // deployer then sends the whole release), and so is the whole release. The deploy
    // must stop at the upload, not go on to switch.
    let target = Target::local(2);
    let source = target.source();
    fs::write(source.join("index.html"), "v1\n").unwrap();
    fs::write(source.join("app.js"), "same\n").unwrap();
    let first = deployed(target.deploy());
    fs::write(source.join("index.html"), "v2\n").unwrap();

    let bin = target.source().parent().unwrap().join("liar-bin");
    fs::create_dir_all(&bin).unwrap();
    for tool in ["b2sum", "sha256sum"] {
        let path = bin.join(tool);
        fs::write(
            &path,
            "#!/bin/sh\necho \"$0: checksum did NOT match\" >&2\nexit 1\n",
        )
        .unwrap();
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = target.slipway_with_env(
        &["deploy", "t"],
        "",
        &[("PATH", path)],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    assert!(
        run.stderr.contains("sending the whole release"),
        "{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("does not match its manifest"),
        "{}",
        run.describe()
    );
    assert!(
        !run.stderr.contains("switching"),
        "went on to switch: {}",
        run.describe()
    );
    let current = target.current_release().unwrap();
    assert!(current.ends_with(&first));
    assert_eq!(
        fs::read_to_string(current.join("index.html")).unwrap(),
        "v1\n"
    );
}

#[test]
fn a_shared_dir_under_a_symlink_of_the_source_is_refused_before_it_writes_through_it() {
    // `[shared] dirs = ["log/app"]` and a source whose `log` links outside the release:
    // replacing log/app by a link into shared/ would remove what the link points at.
    let target = Target::local(2);
    let outside = target.source().parent().unwrap().join("outside");
    fs::create_dir_all(outside.join("app")).unwrap();
    fs::write(outside.join("app/keep.txt"), "not the release's\n").unwrap();
    let source = target.source();
    fs::write(source.join("index.html"), "v1\n").unwrap();
    std::os::unix::fs::symlink(&outside, source.join("log")).unwrap();
    let before = target.snapshot();
    let run = target.slipway_within(
        &["deploy", "t"],
        "[shared]\ndirs = [\"log/app\"]\n",
        Duration::from_secs(60),
    );
    assert_eq!(run.code, 2, "{}", run.describe());
    assert!(
        run.stderr.contains(&format!(
            "source: [shared] path log/app lies under the symlink log of the source (-> {})",
            outside.display()
        )),
        "{}",
        run.describe()
    );
    assert_eq!(
        fs::read_to_string(outside.join("app/keep.txt")).unwrap(),
        "not the release's\n"
    );
    assert!(
        before == target.snapshot(),
        "the refused deploy changed the host"
    );
}

#[test]
fn a_file_named_dash_deploys_and_a_rollback_target_with_it_modified_is_refused() {
    // coreutils' checkers read a file named `-` as stdin: the check lists name it `./-`.
    let target = Target::local(3);
    let source = target.source();
    fs::write(source.join("-"), "dash v1\n").unwrap();
    fs::write(source.join("index.html"), "v1\n").unwrap();
    let first = deployed(target.deploy());
    assert_eq!(
        fs::read_to_string(target.current_release().unwrap().join("-")).unwrap(),
        "dash v1\n"
    );
    fs::write(source.join("index.html"), "v2\n").unwrap();
    deployed(target.deploy());

    // The rollback target's `-` edited on the host (same size): refused, naming it.
    let edited = target.on_host(&format!("releases/{first}/-"));
    fs::write(&edited, "dash v0\n").unwrap();
    let run = target.slipway_within(&["rollback", "t"], "", Duration::from_secs(60));
    assert_eq!(run.code, 1, "{}", run.describe());
    assert!(
        run.stderr.contains("does not match its manifest") && run.stderr.contains("-: FAILED"),
        "{}",
        run.describe()
    );
}
