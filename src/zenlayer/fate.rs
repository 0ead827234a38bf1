//! What the gateway knows about a disk after a release was attempted: the
//! one classification every later step reads (the caller's status, the
//! audit outcome, whether an idempotency key is freed, the metric labels,
//! the log line), so that none of them can disagree.

/// What Zenlayer did with a release, as far as the gateway can know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Zenlayer certainly did not act: nothing was sent, or the request was
    /// turned away before the API ran it. A retry may really try again.
    NotActed,
    /// Zenlayer answered, and its answer decides: accepted, or refused.
    Answered,
    /// The request may have been carried out without the gateway learning
    /// of it: no answer, an unreadable success, or a failure inside Zenlayer
    /// after the request arrived.
    MayHaveActed,
}
