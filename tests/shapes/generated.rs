//! The property: every generated release shape deploys byte-identical or is refused at
//! the source naming the path (exit 2, nothing changed on the host). Seeded: a run
//! prints its seed, and `SLIPWAY_SHAPES_SEED=N` replays it; `SLIPWAY_SHAPES_CASES=N`
//! sets the number of shapes (default 200). Shapes go, many after another, to the same
//! app on two targets (`keep_releases = 2`): most through the `local` transport, about
//! one in six through an sshd test host.

use std::time::{Duration, Instant};

use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use crate::shape::{Expect, Shape, Tree, shape, write_source};
use crate::target::{Target, Via};

/// The seed CI runs with; `SLIPWAY_SHAPES_SEED` overrides it.
const DEFAULT_SEED: u64 = 0x5119_3a7e_0f5e_ed01;
const DEFAULT_CASES: u32 = 200;

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number")))
}

#[test]
fn generated_release_shapes_deploy_byte_identical_or_are_refused_at_the_source() {
    // Proptest's value trees for these nested strategies recurse deeply while they
    // generate and shrink (a debug build overflowed a test thread's 2 MiB stack).
    let runner = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(run_property)
        .expect("start the property's thread");
    if let Err(panic) = runner.join() {
        std::panic::resume_unwind(panic);
    }
}

fn run_property() {
    let seed = env_number("SLIPWAY_SHAPES_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_number("SLIPWAY_SHAPES_CASES").map_or(DEFAULT_CASES, |n| n as u32);
    println!(
        "release shapes: seed {seed:#x} ({cases} cases; replay with SLIPWAY_SHAPES_SEED={seed:#x})"
    );
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&seed.wrapping_add(i as u64).to_le_bytes());
    }
    let config = Config {
        cases,
        failure_persistence: None,
        // Each case is a deploy or two: shrinking is bounded, not exhaustive.
        max_shrink_iters: 60,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));

    let local = Target::local(2);
    let ssh = Target::ssh(2);
    let started = Instant::now();
    let stats = std::cell::RefCell::new(Stats::default());
    let result = runner.run(&shape(), |shape| {
        let target = match shape.via {
            Via::Local => &local,
            Via::Ssh => &ssh,
        };
        let t = Instant::now();
        let r = run_case(target, &shape, &mut stats.borrow_mut()).map_err(TestCaseError::fail);
        if std::env::var_os("SLIPWAY_SHAPES_TRACE").is_some() {
            eprintln!(
                "{:>6.2}s {:?} {} items redeploy={} flaw={}",
                t.elapsed().as_secs_f64(),
                shape.via,
                shape.items.len(),
                shape.redeploy,
                shape.flaw.is_some()
            );
        }
        r
    });
    let stats = stats.into_inner();
    println!(
        "release shapes: {} deploys ({} local, {} ssh, {} incremental redeploys), {} refused at the source, in {:.1} s",
        stats.deployed_local + stats.deployed_ssh,
        stats.deployed_local,
        stats.deployed_ssh,
        stats.redeployed,
        stats.refused,
        started.elapsed().as_secs_f64()
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, shape)) => panic!(
            "release shapes failed (seed {seed:#x}; replay with SLIPWAY_SHAPES_SEED={seed:#x}):\n{reason}\nminimal failing shape:\n{shape:?}"
        ),
        Err(TestError::Abort(reason)) => {
            panic!("release shapes aborted (seed {seed:#x}): {reason}")
        }
    }
}

#[derive(Default)]
struct Stats {
    deployed_local: usize,
    deployed_ssh: usize,
    redeployed: usize,
    refused: usize,
}

fn run_case(target: &Target, shape: &Shape, stats: &mut Stats) -> Result<(), String> {
    target.reset_source();
    let (tree, expect) = write_source(shape, &target.source());
    match expect {
        Expect::Deploy => {
            deploy_and_verify(target, &tree)?;
            match target.via {
                Via::Local => stats.deployed_local += 1,
                Via::Ssh => stats.deployed_ssh += 1,
            }
            if shape.redeploy {
                let next = tree.changed();
                if next.has_content() {
                    target.reset_source();
                    next.write(&target.source());
                    deploy_and_verify(target, &next)
                        .map_err(|e| format!("the changed release, deployed incrementally: {e}"))?;
                    stats.redeployed += 1;
                }
            }
            Ok(())
        }
        Expect::Refuse(message) => {
            refused(target, &message)?;
            stats.refused += 1;
            Ok(())
        }
    }
}

fn deploy_and_verify(target: &Target, tree: &Tree) -> Result<(), String> {
    let run = target.deploy_within(Duration::from_secs(60));
    if run.code != 0 {
        return Err(format!("the deploy failed: {}", run.describe()));
    }
    let id = run
        .release_id()
        .ok_or_else(|| format!("no release id: {}", run.describe()))?;
    let release = target
        .current_release()
        .ok_or("no current release on the host")?;
    if !release.ends_with(&id) {
        return Err(format!(
            "current is {}, the deploy said {id}",
            release.display()
        ));
    }
    tree.verify(&release)
        .map_err(|e| format!("release {id} differs from its source:\n{e}"))
}

/// The deploy must exit 2 with `message`, without a panic, and change nothing on the host.
fn refused(target: &Target, message: &str) -> Result<(), String> {
    let before = target.snapshot();
    let run = target.deploy_within(Duration::from_secs(60));
    if run.code != 2 || !run.stderr.contains(message) || run.stderr.contains("panicked") {
        return Err(format!(
            "expected exit 2 and a message containing {message:?}; got {}",
            run.describe()
        ));
    }
    let after = target.snapshot();
    let changed = before.differences(&after);
    if !changed.is_empty() {
        return Err(format!(
            "a deploy refused at the source changed the host: {}",
            changed.join("; ")
        ));
    }
    Ok(())
}
