//! How long one upstream call may take: the smaller of the gateway's cap and
//! what is left of the caller's gRPC deadline.

use super::UpstreamError;
use std::time::Duration;
use tokio::time::Instant;

/// Time kept back from the caller's deadline to record the outcome and
/// carry the answer home; a call that used it all would answer into the void.
const REPLY_MARGIN: Duration = Duration::from_millis(100);

/// Below this, an upstream call cannot reasonably complete, so it is not
/// started: better a clean "nothing was sent" than an unknown outcome.
const MIN_UPSTREAM_BUDGET: Duration = Duration::from_millis(200);

/// The instant by which the caller wants an answer, from `grpc-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallerDeadline(Option<Instant>);

impl CallerDeadline {
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

    /// The upstream timeout for a call starting now, and whether the caller's
    /// deadline (rather than `cap`) set it.
    pub(super) fn budget(self, cap: Duration) -> Result<(Duration, bool), UpstreamError> {
        let Some(deadline) = self.0 else {
            return Ok((cap, false));
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let usable = remaining.saturating_sub(REPLY_MARGIN);
        if usable < MIN_UPSTREAM_BUDGET {
            return Err(UpstreamError::DeadlineTooShort { remaining });
        }
        Ok(if usable < cap {
            (usable, true)
        } else {
            (cap, false)
        })
    }

    /// Whether waiting `pause` still leaves room for another attempt.
    pub(super) fn allows_pause(self, pause: Duration) -> bool {
        self.0.is_none_or(|deadline| {
            Instant::now() + pause + REPLY_MARGIN + MIN_UPSTREAM_BUDGET <= deadline
        })
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
            let deadline = CallerDeadline::from_grpc_timeout(Some(header), now);
            assert_eq!(
                deadline,
                CallerDeadline::at(now + Duration::from_millis(ms)),
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
            assert_eq!(
                CallerDeadline::from_grpc_timeout(header, now),
                CallerDeadline::NONE
            );
        }
    }

    #[test]
    fn the_smaller_of_cap_and_deadline_wins() {
        let cap = Duration::from_secs(10);
        assert_eq!(CallerDeadline::NONE.budget(cap).unwrap(), (cap, false));
        let far = CallerDeadline::at(Instant::now() + Duration::from_secs(60));
        assert_eq!(far.budget(cap).unwrap(), (cap, false));
        let near = CallerDeadline::at(Instant::now() + Duration::from_secs(2));
        let (timeout, caller) = near.budget(cap).unwrap();
        assert!(caller && timeout < Duration::from_secs(2) && timeout > Duration::from_secs(1));
    }

    #[test]
    fn a_deadline_too_close_refuses_the_call() {
        let close = CallerDeadline::at(Instant::now() + Duration::from_millis(100));
        assert!(matches!(
            close.budget(Duration::from_secs(10)),
            Err(UpstreamError::DeadlineTooShort { .. })
        ));
    }
}
