//! Pure rollout planning: which hosts are switched in which step, and how long that can
//! take. No I/O: the executor applies what this decides, `rollout plan` prints it.
//!
//! Canary order is a ranking of the hosts by a stable hash of (app, host): blake3, not
//! Rust's `DefaultHasher`, whose output is randomised per process and not promised
//! across Rust versions. Step k takes the first ceil(p_k × N) hosts of the ranking, so a
//! host that is a canary at 10% stays in at 50%, the same hosts are canaries on every
//! run, and adding a host moves no existing host ahead of another.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Batch, Health, Pause, Rollout, Strategy, Timeouts};

/// One step of a rollout: the hosts switched in it (not those of earlier steps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// 1-based.
    pub number: usize,
    /// For canary steps: the percentage this step brings the stage to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub percent: Option<f64>,
    /// The hosts switched in this step, by name.
    pub hosts: Vec<String>,
    /// How many hosts are on the new release once this step is done.
    pub total: usize,
}

/// The frozen order of a rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutPlan {
    pub strategy: String,
    pub steps: Vec<Step>,
}

impl RolloutPlan {
    pub fn host_count(&self) -> usize {
        self.steps.last().map(|s| s.total).unwrap_or(0)
    }
}

/// A host's place in the canary order: the first 8 bytes of blake3(app NUL host).
pub fn rank_key(app: &str, host: &str) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(app.as_bytes());
    hasher.update(&[0]);
    hasher.update(host.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

/// The host's bucket (0-99), shown next to it: the rank key scaled to 100 buckets, so
/// that buckets grow along the canary order (unlike `key % 100`).
pub fn bucket(app: &str, host: &str) -> u64 {
    ((rank_key(app, host) as u128 * 100) >> 64) as u64
}

/// Host indices in canary order (ties, which need a blake3 collision, by name).
pub fn rank(app: &str, hosts: &[String]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..hosts.len()).collect();
    order.sort_by(|&a, &b| {
        rank_key(app, &hosts[a])
            .cmp(&rank_key(app, &hosts[b]))
            .then_with(|| hosts[a].cmp(&hosts[b]))
    });
    order
}

/// ceil(p × n / 100), at least 1 and at most n. A tiny epsilon keeps 10% of 10 at 1
/// when floating point lands on 1.0000000000000002.
pub fn step_size(percent: f64, n: usize) -> usize {
    let exact = percent * n as f64 / 100.0;
    ((exact - 1e-9).ceil() as usize).clamp(1, n.max(1))
}

/// The steps of `strategy` over `hosts` (names, in config order).
pub fn plan(strategy: &Strategy, app: &str, hosts: &[String]) -> RolloutPlan {
    let n = hosts.len();
    let mut steps = Vec::new();
    match strategy {
        Strategy::AllAtOnce | Strategy::BlueGreen | Strategy::Ab(_) => steps.push(Step {
            number: 1,
            percent: None,
            hosts: hosts.to_vec(),
            total: n,
        }),
        Strategy::Rolling { batch } => {
            let size = match *batch {
                Batch::Count(c) => c.clamp(1, n.max(1)),
                Batch::Percent(p) => step_size(p, n),
            };
            for (k, chunk) in hosts.chunks(size.max(1)).enumerate() {
                steps.push(Step {
                    number: k + 1,
                    percent: None,
                    hosts: chunk.to_vec(),
                    total: (k * size + chunk.len()).min(n),
                });
            }
        }
        Strategy::Canary { steps: percents } => {
            let order = rank(app, hosts);
            let mut done = 0;
            for &p in percents {
                let upto = step_size(p, n);
                // Two percentages that round to the same host count make one step.
                if upto <= done {
                    if let Some(last) = steps.last_mut() {
                        let last: &mut Step = last;
                        last.percent = Some(p);
                    }
                    continue;
                }
                steps.push(Step {
                    number: steps.len() + 1,
                    percent: Some(p),
                    hosts: order[done..upto]
                        .iter()
                        .map(|&i| hosts[i].clone())
                        .collect(),
                    total: upto,
                });
                done = upto;
            }
        }
    }
    RolloutPlan {
        strategy: strategy.name().to_string(),
        steps,
    }
}

/// Blue-green: one step, the hosts of `pool` (in config order).
pub fn blue_green(pool: &str, hosts: &[(String, Option<String>)]) -> RolloutPlan {
    let chosen: Vec<String> = hosts
        .iter()
        .filter(|(_, p)| p.as_deref() == Some(pool))
        .map(|(h, _)| h.clone())
        .collect();
    RolloutPlan {
        strategy: "blue-green".into(),
        steps: vec![Step {
            number: 1,
            percent: None,
            total: chosen.len(),
            hosts: chosen,
        }],
    }
}

/// How long a rollout can take at most, from the configuration's limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorstCase {
    /// Every step switched, restarted and gated, with the pauses between steps.
    pub promotion: Duration,
    /// Whether promotion also waits for people (`pause = "manual"`): not counted above.
    pub manual_pauses: usize,
    /// Switching every host of the largest switched set back, restarting, and (without a
    /// gate) nothing more: the time from a failed last gate to every host back.
    pub rollback: Duration,
}

/// Worst case: each wave of `max_parallel` hosts may take the command timeout (switch)
/// plus the hook timeout (restart); each gate runs its whole window plus one check's
/// timeout; each pause its full length.
pub fn worst_case(
    plan: &RolloutPlan,
    rollout: &Rollout,
    health: Option<&Health>,
    timeouts: &Timeouts,
    restarts: bool,
) -> WorstCase {
    let per_wave = timeouts.command
        + if restarts {
            timeouts.hook
        } else {
            Duration::ZERO
        };
    let waves = |hosts: usize| hosts.div_ceil(rollout.max_parallel.max(1)) as u32;
    let gate = health
        .map(|h| h.window + h.timeout)
        .unwrap_or(Duration::ZERO);
    let mut promotion = Duration::ZERO;
    let mut manual_pauses = 0;
    for (k, step) in plan.steps.iter().enumerate() {
        if k > 0 {
            match rollout.pause {
                Pause::For(d) => promotion += d,
                Pause::Manual => manual_pauses += 1,
            }
        }
        promotion += per_wave * waves(step.hosts.len()) + gate;
    }
    WorstCase {
        promotion,
        manual_pauses,
        rollback: per_wave * waves(plan.host_count()),
    }
}

/// The plan as people read it.
pub fn render(stage: &str, app: &str, plan: &RolloutPlan, worst: &WorstCase) -> String {
    let mut s = format!(
        "Rollout plan of {app} on stage {stage}: {} over {} host(s) in {} step(s)\n",
        plan.strategy,
        plan.host_count(),
        plan.steps.len()
    );
    for step in &plan.steps {
        let pct = step.percent.map(|p| format!(" ({p}%)")).unwrap_or_default();
        s.push_str(&format!(
            "  step {}{pct}: {} new, {} of {} in total\n",
            step.number,
            step.hosts.len(),
            step.total,
            plan.host_count()
        ));
        for h in &step.hosts {
            s.push_str(&format!("    {h}  (bucket {})\n", bucket(app, h)));
        }
    }
    s.push_str(&format!(
        "Worst case: promotion {}{}; rollback {}\n",
        humantime::format_duration(worst.promotion),
        if worst.manual_pauses > 0 {
            format!(
                " plus {} manual pause(s) (until `slipway rollout promote {stage}`)",
                worst.manual_pauses
            )
        } else {
            String::new()
        },
        humantime::format_duration(worst.rollback)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("app{i}.example.com")).collect()
    }

    fn canary(steps: &[f64]) -> Strategy {
        Strategy::Canary {
            steps: steps.to_vec(),
        }
    }

    #[test]
    fn step_sizes_are_exact() {
        assert_eq!(step_size(10.0, 10), 1);
        assert_eq!(step_size(25.0, 8), 2);
        assert_eq!(step_size(50.0, 8), 4);
        assert_eq!(step_size(10.0, 3), 1);
        assert_eq!(step_size(34.0, 3), 2);
        assert_eq!(step_size(100.0, 7), 7);
        assert_eq!(step_size(1.0, 1000), 10);
        assert_eq!(step_size(0.1, 5), 1);
    }

    #[test]
    fn canary_hosts_stay_in_and_steps_cover_everyone_once() {
        let hosts = names(8);
        let p = plan(&canary(&[25.0, 50.0, 100.0]), "shop", &hosts);
        assert_eq!(p.steps.len(), 3);
        assert_eq!(
            p.steps.iter().map(|s| s.hosts.len()).collect::<Vec<_>>(),
            [2, 2, 4]
        );
        assert_eq!(
            p.steps.iter().map(|s| s.total).collect::<Vec<_>>(),
            [2, 4, 8]
        );
        let mut all: Vec<String> = p.steps.iter().flat_map(|s| s.hosts.clone()).collect();
        all.sort();
        let mut sorted = hosts.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        // The first steps are the head of the ranking.
        let order = rank("shop", &hosts);
        assert_eq!(
            p.steps[0].hosts,
            vec![hosts[order[0]].clone(), hosts[order[1]].clone()]
        );
    }

    #[test]
    fn the_same_hosts_give_the_same_steps_in_any_order() {
        let hosts = names(20);
        let mut reversed = hosts.clone();
        reversed.reverse();
        let a = plan(&canary(&[10.0, 50.0, 100.0]), "shop", &hosts);
        let b = plan(&canary(&[10.0, 50.0, 100.0]), "shop", &reversed);
        let sets = |p: &RolloutPlan| {
            p.steps
                .iter()
                .map(|s| {
                    let mut h = s.hosts.clone();
                    h.sort();
                    h
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(sets(&a), sets(&b));
        // Another app ranks the same hosts differently (not always the same canaries).
        let c = plan(&canary(&[10.0, 50.0, 100.0]), "other", &hosts);
        assert_ne!(sets(&a), sets(&c));
    }

    #[test]
    fn known_ranking_does_not_change_between_builds() {
        // Buckets grow along the ranking.
        let hosts = names(50);
        let buckets: Vec<u64> = rank("shop", &hosts)
            .iter()
            .map(|&i| bucket("shop", &hosts[i]))
            .collect();
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
        // Pinned: if this changes, every stage's canaries change. blake3 is stable.
        assert_eq!(rank_key("shop", "app1"), rank_key("shop", "app1"));
        let k = rank_key("shop", "app1.example.com");
        assert_eq!(
            k,
            u64::from_be_bytes(
                blake3::hash(b"shop\0app1.example.com").as_bytes()[..8]
                    .try_into()
                    .unwrap()
            )
        );
    }

    #[test]
    fn buckets_are_uniform_chi_square() {
        // 10,000 generated names into 100 buckets; chi-square with 99 degrees of freedom
        // stays under 148.23 with probability 0.999.
        let mut counts = [0u32; 100];
        for i in 0..10_000 {
            counts[bucket("shop", &format!("web-{i}.dc{}.example.net", i % 7)) as usize] += 1;
        }
        let expected = 100.0;
        let chi: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi < 148.23, "chi-square {chi}");
    }

    #[test]
    fn adding_a_host_keeps_the_relative_order_and_shifts_at_most_one_per_boundary() {
        let hosts = names(30);
        let before = plan(&canary(&[10.0, 50.0, 100.0]), "shop", &hosts);
        let mut more = hosts.clone();
        more.push("app31.example.com".into());
        let order_before: Vec<String> = rank("shop", &hosts)
            .iter()
            .map(|&i| hosts[i].clone())
            .collect();
        let order_after: Vec<String> = rank("shop", &more)
            .iter()
            .map(|&i| more[i].clone())
            .filter(|h| h != "app31.example.com")
            .collect();
        assert_eq!(order_before, order_after);
        let after = plan(&canary(&[10.0, 50.0, 100.0]), "shop", &more);
        for k in 0..before.steps.len() {
            let step_of = |p: &RolloutPlan, h: &str| {
                p.steps.iter().position(|s| s.hosts.iter().any(|x| x == h))
            };
            let moved = hosts
                .iter()
                .filter(|h| step_of(&before, h) == Some(k) && step_of(&after, h) != Some(k))
                .count();
            assert!(moved <= 1, "step {k}: {moved} hosts moved");
        }
    }

    #[test]
    fn percentages_that_round_alike_merge() {
        let p = plan(&canary(&[10.0, 20.0, 100.0]), "shop", &names(3));
        assert_eq!(p.steps.len(), 2);
        assert_eq!(p.steps[0].total, 1);
        assert_eq!(p.steps[0].percent, Some(20.0));
    }

    #[test]
    fn rolling_batches_in_config_order() {
        let hosts = names(6);
        let p = plan(
            &Strategy::Rolling {
                batch: Batch::Count(2),
            },
            "shop",
            &hosts,
        );
        assert_eq!(p.steps.len(), 3);
        assert_eq!(p.steps[1].hosts, vec![hosts[2].clone(), hosts[3].clone()]);
        assert_eq!(p.steps[2].total, 6);
        let p = plan(
            &Strategy::Rolling {
                batch: Batch::Percent(25.0),
            },
            "shop",
            &names(10),
        );
        assert_eq!(
            p.steps.iter().map(|s| s.hosts.len()).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        let p = plan(
            &Strategy::Rolling {
                batch: Batch::Count(10),
            },
            "shop",
            &names(3),
        );
        assert_eq!(p.steps.len(), 1);
        let p = plan(&Strategy::AllAtOnce, "shop", &names(4));
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].total, 4);
    }

    #[test]
    fn worst_case_adds_waves_gates_and_pauses() {
        let hosts = names(8);
        let strategy = canary(&[25.0, 50.0, 100.0]);
        let p = plan(&strategy, "shop", &hosts);
        let rollout = Rollout {
            strategy,
            pause: Pause::For(Duration::from_secs(60)),
            max_parallel: 2,
            ..Rollout::default()
        };
        let timeouts = Timeouts {
            command: Duration::from_secs(10),
            upload: Duration::from_secs(100),
            hook: Duration::from_secs(20),
        };
        let w = worst_case(&p, &rollout, None, &timeouts, true);
        // waves: 1 + 1 + 2 = 4 of 30 s; 2 pauses of 60 s.
        assert_eq!(w.promotion, Duration::from_secs(4 * 30 + 120));
        // 8 hosts back, 2 at a time: 4 waves.
        assert_eq!(w.rollback, Duration::from_secs(4 * 30));
        let manual = Rollout {
            pause: Pause::Manual,
            ..rollout
        };
        assert_eq!(
            worst_case(&p, &manual, None, &timeouts, false).manual_pauses,
            2
        );
    }
}
