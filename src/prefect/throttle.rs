//! Prefect Cloud's rate limits, obeyed by one limiter that every clone of a client shares.
//!
//! Cloud counts an account's requests per minute in two buckets: API requests, and log lines
//! plus events (prefect-worker-protocol.md §1.4). Over a bucket's limit it answers 429 with
//! `Retry-After`. A worker that let each call retry on its own would keep knocking while every
//! other call of the process hits the same wall, so a 429 pauses every call of its bucket until
//! the time the server named; when the pause lifts, the waiting calls go out spread over a fifth
//! of the pause rather than all at once. A call whose deadline comes before the pause ends fails
//! at once: sleeping would only make a Lambda lose the work it was doing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// The buckets Cloud counts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Every API request that is not a log line or an event.
    Api,
    /// `POST /logs/` and `POST /events`, counted by the lines and events they carry.
    Logs,
}

impl Lane {
    /// The bucket of a request to `path` under an API whose base path is `base`.
    pub fn of(base: &str, path: &str) -> Lane {
        let rest = path
            .strip_prefix(base.trim_end_matches('/'))
            .unwrap_or(path);
        match rest.trim_start_matches('/').split('/').next() {
            Some("logs" | "events") => Lane::Logs,
            _ => Lane::Api,
        }
    }

    fn index(self) -> usize {
        match self {
            Lane::Api => 0,
            Lane::Logs => 1,
        }
    }
}

/// One bucket's pause.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Pause {
    /// The end of the latest pause, on the monotonic clock, and as the server's clock names it.
    until: Option<(Instant, DateTime<Utc>)>,
    /// How long the latest pause was when it was set: the waiters' spread is a fifth of it.
    length: Duration,
    /// The time paused so far, overlapping pauses counted once.
    total: Duration,
}

impl Pause {
    /// Pauses until `now + after`, unless a longer pause already holds. Returns whether a pause
    /// begins (calls were running freely until now).
    fn extend(&mut self, now: Instant, wall: DateTime<Utc>, after: Duration) -> bool {
        let running = self.until.is_none_or(|(until, _)| until <= now);
        let from = match self.until {
            Some((until, _)) if until > now => until,
            _ => now,
        };
        let end = now + after;
        if end <= from {
            return false;
        }
        self.total += end - from;
        let wall_end = wall + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
        self.until = Some((end, wall_end));
        self.length = after;
        running
    }

    fn active(&self, now: Instant) -> Option<(Instant, DateTime<Utc>)> {
        self.until.filter(|(until, _)| *until > now)
    }
}

/// What a call does about the pause of its bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Turn {
    /// Send now.
    Go,
    /// Send at this instant (the pause's end plus this call's share of the spread).
    At(Instant),
    /// The pause outlasts the call's deadline: fail now, naming when it ends.
    Refused(DateTime<Utc>),
}

/// When a call may go: `draw` in [0, 1) places it within the spread after the pause.
fn turn(now: Instant, pause: &Pause, deadline: Option<Instant>, draw: f64) -> Turn {
    let Some((until, wall)) = pause.active(now) else {
        return Turn::Go;
    };
    if deadline.is_some_and(|d| until > d) {
        return Turn::Refused(wall);
    }
    let at = until + pause.length.mul_f64(0.2 * draw.clamp(0.0, 1.0));
    Turn::At(deadline.map_or(at, |d| at.min(d)))
}

/// The limiter: a pause per bucket, and the count of 429 answers.
#[derive(Debug, Default)]
pub struct Throttle {
    lanes: Mutex<[Pause; 2]>,
    refusals: AtomicU64,
}

impl Throttle {
    fn lanes(&self) -> std::sync::MutexGuard<'_, [Pause; 2]> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a 429 and, when it named a delay, pauses its bucket. Returns when the pause ends
    /// and whether it began with this answer.
    pub fn refused(
        &self,
        lane: Lane,
        retry_after: Option<Duration>,
    ) -> Option<(Instant, DateTime<Utc>, bool)> {
        self.refusals.fetch_add(1, Ordering::Relaxed);
        let after = retry_after?;
        let now = Instant::now();
        let mut lanes = self.lanes();
        let pause = &mut lanes[lane.index()];
        let began = pause.extend(now, Utc::now(), after);
        pause.until.map(|(until, wall)| (until, wall, began))
    }

    /// Waits for the bucket's turn, or returns at once with the pause's end when it would pass
    /// `deadline`.
    pub async fn wait(&self, lane: Lane, deadline: Option<Instant>) -> Result<(), DateTime<Utc>> {
        let pause = self.lanes()[lane.index()];
        match turn(Instant::now(), &pause, deadline, fastrand::f64()) {
            Turn::Go => Ok(()),
            Turn::At(at) => {
                tokio::time::sleep_until(at).await;
                Ok(())
            }
            Turn::Refused(until) => Err(until),
        }
    }

    /// The end of the bucket's pause, while it lasts.
    pub fn paused_until(&self, lane: Lane) -> Option<(Instant, DateTime<Utc>)> {
        self.lanes()[lane.index()].active(Instant::now())
    }

    /// The time the bucket has been (or is being) paused since the process started.
    pub fn paused_total(&self, lane: Lane) -> Duration {
        self.lanes()[lane.index()].total
    }

    /// The 429 answers so far.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn logs_and_events_have_their_own_bucket() {
        assert_eq!(Lane::of("/api", "/api/logs/"), Lane::Logs);
        assert_eq!(Lane::of("/api/", "/api/events"), Lane::Logs);
        let cloud = "/api/accounts/a/workspaces/w";
        assert_eq!(Lane::of(cloud, &format!("{cloud}/logs/")), Lane::Logs);
        for api in [
            "/api/flow_runs/x/set_state",
            "/api/work_pools/logs",
            "/api/",
        ] {
            assert_eq!(Lane::of("/api", api), Lane::Api, "{api}");
        }
    }

    #[test]
    fn pauses_overlap_into_one_and_are_counted_once() {
        let (now, wall) = (Instant::now(), Utc::now());
        let mut pause = Pause::default();
        assert!(pause.extend(now, wall, secs(10)), "a pause begins");
        // A shorter pause inside the first changes nothing.
        assert!(!pause.extend(now + secs(2), wall, secs(3)));
        assert_eq!(pause.until.unwrap().0, now + secs(10));
        // A longer one extends it; the overlap is not counted twice.
        assert!(!pause.extend(now + secs(5), wall, secs(10)));
        assert_eq!(pause.until.unwrap().0, now + secs(15));
        assert_eq!(pause.total, secs(15));
        // After it has lifted, the next refusal begins another pause.
        assert!(pause.extend(now + secs(20), wall, secs(1)));
        assert_eq!(pause.total, secs(16));
        // `Retry-After: 0` pauses nothing.
        assert!(!pause.extend(now + secs(30), wall, Duration::ZERO));
        assert_eq!(pause.total, secs(16));
    }

    #[test]
    fn waiters_go_after_the_pause_spread_over_a_fifth_of_it_and_never_past_the_deadline() {
        let (now, wall) = (Instant::now(), Utc::now());
        let mut pause = Pause::default();
        assert_eq!(turn(now, &pause, None, 0.5), Turn::Go);
        pause.extend(now, wall, secs(10));
        assert_eq!(turn(now, &pause, None, 0.0), Turn::At(now + secs(10)));
        assert_eq!(turn(now, &pause, None, 0.5), Turn::At(now + secs(11)));
        let Turn::At(last) = turn(now, &pause, None, 0.999) else {
            panic!("waits")
        };
        assert!(last < now + secs(12), "the spread is a fifth of the pause");
        // A deadline inside the spread cuts the wait to the deadline.
        let tight = now + secs(10) + Duration::from_millis(500);
        assert_eq!(turn(now, &pause, Some(tight), 0.9), Turn::At(tight));
        // A deadline before the pause ends: refused at once, naming the end.
        assert_eq!(
            turn(now, &pause, Some(now + secs(9)), 0.0),
            Turn::Refused(wall + chrono::Duration::seconds(10))
        );
        // Once the pause is over, calls go.
        assert_eq!(turn(now + secs(10), &pause, None, 0.5), Turn::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_pauses_its_bucket_only_and_every_caller_waits() {
        let throttle = Throttle::default();
        assert_eq!(
            throttle.refused(Lane::Logs, None),
            None,
            "no delay: no pause"
        );
        let (until, _, began) = throttle.refused(Lane::Api, Some(secs(4))).unwrap();
        assert!(began);
        assert_eq!(throttle.refusals(), 2);
        assert_eq!(throttle.paused_until(Lane::Logs), None);
        let start = Instant::now();
        throttle.wait(Lane::Logs, None).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO, "the other bucket is free");
        throttle.wait(Lane::Api, None).await.unwrap();
        assert!(Instant::now() >= until && start.elapsed() <= secs(4) + secs(4) / 5);
        assert_eq!(throttle.paused_total(Lane::Api), secs(4));

        throttle.refused(Lane::Api, Some(secs(30)));
        let start = Instant::now();
        let refused = throttle.wait(Lane::Api, Some(start + secs(10))).await;
        assert!(refused.is_err(), "a pause past the deadline fails the call");
        assert_eq!(start.elapsed(), Duration::ZERO, "at once, without sleeping");
    }
}
