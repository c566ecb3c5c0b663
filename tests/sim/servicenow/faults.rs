//! What can go wrong on the way: queued faults a test injects, and the rate
//! limiter an instance's rate-limit rules impose.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A failure served instead of (or before) the next request's answer.
/// Queued with [`super::Simulator::fail_next`]; each request takes one, in
/// order, whatever its path (the token endpoint included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After` in whole seconds (rounded up) and the
    /// `X-RateLimit-*` headers of a rate-limit rule.
    TooManyRequests { retry_after: Duration },
    /// This status (500, 503, …) with ServiceNow's JSON error body.
    ServerError(u16),
    /// This status with an HTML page, as a load balancer or a hibernating
    /// instance answers: a client must not expect JSON on every error.
    HtmlError(u16),
    /// The connection is closed after the request is read, without a byte
    /// of response.
    DropConnection,
    /// The request is answered normally, but only after this long.
    Delay(Duration),
    /// The request is handled at once (a record is created), but answered
    /// only after this long: a client killed meanwhile never learns of it.
    AnswerLate(Duration),
    /// The request is handled, then the connection is closed without the
    /// answer: the record exists, the client does not know its id.
    AnswerLost,
    /// The inner fault, for the next request with this method; requests
    /// with other methods pass it by and leave it queued.
    ForMethod(String, Box<Fault>),
}

/// The sys_id of the rate-limit rule named in `X-RateLimit-Rule`.
pub(crate) const RATE_LIMIT_RULE: &str = "5ee1a0e0db2a2010b0b3f5f5ca9619f1";

/// A token bucket holding up to one second's worth of requests, refilled
/// continuously.
pub(crate) struct RateLimiter {
    per_second: u32,
    tokens: f64,
    refilled_at: Instant,
}

/// The `X-RateLimit-*` headers, and for a refused request its wait.
pub(crate) struct RateDecision {
    pub limit: u32,
    /// Unix time (seconds) at which the bucket is full again, or the wait
    /// ends.
    pub reset: u64,
    pub retry_after: Option<u64>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            per_second: per_second.max(1),
            tokens: f64::from(per_second.max(1)),
            refilled_at: Instant::now(),
        }
    }

    pub fn take(&mut self) -> RateDecision {
        let now = Instant::now();
        let rate = f64::from(self.per_second);
        self.tokens =
            (self.tokens + now.duration_since(self.refilled_at).as_secs_f64() * rate).min(rate);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            let until_full = Duration::from_secs_f64((rate - self.tokens) / rate);
            return RateDecision {
                limit: self.per_second,
                reset: unix_after(until_full),
                retry_after: None,
            };
        }
        let wait = ((1.0 - self.tokens) / rate).ceil().max(1.0) as u64;
        RateDecision {
            limit: self.per_second,
            reset: unix_after(Duration::from_secs(wait)),
            retry_after: Some(wait),
        }
    }
}

/// Unix time in whole seconds, `after` from now, rounded up.
pub(crate) fn unix_after(after: Duration) -> u64 {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        + after;
    at.as_secs() + u64::from(at.subsec_nanos() > 0)
}

/// Whole seconds, rounded up: a wait of 200 ms must say 1, not 0.
pub(crate) fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
