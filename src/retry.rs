//! The retry schedule shared by both API clients.
//!
//! It follows Prefect's own client (`client/base.py`): exponential delays from a first delay
//! (2 s, 4 s, 8 s, …) with ±20 % jitter, and a server's `Retry-After` as a floor (never less than
//! asked, up to 20 % more). Every loop is also bounded by a deadline, because a Lambda that sleeps
//! past its timeout loses the work it was doing.

use std::future::Future;
use std::time::Duration;

use backon::Retryable as _;
use tokio::time::Instant;

/// What the retry loop needs to know about an error.
pub trait Transient {
    /// Whether trying again can help.
    fn is_transient(&self) -> bool;
    /// The delay the server asked for, if any.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub first_delay: Duration,
    pub jitter: f64,
    /// The longest delay between two attempts, before jitter.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Prefect's defaults: 5 retries (6 attempts), ±20 % jitter.
    pub fn new(first_delay: Duration) -> Self {
        RetryPolicy {
            max_retries: 5,
            first_delay,
            jitter: 0.2,
            max_delay: Duration::MAX,
        }
    }

    /// As many attempts as `deadline` leaves time for, doubling from `first_delay` up to
    /// `max_delay`, without jitter. Without a deadline: one attempt.
    pub fn until_deadline(
        deadline: Option<Instant>,
        first_delay: Duration,
        max_delay: Duration,
    ) -> Self {
        match deadline {
            None => Self::none(),
            Some(_) => RetryPolicy {
                max_retries: u32::MAX,
                first_delay,
                jitter: 0.0,
                max_delay,
            },
        }
    }

    /// No retries at all: for writes whose outcome must be checked before trying again.
    pub fn none() -> Self {
        RetryPolicy {
            max_retries: 0,
            first_delay: Duration::ZERO,
            jitter: 0.0,
            max_delay: Duration::ZERO,
        }
    }

    fn schedule(self) -> Schedule {
        Schedule {
            policy: self,
            attempt: 0,
        }
    }

    /// Runs `op` until it succeeds, fails permanently, runs out of retries, or the next delay
    /// would end after `deadline`.
    pub async fn run<T, E, F, Fut>(self, deadline: Option<Instant>, op: F) -> Result<T, E>
    where
        E: Transient,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_if(deadline, E::is_transient, op).await
    }

    /// Like [`Self::run`], with the caller deciding which errors are worth another attempt (a
    /// non-idempotent write may only be repeated when it certainly was not applied).
    pub async fn run_if<T, E, F, Fut>(
        self,
        deadline: Option<Instant>,
        retry_when: fn(&E) -> bool,
        op: F,
    ) -> Result<T, E>
    where
        E: Transient,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        op.retry(self.schedule())
            .sleep(tokio::time::sleep)
            .when(retry_when)
            .adjust(move |err: &E, scheduled| next_delay(err.retry_after(), scheduled, deadline))
            .await
    }
}

/// The delay before the next attempt, or `None` to stop.
fn next_delay(
    retry_after: Option<Duration>,
    scheduled: Option<Duration>,
    deadline: Option<Instant>,
) -> Option<Duration> {
    let scheduled = scheduled?;
    let delay = match retry_after {
        Some(floor) => floor.mul_f64(1.0 + 0.2 * fastrand::f64()),
        None => scheduled,
    };
    match deadline {
        Some(deadline) if Instant::now() + delay > deadline => None,
        _ => Some(delay),
    }
}

/// Exponential delays with symmetric jitter.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    policy: RetryPolicy,
    attempt: u32,
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.attempt >= self.policy.max_retries {
            return None;
        }
        let factor = 2f64.powi(self.attempt.min(1024) as i32);
        let doubled = scaled(self.policy.first_delay, factor);
        let base = doubled.min(self.policy.max_delay);
        self.attempt += 1;
        let spread = self.policy.jitter * (2.0 * fastrand::f64() - 1.0);
        Some(scaled(base, 1.0 + spread))
    }
}

/// `d * factor`, saturating instead of overflowing.
fn scaled(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct E {
        transient: bool,
        after: Option<Duration>,
    }
    impl Transient for E {
        fn is_transient(&self) -> bool {
            self.transient
        }
        fn retry_after(&self) -> Option<Duration> {
            self.after
        }
    }

    #[test]
    fn schedule_doubles_with_bounded_jitter() {
        let delays: Vec<Duration> = RetryPolicy::new(Duration::from_secs(2))
            .schedule()
            .collect();
        assert_eq!(delays.len(), 5);
        for (i, d) in delays.iter().enumerate() {
            let base = 2f64 * 2f64.powi(i as i32);
            let secs = d.as_secs_f64();
            assert!(
                secs >= base * 0.8 - 1e-9 && secs <= base * 1.2 + 1e-9,
                "{i}: {secs}"
            );
        }
    }

    #[test]
    fn until_a_deadline_delays_double_up_to_the_cap() {
        let soon = Some(Instant::now() + Duration::from_secs(60));
        let policy =
            RetryPolicy::until_deadline(soon, Duration::from_secs(1), Duration::from_secs(10));
        let delays: Vec<u64> = policy.schedule().take(7).map(|d| d.as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10, 10]);
        // Far along, the delay stays at the cap instead of overflowing.
        assert_eq!(policy.schedule().nth(5000), Some(Duration::from_secs(10)));
        let once =
            RetryPolicy::until_deadline(None, Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(once.schedule().count(), 0, "no deadline: no retry");
    }

    #[test]
    fn retry_after_is_a_floor_and_the_deadline_stops_retries() {
        let d = next_delay(
            Some(Duration::from_secs(3)),
            Some(Duration::from_millis(1)),
            None,
        )
        .unwrap();
        assert!(d >= Duration::from_secs(3) && d <= Duration::from_millis(3600));
        let soon = Instant::now() + Duration::from_secs(1);
        assert_eq!(
            next_delay(None, Some(Duration::from_secs(2)), Some(soon)),
            None
        );
        assert_eq!(next_delay(None, None, None), None);
    }

    #[test]
    fn parses_both_retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn run_retries_transient_errors_only() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy::new(Duration::from_millis(10));
        let out: Result<u32, E> = policy
            .run(None, || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 2 {
                    Err(E {
                        transient: true,
                        after: None,
                    })
                } else {
                    Ok(n)
                }
            })
            .await;
        assert_eq!(out.unwrap(), 2);

        calls.store(0, Ordering::SeqCst);
        let out: Result<u32, E> = policy
            .run(None, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(E {
                    transient: false,
                    after: None,
                })
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        calls.store(0, Ordering::SeqCst);
        let out: Result<u32, E> = policy
            .run(None, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(E {
                    transient: true,
                    after: None,
                })
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 6, "5 retries = 6 attempts");
    }
}
