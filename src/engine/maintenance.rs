//! Maintenance notices: for every tracked change whose affected CIs reach a
//! customer through the install base, the customer's maintenance contacts
//! get an advance notice (at planned start minus their lead time), an
//! update when the window or the affected services change, a cancellation,
//! and a completion notice with the outcome.
//!
//! What each customer was told about each change is kept as state in the
//! outbox tree, written in the same batch as the messages it causes (one
//! batch and one flush per run), so a crash can neither lose a notice nor
//! send it twice.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::NoticeError;
use super::impact::Impact;
use crate::config::customer::ContactRole;
use crate::config::{Customer, MaintenanceSection};
use crate::model::itsm::{Change, ChangeState, ItsmRecord};
use crate::model::outbox::{CalendarPart, Draft, MessageKind, OutboxMessage};
use crate::notify::ics::{MaintenanceEvent, Method, maintenance_calendar};
use crate::notify::templates::{MaintenanceKind, MaintenanceNotice, Templates};
use crate::store::outbox::StateChange;
use crate::store::{Store, StoreError};

/// Names of the per change and customer states in the outbox tree.
const STATE_PREFIX: &str = "maintenance/";

/// Notices are not sent for windows that ended longer ago than this.
const STALE_AFTER: chrono::Duration = chrono::Duration::days(2);
/// A notice this much later than the lead time asks is marked short notice.
const LATE_TOLERANCE: chrono::Duration = chrono::Duration::minutes(5);

/// What one customer was last told about one change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Announced {
    sequence: u32,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    services: BTreeSet<String>,
    cis: BTreeSet<String>,
    stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Stage {
    Announced,
    Cancelled,
    Completed,
}

/// Everything the planner needs besides the store.
pub struct Planner<'a> {
    pub customers: &'a [Customer],
    pub settings: &'a MaintenanceSection,
    pub default_time_zone: Tz,
    pub templates: &'a Templates,
    /// The sender: the organizer of the calendar events and the domain of
    /// UIDs and Message-IDs.
    pub from: &'a lettre::message::Mailbox,
}

/// One customer's notice about one change: the state to record and the
/// messages it causes, queued together.
struct Plan {
    kind: MaintenanceKind,
    sequence: u32,
    state: StateChange,
    messages: Vec<OutboxMessage>,
}

/// What the ITSM says about who uses what, and what customers were told
/// so far: read once per run.
struct Inventory {
    impact: Impact,
    /// What every customer was told about every change, by state name.
    told: HashMap<String, Announced>,
}

impl Planner<'_> {
    /// Queues every notice due at `now`, in one batch; returns how many
    /// messages were queued (not those queued before).
    pub fn run(&self, store: &Store, now: DateTime<Utc>) -> Result<usize, NoticeError> {
        let inventory = self.inventory(store)?;
        let mut states = Vec::new();
        let mut messages = Vec::new();
        let mut planned = Vec::new();
        for record in store.itsm_records("changes")? {
            let ItsmRecord::Change(change) = record else {
                continue;
            };
            if change
                .change_type
                .as_ref()
                .is_some_and(|t| self.settings.not_customer_impacting_types.contains(t))
            {
                continue;
            }
            let cis = self.affected_cis(&change, &inventory);
            for customer in self.customers {
                let Some(plan) = self.plan(&change, &cis, customer, &inventory, now)? else {
                    continue;
                };
                planned.push((
                    change.number.clone(),
                    customer.id.clone(),
                    plan.kind,
                    plan.sequence,
                    plan.messages.len(),
                ));
                states.push(plan.state);
                messages.extend(plan.messages);
            }
        }
        if states.is_empty() {
            return Ok(0);
        }
        let queued = store.queue_messages(states, messages)?;
        for (change, customer, kind, sequence, recipients) in planned {
            tracing::info!(
                %change,
                %customer,
                kind = kind.as_str(),
                sequence,
                recipients,
                "Maintenance notice queued"
            );
        }
        Ok(queued.len())
    }

    fn inventory(&self, store: &Store) -> Result<Inventory, StoreError> {
        let impact = Impact::load(store, self.customers)?;
        let told = store
            .outbox_states(STATE_PREFIX)?
            .into_iter()
            .filter_map(|(name, bytes)| Some((name, serde_json::from_slice(&bytes).ok()?)))
            .collect();
        Ok(Inventory { impact, told })
    }

    /// The change's CIs (its main CI and task_ci rows) that may notify.
    fn affected_cis(&self, change: &Change, inventory: &Inventory) -> BTreeSet<String> {
        let mut cis = inventory.impact.change_cis(change);
        let silent = &self.settings.not_customer_impacting_cis;
        cis.retain(|ci| {
            let name = inventory.impact.ci_name(ci);
            !silent.contains(ci) && !name.is_some_and(|n| silent.iter().any(|s| s == n))
        });
        cis
    }

    /// What to tell `customer` about `change` now, if anything.
    fn plan(
        &self,
        change: &Change,
        cis: &BTreeSet<String>,
        customer: &Customer,
        inventory: &Inventory,
        now: DateTime<Utc>,
    ) -> Result<Option<Plan>, NoticeError> {
        let (Some(start), Some(end)) = (change.planned_start, change.planned_end) else {
            return Ok(None);
        };
        let state_name = format!("{STATE_PREFIX}{}/{}", change.id, customer.id);
        let told = inventory.told.get(&state_name);
        // Cheap checks first: most changes are closed history nobody was
        // told about, or were cancelled or completed already.
        match told {
            None if !change.state.is_open() => return Ok(None),
            Some(t) if t.stage != Stage::Announced => return Ok(None),
            _ => {}
        }
        let (hit_cis, services) = inventory.impact.hits(cis, &customer.id);
        let lead = chrono::Duration::from_std(customer.contract.maintenance_notice_lead_time.0)
            .unwrap_or(chrono::Duration::zero());

        let decision = match (told, change.state) {
            (Some(t), ChangeState::Canceled) => Some((
                MaintenanceKind::Cancellation,
                t.sequence + 1,
                Stage::Cancelled,
            )),
            (Some(t), ChangeState::Review | ChangeState::Closed) if change.close_code.is_some() => {
                Some((MaintenanceKind::Completion, t.sequence, Stage::Completed))
            }
            (Some(t), state)
                if state.is_open()
                    && !hit_cis.is_empty()
                    && (t.start != start || t.end != end || t.services != services) =>
            {
                Some((MaintenanceKind::Update, t.sequence + 1, Stage::Announced))
            }
            (None, _) if !hit_cis.is_empty() && now >= start - lead && end > now - STALE_AFTER => {
                Some((MaintenanceKind::Notice, 0, Stage::Announced))
            }
            _ => None,
        };
        let Some((kind, sequence, stage)) = decision else {
            return Ok(None);
        };
        let (hit_cis, services) = match (told, kind) {
            // A cancellation or completion names what was announced.
            (Some(t), MaintenanceKind::Cancellation | MaintenanceKind::Completion) => {
                (t.cis.clone(), t.services.clone())
            }
            _ => (hit_cis, services),
        };
        let notice = MaintenanceNotice {
            kind,
            short_notice: kind == MaintenanceKind::Notice && start - now < lead - LATE_TOLERANCE,
            customer_name: customer.name.clone(),
            recipient_name: None,
            change_number: change.number.clone(),
            summary: change.short_description.clone(),
            start,
            end,
            previous_window: told
                .as_ref()
                .filter(|t| kind == MaintenanceKind::Update && (t.start, t.end) != (start, end))
                .map(|t| (t.start, t.end)),
            time_zone: customer.time_zone.map_or(self.default_time_zone, |tz| tz.0),
            services: services.iter().cloned().collect(),
            cis: hit_cis.iter().cloned().collect(),
            close_code: change.close_code.clone(),
            sequence,
        };
        let state = Announced {
            sequence,
            start,
            end,
            services,
            cis: hit_cis,
            stage,
        };
        Ok(Some(Plan {
            kind,
            sequence,
            state: StateChange::Put {
                name: state_name,
                value: serde_json::to_vec(&state)?,
            },
            messages: self.messages(change, customer, &notice, now)?,
        }))
    }

    /// One message per maintenance contact (the primary contacts when the
    /// customer names none).
    fn messages(
        &self,
        change: &Change,
        customer: &Customer,
        notice: &MaintenanceNotice,
        now: DateTime<Utc>,
    ) -> Result<Vec<OutboxMessage>, NoticeError> {
        let mut recipients: Vec<_> = customer
            .contacts
            .iter()
            .filter(|c| c.roles.contains(&ContactRole::Maintenance))
            .collect();
        if recipients.is_empty() {
            recipients = customer
                .contacts
                .iter()
                .filter(|c| c.roles.contains(&ContactRole::Primary))
                .collect();
        }
        let domain = self.from.email.domain();
        let kind = match notice.kind {
            MaintenanceKind::Notice => MessageKind::MaintenanceNotice,
            MaintenanceKind::Update => MessageKind::MaintenanceUpdate,
            MaintenanceKind::Cancellation => MessageKind::MaintenanceCancellation,
            MaintenanceKind::Completion => MessageKind::MaintenanceCompletion,
        };
        let method = match notice.kind {
            MaintenanceKind::Notice | MaintenanceKind::Update => Some(Method::Request),
            MaintenanceKind::Cancellation => Some(Method::Cancel),
            MaintenanceKind::Completion => None,
        };
        // The calendar event is the same for every contact but its attendee.
        let uid = format!("{}.{}@{domain}", change.number, customer.id);
        let summary = format!(
            "Planned maintenance {}{}",
            change.number,
            change
                .short_description
                .as_deref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        );
        let organizer_name = self.from.name.clone().unwrap_or_default();
        let organizer_email = self.from.email.to_string();
        let mut out = Vec::new();
        for contact in recipients {
            // Checked when the customer file was loaded.
            let Ok(address) = contact.email.parse::<lettre::Address>() else {
                continue;
            };
            let notice = MaintenanceNotice {
                recipient_name: Some(contact.name.clone()),
                ..notice.clone()
            };
            let rendered = self.templates.maintenance(&notice)?;
            let calendar = method.map(|method| CalendarPart {
                method: method.as_str().to_string(),
                ics: maintenance_calendar(&MaintenanceEvent {
                    uid: &uid,
                    sequence: notice.sequence,
                    stamp: now,
                    start: notice.start,
                    end: notice.end,
                    summary: &summary,
                    description: &rendered.text,
                    organizer: Some((&organizer_name, &organizer_email)),
                    attendee: Some((&contact.name, &contact.email)),
                    method,
                }),
            });
            let key = format!(
                "maintenance/{}/{}/{}/{}/{}",
                change.number,
                customer.id,
                notice.kind.as_str(),
                notice.sequence,
                contact.email
            );
            out.push(
                Draft {
                    key,
                    kind,
                    customer: Some(customer.id.clone()),
                    to: lettre::message::Mailbox::new(Some(contact.name.clone()), address)
                        .to_string(),
                    subject: rendered.subject,
                    text: rendered.text,
                    html: rendered.html,
                    calendar,
                }
                .queue(domain, now),
            );
        }
        Ok(out)
    }
}
