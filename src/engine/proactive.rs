//! Proactive ITSM tickets: the alerts of a monitoring connector with a
//! `[connector.itsm]` section open one major incident per outage and one
//! proactive case per customer the outage reaches, through an ITSM
//! connector's write-back.
//!
//! An outage is the alerts on one service (or, for an alert naming no
//! service, one CI) of one monitoring connector that overlap in time. It
//! opens when the first of them fires at or above the connector's
//! `min_severity` and reaches a customer; later alerts on the same target
//! join it, each customer they reach for the first time gets a case, and
//! the major incident gets a work note. When every alert of the outage has
//! resolved, the incident and the cases get a work note with the duration
//! and the profile's resolution columns.
//!
//! A customer is not reached by an alert on a CI under a change under way
//! for that customer: the customer was told about the maintenance, and an
//! outage reaching nobody else opens no major incident.
//!
//! Every ticket's key is its correlation id in the ITSM; a case's key is
//! its major incident's key followed by the customer, which links them.
//! The outage states and the queued writes change in one transaction.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::Planned;
use super::disruption::{Windows, maintenance_windows, occurrence};
use super::impact::Impact;
use crate::config::customer::Severity;
use crate::config::{AlertTickets, Connector, Customer};
use crate::connector::rest::profile::{TicketField, TicketProfile, TicketPurpose};
use crate::model::alert::AlertState;
use crate::model::itsm::ItsmWrite;
use crate::model::{AlertStatus, ConnectorName, CustomerId};
use crate::store::outbox::StateChange;
use crate::store::tickets::TicketWrite;
use crate::store::{Store, StoreError};

/// Names of the open outages' states in the tickets tree.
const STATE_PREFIX: &str = "outage/";

#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode an outage: {0}")]
    State(#[from] serde_json::Error),
}

/// One outage with open tickets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    /// The monitoring connector whose alerts make it.
    pub connector: ConnectorName,
    /// The ITSM connector its tickets are written with.
    pub writeback: ConnectorName,
    /// The service, or the CI, its alerts are on.
    pub target: String,
    pub started: DateTime<Utc>,
    /// The major incident's key (its correlation id).
    pub incident: String,
    /// Alert occurrence → its summary, while it fires.
    pub alerts: BTreeMap<String, String>,
    /// Customer → the key of its proactive case.
    pub cases: BTreeMap<CustomerId, String>,
}

/// The open outages, by state name.
pub fn outages(store: &Store) -> Result<BTreeMap<String, Outage>, StoreError> {
    Ok(store
        .ticket_states(STATE_PREFIX)?
        .into_iter()
        .filter_map(|(name, bytes)| Some((name, serde_json::from_slice(&bytes).ok()?)))
        .collect())
}

/// Everything the planner needs besides the store.
pub struct Planner<'a> {
    pub connectors: &'a [Connector],
    pub customers: &'a [Customer],
}

/// The alerts on one target of one connector at this run, with the
/// customers each reaches.
struct Target<'a> {
    connector: &'a Connector,
    settings: &'a AlertTickets,
    alerts: Vec<(&'a AlertState, Vec<&'a Customer>)>,
}

/// The writes of one run and the states they go with.
#[derive(Default)]
struct Run {
    states: Vec<StateChange>,
    writes: Vec<TicketWrite>,
}

fn state_name(connector: &ConnectorName, target: &str) -> String {
    format!("{STATE_PREFIX}{connector}/{target}")
}

fn utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// "2 h 5 min", "12 min".
fn duration(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let minutes = (to - from).num_minutes().max(0);
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m} min"),
        (h, 0) => format!("{h} h"),
        (h, m) => format!("{h} h {m} min"),
    }
}

/// The major incident's key: readable, unique per outage, and short enough
/// for a case key to add a customer id and stay within 100 characters.
fn incident_key(connector: &ConnectorName, target: &str, started: DateTime<Utc>) -> String {
    let digest = Sha256::digest(format!("{connector}\0{target}").as_bytes());
    format!(
        "csmd-mi-{}-{}",
        started.format("%Y%m%dT%H%M%SZ"),
        hex::encode(&digest[..4])
    )
}

fn alert_line(alert: &AlertState) -> String {
    let severity = alert.severity.as_deref().unwrap_or("unknown severity");
    let on = match (&alert.ci, &alert.service) {
        (Some(ci), _) => format!(" (CI {ci})"),
        (None, Some(service)) => format!(" (service {service})"),
        (None, None) => String::new(),
    };
    format!("- [{severity}] {}{on}", alert.summary)
}

/// A ticket's columns: the profile's `create` columns, then csmd's parts
/// where the profile maps them.
fn columns(
    profile: &TicketProfile,
    base: &Map<String, Value>,
    parts: &[(TicketField, Option<String>)],
) -> Map<String, Value> {
    let mut fields = base.clone();
    for (field, value) in parts {
        if let (Some(column), Some(value)) = (profile.fields.get(field), value) {
            fields.insert(column.clone(), Value::String(value.clone()));
        }
    }
    fields
}

/// A work note, with the resolution columns when `resolve`.
fn note(profile: &TicketProfile, text: String, resolve: bool) -> Map<String, Value> {
    let base = if resolve {
        profile.resolve.clone()
    } else {
        Map::new()
    };
    columns(profile, &base, &[(TicketField::Note, Some(text))])
}

impl Planner<'_> {
    /// Queues the tickets and notes due now, in one transaction; says how
    /// many writes were queued.
    pub fn run(&self, store: &Store, now: DateTime<Utc>) -> Result<Planned, TicketError> {
        let open = outages(store)?;
        let ticketing = self.connectors.iter().any(|c| c.tickets.is_some());
        if !ticketing && open.is_empty() {
            return Ok(Planned::default());
        }
        let firing = store.firing_alerts()?;
        if firing.is_empty() && open.is_empty() {
            return Ok(Planned::default());
        }
        let impact = Impact::load(store, self.customers)?;
        let windows = maintenance_windows(store, &impact, self.customers, now)?;
        let targets = self.targets(&firing, &impact, &windows);
        let firing_now: BTreeSet<String> = firing.iter().map(occurrence).collect();

        let mut run = Run::default();
        for (name, target) in &targets {
            match open.get(name) {
                Some(outage) => self.grow(name, outage, target, &impact, now, &mut run)?,
                None => self.open(name, target, &impact, now, &mut run)?,
            }
        }
        for (name, outage) in &open {
            if !targets.contains_key(name) && !outage.alerts.keys().any(|k| firing_now.contains(k))
            {
                self.resolve(store, name, outage, now, &mut run)?;
            }
        }
        let queued = store.commit_tickets(&run.states, &run.writes, now)?;
        Ok(Planned { queued, due: None })
    }

    fn settings(&self, connector: &ConnectorName) -> Option<(&Connector, &AlertTickets)> {
        let connector = self.connectors.iter().find(|c| c.name == *connector)?;
        Some((connector, connector.tickets.as_ref()?))
    }

    fn writer(&self, name: &ConnectorName) -> Option<&Connector> {
        self.connectors.iter().find(|c| c.name == *name)
    }

    /// The firing alerts at or above their connector's severity that reach
    /// a customer, by the state name of their target.
    fn targets<'a>(
        &'a self,
        firing: &'a [AlertState],
        impact: &Impact,
        windows: &Windows,
    ) -> BTreeMap<String, Target<'a>> {
        let mut targets: BTreeMap<String, Target<'a>> = BTreeMap::new();
        for alert in firing.iter().filter(|a| a.status == AlertStatus::Firing) {
            let Some((connector, settings)) = self.settings(&alert.connector) else {
                continue;
            };
            if Severity::of_label(alert.severity.as_deref()) < settings.min_severity {
                continue;
            }
            let Some(target) = alert.service.as_ref().or(alert.ci.as_ref()) else {
                continue;
            };
            let reached: Vec<&Customer> = self
                .customers
                .iter()
                .filter(|c| impact.reaches(alert, c, self.customers))
                .filter(|c| !under_maintenance(alert, &c.id, windows))
                .collect();
            if reached.is_empty() {
                continue;
            }
            targets
                .entry(state_name(&connector.name, target))
                .or_insert_with(|| Target {
                    connector,
                    settings,
                    alerts: Vec::new(),
                })
                .alerts
                .push((alert, reached));
        }
        targets
    }

    /// Queues the major incident and a case per customer of a new outage.
    fn open(
        &self,
        name: &str,
        target: &Target<'_>,
        impact: &Impact,
        now: DateTime<Utc>,
        run: &mut Run,
    ) -> Result<(), TicketError> {
        let writeback = &target.settings.writeback;
        let (Some(incident_profile), Some(_)) = (
            self.profile(writeback, TicketPurpose::MajorIncident),
            self.profile(writeback, TicketPurpose::ProactiveCase),
        ) else {
            tracing::warn!(connector = %target.connector.name, %writeback, "Cannot open tickets: the write-back connector is gone or cannot write them");
            return Ok(());
        };
        let Some(&(first, _)) = target.alerts.first() else {
            return Ok(());
        };
        let what = first
            .service
            .as_ref()
            .or(first.ci.as_ref())
            .cloned()
            .unwrap_or_default();
        let started = target
            .alerts
            .iter()
            .map(|(a, _)| a.starts_at.unwrap_or(a.first_seen))
            .min()
            .unwrap_or(now);
        let mut outage = Outage {
            connector: target.connector.name.clone(),
            writeback: writeback.clone(),
            target: what.clone(),
            started,
            incident: incident_key(&target.connector.name, &what, started),
            alerts: BTreeMap::new(),
            cases: BTreeMap::new(),
        };
        let customers = self.reached(target);
        let names: Vec<&str> = customers.iter().map(|c| c.name.as_str()).collect();
        let lines: Vec<String> = target.alerts.iter().map(|(a, _)| alert_line(a)).collect();
        let description = format!(
            "csmd opened this major incident for an outage seen by monitoring ({connector}).\n\n\
             On: {what}\nStarted: {started}\n\nAlerts:\n{alerts}\n\n\
             Customers reached ({count}): {names}\n\
             Their proactive cases carry correlation ids starting with {key}-.",
            connector = target.connector.name,
            started = utc(started),
            alerts = lines.join("\n"),
            count = names.len(),
            names = names.join(", "),
            key = outage.incident,
        );
        let fields = columns(
            incident_profile,
            &incident_profile.create,
            &[
                (
                    TicketField::Title,
                    Some(format!("Outage of {what}: {}", first.summary)),
                ),
                (TicketField::Description, Some(description)),
                (
                    TicketField::Ci,
                    first.ci.as_deref().map(|ci| reference(impact, ci)),
                ),
                (
                    TicketField::Service,
                    first.service.as_deref().map(|s| reference(impact, s)),
                ),
                (TicketField::Group, target.settings.assignment_group.clone()),
            ],
        );
        run.writes.push(TicketWrite::Create(ItsmWrite::new(
            writeback.clone(),
            &outage.incident,
            &incident_profile.table,
            fields,
            now,
        )));
        for (alert, _) in &target.alerts {
            outage
                .alerts
                .insert(occurrence(alert), alert.summary.clone());
        }
        for customer in customers {
            self.open_case(&mut outage, customer, target, impact, now, run);
        }
        tracing::info!(outage = %outage.incident, target = %what, cases = outage.cases.len(), "Major incident and proactive cases queued");
        run.states.push(StateChange::Put {
            name: name.to_string(),
            value: serde_json::to_vec(&outage)?,
        });
        Ok(())
    }

    /// Adds new alerts and customers to an open outage: a case for each
    /// new customer and one work note on the major incident.
    fn grow(
        &self,
        name: &str,
        outage: &Outage,
        target: &Target<'_>,
        impact: &Impact,
        now: DateTime<Utc>,
        run: &mut Run,
    ) -> Result<(), TicketError> {
        let mut grown = outage.clone();
        let mut lines = Vec::new();
        for (alert, _) in &target.alerts {
            if grown
                .alerts
                .insert(occurrence(alert), alert.summary.clone())
                .is_none()
            {
                lines.push(alert_line(alert));
            }
        }
        let mut joined = Vec::new();
        for customer in self.reached(target) {
            if !grown.cases.contains_key(&customer.id)
                && self.open_case(&mut grown, customer, target, impact, now, run)
            {
                joined.push(customer.name.as_str());
            }
        }
        if grown == *outage {
            return Ok(());
        }
        if let Some(profile) = self.profile(&outage.writeback, TicketPurpose::MajorIncident) {
            let mut text = String::new();
            if !lines.is_empty() {
                text.push_str(&format!(
                    "Alerts joined the outage:\n{}\n",
                    lines.join("\n")
                ));
            }
            if !joined.is_empty() {
                text.push_str(&format!(
                    "Now also reaching: {} (proactive cases opened).\n",
                    joined.join(", ")
                ));
            }
            if !text.is_empty() {
                run.writes.push(TicketWrite::Update {
                    connector: outage.writeback.clone(),
                    key: outage.incident.clone(),
                    fields: note(profile, text.trim_end().to_string(), false),
                });
            }
        }
        run.states.push(StateChange::Put {
            name: name.to_string(),
            value: serde_json::to_vec(&grown)?,
        });
        Ok(())
    }

    /// Queues the proactive case of one customer; false when the write-back
    /// connector cannot write cases any more.
    fn open_case(
        &self,
        outage: &mut Outage,
        customer: &Customer,
        target: &Target<'_>,
        impact: &Impact,
        now: DateTime<Utc>,
        run: &mut Run,
    ) -> bool {
        let Some(profile) = self.profile(&outage.writeback, TicketPurpose::ProactiveCase) else {
            return false;
        };
        let key = format!("{}-{}", outage.incident, customer.id);
        let lines: Vec<String> = target
            .alerts
            .iter()
            .filter(|(_, reached)| reached.iter().any(|c| c.id == customer.id))
            .map(|(a, _)| alert_line(a))
            .collect();
        let description = format!(
            "Monitoring shows a disruption of {what} reaching {name}, since {started}.\n\n\
             Alerts:\n{alerts}\n\n\
             Major incident: correlation id {incident}.\n\
             csmd e-mails the customer's primary contacts about the disruption when \
             their contract asks for it, and resolves this case when it is over.",
            what = outage.target,
            name = customer.name,
            started = utc(outage.started),
            alerts = lines.join("\n"),
            incident = outage.incident,
        );
        let account = impact
            .account_id(&customer.id)
            .map(str::to_string)
            .or_else(|| customer.itsm_account.clone());
        let service = target
            .alerts
            .iter()
            .find_map(|(a, _)| a.service.as_deref())
            .map(|s| reference(impact, s));
        let fields = columns(
            profile,
            &profile.create,
            &[
                (
                    TicketField::Title,
                    Some(format!("Proactive: disruption of {}", outage.target)),
                ),
                (TicketField::Description, Some(description)),
                (TicketField::Account, account),
                (TicketField::Service, service),
                (TicketField::Group, target.settings.assignment_group.clone()),
            ],
        );
        run.writes.push(TicketWrite::Create(ItsmWrite::new(
            outage.writeback.clone(),
            &key,
            &profile.table,
            fields,
            now,
        )));
        outage.cases.insert(customer.id.clone(), key);
        true
    }

    /// Resolves the major incident and every case of an outage whose
    /// alerts have all resolved.
    fn resolve(
        &self,
        store: &Store,
        name: &str,
        outage: &Outage,
        now: DateTime<Utc>,
        run: &mut Run,
    ) -> Result<(), TicketError> {
        let mut ended: Option<DateTime<Utc>> = None;
        for key in outage.alerts.keys() {
            let Some((connector, source_id)) = super::disruption::alert_of(key) else {
                continue;
            };
            if let Some(end) = store
                .alert(&connector, &source_id)?
                .and_then(|a| a.ends_at.or(Some(a.last_seen)))
            {
                ended = Some(ended.map_or(end, |e| e.max(end)));
            }
        }
        let ended = ended.unwrap_or(now).min(now).max(outage.started);
        let summary = format!(
            "Resolved: every alert of the outage of {} has cleared, at {}; it lasted {} (from {}).",
            outage.target,
            utc(ended),
            duration(outage.started, ended),
            utc(outage.started)
        );
        match self.profile(&outage.writeback, TicketPurpose::MajorIncident) {
            Some(profile) => run.writes.push(TicketWrite::Update {
                connector: outage.writeback.clone(),
                key: outage.incident.clone(),
                fields: note(profile, summary.clone(), true),
            }),
            None => {
                tracing::warn!(outage = %outage.incident, writeback = %outage.writeback, "Cannot resolve the major incident: the write-back connector is gone")
            }
        }
        if let Some(profile) = self.profile(&outage.writeback, TicketPurpose::ProactiveCase) {
            for key in outage.cases.values() {
                run.writes.push(TicketWrite::Update {
                    connector: outage.writeback.clone(),
                    key: key.clone(),
                    fields: note(profile, summary.clone(), true),
                });
            }
        }
        tracing::info!(outage = %outage.incident, cases = outage.cases.len(), "Outage over: tickets resolved");
        run.states.push(StateChange::Remove {
            name: name.to_string(),
        });
        Ok(())
    }

    fn profile(&self, writeback: &ConnectorName, purpose: TicketPurpose) -> Option<&TicketProfile> {
        self.writer(writeback)?.ticket_profile(purpose)
    }

    /// The customers any alert of the target reaches, each once, in
    /// configuration order.
    fn reached<'a>(&self, target: &Target<'a>) -> Vec<&'a Customer> {
        let mut seen = BTreeSet::new();
        target
            .alerts
            .iter()
            .flat_map(|(_, reached)| reached.iter().copied())
            .filter(|c| seen.insert(c.id.clone()))
            .collect()
    }
}

/// What a reference column gets: the ITSM's id when csmd read the CMDB,
/// else the name as the alert gave it.
fn reference(impact: &Impact, ci: &str) -> String {
    impact.ci_id(ci).unwrap_or(ci).to_string()
}

fn under_maintenance(alert: &AlertState, customer: &CustomerId, windows: &Windows) -> bool {
    windows.get(customer).into_iter().flatten().any(|(cis, _)| {
        alert.ci.as_ref().is_some_and(|c| cis.contains(c))
            || alert.service.as_ref().is_some_and(|s| cis.contains(s))
    })
}
