//! How slipway reaches a host. Every remote operation is "run this `sh` script, with
//! this stdin": reading state, streaming the release archive in, switching `current`.
//! The same scripts run on every transport, so `local` exercises the code path `ssh` uses.

mod local;
mod ssh;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use local::LocalTransport;
pub use ssh::{SshOptions, SshTransport};

use crate::layout::quote;

/// What a remote script left behind.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// The script's own explanation of a failure: its last lines of stderr, each cut
    /// to 1,000 characters (a host may print anything there).
    pub fn message(&self) -> String {
        let lines: Vec<std::borrow::Cow<'_, str>> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| crate::report::clip(l, 1000))
            .collect();
        let tail = &lines[lines.len().saturating_sub(5)..];
        if tail.is_empty() {
            format!("exit status {}", self.code)
        } else {
            crate::redact::scrub(&tail.join("; "))
        }
    }
}

/// Failures of the transport itself (as opposed to a script that ran and failed).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error(
        "the host key is not known (refused: known_hosts = strict). If this is the right host, trust it with: ssh-keyscan {keyscan} >> ~/.ssh/known_hosts (compare the fingerprint with the host first), or set known_hosts = \"accept-new\" in [ssh]"
    )]
    UnknownHostKey { keyscan: String },
    #[error(
        "THE HOST KEY HAS CHANGED: this may be a machine in the middle, or a reinstalled host. Refusing to connect. Verify the new key out of band, then remove the old one with: ssh-keygen -R {host}"
    )]
    ChangedHostKey { host: String },
    #[error("connection lost: {0}")]
    Lost(String),
    #[error(
        "no answer within {0:?} (the step's timeout; raise it in [timeouts] if the step is slow)"
    )]
    Timeout(Duration),
    /// The host printed more than a step's answer may hold: slipway stopped reading
    /// (its memory is bounded whatever a host sends).
    #[error(
        "the host printed more than {} on {stream}; slipway stops reading there (no answer of slipway's own scripts is that large: a hook or a login script printing that much should write to a file instead)",
        crate::report::human_bytes(OUTPUT_LIMIT as u64)
    )]
    TooMuchOutput { stream: &'static str },
}

/// The most slipway reads from one stream (stdout or stderr) of one remote command.
/// A host that prints more (a broken or hostile host, a runaway hook) fails that step:
/// the deployer's memory stays bounded by this, per stream and per running step.
pub const OUTPUT_LIMIT: usize = 32 * 1024 * 1024;

/// Where a forwarded connection goes, as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Tcp {
        host: String,
        port: u16,
    },
    /// A Unix socket file on the host.
    Unix(String),
}

/// An address on this machine that reaches a host's port, see [`Transport::reach`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reached {
    /// `address:port` to connect to from this machine.
    pub address: String,
    /// The ssh forward behind it, if any.
    pub forward: Option<(u16, Remote)>,
}

/// What a script reads on its stdin: a region of a spooled file (the release archive,
/// read back at this reader's own offset) followed by bytes in memory. Shared by every
/// host without copying.
#[derive(Debug, Default)]
pub struct Input {
    spool: Option<(Arc<std::fs::File>, u64)>,
    tail: Vec<u8>,
}

impl Input {
    pub fn bytes(bytes: Vec<u8>) -> Input {
        Input {
            spool: None,
            tail: bytes,
        }
    }

    /// The first `len` bytes of `file`, then `tail`.
    pub fn spooled(file: Arc<std::fs::File>, len: u64, tail: Vec<u8>) -> Input {
        Input {
            spool: Some((file, len)),
            tail,
        }
    }

    pub fn len(&self) -> u64 {
        self.spool.as_ref().map_or(0, |(_, len)| *len) + self.tail.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `buf.len()` bytes at `offset` (of the spooled region, then the tail);
    /// 0 at the end.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let spooled = self.spool.as_ref().map_or(0, |(_, len)| *len);
        if offset < spooled {
            use std::os::unix::fs::FileExt;
            let (file, _) = self.spool.as_ref().expect("a spool when spooled > 0");
            let want = buf
                .len()
                .min(usize::try_from(spooled - offset).unwrap_or(usize::MAX));
            file.read_exact_at(&mut buf[..want], offset)?;
            return Ok(want);
        }
        let at = usize::try_from(offset - spooled).unwrap_or(usize::MAX);
        let rest = self.tail.get(at..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }

    /// Writes the whole input, in order, to `out` (for re-encoding it, e.g. compressed).
    pub fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        if let Some((file, len)) = &self.spool {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; CHUNK];
            let mut offset = 0u64;
            while offset < *len {
                let want = CHUNK.min(usize::try_from(len - offset).unwrap_or(CHUNK));
                file.read_exact_at(&mut buf[..want], offset)?;
                out.write_all(&buf[..want])?;
                offset += want as u64;
            }
        }
        out.write_all(&self.tail)
    }
}

/// A script's stdin, if it reads one.
pub type Stdin = Option<Arc<Input>>;

/// How much of an upload is read and written at a time.
const CHUNK: usize = 256 * 1024;

#[async_trait]
pub trait Transport: Send + Sync {
    /// The host's name in messages.
    fn host(&self) -> &str;

    /// Runs `script` with `sh` on the host, feeding it `stdin`, within `timeout`.
    async fn run(
        &self,
        script: &str,
        stdin: Stdin,
        timeout: Duration,
    ) -> Result<Output, TransportError>;

    /// Opens a local port forward: a connection to 127.0.0.1:`local_port` on this
    /// machine reaches `remote` as the host sees it. Only ssh can.
    async fn forward(&self, local_port: u16, remote: &Remote) -> Result<(), TransportError> {
        let _ = (local_port, remote);
        Err(TransportError::Connect(
            "this transport cannot forward ports: a database tunnel needs transport = \"ssh\""
                .into(),
        ))
    }

    /// Closes a forward opened by [`Transport::forward`].
    async fn close_forward(&self, local_port: u16, remote: &Remote) {
        let _ = (local_port, remote);
    }

    /// A TCP address on this machine that reaches `host:port` as the host sees it (for
    /// health checks of an app port that is not exposed). ssh: a local port forward on a
    /// free loopback port (ssh cannot report a port it chose, so we pick one; another
    /// process could take it in between: retried). Close it with [`Transport::unreach`].
    async fn reach(&self, host: &str, port: u16) -> Result<Reached, TransportError> {
        let remote = Remote::Tcp {
            host: host.to_string(),
            port,
        };
        let mut last = TransportError::Connect("no free local port".into());
        for _ in 0..5 {
            let local = std::net::TcpListener::bind(("127.0.0.1", 0))
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| TransportError::Connect(format!("no free local port: {e}")))?;
            match self.forward(local, &remote).await {
                Ok(()) => {
                    return Ok(Reached {
                        address: format!("127.0.0.1:{local}"),
                        forward: Some((local, remote)),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Closes what [`Transport::reach`] opened.
    async fn unreach(&self, reached: &Reached) {
        if let Some((local, remote)) = &reached.forward {
            self.close_forward(*local, remote).await;
        }
    }

    /// Ends the connection (for ssh: the master exits unless it should persist).
    async fn close(&self);

    /// Whether this connection was reused from an earlier run (no new handshake).
    fn reused(&self) -> bool {
        false
    }
}

/// Feeds `stdin` to a child's input while draining its stdout and stderr, returning
/// both. Concurrently: a script that writes a lot before reading its input would
/// otherwise deadlock against us. A script that exits early closes its stdin: that is
/// not an error of ours, its exit status says what happened. Either stream longer than
/// [`OUTPUT_LIMIT`] ends the exchange at once with [`TransportError::TooMuchOutput`]
/// (the caller drops the child, which ends the remote command).
pub(crate) async fn exchange(
    input: Option<impl tokio::io::AsyncWrite + Unpin>,
    stdin: &Stdin,
    out: Option<impl tokio::io::AsyncRead + Unpin>,
    err: Option<impl tokio::io::AsyncRead + Unpin>,
) -> Result<(Vec<u8>, Vec<u8>), TransportError> {
    let feed = async {
        if let (Some(mut pipe), Some(bytes)) = (input, stdin.as_ref()) {
            feed(&mut pipe, bytes).await;
        }
        Ok(())
    };
    let ((), stdout, stderr) = tokio::try_join!(
        feed,
        drain(out, "stdout", OUTPUT_LIMIT),
        drain(err, "stderr", OUTPUT_LIMIT)
    )?;
    Ok((stdout, stderr))
}

/// Reads `pipe` to its end, or fails once it has given more than `limit` bytes.
async fn drain(
    pipe: Option<impl tokio::io::AsyncRead + Unpin>,
    stream: &'static str,
    limit: usize,
) -> Result<Vec<u8>, TransportError> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let Some(pipe) = pipe else {
        return Ok(buf);
    };
    // One byte more than the limit tells "exactly the limit" from "more".
    let mut pipe = pipe.take(limit as u64 + 1);
    let _ = pipe.read_to_end(&mut buf).await;
    if buf.len() > limit {
        return Err(TransportError::TooMuchOutput { stream });
    }
    Ok(buf)
}

/// Bytes a host printed, as text: invalid UTF-8 becomes U+FFFD (no copy when valid).
pub(crate) fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Exit status a script reports when a command was not found (127 is remapped: the ssh
/// layer cannot tell a missing `sh` from a missing hook command, and loses the output).
pub const EXIT_NOT_FOUND: i32 = 126;

/// The command line that runs `script`: `sh` reads it from its `-c` argument, and 127
/// ("command not found") comes back as 126 with its message intact, by an exit trap in
/// the same shell (one process per step on the host, not a wrapper shell and a child).
pub fn command_line(script: &str) -> String {
    let body = format!(
        "trap 'rc=$?; if [ \"$rc\" -eq 127 ]; then echo \"slipway: a command was not found on this host (exit status 127)\" >&2; exit {EXIT_NOT_FOUND}; fi' EXIT\n{script}"
    );
    format!("exec sh -c {}", quote(&body))
}

/// Told how many bytes of a step's stdin have been written so far (the upload's
/// progress). Set for the duration of one run with [`with_progress`].
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

tokio::task_local! {
    static PROGRESS: Progress;
}

/// Runs `future` (one transport run) with `progress` told about every chunk of stdin
/// written. A task-local rather than a parameter: every transport reports through
/// [`feed`] without the `Transport` trait growing an argument only uploads use.
pub async fn with_progress<F: std::future::Future>(progress: Progress, future: F) -> F::Output {
    PROGRESS.scope(progress, future).await
}

/// Writes `input` to a script's stdin in chunks, reporting progress, then closes it.
/// A script that exits early closes its stdin: not an error of ours. If the spooled
/// file cannot be read, the stream stops short: the host's `tar` reports it truncated
/// and the step fails there.
pub async fn feed<W: tokio::io::AsyncWrite + Unpin>(pipe: &mut W, input: &Input) {
    use tokio::io::AsyncWriteExt;
    let progress = PROGRESS.try_with(Arc::clone).ok();
    let mut sent = 0u64;
    let mut wrote = async |pipe: &mut W, chunk: &[u8]| -> bool {
        if pipe.write_all(chunk).await.is_err() {
            return false;
        }
        sent += chunk.len() as u64;
        if let Some(p) = &progress {
            p(sent);
        }
        true
    };
    if let Some((file, len)) = &input.spool {
        let mut buf = vec![0u8; CHUNK];
        let mut offset = 0u64;
        while offset < *len {
            let want = CHUNK.min(usize::try_from(len - offset).unwrap_or(CHUNK));
            let file = Arc::clone(file);
            let read = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let got = file.read_exact_at(&mut buf[..want], offset);
                (buf, got)
            })
            .await;
            let Ok((back, Ok(()))) = read else {
                let _ = pipe.shutdown().await;
                return;
            };
            buf = back;
            if !wrote(pipe, &buf[..want]).await {
                return;
            }
            offset += want as u64;
        }
    }
    for chunk in input.tail.chunks(CHUNK) {
        if !wrote(pipe, chunk).await {
            break;
        }
    }
    let _ = pipe.shutdown().await;
}
