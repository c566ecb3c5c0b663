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
//!
//! The daemon's planner keeps the firing alerts and what each customer was
//! told between runs ([`Memory`]); the engine feeds it the alerts that
//! changed, so a run looks only at the customers those alerts concern and
//! at those whose group window or maintenance ends, not at every firing
//! alert of every customer.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::impact::{Impact, Reach};
use super::{AlertFeed, ChangedKinds, NoticeError, Planned};
use crate::config::customer::{ContactRole, Severity};
use crate::config::{Config, Customer, DisruptionsSection};
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
    Ok(Maintenances::load(store, impact, customers)?.at(now))
}

/// The changes that can put a customer's CIs under maintenance: those
/// being implemented, and the open ones with a planned window, which are
/// under way while the clock is inside it.
pub(crate) struct Maintenances(Vec<Maintenance>);

struct Maintenance {
    customer: CustomerId,
    /// The CIs (by sys_id and name) and services it covers.
    covered: BTreeSet<String>,
    number: String,
    /// Being implemented: under way whatever the clock says.
    implementing: bool,
    window: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Maintenances {
    pub(crate) fn load(
        store: &Store,
        impact: &Impact,
        customers: &[Customer],
    ) -> Result<Maintenances, StoreError> {
        let mut out = Vec::new();
        for record in store.itsm_records("changes")? {
            let ItsmRecord::Change(change) = record else {
                continue;
            };
            let implementing = change.state == ChangeState::Implement;
            let window = change.planned_start.zip(change.planned_end);
            let planned = window.is_some() && change.state.is_open();
            if !implementing && !planned {
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
                out.push(Maintenance {
                    customer: affected.id,
                    covered,
                    number: change.number.clone(),
                    implementing,
                    window,
                });
            }
        }
        Ok(Maintenances(out))
    }

    /// The windows under way at `now`.
    pub(crate) fn at(&self, now: DateTime<Utc>) -> Windows {
        let mut out = Windows::new();
        for m in &self.0 {
            let in_window = m
                .window
                .is_some_and(|(start, end)| start <= now && now <= end);
            if m.implementing || in_window {
                out.entry(m.customer.clone())
                    .or_default()
                    .push((m.covered.clone(), m.number.clone()));
            }
        }
        out
    }
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

/// An alert by connector and source id.
type AlertId = (ConnectorName, String);

fn id_of(alert: &AlertState) -> AlertId {
    (alert.connector.clone(), alert.source_id.clone())
}

/// What the planner keeps between runs, so that a run after a batch of
/// alerts looks only at the customers those alerts concern, not at every
/// firing alert and every customer. It is read from the store again when
/// the configuration or what the impact is computed from (CIs, accounts,
/// install base, changes) changed, when the alert feed overflowed, and
/// after a failed run.
pub struct Memory {
    feed: AlertFeed,
    itsm: ChangedKinds,
    config: Option<Arc<Config>>,
    kept: Option<Kept>,
}

/// The ITSM records the impact and the maintenance windows are read from.
const IMPACT_TREES: [&str; 5] = ["cis", "change_cis", "accounts", "install_base", "changes"];

struct Kept {
    reach: Reach,
    impact: Impact,
    maintenances: Maintenances,
    /// The windows under way at the last run.
    windows: Windows,
    /// Every firing alert.
    firing: HashMap<AlertId, AlertState>,
    /// Per customer (by index), the firing alerts it hears about.
    theirs: Vec<HashSet<AlertId>>,
    /// What each customer was told, by id, as stored.
    told: HashMap<String, Told>,
    /// Per customer, when it must be looked at again with the clock.
    due: Vec<Option<DateTime<Utc>>>,
}

impl Memory {
    /// A memory fed by `feed`, read again when `itsm` says impact records
    /// changed.
    pub fn new(feed: AlertFeed, itsm: ChangedKinds) -> Memory {
        Memory {
            feed,
            itsm,
            config: None,
            kept: None,
        }
    }

    /// Forgets what was kept if it was kept for another configuration.
    pub fn follow(&mut self, config: &Arc<Config>) {
        if !self.config.as_ref().is_some_and(|c| Arc::ptr_eq(c, config)) {
            self.config = Some(config.clone());
            self.kept = None;
        }
    }
}

/// What a run looks at: the customers whose disruption may move, and the
/// alerts that resolved since the last run.
#[derive(Default)]
struct Look {
    dirty: BTreeSet<usize>,
    resolved: HashMap<AlertId, AlertState>,
}

fn quiet(told: &Told) -> bool {
    told.open.is_none() && told.during_maintenance.is_empty()
}

impl Planner<'_> {
    /// Queues every notice due at `now`, in one batch, reading everything
    /// from the store; says how many messages were queued and when the
    /// next falls due with the clock.
    pub fn run(&self, store: &Store, now: DateTime<Utc>) -> Result<Planned, NoticeError> {
        let mut memory = Memory::new(AlertFeed::default(), ChangedKinds::all());
        self.run_with(store, &mut memory, now)
    }

    /// [`Planner::run`] from what `memory` kept of the last run and the
    /// alerts fed since; the store is read only when the memory is empty.
    pub fn run_with(
        &self,
        store: &Store,
        memory: &mut Memory,
        now: DateTime<Utc>,
    ) -> Result<Planned, NoticeError> {
        // Taken first: anything fed later is in the store by then, so
        // reading the store after loses nothing.
        let fed = memory.feed.take();
        let itsm_changed = memory.itsm.take().any(&IMPACT_TREES);
        let kept = memory
            .kept
            .take()
            .filter(|k| !itsm_changed && k.theirs.len() == self.customers.len());
        let (mut kept, look) = match (kept, fed) {
            (Some(mut kept), Some(fed)) => {
                let look = self.follow(&mut kept, fed, now);
                (kept, look)
            }
            _ => self.load(store, now)?,
        };
        let planned = self.plan_dirty(store, &mut kept, &look, now)?;
        memory.kept = Some(kept);
        Ok(planned)
    }

    /// Reads everything the planner keeps from the store; every customer
    /// is to be looked at, with the resolved alerts of open disruptions.
    fn load(&self, store: &Store, now: DateTime<Utc>) -> Result<(Kept, Look), NoticeError> {
        let impact = Impact::load(store, self.customers)?;
        let reach = impact.reach(self.customers);
        let maintenances = Maintenances::load(store, &impact, self.customers)?;
        let told: HashMap<String, Told> = told(store)?.into_iter().collect();
        let mut kept = Kept {
            windows: maintenances.at(now),
            reach,
            impact,
            maintenances,
            firing: HashMap::new(),
            theirs: vec![HashSet::new(); self.customers.len()],
            told,
            due: vec![None; self.customers.len()],
        };
        for alert in store.firing_alerts()? {
            let reached = kept.reach.customers(&alert);
            self.file(&mut kept, &reached, alert);
        }
        // The alerts of open disruptions no longer firing.
        let mut resolved = HashMap::new();
        for open in kept.told.values().filter_map(|t| t.open.as_ref()) {
            for key in open.alerts.keys() {
                let Some(id) = alert_of(key) else {
                    continue;
                };
                if !kept.firing.contains_key(&id)
                    && !resolved.contains_key(&id)
                    && let Some(state) = store.alert(&id.0, &id.1)?
                {
                    resolved.insert(id, state);
                }
            }
        }
        let dirty = (0..self.customers.len()).collect();
        Ok((kept, Look { dirty, resolved }))
    }

    /// Files a firing alert under those of the customers it concerns
    /// (`reached`) who hear about it.
    fn file(&self, kept: &mut Kept, reached: &[usize], alert: AlertState) {
        let id = id_of(&alert);
        for &i in reached {
            if self.hears(i, &alert) {
                kept.theirs[i].insert(id.clone());
            }
        }
        kept.firing.insert(id, alert);
    }

    /// Takes the alerts fed since the last run into `kept`; returns the
    /// customers to look at (those the alerts concern, those due, those
    /// whose maintenance windows changed) and the alerts that resolved.
    fn follow(&self, kept: &mut Kept, fed: Vec<AlertState>, now: DateTime<Utc>) -> Look {
        let Look {
            mut dirty,
            mut resolved,
        } = Look::default();
        for alert in fed {
            let id = id_of(&alert);
            let reached = kept.reach.customers(&alert);
            for &i in &reached {
                kept.theirs[i].remove(&id);
                dirty.insert(i);
            }
            match alert.status {
                AlertStatus::Firing => {
                    resolved.remove(&id);
                    self.file(kept, &reached, alert);
                }
                AlertStatus::Resolved => {
                    kept.firing.remove(&id);
                    resolved.insert(id, alert);
                }
            }
        }
        for (i, due) in kept.due.iter().enumerate() {
            if due.is_some_and(|at| at <= now) {
                dirty.insert(i);
            }
        }
        let windows = kept.maintenances.at(now);
        if windows != kept.windows {
            for (i, customer) in self.customers.iter().enumerate() {
                if windows.get(&customer.id) != kept.windows.get(&customer.id) {
                    dirty.insert(i);
                }
            }
            kept.windows = windows;
        }
        Look { dirty, resolved }
    }

    /// Whether customer `i` hears about `alert` (which concerns it): its
    /// contract opts in and the alert is at or above its severity.
    fn hears(&self, i: usize, alert: &AlertState) -> bool {
        self.customers.get(i).is_some_and(|customer| {
            customer.contract.proactive_notices
                && Severity::of_label(alert.severity.as_deref())
                    >= customer.contract.notice_min_severity
        })
    }

    /// Moves the disruptions of the `dirty` customers forward and queues
    /// their messages with their states in one batch; `kept` learns what
    /// they were told once that is durable.
    fn plan_dirty(
        &self,
        store: &Store,
        kept: &mut Kept,
        look: &Look,
        now: DateTime<Utc>,
    ) -> Result<Planned, NoticeError> {
        let Look { dirty, resolved } = look;
        // The resolved alerts each dirty customer hears about.
        let mut resolved_of: HashMap<usize, Vec<&AlertState>> = HashMap::new();
        for alert in resolved.values() {
            for i in kept.reach.customers(alert) {
                if dirty.contains(&i) && self.hears(i, alert) {
                    resolved_of.entry(i).or_default().push(alert);
                }
            }
        }
        let mut states = Vec::new();
        let mut told_now = Vec::new();
        let mut messages = Vec::new();
        for &i in dirty {
            let Some(customer) = self.customers.get(i) else {
                continue;
            };
            kept.due[i] = None;
            let before = kept.told.get(customer.id.as_str());
            let firing = kept.theirs[i].iter().filter_map(|id| kept.firing.get(id));
            let alerts: Vec<&AlertState> = firing
                .chain(resolved_of.get(&i).into_iter().flatten().copied())
                .collect();
            // Nothing to move forward: no alert, nothing open, no mark.
            if alerts.is_empty() && before.is_none_or(quiet) {
                continue;
            }
            let keys: Vec<String> = alerts.iter().map(|a| occurrence(a)).collect();
            let theirs: Vec<(&str, &AlertState)> =
                keys.iter().map(String::as_str).zip(alerts).collect();
            let before = before.cloned().unwrap_or_default();
            let mut after = before.clone();
            let situation = Situation {
                alerts: &theirs,
                impact: &kept.impact,
                windows: &kept.windows,
                now,
            };
            kept.due[i] = self.plan(customer, &situation, &mut after, &mut messages)?;
            if after != before {
                states.push(StateChange::Put {
                    name: format!("{STATE_PREFIX}{}", customer.id),
                    value: serde_json::to_vec(&after)?,
                });
                told_now.push((customer.id.to_string(), after));
            }
        }
        let due = kept.due.iter().flatten().min().copied();
        if states.is_empty() {
            return Ok(Planned { queued: 0, due });
        }
        let queued = store.queue_messages(states, messages)?.len();
        kept.told.extend(told_now);
        Ok(Planned { queued, due })
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
        /// What the planner keeps between runs, or nothing: each run reads
        /// the store.
        memory: Option<std::cell::RefCell<Memory>>,
        feed: AlertFeed,
    }

    impl World {
        /// A world in which the planner keeps what it read (`kept`), or
        /// reads the store at every run: both must tell the same.
        fn new(kept: bool) -> World {
            let feed = AlertFeed::default();
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
                memory: kept.then(|| Memory::new(feed.clone(), ChangedKinds::all()).into()),
                feed,
            }
        }

        /// Delivers alerts received at `received`.
        fn deliver(&self, events: &[AlertEvent], received: DateTime<Utc>) {
            let applied = self
                .store
                .apply_alerts(events.iter().map(|e| (&self.connector, received, e)))
                .unwrap();
            self.feed.push(applied.noticeable);
        }

        /// Runs the planner at `now`; the messages it queued, by customer.
        fn run(&self, now: DateTime<Utc>) -> BTreeMap<String, Vec<String>> {
            let planner = Planner {
                customers: &self.customers,
                settings: &self.settings,
                default_time_zone: chrono_tz::Europe::Paris,
                templates: &self.templates,
                from: &self.from,
            };
            match &self.memory {
                Some(memory) => planner.run_with(&self.store, &mut memory.borrow_mut(), now),
                None => planner.run(&self.store, now),
            }
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
        for kept in [false, true] {
            twenty_alerts_within_five_seconds(kept);
        }
    }

    fn twenty_alerts_within_five_seconds(kept: bool) {
        let world = World::new(kept);
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
        for kept in [false, true] {
            an_alert_joining(kept);
        }
    }

    fn an_alert_joining(kept: bool) {
        let world = World::new(kept);
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

    #[test]
    fn a_planner_that_kept_its_memory_tells_what_one_reading_the_store_tells() {
        let world = World::new(true);
        world.deliver(&[firing("fp1", "vpn", at(0))], at(0));
        world.deliver(&[firing("fp2", "email", at(5))], at(5));
        let told = world.run(at(40));
        assert_eq!(told.len(), 4, "{told:?}");
        // The summary changes on a repeated delivery, and fp2 resolves.
        let mut repeated = firing("fp1", "vpn", at(0));
        repeated.summary = "VPN gateway down in Paris".into();
        let mut resolved = firing("fp2", "email", at(5));
        resolved.status = AlertStatus::Resolved;
        resolved.ends_at = Some(at(50));
        world.deliver(&[repeated, resolved], at(60));
        let told = world.run(at(61));
        assert_eq!(told["d"], ["disruption", "disruption_resolved"]);
        assert_eq!(told["a"], ["disruption"]);
        let kept: BTreeMap<String, Told> = world
            .memory
            .as_ref()
            .map(|m| m.borrow().kept.as_ref().unwrap().told.clone())
            .unwrap()
            .into_iter()
            .collect();
        // What it kept is what is stored, which has the new summary.
        assert_eq!(kept, told_of(&world.store));
        let a = kept["a"].open.as_ref().unwrap();
        assert!(
            a.alerts
                .values()
                .any(|alert| alert.summary == "VPN gateway down in Paris"),
            "{a:?}"
        );

        // A feed that overflowed is not trusted: the store is read again,
        // and a resolution the feed dropped is still told (had the planner
        // followed the stale firing states fed after it, it would not be).
        let stale = world.store.alert(&world.connector, "fp1").unwrap().unwrap();
        let mut resolved = firing("fp1", "vpn", at(0));
        resolved.status = AlertStatus::Resolved;
        resolved.ends_at = Some(at(70));
        world.deliver(&[resolved], at(70));
        world.feed.push(std::iter::repeat_n(stale, 100_001));
        let told = world.run(at(71));
        for customer in ["a", "b", "c"] {
            assert_eq!(told[customer], ["disruption", "disruption_resolved"]);
        }
    }

    fn told_of(store: &Store) -> BTreeMap<String, Told> {
        told(store).unwrap()
    }
}
