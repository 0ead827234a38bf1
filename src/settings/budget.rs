//! Settings for release budgets.

use super::reader::Reader;
use crate::budget::{Budget, Budgets};

pub(super) fn read(r: &mut Reader) -> Budgets {
    let mut budget = |key: &str| {
        let text = r.raw(key).filter(|t| !t.trim().is_empty())?;
        match text.parse::<Budget>() {
            Ok(budget) => Some(budget),
            Err(problem) => {
                r.problem(format!("{key}: {problem}"));
                None
            }
        }
    };
    Budgets {
        per_principal: budget("GATEWAY_RELEASE_BUDGET_PER_PRINCIPAL"),
        total: budget("GATEWAY_RELEASE_BUDGET_TOTAL"),
    }
}
