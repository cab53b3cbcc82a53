//! The `ssh` transport: system ssh through the `openssh` crate, one multiplexed master
//! connection per host. The user's ssh config, agent and known_hosts apply as they do
//! for `ssh` on the command line.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use tokio::sync::Semaphore;

use super::{Output, Remote, Stdin, Transport, TransportError, command_line, exchange, text};
use crate::config::{Host, KnownHostsPolicy, Ssh};

/// Stock sshd allows 10 sessions per connection (MaxSessions); beyond about 6-8
/// concurrent channels, opens are refused. Stay well below.
const CHANNELS_PER_HOST: usize = 4;

/// The master exits by itself after this long without a client, so that a deployer
/// killed with SIGKILL does not leave ssh processes behind forever.
const MASTER_IDLE_SECONDS: usize = 120;

/// How to connect: the stage's ssh settings.
#[derive(Debug, Clone)]
pub struct SshOptions {
    pub ssh: Ssh,
}

pub struct SshTransport {
    name: String,
    session: Mutex<Option<Arc<Session>>>,
    channels: Semaphore,
    /// Where to record the master for the next run, when connections persist.
    persist_record: Option<PathBuf>,
    reused: bool,
}

impl SshTransport {
    pub async fn connect(
        host: &Host,
        options: &SshOptions,
    ) -> Result<SshTransport, TransportError> {
        let ssh = &options.ssh;
        let dir = control_directory().map_err(TransportError::Connect)?;
        let persist_record = (!ssh.persist.is_zero())
            .then(|| dir.join(format!("{}.master", connection_key(host, ssh))));
        // A master left by a recent run: reuse it if it still answers, skipping the
        // handshake entirely. A dead one is forgotten and replaced.
        if let Some(record) = &persist_record
            && let Some(session) = resume(record).await
        {
            return Ok(SshTransport {
                name: host.name.clone(),
                session: Mutex::new(Some(Arc::new(session))),
                channels: Semaphore::new(CHANNELS_PER_HOST),
                persist_record,
                reused: true,
            });
        }
        let idle = if ssh.persist.is_zero() {
            MASTER_IDLE_SECONDS
        } else {
            ssh.persist.as_secs().max(1) as usize
        };
        let mut builder = SessionBuilder::default();
        builder
            .known_hosts_check(match ssh.known_hosts {
                KnownHostsPolicy::Strict => KnownHosts::Strict,
                // `Add` is ssh's accept-new: unknown keys are recorded, changed keys refused.
                KnownHostsPolicy::AcceptNew => KnownHosts::Add,
            })
            .control_persist(ControlPersist::IdleFor(
                std::num::NonZeroUsize::new(idle).unwrap_or(std::num::NonZeroUsize::MIN),
            ))
            .control_directory(&dir)
            .connect_timeout(ssh.connect_timeout)
            .server_alive_interval(Duration::from_secs(15));
        if let Some(user) = host.user.as_ref().or(ssh.user.as_ref()) {
            builder.user(user.clone());
        }
        if let Some(port) = host.port.or(ssh.port) {
            builder.port(port);
        }
        if let Some(key) = &ssh.identity_file {
            builder.keyfile(key);
        }
        if let Some(config) = &ssh.config_file {
            builder.config_file(config);
        }
        let session = builder
            .connect_mux(&host.address)
            .await
            .map_err(|e| classify_connect_error(host, e))?;
        Ok(SshTransport {
            name: host.name.clone(),
            session: Mutex::new(Some(Arc::new(session))),
            channels: Semaphore::new(CHANNELS_PER_HOST),
            persist_record,
            reused: false,
        })
    }

    fn session(&self) -> Result<Arc<Session>, TransportError> {
        let guard = self
            .session
            .lock()
            .map_err(|_| TransportError::Lost("session state poisoned".into()))?;
        guard
            .clone()
            .ok_or_else(|| TransportError::Lost("the connection was closed".into()))
    }

    async fn run_once(&self, command: &str, stdin: &Stdin) -> Result<Output, Failure> {
        let session = self.session().map_err(Failure::Transport)?;
        let mut child = session
            .raw_command(command)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .await
            .map_err(|e| Failure::Ssh(describe(&e)))?;
        let input = child.stdin().take();
        let out = child.stdout().take();
        let err = child.stderr().take();
        // Too much output: the child is dropped here, which closes the channel (the
        // remote command then dies of SIGPIPE at its next write).
        let (stdout, stderr) = exchange(input, stdin, out, err)
            .await
            .map_err(Failure::Transport)?;
        let status = child.wait().await.map_err(|e| Failure::Ssh(describe(&e)))?;
        Ok(Output {
            code: status.code().unwrap_or(-1),
            stdout: text(stdout),
            stderr: text(stderr),
        })
    }
}

#[async_trait]
impl Transport for SshTransport {
    fn host(&self) -> &str {
        &self.name
    }

    async fn run(
        &self,
        script: &str,
        stdin: Stdin,
        timeout: Duration,
    ) -> Result<Output, TransportError> {
        let command = command_line(script);
        let work = async {
            let _permit = self
                .channels
                .acquire()
                .await
                .map_err(|_| TransportError::Lost("closed".into()))?;
            let mut attempt = 0;
            loop {
                match self.run_once(&command, &stdin).await {
                    Ok(output) => return Ok(output),
                    // sshd refuses channels beyond MaxSessions; that passes when others end.
                    Err(Failure::Ssh(e)) if attempt < 5 && e.contains("refused") => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                    }
                    Err(Failure::Ssh(e)) => return Err(TransportError::Lost(e)),
                    Err(Failure::Transport(e)) => return Err(e),
                }
            }
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
    }

    async fn forward(&self, local_port: u16, remote: &Remote) -> Result<(), TransportError> {
        let session = self.session()?;
        session
            .request_port_forward(
                openssh::ForwardType::Local,
                openssh::Socket::new("127.0.0.1", local_port),
                remote_socket(remote),
            )
            .await
            .map_err(|e| {
                TransportError::Connect(format!("cannot open the port forward: {}", describe(&e)))
            })
    }

    async fn close_forward(&self, local_port: u16, remote: &Remote) {
        if let Ok(session) = self.session() {
            let _ = session
                .close_port_forward(
                    openssh::ForwardType::Local,
                    openssh::Socket::new("127.0.0.1", local_port),
                    remote_socket(remote),
                )
                .await;
        }
    }

    fn reused(&self) -> bool {
        self.reused
    }

    async fn close(&self) {
        let session = self.session.lock().ok().and_then(|mut s| s.take());
        let Some(session) = session.and_then(|s| Arc::try_unwrap(s).ok()) else {
            return;
        };
        match &self.persist_record {
            // Leave the master running (it exits by itself after `persist` idle) and
            // record where it is, for the next run.
            Some(record) => {
                let (control, _log) = session.detach();
                let tmp = record.with_extension("tmp");
                if std::fs::write(&tmp, control.as_os_str().as_encoded_bytes()).is_ok() {
                    let _ = std::fs::rename(&tmp, record);
                }
            }
            None => {
                let _ = session.close().await;
            }
        }
    }
}

/// Why one attempt to run a command failed: ssh itself (retried when sshd refused a
/// channel), or what the host sent (never retried).
enum Failure {
    Ssh(String),
    Transport(TransportError),
}

fn remote_socket(remote: &Remote) -> openssh::Socket<'static> {
    match remote {
        Remote::Tcp { host, port } => openssh::Socket::new(host.clone(), *port),
        Remote::Unix(path) => PathBuf::from(path).into(),
    }
}

/// Reattaches to the master recorded in `record`, if it is alive.
async fn resume(record: &std::path::Path) -> Option<Session> {
    let bytes = std::fs::read(record).ok()?;
    let control = PathBuf::from(std::ffi::OsStr::from_bytes(&bytes));
    // Only sockets in our private control directory are trusted.
    if control.parent().and_then(|p| p.parent()) != record.parent() || !control.exists() {
        let _ = std::fs::remove_file(record);
        return None;
    }
    let session = Session::resume_mux(control.into_boxed_path(), None);
    match tokio::time::timeout(Duration::from_secs(2), session.check()).await {
        Ok(Ok(())) => Some(session),
        _ => {
            let _ = std::fs::remove_file(record);
            None
        }
    }
}

/// Names a reusable connection by everything that shapes it: a master opened for one
/// user, port, key, ssh config or host-key policy is never reused for another.
fn connection_key(host: &Host, ssh: &Ssh) -> String {
    let identity = format!(
        "{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        host.address,
        host.user.as_ref().or(ssh.user.as_ref()),
        host.port.or(ssh.port),
        ssh.identity_file,
        ssh.config_file,
        ssh.known_hosts,
        ssh.connect_timeout
    );
    blake3::hash(identity.as_bytes()).to_hex()[..24].to_string()
}

fn describe(error: &openssh::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn classify_connect_error(host: &Host, error: openssh::Error) -> TransportError {
    let text = describe(&error);
    if text.contains("IDENTIFICATION HAS CHANGED")
        || text.contains("Host key for") && text.contains("has changed")
    {
        return TransportError::ChangedHostKey {
            host: keyscan_name(host, false),
        };
    }
    if text.contains("Host key verification failed")
        || text.contains("No ED25519 host key is known")
        || text.contains("host key is known")
    {
        return TransportError::UnknownHostKey {
            keyscan: keyscan_name(host, true),
        };
    }
    TransportError::Connect(text)
}

fn keyscan_name(host: &Host, for_keyscan: bool) -> String {
    match (host.port, for_keyscan) {
        (Some(p), true) => format!("-p {p} {}", host.address),
        (Some(p), false) => format!("'[{}]:{p}'", host.address),
        (None, _) => host.address.clone(),
    }
}

/// A short, private directory for control sockets (ssh appends its own name, and a
/// Unix socket path must stay under ~108 bytes).
fn control_directory() -> Result<PathBuf, String> {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir().join(format!("slipway-{uid}"));
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(0o700);
    match builder.create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(&dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    // Another user could pre-create the directory to watch or hijack our sockets.
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} is not a private directory of this user (mode 0700, owned by uid {uid}); remove it and try again",
            dir.display()
        ));
    }
    Ok(dir)
}
