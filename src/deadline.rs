//! The caller's deadline, and all arithmetic on it: how much of it the
//! upstream call may use, how much is kept back to record the outcome and
//! carry the answer home, the least worth starting a call with, and how long
//! an answer may wait for its outcome to be recorded. One type, so that no
//! two steps of a call can disagree about how much time is left.

use std::time::Duration;
use tokio::time::Instant;

/// Kept back from the caller's deadline to record the outcome and carry the
/// answer home; a call that used it all would answer into the void.
pub const REPLY_MARGIN: Duration = Duration::from_millis(100);

/// Below this, an upstream call cannot reasonably complete, so it is not
/// started: better a clean "nothing was sent" than an unknown outcome.
pub const MIN_UPSTREAM_BUDGET: Duration = Duration::from_millis(200);

/// How long an answer waits for its outcome to be recorded (less, when the
/// caller's deadline is nearer): long enough that a retry with the same key
/// usually finds it, short enough that a slow database cannot spoil an
/// answer Zenlayer already gave.
pub const OUTCOME_BEFORE_ANSWER: Duration = Duration::from_secs(1);

/// Kept back from the caller's deadline for the answer to reach them.
pub const ANSWER_TRAVEL: Duration = Duration::from_millis(50);

/// The instant by which the caller wants an answer, from `grpc-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

/// How long one upstream attempt may take, and whether the caller's
/// deadline (rather than the gateway's own cap) set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamBudget {
    pub timeout: Duration,
    pub caller_bound: bool,
}

/// Too little of the deadline is left to start an upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooShort {
    pub remaining: Duration,
}

impl Deadline {
    pub const NONE: Self = Self(None);

    pub fn at(instant: Instant) -> Self {
        Self(Some(instant))
    }

    /// Reads the `grpc-timeout` header (`<digits><unit>`, unit one of
    /// `H M S m u n`), counting from `received`. A malformed header counts as
    /// no deadline, as gRPC servers treat it.
    pub fn from_grpc_timeout(header: Option<&str>, received: Instant) -> Self {
        let Some(value) = header.filter(|v| v.len() >= 2 && v.len() <= 9) else {
            return Self::NONE;
        };
        let (digits, unit) = value.split_at(value.len() - 1);
        let Ok(amount) = digits.parse::<u64>() else {
            return Self::NONE;
        };
        let timeout = match unit {
            "H" => Duration::from_secs(amount.saturating_mul(3600)),
            "M" => Duration::from_secs(amount.saturating_mul(60)),
            "S" => Duration::from_secs(amount),
            "m" => Duration::from_millis(amount),
            "u" => Duration::from_micros(amount),
            "n" => Duration::from_nanos(amount),
            _ => return Self::NONE,
        };
        Self(received.checked_add(timeout))
    }

    /// What is left of the deadline now, if there is one.
    pub fn remaining(self) -> Option<Duration> {
        self.0
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// The budget of an upstream attempt starting now: the smaller of `cap`
    /// and what is left less the reply margin; refused when that is below
    /// the minimum worth starting with.
    pub fn upstream_budget(self, cap: Duration) -> Result<UpstreamBudget, TooShort> {
        let Some(remaining) = self.remaining() else {
            return Ok(UpstreamBudget {
                timeout: cap,
                caller_bound: false,
            });
        };
        let usable = remaining.saturating_sub(REPLY_MARGIN);
        if usable < MIN_UPSTREAM_BUDGET {
            return Err(TooShort { remaining });
        }
        Ok(UpstreamBudget {
            timeout: usable.min(cap),
            caller_bound: usable < cap,
        })
    }

    /// Whether waiting `pause` still leaves room for another attempt.
    pub fn allows_pause(self, pause: Duration) -> bool {
        self.0.is_none_or(|deadline| {
            Instant::now() + pause + REPLY_MARGIN + MIN_UPSTREAM_BUDGET <= deadline
        })
    }

    /// The part of the deadline a read before the release may use: half of
    /// what is left, so that the release keeps the other half.
    pub fn first_half(self) -> Self {
        match self.remaining() {
            Some(left) => Self::at(Instant::now() + left / 2),
            None => Self::NONE,
        }
    }

    /// How long the answer may wait now for its outcome to be recorded:
    /// it must still leave before [`answer_by`](Self::answer_by), with room
    /// to spare, so that the call's own answer wins over the fallback.
    pub fn outcome_wait(self) -> Duration {
        self.remaining().map_or(OUTCOME_BEFORE_ANSWER, |left| {
            left.saturating_sub(ANSWER_TRAVEL * 2)
                .min(OUTCOME_BEFORE_ANSWER)
        })
    }

    /// How long the handler may wait for the call's answer before it must
    /// answer anyway, so that the caller hears the gateway rather than its
    /// own timer (or the transport's bare CANCELLED); `None` without a
    /// deadline.
    pub fn answer_by(self) -> Option<Duration> {
        self.remaining()
            .map(|left| left.saturating_sub(ANSWER_TRAVEL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units_are_understood() {
        let now = Instant::now();
        let cases = [
            ("1H", 3_600_000),
            ("2M", 120_000),
            ("3S", 3000),
            ("250m", 250),
            ("5000u", 5),
            ("7000000n", 7),
        ];
        for (header, ms) in cases {
            let deadline = Deadline::from_grpc_timeout(Some(header), now);
            assert_eq!(
                deadline,
                Deadline::at(now + Duration::from_millis(ms)),
                "{header}"
            );
        }
    }

    #[test]
    fn malformed_grpc_timeouts_mean_no_deadline() {
        let now = Instant::now();
        for header in [
            None,
            Some(""),
            Some("S"),
            Some("10x"),
            Some("-1S"),
            Some("1234567890S"),
        ] {
            assert_eq!(Deadline::from_grpc_timeout(header, now), Deadline::NONE);
        }
    }

    #[test]
    fn the_smaller_of_cap_and_deadline_wins() {
        let cap = Duration::from_secs(10);
        let unbounded = UpstreamBudget {
            timeout: cap,
            caller_bound: false,
        };
        assert_eq!(Deadline::NONE.upstream_budget(cap), Ok(unbounded));
        let far = Deadline::at(Instant::now() + Duration::from_secs(60));
        assert_eq!(far.upstream_budget(cap), Ok(unbounded));
        let near = Deadline::at(Instant::now() + Duration::from_secs(2));
        let budget = near.upstream_budget(cap).unwrap();
        assert!(budget.caller_bound);
        assert!(budget.timeout < Duration::from_secs(2) - REPLY_MARGIN + Duration::from_millis(1));
        assert!(budget.timeout > Duration::from_secs(1));
    }

    #[test]
    fn a_deadline_too_close_refuses_the_call() {
        let close = Deadline::at(Instant::now() + Duration::from_millis(250));
        assert!(close.upstream_budget(Duration::from_secs(10)).is_err());
    }

    #[test]
    fn the_outcome_wait_stays_inside_the_deadline_and_under_its_cap() {
        assert_eq!(Deadline::NONE.outcome_wait(), OUTCOME_BEFORE_ANSWER);
        let far = Deadline::at(Instant::now() + Duration::from_secs(30));
        assert_eq!(far.outcome_wait(), OUTCOME_BEFORE_ANSWER);
        let near = Deadline::at(Instant::now() + Duration::from_millis(300));
        assert!(near.outcome_wait() <= Duration::from_millis(300) - ANSWER_TRAVEL * 2);
        assert!(
            near.outcome_wait() < near.answer_by().unwrap(),
            "the call answers first"
        );
        let past = Deadline::at(Instant::now());
        assert_eq!(past.outcome_wait(), Duration::ZERO);
    }

    #[test]
    fn a_read_before_the_release_gets_half_of_what_is_left() {
        assert_eq!(Deadline::NONE.first_half(), Deadline::NONE);
        let deadline = Deadline::at(Instant::now() + Duration::from_secs(10));
        let half = deadline.first_half().remaining().unwrap();
        assert!(half <= Duration::from_secs(5) && half > Duration::from_millis(4900));
    }

    #[test]
    fn a_pause_is_allowed_only_if_an_attempt_still_fits_after_it() {
        assert!(Deadline::NONE.allows_pause(Duration::from_secs(3600)));
        let deadline = Deadline::at(Instant::now() + Duration::from_secs(2));
        assert!(deadline.allows_pause(Duration::from_secs(1)));
        assert!(!deadline.allows_pause(Duration::from_millis(1800)));
    }
}
