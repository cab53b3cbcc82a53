//! The release stream compressed on the wire: zstd where the host has it, gzip where it
//! does not, nothing where it does not pay; every file arrives byte for byte.

use std::fs;

use crate::scenario::{Run, Scenario};
use crate::trees::{assert_same_tree, noise, result, shadow_commands};

/// Hides zstd from host `i` (every command whose name holds `zstd`).
fn hide_zstd(s: &Scenario, i: usize) {
    shadow_commands(s, i, "without-zstd", |name| name.contains("zstd"), &[]);
    let seen = s.fleet().ssh_ok(i, "command -v zstd || echo none");
    assert_eq!(
        seen.trim(),
        "none",
        "host {i} still finds zstd: the test cannot hide it"
    );
}

fn encodings(result: &serde_json::Value) -> Vec<String> {
    result["uploads"]
        .as_array()
        .expect("per-host uploads in the result")
        .iter()
        .map(|u| u["encoding"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn compressed_uploads_arrive_byte_for_byte_and_a_host_without_zstd_gets_gzip() {
    let s = Scenario::new().hosts(2);
    hide_zstd(&s, 1);
    // Text that compresses, and a part that does not.
    for n in 0..40 {
        let text: String = (0..2000)
            .map(|l| format!("{n}: line {l} of a source file, with some words\n"))
            .collect();
        s.app_file(&format!("src/file{n:02}.rs"), &text);
    }
    fs::write(s.dir().join("app/assets.bin"), noise(7, 512 * 1024)).unwrap();

    let cold = result(&s.slipway(&["deploy", "test", "--json"]).ok());
    assert_eq!(encodings(&cold), ["zstd", "gzip"], "{cold}");
    for (i, upload) in cold["uploads"].as_array().unwrap().iter().enumerate() {
        let (sent, raw) = (
            upload["bytes_sent"].as_u64().unwrap(),
            upload["bytes_raw"].as_u64().unwrap(),
        );
        println!(
            "host {i}: {} sent {sent} of {raw} bytes",
            upload["encoding"]
        );
        assert!(sent * 2 < raw, "host {i}: {sent} bytes sent for {raw} raw");
    }
    assert_eq!(
        cold["bytes_sent"].as_u64(),
        Some(
            cold["uploads"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["bytes_sent"].as_u64().unwrap())
                .sum::<u64>()
        )
    );
    for i in 0..2 {
        assert_same_tree(&s, i);
    }

    // A second deploy: only the changed files, compressed the same way, verified.
    s.app_file("src/file03.rs", "changed\n".repeat(5000).as_str());
    s.app_file("src/new.rs", "new\n");
    let warm = result(&s.slipway(&["deploy", "test", "--json"]).ok());
    assert_eq!(encodings(&warm), ["zstd", "gzip"], "{warm}");
    assert!(warm["linked"].as_u64().unwrap() > 30, "{warm}");
    for i in 0..2 {
        assert_same_tree(&s, i);
    }
}

#[test]
fn a_release_that_does_not_compress_is_sent_as_it_is_and_off_means_off() {
    let mut s = Scenario::new().hosts(1);
    for n in 0..12 {
        fs::create_dir_all(s.dir().join("app/media")).unwrap();
        fs::write(
            s.dir().join(format!("app/media/clip{n}.bin")),
            noise(n + 1, 256 * 1024),
        )
        .unwrap();
    }
    let run = s.slipway(&["deploy", "test", "--json"]).ok();
    let first = result(&run);
    assert_eq!(encodings(&first), ["raw"], "{first}");
    assert_eq!(first["bytes_sent"], first["bytes_raw"]);
    assert_same_tree(&s, 0);

    // Text now, but compression is off.
    s.extra = "\n[upload]\ncompress = \"off\"\n".into();
    for n in 0..12 {
        fs::write(
            s.dir().join(format!("app/media/clip{n}.bin")),
            "text ".repeat(50_000),
        )
        .unwrap();
    }
    let off = result(&s.slipway(&["deploy", "test", "--json"]).ok());
    assert_eq!(encodings(&off), ["raw"], "{off}");
    assert_same_tree(&s, 0);

    // An unknown setting is refused, naming the key and the choices.
    s.extra = "\n[upload]\ncompress = \"brotli\"\n".into();
    let bad = s.slipway(&["deploy", "test"]);
    assert_eq!(bad.code, 2, "{}", bad.all_output());
    assert!(
        bad.stderr.contains("upload.compress") && bad.stderr.contains("\"zstd\""),
        "{}",
        bad.stderr
    );
}

/// Runs `slipway deploy test --json` with its delta cache in the scenario's directory.
fn deploy_with_cache(s: &Scenario) -> (Run, serde_json::Value) {
    let out = s
        .command(&["deploy", "test", "--json"])
        .env("SLIPWAY_CACHE_DIR", s.dir().join("cache"))
        .output()
        .expect("run slipway");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
    .ok();
    let result = result(&run);
    (run, result)
}

#[test]
fn a_changed_large_file_travels_as_a_binary_delta_and_a_bad_base_falls_back_to_the_whole_file() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scenario::new().hosts(3);
    hide_zstd(&s, 2);
    let binary = s.dir().join("app/bin/server");
    let mut bytes = noise(42, 3 << 20);
    fs::write(&binary, &bytes).unwrap();
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
    for n in 0..12 {
        s.app_file(&format!("config/part{n}.toml"), &format!("value = {n}\n"));
    }
    let (_, cold) = deploy_with_cache(&s);
    assert_eq!(encodings(&cold), ["raw", "raw", "raw"], "{cold}");

    // A rebuild: a few scattered edits and a few bytes more.
    for at in (1000..bytes.len()).step_by(400_000) {
        bytes[at] ^= 0x5a;
    }
    bytes.extend_from_slice(b"v2 trailer");
    fs::write(&binary, &bytes).unwrap();
    let (_, warm) = deploy_with_cache(&s);
    let uploads = warm["uploads"].as_array().unwrap();
    for (i, u) in uploads.iter().enumerate() {
        println!(
            "host {i}: {} bytes sent, {} as deltas",
            u["bytes_sent"], u["delta_files"]
        );
    }
    for (i, upload) in uploads.iter().enumerate().take(2) {
        assert_eq!(upload["delta_files"], 1, "host {i}: {warm}");
        let sent = upload["bytes_sent"].as_u64().unwrap();
        assert!(
            sent * 20 < bytes.len() as u64,
            "host {i}: {sent} bytes for a changed {} byte file",
            bytes.len()
        );
    }
    // Without zstd on the host, the whole file (it does not compress either).
    assert_eq!(uploads[2]["delta_files"], 0, "{warm}");
    assert!(uploads[2]["bytes_sent"].as_u64().unwrap() > bytes.len() as u64);
    for i in 0..3 {
        assert_same_tree(&s, i);
        let mode = fs::metadata(s.app_path(i, "current/bin/server"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "host {i}");
    }

    // Host 0's copy of the base is damaged (same size): its delta cannot apply, it gets
    // the whole release, and every host ends up with the right bytes.
    let base = s.app_path(0, "current/bin/server");
    let mut damaged = fs::read(&base).unwrap();
    damaged[2_000_000] ^= 1;
    fs::write(&base, &damaged).unwrap();
    bytes[5] ^= 1;
    fs::write(&binary, &bytes).unwrap();
    let (run, third) = deploy_with_cache(&s);
    // (With --json, the warning is an event on stdout.)
    assert!(
        run.all_output().contains("sending the whole release"),
        "{}",
        run.all_output()
    );
    let uploads = third["uploads"].as_array().unwrap();
    assert!(
        uploads[0]["bytes_sent"].as_u64().unwrap() > bytes.len() as u64,
        "{third}"
    );
    assert_eq!(uploads[1]["delta_files"], 1, "{third}");
    for i in 0..3 {
        assert_same_tree(&s, i);
    }
}
