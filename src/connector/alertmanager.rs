//! Prometheus Alertmanager's webhook (payload version 4): a group of
//! alerts, each with a status, labels, annotations, its start and end, and
//! a fingerprint that stays the same across deliveries. The profile says
//! which labels carry csmd's CI, service, customer and severity.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{MappingError, ParseError, Parsed};
use crate::model::{AlertEvent, AlertStatus, Event};

/// `connectors/alertmanager/profile.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Always `alertmanager`.
    pub kind: String,
    pub description: String,
    /// The payload `version`s accepted.
    pub versions: Vec<String>,
    /// csmd field → labels to read it from, first present wins.
    pub labels: BTreeMap<String, Vec<String>>,
    pub annotations: Annotations,
    #[serde(default)]
    pub options: Options,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Annotations {
    pub summary: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Drop a `:port` suffix from the CI (Prometheus `instance` labels).
    #[serde(default)]
    pub strip_port: bool,
}

/// The fields labels may map onto.
const FIELDS: &[&str] = &["ci", "service", "customer", "severity"];

/// A profile with a connector's overrides applied.
#[derive(Debug, Clone)]
pub struct Mapping {
    versions: Vec<String>,
    labels: BTreeMap<&'static str, Vec<String>>,
    summary: Vec<String>,
    strip_port: bool,
}

impl Profile {
    pub fn mapping(&self, overrides: &toml::Table) -> Result<Mapping, Vec<MappingError>> {
        let mut errors = Vec::new();
        let mut labels = BTreeMap::new();
        for (name, list) in &self.labels {
            match FIELDS.iter().find(|f| *f == name) {
                Some(field) => {
                    labels.insert(*field, list.clone());
                }
                None => errors.push(MappingError {
                    field: None,
                    message: format!("profile maps unknown field `{name}`"),
                }),
            }
        }
        for (name, value) in overrides {
            let of_override = |message| MappingError {
                field: Some(name.clone()),
                message,
            };
            let Some(field) = FIELDS.iter().find(|f| *f == name) else {
                errors.push(of_override(format!(
                    "unknown field `{name}`; alertmanager fields are {}",
                    FIELDS.join(", ")
                )));
                continue;
            };
            let list: Option<Vec<String>> = match value {
                toml::Value::String(s) => Some(vec![s.clone()]),
                toml::Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect(),
                _ => None,
            };
            match list {
                Some(list) if !list.is_empty() => {
                    labels.insert(*field, list);
                }
                _ => errors.push(of_override(format!(
                    "field `{name}` must be a label name or a list of them, like [\"u_hostname\", \"instance\"]"
                ))),
            }
        }
        if errors.is_empty() {
            Ok(Mapping {
                versions: self.versions.clone(),
                labels,
                summary: self.annotations.summary.clone(),
                strip_port: self.options.strip_port,
            })
        } else {
            Err(errors)
        }
    }
}

/// The webhook body, as far as csmd reads it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    version: String,
    alerts: Vec<Alert>,
    #[serde(default)]
    truncated_alerts: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    fingerprint: String,
}

impl Mapping {
    pub fn parse(&self, body: &[u8]) -> Result<Parsed, ParseError> {
        let body: Body = serde_json::from_slice(body)
            .map_err(|e| ParseError(format!("not an Alertmanager webhook body: {e}")))?;
        if !self.versions.contains(&body.version) {
            return Err(ParseError(format!(
                "payload version {:?} is not supported; this profile reads version {}",
                body.version,
                self.versions.join(", ")
            )));
        }
        if body.alerts.is_empty() {
            return Err(ParseError("body holds no alerts".into()));
        }
        let events = body
            .alerts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                self.alert(a)
                    .map(Event::Alert)
                    .map_err(|e| ParseError(format!("alert {i}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Parsed {
            events,
            truncated: body.truncated_alerts,
        })
    }

    fn alert(&self, alert: &Alert) -> Result<AlertEvent, String> {
        let status = match alert.status.as_str() {
            "firing" => AlertStatus::Firing,
            "resolved" => AlertStatus::Resolved,
            other => return Err(format!("status {other:?} is neither firing nor resolved")),
        };
        if alert.fingerprint.trim().is_empty() {
            return Err("empty fingerprint".into());
        }
        let label = |field: &str| {
            self.labels
                .get(field)
                .into_iter()
                .flatten()
                .find_map(|name| alert.labels.get(name))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        let ci = label("ci").map(|ci| match (self.strip_port, ci.rsplit_once(':')) {
            (true, Some((host, port)))
                if !host.is_empty() && port.chars().all(|c| c.is_ascii_digit()) =>
            {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string()
            }
            _ => ci,
        });
        let summary = self
            .summary
            .iter()
            .find_map(|name| alert.annotations.get(name))
            .filter(|s| !s.trim().is_empty())
            .cloned()
            .unwrap_or_else(|| {
                let name = alert
                    .labels
                    .get("alertname")
                    .map_or("Alert", String::as_str);
                match &ci {
                    Some(ci) => format!("{name} on {ci}"),
                    None => name.to_string(),
                }
            });
        // Alertmanager writes the zero time for "unset".
        let set = |t: Option<DateTime<Utc>>| t.filter(|t| t.timestamp() > 0);
        Ok(AlertEvent {
            source_id: alert.fingerprint.clone(),
            status,
            service: label("service"),
            customer: label("customer"),
            severity: label("severity"),
            summary,
            ci,
            starts_at: set(alert.starts_at),
            ends_at: set(alert.ends_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> Mapping {
        let profile: Profile = crate::connector::pointer::shipped_profile("alertmanager");
        profile
            .mapping(&toml::Table::new())
            .expect("shipped profile maps")
    }

    const BODY: &str = r#"{
      "version": "4", "groupKey": "{}:{alertname=\"InstanceDown\"}", "truncatedAlerts": 2,
      "status": "firing", "receiver": "csmd", "groupLabels": {}, "commonLabels": {},
      "commonAnnotations": {}, "externalURL": "http://am:9093",
      "alerts": [
        {"status": "firing", "labels": {"alertname": "InstanceDown", "instance": "core-sw-par-01:9100",
         "job": "node", "severity": "critical"},
         "annotations": {"summary": "core-sw-par-01 is down"},
         "startsAt": "2026-11-22T10:00:00.123Z", "endsAt": "0001-01-01T00:00:00Z",
         "generatorURL": "http://prom/graph", "fingerprint": "a1b2c3d4e5f60718"},
        {"status": "resolved", "labels": {"alertname": "LinkFlap", "service": "vpn", "customer": "acme"},
         "annotations": {}, "startsAt": "2026-11-22T09:00:00Z", "endsAt": "2026-11-22T09:30:00Z",
         "generatorURL": "", "fingerprint": "0f0e0d0c0b0a0908"}
      ]
    }"#;

    #[test]
    fn maps_labels_onto_csmds_identifiers() {
        let parsed = mapping().parse(BODY.as_bytes()).expect("parses");
        assert_eq!(parsed.truncated, 2);
        let Event::Alert(down) = &parsed.events[0] else {
            panic!("not an alert")
        };
        assert_eq!(down.source_id, "a1b2c3d4e5f60718");
        assert_eq!(down.status, AlertStatus::Firing);
        assert_eq!(down.ci.as_deref(), Some("core-sw-par-01"));
        // No `service` label: the job is the service.
        assert_eq!(down.service.as_deref(), Some("node"));
        assert_eq!(down.severity.as_deref(), Some("critical"));
        assert_eq!(down.summary, "core-sw-par-01 is down");
        assert_eq!(down.ends_at, None);
        let Event::Alert(flap) = &parsed.events[1] else {
            panic!("not an alert")
        };
        assert_eq!(flap.status, AlertStatus::Resolved);
        assert_eq!(flap.service.as_deref(), Some("vpn"));
        assert_eq!(flap.customer.as_deref(), Some("acme"));
        assert_eq!(flap.summary, "LinkFlap");
        assert!(flap.ends_at.is_some());
    }

    #[test]
    fn refuses_other_versions_and_says_which_alert_is_wrong() {
        let m = mapping();
        let err = m.parse(br#"{"version": "3", "alerts": []}"#).unwrap_err();
        assert_eq!(
            err.0,
            "payload version \"3\" is not supported; this profile reads version 4"
        );
        let body = BODY.replace(r#""status": "resolved""#, r#""status": "pending""#);
        let err = m.parse(body.as_bytes()).unwrap_err();
        assert_eq!(
            err.0,
            "alert 1: status \"pending\" is neither firing nor resolved"
        );
        let err = m.parse(b"[]").unwrap_err();
        assert!(
            err.0.starts_with("not an Alertmanager webhook body"),
            "{err}"
        );
    }

    #[test]
    fn overrides_name_other_labels() {
        let profile: Profile = crate::connector::pointer::shipped_profile("alertmanager");
        let mut overrides = toml::Table::new();
        overrides.insert("ci".into(), toml::Value::String("job".into()));
        let parsed = profile
            .mapping(&overrides)
            .unwrap()
            .parse(BODY.as_bytes())
            .unwrap();
        let Event::Alert(down) = &parsed.events[0] else {
            panic!("not an alert")
        };
        assert_eq!(down.ci.as_deref(), Some("node"));
        overrides.insert("hostname".into(), toml::Value::String("x".into()));
        let errors = profile.mapping(&overrides).unwrap_err();
        assert!(
            errors[0].message.starts_with("unknown field `hostname`"),
            "{errors:?}"
        );
    }
}
