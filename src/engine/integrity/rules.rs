//! The reconciliation rules: what each finds about one CI or service, one
//! billable change or one customer, with the evidence from each system.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::index::{Index, Owner, Thing};
use crate::config::Customer;
use crate::config::customer::ContactRole;
use crate::model::CustomerId;
use crate::model::integrity::{Finding, Rule};

/// The rules' view of now.
pub struct Checking<'a> {
    pub index: &'a Index,
    pub now: DateTime<Utc>,
    /// How long after its closing a billable change must be charged.
    pub charge_within: chrono::Duration,
}

fn list(values: impl IntoIterator<Item = String>) -> String {
    let values: BTreeSet<String> = values.into_iter().collect();
    values.into_iter().collect::<Vec<_>>().join(", ")
}

fn owner(owner: &Owner) -> String {
    match owner {
        Owner::Account(a) => format!("account {a}"),
        Owner::Customer(c) => format!("customer file {c}"),
        Owner::Nobody => "no account".to_string(),
    }
}

impl Checking<'_> {
    /// What the rules find about one CI or service, under its index `key`
    /// (the issues' subject).
    pub fn thing(&self, key: &str, thing: &Thing) -> Vec<Finding> {
        let index = self.index;
        let name = thing.name();
        let in_use: Vec<_> = thing.items.iter().filter(|i| i.in_use).collect();
        let active: Vec<_> = thing
            .subscriptions
            .iter()
            .filter(|s| s.is_active(self.now))
            .collect();
        let itsm_customers: BTreeSet<&CustomerId> = in_use
            .iter()
            .filter_map(|i| index.customer_of(&i.owner, false))
            .collect();
        let billing_customers: BTreeSet<&CustomerId> = active
            .iter()
            .filter_map(|s| index.customer_of(&s.owner, true))
            .collect();
        let customer = itsm_customers
            .first()
            .or(billing_customers.first())
            .map(|c| (*c).clone());
        let items_say = || {
            list(
                in_use
                    .iter()
                    .map(|i| format!("install-base item {} in use by {}", i.id, owner(&i.owner))),
            )
        };
        let subs_say = || {
            list(active.iter().map(|s| {
                format!(
                    "active subscription {}{} on {}",
                    s.id,
                    s.product
                        .as_deref()
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_default(),
                    owner(&s.owner)
                )
            }))
        };
        let retired_ci = thing.ci.as_ref().is_some_and(|c| c.retired);
        let mut found = Vec::new();

        if index.has_billing && !in_use.is_empty() && active.is_empty() {
            found.push(
                Finding::new(Rule::CiNotBilled, key)
                    .customer(customer.clone())
                    .evidence("itsm", items_say())
                    .evidence("billing", format!("no active subscription for {name}")),
            );
        }
        if index.has_install_base && !active.is_empty() {
            let all_uninstalled = !thing.items.is_empty() && in_use.is_empty();
            if retired_ci || all_uninstalled {
                let itsm = if retired_ci {
                    format!("CI {name} is retired in the CMDB")
                } else {
                    format!(
                        "every install-base item of {name} is uninstalled ({})",
                        list(thing.items.iter().map(|i| i.id.to_string()))
                    )
                };
                found.push(
                    Finding::new(Rule::BilledAfterDecommission, key)
                        .customer(customer.clone())
                        .evidence("itsm", itsm)
                        .evidence("billing", subs_say()),
                );
            } else if thing.items.is_empty() {
                found.push(
                    Finding::new(Rule::BilledNotInInstallBase, key)
                        .customer(customer.clone())
                        .evidence("itsm", format!("no install-base item names {name}"))
                        .evidence("billing", subs_say()),
                );
            }
        }
        if !itsm_customers.is_empty()
            && !billing_customers.is_empty()
            && itsm_customers != billing_customers
        {
            found.push(
                Finding::new(Rule::CustomerMismatch, key)
                    .customer(customer.clone())
                    .evidence(
                        "itsm",
                        format!(
                            "used by {}",
                            list(itsm_customers.iter().map(|c| c.to_string()))
                        ),
                    )
                    .evidence(
                        "billing",
                        format!(
                            "billed to {}",
                            list(billing_customers.iter().map(|c| c.to_string()))
                        ),
                    ),
            );
        }
        if let Some(connector) = &thing.monitored
            && index.has_cmdb
            && thing.ci.is_none()
            && thing.items.is_empty()
        {
            found.push(
                Finding::new(Rule::MonitoredUnknownCi, key)
                    .customer(customer)
                    .evidence("monitoring", format!("{connector} alerted on {name}"))
                    .evidence("itsm", format!("no CI named {name} in the CMDB")),
            );
        }
        found
    }

    /// Whether a billable change closed too long ago is still not charged.
    pub fn change(&self, number: &str) -> Option<Finding> {
        let change = self.index.changes.get(number)?;
        let closed = change.closed_at?;
        if closed + self.charge_within > self.now || self.index.charged.contains(number) {
            return None;
        }
        let customer = change
            .ci
            .and_then(|ci| self.index.thing_by_id(ci))
            .and_then(|t| {
                t.items
                    .iter()
                    .find_map(|i| self.index.customer_of(&i.owner, false))
            })
            .cloned();
        Some(
            Finding::new(Rule::BillableChangeNotBilled, number)
                .customer(customer)
                .evidence(
                    "itsm",
                    format!(
                        "billable change {number} closed {}",
                        closed.format("%Y-%m-%d %H:%M UTC")
                    ),
                )
                .evidence(
                    "billing",
                    format!(
                        "no charge references {number} {} days after its closing",
                        (self.now - closed).num_days()
                    ),
                ),
        )
    }
}

/// A customer file without a maintenance or a reports contact.
pub fn contacts(customer: &Customer) -> Vec<Finding> {
    [
        (ContactRole::Maintenance, "maintenance"),
        (ContactRole::Reports, "reports"),
    ]
    .into_iter()
    .filter(|(role, _)| !customer.contacts.iter().any(|c| c.roles.contains(role)))
    .map(|(_, role)| {
        Finding::new(Rule::ContactMissing, &format!("{}/{role}", customer.id))
            .customer(Some(customer.id.clone()))
            .evidence(
                "customer file",
                format!("{} has no contact with the role `{role}`", customer.name),
            )
    })
    .collect()
}
