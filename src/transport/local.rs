//! The `local` transport: `deploy_to` on this machine, no server. It runs the very same
//! scripts as the ssh transport, through `sh`.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::Command;

use super::{Output, Reached, Stdin, Transport, TransportError, command_line, exchange, text};

pub struct LocalTransport {
    name: String,
}

impl LocalTransport {
    pub fn new(name: &str) -> LocalTransport {
        LocalTransport {
            name: name.to_string(),
        }
    }
}

#[async_trait]
impl Transport for LocalTransport {
    fn host(&self) -> &str {
        &self.name
    }

    async fn run(
        &self,
        script: &str,
        stdin: Stdin,
        timeout: Duration,
    ) -> Result<Output, TransportError> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command_line(script))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TransportError::Connect(format!("cannot start sh: {e}")))?;
        let input = child.stdin.take();
        let out = child.stdout.take();
        let err = child.stderr.take();
        let work = async move {
            let (stdout, stderr) = exchange(input, &stdin, out, err).await?;
            let status = child
                .wait()
                .await
                .map_err(|e| TransportError::Lost(e.to_string()))?;
            Ok(Output {
                code: status.code().unwrap_or(-1),
                stdout: text(stdout),
                stderr: text(stderr),
            })
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
    }

    /// The host is this machine: its ports are reached directly, no forward.
    async fn reach(&self, host: &str, port: u16) -> Result<Reached, TransportError> {
        let address = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Reached {
            address,
            forward: None,
        })
    }

    async fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::OUTPUT_LIMIT;

    #[tokio::test]
    async fn a_command_printing_more_than_the_limit_fails_and_is_not_read_to_its_end() {
        let t = LocalTransport::new("here");
        let timeout = Duration::from_secs(20);
        let exact = t
            .run(&format!("head -c {OUTPUT_LIMIT} /dev/zero"), None, timeout)
            .await
            .expect("exactly the limit is read");
        assert_eq!(exact.stdout.len(), OUTPUT_LIMIT);
        // `yes` never ends by itself: only the limit stops the reading.
        for (script, stream) in [("yes", "stdout"), ("yes >&2", "stderr")] {
            match t.run(script, None, timeout).await {
                Err(TransportError::TooMuchOutput { stream: s }) => assert_eq!(s, stream),
                other => panic!("{script}: {other:?}"),
            }
        }
    }
}
