//! What the benches share: the deterministic sample app, the machine's description,
//! medians and parallel commands on every host of a fleet.
#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::hosts::Fleet;

pub const FILES: usize = 3000;
pub const TOTAL_BYTES: usize = 40 * 1024 * 1024;
pub const CHANGED: usize = 20;

/// Deterministic content (xorshift), incompressible like real assets.
pub fn fill(seed: &mut u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    for chunk in data.chunks_mut(8) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
    }
    data
}

pub fn generate_app(root: &Path) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let per_file = TOTAL_BYTES / FILES;
    for i in 0..FILES {
        let path = root.join(format!("app/d{:02}/s{:02}/f{i:04}.bin", i % 30, i % 7));
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, fill(&mut seed, per_file)).expect("write");
    }
}

pub fn change_files(root: &Path, round: u64) {
    let mut seed = 0x1234_5678u64 + round;
    for i in 0..CHANGED {
        let n = i * (FILES / CHANGED);
        let path = root.join(format!("app/d{:02}/s{:02}/f{n:04}.bin", n % 30, n % 7));
        fs::write(path, fill(&mut seed, 4096)).expect("write");
    }
}

/// What the numbers were measured on: CPU model and count, memory, OS, OpenSSH.
pub fn machine() -> String {
    let read = |path: &str| fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024 / 1024);
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    let ssh = Command::new("ssh")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    format!("{cpus} × {model}, {mem_gib} GiB, {os}, {ssh}")
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

pub fn parallel(fleet: &Fleet, make: impl Fn(usize) -> Command) -> Duration {
    let started = Instant::now();
    let children: Vec<_> = (0..fleet.hosts().len())
        .map(|i| {
            make(i)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    started.elapsed()
}
