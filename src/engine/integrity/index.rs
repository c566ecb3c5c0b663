//! What the reconciliation rules compare, indexed by the thing it is about:
//! a CI or service, by lower-cased name, with the install-base items, the
//! subscriptions and the CMDB record naming it and whether monitoring
//! alerted on it; plus the billable changes and the changes charged.
//!
//! Built once by streaming every tree (records are decoded one at a time
//! and only what the rules need is kept), then kept up to date record by
//! record, so an incremental reconciliation touches only what changed.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::config::Customer;
use crate::model::alert::AlertState;
use crate::model::itsm::{ChangeState, ItsmRecord, Subscription};
use crate::model::{CustomerId, itsm};
use crate::store::{Store, StoreError};

/// One install-base item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: Box<str>,
    /// The ITSM account (sys_id), or the customer of a customer file's
    /// entry.
    pub owner: Owner,
    pub in_use: bool,
}

/// Whose something is, as the system holding it says.
#[derive(Debug, Clone, PartialEq)]
pub enum Owner {
    /// An account id of the ITSM or billing, as the record names it.
    Account(Box<str>),
    /// A customer file's own install base.
    Customer(CustomerId),
    Nobody,
}

/// One subscription, with what decides whether it bills now.
#[derive(Debug, Clone, PartialEq)]
pub struct Sub {
    pub id: Box<str>,
    pub owner: Owner,
    pub product: Option<Box<str>>,
    status_active: bool,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
}

impl Sub {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.status_active
            && self.start.is_none_or(|s| s <= now)
            && self.end.is_none_or(|e| e > now)
    }
}

/// The CMDB's record of a CI.
#[derive(Debug, Clone, PartialEq)]
pub struct CmdbCi {
    pub id: Box<str>,
    pub retired: bool,
    pub account: Option<Box<str>>,
}

/// Everything known about one CI or service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thing {
    /// The name as first seen (the key is lower-cased).
    pub name: Box<str>,
    pub items: Vec<Item>,
    pub subscriptions: Vec<Sub>,
    pub ci: Option<CmdbCi>,
    /// The monitoring connector that alerted on it, if one did.
    pub monitored: Option<Box<str>>,
}

impl Thing {
    fn is_empty(&self) -> bool {
        self.items.is_empty()
            && self.subscriptions.is_empty()
            && self.ci.is_none()
            && self.monitored.is_none()
    }
}

/// A billable change, closed or not.
#[derive(Debug, Clone, PartialEq)]
pub struct BillableChange {
    pub closed_at: Option<DateTime<Utc>>,
    /// Its main CI's name, to find the customer.
    pub ci: Option<Box<str>>,
}

/// Where a record went in the index, to take it out when it changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Placed {
    Item(Box<str>),
    Sub(Box<str>),
}

#[derive(Default)]
pub struct Index {
    things: HashMap<Box<str>, Thing>,
    /// Record id → the things it was placed under.
    placed: HashMap<Placed, Vec<Box<str>>>,
    /// CMDB sys_id → lower-cased name.
    ci_names: HashMap<Box<str>, Box<str>>,
    /// ITSM account sys_id → customer.
    itsm_accounts: HashMap<Box<str>, CustomerId>,
    /// Billing account id → customer.
    billing_accounts: HashMap<Box<str>, CustomerId>,
    pub changes: HashMap<Box<str>, BillableChange>,
    pub charged: HashSet<Box<str>>,
    /// Whether csmd has read an install base, subscriptions and a CMDB at
    /// all: a rule comparing with a system csmd does not read would flag
    /// everything.
    pub has_install_base: bool,
    pub has_billing: bool,
    pub has_cmdb: bool,
}

/// The index key of a name.
pub fn thing_key(name: &str) -> Box<str> {
    name.trim().to_lowercase().into_boxed_str()
}

impl Index {
    /// Reads every tree the rules compare. The customers' files give their
    /// own install base and map account numbers to customers.
    pub fn build(store: &Store, customers: &[Customer]) -> Result<Index, StoreError> {
        let mut index = Index::default();
        // CIs first: install-base items name them by sys_id.
        for record in store.itsm_scan("cis")? {
            if let ItsmRecord::Ci(ci) = record? {
                index.put_ci(ci);
            }
        }
        for record in store.itsm_scan("accounts")? {
            if let ItsmRecord::Account(account) = record? {
                index.put_account(&account, customers);
            }
        }
        for record in store.itsm_scan("billing_accounts")? {
            if let ItsmRecord::BillingAccount(account) = record? {
                index.put_billing_account(&account, customers);
            }
        }
        for customer in customers {
            if let Some(itsm) = &customer.itsm_account {
                index
                    .itsm_accounts
                    .insert(itsm.as_str().into(), customer.id.clone());
            }
            if let Some(billing) = &customer.billing_account {
                index
                    .billing_accounts
                    .insert(billing.as_str().into(), customer.id.clone());
            }
            for (n, entry) in customer.install_base.iter().enumerate() {
                let id: Box<str> = format!("{}#{n}", customer.id).into();
                let names = entry.ci.iter().chain(&entry.service);
                let item = Item {
                    id: id.clone(),
                    owner: Owner::Customer(customer.id.clone()),
                    in_use: true,
                };
                let keys: Vec<Box<str>> = names.map(|n| index.name_of(n)).collect();
                index.place(Placed::Item(id), keys, |thing, _| {
                    thing.items.push(item.clone())
                });
            }
        }
        for record in store.itsm_scan("install_base")? {
            if let ItsmRecord::InstallBaseItem(item) = record? {
                index.put_item(item);
            }
        }
        for record in store.itsm_scan("subscriptions")? {
            if let ItsmRecord::Subscription(sub) = record? {
                index.put_subscription(sub);
            }
        }
        for record in store.itsm_scan("changes")? {
            if let ItsmRecord::Change(change) = record? {
                index.put_change(&change);
            }
        }
        for record in store.itsm_scan("charges")? {
            if let ItsmRecord::Charge(charge) = record? {
                index.put_charge(&charge);
            }
        }
        for alert in store.alerts(None, None)? {
            index.put_alert(&alert);
        }
        Ok(index)
    }

    pub fn thing(&self, key: &str) -> Option<&Thing> {
        self.things.get(key)
    }

    pub fn things(&self) -> impl Iterator<Item = (&Box<str>, &Thing)> {
        self.things.iter()
    }

    /// The customer an account id belongs to, in the ITSM or in billing.
    pub fn customer_of<'a>(&'a self, owner: &'a Owner, billing: bool) -> Option<&'a CustomerId> {
        match owner {
            Owner::Customer(c) => Some(c),
            Owner::Account(a) if billing => self.billing_accounts.get(a),
            Owner::Account(a) => self.itsm_accounts.get(a),
            Owner::Nobody => None,
        }
    }

    /// A CI or service as the index names it: a CMDB sys_id becomes the
    /// CI's name.
    fn name_of(&self, ci: &str) -> Box<str> {
        self.ci_names
            .get(ci)
            .cloned()
            .unwrap_or_else(|| thing_key(ci))
    }

    /// Takes `record` out of wherever it was, then puts it under `keys`.
    fn place(&mut self, record: Placed, keys: Vec<Box<str>>, put: impl Fn(&mut Thing, &str)) {
        self.unplace(&record);
        for key in &keys {
            let thing = self.things.entry(key.clone()).or_default();
            if thing.name.is_empty() {
                thing.name = key.clone();
            }
            put(thing, key);
        }
        if !keys.is_empty() {
            self.placed.insert(record, keys);
        }
    }

    fn unplace(&mut self, record: &Placed) -> Vec<Box<str>> {
        let Some(keys) = self.placed.remove(record) else {
            return Vec::new();
        };
        for key in &keys {
            if let Some(thing) = self.things.get_mut(key) {
                match record {
                    Placed::Item(id) => thing.items.retain(|i| i.id != *id),
                    Placed::Sub(id) => thing.subscriptions.retain(|s| s.id != *id),
                }
                if thing.is_empty() {
                    self.things.remove(key);
                }
            }
        }
        keys
    }

    fn put_ci(&mut self, ci: itsm::Ci) {
        let key = thing_key(&ci.name);
        self.ci_names.insert(ci.id.as_str().into(), key.clone());
        self.has_cmdb = true;
        let thing = self.things.entry(key.clone()).or_default();
        if thing.name.is_empty() {
            thing.name = ci.name.as_str().into();
        }
        // ServiceNow's install_status 7 is "Retired".
        thing.ci = Some(CmdbCi {
            id: ci.id.into(),
            retired: ci.install_status == Some(7),
            account: ci.account.map(String::into_boxed_str),
        });
    }

    fn put_account(&mut self, account: &itsm::Account, customers: &[Customer]) {
        if let Some(number) = &account.number
            && let Some(customer) = customers
                .iter()
                .find(|c| c.itsm_account.as_deref() == Some(number.as_str()))
        {
            self.itsm_accounts
                .insert(account.id.as_str().into(), customer.id.clone());
        }
    }

    fn put_billing_account(&mut self, account: &itsm::BillingAccount, customers: &[Customer]) {
        if let Some(number) = &account.number
            && let Some(customer) = customers
                .iter()
                .find(|c| c.billing_account.as_deref() == Some(number.as_str()))
        {
            self.billing_accounts
                .insert(account.id.as_str().into(), customer.id.clone());
        }
    }

    fn put_item(&mut self, item: itsm::InstallBaseItem) {
        let in_use =
            item.uninstall_date.is_none() && item.state.as_deref().is_none_or(|s| s == "installed");
        let keys: Vec<Box<str>> = item
            .ci
            .iter()
            .chain(&item.service)
            .map(|n| self.name_of(n))
            .collect();
        let placed = Item {
            id: item.id.as_str().into(),
            owner: item
                .account
                .map_or(Owner::Nobody, |a| Owner::Account(a.into())),
            in_use,
        };
        self.has_install_base = true;
        self.place(Placed::Item(placed.id.clone()), keys, |thing, _| {
            thing.items.push(placed.clone())
        });
    }

    fn put_subscription(&mut self, sub: Subscription) {
        let keys: Vec<Box<str>> = sub
            .ci
            .iter()
            .chain(&sub.service)
            .map(|n| self.name_of(n))
            .collect();
        let status_active = Subscription {
            start: None,
            end: None,
            ..sub.clone()
        }
        .is_active(DateTime::<Utc>::MIN_UTC);
        let placed = Sub {
            id: sub.id.as_str().into(),
            owner: sub
                .account
                .map_or(Owner::Nobody, |a| Owner::Account(a.into())),
            product: sub.product.map(String::into_boxed_str),
            status_active,
            start: sub.start,
            end: sub.end,
        };
        self.has_billing = true;
        self.place(Placed::Sub(placed.id.clone()), keys, |thing, _| {
            thing.subscriptions.push(placed.clone())
        });
    }

    fn put_change(&mut self, change: &itsm::Change) {
        if !change.billable {
            self.changes.remove(change.number.as_str());
            return;
        }
        let closed_at = (change.state == ChangeState::Closed).then(|| {
            change
                .closed_at
                .or(change.work_end)
                .unwrap_or(change.updated_at)
        });
        let ci = change.ci.as_deref().map(|c| self.name_of(c));
        self.changes.insert(
            change.number.as_str().into(),
            BillableChange { closed_at, ci },
        );
    }

    fn put_charge(&mut self, charge: &itsm::Charge) {
        if let Some(change) = &charge.change {
            self.charged.insert(change.trim().into());
        }
    }

    fn put_alert(&mut self, alert: &AlertState) {
        let Some(ci) = &alert.ci else {
            return;
        };
        let key = thing_key(ci);
        let thing = self.things.entry(key).or_default();
        if thing.name.is_empty() {
            thing.name = ci.as_str().into();
        }
        thing.monitored = Some(alert.connector.as_str().into());
    }

    /// Brings a changed record into the index; returns the things and
    /// changes whose rules must be evaluated again.
    pub fn update(&mut self, record: Changed, touched: &mut Touched) {
        match record {
            Changed::Record(record) => self.update_record(record, touched),
            Changed::Alert(alert) => {
                if let Some(ci) = &alert.ci {
                    touched.things.insert(thing_key(ci));
                }
                self.put_alert(&alert);
            }
        }
    }

    fn update_record(&mut self, record: ItsmRecord, touched: &mut Touched) {
        match record {
            ItsmRecord::Ci(ci) => {
                let key = thing_key(&ci.name);
                // A renamed CI leaves its old name.
                if let Some(old) = self.ci_names.get(ci.id.as_str()).cloned()
                    && old != key
                    && let Some(thing) = self.things.get_mut(&old)
                {
                    thing.ci = None;
                    touched.things.insert(old);
                }
                touched.things.insert(key);
                self.put_ci(ci);
            }
            ItsmRecord::InstallBaseItem(item) => {
                touched
                    .things
                    .extend(self.unplace(&Placed::Item(item.id.as_str().into())));
                let keys: Vec<Box<str>> = item
                    .ci
                    .iter()
                    .chain(&item.service)
                    .map(|n| self.name_of(n))
                    .collect();
                touched.things.extend(keys);
                self.put_item(item);
            }
            ItsmRecord::Subscription(sub) => {
                touched
                    .things
                    .extend(self.unplace(&Placed::Sub(sub.id.as_str().into())));
                let keys: Vec<Box<str>> = sub
                    .ci
                    .iter()
                    .chain(&sub.service)
                    .map(|n| self.name_of(n))
                    .collect();
                touched.things.extend(keys);
                self.put_subscription(sub);
            }
            ItsmRecord::Change(change) => {
                touched.changes.insert(change.number.as_str().into());
                self.put_change(&change);
            }
            ItsmRecord::Charge(charge) => {
                if let Some(change) = &charge.change {
                    touched.changes.insert(change.trim().into());
                }
                self.put_charge(&charge);
            }
            // Accounts change who owns what: everything is looked at again
            // at the next full run; an account is rarely renumbered.
            ItsmRecord::Account(_) | ItsmRecord::BillingAccount(_) => touched.everything = true,
            ItsmRecord::Contact(_)
            | ItsmRecord::Incident(_)
            | ItsmRecord::ChangeCi(_)
            | ItsmRecord::Problem(_)
            | ItsmRecord::ProblemTask(_) => {}
        }
    }
}

/// One change the index is told about.
pub enum Changed {
    Record(ItsmRecord),
    Alert(AlertState),
}

/// What an incremental run must evaluate again.
#[derive(Debug, Default)]
pub struct Touched {
    pub things: HashSet<Box<str>>,
    pub changes: HashSet<Box<str>>,
    /// Something changed that only a full run can follow.
    pub everything: bool,
}

impl Touched {
    pub fn is_empty(&self) -> bool {
        self.things.is_empty() && self.changes.is_empty() && !self.everything
    }
}
