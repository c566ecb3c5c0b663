//! Prometheus metrics. One registry for the process; every log line that
//! counts something has a counter here beside it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::model::outbox::MessageStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabels {
    pub connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    pub connector: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub connector: String,
    pub stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

pub struct Metrics {
    registry: Registry,
    /// Events durably stored, per connector.
    pub events_ingested: Family<ConnectorLabels, Counter>,
    /// Webhook requests refused, per connector and reason.
    pub webhook_rejections: Family<RejectionLabels, Counter>,
    /// Time of one store flush (one group commit).
    pub store_flush_seconds: Histogram,
    /// Appends made durable by one flush.
    pub journal_group_size: Histogram,
    /// Records read from polled upstreams, per stream.
    pub connector_records: Family<StreamLabels, Counter>,
    /// Records the upstream still had after the last page of a sync.
    pub connector_remaining: Family<StreamLabels, Gauge>,
    /// 1 when the connector's last sync succeeded and every stream polls.
    pub connector_up: Family<ConnectorLabels, Gauge>,
    /// Unix time of the last successful sync.
    pub connector_last_success: Family<ConnectorLabels, Gauge>,
    /// Syncs that failed.
    pub connector_sync_errors: Family<ConnectorLabels, Counter>,
    /// Outbox messages per status.
    pub outbox_messages: Family<StatusLabels, Gauge>,
    /// From queuing a message to the transport accepting it.
    pub outbox_delivery_seconds: Histogram,
    /// Delivery attempts that failed, transient or permanent.
    pub outbox_send_failures: Family<StatusLabels, Counter>,
    /// Alerts a sender said it left out of its webhooks (`truncatedAlerts`).
    pub alerts_truncated: Family<ConnectorLabels, Counter>,
    /// Data-integrity issues raised and not resolved, per rule.
    pub integrity_open: Family<RuleLabels, Gauge>,
    /// Journal entries durable but not yet applied by the engine, as of
    /// the last scrape.
    pub journal_unapplied: Gauge,
    /// How long deliveries waited for the engine before being stored.
    pub ingest_paced_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("csmd");
        let events_ingested = Family::<ConnectorLabels, Counter>::default();
        registry.register(
            "events_ingested",
            "Events durably stored in the journal",
            events_ingested.clone(),
        );
        let webhook_rejections = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "webhook_rejections",
            "Webhook requests refused, by reason",
            webhook_rejections.clone(),
        );
        let store_flush_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "store_flush_seconds",
            "Duration of one store flush (group commit)",
            store_flush_seconds.clone(),
        );
        let journal_group_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "journal_group_size",
            "Appends made durable by one flush",
            journal_group_size.clone(),
        );
        let connector_records = Family::<StreamLabels, Counter>::default();
        registry.register(
            "connector_records",
            "Records read from polled upstreams",
            connector_records.clone(),
        );
        let connector_remaining = Family::<StreamLabels, Gauge>::default();
        registry.register(
            "connector_remaining_records",
            "Records the upstream still had after the last page of a sync",
            connector_remaining.clone(),
        );
        let connector_up = Family::<ConnectorLabels, Gauge>::default();
        registry.register(
            "connector_up",
            "1 when the last sync succeeded and every stream polls",
            connector_up.clone(),
        );
        let connector_last_success = Family::<ConnectorLabels, Gauge>::default();
        registry.register(
            "connector_last_success_timestamp_seconds",
            "Unix time of the last successful sync",
            connector_last_success.clone(),
        );
        let connector_sync_errors = Family::<ConnectorLabels, Counter>::default();
        registry.register(
            "connector_sync_errors",
            "Syncs that failed",
            connector_sync_errors.clone(),
        );
        let outbox_messages = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "outbox_messages",
            "Outbox messages per status",
            outbox_messages.clone(),
        );
        let outbox_delivery_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 20));
        registry.register(
            "outbox_delivery_seconds",
            "From queuing a message to the transport accepting it",
            outbox_delivery_seconds.clone(),
        );
        let outbox_send_failures = Family::<StatusLabels, Counter>::default();
        registry.register(
            "outbox_send_failures",
            "Delivery attempts that failed, by outcome (retry or dead)",
            outbox_send_failures.clone(),
        );
        let alerts_truncated = Family::<ConnectorLabels, Counter>::default();
        registry.register(
            "alerts_truncated",
            "Alerts a sender said it left out of its webhooks (truncatedAlerts)",
            alerts_truncated.clone(),
        );
        let integrity_open = Family::<RuleLabels, Gauge>::default();
        registry.register(
            "integrity_open_issues",
            "Data-integrity issues raised and not resolved, by rule",
            integrity_open.clone(),
        );
        let journal_unapplied = Gauge::default();
        registry.register(
            "journal_unapplied_entries",
            "Journal entries durable (acknowledged) but not yet applied by the engine",
            journal_unapplied.clone(),
        );
        let ingest_paced_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 12));
        registry.register(
            "ingest_paced_seconds",
            "How long deliveries waited for the engine to catch up before being stored \
             (only those that waited; at most 2 s, then they are stored anyway)",
            ingest_paced_seconds.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register("build_info", "csmd build information", build_info);
        Metrics {
            registry,
            events_ingested,
            webhook_rejections,
            store_flush_seconds,
            journal_group_size,
            connector_records,
            connector_remaining,
            connector_up,
            connector_last_success,
            connector_sync_errors,
            outbox_messages,
            outbox_delivery_seconds,
            outbox_send_failures,
            alerts_truncated,
            integrity_open,
            journal_unapplied,
            ingest_paced_seconds,
        }
    }

    /// The gauge of outbox messages in `status`.
    pub fn outbox_gauge(&self, status: MessageStatus) -> Gauge {
        self.outbox_messages
            .get_or_create(&StatusLabels {
                status: status.as_str().into(),
            })
            .clone()
    }

    /// Moves `count` messages between outbox status gauges: from `None`
    /// when they are queued, to `None` when they are deleted.
    pub fn outbox_moved(
        &self,
        from: Option<MessageStatus>,
        to: Option<MessageStatus>,
        count: usize,
    ) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        if let Some(from) = from {
            self.outbox_gauge(from).dec_by(count);
        }
        if let Some(to) = to {
            self.outbox_gauge(to).inc_by(count);
        }
    }

    pub fn connector_records(
        &self,
        connector: &str,
        stream: &str,
        records: u64,
        remaining: Option<u64>,
    ) {
        let labels = StreamLabels {
            connector: connector.into(),
            stream: stream.into(),
        };
        self.connector_records
            .get_or_create(&labels)
            .inc_by(records);
        if let Some(remaining) = remaining {
            self.connector_remaining
                .get_or_create(&labels)
                .set(i64::try_from(remaining).unwrap_or(i64::MAX));
        }
    }

    pub fn connector_health(
        &self,
        connector: &str,
        up: bool,
        last_success: Option<chrono::DateTime<chrono::Utc>>,
        failed: bool,
    ) {
        let labels = ConnectorLabels {
            connector: connector.into(),
        };
        self.connector_up.get_or_create(&labels).set(i64::from(up));
        if let Some(t) = last_success {
            self.connector_last_success
                .get_or_create(&labels)
                .set(t.timestamp());
        }
        if failed {
            self.connector_sync_errors.get_or_create(&labels).inc();
        }
    }

    pub fn reject(&self, connector: &str, reason: &str) {
        self.webhook_rejections
            .get_or_create(&RejectionLabels {
                connector: connector.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
