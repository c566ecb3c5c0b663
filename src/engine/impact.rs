//! Impact: who uses what. The ITSM's CIs (for their names), the CIs each
//! change request touches (its main CI and its `task_ci` rows), and the CIs
//! and services each customer uses, from the customer files' `install_base`
//! and the ITSM's install base through the customer's account. Read once
//! from the store, then asked per change.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::config::Customer;
use crate::model::CustomerId;
use crate::model::alert::AlertState;
use crate::model::itsm::{Account, Change, ItsmRecord};
use crate::store::{Store, StoreError};

/// One thing a customer uses: a CI (sys_id or name), a service, or both.
type Usage = (Option<String>, Option<String>);

/// Who uses what, resolved to names.
pub struct Impact {
    /// CI sys_id → name.
    ci_names: HashMap<String, String>,
    /// Change sys_id → affected CI sys_ids (task_ci).
    change_cis: HashMap<String, BTreeSet<String>>,
    /// ITSM account sys_id → the configured customer of that account.
    accounts: HashMap<String, CustomerId>,
    /// Customer id → (CI id or name, service) pairs the customer uses; a
    /// customer file may name a service without a CI.
    usage: HashMap<String, Vec<Usage>>,
}

/// One customer a change reaches, and through what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AffectedCustomer {
    pub id: CustomerId,
    pub name: String,
    /// The customer's CIs among the change's, by name where known.
    pub cis: BTreeSet<String>,
    /// The services the customer uses through them.
    pub services: BTreeSet<String>,
}

impl Impact {
    /// Reads the CIs, task_ci rows, accounts and install base from the
    /// store, and the install base of each of `customers`.
    pub fn load(store: &Store, customers: &[Customer]) -> Result<Impact, StoreError> {
        let mut ci_names = HashMap::new();
        for record in store.itsm_records("cis")? {
            if let ItsmRecord::Ci(ci) = record {
                ci_names.insert(ci.id, ci.name);
            }
        }
        let mut change_cis: HashMap<String, BTreeSet<String>> = HashMap::new();
        for record in store.itsm_records("change_cis")? {
            if let ItsmRecord::ChangeCi(row) = record {
                change_cis.entry(row.change).or_default().insert(row.ci);
            }
        }
        // ITSM account sys_id → the customer whose file names its number.
        let mut accounts = HashMap::new();
        for record in store.itsm_records("accounts")? {
            if let ItsmRecord::Account(Account {
                id,
                number: Some(number),
                ..
            }) = record
                && let Some(customer) = customers
                    .iter()
                    .find(|c| c.itsm_account.as_deref() == Some(number.as_str()))
            {
                accounts.insert(id, customer.id.clone());
            }
        }
        let mut usage: HashMap<String, Vec<Usage>> = HashMap::new();
        for customer in customers {
            let entries = usage.entry(customer.id.to_string()).or_default();
            for entry in &customer.install_base {
                entries.push((entry.ci.clone(), entry.service.clone()));
            }
        }
        for record in store.itsm_records("install_base")? {
            let ItsmRecord::InstallBaseItem(item) = record else {
                continue;
            };
            let retired = item.uninstall_date.is_some()
                || item.state.as_deref().is_some_and(|s| s != "installed");
            let (Some(account), false) = (item.account, retired) else {
                continue;
            };
            if item.ci.is_none() && item.service.is_none() {
                continue;
            }
            let Some(customer) = accounts.get(&account) else {
                continue;
            };
            let service = item.service.map(|s| ci_names.get(&s).cloned().unwrap_or(s));
            usage
                .entry(customer.to_string())
                .or_default()
                .push((item.ci, service));
        }
        Ok(Impact {
            ci_names,
            change_cis,
            accounts,
            usage,
        })
    }

    /// The customers an ITSM record is about: the customer of the first of
    /// its `accounts` (sys_ids) that one is configured for, or, failing
    /// that, every customer using one of its CIs or services (`targets`).
    pub fn owners<'a>(
        &self,
        accounts: impl IntoIterator<Item = &'a String>,
        targets: &BTreeSet<String>,
        customers: &[Customer],
    ) -> Vec<CustomerId> {
        if let Some(customer) = accounts.into_iter().find_map(|a| self.accounts.get(a)) {
            return vec![customer.clone()];
        }
        customers
            .iter()
            .filter(|c| self.uses(targets, &c.id))
            .map(|c| c.id.clone())
            .collect()
    }

    /// A CI's name, when the ITSM's CMDB was read.
    pub fn ci_name(&self, id: &str) -> Option<&str> {
        self.ci_names.get(id).map(String::as_str)
    }

    /// The ITSM's id of a CI or service given by id or name, when the
    /// ITSM's CMDB was read: what a reference field of a ticket takes.
    pub fn ci_id<'a>(&'a self, ci: &'a str) -> Option<&'a str> {
        if self.ci_names.contains_key(ci) {
            return Some(ci);
        }
        self.ci_names
            .iter()
            .find(|(_, name)| *name == ci)
            .map(|(id, _)| id.as_str())
    }

    /// The ITSM's id of the customer's account, when the accounts were read.
    pub fn account_id(&self, customer: &CustomerId) -> Option<&str> {
        self.accounts
            .iter()
            .find(|(_, c)| *c == customer)
            .map(|(id, _)| id.as_str())
    }

    /// The CIs (sys_ids) a change touches: its task_ci rows and its main CI.
    pub fn change_cis(&self, change: &Change) -> BTreeSet<String> {
        let mut cis: BTreeSet<String> =
            self.change_cis.get(&change.id).cloned().unwrap_or_default();
        cis.extend(change.ci.clone());
        cis
    }

    /// The customer's CIs (by name where known) and services among `cis`;
    /// a customer's CI matches by sys_id or by name. The services are those
    /// the customer uses through the CIs hit.
    pub fn hits(
        &self,
        cis: &BTreeSet<String>,
        customer: &CustomerId,
    ) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut hit_cis = BTreeSet::new();
        let mut services = BTreeSet::new();
        for (used, service) in self.usage.get(customer.as_str()).into_iter().flatten() {
            let Some(used) = used else {
                continue;
            };
            if cis.iter().any(|ci| self.is(ci, used)) {
                hit_cis.insert(self.ci_names.get(used).cloned().unwrap_or(used.clone()));
                services.extend(service.clone());
            }
        }
        (hit_cis, services)
    }

    /// Whether the customer uses any of `targets`, as a CI or as a service
    /// (a multi-tenant service reaches every customer using it).
    pub fn uses(&self, targets: &BTreeSet<String>, customer: &CustomerId) -> bool {
        self.usage
            .get(customer.as_str())
            .into_iter()
            .flatten()
            .any(|(ci, service)| {
                targets.iter().any(|t| {
                    ci.as_ref().is_some_and(|ci| self.is(t, ci))
                        || service.as_ref().is_some_and(|s| self.is(t, s))
                })
            })
    }

    /// Whether an alert concerns `customer`: named by its `customer` label
    /// (an id or account of one of `customers`), or else on a CI or service
    /// the customer uses.
    pub fn reaches(&self, alert: &AlertState, customer: &Customer, customers: &[Customer]) -> bool {
        match &alert.customer {
            Some(named) => {
                crate::config::customer::find(customers, named).is_some_and(|c| c.id == customer.id)
            }
            None => {
                let targets: BTreeSet<String> =
                    alert.ci.iter().chain(&alert.service).cloned().collect();
                self.uses(&targets, &customer.id)
            }
        }
    }

    /// Whether `id` (a sys_id or a name) is `used` (a sys_id or a name).
    fn is(&self, id: &str, used: &str) -> bool {
        id == used || self.ci_names.get(id).is_some_and(|name| name == used)
    }

    /// The customers `change` reaches through any of its CIs, in the order
    /// of `customers`.
    pub fn affected_customers(
        &self,
        change: &Change,
        customers: &[Customer],
    ) -> Vec<AffectedCustomer> {
        let cis = self.change_cis(change);
        customers
            .iter()
            .filter_map(|customer| {
                let (cis, services) = self.hits(&cis, &customer.id);
                (!cis.is_empty()).then(|| AffectedCustomer {
                    id: customer.id.clone(),
                    name: customer.name.clone(),
                    cis,
                    services,
                })
            })
            .collect()
    }
}

/// Which customers alerts concern, for many alerts at once: what
/// [`Impact::reaches`] answers, customer by customer, from two indexes
/// built once, so a planner looking at every firing alert does not ask
/// every customer about every alert. It owns its indexes, so a planner can
/// keep it between runs.
pub struct Reach {
    /// A CI or service (sys_id or name) → the customers using it (by that
    /// name or, for a CI's sys_id, by the CI's name), as indices into the
    /// customers given.
    users: HashMap<String, Vec<usize>>,
    /// A customer's id or account → the customers with the id of the one
    /// [`crate::config::customer::find`] gives for it.
    named: HashMap<String, Vec<usize>>,
}

impl Impact {
    /// The indexes of [`Reach`] over `customers`.
    pub fn reach(&self, customers: &[Customer]) -> Reach {
        let mut by_id: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, customer) in customers.iter().enumerate() {
            by_id.entry(customer.id.as_str()).or_default().push(i);
        }
        let mut users: HashMap<String, Vec<usize>> = HashMap::new();
        for (customer, usage) in &self.usage {
            let Some(indices) = by_id.get(customer.as_str()) else {
                continue;
            };
            for (ci, service) in usage {
                for used in ci.iter().chain(service) {
                    add(users.entry(used.clone()).or_default(), indices);
                }
            }
        }
        // A target given by sys_id is used where its name is.
        let by_name: Vec<(&String, Vec<usize>)> = self
            .ci_names
            .iter()
            .filter_map(|(id, name)| Some((id, users.get(name)?.clone())))
            .collect();
        for (id, indices) in by_name {
            add(users.entry(id.clone()).or_default(), &indices);
        }
        // First customer in order wins, as with `find`.
        let mut named: HashMap<String, Vec<usize>> = HashMap::new();
        for customer in customers {
            let names = [
                Some(customer.id.as_str()),
                customer.itsm_account.as_deref(),
                customer.billing_account.as_deref(),
            ];
            for name in names.into_iter().flatten() {
                named.entry(name.to_string()).or_insert_with(|| {
                    by_id.get(customer.id.as_str()).cloned().unwrap_or_default()
                });
            }
        }
        Reach { users, named }
    }
}

/// Adds each of `indices` to `to` once.
fn add(to: &mut Vec<usize>, indices: &[usize]) {
    for &i in indices {
        if !to.contains(&i) {
            to.push(i);
        }
    }
}

impl Reach {
    /// The customers `alert` concerns, as indices into the customers given
    /// to [`Impact::reach`], in their order and each once: those for which
    /// [`Impact::reaches`] is true.
    pub fn customers(&self, alert: &AlertState) -> Vec<usize> {
        if let Some(named) = &alert.customer {
            return self.named.get(named.as_str()).cloned().unwrap_or_default();
        }
        let mut out = Vec::new();
        for target in alert.ci.iter().chain(&alert.service) {
            out.extend(self.users.get(target.as_str()).into_iter().flatten());
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::itsm::{Ci, InstallBaseItem};
    use crate::model::{AlertStatus, ConnectorName};

    fn customer(text: &str) -> Customer {
        toml::from_str(text).unwrap()
    }

    fn alert(ci: Option<&str>, service: Option<&str>, named: Option<&str>) -> AlertState {
        let at = "2026-11-22T10:00:00Z".parse().unwrap();
        AlertState {
            connector: "mon".parse::<ConnectorName>().unwrap(),
            source_id: "fp".into(),
            status: AlertStatus::Firing,
            summary: "down".into(),
            ci: ci.map(str::to_string),
            service: service.map(str::to_string),
            customer: named.map(str::to_string),
            severity: None,
            starts_at: None,
            ends_at: None,
            first_seen: at,
            last_seen: at,
            deliveries: 1,
        }
    }

    #[test]
    fn reach_finds_the_customers_that_reaches_says() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let at = "2026-11-01T00:00:00Z".parse().unwrap();
        store
            .apply_itsm(&[
                ItsmRecord::Ci(Ci {
                    id: "sys-gw1".into(),
                    name: "gw-1".into(),
                    class: None,
                    install_status: None,
                    operational_status: None,
                    account: None,
                    updated_at: at,
                }),
                ItsmRecord::Account(Account {
                    id: "sys-acc-b".into(),
                    number: Some("ACC-B".into()),
                    name: "B".into(),
                    updated_at: at,
                }),
                ItsmRecord::InstallBaseItem(InstallBaseItem {
                    id: "ib1".into(),
                    account: Some("sys-acc-b".into()),
                    ci: Some("sys-gw1".into()),
                    service: None,
                    state: Some("installed".into()),
                    uninstall_date: None,
                    updated_at: at,
                }),
            ])
            .unwrap();
        let customers = vec![
            customer(
                "id = \"a\"\nname = \"A\"\n[[install_base]]\nci = \"gw-1\"\nservice = \"vpn\"",
            ),
            customer("id = \"b\"\nname = \"B\"\nitsm_account = \"ACC-B\""),
            customer(
                "id = \"c\"\nname = \"C\"\nbilling_account = \"a\"\n[[install_base]]\nservice = \"vpn\"",
            ),
            customer("id = \"d\"\nname = \"D\"\n[[install_base]]\nservice = \"mail\""),
        ];
        let impact = Impact::load(&store, &customers).unwrap();
        let reach = impact.reach(&customers);
        let alerts = [
            alert(Some("gw-1"), None, None),
            alert(Some("sys-gw1"), None, None),
            alert(None, Some("vpn"), None),
            alert(Some("sys-gw1"), Some("mail"), None),
            alert(Some("other"), Some("other"), None),
            alert(None, None, None),
            alert(Some("gw-1"), None, Some("b")),
            alert(None, None, Some("ACC-B")),
            alert(None, None, Some("a")),
            alert(None, Some("vpn"), Some("nobody")),
        ];
        for alert in &alerts {
            let expected: Vec<usize> = (0..customers.len())
                .filter(|&i| impact.reaches(alert, &customers[i], &customers))
                .collect();
            assert_eq!(reach.customers(alert), expected, "{alert:?}");
        }
        assert_eq!(reach.customers(&alerts[1]), [0, 1]);
        assert_eq!(reach.customers(&alerts[3]), [0, 1, 3]);
    }
}
