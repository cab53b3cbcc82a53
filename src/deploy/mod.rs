//! The deploy executor: check, lock, upload, finalize, build, switch, restart, prune.
//!
//! Nothing half-done is ever live: a release becomes visible only by the rename of
//! `current`, after it is complete and built on every host. A failure before the switch
//! leaves every host as it was (the partial upload removed, a built release marked
//! failed); a failure during or after the switch switches every host back.

use chrono::Utc;
use serde_json::json;

use crate::archive::{self, Archive};
use crate::config::Stage;
use crate::db::{self, step::Migrated};
use crate::error::{Error, Result};
use crate::fault;
use crate::fleet::{Fleet, first_failure};
use crate::layout::ReleaseId;
use crate::operation::{self, Acted, Spec};
use crate::release::{HostState, ReleaseMeta, ReleaseState, common_current, next_release_id};
use crate::rollout::{
    self,
    executor::{Mode, Progress},
    state::{RolloutState, Status},
};
use crate::run::{Context, Outcome, unless_interrupted};
use crate::script;
use crate::switch::{self, Transition};

mod compress;
mod dry_run;
mod patch;
mod prune;
mod relay;
mod upload;

use dry_run::dry_run;
use prune::prune;
use upload::plan_uploads;

pub async fn deploy(stage: &Stage, ctx: &Context) -> Result<Outcome> {
    let started = std::time::Instant::now();
    let source = stage.source.clone();
    // The archive is built while the connections are being set up: both take a while
    // (hashing the tree; ssh key exchanges), neither needs the other.
    let shared = stage.shared_paths();
    let building = tokio::task::spawn_blocking(move || {
        let archive = archive::build(&source)?;
        archive.manifest.check_shared(&shared)?;
        Ok::<_, archive::ArchiveError>(archive)
    });
    let (archive, fleet) = tokio::join!(building, Fleet::connect(stage, ctx.reporter.clone()));
    let archive = match archive {
        Ok(Ok(archive)) => archive,
        Ok(Err(e)) => {
            if let Ok(fleet) = &fleet {
                fleet.close().await;
            }
            return Err(e.into());
        }
        Err(e) => return Err(Error::Usage(format!("building the archive failed: {e}"))),
    };
    let fleet = fleet?;
    for skipped in &archive.skipped {
        ctx.reporter
            .warning(None, &format!("source: skipped {skipped}"));
    }
    let result = if ctx.dry_run {
        dry_run(&fleet, &archive).await
    } else {
        locked_deploy(&fleet, ctx, archive, started).await
    };
    fleet.close().await;
    result
}

async fn locked_deploy(
    fleet: &Fleet,
    ctx: &Context,
    archive: Archive,
    started: std::time::Instant,
) -> Result<Outcome> {
    let spec = Spec {
        started,
        action: "deploy",
        then: "",
        // Points after the switch only pause, sleep or exit: there is nothing left to fail.
        before_unlock: Some("deploy.before-unlock"),
    };
    operation::with_lock(fleet, ctx, spec, async |states| {
        // Every outcome is on record, on every host: success, failure, or a revert.
        match run_deploy(fleet, ctx, archive, states).await {
            Ok(done) => Acted {
                from: done.from,
                to: Some(done.id.to_string()),
                reason: None,
                paused: done.paused,
                result: Ok(done.outcome),
            },
            Err((id, from, e)) => Acted {
                from,
                to: id.map(|i| i.to_string()),
                ..Acted::new(Err(e))
            },
        }
    })
    .await
}

/// A deploy that went through (or paused at a rollout step).
struct Deployed {
    id: ReleaseId,
    from: Option<String>,
    outcome: Outcome,
    paused: bool,
}

/// A failed deploy: the release (once it had an id), the release the stage was on, why.
type DeployResult = std::result::Result<Deployed, (Option<ReleaseId>, Option<String>, Error)>;

async fn run_deploy(
    fleet: &Fleet,
    ctx: &Context,
    archive: Archive,
    states: &[HostState],
) -> DeployResult {
    let stage = &fleet.stage;
    let timeouts = &stage.timeouts;
    let from = common_current(states);
    let id = next_release_id(states);
    let fail = |e: Error| (Some(id.clone()), from.clone(), e);
    if let Err(m) = fault::point("deploy.after-lock").await {
        return Err(fail(Error::Step {
            host: "-".into(),
            step: "lock".into(),
            message: m,
        }));
    }
    let prior = rollout::state::from_states(states);
    if let Err(e) = rollout::state::refuse_if_in_progress(prior.as_ref()) {
        return Err((None, from, e));
    }
    // With [traffic]: which slot the new release goes to, from what the proxies have.
    let driver = crate::traffic::Driver::new(fleet, ctx.actor.clone(), ctx.command.clone());
    let traffic = match &driver {
        Some(d) => match crate::traffic::start_state(d).await {
            Ok(t) => Some(t),
            Err(e) => return Err((None, from, e)),
        },
        None => None,
    };
    let meta = new_release_meta(
        stage,
        &archive,
        &id,
        ReleaseState::Preparing,
        ctx.actor.name(),
    );
    // A broken migrations directory is found before anything is uploaded.
    let migrations = match &stage.database {
        Some(config) if config.commands.is_none() && config.framework.is_none() => Some(
            db::migrate::load(config, archive.tar.reader())
                .await
                .map_err(&fail)?,
        ),
        _ => None,
    };
    // Framework mode with snapshots needs the URL too.
    if let Some(config) = stage.database.as_ref().filter(|c| c.framework.is_some()) {
        db::check_url(config).map_err(&fail)?;
    }
    let shared = stage.shared_paths();
    let (uploads, whole) = plan_uploads(fleet, states, &archive, &meta, &shared)
        .await
        .map_err(|e| fail(Error::Io(e)))?;
    fleet.reporter.info(&format!(
        "deploying {} {} to {} ({} host{}), revision {}",
        stage.app,
        id,
        stage.name,
        fleet.len(),
        if fleet.len() == 1 { "" } else { "s" },
        archive.revision
    ));

    // The release is ready once built: by the build step, or, without build hooks, at
    // the end of the upload step itself (a round trip saved).
    let ready = meta.with_state(ReleaseState::Ready, None);
    let ready_trailer = format!(
        "{}{}{}",
        script::write_meta(&fleet.layout, &id, &ready.to_line()),
        script::record_stat(&fleet.layout, &id),
        if stage.immutable {
            script::make_read_only(&fleet.layout, &id)
        } else {
            String::new()
        }
    );
    // With build hooks, the upload records the files as shipped, before the build.
    let shipped = script::record_shipped(&fleet.layout, &id);
    let trailer_in_upload = if stage.build_hooks.is_empty() {
        ready_trailer.as_str()
    } else {
        shipped.as_str()
    };
    let receive = |previous: Option<&ReleaseId>, encoding: script::Encoding| {
        script::receive(
            &fleet.layout,
            &id,
            previous,
            encoding,
            &stage.shared_files,
            &stage.shared_dirs,
            trailer_in_upload,
        )
    };

    // Upload, verify and link shared paths: harmless to every host, interruptible.
    let all = fleet.all();
    // Per host: bytes sent, and the release bytes they carried before compression.
    let sent: std::sync::Mutex<Vec<(u64, u64)>> = std::sync::Mutex::new(vec![(0, 0); fleet.len()]);
    let count = |i: usize, wire: u64, raw: u64| {
        if let Ok(mut sent) = sent.lock()
            && let Some(entry) = sent.get_mut(i)
        {
            entry.0 += wire;
            entry.1 += raw;
        }
    };
    let linked = std::sync::atomic::AtomicUsize::new(0);
    // `[upload] relay`: the hosts running a relay server (stopped whatever ends the
    // upload), and per host the relay it fetched its release from.
    let relays = std::sync::Mutex::new(Vec::new());
    let relayed_from: std::sync::Mutex<Vec<Option<usize>>> =
        std::sync::Mutex::new(vec![None; fleet.len()]);
    let upload = unless_interrupted(&ctx.interrupt, async {
        fault::point("deploy.before-upload").await.map_err(|m| Error::Step { host: "-".into(), step: "upload".into(), message: m })?;
        let delivery = relay::deliver(
            fleet,
            &uploads,
            |i| receive(uploads[i].previous.as_ref(), uploads[i].encoding),
            &relays,
        )
        .await;
        let results = delivery.results;
        if let Ok(mut from) = relayed_from.lock() {
            *from = delivery.relayed_from.clone();
        }
        // A host that could not link from its previous release gets the whole release.
        let mut full: Vec<usize> = Vec::new();
        for (i, r) in &results {
            match r {
                Ok(out) if out.success() => {}
                Ok(out) if out.code == script::EXIT_NOT_VERIFIED && uploads[*i].previous.is_some() => full.push(*i),
                Ok(out) => return Err(Error::Step { host: fleet.name(*i).into(), step: "upload".into(), message: out.message() }),
                Err(m) => return Err(Error::Step { host: fleet.name(*i).into(), step: "upload".into(), message: m.to_string() }),
            }
        }
        // Every payload that travelled counts, a refused incremental one included.
        // A host that fetched from its relay got only this deploy's key from the deployer.
        for &i in &all {
            let wire = match delivery.relayed_from[i] {
                Some(_) => delivery.key_bytes,
                None => uploads[i].payload.len(),
            };
            count(i, wire, uploads[i].raw);
        }
        let most = all.iter().filter(|i| !full.contains(i)).map(|&i| uploads[i].linked).max();
        linked.store(most.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
        if !full.is_empty() {
            // Encoded as the host's first payload was (once per encoding).
            let mut encoded: std::collections::BTreeMap<script::Encoding, std::sync::Arc<crate::transport::Input>> = Default::default();
            for &i in &full {
                fleet.reporter.warning(Some(fleet.name(i)), "the previous release could not serve as a base (a file differs from its manifest); sending the whole release");
                let encoding = uploads[i].encoding;
                if let std::collections::btree_map::Entry::Vacant(slot) = encoded.entry(encoding) {
                    let input = match encoding {
                        script::Encoding::Raw => whole.clone(),
                        _ => std::sync::Arc::new(compress::encode(&whole, encoding).map_err(Error::Io)?),
                    };
                    slot.insert(input);
                }
                count(i, encoded[&encoding].len(), whole.len());
            }
            let results = fleet.step_on_each(&full, "upload", |i| receive(None, uploads[i].encoding).whole(), |i| Some(encoded[&uploads[i].encoding].clone()), timeouts.upload).await;
            // step_on_each returns a script that ran and failed as Ok: the whole release
            // refused here is a failed upload, never a release to switch to.
            for (i, r) in &results {
                match r {
                    Ok(out) if out.success() => {}
                    Ok(out) => return Err(Error::Step { host: fleet.name(*i).into(), step: "upload".into(), message: out.message() }),
                    Err(m) => return Err(Error::Step { host: fleet.name(*i).into(), step: "upload".into(), message: m.to_string() }),
                }
            }
        }
        fault::point("deploy.after-upload").await.map_err(|m| Error::Step { host: "-".into(), step: "upload".into(), message: m })
    })
    .await;
    relay::stop(fleet, &relays).await;
    settle(fleet, &id, &meta, upload).await.map_err(fail)?;
    let sent = sent.into_inner().unwrap_or_default();
    let relayed_from = relayed_from.into_inner().unwrap_or_default();
    let relayed = |i: usize| match relayed_from.get(i).copied().flatten() {
        Some(_) => uploads[i].payload.len(),
        None => 0,
    };
    let bytes_relayed: u64 = (0..fleet.len()).map(relayed).sum();
    let bytes_sent: u64 = sent.iter().map(|(wire, _)| wire).sum();
    let bytes_raw: u64 = sent.iter().map(|(_, raw)| raw).sum();
    let linked = linked.load(std::sync::atomic::Ordering::Relaxed);

    // Build hooks, then the release is ready.
    let build = unless_interrupted(&ctx.interrupt, async {
        if !stage.build_hooks.is_empty() {
            let results = fleet
                .step_on(
                    &all,
                    "build",
                    |i| {
                        let path = fleet.layout.release(&id);
                        let env = fleet.hook_env(i, &id, &path);
                        script::hooks("build", &env, &stage.build_hooks, &ready_trailer)
                    },
                    None,
                    timeouts.hook,
                )
                .await;
            if let Some(e) = first_failure(fleet, "build", &results) {
                return Err(e);
            }
        }
        fault::point("deploy.before-switch")
            .await
            .map_err(|m| Error::Step {
                host: "-".into(),
                step: "switch".into(),
                message: m,
            })
    })
    .await;
    settle(fleet, &id, &meta, build).await.map_err(fail)?;

    // The database, once, on the primary: after the build, before any switch. Not
    // interruptible half-way: a signal waits for the migration to finish or fail.
    let mut migrated: Option<Migrated> = None;
    let mut meta = meta;
    if let Some(config) = &stage.database {
        let result = match (&config.framework, &config.commands, migrations) {
            (Some(f), _, _) => db::framework::run::migrate(fleet, config, f, &id)
                .await
                .map(|m| (None, vec![], Some(Migrated::Framework(m)))),
            (None, Some(commands), _) => db::command::migrate(fleet, config, commands, &id)
                .await
                .map(|m| (Some(m.after), vec![], Some(Migrated::Command(m)))),
            (None, None, Some(set)) => db::migrate::run(fleet, config, set, &id).await.map(|m| {
                (
                    Some(m.schema_version),
                    m.records.clone(),
                    Some(Migrated::Sqlx(m)),
                )
            }),
            (None, None, None) => Ok((None, vec![], None)),
        };
        match result {
            Ok((version, records, m)) => {
                meta.schema_version = version;
                meta.migrations = records;
                if let Some(Migrated::Framework(f)) = &m {
                    meta.schema = Some(f.record.clone());
                }
                migrated = m;
            }
            Err(e) => {
                discard(fleet, &id, &meta, &e.to_string()).await;
                return Err(fail(e));
            }
        }
        if let Some(m) = &migrated {
            fleet.reporter.info(&m.summary());
        }
    }

    // The switch, host by host as the stage's strategy says: from here on, a signal no
    // longer stops the run half-way.
    let live = meta.with_state(ReleaseState::Live, None);
    let switch = |i: usize| {
        let mut records = vec![(id.clone(), live.to_line())];
        if let Some(prev) = states[i].current_meta() {
            records.push((
                prev.id.clone(),
                prev.with_state(ReleaseState::Ready, None).to_line(),
            ));
        }
        script::switch(&fleet.layout, Some(&id), &switch::nonce(), &records)
    };
    let mut exec = rollout::executor::Executor {
        fleet,
        release: id.clone(),
        state: rollout_state(fleet, ctx, states, &id, prior.as_ref(), traffic),
        persist: false,
        switch: &switch,
        interrupt: ctx.interrupt.clone(),
        traffic: driver.as_ref(),
    };
    exec.persist = exec.state.plan.steps.len() > 1
        || stage.health.is_some()
        || exec.state.pool.is_some()
        || exec.state.traffic.is_some();
    if exec.persist && (meta.schema_version.is_some() || meta.schema.is_some()) {
        // Hosts switched by a later invocation (`rollout promote`) take the release's
        // record from disk: it must carry the schema version now, not only once switched.
        let ready = meta.with_state(ReleaseState::Ready, None);
        let results = fleet
            .step_on(
                &all,
                "record-schema",
                |_| script::write_meta(&fleet.layout, &id, &ready.to_line()),
                None,
                timeouts.command,
            )
            .await;
        if let Some(e) = first_failure(fleet, "record-schema", &results) {
            let error = switch_back(fleet, states, &[], &meta, &id, &e.to_string()).await;
            return Err(fail(revert_schema(fleet, migrated.as_ref(), error).await));
        }
    }
    match exec.advance(Mode::default()).await {
        Ok(Progress::Done) => {}
        Ok(Progress::Paused(why)) => {
            let on = exec.state.hosts_through(exec.state.completed).len();
            let live = match &exec.state.traffic {
                Some(t) => format!(
                    "{id} serves {}% of users on every host",
                    crate::traffic::split::trim(t.percent)
                ),
                None => format!("{id} is live on {on} of {} host(s)", fleet.len()),
            };
            let human = format!(
                "rollout of {} to {} paused: {live} ({why}). Go on with `slipway rollout promote {stage}`, or go back with `slipway rollout abort {stage}`",
                stage.app,
                stage.name,
                stage = stage.name,
            );
            let data = json!({
                "release": id.as_str(),
                "paused": true,
                "reason": why,
                "completed_steps": exec.state.completed,
                "steps": exec.state.plan.steps.len(),
                "hosts_on_release": on,
                "schema_version": meta.schema_version,
                "ab": exec.state.ab,
            });
            return Ok(Deployed {
                id,
                from,
                outcome: Outcome { human, data },
                paused: true,
            });
        }
        Err(failure) => {
            if let (Some(d), Some(t)) = (&driver, exec.state.traffic.as_mut()) {
                // Users first: everyone back on the stable slot at once, the new one stopped.
                if let Err(m) = crate::traffic::back(d, t, &id).await {
                    fleet
                        .reporter
                        .warning(None, &format!("moving traffic back failed: {m}"));
                }
                exec.save().await;
            }
            let error = switch_back(
                fleet,
                states,
                &failure.switched,
                &meta,
                &id,
                &failure.reason,
            )
            .await;
            let error = revert_schema(fleet, migrated.as_ref(), error).await;
            exec.rolled_back(&failure.reason).await;
            return Err(fail(error));
        }
    }
    let _ = fault::point("deploy.before-prune").await;
    // Retention.
    let pruned = prune(fleet, states, &live).await;
    let per_host_uploads: Vec<serde_json::Value> = sent
        .iter()
        .enumerate()
        .map(|(i, (wire, raw))| {
            json!({
                "host": fleet.name(i),
                "bytes_sent": wire,
                "bytes_raw": raw,
                "relayed": relayed(i),
                "relay": relayed_from.get(i).copied().flatten().map(|r| fleet.name(r)),
                "encoding": uploads[i].encoding.name(),
                "delta_files": uploads[i].patched.0,
                "delta_of_bytes": uploads[i].patched.1,
            })
        })
        .collect();
    let encodings: std::collections::BTreeSet<&str> = uploads
        .iter()
        .map(|u| u.encoding.name())
        .filter(|name| *name != "raw")
        .collect();
    let traffic = if encodings.is_empty() {
        format!("; {} sent", human_bytes(bytes_sent))
    } else {
        format!(
            "; {} sent ({}; {} before compression)",
            human_bytes(bytes_sent),
            encodings.into_iter().collect::<Vec<_>>().join(", "),
            human_bytes(bytes_raw)
        )
    };
    let traffic = if bytes_relayed > 0 {
        format!(
            "{traffic}, {} relayed between hosts",
            human_bytes(bytes_relayed)
        )
    } else {
        traffic
    };
    let deltas = uploads.iter().map(|u| u.patched.0).max().unwrap_or(0);
    let traffic = if deltas > 0 {
        format!(
            "{traffic}, {deltas} changed file{} as a binary delta",
            if deltas == 1 { "" } else { "s" }
        )
    } else {
        traffic
    };
    let human = format!(
        "deployed {} to {} ({} host{}): {} is live{}{}{}",
        stage.app,
        stage.name,
        fleet.len(),
        if fleet.len() == 1 { "" } else { "s" },
        id,
        match (&migrated, meta.schema_version) {
            (Some(m), _) => format!("; {}", m.summary()),
            (None, Some(v)) => format!("; schema version {v}"),
            (None, None) => String::new(),
        },
        if pruned > 0 {
            format!(", {pruned} old release(s) pruned")
        } else {
            String::new()
        },
        traffic
    );
    let data = json!({
        "release": id.as_str(),
        "revision": archive.revision,
        "hosts": fleet.len(),
        "from": from,
        "pruned": pruned,
        "schema_version": meta.schema_version,
        "migrations_applied": migrated.as_ref().map(|m| m.applied_now()),
        "snapshot": migrated.as_ref().and_then(|m| m.snapshot()),
        "bytes_sent": bytes_sent,
        "bytes_raw": bytes_raw,
        "bytes_relayed": bytes_relayed,
        "uploads": per_host_uploads,
        "files": archive.manifest.file_count(),
        "linked": linked,
    });
    Ok(Deployed {
        id,
        from,
        outcome: Outcome { human, data },
        paused: false,
    })
}

/// The record of a new release built from `archive`, in `state`.
pub(super) fn new_release_meta(
    stage: &Stage,
    archive: &Archive,
    id: &ReleaseId,
    state: ReleaseState,
    deployed_by: String,
) -> ReleaseMeta {
    let now = Utc::now();
    ReleaseMeta {
        id: id.clone(),
        app: stage.app.clone(),
        stage: stage.name.clone(),
        revision: archive.revision.clone(),
        state,
        created_at: now,
        updated_at: now,
        deployed_by,
        manifest_digest: archive.manifest.digest(),
        files: archive.manifest.file_count(),
        bytes: archive.manifest.total_bytes(),
        schema_version: None,
        migrations: vec![],
        schema: None,
        note: None,
    }
}

/// After a switch-back: the old code needs its schema, so this deploy's migrations are
/// undone too; the error says what happened to the database.
async fn revert_schema(fleet: &Fleet, migrated: Option<&Migrated>, error: Error) -> Error {
    let (Some(m), Some(config)) = (migrated, fleet.stage.database.as_ref()) else {
        return error;
    };
    if !m.changed() {
        return error;
    }
    let (text, settled) = m.revert(fleet, config).await;
    match error {
        // The code went back, the schema did not: not "every host as it was".
        Error::Reverted(msg) if !settled => Error::Diverged(format!(
            "{msg}; but the database was NOT put back: {text}. See `slipway db status {}`",
            fleet.stage.name
        )),
        Error::Reverted(msg) => Error::Reverted(format!("{msg}; database: {text}")),
        Error::Diverged(msg) => Error::Diverged(format!("{msg}; database: {text}")),
        other => other,
    }
}

/// Ends an interruptible phase before the switch: on a failure or a signal the release
/// is discarded (see [`discard`]) and the error returned.
async fn settle(
    fleet: &Fleet,
    id: &ReleaseId,
    meta: &ReleaseMeta,
    outcome: std::result::Result<Result<()>, &'static str>,
) -> Result<()> {
    let error = match outcome {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e,
        Err(signal) => {
            // Stopped on purpose: nothing to inspect, the new release goes entirely.
            let script = script::remove_new_release(&fleet.layout, id);
            fleet
                .on_all_best_effort("cleanup", &script, &format!("remove release {id}"))
                .await;
            return Err(Error::Interrupted(format!(
                "{signal} received before the switch: the new release was removed, every host is as it was"
            )));
        }
    };
    discard(fleet, id, meta, &error.to_string()).await;
    Err(error)
}

/// After a failure before the switch: remove the partial upload everywhere, and mark a
/// release that got as far as `releases/ID` failed (kept for inspection, pruned later).
async fn discard(fleet: &Fleet, id: &ReleaseId, meta: &ReleaseMeta, why: &str) {
    let failed = meta.with_state(ReleaseState::Failed, Some(why.to_string()));
    let script = script::discard_release(&fleet.layout, id, &failed.to_line());
    fleet
        .on_all_best_effort("cleanup", &script, &format!("clean up release {id}"))
        .await;
}

/// After a failed switch or gate: the hosts in `which` go back to their previous
/// release (restarted there), the new release is marked failed everywhere. Returns the
/// error to report: reverted, or diverged naming the hosts that could not go back.
async fn switch_back(
    fleet: &Fleet,
    states: &[HostState],
    which: &[usize],
    meta: &ReleaseMeta,
    id: &ReleaseId,
    why: &str,
) -> Error {
    fleet.reporter.warning(
        None,
        &format!("{why}; switching {} host(s) back", which.len()),
    );
    let failed = meta.with_state(ReleaseState::Failed, Some(why.to_string()));
    let moves: Vec<Transition> = which
        .iter()
        .map(|&i| {
            let mut records = vec![(id.clone(), failed.to_line())];
            if let Some(prev) = states[i].current_meta() {
                records.push((
                    prev.id.clone(),
                    prev.with_state(ReleaseState::Live, None).to_line(),
                ));
            }
            Transition {
                host: i,
                to: states[i].current(),
                records,
                restart: true,
            }
        })
        .collect();
    let outcome = switch::switch_back(fleet, &moves).await;
    // Mark the release failed on hosts that were never switched, too.
    let others: Vec<usize> = fleet
        .all()
        .into_iter()
        .filter(|i| !which.contains(i))
        .collect();
    let _ = fleet
        .step_on(
            &others,
            "mark-failed",
            |_| script::write_meta_if_present(&fleet.layout, id, &failed.to_line()),
            None,
            fleet.stage.timeouts.command,
        )
        .await;
    for failure in &outcome.restart_failures {
        fleet.reporter.warning(
            None,
            &format!(
                "the restart hooks of the previous release failed after switching back: {failure}"
            ),
        );
    }
    if outcome.reverted() {
        let back = if fleet.stage.traffic.is_some() {
            "every user is back on the stable slot and the new slot's instance is stopped; `current` never moved"
        } else {
            "every host was switched back to where it was"
        };
        Error::Reverted(format!("deploy of {id} failed ({why}); {back}"))
    } else {
        let target = common_current(states)
            .map(|c| format!("slipway rollback {} --to {c}", fleet.stage.name))
            .unwrap_or_else(|| format!("slipway releases {}", fleet.stage.name));
        Error::Diverged(format!(
            "deploy of {id} failed ({why}) and switching back failed on {}: those hosts may still be on {id}. Check with `slipway releases {}`, then run `{target}`",
            outcome.stuck_names(fleet).join(", "),
            fleet.stage.name,
        ))
    }
}

/// The rollout this deploy starts: the plan frozen over the stage's hosts as they are
/// now, and each host's stable release (the one it is on).
fn rollout_state(
    fleet: &Fleet,
    ctx: &Context,
    states: &[HostState],
    id: &ReleaseId,
    prior: Option<&RolloutState>,
    traffic: Option<crate::traffic::TrafficState>,
) -> RolloutState {
    let stage = &fleet.stage;
    let names: Vec<String> = fleet
        .all()
        .iter()
        .map(|&i| fleet.name(i).to_string())
        .collect();
    let now = Utc::now();
    // Blue-green switches only the pool without traffic.
    let (plan, pool) = if let Some(t) = &traffic {
        let first = t.stable.is_none();
        let plan = match &stage.rollout.strategy {
            crate::config::Strategy::Ab(test) => crate::traffic::ab::plan(test, &names, first),
            other => crate::traffic::plan(&other.user_steps(), &names, first),
        };
        (plan, None)
    } else if stage.rollout.strategy == crate::config::Strategy::BlueGreen {
        let pool = rollout::state::idle_pool(prior);
        let pools: Vec<(String, Option<String>)> = stage
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.pool.clone()))
            .collect();
        (
            rollout::plan::blue_green(pool, &pools),
            Some(pool.to_string()),
        )
    } else {
        (
            rollout::plan::plan(&stage.rollout.strategy, &stage.app, &names),
            None,
        )
    };
    RolloutState {
        app: stage.app.clone(),
        stage: stage.name.clone(),
        desired: id.to_string(),
        stable: states
            .iter()
            .map(|s| (s.host.clone(), s.current().map(|c| c.to_string())))
            .collect(),
        plan,
        completed: 0,
        status: Status::Running,
        reason: None,
        migrated: stage.database.is_some(),
        last_gate: None,
        previous_pool: prior.and_then(|p| p.previous_pool.clone()),
        traffic,
        ab: None,
        live_pool: prior.and_then(|p| p.live_pool.clone()),
        pool,
        started_by: ctx.actor.name(),
        started_at: now,
        updated_at: now,
    }
}

/// `905 B`, `12.30 MiB`.
fn human_bytes(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}
