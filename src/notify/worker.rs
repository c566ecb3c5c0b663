//! The outbox worker: delivers due messages at the configured rate, several
//! at a time, and records each outcome durably.
//!
//! What is guaranteed: a queued message is sent until the transport accepts
//! it or refuses it for good; nothing is lost. A message is marked sent, and
//! the mark flushed, right after the transport accepts it. If csmd dies in
//! between (a window of one store flush, a few milliseconds), the message
//! is still queued at start and is sent once more, with the same
//! Message-ID. So a crash can duplicate at most the messages in flight at
//! that moment (`[email] concurrency`), each at most once; receiving
//! servers and mail clients that deduplicate on Message-ID show one. The
//! file transport never duplicates: it rewrites the same file.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::templates::single_line;
use super::transport::{SendError, Transport};
use crate::config::Email;
use crate::config::value::RateLimit;
use crate::metrics::Metrics;
use crate::model::outbox::{Attachment as OutboxAttachment, MessageStatus, OutboxMessage};
use crate::store::{Store, StoreError};

/// Longest pause between two looks at the queue when nothing wakes the
/// worker (a message queued by another process, a clock change).
const IDLE_CHECK: Duration = Duration::from_secs(30);

/// How often sent and dead messages older than `keep_sent` are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Wakes the worker when something was queued; cheap to clone.
#[derive(Clone, Default)]
pub struct OutboxHandle {
    wake: Arc<Notify>,
}

impl OutboxHandle {
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// How the worker retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub backoff: Duration,
    pub backoff_max: Duration,
    pub give_up_after: Duration,
}

impl RetryPolicy {
    pub fn from_config(email: &Email) -> RetryPolicy {
        RetryPolicy {
            backoff: email.retry_backoff,
            backoff_max: email.retry_backoff_max,
            give_up_after: email.give_up_after,
        }
    }

    /// The wait after the `attempts`-th failed attempt: doubling, capped.
    pub fn delay(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.backoff.saturating_mul(factor).min(self.backoff_max)
    }
}

/// Builds the e-mail of an outbox message.
pub struct Composer {
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
}

impl Composer {
    pub fn compose(&self, message: &OutboxMessage) -> Result<Message, SendError> {
        let to: Mailbox = message.to.parse().map_err(|e| {
            SendError::Permanent(format!("invalid recipient address {:?}: {e}", message.to))
        })?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(single_line(&message.subject))
            .message_id(Some(message.message_id.clone()))
            .date(message.created_at.into());
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        let mut body = MultiPart::alternative()
            .singlepart(SinglePart::plain(message.text.clone()))
            .singlepart(SinglePart::html(message.html.clone()));
        if let Some(calendar) = &message.calendar {
            let content_type = ContentType::parse(&format!(
                "text/calendar; method={}; charset=UTF-8",
                calendar.method
            ))
            .map_err(|e| SendError::Permanent(format!("bad calendar method: {e}")))?;
            body = body.singlepart(
                SinglePart::builder()
                    .header(content_type)
                    .body(calendar.ics.clone()),
            );
        }
        // Inline images go beside the bodies in multipart/related (the HTML
        // names them by Content-ID); files go beside that in
        // multipart/mixed. A message with neither keeps the plain
        // alternative body it always had.
        let (inline, files): (Vec<_>, Vec<_>) =
            message.attachments.iter().partition(|a| a.is_inline());
        let built = match (inline.is_empty(), files.is_empty()) {
            (true, true) => builder.multipart(body),
            (false, true) => builder.multipart(related(body, &inline)?),
            (true, false) => builder.multipart(mixed(body, &files)?),
            (false, false) => builder.multipart(mixed(related(body, &inline)?, &files)?),
        };
        built.map_err(|e| SendError::Permanent(format!("cannot build the message: {e}")))
    }
}

fn part_type(attachment: &OutboxAttachment) -> Result<ContentType, SendError> {
    ContentType::parse(&attachment.content_type).map_err(|e| {
        SendError::Permanent(format!(
            "attachment {:?} has a bad content type {:?}: {e}",
            attachment.filename, attachment.content_type
        ))
    })
}

/// `multipart/related`: the bodies first, then each inline part under its
/// Content-ID.
fn related(body: MultiPart, inline: &[&OutboxAttachment]) -> Result<MultiPart, SendError> {
    let mut related = MultiPart::related().multipart(body);
    for part in inline {
        let id = part.content_id.clone().unwrap_or_default();
        related = related.singlepart(
            lettre::message::Attachment::new_inline_with_name(id, part.filename.clone())
                .body(part.data.clone(), part_type(part)?),
        );
    }
    Ok(related)
}

/// `multipart/mixed`: the message, then each file as an attachment.
fn mixed(body: MultiPart, files: &[&OutboxAttachment]) -> Result<MultiPart, SendError> {
    let mut mixed = MultiPart::mixed().multipart(body);
    for file in files {
        mixed = mixed.singlepart(
            lettre::message::Attachment::new(file.filename.clone())
                .body(file.data.clone(), part_type(file)?),
        );
    }
    Ok(mixed)
}

pub struct Worker {
    pub store: Store,
    pub transport: Arc<Transport>,
    pub composer: Arc<Composer>,
    pub rate: RateLimit,
    pub concurrency: usize,
    pub retry: RetryPolicy,
    /// Sent and dead messages are deleted this long after they finished.
    pub keep_sent: Duration,
    pub metrics: Arc<Metrics>,
    pub handle: OutboxHandle,
}

/// What one attempt came to.
struct Attempt {
    message: OutboxMessage,
    result: Result<(), SendError>,
}

/// Sets the outbox gauges from the store (one scan). Call it once, before
/// anything queues or sends; the worker and the processors move the
/// gauges from then on.
pub fn count_outbox(store: &Store, metrics: &Metrics) {
    match store.outbox_counts() {
        Ok(counts) => {
            for (status, count) in counts {
                metrics
                    .outbox_gauge(status)
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
        }
        Err(e) => tracing::warn!(error = %e, "Cannot count the outbox"),
    }
}

impl Worker {
    /// Delivers until shutdown; messages in flight then are finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        let limiter = limiter(self.rate);
        let mut in_flight: HashSet<String> = HashSet::new();
        let mut sending = JoinSet::new();
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let free = self.concurrency.saturating_sub(in_flight.len());
            let due = if free > 0 && !shutdown.is_cancelled() {
                match self
                    .store
                    .due_messages(Utc::now(), free, &|id| in_flight.contains(id))
                {
                    Ok(due) => due,
                    Err(e) => {
                        tracing::error!(error = %e, "Reading the outbox failed");
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            for message in due {
                if let Some(limiter) = &limiter {
                    tokio::select! {
                        _ = limiter.until_ready() => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                let Some(message) = self.start_attempt(message) else {
                    continue;
                };
                in_flight.insert(message.id.clone());
                let transport = self.transport.clone();
                let composer = self.composer.clone();
                sending.spawn(async move {
                    let result = match composer.compose(&message) {
                        Ok(email) => transport.send(&message.id, &email).await,
                        Err(e) => Err(e),
                    };
                    Attempt { message, result }
                });
            }
            if shutdown.is_cancelled() && sending.is_empty() {
                self.transport.shutdown().await;
                return;
            }
            let wait = self.idle_wait(&in_flight);
            tokio::select! {
                Some(done) = sending.join_next(), if !sending.is_empty() => {
                    let mut attempts = Vec::new();
                    if let Ok(attempt) = done {
                        attempts.push(attempt);
                    }
                    while let Some(done) = sending.try_join_next() {
                        if let Ok(attempt) = done {
                            attempts.push(attempt);
                        }
                    }
                    for attempt in &attempts {
                        in_flight.remove(&attempt.message.id);
                    }
                    if let Err(e) = self.finish(attempts).await {
                        tracing::error!(error = %e, "Recording delivery outcomes failed");
                    }
                }
                _ = prune.tick() => self.prune().await,
                _ = self.handle.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
            }
        }
    }

    /// Deletes what finished more than `keep_sent` ago (the first tick of
    /// the interval is at start).
    async fn prune(&self) {
        let Some(before) = chrono::Duration::from_std(self.keep_sent)
            .ok()
            .and_then(|keep| Utc::now().checked_sub_signed(keep))
        else {
            return;
        };
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.prune_outbox(before)).await {
            Ok(Ok(pruned)) => {
                for status in &pruned {
                    self.metrics.outbox_moved(Some(*status), None, 1);
                }
                if !pruned.is_empty() {
                    tracing::info!(messages = pruned.len(), %before, "Old sent and dead messages deleted");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "Cannot delete old messages"),
            Err(e) => tracing::warn!(error = %e, "Deleting old messages failed"),
        }
    }

    /// How long to sleep when nothing happens: until the next message is
    /// due, if a slot is free to send it.
    fn idle_wait(&self, in_flight: &HashSet<String>) -> Duration {
        if in_flight.len() >= self.concurrency {
            return IDLE_CHECK;
        }
        // Messages being sent keep their (past) queue entry: skip them, or
        // the worker would spin until they are done.
        match self.store.next_due(&|id| in_flight.contains(id)) {
            Ok(Some(due)) => (due - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(IDLE_CHECK),
            _ => IDLE_CHECK,
        }
    }

    /// Marks the message as being sent (not flushed: a crash leaves it
    /// queued either way).
    fn start_attempt(&self, mut message: OutboxMessage) -> Option<OutboxMessage> {
        let previous = message.next_attempt_at;
        let was = message.status;
        message.status = MessageStatus::Sending;
        message.attempts += 1;
        match self.store.update_messages(&[(message.clone(), previous)]) {
            Ok(()) => {
                if was != MessageStatus::Sending {
                    self.metrics
                        .outbox_moved(Some(was), Some(MessageStatus::Sending), 1);
                }
                Some(message)
            }
            Err(e) => {
                tracing::error!(error = %e, id = %message.id, "Cannot mark a message as sending");
                None
            }
        }
    }

    /// Records the outcomes of finished attempts in one batch and one flush.
    async fn finish(&self, attempts: Vec<Attempt>) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut updates = Vec::with_capacity(attempts.len());
        for Attempt {
            mut message,
            result,
        } in attempts
        {
            let previous = message.next_attempt_at;
            match result {
                Ok(()) => {
                    message.status = MessageStatus::Sent;
                    message.sent_at = Some(now);
                    message.last_error = None;
                    let latency = (now - message.created_at).to_std().unwrap_or_default();
                    self.metrics
                        .outbox_delivery_seconds
                        .observe(latency.as_secs_f64());
                    tracing::info!(id = %message.id, kind = message.kind.as_str(), customer = message.customer_label(), attempts = message.attempts, "Message sent");
                }
                Err(SendError::Permanent(reason)) => {
                    tracing::warn!(id = %message.id, customer = message.customer_label(), %reason, "Message refused for good");
                    message.status = MessageStatus::Dead;
                    message.last_error = Some(reason);
                }
                Err(SendError::Transient(reason)) => {
                    if give_up(&message, now, self.retry.give_up_after) {
                        tracing::warn!(id = %message.id, customer = message.customer_label(), %reason, "Message given up");
                        message.status = MessageStatus::Dead;
                        message.last_error = Some(format!(
                            "gave up after {} attempts; last error: {reason}",
                            message.attempts
                        ));
                    } else {
                        let delay = self.retry.delay(message.attempts);
                        tracing::info!(id = %message.id, %reason, retry_in = ?delay, "Message not sent; will retry");
                        message.status = MessageStatus::Pending;
                        message.next_attempt_at = now
                            + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                        message.last_error = Some(reason);
                    }
                }
            }
            let outcome = match message.status {
                MessageStatus::Dead => Some("dead"),
                MessageStatus::Pending => Some("retry"),
                _ => None,
            };
            if let Some(outcome) = outcome {
                self.metrics
                    .outbox_send_failures
                    .get_or_create(&crate::metrics::StatusLabels {
                        status: outcome.into(),
                    })
                    .inc();
            }
            self.metrics
                .outbox_moved(Some(MessageStatus::Sending), Some(message.status), 1);
            updates.push((message, previous));
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            store.update_messages(&updates)?;
            store.flush_outbox()
        })
        .await
        .map_err(|e| StoreError::Transaction(format!("outbox task failed: {e}")))?
    }
}

fn give_up(message: &OutboxMessage, now: DateTime<Utc>, after: Duration) -> bool {
    (now - message.created_at)
        .to_std()
        .is_ok_and(|age| age >= after)
}

fn limiter(rate: RateLimit) -> Option<DefaultDirectRateLimiter> {
    match rate {
        RateLimit::Off => None,
        RateLimit::Limit(rate) => {
            let period = rate.per / rate.count.get();
            let quota = Quota::with_period(period.max(Duration::from_nanos(1)))?
                .allow_burst(NonZeroU32::MIN);
            Some(RateLimiter::direct(quota))
        }
    }
}
