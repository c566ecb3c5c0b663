//! What the reconciliation rules compare, indexed by the thing it is about:
//! a CI or service, by lower-cased name, with the install-base items, the
//! subscriptions and the CMDB record naming it and whether monitoring
//! alerted on it; plus the billable changes and the changes charged.
//!
//! Built once by streaming every tree ([`build`]), then kept up to date
//! record by record, so an incremental reconciliation touches only what
//! changed; saved beside the store ([`snapshot`]) so a restart need not
//! build it again.
//!
//! It is meant to hold a million CIs in a few hundred megabytes: each
//! name is kept once and things are numbered ([`ThingId`]); record ids
//! are shared between a thing and the map that finds where a record was
//! placed; account ids, products and connectors are interned. A thing
//! nothing names any more keeps its number (and its name) until the next
//! rebuild, but is empty, and empty things find nothing.

pub mod build;
pub mod snapshot;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::lite;
use crate::model::CustomerId;
use crate::model::alert::AlertState;
use crate::model::itsm::{self, ChangeState, ItsmRecord};

/// A CI or service's number in the index.
pub type ThingId = u32;

/// One install-base item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: Arc<str>,
    /// The ITSM account (sys_id), or the customer of a customer file's
    /// entry.
    pub owner: Owner,
    pub in_use: bool,
}

/// Whose something is, as the system holding it says.
#[derive(Debug, Clone, PartialEq)]
pub enum Owner {
    /// An account id of the ITSM or billing, as the record names it.
    Account(Arc<str>),
    /// A customer file's own install base.
    Customer(Arc<CustomerId>),
    Nobody,
}

/// One subscription, with what decides whether it bills now.
#[derive(Debug, Clone, PartialEq)]
pub struct Sub {
    pub id: Arc<str>,
    pub owner: Owner,
    pub product: Option<Arc<str>>,
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

/// The CMDB's record of a CI: what the rules read of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CmdbCi {
    pub retired: bool,
}

/// Everything known about one CI or service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thing {
    /// The name as first seen (the key is lower-cased); `None` while
    /// nothing names it.
    name: Option<Arc<str>>,
    pub items: Vec<Item>,
    pub subscriptions: Vec<Sub>,
    pub ci: Option<CmdbCi>,
    /// The monitoring connector that alerted on it, if one did.
    pub monitored: Option<Arc<str>>,
}

impl Thing {
    /// The name as first seen.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

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
    /// Its main CI, to find the customer.
    pub ci: Option<ThingId>,
}

/// The things an item or a subscription was placed under: the CI and the
/// service it names (possibly the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    One(ThingId),
    Two(ThingId, ThingId),
}

impl Placement {
    fn of(ids: impl IntoIterator<Item = ThingId>) -> Option<Placement> {
        let mut ids = ids.into_iter();
        let first = ids.next()?;
        Some(match ids.next() {
            Some(second) => Placement::Two(first, second),
            None => Placement::One(first),
        })
    }

    fn ids(self) -> impl Iterator<Item = ThingId> {
        let (first, second) = match self {
            Placement::One(a) => (a, None),
            Placement::Two(a, b) => (a, Some(b)),
        };
        std::iter::once(first).chain(second)
    }
}

/// Which kind of record was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Item,
    Sub,
}

/// The index's hasher: its maps hold a million names and ids each, and
/// SipHash was a tenth of the time of building them. foldhash is fast and
/// still seeded per process; the keys come from the systems csmd reads.
type Fast = foldhash::fast::RandomState;

#[derive(Default)]
pub struct Index {
    things: Vec<Thing>,
    /// Each thing's key (its lower-cased name), by number.
    keys: Vec<Arc<str>>,
    by_key: HashMap<Arc<str>, ThingId, Fast>,
    /// Install-base item id → the things it was placed under.
    placed_items: HashMap<Arc<str>, Placement, Fast>,
    /// Subscription id → the things it was placed under.
    placed_subs: HashMap<Arc<str>, Placement, Fast>,
    /// CMDB sys_id → the CI.
    ci_names: HashMap<Box<str>, ThingId, Fast>,
    /// Account ids, products and connectors, each kept once.
    interned: HashSet<Arc<str>, Fast>,
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
    /// An update left the index other than a rebuild would make it.
    stale: bool,
}

/// The index key of a name.
pub fn thing_key(name: &str) -> Box<str> {
    name.trim().to_lowercase().into_boxed_str()
}

/// Pushes onto one of a thing's lists, which mostly hold one element: a
/// first push would make room for four (a million times over).
fn push<T>(list: &mut Vec<T>, value: T) {
    if list.capacity() == 0 {
        list.reserve_exact(1);
    }
    list.push(value);
}

/// `value`, kept once in `set`.
fn intern(set: &mut HashSet<Arc<str>, Fast>, value: &str) -> Arc<str> {
    if let Some(known) = set.get(value) {
        return known.clone();
    }
    let value: Arc<str> = value.into();
    set.insert(value.clone());
    value
}

/// Whether `name` is its own key: the common case, which needs no copy.
fn is_key(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
        && name.trim().len() == name.len()
}

impl Index {
    /// Whether an update left the index other than building it from the
    /// store again would: a CI renamed, or a CI arriving after records
    /// that named it by sys_id (they stay under the sys_id until they
    /// change), or a second monitoring connector alerting on a thing (a
    /// rebuild keeps the last in store order). Incremental runs live with
    /// it; the scheduled full run rebuilds.
    pub fn needs_rebuild(&self) -> bool {
        self.stale
    }

    pub fn thing(&self, key: &str) -> Option<&Thing> {
        self.by_key
            .get(key)
            .and_then(|id| self.things.get(*id as usize))
    }

    /// Whether `connector` is already known to alert on the CI `ci`: an
    /// alert there changes nothing the rules read.
    pub fn monitors(&self, connector: &str, ci: &str) -> bool {
        let key = thing_key(ci);
        self.thing(&key)
            .and_then(|t| t.monitored.as_deref())
            .is_some_and(|known| known == connector)
    }

    pub fn thing_by_id(&self, id: ThingId) -> Option<&Thing> {
        self.things.get(id as usize)
    }

    /// Every CI or service something names, with its key.
    pub fn things(&self) -> impl Iterator<Item = (&str, &Thing)> {
        self.keys
            .iter()
            .zip(&self.things)
            .filter(|(_, thing)| !thing.is_empty())
            .map(|(key, thing)| (&**key, thing))
    }

    /// The customer an account id belongs to, in the ITSM or in billing.
    pub fn customer_of<'a>(&'a self, owner: &'a Owner, billing: bool) -> Option<&'a CustomerId> {
        match owner {
            Owner::Customer(c) => Some(&**c),
            Owner::Account(a) if billing => self.billing_accounts.get(&**a),
            Owner::Account(a) => self.itsm_accounts.get(&**a),
            Owner::Nobody => None,
        }
    }

    fn intern(&mut self, value: &str) -> Arc<str> {
        intern(&mut self.interned, value)
    }

    fn owner(&mut self, account: Option<&str>) -> Owner {
        account.map_or(Owner::Nobody, |a| Owner::Account(self.intern(a)))
    }

    /// The thing a name names (numbered now if it is new).
    fn key_id(&mut self, name: &str) -> ThingId {
        let owned;
        let key = if is_key(name) {
            name
        } else {
            owned = thing_key(name);
            &owned
        };
        if let Some(id) = self.by_key.get(key) {
            return *id;
        }
        let id = ThingId::try_from(self.things.len()).unwrap_or(ThingId::MAX);
        let key: Arc<str> = key.into();
        self.things.push(Thing::default());
        self.keys.push(key.clone());
        self.by_key.insert(key, id);
        id
    }

    /// A CI or service as the index names it: a CMDB sys_id is the CI's
    /// name.
    fn name_of(&mut self, ci: &str) -> ThingId {
        match self.ci_names.get(ci) {
            Some(id) => *id,
            None => self.key_id(ci),
        }
    }

    /// The things a record naming `ci` and `service` goes under.
    fn targets(&mut self, ci: Option<&str>, service: Option<&str>) -> Option<Placement> {
        let ci = ci.map(|c| self.name_of(c));
        let service = service.map(|s| self.name_of(s));
        Placement::of(ci.into_iter().chain(service))
    }

    fn thing_mut(&mut self, id: ThingId) -> Option<&mut Thing> {
        self.things.get_mut(id as usize)
    }

    /// A thing something is put under, named by its key if it had no name.
    fn named(&mut self, id: ThingId) -> Option<&mut Thing> {
        let key = self.keys.get(id as usize)?.clone();
        let thing = self.things.get_mut(id as usize)?;
        thing.name.get_or_insert(key);
        Some(thing)
    }

    /// Takes `record` out of wherever it was; returns the things it was
    /// under.
    fn unplace(&mut self, kind: Kind, id: &str) -> Option<Placement> {
        let placed = match kind {
            Kind::Item => self.placed_items.remove(id),
            Kind::Sub => self.placed_subs.remove(id),
        }?;
        for thing in placed.ids() {
            if let Some(thing) = self.thing_mut(thing) {
                match kind {
                    Kind::Item => thing.items.retain(|i| &*i.id != id),
                    Kind::Sub => thing.subscriptions.retain(|s| &*s.id != id),
                }
                if thing.is_empty() {
                    thing.name = None;
                }
            }
        }
        Some(placed)
    }

    /// Puts an item under the things it names, wherever it was before.
    fn place_item(&mut self, item: Item, targets: Option<Placement>) {
        self.unplace(Kind::Item, &item.id);
        let Some(targets) = targets else {
            return;
        };
        for thing in targets.ids() {
            if let Some(thing) = self.named(thing) {
                push(&mut thing.items, item.clone());
            }
        }
        self.placed_items.insert(item.id, targets);
    }

    fn place_sub(&mut self, sub: Sub, targets: Option<Placement>) {
        self.unplace(Kind::Sub, &sub.id);
        let Some(targets) = targets else {
            return;
        };
        for thing in targets.ids() {
            if let Some(thing) = self.named(thing) {
                push(&mut thing.subscriptions, sub.clone());
            }
        }
        self.placed_subs.insert(sub.id, targets);
    }

    fn put_ci(&mut self, ci: &lite::Ci<'_>) -> ThingId {
        let id = self.key_id(&ci.name);
        self.ci_names.insert((*ci.id).into(), id);
        self.has_cmdb = true;
        let key = self.keys.get(id as usize).cloned();
        if let Some(thing) = self.thing_mut(id) {
            if thing.name.is_none() {
                thing.name = Some(match key {
                    Some(key) if *key == *ci.name => key,
                    _ => (*ci.name).into(),
                });
            }
            // ServiceNow's install_status 7 is "Retired".
            thing.ci = Some(CmdbCi {
                retired: ci.install_status == Some(7),
            });
        }
        id
    }

    fn put_item(&mut self, item: &lite::InstallBaseItem<'_>) {
        let targets = self.targets(item.ci.as_deref(), item.service.as_deref());
        let placed = Item {
            id: (*item.id).into(),
            owner: self.owner(item.account.as_deref()),
            in_use: item.in_use(),
        };
        self.has_install_base = true;
        self.place_item(placed, targets);
    }

    /// A customer file's install-base entry `id`.
    fn put_customer_item(
        &mut self,
        id: &str,
        customer: &CustomerId,
        ci: Option<&str>,
        service: Option<&str>,
    ) {
        let targets = self.targets(ci, service);
        let item = Item {
            id: id.into(),
            owner: Owner::Customer(Arc::new(customer.clone())),
            in_use: true,
        };
        self.place_item(item, targets);
    }

    fn put_subscription(&mut self, sub: &lite::Sub<'_>) {
        let targets = self.targets(sub.ci.as_deref(), sub.service.as_deref());
        let placed = Sub {
            id: (*sub.id).into(),
            owner: self.owner(sub.account.as_deref()),
            product: sub.product.as_deref().map(|p| self.intern(p)),
            status_active: lite::status_active(sub.status.as_deref()),
            start: sub.start,
            end: sub.end,
        };
        self.has_billing = true;
        self.place_sub(placed, targets);
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

    /// Monitoring's `connector` alerted on `ci`.
    fn put_monitored(&mut self, ci: &str, connector: Arc<str>) {
        let id = self.key_id(ci);
        let key = self.keys.get(id as usize).cloned();
        if let Some(thing) = self.thing_mut(id) {
            if thing.name.is_none() {
                thing.name = Some(match key {
                    Some(key) if *key == *ci => key,
                    _ => ci.into(),
                });
            }
            thing.monitored = Some(connector);
        }
    }

    /// The key of a thing, to name it in [`Touched`].
    fn key_of(&self, id: ThingId) -> Option<Box<str>> {
        self.keys.get(id as usize).map(|k| (**k).into())
    }

    fn touch(&self, placement: Option<Placement>, touched: &mut Touched) {
        for id in placement.into_iter().flat_map(Placement::ids) {
            touched.things.extend(self.key_of(id));
        }
    }

    /// Whether records of this kind are in the index: no other rule reads
    /// them, so a changed one needs no read from the store (after an
    /// incident sync, that is every record of it).
    pub fn follows(record: &ItsmRecord) -> bool {
        match record {
            ItsmRecord::Ci(_)
            | ItsmRecord::InstallBaseItem(_)
            | ItsmRecord::Subscription(_)
            | ItsmRecord::Change(_)
            | ItsmRecord::Charge(_)
            | ItsmRecord::Account(_)
            | ItsmRecord::BillingAccount(_) => true,
            ItsmRecord::Contact(_)
            | ItsmRecord::Incident(_)
            | ItsmRecord::ChangeCi(_)
            | ItsmRecord::Problem(_)
            | ItsmRecord::ProblemTask(_) => false,
        }
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
                if let Some(ci) = &alert.ci {
                    let connector = self.intern(alert.connector.as_str());
                    let other = self
                        .thing(&thing_key(ci))
                        .and_then(|t| t.monitored.as_ref())
                        .is_some_and(|was| *was != connector);
                    self.stale |= other;
                    self.put_monitored(ci, connector);
                }
            }
        }
    }

    fn update_record(&mut self, record: ItsmRecord, touched: &mut Touched) {
        match record {
            ItsmRecord::Ci(ci) => {
                let ci = lite::Ci::of(&ci);
                let key = thing_key(&ci.name);
                match self.ci_names.get(&*ci.id).copied() {
                    // A renamed CI leaves its old name.
                    Some(old) if self.keys.get(old as usize).is_some_and(|k| **k != *key) => {
                        if let Some(thing) = self.thing_mut(old) {
                            thing.ci = None;
                        }
                        touched.things.extend(self.key_of(old));
                        self.stale = true;
                    }
                    Some(_) => {}
                    // Something may have named it by its sys_id.
                    None => self.stale |= self.by_key.contains_key(&*thing_key(&ci.id)),
                }
                touched.things.insert(key);
                self.put_ci(&ci);
            }
            ItsmRecord::InstallBaseItem(item) => {
                let item = lite::InstallBaseItem::of(&item);
                let was = self.unplace(Kind::Item, &item.id);
                self.touch(was, touched);
                let will = self.targets(item.ci.as_deref(), item.service.as_deref());
                self.touch(will, touched);
                self.put_item(&item);
            }
            ItsmRecord::Subscription(sub) => {
                let sub = lite::Sub::of(&sub);
                let was = self.unplace(Kind::Sub, &sub.id);
                self.touch(was, touched);
                let will = self.targets(sub.ci.as_deref(), sub.service.as_deref());
                self.touch(will, touched);
                self.put_subscription(&sub);
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
            // by a full run, which rebuilds the index; an account is rarely
            // renumbered.
            ItsmRecord::Account(_) | ItsmRecord::BillingAccount(_) => touched.everything = true,
            // Not followed (`Index::follows`).
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
