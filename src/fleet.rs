//! The hosts of a stage, connected, and the running of one step on many of them at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::sync::Semaphore;

use crate::config::{Stage, TransportKind};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::report::Reporter;
use crate::transport::{
    LocalTransport, Output, Progress, SshOptions, SshTransport, Stdin, Transport, TransportError,
    with_progress,
};

/// Why a step failed on a host: the transport (no connection, lost, timed out), or the
/// script ran and exited non-zero (its message: the last lines of its stderr).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepError {
    #[error("{0}")]
    Transport(#[from] TransportError),
    #[error("{message}")]
    Exit { code: i32, message: String },
}

impl StepError {
    /// The step's timeout ran out (the host may still carry it out later).
    pub fn is_timeout(&self) -> bool {
        matches!(self, StepError::Transport(TransportError::Timeout(_)))
    }
}

/// Text where a caller only reports the failure.
impl From<StepError> for String {
    fn from(e: StepError) -> String {
        e.to_string()
    }
}

/// A step's result on one host.
pub type StepResult = std::result::Result<Output, StepError>;

/// At most this many ssh handshakes at once: each costs client CPU (key exchange), and
/// a burst of them on a small machine only slows every one down.
const CONCURRENT_CONNECTS: usize = 16;

/// At most this many archive streams at once: beyond that, hosts only share the same
/// CPU (encryption) and bandwidth, and every upload finishes later.
const CONCURRENT_UPLOADS: usize = 16;

pub struct Fleet {
    pub stage: Stage,
    pub layout: Layout,
    pub hosts: Vec<Arc<dyn Transport>>,
    pub reporter: Arc<Reporter>,
    uploads: Semaphore,
    /// The stage's index of each connected host (a fleet of the reachable hosts only
    /// skips some): host `i` of the fleet is `stage.hosts[stage_index[i]]`.
    stage_index: Vec<usize>,
}

impl Fleet {
    /// Connects to every host of the stage in parallel. All or nothing: if one host
    /// cannot be reached, the others are closed and nothing has been touched.
    pub async fn connect(stage: &Stage, reporter: Arc<Reporter>) -> Result<Fleet> {
        let (fleet, failures) = Fleet::connect_reachable(stage, reporter).await;
        if let Some((name, error)) = failures.into_iter().next() {
            for h in &fleet.hosts {
                h.close().await;
            }
            return Err(Error::Step {
                host: name,
                step: "connect".into(),
                message: error,
            });
        }
        Ok(fleet)
    }

    /// Connects to every host it can, for read-only commands that must say where every
    /// host stands even when some are down (`status`): the fleet of reachable hosts, and
    /// each unreachable host with its error. Indexes of this fleet are not the stage's
    /// host indexes: [`Fleet::host_config`] maps them.
    pub async fn connect_reachable(
        stage: &Stage,
        reporter: Arc<Reporter>,
    ) -> (Fleet, Vec<(String, String)>) {
        let layout = Layout::new(&stage.deploy_to);
        // `[rollout] max_parallel` bounds new connections too.
        let limit = Semaphore::new(CONCURRENT_CONNECTS.min(stage.rollout.max_parallel.max(1)));
        let options = SshOptions {
            ssh: stage.ssh.clone(),
        };
        let attempts = stage.hosts.iter().map(|host| {
            let limit = &limit;
            let options = &options;
            let reporter = &reporter;
            async move {
                let _permit = limit.acquire().await;
                let started = Instant::now();
                reporter.started(&host.name, "connect");
                let result: std::result::Result<Arc<dyn Transport>, TransportError> =
                    match stage.transport {
                        TransportKind::Local => Ok(Arc::new(LocalTransport::new(&host.name))),
                        TransportKind::Ssh => SshTransport::connect(host, options)
                            .await
                            .map(|t| Arc::new(t) as Arc<dyn Transport>),
                    };
                match &result {
                    Ok(t) => {
                        if stage.transport == TransportKind::Ssh {
                            let how = if t.reused() {
                                "reused an open connection"
                            } else {
                                "new connection"
                            };
                            reporter.finished(&host.name, "connect", started.elapsed(), Some(how))
                        }
                    }
                    Err(e) => {
                        reporter.failed(&host.name, "connect", started.elapsed(), &e.to_string())
                    }
                }
                (host.name.clone(), result)
            }
        });
        let results = join_all(attempts).await;
        let mut hosts = Vec::new();
        let mut stage_index = Vec::new();
        let mut failures = Vec::new();
        for (n, (name, result)) in results.into_iter().enumerate() {
            match result {
                Ok(t) => {
                    hosts.push(t);
                    stage_index.push(n);
                }
                Err(e) => failures.push((name, e)),
            }
        }
        let fleet = Fleet {
            stage: stage.clone(),
            layout,
            hosts,
            reporter,
            uploads: Semaphore::new(CONCURRENT_UPLOADS.min(stage.rollout.max_parallel.max(1))),
            stage_index,
        };
        let failures = failures
            .into_iter()
            .map(|(name, e)| (name, e.to_string()))
            .collect();
        (fleet, failures)
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn name(&self, i: usize) -> &str {
        self.hosts[i].host()
    }

    /// The hook environment of host `i` in release `release` (at `path`, the release's
    /// directory: `self.layout.release(release)`).
    pub fn hook_env<'a>(
        &'a self,
        i: usize,
        release: &'a crate::layout::ReleaseId,
        path: &'a str,
    ) -> crate::script::HookEnv<'a> {
        crate::script::HookEnv {
            release,
            release_path: path,
            deploy_to: &self.stage.deploy_to,
            stage: &self.stage.name,
            host: self.name(i),
        }
    }

    /// The configuration of fleet host `i` (its roles, pool, address).
    pub fn host_config(&self, i: usize) -> &crate::config::Host {
        &self.stage.hosts[self.stage_index[i]]
    }

    pub fn all(&self) -> Vec<usize> {
        (0..self.hosts.len()).collect()
    }

    /// Runs one step's script on host `i` and reports it. Returns the output whatever
    /// the exit status; transport failures are `Err`.
    pub async fn exec(
        &self,
        i: usize,
        step: &str,
        script: &str,
        stdin: Stdin,
        timeout: Duration,
    ) -> StepResult {
        let host = self.hosts[i].host();
        // Only archive streams carry stdin; they take a slot.
        let _slot = match &stdin {
            Some(_) => Some(
                self.uploads
                    .acquire()
                    .await
                    .map_err(|e| StepError::Transport(TransportError::Lost(e.to_string())))?,
            ),
            None => None,
        };
        let started = Instant::now();
        self.reporter.started(host, step);
        let run = self.hosts[i].run(script, stdin.clone(), timeout);
        let result = match &stdin {
            Some(bytes) => {
                let total = bytes.len();
                let reporter = self.reporter.clone();
                let name = host.to_string();
                let progress: Progress = Arc::new(move |sent| reporter.bytes(&name, sent, total));
                with_progress(progress, run).await
            }
            None => run.await,
        };
        match result {
            Ok(output) => {
                self.reporter.detail(host, &output.stdout);
                self.reporter.detail(host, &output.stderr);
                Ok(output)
            }
            Err(e) => {
                self.reporter
                    .failed(host, step, started.elapsed(), &e.to_string());
                Err(e.into())
            }
        }
    }

    /// Runs a step on host `i`; a non-zero exit is a failure carrying the script's message.
    pub async fn step(
        &self,
        i: usize,
        step: &str,
        script: &str,
        stdin: Stdin,
        timeout: Duration,
    ) -> StepResult {
        let host = self.hosts[i].host();
        let started = Instant::now();
        let output = self.exec(i, step, script, stdin, timeout).await?;
        if output.success() {
            self.reporter.finished(host, step, started.elapsed(), None);
            Ok(output)
        } else {
            let message = output.message();
            self.reporter
                .failed(host, step, started.elapsed(), &message);
            Err(StepError::Exit {
                code: output.code,
                message,
            })
        }
    }

    /// Runs a step on the hosts `which`, in parallel; `script(i)` builds host i's script.
    pub async fn step_on<F>(
        &self,
        which: &[usize],
        step: &str,
        script: F,
        stdin: Stdin,
        timeout: Duration,
    ) -> Vec<(usize, StepResult)>
    where
        F: Fn(usize) -> String,
    {
        let runs = which.iter().map(|&i| {
            let text = script(i);
            let stdin = stdin.clone();
            async move { (i, self.step(i, step, &text, stdin, timeout).await) }
        });
        join_all(runs).await
    }

    /// Like [`Fleet::step_on`], with each host's own stdin, returning the raw output
    /// (whatever the exit status) so the caller can act on specific codes.
    pub async fn step_on_each<F, G>(
        &self,
        which: &[usize],
        step: &str,
        script: F,
        stdin: G,
        timeout: Duration,
    ) -> Vec<(usize, StepResult)>
    where
        F: Fn(usize) -> String,
        G: Fn(usize) -> Stdin,
    {
        let runs = which.iter().map(|&i| {
            let text = script(i);
            let stdin = stdin(i);
            async move {
                let host = self.hosts[i].host();
                let started = Instant::now();
                let result = self.exec(i, step, &text, stdin, timeout).await;
                match &result {
                    Ok(out) if out.success() => {
                        self.reporter.finished(host, step, started.elapsed(), None)
                    }
                    Ok(out) => self
                        .reporter
                        .failed(host, step, started.elapsed(), &out.message()),
                    Err(_) => {}
                }
                (i, result)
            }
        });
        join_all(runs).await
    }

    /// Runs the same script on every host as a best-effort step (cleanup, records, the
    /// audit log): a host where it fails is reported as a warning, `could not {what}`,
    /// and the run goes on.
    pub async fn on_all_best_effort(&self, step: &str, script: &str, what: &str) {
        let results = self
            .step_on(
                &self.all(),
                step,
                |_| script.to_string(),
                None,
                self.stage.timeouts.command,
            )
            .await;
        for (i, r) in results {
            if let Err(e) = r {
                self.reporter
                    .warning(Some(self.name(i)), &format!("could not {what}: {e}"));
            }
        }
    }

    pub async fn close(&self) {
        join_all(self.hosts.iter().map(|h| h.close())).await;
    }
}

/// The first failure of a parallel step, as an error naming host and step.
pub fn first_failure(fleet: &Fleet, step: &str, results: &[(usize, StepResult)]) -> Option<Error> {
    results.iter().find_map(|(i, r)| {
        r.as_ref().err().map(|message| Error::Step {
            host: fleet.name(*i).to_string(),
            step: step.to_string(),
            message: message.to_string(),
        })
    })
}
