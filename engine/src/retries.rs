//! Retry budgets (docs/semantics.md#retries; a permanent SYSTEM failure
//! counts once).

use kozmo_interface::{ErrorKind, ExecutionError};

/// What happens to a retryable failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryDecision {
    /// Whether another attempt runs.
    pub eligible: bool,
    /// The error: the original if eligible, else `RetriesExhausted|<code>`.
    pub error: ExecutionError,
    /// `SystemFailures` after this failure.
    pub system_failures: u32,
}

/// Decides a retryable failure of attempt `attempt` (from 0).
///
/// SYSTEM errors use the system budget (`system_failures < system_budget`);
/// other kinds use the user budget (`(attempt + 1) - system_failures <
/// max_attempts`, max_attempts = template retries + 1). Not eligible →
/// permanent USER failure `RetriesExhausted|<code>` with message
/// `[<cur>/<max>] currentAttempt done. Last Error: <KIND>::<msg>`.
pub fn decide_retryable(
    err: &ExecutionError,
    attempt: u32,
    system_failures: u32,
    system_budget: u32,
    max_attempts: u32,
) -> RetryDecision {
    let (current, max) = if err.kind == ErrorKind::System {
        (system_failures, system_budget)
    } else {
        ((attempt + 1).saturating_sub(system_failures), max_attempts)
    };
    if current < max {
        let system_failures = system_failures + u32::from(err.kind == ErrorKind::System);
        return RetryDecision {
            eligible: true,
            error: err.clone(),
            system_failures,
        };
    }
    RetryDecision {
        eligible: false,
        error: ExecutionError::new(
            format!("RetriesExhausted|{}", err.code),
            format!(
                "[{current}/{max}] currentAttempt done. Last Error: {}::{}",
                err.kind, err.message
            ),
            ErrorKind::User,
        ),
        system_failures,
    }
}

/// `SystemFailures` after a permanent failure with `err` (counted once).
pub fn after_permanent(err: &ExecutionError, system_failures: u32) -> u32 {
    system_failures + u32::from(err.kind == ErrorKind::System)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> ExecutionError {
        ExecutionError::new("Boom", "bad input", ErrorKind::User)
    }

    fn system() -> ExecutionError {
        ExecutionError::new("Node", "node lost", ErrorKind::System)
    }

    #[test]
    fn user_failures_with_two_retries_get_three_attempts() {
        assert!(decide_retryable(&user(), 0, 0, 3, 3).eligible);
        assert!(decide_retryable(&user(), 1, 0, 3, 3).eligible);
        let d = decide_retryable(&user(), 2, 0, 3, 3);
        assert!(!d.eligible);
        assert_eq!(d.error.code, "RetriesExhausted|Boom");
        assert_eq!(
            d.error.message,
            "[3/3] currentAttempt done. Last Error: USER::bad input"
        );
        assert_eq!(d.error.kind, ErrorKind::User);
    }

    #[test]
    fn system_failures_get_four_attempts_and_the_last_is_not_counted() {
        let mut sf = 0;
        for attempt in 0..3 {
            let d = decide_retryable(&system(), attempt, sf, 3, 1);
            assert!(d.eligible, "attempt {attempt}");
            sf = d.system_failures;
        }
        assert_eq!(sf, 3);
        let d = decide_retryable(&system(), 3, sf, 3, 1);
        assert!(!d.eligible);
        assert_eq!(d.system_failures, 3);
        assert_eq!(
            d.error.message,
            "[3/3] currentAttempt done. Last Error: SYSTEM::node lost"
        );
    }

    #[test]
    fn system_failures_do_not_consume_the_user_budget() {
        let d = decide_retryable(&system(), 0, 0, 3, 2);
        assert_eq!(d.system_failures, 1);
        // attempt 1 fails with USER: current = 2 - 1 = 1 < 2.
        assert!(decide_retryable(&user(), 1, 1, 3, 2).eligible);
        let d = decide_retryable(&user(), 2, 1, 3, 2);
        assert!(!d.eligible);
        assert!(d.error.message.starts_with("[2/2]"));
        assert_eq!(after_permanent(&system(), 1), 2);
        assert_eq!(after_permanent(&user(), 1), 1);
    }
}
