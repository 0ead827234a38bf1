//! Release budgets: at most so many releases per sliding window, per
//! principal and in all, so that a runaway job with a valid token cannot
//! empty the recycle bin. Only releases Zenlayer may have acted on count
//! (sent, and not answered with a refusal). The audit writer enforces them
//! in the transaction that records the attempt (see `audit::writer`), so
//! two replicas can never both take the last slot.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// `limit` releases per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit: u32,
    pub window: Duration,
}

/// The budgets in force; none by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budgets {
    /// For each caller (token issuer and subject).
    pub per_principal: Option<Budget>,
    /// For the whole fleet.
    pub total: Option<Budget>,
}

impl Budgets {
    pub fn any(&self) -> bool {
        self.per_principal.is_some() || self.total.is_some()
    }

    /// The longest window: how far back releases are counted.
    pub fn longest_window(&self) -> Duration {
        [self.per_principal, self.total]
            .into_iter()
            .flatten()
            .map(|b| b.window)
            .max()
            .unwrap_or_default()
    }
}

/// Which budget a release would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetScope {
    Principal,
    Total,
}

/// A release refused for its budget; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget {
    pub scope: BudgetScope,
    pub budget: Budget,
    /// When the window frees a slot.
    pub retry_after: Duration,
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.window.as_secs();
        let window = match secs {
            s if s % 3600 == 0 => format!("{}h", s / 3600),
            s if s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        };
        write!(f, "{} releases per {window}", self.limit)
    }
}

impl FromStr for Budget {
    type Err = String;

    /// `COUNT/WINDOW`, the window a whole number of seconds (`s`), minutes
    /// (`m`) or hours (`h`): `50/1h`, `500/24h`, `10/90s`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let expected = || format!("{text:?} is not COUNT/WINDOW, e.g. 50/1h");
        let (count, window) = text.trim().split_once('/').ok_or_else(expected)?;
        let limit: u32 = count.trim().parse().map_err(|_| expected())?;
        let window = window.trim();
        let (number, unit) = window.split_at(window.len().saturating_sub(1));
        let number: u64 = number.parse().map_err(|_| expected())?;
        let per_unit = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return Err(expected()),
        };
        // Overflowing is simply too long a window.
        let seconds = number.saturating_mul(per_unit);
        if limit == 0 || seconds == 0 || seconds > 31 * 24 * 3600 {
            return Err(format!(
                "{text:?}: the count must be at least 1 and the window between 1s and 31 days"
            ));
        }
        Ok(Self {
            limit,
            window: Duration::from_secs(seconds),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_read_as_count_per_window() {
        assert_eq!(
            "50/1h".parse::<Budget>(),
            Ok(Budget {
                limit: 50,
                window: Duration::from_secs(3600)
            })
        );
        assert_eq!(
            "10/90s".parse::<Budget>().unwrap().window,
            Duration::from_secs(90)
        );
        assert_eq!(
            "3/15m".parse::<Budget>().unwrap().to_string(),
            "3 releases per 15m"
        );
        // The bounds: one second, and 31 days exactly.
        assert_eq!("1/1s".parse::<Budget>().unwrap().window.as_secs(), 1);
        assert_eq!(
            "5/744h".parse::<Budget>().unwrap().window.as_secs(),
            31 * 24 * 3600
        );
        for bad in [
            "",
            "50",
            "50/",
            "/1h",
            "0/1h",
            "5/0h",
            "5/1d",
            "x/1h",
            "5/32h0",
            "5/745h",
            "5/2678401s",
            // Wraps to 3584 s if multiplied unchecked.
            "1/5124095576030432h",
            "1/18446744073709551615m",
        ] {
            assert!(bad.parse::<Budget>().is_err(), "{bad:?}");
        }
    }

    /// Callers read the budget they ran into in their error message.
    #[test]
    fn a_budget_reads_in_the_largest_whole_unit() {
        for (text, shown) in [
            ("50/1h", "50 releases per 1h"),
            ("5/120m", "5 releases per 2h"),
            ("3/15m", "3 releases per 15m"),
            ("7/60s", "7 releases per 1m"),
            ("10/90s", "10 releases per 90s"),
            ("2/3601s", "2 releases per 3601s"),
        ] {
            assert_eq!(text.parse::<Budget>().unwrap().to_string(), shown);
        }
    }

    #[test]
    fn budgets_count_back_over_the_longest_window_of_those_set() {
        let hour = "50/1h".parse::<Budget>().ok();
        let day = "500/24h".parse::<Budget>().ok();
        let none = Budgets::default();
        assert!(!none.any());
        assert_eq!(none.longest_window(), Duration::ZERO);
        for (per_principal, total, longest) in [
            (hour, None, 3600),
            (None, day, 86_400),
            (hour, day, 86_400),
            (day, hour, 86_400),
        ] {
            let budgets = Budgets {
                per_principal,
                total,
            };
            assert!(budgets.any(), "{budgets:?}");
            assert_eq!(budgets.longest_window(), Duration::from_secs(longest));
        }
    }
}
