//! Proactive disruption notices: a firing alert on a CI or service reaches,
//! through the install base, every customer using it, who hears about it
//! from us first:
//! - alerts of one customer that start within `group_window` of the first
//!   make one notice;
//! - alerts joining an open disruption make at most one update per
//!   `group_interval`;
//! - when all of its alerts have resolved, a resolution notice gives the
//!   duration.
//!
//! Only customers whose contract opts in (`proactive_notices`) hear about
//! alerts at or above their `notice_min_severity`. An alert on a CI inside
//! the window of a change under way for that customer is recorded as
//! "during maintenance" and notifies nobody: the customer was told.
//!
//! What each customer was told is state in the outbox tree, written in the
//! same batch as the messages it causes, like the maintenance notices.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::impact::Impact;
use super::{NoticeError, Planned};
use crate::config::customer::{ContactRole, Severity};
use crate::config::{Customer, DisruptionsSection};
use crate::model::alert::AlertState;
use crate::model::itsm::{ChangeState, ItsmRecord};
use crate::model::outbox::{Draft, MessageKind, OutboxMessage};
use crate::model::{AlertStatus, ConnectorName, CustomerId};
use crate::notify::templates::{DisruptionAlert, DisruptionNotice, Templates};
use crate::store::outbox::StateChange;
use crate::store::{Store, StoreError};

/// Per customer, the CIs and services under each change under way, with
/// the change's number.
pub(crate) type Windows = BTreeMap<CustomerId, Vec<(BTreeSet<String>, String)>>;

/// Names of the per-customer states in the outbox tree.
const STATE_PREFIX: &str = "disruption/";

/// What one customer was told: the disruption open now, if any, and the
/// alerts held back because a maintenance covers them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Told {
    pub open: Option<Disruption>,
    /// Alert occurrence → the change whose window covers it.
    #[serde(default)]
    pub during_maintenance: BTreeMap<String, String>,
}

/// One disruption of one customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disruption {
    pub reference: String,
    pub started: DateTime<Utc>,
    /// Alert occurrence → what the customer was told about it.
    pub alerts: BTreeMap<String, DisruptionAlert>,
    /// The occurrences in the last message.
    pub notified: BTreeSet<String>,
    pub sequence: u32,
    pub last_notice: DateTime<Utc>,
}

/// What every customer was told, by customer id.
pub fn told(store: &Store) -> Result<BTreeMap<String, Told>, StoreError> {
    Ok(store
        .outbox_states(STATE_PREFIX)?
        .into_iter()
        .filter_map(|(name, bytes)| {
            let customer = name.strip_prefix(STATE_PREFIX)?.to_string();
            Some((customer, serde_json::from_slice(&bytes).ok()?))
        })
        .collect())
}

/// Everything the planner needs besides the store.
pub struct Planner<'a> {
    pub customers: &'a [Customer],
    pub settings: &'a DisruptionsSection,
    pub default_time_zone: Tz,
    pub templates: &'a Templates,
    pub from: &'a lettre::message::Mailbox,
}

/// What one customer's disruption is planned from.
#[derive(Clone, Copy)]
struct Situation<'a> {
    /// The alerts concerning the customer, with their occurrence keys.
    alerts: &'a [(&'a str, &'a AlertState)],
    impact: &'a Impact,
    windows: &'a Windows,
    now: DateTime<Utc>,
}

/// Per customer, the CIs under a change being carried out now (by
/// sys_id and name), with the change's number.
pub(crate) fn maintenance_windows(
    store: &Store,
    impact: &Impact,
    customers: &[Customer],
    now: DateTime<Utc>,
) -> Result<Windows, StoreError> {
    let mut out = Windows::new();
    for record in store.itsm_records("changes")? {
        let ItsmRecord::Change(change) = record else {
            continue;
        };
        let in_window = change
            .planned_start
            .zip(change.planned_end)
            .is_some_and(|(start, end)| start <= now && now <= end);
        let under_way =
            change.state == ChangeState::Implement || (in_window && change.state.is_open());
        if !under_way {
            continue;
        }
        let cis = impact.change_cis(&change);
        let mut names = cis.clone();
        names.extend(
            cis.iter()
                .filter_map(|c| impact.ci_name(c).map(str::to_string)),
        );
        for affected in impact.affected_customers(&change, customers) {
            let mut covered = names.clone();
            covered.extend(affected.services.iter().cloned());
            out.entry(affected.id)
                .or_default()
                .push((covered, change.number.clone()));
        }
    }
    Ok(out)
}

/// An alert occurrence: the alert and its start, so an alert that fires
/// again later is a new occurrence.
pub(crate) fn occurrence(alert: &AlertState) -> String {
    format!(
        "{}/{}/{}",
        alert.connector,
        alert.source_id,
        alert.starts_at.unwrap_or(alert.first_seen).timestamp()
    )
}

/// The connector and source id of an occurrence key.
pub(crate) fn alert_of(occurrence: &str) -> Option<(crate::model::ConnectorName, String)> {
    let (alert, _start) = occurrence.rsplit_once('/')?;
    let (connector, source_id) = alert.split_once('/')?;
    Some((connector.parse().ok()?, source_id.to_string()))
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Planner<'_> {
    /// Queues every notice due at `now`, in one batch; says how many
    /// messages were queued and when the next falls due with the clock.
    pub fn run(&self, store: &Store, now: DateTime<Utc>) -> Result<Planned, NoticeError> {
        let mut alerts = store.firing_alerts()?;
        let told = told(store)?;
        let quiet = |t: &Told| t.open.is_none() && t.during_maintenance.is_empty();
        if alerts.is_empty() && told.values().all(quiet) {
            return Ok(Planned::default());
        }
        // The alerts of open disruptions, resolved or not.
        let mut known: HashSet<(ConnectorName, String)> = alerts
            .iter()
            .map(|a| (a.connector.clone(), a.source_id.clone()))
            .collect();
        for open in told.values().filter_map(|t| t.open.as_ref()) {
            for key in open.alerts.keys() {
                let Some(alert) = alert_of(key) else {
                    continue;
                };
                if !known.contains(&alert)
                    && let Some(state) = store.alert(&alert.0, &alert.1)?
                {
                    alerts.push(state);
                    known.insert(alert);
                }
            }
        }
        let impact = Impact::load(store, self.customers)?;
        let windows = maintenance_windows(store, &impact, self.customers, now)?;
        let keys: Vec<String> = alerts.iter().map(occurrence).collect();
        let theirs = self.alerts_of_each(&alerts, &keys, &impact);
        let mut states = Vec::new();
        let mut messages = Vec::new();
        let mut due: Option<DateTime<Utc>> = None;
        for (customer, theirs) in self.customers.iter().zip(&theirs) {
            let before = told.get(customer.id.as_str());
            // Nothing to move forward: no alert, nothing open, no mark.
            if theirs.is_empty() && before.is_none_or(quiet) {
                continue;
            }
            let before = before.cloned().unwrap_or_default();
            let mut after = before.clone();
            let situation = Situation {
                alerts: theirs,
                impact: &impact,
                windows: &windows,
                now,
            };
            if let Some(at) = self.plan(customer, &situation, &mut after, &mut messages)? {
                due = Some(due.map_or(at, |d| d.min(at)));
            }
            if after != before {
                states.push(StateChange::Put {
                    name: format!("{STATE_PREFIX}{}", customer.id),
                    value: serde_json::to_vec(&after)?,
                });
            }
        }
        if states.is_empty() {
            return Ok(Planned { queued: 0, due });
        }
        let queued = store.queue_messages(states, messages)?.len();
        Ok(Planned { queued, due })
    }

    /// The alerts that concern each customer (in the order of
    /// `self.customers`), with their occurrence keys (`keys`, beside
    /// `alerts`): named by its `customer` label, or on a CI or service of
    /// its install base, at or above its severity.
    fn alerts_of_each<'a>(
        &self,
        alerts: &'a [AlertState],
        keys: &'a [String],
        impact: &Impact,
    ) -> Vec<Vec<(&'a str, &'a AlertState)>> {
        let reach = impact.reach(self.customers);
        let mut theirs = vec![Vec::new(); self.customers.len()];
        for (alert, key) in alerts.iter().zip(keys) {
            let severity = Severity::of_label(alert.severity.as_deref());
            for i in reach.customers(alert) {
                let Some(customer) = self.customers.get(i) else {
                    continue;
                };
                if customer.contract.proactive_notices
                    && severity >= customer.contract.notice_min_severity
                {
                    theirs[i].push((key.as_str(), alert));
                }
            }
        }
        theirs
    }

    /// Moves one customer's disruption forward (every message it queues
    /// changes `told`); returns when it must be looked at again because a
    /// group window or interval ends.
    fn plan(
        &self,
        customer: &Customer,
        situation: &Situation<'_>,
        told: &mut Told,
        messages: &mut Vec<OutboxMessage>,
    ) -> Result<Option<DateTime<Utc>>, NoticeError> {
        let Situation {
            alerts,
            impact,
            windows,
            now,
        } = *situation;
        let window = chrono::Duration::from_std(self.settings.group_window.0)
            .unwrap_or(chrono::Duration::zero());
        let interval = chrono::Duration::from_std(self.settings.group_interval.0)
            .unwrap_or(chrono::Duration::zero());
        let maintenance = windows.get(&customer.id);
        // Firing alerts not covered by a maintenance.
        let mut firing = Vec::new();
        let firing_now = || {
            alerts
                .iter()
                .filter(|(_, a)| a.status == AlertStatus::Firing)
        };
        for &(key, alert) in firing_now() {
            let covering = maintenance.into_iter().flatten().find(|(cis, _)| {
                alert.ci.as_ref().is_some_and(|c| cis.contains(c))
                    || alert.service.as_ref().is_some_and(|s| cis.contains(s))
            });
            match covering {
                Some((_, change)) => {
                    if told
                        .during_maintenance
                        .insert(key.to_string(), change.clone())
                        .is_none()
                    {
                        tracing::info!(customer = %customer.id, alert = %alert.summary, %change, "Alert during maintenance: no disruption notice");
                    }
                }
                None => firing.push((key, alert)),
            }
        }
        // Forget maintenance marks of alerts no longer firing.
        if !told.during_maintenance.is_empty() {
            let keys: HashSet<&str> = firing_now().map(|&(key, _)| key).collect();
            told.during_maintenance
                .retain(|key, _| keys.contains(key.as_str()));
        }

        let Some(open) = &mut told.open else {
            // A new disruption once the first alert's window has passed.
            let Some(first) = firing.iter().map(|(_, a)| a.first_seen).min() else {
                return Ok(None);
            };
            if now < first + window {
                return Ok(Some(first + window));
            }
            let started = firing
                .iter()
                .map(|(_, a)| a.starts_at.unwrap_or(a.first_seen))
                .min()
                .unwrap_or(first);
            let tz = self.time_zone(customer);
            let mut disruption = Disruption {
                reference: format!(
                    "DIS-{}-{}",
                    customer.id,
                    started.with_timezone(&tz).format("%Y%m%d-%H%M")
                ),
                started,
                alerts: BTreeMap::new(),
                notified: BTreeSet::new(),
                sequence: 0,
                last_notice: now,
            };
            for (key, alert) in &firing {
                disruption.alerts.insert(key.to_string(), told_about(alert));
            }
            disruption.notified = disruption.alerts.keys().cloned().collect();
            self.messages(customer, impact, &disruption, "notice", None, now, messages)?;
            tracing::info!(customer = %customer.id, reference = %disruption.reference, alerts = disruption.alerts.len(), "Disruption notice queued");
            told.open = Some(disruption);
            return Ok(None);
        };

        // Refresh what is known of the disruption's alerts, and add new ones.
        let mut by_key: HashMap<&str, &AlertState> = HashMap::new();
        for &(key, alert) in alerts {
            by_key.entry(key).or_insert(alert);
        }
        for (key, entry) in open.alerts.iter_mut() {
            match by_key.get(key.as_str()) {
                Some(alert) => *entry = told_about(alert),
                // Gone from the store: it cannot be firing any more.
                None if entry.status == "firing" => {
                    entry.status = "resolved".into();
                    entry.ended = Some(rfc3339(now));
                }
                None => {}
            }
        }
        for (key, alert) in &firing {
            open.alerts
                .entry(key.to_string())
                .or_insert_with(|| told_about(alert));
        }
        let all_resolved = open.alerts.values().all(|a| a.status == "resolved");
        if all_resolved {
            let ended = open
                .alerts
                .values()
                .filter_map(|a| a.ended.as_deref())
                .filter_map(|e| DateTime::parse_from_rfc3339(e).ok())
                .map(|e| e.with_timezone(&Utc))
                .max()
                .unwrap_or(now);
            let mut disruption = open.clone();
            disruption.sequence += 1;
            self.messages(
                customer,
                impact,
                &disruption,
                "resolved",
                Some(ended),
                now,
                messages,
            )?;
            tracing::info!(customer = %customer.id, reference = %disruption.reference, "Disruption resolution queued");
            told.open = None;
            return Ok(None);
        }
        let joined = open.alerts.keys().any(|k| !open.notified.contains(k));
        if joined && now < open.last_notice + interval {
            return Ok(Some(open.last_notice + interval));
        }
        if joined {
            open.sequence += 1;
            open.last_notice = now;
            open.notified = open.alerts.keys().cloned().collect();
            let disruption = open.clone();
            self.messages(customer, impact, &disruption, "update", None, now, messages)?;
            tracing::info!(customer = %customer.id, reference = %disruption.reference, sequence = disruption.sequence, "Disruption update queued");
        }
        Ok(None)
    }

    fn time_zone(&self, customer: &Customer) -> Tz {
        customer.time_zone.map_or(self.default_time_zone, |t| t.0)
    }

    /// One message per primary contact.
    #[allow(clippy::too_many_arguments)]
    fn messages(
        &self,
        customer: &Customer,
        impact: &Impact,
        disruption: &Disruption,
        kind: &'static str,
        ended: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        out: &mut Vec<OutboxMessage>,
    ) -> Result<(), NoticeError> {
        let alerts: Vec<DisruptionAlert> = disruption.alerts.values().cloned().collect();
        let set = |f: fn(&DisruptionAlert) -> Option<&String>| -> Vec<String> {
            alerts
                .iter()
                .filter_map(f)
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let notice = DisruptionNotice {
            kind,
            customer_name: customer.name.clone(),
            recipient_name: None,
            reference: disruption.reference.clone(),
            started: rfc3339(disruption.started),
            ended: ended.map(rfc3339),
            time_zone: self.time_zone(customer).name().to_string(),
            services: set(|a| a.service.as_ref()),
            // The customer's own equipment only, not the provider's
            // behind a shared service.
            cis: set(|a| a.ci.as_ref())
                .into_iter()
                .filter(|ci| impact.uses(&BTreeSet::from([ci.clone()]), &customer.id))
                .collect(),
            alerts,
            sequence: disruption.sequence,
        };
        let message_kind = match kind {
            "notice" => MessageKind::Disruption,
            "update" => MessageKind::DisruptionUpdate,
            _ => MessageKind::DisruptionResolved,
        };
        let domain = self.from.email.domain();
        for contact in customer
            .contacts
            .iter()
            .filter(|c| c.roles.contains(&ContactRole::Primary))
        {
            // Checked when the customer file was loaded.
            let Ok(address) = contact.email.parse::<lettre::Address>() else {
                continue;
            };
            let rendered = self.templates.disruption(&DisruptionNotice {
                recipient_name: Some(contact.name.clone()),
                ..notice.clone()
            })?;
            out.push(
                Draft {
                    key: format!(
                        "disruption/{}/{}/{kind}/{}/{}",
                        customer.id, disruption.reference, disruption.sequence, contact.email
                    ),
                    kind: message_kind,
                    customer: Some(customer.id.clone()),
                    to: lettre::message::Mailbox::new(Some(contact.name.clone()), address)
                        .to_string(),
                    subject: rendered.subject,
                    text: rendered.text,
                    html: rendered.html,
                    calendar: None,
                }
                .queue(domain, now),
            );
        }
        Ok(())
    }
}

/// What a notice says about one alert.
fn told_about(alert: &AlertState) -> DisruptionAlert {
    DisruptionAlert {
        summary: alert.summary.clone(),
        ci: alert.ci.clone(),
        service: alert.service.clone(),
        severity: alert.severity.clone(),
        started: rfc3339(alert.starts_at.unwrap_or(alert.first_seen)),
        ended: alert.ends_at.map(rfc3339),
        status: match alert.status {
            AlertStatus::Firing => "firing".into(),
            AlertStatus::Resolved => "resolved".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlertEvent, ConnectorName};
    use crate::notify::templates::Branding;

    fn at(seconds: i64) -> DateTime<Utc> {
        "2026-11-22T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
            + chrono::Duration::seconds(seconds)
    }

    fn customer(id: &str, install_base: &str) -> Customer {
        let text = format!(
            "id = \"{id}\"\nname = \"{id} corp\"\n\n\
             [[contact]]\nname = \"Ops\"\nemail = \"ops@{id}.example\"\nroles = [\"primary\"]\n\n\
             {install_base}\n"
        );
        toml::from_str(&text).unwrap()
    }

    fn firing(id: &str, service: &str, starts: DateTime<Utc>) -> AlertEvent {
        AlertEvent {
            source_id: id.into(),
            status: AlertStatus::Firing,
            service: Some(service.into()),
            ci: None,
            customer: None,
            severity: Some("critical".into()),
            summary: format!("{id} down"),
            starts_at: Some(starts),
            ends_at: None,
        }
    }

    struct World {
        _dir: tempfile::TempDir,
        store: Store,
        customers: Vec<Customer>,
        templates: Templates,
        settings: DisruptionsSection,
        from: lettre::message::Mailbox,
        connector: ConnectorName,
    }

    impl World {
        fn new() -> World {
            let dir = tempfile::tempdir().unwrap();
            World {
                store: Store::open(dir.path()).unwrap(),
                _dir: dir,
                customers: vec![
                    customer("a", "[[install_base]]\nservice = \"vpn\""),
                    customer("b", "[[install_base]]\nservice = \"vpn\""),
                    customer("c", "[[install_base]]\nci = \"gw-1\"\nservice = \"vpn\""),
                    customer("d", "[[install_base]]\nservice = \"email\""),
                ],
                templates: Templates::load(None, Branding::default()).unwrap(),
                settings: DisruptionsSection::default(),
                from: "CSM <csm@example.net>".parse().unwrap(),
                connector: "mon".parse().unwrap(),
            }
        }

        /// Delivers alerts received at `received`.
        fn deliver(&self, events: &[AlertEvent], received: DateTime<Utc>) {
            self.store
                .apply_alerts(events.iter().map(|e| (&self.connector, received, e)))
                .unwrap();
        }

        /// Runs the planner at `now`; the messages it queued, by customer.
        fn run(&self, now: DateTime<Utc>) -> BTreeMap<String, Vec<String>> {
            Planner {
                customers: &self.customers,
                settings: &self.settings,
                default_time_zone: chrono_tz::Europe::Paris,
                templates: &self.templates,
                from: &self.from,
            }
            .run(&self.store, now)
            .unwrap();
            let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let filter = crate::store::outbox::OutboxFilter::default();
            let mut messages = self.store.outbox_overview(&filter, 1000).unwrap().0;
            messages.sort_by_key(|m| m.created_at);
            for m in messages {
                out.entry(m.customer_label().to_string())
                    .or_default()
                    .push(m.kind.as_str().to_string());
            }
            out
        }
    }

    #[test]
    fn twenty_alerts_within_five_seconds_make_one_notice_per_customer_of_the_service() {
        let world = World::new();
        // 20 alerts on the shared VPN service, one every 250 ms.
        for i in 0..20 {
            let received = at(0) + chrono::Duration::milliseconds(250 * i);
            world.deliver(&[firing(&format!("fp{i}"), "vpn", received)], received);
            // Within the group window nobody is told yet.
            assert!(
                world.run(received).is_empty(),
                "told before the window at {i}"
            );
        }
        let told = world.run(at(30));
        let notices = vec!["disruption".to_string()];
        let expected: BTreeMap<String, Vec<String>> = ["a", "b", "c"]
            .into_iter()
            .map(|c| (c.to_string(), notices.clone()))
            .collect();
        assert_eq!(told, expected);
        // Running again changes nothing: the state says they were told.
        assert_eq!(world.run(at(31)), expected);
    }

    #[test]
    fn an_alert_joining_waits_for_the_interval_and_the_end_is_one_resolution() {
        let world = World::new();
        world.deliver(&[firing("fp1", "vpn", at(0))], at(0));
        assert_eq!(world.run(at(30)).get("a").map(Vec::len), Some(1));
        // A second alert joins a minute later: updates wait for the
        // interval (5 minutes after the notice).
        world.deliver(&[firing("fp2", "vpn", at(60))], at(60));
        assert_eq!(world.run(at(90)).get("a").map(Vec::len), Some(1));
        let told = world.run(at(330));
        assert_eq!(told["a"], ["disruption", "disruption_update"]);
        // Both resolve: one resolution, then nothing more.
        let mut resolved = firing("fp1", "vpn", at(0));
        resolved.status = AlertStatus::Resolved;
        resolved.ends_at = Some(at(400));
        let mut resolved2 = firing("fp2", "vpn", at(60));
        resolved2.status = AlertStatus::Resolved;
        resolved2.ends_at = Some(at(410));
        world.deliver(&[resolved, resolved2], at(420));
        let told = world.run(at(421));
        assert_eq!(
            told["a"],
            ["disruption", "disruption_update", "disruption_resolved"]
        );
        assert_eq!(world.run(at(500))["a"].len(), 3);
        assert!(!told.contains_key("d"));
    }
}
