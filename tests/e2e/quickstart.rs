//! The README's first command: the bundled example on the `local` transport.

use std::process::Command;

#[test]
fn the_quickstart_script_deploys_redeploys_and_rolls_back_locally() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("examples/hello/quickstart.sh"))
        .env("SLIPWAY", env!("CARGO_BIN_EXE_slipway"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("rolled back demo"), "{stdout}");
    let current = std::fs::read_link(std::path::Path::new("/tmp/slipway-hello/current")).unwrap();
    let releases: Vec<_> = std::fs::read_dir(std::path::Path::new("/tmp/slipway-hello/releases"))
        .unwrap()
        .collect();
    assert_eq!(releases.len(), 2, "two releases deployed");
    // After the rollback, current is the first (older) release.
    let mut names: Vec<String> = releases
        .into_iter()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(current.to_string_lossy(), format!("releases/{}", names[0]));
}
