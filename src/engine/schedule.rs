//! Jobs on a cron schedule (the SIP digest, the monthly reports, the
//! reconciliation). A job is given the occurrence it runs for and must be
//! idempotent for it (its messages are keyed by the occurrence), which is
//! what makes the rules below safe:
//! - an occurrence missed while csmd was down is run once at start when it
//!   is at most `catch_up` old;
//! - the wall clock is read again at least every minute, so a clock change
//!   or a suspended machine delays a job by at most that;
//! - a configuration reload takes effect at the next check.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio_util::sync::CancellationToken;

/// The longest sleep between two looks at the wall clock.
const RECHECK: Duration = Duration::from_secs(60);

/// The latest occurrence at or before `now`.
pub fn latest(schedule: &cron::Schedule, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // `after` starts strictly after its argument; start a second later so
    // an occurrence at exactly `now` counts.
    let probe = (now + chrono::Duration::seconds(1)).with_timezone(&tz);
    schedule
        .after(&probe)
        .next_back()
        .map(|at| at.with_timezone(&Utc))
}

/// The first occurrence after `now`.
pub fn next(schedule: &cron::Schedule, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule
        .after(&now.with_timezone(&tz))
        .next()
        .map(|at| at.with_timezone(&Utc))
}

/// Runs `job` for each occurrence of the schedule that `schedule` gives
/// (read again at every check, so reloads apply), until shutdown.
pub async fn run<S, J>(
    what: &'static str,
    schedule: S,
    catch_up: chrono::Duration,
    job: J,
    shutdown: CancellationToken,
) where
    S: Fn() -> (cron::Schedule, Tz) + Send,
    J: Fn(DateTime<Utc>) -> Result<usize, String> + Send + Sync + Clone + 'static,
{
    let mut done: Option<DateTime<Utc>> = None;
    loop {
        let now = Utc::now();
        let (cron, tz) = schedule();
        if let Some(at) = latest(&cron, tz, now)
            && now - at <= catch_up
            && done != Some(at)
        {
            let run = job.clone();
            match tokio::task::spawn_blocking(move || run(at)).await {
                Ok(Ok(n)) => {
                    tracing::info!(job = what, occurrence = %at, queued = n, "Scheduled job ran");
                    done = Some(at);
                }
                Ok(Err(e)) => {
                    tracing::error!(job = what, occurrence = %at, error = %e, "Scheduled job failed; retrying at the next check")
                }
                Err(e) => {
                    tracing::error!(job = what, occurrence = %at, error = %e, "Scheduled job failed; retrying at the next check")
                }
            }
        }
        let wait = next(&cron, tz, now)
            .and_then(|at| (at - now).to_std().ok())
            .map_or(RECHECK, |d| d.min(RECHECK));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn occurrences_are_in_the_schedules_time_zone() {
        // 08:00 on weekdays in Paris.
        let cron = cron::Schedule::from_str("0 0 8 * * Mon-Fri").unwrap();
        let paris: Tz = "Europe/Paris".parse().unwrap();
        // Monday 23 Nov 2026, 07:30 UTC = 08:30 Paris (CET).
        let now = at("2026-11-23T07:30:00Z");
        assert_eq!(latest(&cron, paris, now), Some(at("2026-11-23T07:00:00Z")));
        assert_eq!(next(&cron, paris, now), Some(at("2026-11-24T07:00:00Z")));
        // An occurrence at exactly now is the latest, not the previous one.
        assert_eq!(
            latest(&cron, paris, at("2026-11-23T07:00:00Z")),
            Some(at("2026-11-23T07:00:00Z"))
        );
        // Over the weekend the latest is Friday's.
        assert_eq!(
            latest(&cron, paris, at("2026-11-22T12:00:00Z")),
            Some(at("2026-11-20T07:00:00Z"))
        );
        // Summer time: 08:00 Paris is 06:00 UTC.
        assert_eq!(
            next(&cron, paris, at("2026-07-01T12:00:00Z")),
            Some(at("2026-07-02T06:00:00Z"))
        );
    }
}
