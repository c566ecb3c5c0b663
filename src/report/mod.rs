//! The monthly service report per customer: SLA compliance (availability
//! per service, response and resolution per priority, service credits),
//! incidents, changes, SIP actions and open data-integrity issues, in the
//! customer's time zone; trending charts for Extended Service Delivery and
//! the incident list for Extended Service Support; every report carries the
//! month's incidents as CSV.
//!
//! The pipeline, one way: [`collect`] reads the store once for every
//! customer due → [`compute`] makes each month's figures → [`charts`] draws
//! the trend → [`render`] makes the templates' view and the CSV →
//! [`Reporter::messages`] makes one outbox message per recipient, queued
//! with the report's state in one batch. [`schedule`] decides when, from
//! `[schedules] monthly_report` in each customer's time zone.

pub mod charts;
pub mod collect;
pub mod compute;
pub mod period;
pub mod render;
pub mod schedule;

use std::collections::HashMap;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::config::Customer;
use crate::config::customer::{ContactRole, Subscription};
use crate::model::CustomerId;
use crate::model::integrity::IntegrityIssue;
use crate::model::outbox::{Attachment, Draft, MessageKind, OutboxMessage};
use crate::notify::templates::{Rendered, TemplateError, Templates};
use crate::store::outbox::StateChange;
use crate::store::{Store, StoreError};
use charts::{Chart, ChartError};
use compute::{CustomerData, MonthFigures};
use period::Month;
use render::ReportView;

/// Names of the per customer and month report states in the outbox tree.
const STATE_PREFIX: &str = "report/";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Chart(#[from] ChartError),
    #[error("cannot write the incidents CSV of {customer} for {month}: {source}")]
    Csv {
        customer: CustomerId,
        month: Month,
        source: csv::Error,
    },
    #[error("cannot encode the report state of {customer} for {month}: {source}")]
    State {
        customer: CustomerId,
        month: Month,
        source: serde_json::Error,
    },
    #[error("no customer {0}")]
    UnknownCustomer(String),
    #[error("{month} has not ended yet in {customer}'s time zone; a report covers a whole month")]
    MonthNotOver { customer: CustomerId, month: Month },
    #[error(
        "the {month} report of {customer} was already queued at {at} (revision {revision}); \
         use --force to send it again"
    )]
    AlreadySent {
        customer: CustomerId,
        month: Month,
        at: DateTime<Utc>,
        revision: u32,
    },
    #[error("customer {0} has no contact with the `reports` role")]
    NoRecipients(CustomerId),
}

/// One open data-integrity issue of the customer, as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntegrityLine {
    /// What disagrees, e.g. `Not billed`.
    pub kind: String,
    /// The CI, service or change it is about.
    pub subject: String,
    /// What the rule found, in words.
    pub detail: Option<String>,
    /// The day csmd raised it, in the customer's time zone (`YYYY-MM-DD`).
    pub since: Option<String>,
}

/// The customer's open data-integrity issues, oldest first.
fn integrity_lines(issues: &[IntegrityIssue], tz: Tz) -> Vec<IntegrityLine> {
    let since = |issue: &IntegrityIssue| issue.opened_at.unwrap_or(issue.first_seen);
    let mut issues: Vec<&IntegrityIssue> = issues.iter().collect();
    issues.sort_by(|a, b| since(a).cmp(&since(b)).then_with(|| a.key.cmp(&b.key)));
    issues
        .into_iter()
        .map(|issue| IntegrityLine {
            kind: issue.rule.title().to_string(),
            subject: issue.subject.clone(),
            detail: Some(issue.rule.describe().to_string()),
            since: Some(
                since(issue)
                    .with_timezone(&tz)
                    .format("%Y-%m-%d")
                    .to_string(),
            ),
        })
        .collect()
}

/// What was queued for one customer and month: the report's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// 0 for the scheduled (or first) one; each `--force` adds one.
    pub revision: u32,
    pub queued_at: DateTime<Utc>,
    pub recipients: usize,
}

fn state_name(customer: &CustomerId, month: Month) -> String {
    format!("{STATE_PREFIX}{customer}/{month}")
}

/// A report made for one customer and month: its view (no recipient yet),
/// charts and CSV.
pub struct Report {
    pub customer: CustomerId,
    pub month: Month,
    pub view: ReportView,
    /// Inline images and the CSV, as the message carries them.
    pub attachments: Vec<Attachment>,
}

/// A preview: the HTML with its charts as `data:` URIs, the text and the
/// CSV. Nothing is queued.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub subject: String,
    pub text: String,
    pub html: String,
    pub csv_filename: String,
    pub csv: String,
    pub charts: Vec<PreviewChart>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PreviewChart {
    pub filename: String,
    /// The PNG, base64.
    pub png: String,
}

/// Makes reports: everything but the store, shared by the schedule, the
/// admin API and the benchmark.
pub struct Reporter<'a> {
    pub customers: &'a [Customer],
    pub default_time_zone: Tz,
    pub templates: &'a Templates,
    /// The sender: the domain of Message-IDs and Content-IDs.
    pub from: &'a lettre::message::Mailbox,
}

impl Reporter<'_> {
    pub fn of<'a>(
        config: &'a crate::config::Config,
        templates: &'a Templates,
        from: &'a lettre::message::Mailbox,
    ) -> Reporter<'a> {
        Reporter {
            customers: &config.customers,
            default_time_zone: config.daemon.time_zone.0,
            templates,
            from,
        }
    }

    pub fn time_zone(&self, customer: &Customer) -> Tz {
        customer.time_zone.map_or(self.default_time_zone, |t| t.0)
    }

    pub fn customer(&self, id: &str) -> Result<&Customer, ReportError> {
        self.customers
            .iter()
            .find(|c| c.id.as_str() == id)
            .ok_or_else(|| ReportError::UnknownCustomer(id.to_string()))
    }

    /// How many months before the report's month the customer's report
    /// shows.
    fn history(customer: &Customer) -> u32 {
        if customer
            .subscriptions
            .contains(&Subscription::ExtendedServiceDelivery)
        {
            render::TREND_MONTHS
        } else {
            0
        }
    }

    /// The records of every customer in `wanted`, over the months their
    /// reports need (trending months and the next month's maintenance
    /// included).
    pub fn gather(
        &self,
        store: &Store,
        wanted: &[(&Customer, Month)],
    ) -> Result<HashMap<CustomerId, CustomerData>, ReportError> {
        let mut window: Option<collect::Window> = None;
        for (customer, month) in wanted {
            let tz = self.time_zone(customer);
            let start = month.minus(Self::history(customer)).start(tz);
            let end = month.next().end(tz);
            window = Some(match window {
                None => collect::Window { start, end },
                Some(w) => collect::Window {
                    start: w.start.min(start),
                    end: w.end.max(end),
                },
            });
        }
        let Some(window) = window else {
            return Ok(HashMap::new());
        };
        let customers: Vec<&Customer> = wanted.iter().map(|(c, _)| *c).collect();
        Ok(collect::collect(store, self.customers, &customers, window)?)
    }

    /// The report of `customer` for `month` from its `data`. Charts are
    /// referenced by Content-ID (`inline`) or as `data:` URIs (a preview).
    pub fn report(
        &self,
        customer: &Customer,
        month: Month,
        data: &CustomerData,
        now: DateTime<Utc>,
        inline: bool,
    ) -> Result<Report, ReportError> {
        let tz = self.time_zone(customer);
        let contract = &customer.contract;
        let history = Self::history(customer);
        let months: Vec<MonthFigures> = (0..=history)
            .rev()
            .map(|back| compute::month_figures(data, contract, month.minus(back), tz, now))
            .collect();
        let Some(figures) = months.last() else {
            return Err(ReportError::UnknownCustomer(customer.id.to_string()));
        };
        let changes = compute::change_figures(data, month, tz);
        let sip = compute::sip_figures(data, month, tz);
        let integrity = integrity_lines(&data.integrity, tz);
        let domain = self.from.email.domain();
        let mut attachments = Vec::new();
        let charts: Vec<Chart> = if history > 0 {
            charts::draw(&render::trend(&months, contract.availability_target))?
        } else {
            Vec::new()
        };
        let mut sources = Vec::new();
        for chart in &charts {
            let content_id = format!("{}.{}.{month}@{domain}", chart.name, customer.id);
            let src = if inline {
                format!("cid:{content_id}")
            } else {
                format!(
                    "data:image/png;base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(&chart.png)
                )
            };
            sources.push((chart, src));
            attachments.push(Attachment {
                filename: format!("{}-{month}.png", chart.name),
                content_type: "image/png".into(),
                content_id: Some(content_id),
                data: chart.png.clone(),
            });
        }
        let csv = render::incidents_csv(data, customer, month, tz).map_err(|source| {
            ReportError::Csv {
                customer: customer.id.clone(),
                month,
                source,
            }
        })?;
        let view = render::view(render::Parts {
            customer,
            tz,
            month,
            figures,
            changes: &changes,
            sip: &sip,
            integrity,
            trending: (history > 0).then_some((months.as_slice(), sources)),
            data,
        });
        attachments.push(Attachment {
            filename: view.csv_filename.clone(),
            content_type: "text/csv; charset=utf-8".into(),
            content_id: None,
            data: csv,
        });
        Ok(Report {
            customer: customer.id.clone(),
            month,
            view,
            attachments,
        })
    }

    /// The report rendered for one reader.
    pub fn render(
        &self,
        report: &Report,
        recipient: Option<&str>,
    ) -> Result<Rendered, ReportError> {
        let view = ReportView {
            recipient_name: recipient.map(str::to_string),
            ..report.view.clone()
        };
        Ok(self.templates.report(&view)?)
    }

    /// Who receives the customer's report: its `reports` contacts, and its
    /// `accounting` contacts when the contract says so; each address once.
    pub fn recipients<'c>(
        &self,
        customer: &'c Customer,
    ) -> Vec<&'c crate::config::customer::Contact> {
        let mut out: Vec<&crate::config::customer::Contact> = Vec::new();
        let roles: &[ContactRole] = if customer.contract.report_to_accounting {
            &[ContactRole::Reports, ContactRole::Accounting]
        } else {
            &[ContactRole::Reports]
        };
        for role in roles {
            for contact in customer.contacts.iter().filter(|c| c.roles.contains(role)) {
                if !out
                    .iter()
                    .any(|o| o.email.eq_ignore_ascii_case(&contact.email))
                {
                    out.push(contact);
                }
            }
        }
        out
    }

    /// One message per recipient, and the state to record with them.
    pub fn messages(
        &self,
        customer: &Customer,
        report: &Report,
        revision: u32,
        now: DateTime<Utc>,
    ) -> Result<(StateChange, Vec<OutboxMessage>), ReportError> {
        let domain = self.from.email.domain();
        let mut messages = Vec::new();
        for contact in self.recipients(customer) {
            // Checked when the customer file was loaded.
            let Ok(address) = contact.email.parse::<lettre::Address>() else {
                continue;
            };
            let rendered = self.render(report, Some(&contact.name))?;
            let key = if revision == 0 {
                format!("report/{}/{}/{}", customer.id, report.month, contact.email)
            } else {
                format!(
                    "report/{}/{}/r{revision}/{}",
                    customer.id, report.month, contact.email
                )
            };
            messages.push(
                Draft {
                    key,
                    kind: MessageKind::MonthlyReport,
                    customer: Some(customer.id.clone()),
                    to: lettre::message::Mailbox::new(Some(contact.name.clone()), address)
                        .to_string(),
                    subject: rendered.subject,
                    text: rendered.text,
                    html: rendered.html,
                    calendar: None,
                }
                .queue(domain, now)
                .with_attachments(report.attachments.clone()),
            );
        }
        let sent = Sent {
            revision,
            queued_at: now,
            recipients: messages.len(),
        };
        let value = serde_json::to_vec(&sent).map_err(|source| ReportError::State {
            customer: customer.id.clone(),
            month: report.month,
            source,
        })?;
        Ok((
            StateChange::Put {
                name: state_name(&customer.id, report.month),
                value,
            },
            messages,
        ))
    }

    /// What was queued for the customer's month, if anything.
    pub fn sent(
        &self,
        store: &Store,
        customer: &CustomerId,
        month: Month,
    ) -> Result<Option<Sent>, StoreError> {
        let name = state_name(customer, month);
        Ok(store
            .outbox_states(&name)?
            .into_iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, bytes)| serde_json::from_slice(&bytes).ok()))
    }

    /// The report of one customer's month as a preview; nothing is queued.
    pub fn preview(
        &self,
        store: &Store,
        customer: &str,
        month: Month,
        now: DateTime<Utc>,
    ) -> Result<Preview, ReportError> {
        let customer = self.customer(customer)?;
        let mut data = self.gather(store, &[(customer, month)])?;
        let data = data.remove(&customer.id).unwrap_or_default();
        let report = self.report(customer, month, &data, now, false)?;
        let rendered = self.render(&report, None)?;
        let b64 = &base64::engine::general_purpose::STANDARD;
        let csv = report
            .attachments
            .iter()
            .find(|a| !a.is_inline())
            .map(|a| String::from_utf8_lossy(&a.data).into_owned())
            .unwrap_or_default();
        Ok(Preview {
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            csv_filename: report.view.csv_filename.clone(),
            csv,
            charts: report
                .attachments
                .iter()
                .filter(|a| a.is_inline())
                .map(|a| PreviewChart {
                    filename: a.filename.clone(),
                    png: b64.encode(&a.data),
                })
                .collect(),
        })
    }

    /// Queues one customer's report for `month` now (`csmd report send`):
    /// refused when it was queued before, unless `force`, which sends a
    /// new revision. Returns the messages queued.
    pub fn send(
        &self,
        store: &Store,
        customer: &str,
        month: Month,
        force: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<OutboxMessage>, ReportError> {
        let customer = self.customer(customer)?;
        let tz = self.time_zone(customer);
        if month.end(tz) > now {
            return Err(ReportError::MonthNotOver {
                customer: customer.id.clone(),
                month,
            });
        }
        if self.recipients(customer).is_empty() {
            return Err(ReportError::NoRecipients(customer.id.clone()));
        }
        let revision = match self.sent(store, &customer.id, month)? {
            Some(sent) if !force => {
                return Err(ReportError::AlreadySent {
                    customer: customer.id.clone(),
                    month,
                    at: sent.queued_at,
                    revision: sent.revision,
                });
            }
            Some(sent) => sent.revision + 1,
            None => 0,
        };
        let mut data = self.gather(store, &[(customer, month)])?;
        let data = data.remove(&customer.id).unwrap_or_default();
        let report = self.report(customer, month, &data, now, true)?;
        let (state, messages) = self.messages(customer, &report, revision, now)?;
        let queued = store.queue_messages(vec![state], messages)?;
        tracing::info!(
            customer = %customer.id,
            %month,
            revision,
            recipients = queued.len(),
            "Monthly report queued on request"
        );
        Ok(queued)
    }
}
