//! Reads what reports are computed from, for many customers at once: one
//! pass over each tree (incidents, changes, SIP actions, data-integrity
//! issues, the install base, and alerts when a contract counts monitoring
//! outages), each record handed to the customers it belongs to
//! (`Impact::owners` for incidents, the changes' CIs for changes). Records
//! outside the months asked for are dropped as they are read.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use super::compute::{ChangeRow, CustomerData, IncidentRow, MonitoredOutage, active_in};
use crate::config::Customer;
use crate::config::customer::Severity;
use crate::engine::impact::Impact;
use crate::model::CustomerId;
use crate::model::itsm::ItsmRecord;
use crate::store::{Store, StoreError};

/// The time span records are read for.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// The data of each of `wanted` (ids of `customers`) over `window`.
pub fn collect(
    store: &Store,
    customers: &[Customer],
    wanted: &[&Customer],
    window: Window,
) -> Result<HashMap<CustomerId, CustomerData>, StoreError> {
    let impact = Impact::load(store, customers)?;
    let mut data: HashMap<CustomerId, CustomerData> = wanted
        .iter()
        .map(|c| (c.id.clone(), CustomerData::default()))
        .collect();

    // The services each customer uses: its file's, and the ITSM install
    // base's of its account.
    let mut by_account: HashMap<String, CustomerId> = HashMap::new();
    for customer in wanted {
        let entry = data.entry(customer.id.clone()).or_default();
        entry.services.extend(
            customer
                .install_base
                .iter()
                .filter_map(|e| e.service.as_deref())
                .map(|s| impact.ci_name(s).unwrap_or(s).to_string()),
        );
        if let Some(account) = impact.account_id(&customer.id) {
            by_account.insert(account.to_string(), customer.id.clone());
        }
    }
    if !by_account.is_empty() {
        for record in store.itsm_scan("install_base")? {
            let ItsmRecord::InstallBaseItem(item) = record? else {
                continue;
            };
            let retired = item.uninstall_date.is_some()
                || item.state.as_deref().is_some_and(|s| s != "installed");
            let (Some(account), Some(service), false) = (&item.account, &item.service, retired)
            else {
                continue;
            };
            if let Some(entry) = by_account.get(account).and_then(|c| data.get_mut(c)) {
                let name = impact.ci_name(service).unwrap_or(service);
                entry.services.insert(name.to_string());
            }
        }
    }

    for record in store.itsm_scan("incidents")? {
        let ItsmRecord::Incident(incident) = record? else {
            continue;
        };
        if !active_in(&incident, window.start, window.end) {
            continue;
        }
        let accounts = incident.account.iter().chain(&incident.company);
        let targets: BTreeSet<String> = incident
            .ci
            .iter()
            .chain(&incident.service)
            .cloned()
            .collect();
        let owners = impact.owners(accounts, &targets, customers);
        let mut owners = owners
            .into_iter()
            .filter(|o| data.contains_key(o))
            .peekable();
        if owners.peek().is_none() {
            continue;
        }
        let owners: Vec<CustomerId> = owners.collect();
        let last = owners.len() - 1;
        let mut incident = Some(incident);
        for (i, owner) in owners.into_iter().enumerate() {
            let Some(entry) = data.get_mut(&owner) else {
                continue;
            };
            // The last owner takes the record itself; the others a copy.
            let incident = if i == last {
                incident.take()
            } else {
                incident.clone()
            };
            let Some(incident) = incident else {
                continue;
            };
            let service = service_of(
                &impact,
                &owner,
                incident.service.as_deref(),
                incident.ci.as_deref(),
            );
            entry.incidents.push(IncidentRow { incident, service });
        }
    }

    for record in store.itsm_scan("changes")? {
        let ItsmRecord::Change(change) = record? else {
            continue;
        };
        let starts = change.work_start.or(change.planned_start);
        let ends = change.work_end.or(change.planned_end).or(starts);
        let overlaps =
            starts.is_some_and(|s| s < window.end) && ends.is_some_and(|e| e >= window.start);
        if !overlaps {
            continue;
        }
        let cis = impact.change_cis(&change);
        for customer in wanted {
            let (hit_cis, services) = impact.hits(&cis, &customer.id);
            if hit_cis.is_empty() {
                continue;
            }
            if let Some(entry) = data.get_mut(&customer.id) {
                entry.changes.push(ChangeRow {
                    change: change.clone(),
                    cis: hit_cis,
                    services,
                });
            }
        }
    }

    for action in store.sip_actions()? {
        if let Some(entry) = data.get_mut(&action.customer) {
            entry.sip.push(action);
        }
    }

    for issue in store.integrity_issues()? {
        if !issue.status.is_open() {
            continue;
        }
        if let Some(entry) = issue.customer.as_ref().and_then(|c| data.get_mut(c)) {
            entry.integrity.push(issue);
        }
    }

    let monitored: Vec<&Customer> = wanted
        .iter()
        .copied()
        .filter(|c| c.contract.availability_from_monitoring)
        .collect();
    if !monitored.is_empty() {
        for alert in store.alerts(None, None)? {
            if Severity::of_label(alert.severity.as_deref()) < Severity::Critical {
                continue;
            }
            let Some(start) = alert.starts_at else {
                continue;
            };
            if start >= window.end || alert.ends_at.is_some_and(|e| e < window.start) {
                continue;
            }
            for customer in &monitored {
                if !impact.reaches(&alert, customer, customers) {
                    continue;
                }
                let service = service_of(
                    &impact,
                    &customer.id,
                    alert.service.as_deref(),
                    alert.ci.as_deref(),
                );
                if let Some(entry) = data.get_mut(&customer.id) {
                    entry.monitored.push(MonitoredOutage {
                        service,
                        start,
                        end: alert.ends_at,
                    });
                }
            }
        }
    }
    Ok(data)
}

/// The service a record is on for `customer`: its own service (by name),
/// else the service the customer uses through its CI.
fn service_of(
    impact: &Impact,
    customer: &CustomerId,
    service: Option<&str>,
    ci: Option<&str>,
) -> Option<String> {
    if let Some(service) = service {
        return Some(impact.ci_name(service).unwrap_or(service).to_string());
    }
    let ci = ci?;
    let (_, services) = impact.hits(&BTreeSet::from([ci.to_string()]), customer);
    services.into_iter().next()
}
