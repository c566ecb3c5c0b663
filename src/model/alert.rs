//! An alert as csmd keeps it: the latest known state of one alert of one
//! monitoring connector, keyed by the source's fingerprint. Deliveries are
//! applied in journal order, and an older status arriving after a newer one
//! (a late retry) changes nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AlertEvent, AlertStatus, ConnectorName};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub connector: ConnectorName,
    /// The source's id (Alertmanager's fingerprint).
    pub source_id: String,
    pub status: AlertStatus,
    pub summary: String,
    #[serde(default)]
    pub ci: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    pub severity: Option<String>,
    /// When this occurrence started, as the source says.
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// When it ended, once resolved.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// When csmd first received this occurrence, and last received it.
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Deliveries of this occurrence (sources repeat firing alerts).
    pub deliveries: u64,
}

/// What a delivery did to the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertChange {
    /// First seen firing, or firing again with a later start: a new
    /// occurrence.
    Fired,
    Resolved,
    /// The same state delivered again.
    Repeated,
    /// Older than what is known (or a resolution of an alert never seen
    /// firing is recorded but starts nothing): no change of status.
    Ignored,
}

impl AlertState {
    fn new(connector: &ConnectorName, event: &AlertEvent, received: DateTime<Utc>) -> AlertState {
        AlertState {
            connector: connector.clone(),
            source_id: event.source_id.clone(),
            status: event.status,
            summary: event.summary.clone(),
            ci: event.ci.clone(),
            service: event.service.clone(),
            customer: event.customer.clone(),
            severity: event.severity.clone(),
            starts_at: event.starts_at,
            ends_at: event
                .ends_at
                .filter(|_| event.status == AlertStatus::Resolved),
            first_seen: received,
            last_seen: received,
            deliveries: 1,
        }
    }

    /// The state after a delivery of `event` received at `received`, and
    /// what it did. `current` is the stored state, if any.
    pub fn apply(
        current: Option<&AlertState>,
        connector: &ConnectorName,
        event: &AlertEvent,
        received: DateTime<Utc>,
    ) -> (AlertState, AlertChange) {
        let Some(current) = current else {
            let change = match event.status {
                AlertStatus::Firing => AlertChange::Fired,
                AlertStatus::Resolved => AlertChange::Ignored,
            };
            return (AlertState::new(connector, event, received), change);
        };
        // Which occurrence the delivery is about, by its start when both
        // sides have one (a source without starts leaves arrival order).
        let occurrence = match (event.starts_at, current.starts_at) {
            (Some(new), Some(old)) => new.cmp(&old),
            _ => std::cmp::Ordering::Equal,
        };
        use std::cmp::Ordering::{Equal, Greater, Less};
        let fresh = || AlertState::new(connector, event, received);
        match (current.status, event.status, occurrence) {
            (_, _, Less) => (current.clone(), AlertChange::Ignored),
            (AlertStatus::Resolved, AlertStatus::Firing, Greater) => (fresh(), AlertChange::Fired),
            (AlertStatus::Resolved, AlertStatus::Firing, Equal) if event.starts_at.is_none() => {
                (fresh(), AlertChange::Fired)
            }
            // A late firing delivery of an occurrence already resolved.
            (AlertStatus::Resolved, AlertStatus::Firing, Equal) => {
                (current.clone(), AlertChange::Ignored)
            }
            (AlertStatus::Firing, AlertStatus::Resolved, _) => {
                let mut next = current.clone();
                next.status = AlertStatus::Resolved;
                next.ends_at = event.ends_at.or(Some(received));
                next.last_seen = received;
                next.deliveries += 1;
                (next, AlertChange::Resolved)
            }
            // The same status again: refresh what the source says now.
            (_, _, _) if current.status == event.status => {
                let mut next = current.clone();
                next.summary = event.summary.clone();
                next.severity = event.severity.clone().or(next.severity);
                next.last_seen = received;
                next.deliveries += 1;
                if occurrence == Greater {
                    next.starts_at = event.starts_at;
                }
                (next, AlertChange::Repeated)
            }
            _ => (current.clone(), AlertChange::Ignored),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn event(status: AlertStatus, starts: &str, ends: Option<&str>) -> AlertEvent {
        AlertEvent {
            source_id: "fp1".into(),
            status,
            service: Some("vpn".into()),
            ci: Some("gw1".into()),
            customer: None,
            severity: Some("critical".into()),
            summary: "VPN down".into(),
            starts_at: Some(at(starts)),
            ends_at: ends.map(at),
        }
    }

    #[test]
    fn firing_repeats_resolves_and_late_deliveries_change_nothing() {
        let c: ConnectorName = "am".parse().unwrap();
        let firing = event(AlertStatus::Firing, "2026-11-22T10:00:00Z", None);
        let t = |m: u32| at(&format!("2026-11-22T10:{m:02}:00Z"));
        let (s1, ch) = AlertState::apply(None, &c, &firing, t(1));
        assert_eq!(ch, AlertChange::Fired);
        let (s2, ch) = AlertState::apply(Some(&s1), &c, &firing, t(2));
        assert_eq!(
            (ch, s2.deliveries, s2.first_seen),
            (AlertChange::Repeated, 2, t(1))
        );
        let resolved = event(
            AlertStatus::Resolved,
            "2026-11-22T10:00:00Z",
            Some("2026-11-22T10:05:00Z"),
        );
        let (s3, ch) = AlertState::apply(Some(&s2), &c, &resolved, t(6));
        assert_eq!(ch, AlertChange::Resolved);
        assert_eq!(s3.ends_at, Some(t(5)));
        // A retry of the firing delivery arriving late changes nothing.
        let (s4, ch) = AlertState::apply(Some(&s3), &c, &firing, t(7));
        assert_eq!((ch, &s4), (AlertChange::Ignored, &s3));
        // The alert fires again later: a new occurrence.
        let again = event(AlertStatus::Firing, "2026-11-22T11:00:00Z", None);
        let (s5, ch) = AlertState::apply(Some(&s4), &c, &again, t(59));
        assert_eq!(ch, AlertChange::Fired);
        assert_eq!(
            (s5.status, s5.ends_at, s5.deliveries),
            (AlertStatus::Firing, None, 1)
        );
        // A delivery about the occurrence before changes nothing.
        let (s6, ch) = AlertState::apply(Some(&s5), &c, &resolved, t(59));
        assert_eq!((ch, &s6), (AlertChange::Ignored, &s5));
    }

    #[test]
    fn a_resolution_never_seen_firing_is_kept_but_fires_nothing() {
        let c: ConnectorName = "am".parse().unwrap();
        let resolved = event(
            AlertStatus::Resolved,
            "2026-11-22T10:00:00Z",
            Some("2026-11-22T10:05:00Z"),
        );
        let (s, ch) = AlertState::apply(None, &c, &resolved, at("2026-11-22T10:06:00Z"));
        assert_eq!(ch, AlertChange::Ignored);
        assert_eq!(s.status, AlertStatus::Resolved);
    }
}
