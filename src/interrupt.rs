//! Ctrl-C and SIGTERM. Before the switch, an interrupt stops the deploy and cleans up
//! (partial release removed, lock released); once switching has begun, the run finishes
//! the switch so that every host ends on one release.

use std::sync::Arc;

use tokio::sync::watch;

#[derive(Clone)]
pub struct Interrupt {
    rx: watch::Receiver<Option<&'static str>>,
}

impl Interrupt {
    /// Starts listening for SIGINT and SIGTERM.
    pub fn listen() -> Interrupt {
        let (tx, rx) = watch::channel(None);
        let tx = Arc::new(tx);
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            for (kind, name) in [
                (SignalKind::interrupt(), "SIGINT"),
                (SignalKind::terminate(), "SIGTERM"),
            ] {
                let tx = tx.clone();
                if let Ok(mut stream) = signal(kind) {
                    tokio::spawn(async move {
                        while stream.recv().await.is_some() {
                            let _ = tx.send(Some(name));
                        }
                    });
                }
            }
        }
        // Keep the sender alive for the life of the process.
        std::mem::forget(tx);
        Interrupt { rx }
    }

    /// An interrupt that never fires (for library callers and tests).
    pub fn never() -> Interrupt {
        let (tx, rx) = watch::channel(None);
        std::mem::forget(tx);
        Interrupt { rx }
    }

    /// The signal received, if any.
    pub fn received(&self) -> Option<&'static str> {
        *self.rx.borrow()
    }

    /// Resolves when a signal arrives.
    pub async fn wait(&self) -> &'static str {
        let mut rx = self.rx.clone();
        loop {
            if let Some(name) = *rx.borrow_and_update() {
                return name;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
