//! Keeping the TLS configuration current while serving. cert-manager (or a
//! Secret volume update) replaces the certificate, key and CA files in
//! place, and restarting to pick them up would drop calls in flight.
//!
//! The files' contents are polled every `GATEWAY_TLS_RELOAD_INTERVAL_MS`
//! and compared by fingerprint. Polling sees every way a file can be
//! replaced (a Secret volume's symlink swap, a rename, a write in place)
//! where change notifications miss some, and reading three small files
//! every few seconds costs nothing. A changed set is published through a
//! `watch` channel that the acceptor reads once per new connection, so
//! established connections keep the configuration they were accepted with.
//! A set that does not load (unreadable, not PEM, a key that does not match
//! the certificate, as between two files of a rotation) is logged and the
//! current configuration kept; the next change is tried afresh.

use super::{Contents, Fingerprint, Loaded};
use crate::settings::TlsFiles;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

/// Publishes `loaded`, then whatever the files change to, until `stop` or
/// until nobody is listening.
pub(super) fn spawn(
    files: TlsFiles,
    loaded: Loaded,
    stop: CancellationToken,
) -> watch::Receiver<Arc<ServerConfig>> {
    let (configs, receiver) = watch::channel(loaded.config);
    tokio::spawn(async move {
        let mut watcher = Watcher {
            files,
            current: loaded.fingerprint,
            last_problem: None,
        };
        let mut ticks = tokio::time::interval(watcher.files.reload_interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick is immediate, and the files were just read.
        ticks.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = configs.closed() => return,
                _ = ticks.tick() => {}
            }
            if let Some(config) = watcher.poll() {
                configs.send_replace(config);
            }
        }
    });
    receiver
}

struct Watcher {
    files: TlsFiles,
    /// The contents the published configuration was built from.
    current: Fingerprint,
    /// What was last logged about a failed load, so that a file left
    /// broken is reported once, not on every poll.
    last_problem: Option<String>,
}

impl Watcher {
    /// A new configuration, if the files changed and load.
    fn poll(&mut self) -> Option<Arc<ServerConfig>> {
        let loaded = Contents::read(&self.files).and_then(|contents| {
            if contents.fingerprint() == self.current {
                return Ok(None);
            }
            contents.load(&self.files).map(Some)
        });
        match loaded {
            Ok(None) => {
                self.last_problem = None;
                None
            }
            Ok(Some(loaded)) => {
                self.current = loaded.fingerprint;
                self.last_problem = None;
                tracing::info!(
                    cert = %self.files.cert.display(),
                    client_ca = self.files.client_ca.as_ref().map(|p| p.display().to_string()),
                    "TLS certificate files changed: new connections get the new configuration"
                );
                Some(loaded.config)
            }
            Err(error) => {
                let problem = format!("{error:#}");
                if self.last_problem.as_ref() != Some(&problem) {
                    tracing::warn!(
                        error = %problem,
                        "TLS certificate files changed but cannot be loaded; still serving the previous certificate"
                    );
                    self.last_problem = Some(problem);
                }
                None
            }
        }
    }
}
