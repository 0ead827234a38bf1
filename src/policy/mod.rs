//! Who may do what to which disk, decided by Cedar policies evaluated in
//! the process: the caller (from its token and certificate), the action
//! (`ReleaseDisk`, `GetRelease`), the disk as the pre-flight saw it (its
//! attributes, and its Zenlayer tags as the entity's tags) and the call's
//! context (time, reason, idempotency key, address).
//!
//! The policies come from `GATEWAY_POLICY_FILE`, or are the defaults that
//! say what the gateway did before policies ([`default_policy_text`]).
//! They are validated strictly against the embedded schema when loaded,
//! and built once per load: a call only reads the current set through an
//! `ArcSwap`, so deciding costs microseconds and never parses anything.
//! A second set (`GATEWAY_POLICY_SHADOW_FILE`) is evaluated beside the
//! enforced one and only recorded, so a stricter policy can be watched
//! against real traffic before it is enforced.

mod entities;
mod facts;
mod reload;
mod schema;
mod source;
mod verdict;

#[cfg(test)]
mod tests;

pub use facts::{CallerFacts, ReadFacts, ReleaseFacts};
pub use schema::SCHEMA_TEXT;
pub use source::{LoadedSet, default_policy_text};
pub use verdict::Verdict;

use crate::settings::PolicySettings;
use arc_swap::ArcSwap;
use cedar_policy::Authorizer;
use reload::WatchedFile;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub const POLICY_FILE: &str = "GATEWAY_POLICY_FILE";
pub const SHADOW_FILE: &str = "GATEWAY_POLICY_SHADOW_FILE";

/// The policy sets in force; cheap to clone.
#[derive(Debug, Clone)]
pub struct Policies(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    enforced: Arc<ArcSwap<LoadedSet>>,
    shadow: Option<Arc<ArcSwap<LoadedSet>>>,
    authorizer: Authorizer,
    settings: PolicySettings,
}

/// A release decided by the enforced set, and by the shadow set when there
/// is one; each with the hash of the set that decided.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub enforced: Verdict,
    pub set_hash: Arc<str>,
    pub shadow: Option<(Verdict, Arc<str>)>,
}

impl Judgement {
    /// Whether the shadow set would have let through what the enforced one
    /// did not, or the other way round.
    pub fn shadow_disagrees(&self) -> bool {
        self.shadow
            .as_ref()
            .is_some_and(|(shadow, _)| shadow.permits() != self.enforced.permits())
    }
}

impl Policies {
    /// Loads the configured files (or the defaults, for the configured
    /// roles). A file that cannot be read, parsed or validated is an error
    /// naming the variable, the path, and each policy's id, line and column.
    pub fn load(
        settings: &PolicySettings,
        release_role: &str,
        audit_role: &str,
    ) -> anyhow::Result<Self> {
        let enforced = match &settings.file {
            Some(path) => WatchedFile::load(POLICY_FILE, path)?,
            None => LoadedSet::from_text(
                &default_policy_text(release_role, audit_role),
                "the default policies",
            )?,
        };
        let shadow = match &settings.shadow_file {
            Some(path) => Some(WatchedFile::load(SHADOW_FILE, path)?),
            None => None,
        };
        Ok(Self::from_sets(enforced, shadow, settings.clone()))
    }

    /// Policies from sets already loaded (tests, benchmarks).
    pub fn from_sets(
        enforced: LoadedSet,
        shadow: Option<LoadedSet>,
        settings: PolicySettings,
    ) -> Self {
        let announce = |what: &str, set: &LoadedSet| {
            tracing::info!(policy_set_hash = %set.hash, policies = ?set.policy_ids(), "{what}");
        };
        announce("policies in force", &enforced);
        if let Some(shadow) = &shadow {
            announce(
                "shadow policies evaluated on every release, never enforced",
                shadow,
            );
        }
        Self(Arc::new(Inner {
            enforced: Arc::new(ArcSwap::from_pointee(enforced)),
            shadow: shadow.map(|s| Arc::new(ArcSwap::from_pointee(s))),
            authorizer: Authorizer::new(),
            settings,
        }))
    }

    /// Re-reads the policy files as they change, until `stop`.
    pub fn spawn_reload(&self, stop: &CancellationToken) {
        let watched = [
            (POLICY_FILE, &self.0.settings.file, Some(&self.0.enforced)),
            (
                SHADOW_FILE,
                &self.0.settings.shadow_file,
                self.0.shadow.as_ref(),
            ),
        ];
        for (variable, path, current) in watched {
            if let (Some(path), Some(current)) = (path, current) {
                let file = watched_file(variable, path, current);
                reload::spawn(file, self.0.settings.reload_interval, stop.clone());
            }
        }
    }

    /// The hash of the enforced set now, for calls refused before any
    /// policy was asked.
    pub fn set_hash(&self) -> Arc<str> {
        self.0.enforced.load().hash.clone()
    }

    /// Decides a release, by both sets.
    pub fn decide_release(&self, facts: &ReleaseFacts<'_>) -> Judgement {
        let built = entities::release(facts);
        let enforced = self.0.enforced.load();
        let shadow = self.0.shadow.as_ref().map(|shadow| {
            let shadow = shadow.load();
            (
                verdict::evaluate(&self.0.authorizer, &shadow, &built),
                shadow.hash.clone(),
            )
        });
        Judgement {
            enforced: verdict::evaluate(&self.0.authorizer, &enforced, &built),
            set_hash: enforced.hash.clone(),
            shadow,
        }
    }

    /// Decides whether a caller may read a call of the audit trail (by the
    /// enforced set only: reads are not recorded, so a shadow has nothing
    /// to be compared in).
    pub fn decide_read(&self, facts: &ReadFacts<'_>) -> Verdict {
        let built = entities::read(facts);
        verdict::evaluate(&self.0.authorizer, &self.0.enforced.load(), &built)
    }
}

fn watched_file(
    variable: &'static str,
    path: &Path,
    current: &Arc<ArcSwap<LoadedSet>>,
) -> WatchedFile {
    WatchedFile {
        variable,
        path: path.to_path_buf(),
        current: current.clone(),
    }
}
