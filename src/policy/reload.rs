//! Keeping a policy file's set current while serving, as the TLS files
//! are: the file is polled every `GATEWAY_POLICY_RELOAD_INTERVAL_MS` and
//! compared by its SHA-256 (polling sees every way a ConfigMap volume or a
//! deploy tool replaces a file). A changed file that parses and validates
//! replaces the set for every call that starts after it; one that does not
//! is logged, once per distinct problem, and the current set kept.

use super::source::LoadedSet;
use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// A policy file and the set last loaded from it.
#[derive(Debug)]
pub(super) struct WatchedFile {
    pub variable: &'static str,
    pub path: PathBuf,
    pub current: Arc<ArcSwap<LoadedSet>>,
}

impl WatchedFile {
    /// How problems with this file are prefixed.
    pub fn origin(&self) -> String {
        format!("{} {}", self.variable, self.path.display())
    }

    /// Reads and loads the file.
    pub fn load(variable: &'static str, path: &std::path::Path) -> anyhow::Result<LoadedSet> {
        let origin = format!("{variable} {}", path.display());
        let bytes =
            std::fs::read(path).map_err(|e| anyhow::anyhow!("{origin} cannot be read: {e}"))?;
        let text =
            String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{origin} is not UTF-8 text"))?;
        LoadedSet::from_text(&text, &origin)
    }
}

pub(super) fn spawn(file: WatchedFile, interval: Duration, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut last_problem = None;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick is immediate, and the file was just read.
        ticks.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            poll(&file, &mut last_problem);
        }
    });
}

fn poll(file: &WatchedFile, last_problem: &mut Option<String>) {
    let unchanged = std::fs::read(&file.path)
        .is_ok_and(|bytes| hex::encode(Sha256::digest(&bytes)) == *file.current.load().hash);
    if unchanged {
        *last_problem = None;
        return;
    }
    match WatchedFile::load(file.variable, &file.path) {
        Ok(loaded) => {
            *last_problem = None;
            tracing::info!(
                file = %file.origin(),
                policy_set_hash = %loaded.hash,
                policies = ?loaded.policy_ids(),
                "policy file changed: calls from now on are decided by the new policies"
            );
            file.current.store(Arc::new(loaded));
        }
        Err(error) => {
            let problem = format!("{error:#}");
            if last_problem.as_ref() != Some(&problem) {
                tracing::error!(
                    error = %problem,
                    policy_set_hash = %file.current.load().hash,
                    "policy file changed but cannot be loaded; the policies in force stay in force"
                );
                *last_problem = Some(problem);
            }
        }
    }
}
