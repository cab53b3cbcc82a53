//! The deploy executor: check, lock, upload, finalize, build, switch, restart, prune.
//!
//! Nothing half-done is ever live: a release becomes visible only by the rename of
//! `current`, after it is complete and built on every host. A failure before the switch
//! leaves every host as it was (the partial upload removed, a built release marked
//! failed); a failure during or after the switch switches every host back.

use std::sync::Arc;

use chrono::Utc;
use serde_json::json;

use crate::archive::{self, Archive};
use crate::audit::Record;
use crate::config::Stage;
use crate::db::{self, step::Migrated};
use crate::delta;
use crate::error::{Error, Result};
use crate::fault;
use crate::fleet::{Fleet, first_failure};
use crate::layout::{
    Layout, RELEASE_CHECKSUMS, RELEASE_CHECKSUMS_B2, RELEASE_MANIFEST, RELEASE_META, REVISION_FILE,
    ReleaseId,
};
use crate::lock;
use crate::plan::{self, DeployPlan, HostPlan, PlanStep};
use crate::release::{HostState, ReleaseEntry, ReleaseMeta, ReleaseState};
use crate::rollout::{
    self,
    executor::{Mode, Progress},
    state::{RolloutState, Status},
};
use crate::run::{Context, Outcome, probe, unless_interrupted};
use crate::script::{self, HookEnv};
use crate::spool::Spool;
use crate::transport::Input;

pub async fn deploy(stage: &Stage, ctx: &Context) -> Result<Outcome> {
    let started = std::time::Instant::now();
    let source = stage.source.clone();
    // The archive is built while the connections are being set up: both take a while
    // (hashing the tree; ssh key exchanges), neither needs the other.
    let building = tokio::task::spawn_blocking(move || archive::build(&source));
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

async fn dry_run(fleet: &Fleet, archive: &Archive) -> Result<Outcome> {
    let states = probe(fleet).await?;
    let id = next_release_id(&states);
    let mut plan = build_plan(fleet, archive, &states, &id);
    if let Some(config) = &fleet.stage.database {
        let detail = match (&config.framework, &config.commands) {
            (Some(f), _) => db::framework::run::preview(config, f),
            (None, Some(c)) => format!(
                "run migrate_command `{}` in the new release on {}, record the version version_command prints",
                c.migrate,
                fleet.name(config.primary)
            ),
            (None, None) => {
                let set = db::migrate::load(config, archive.tar.reader()).await?;
                db::migrate::preview(fleet, config, &set).await?
            }
        };
        let at = plan
            .steps
            .iter()
            .position(|s| s.step == "switch")
            .unwrap_or(plan.steps.len());
        plan.steps.insert(
            at,
            PlanStep {
                step: "migrate".into(),
                detail,
            },
        );
    }
    let human = render_plan(&plan);
    fleet
        .reporter
        .plan(&human, serde_json::to_value(&plan).unwrap_or_default());
    Ok(Outcome {
        human: "Nothing was changed (--dry-run).".into(),
        data: json!({ "dry_run": true, "release": id.as_str() }),
    })
}

async fn locked_deploy(
    fleet: &Fleet,
    ctx: &Context,
    archive: Archive,
    started: std::time::Instant,
) -> Result<Outcome> {
    let held = lock::acquire(
        fleet,
        &ctx.actor,
        &ctx.command,
        ctx.lock_wait,
        &ctx.interrupt,
    )
    .await?;
    let result = run_deploy(fleet, ctx, archive, &held.states).await;
    // A crash here leaves the release live and the lock held: what `unlock` is for.
    // (Points after the switch only pause, sleep or exit: there is nothing left to fail.)
    let _ = fault::point("deploy.before-unlock").await;
    // Every outcome is on record, on every host: success, failure, or a revert.
    let paused = matches!(&result, Ok((_, _, o)) if o.data["paused"] == true);
    let (id, from, outcome) = match &result {
        Ok((id, from, _)) => (Some(id.clone()), from.clone(), Ok(())),
        Err((id, from, e)) => (id.clone(), from.clone(), Err(e)),
    };
    let record = Record {
        time: Utc::now(),
        action: "deploy".into(),
        stage: fleet.stage.name.clone(),
        actor: ctx.actor.clone(),
        command: ctx.command.clone(),
        from,
        to: id.map(|i| i.to_string()),
        reason: None,
        result: match outcome {
            Ok(()) if paused => "paused".into(),
            Ok(()) => "ok".into(),
            Err(e) => e.class().name().into(),
        },
        message: outcome.err().map(|e| e.to_string()),
        duration_ms: started.elapsed().as_millis() as u64,
    };
    lock::finish(fleet, &held, &record).await;
    result.map(|(_, _, outcome)| outcome).map_err(|(_, _, e)| e)
}

type DeployResult = std::result::Result<
    (ReleaseId, Option<String>, Outcome),
    (Option<ReleaseId>, Option<String>, Error),
>;

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
    let now = Utc::now();
    let meta = ReleaseMeta {
        id: id.clone(),
        app: stage.app.clone(),
        stage: stage.name.clone(),
        revision: archive.revision.clone(),
        state: ReleaseState::Preparing,
        created_at: now,
        updated_at: now,
        deployed_by: ctx.actor.name(),
        manifest_digest: archive.manifest.digest(),
        files: archive.manifest.file_count(),
        bytes: archive.manifest.total_bytes(),
        schema_version: None,
        migrations: vec![],
        schema: None,
        note: None,
    };
    // A broken migrations directory is found before anything is uploaded.
    let migrations = match &stage.database {
        Some(config) if config.commands.is_none() && config.framework.is_none() => Some(
            db::migrate::load(config, archive.tar.reader())
                .await
                .map_err(&fail)?,
        ),
        _ => None,
    };
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
    let receive = |previous: Option<&ReleaseId>| {
        script::receive(
            &fleet.layout,
            &id,
            previous,
            &stage.shared_files,
            &stage.shared_dirs,
            trailer_in_upload,
        )
    };

    // Upload, verify and link shared paths: harmless to every host, interruptible.
    let all = fleet.all();
    let bytes_sent = std::sync::atomic::AtomicU64::new(0);
    let linked = std::sync::atomic::AtomicUsize::new(0);
    let upload = unless_interrupted(&ctx.interrupt, async {
        fault::point("deploy.before-upload").await.map_err(|m| Error::Step { host: "-".into(), step: "upload".into(), message: m })?;
        let results = fleet
            .step_on_each(
                &all,
                "upload",
                |i| receive(uploads[i].previous.as_ref()),
                |i| Some(uploads[i].payload.clone()),
                timeouts.upload,
            )
            .await;
        // A host that could not link from its previous release gets the whole release.
        let mut full: Vec<usize> = Vec::new();
        for (i, r) in &results {
            match r {
                Ok(out) if out.success() => {}
                Ok(out) if out.code == script::EXIT_NOT_VERIFIED && uploads[*i].previous.is_some() => full.push(*i),
                Ok(out) => return Err(Error::Step { host: fleet.name(*i).into(), step: "upload".into(), message: out.message() }),
                Err(m) => return Err(Error::Step { host: fleet.name(*i).into(), step: "upload".into(), message: m.clone() }),
            }
        }
        // Every payload that travelled counts, a refused incremental one included.
        for &i in &all {
            bytes_sent.fetch_add(uploads[i].payload.len(), std::sync::atomic::Ordering::Relaxed);
        }
        let most = all.iter().filter(|i| !full.contains(i)).map(|&i| uploads[i].linked).max();
        linked.store(most.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
        if !full.is_empty() {
            for &i in &full {
                fleet.reporter.warning(Some(fleet.name(i)), "the previous release could not serve as a base (a file differs from its manifest); sending the whole release");
                bytes_sent.fetch_add(whole.len(), std::sync::atomic::Ordering::Relaxed);
            }
            let results = fleet.step_on_each(&full, "upload", |_| receive(None), |_| Some(whole.clone()), timeouts.upload).await;
            if let Some(e) = first_failure(fleet, "upload", &results) {
                return Err(e);
            }
        }
        fault::point("deploy.after-upload").await.map_err(|m| Error::Step { host: "-".into(), step: "upload".into(), message: m })
    })
    .await;
    settle(fleet, &id, &meta, upload).await.map_err(fail)?;
    let bytes_sent = bytes_sent.load(std::sync::atomic::Ordering::Relaxed);
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
                        let env = HookEnv {
                            release: &id,
                            release_path: &path,
                            deploy_to: &stage.deploy_to,
                            stage: &stage.name,
                            host: fleet.name(i),
                        };
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
                .map(|v| (Some(v), vec![], None)),
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
        if let Some(prev) = previous_meta(&states[i]) {
            records.push((
                prev.id.clone(),
                prev.with_state(ReleaseState::Ready, None).to_line(),
            ));
        }
        script::switch(&fleet.layout, Some(&id), &nonce(), &records)
    };
    let mut exec = rollout::executor::Executor {
        fleet,
        release: id.clone(),
        state: rollout_state(fleet, ctx, states, &id, prior.as_ref()),
        persist: false,
        switch: &switch,
        interrupt: ctx.interrupt.clone(),
    };
    exec.persist =
        exec.state.plan.steps.len() > 1 || stage.health.is_some() || exec.state.pool.is_some();
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
            let human = format!(
                "rollout of {} to {} paused: {id} is live on {on} of {} host(s) ({why}). Go on with `slipway rollout promote {stage}`, or go back with `slipway rollout abort {stage}`",
                stage.app,
                stage.name,
                fleet.len(),
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
            });
            return Ok((id, from, Outcome { human, data }));
        }
        Err(failure) => {
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
    let human = format!(
        "deployed {} to {} ({} host{}): {} is live{}{}",
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
        }
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
        "files": archive.manifest.file_count(),
        "linked": linked,
    });
    Ok((id, from, Outcome { human, data }))
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
    let text = m.revert(fleet, config).await;
    match error {
        Error::Reverted(msg) => Error::Reverted(format!("{msg}; database: {text}")),
        Error::Diverged(msg) => Error::Diverged(format!("{msg}; database: {text}")),
        other => other,
    }
}

/// The release `current` points at on every host, if they agree.
pub fn common_current(states: &[HostState]) -> Option<String> {
    let first = states.first()?.current()?;
    states
        .iter()
        .all(|s| s.current().as_ref() == Some(&first))
        .then(|| first.to_string())
}

/// Now, or one second after the newest release any host has (two deploys in the same
/// second, or a host clock ahead of ours), so ids stay unique and ordered.
pub fn next_release_id(states: &[HostState]) -> ReleaseId {
    let now = ReleaseId::from_time(Utc::now());
    let newest = states
        .iter()
        .flat_map(|s| {
            s.releases.iter().map(|r| r.id.clone()).chain(
                s.partials
                    .iter()
                    .filter_map(|p| ReleaseId::parse(p.trim_end_matches(".partial")).ok()),
            )
        })
        .max();
    match newest {
        Some(n) if n >= now => n.successor(),
        _ => now,
    }
}

fn previous_meta(state: &HostState) -> Option<ReleaseMeta> {
    let current = state.current()?;
    state.release(&current)?.meta.clone()
}

fn nonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// What one host receives: the payload, and the release it links unchanged files from.
struct Upload {
    payload: Arc<Input>,
    previous: Option<ReleaseId>,
    linked: usize,
}

/// Plans each host's upload: hosts whose current release has a readable manifest that
/// matches its record get only the files that changed (unchanged ones are hard-linked on
/// the host); the others get the whole release. Payloads are built once per distinct
/// previous release, not once per host. Also returns the whole-release payload, for
/// hosts that refuse their incremental one.
async fn plan_uploads(
    fleet: &Fleet,
    states: &[HostState],
    archive: &Archive,
    meta: &ReleaseMeta,
    shared: &[String],
) -> std::io::Result<(Vec<Upload>, Arc<Input>)> {
    let whole = Arc::new(release_payload(&archive.tar, archive, meta, None)?);
    // Per previous release: the incremental payload and how many files it links.
    type Built = Option<(Arc<Input>, usize)>;
    let mut by_previous: std::collections::BTreeMap<ReleaseId, Built> = Default::default();
    let mut uploads = Vec::new();
    for (i, state) in states.iter().enumerate() {
        let base = state
            .current()
            .and_then(|c| state.release(&c).and_then(|r| r.meta.clone()));
        let Some(base) = base.filter(|_| fleet.stage.link_unchanged) else {
            uploads.push(Upload {
                payload: whole.clone(),
                previous: None,
                linked: 0,
            });
            continue;
        };
        if !by_previous.contains_key(&base.id) {
            let built = match previous_manifest(fleet, i, &base).await {
                Some(old) => {
                    let d = delta::delta(&archive.manifest, &old, shared);
                    let body = delta::filter_tar(&archive.tar, &d.send)?;
                    Some((
                        Arc::new(release_payload(&body, archive, meta, Some(&d))?),
                        d.link.len(),
                    ))
                }
                None => None,
            };
            by_previous.insert(base.id.clone(), built);
        }
        match by_previous.get(&base.id).cloned().flatten() {
            Some((payload, linked)) => uploads.push(Upload {
                payload,
                previous: Some(base.id.clone()),
                linked,
            }),
            None => uploads.push(Upload {
                payload: whole.clone(),
                previous: None,
                linked: 0,
            }),
        }
    }
    Ok((uploads, whole))
}

/// The manifest of a host's current release, if it can be read and matches the digest
/// recorded in that release's record, less the files its build hooks rewrote.
async fn previous_manifest(
    fleet: &Fleet,
    i: usize,
    base: &ReleaseMeta,
) -> Option<crate::archive::Manifest> {
    let out = fleet
        .exec(
            i,
            "read-manifest",
            &script::read_manifest(&fleet.layout, &base.id),
            None,
            fleet.stage.timeouts.command,
        )
        .await
        .ok()?;
    if !out.success() {
        return None;
    }
    let marker = format!("\n{}\n", script::BUILT_OVER);
    let (text, built_over) = match out.stdout.split_once(&marker) {
        Some((manifest, paths)) => (format!("{manifest}\n"), paths),
        None => (out.stdout.clone(), ""),
    };
    // The digest is of the bytes as written then: a manifest in an older layout (one
    // that carried every digest) still matches its record and still serves as a base.
    if crate::archive::digest_of(&text) != base.manifest_digest {
        return None;
    }
    let mut manifest = crate::archive::Manifest::from_json_lines(&text).ok()?;
    // Files its build hooks rewrote are no longer the shipped ones: send them again.
    let built: std::collections::BTreeSet<&str> = built_over.lines().collect();
    manifest
        .entries
        .retain(|e| !built.contains(e.path.as_str()));
    Some(manifest)
}

/// A tar body (the whole archive, or only changed files), followed by slipway's own files
/// of the release (REVISION, the manifest, its sha256 and BLAKE2b lists, the release record, and for an
/// incremental upload the files to link with their sizes), as one tar stream.
fn release_payload(
    body: &Spool,
    archive: &Archive,
    meta: &ReleaseMeta,
    incremental: Option<&delta::Delta>,
) -> std::io::Result<Input> {
    // The body's entries, then these (tar entries do not depend on their offset).
    let mut builder = tar::Builder::new(Vec::new());
    let mut files = vec![
        (REVISION_FILE, format!("{}\n", meta.revision)),
        (RELEASE_MANIFEST, archive.manifest.to_json_lines()),
        (
            RELEASE_CHECKSUMS,
            delta::check_list(&archive.manifest, delta::Digest::Sha256),
        ),
        (
            RELEASE_CHECKSUMS_B2,
            delta::check_list(&archive.manifest, delta::Digest::Blake2b),
        ),
        (RELEASE_META, format!("{}\n", meta.to_line())),
    ];
    if let Some(d) = incremental {
        files.push((
            ".slipway/verify.sha256",
            delta::check_list_sent(&archive.manifest, d, delta::Digest::Sha256),
        ));
        files.push((
            ".slipway/verify.b2",
            delta::check_list_sent(&archive.manifest, d, delta::Digest::Blake2b),
        ));
        files.push((
            ".slipway/verify.sizes",
            delta::size_list_linked(&archive.manifest, d),
        ));
    }
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(meta.created_at.timestamp().max(0) as u64);
    builder.append_data(&mut dir, ".slipway/", std::io::empty())?;
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        header.set_mtime(meta.created_at.timestamp().max(0) as u64);
        builder.append_data(&mut header, path, content.as_bytes())?;
    }
    Ok(Input::spooled(
        Arc::clone(body.file()),
        body.body_len(),
        builder.into_inner()?,
    ))
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

/// Switches the hosts `which` back to where they were before this deploy, marks the new
/// release failed, and restarts the old release. Returns the error to report: a revert
/// (exit 1) when every host is back, or a divergence (exit 4) naming the hosts that are not.
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
    let results = fleet
        .step_on(
            which,
            "switch-back",
            |i| {
                let mut records = vec![(id.clone(), failed.to_line())];
                let previous = previous_meta(&states[i]);
                if let Some(prev) = &previous {
                    records.push((
                        prev.id.clone(),
                        prev.with_state(ReleaseState::Live, None).to_line(),
                    ));
                }
                script::switch(
                    &fleet.layout,
                    states[i].current().as_ref(),
                    &nonce(),
                    &records,
                )
            },
            None,
            fleet.stage.timeouts.command,
        )
        .await;
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
    let stuck: Vec<usize> = results
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| *i)
        .collect();
    let back: Vec<usize> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| *i)
        .collect();
    if !fleet.stage.restart_hooks.is_empty() {
        for (i, r) in futures::future::join_all(
            back.iter()
                .filter_map(|&i| states[i].current().map(|c| (i, c)))
                .map(|(i, c)| async move { (i, run_restart(fleet, &[i], &c).await) }),
        )
        .await
        {
            if r.iter().any(|(_, x)| x.is_err()) {
                fleet.reporter.warning(
                    Some(fleet.name(i)),
                    "the restart hooks of the previous release failed after switching back",
                );
            }
        }
    }
    if stuck.is_empty() {
        Error::Reverted(format!(
            "deploy of {id} failed ({why}); every host was switched back to where it was"
        ))
    } else {
        let names: Vec<&str> = stuck.iter().map(|&i| fleet.name(i)).collect();
        let target = common_current(states)
            .map(|c| format!("slipway rollback {} --to {c}", fleet.stage.name))
            .unwrap_or_else(|| format!("slipway releases {}", fleet.stage.name));
        Error::Diverged(format!(
            "deploy of {id} failed ({why}) and switching back failed on {}: those hosts may still be on {id}. Check with `slipway releases {}`, then run `{target}`",
            names.join(", "),
            fleet.stage.name,
        ))
    }
}

/// Runs the restart hooks in release `id` on hosts `which`.
pub async fn run_restart(
    fleet: &Fleet,
    which: &[usize],
    id: &ReleaseId,
) -> Vec<(usize, std::result::Result<crate::transport::Output, String>)> {
    let stage = &fleet.stage;
    fleet
        .step_on(
            which,
            "restart",
            |i| {
                let path = fleet.layout.release(id);
                let env = HookEnv {
                    release: id,
                    release_path: &path,
                    deploy_to: &stage.deploy_to,
                    stage: &stage.name,
                    host: fleet.name(i),
                };
                script::hooks("restart", &env, &stage.restart_hooks, "")
            },
            None,
            stage.timeouts.hook,
        )
        .await
}

/// Removes what retention says on each host; returns how many releases went (per host, max).
async fn prune(fleet: &Fleet, states: &[HostState], live: &ReleaseMeta) -> usize {
    let mut most = 0;
    let plans: Vec<Vec<ReleaseId>> = states
        .iter()
        .map(|s| prune_plan(s, live, fleet.stage.keep_releases))
        .collect();
    let which: Vec<usize> = fleet
        .all()
        .into_iter()
        .filter(|&i| !plans[i].is_empty())
        .collect();
    let results = fleet
        .step_on(
            &which,
            "prune",
            |i| {
                if fleet.stage.archive_pruned > 0 {
                    script::archive_and_remove(&fleet.layout, &plans[i], fleet.stage.archive_pruned)
                } else {
                    script::remove_releases(&fleet.layout, &plans[i])
                }
            },
            None,
            fleet.stage.timeouts.command,
        )
        .await;
    for (i, r) in results {
        match r {
            Ok(_) => most = most.max(plans[i].len()),
            Err(e) => fleet.reporter.warning(
                Some(fleet.name(i)),
                &format!("pruning old releases failed: {e}"),
            ),
        }
    }
    most
}

/// What retention removes on a host once `live` is current.
fn prune_plan(state: &HostState, live: &ReleaseMeta, keep: usize) -> Vec<ReleaseId> {
    let mut after = state.clone();
    if let Some(cur) = state.current()
        && let Some(entry) = after.releases.iter_mut().find(|r| r.id == cur)
        && let Some(meta) = entry.meta.as_mut()
    {
        meta.state = ReleaseState::Ready;
    }
    after.releases.retain(|r| r.id != live.id);
    after.releases.push(ReleaseEntry {
        id: live.id.clone(),
        meta: Some(live.clone()),
    });
    after.releases.sort_by(|a, b| a.id.cmp(&b.id));
    after.current_link = Some(Layout::current_target(&live.id));
    plan::prune(&after, &live.id, keep)
}

async fn append_audit(fleet: &Fleet, record: &Record) {
    let script = script::audit(&fleet.layout, &record.to_line());
    let _ = fleet
        .step_on(
            &fleet.all(),
            "audit",
            |_| script.clone(),
            None,
            fleet.stage.timeouts.command,
        )
        .await;
}

/// Appends an audit record on every host of the fleet.
pub async fn audit(fleet: &Fleet, record: &Record) {
    append_audit(fleet, record).await
}

fn build_plan(
    fleet: &Fleet,
    archive: &Archive,
    states: &[HostState],
    id: &ReleaseId,
) -> DeployPlan {
    let stage = &fleet.stage;
    let now = Utc::now();
    let live = ReleaseMeta {
        id: id.clone(),
        app: stage.app.clone(),
        stage: stage.name.clone(),
        revision: archive.revision.clone(),
        state: ReleaseState::Live,
        created_at: now,
        updated_at: now,
        deployed_by: String::new(),
        manifest_digest: archive.manifest.digest(),
        files: archive.manifest.file_count(),
        bytes: archive.manifest.total_bytes(),
        schema_version: None,
        migrations: vec![],
        schema: None,
        note: None,
    };
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let steps = vec![
        PlanStep {
            step: "lock".into(),
            detail: format!(
                "take the deploy lock ({}/.slipway/lock) on every host",
                stage.deploy_to
            ),
        },
        PlanStep {
            step: "upload".into(),
            detail: format!(
                "check shared files ({}), stream the archive ({} files, {} bytes) into releases/{id}.partial on every host, verify it against its manifest, link shared files and dirs ({}), rename to releases/{id}{}",
                list(&stage.shared_files),
                live.files,
                live.bytes,
                list(&stage.shared_dirs),
                if stage.build_hooks.is_empty() {
                    ", mark it ready"
                } else {
                    ""
                }
            ),
        },
        PlanStep {
            step: "build".into(),
            detail: if stage.build_hooks.is_empty() {
                "no build hooks: the release is ready once uploaded".into()
            } else {
                format!(
                    "build hooks in the new release, then mark it ready: {}",
                    list(&stage.build_hooks)
                )
            },
        },
        PlanStep {
            step: "switch".into(),
            detail: switch_detail(stage),
        },
        PlanStep {
            step: "restart".into(),
            detail: format!("restart hooks: {}", list(&stage.restart_hooks)),
        },
        PlanStep {
            step: "prune".into(),
            detail: format!(
                "keep {} good releases (and the rollback target)",
                stage.keep_releases
            ),
        },
        PlanStep {
            step: "audit".into(),
            detail: "append to .slipway/log.jsonl and release the lock".into(),
        },
    ];
    let hosts = states
        .iter()
        .map(|s| HostPlan {
            host: s.host.clone(),
            current: s.current().map(|c| c.to_string()),
            prune: prune_plan(s, &live, stage.keep_releases)
                .iter()
                .map(|r| r.to_string())
                .collect(),
            stale_partials: s.partials.clone(),
        })
        .collect();
    DeployPlan {
        stage: stage.name.clone(),
        release: id.clone(),
        revision: archive.revision.clone(),
        files: live.files,
        bytes: live.bytes,
        hosts,
        steps,
    }
}

/// How the switch step goes, by the stage's strategy.
fn switch_detail(stage: &crate::config::Stage) -> String {
    let gate = if stage.health.is_some() {
        ", each step restarted and health-gated"
    } else {
        ""
    };
    match &stage.rollout.strategy {
        crate::config::Strategy::AllAtOnce => format!(
            "point current at the new release on every host at once (rename of a new link){gate}"
        ),
        crate::config::Strategy::BlueGreen => {
            format!("switch the pool without traffic{gate}, then run the traffic hook")
        }
        other => {
            let names: Vec<String> = stage.hosts.iter().map(|h| h.name.clone()).collect();
            let p = rollout::plan::plan(other, &stage.app, &names);
            format!(
                "{} in {} step(s) of {} host(s){gate} (see `slipway rollout plan {}`)",
                p.strategy,
                p.steps.len(),
                p.steps
                    .iter()
                    .map(|s| s.hosts.len().to_string())
                    .collect::<Vec<_>>()
                    .join("+"),
                stage.name
            )
        }
    }
}

fn render_plan(plan: &DeployPlan) -> String {
    let mut s = format!(
        "Plan: deploy release {} (revision {}, {} files, {} bytes) to stage {} ({} host{})\n",
        plan.release,
        plan.revision,
        plan.files,
        plan.bytes,
        plan.stage,
        plan.hosts.len(),
        if plan.hosts.len() == 1 { "" } else { "s" }
    );
    for (n, step) in plan.steps.iter().enumerate() {
        s.push_str(&format!("  {}. {:<12} {}\n", n + 1, step.step, step.detail));
    }
    s.push_str("Hosts:\n");
    for h in &plan.hosts {
        s.push_str(&format!(
            "  {:<24} current: {:<18} prune: {}{}\n",
            h.host,
            h.current.as_deref().unwrap_or("(none)"),
            if h.prune.is_empty() {
                "nothing".into()
            } else {
                h.prune.join(", ")
            },
            if h.stale_partials.is_empty() {
                String::new()
            } else {
                format!("  stale uploads to remove: {}", h.stale_partials.join(", "))
            }
        ));
    }
    s
}

/// The rollout this deploy starts: the plan frozen over the stage's hosts as they are
/// now, and each host's stable release (the one it is on).
fn rollout_state(
    fleet: &Fleet,
    ctx: &Context,
    states: &[HostState],
    id: &ReleaseId,
    prior: Option<&RolloutState>,
) -> RolloutState {
    let stage = &fleet.stage;
    let names: Vec<String> = fleet
        .all()
        .iter()
        .map(|&i| fleet.name(i).to_string())
        .collect();
    let now = Utc::now();
    // Blue-green switches only the pool without traffic.
    let (plan, pool) = if stage.rollout.strategy == crate::config::Strategy::BlueGreen {
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
        live_pool: prior.and_then(|p| p.live_pool.clone()),
        pool,
        started_by: ctx.actor.name(),
        started_at: now,
        updated_at: now,
    }
}
