//! Building the index from the store: every tree the rules compare, read
//! once, each record decoded only as far as the rules need (`lite`).
//!
//! Reading a record from sled costs more than everything else done with
//! it, so once the CIs are known (items and subscriptions may name a CI by
//! sys_id), the subscriptions and the alerts are read on a second core
//! while this one reads the install base. Subscriptions come over in
//! batches and are placed between items: items and subscriptions are kept
//! apart in each thing, so their interleaving changes nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use serde::Deserialize;

use super::{Fast, Index, Owner, Sub, intern, lite};
use crate::config::Customer;
use crate::model::itsm::ItsmRecord;
use crate::store::{Store, StoreError};

/// Subscriptions sent over at a time, and batches in flight: bounds what
/// waits in memory when this core falls behind.
const BATCH: usize = 2048;
const IN_FLIGHT: usize = 8;

fn decode<'a, T: Deserialize<'a>>(
    tree: &'static str,
    key: &[u8],
    bytes: &'a [u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

/// A subscription read, with the names it is to be placed under.
struct PendingSub {
    ci: Option<Box<str>>,
    service: Option<Box<str>>,
    sub: Sub,
}

/// What the second core read besides the subscriptions: the CI each alert
/// names and its connector, in store order, and the strings it interned.
#[derive(Default)]
struct Alerts {
    alerts: Vec<(Box<str>, Arc<str>)>,
    interned: HashSet<Arc<str>, Fast>,
}

/// Why the second core stopped reading.
enum Stop {
    Store(StoreError),
    /// This core stopped listening (it failed).
    Closed,
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Stop {
        Stop::Store(e)
    }
}

fn read_billing(store: &Store, out: SyncSender<Vec<PendingSub>>) -> Result<Alerts, StoreError> {
    const TREE: &str = "subscriptions";
    let mut read = Alerts::default();
    let mut batch = Vec::with_capacity(BATCH);
    let subs = store.itsm_scan_raw(TREE, |key, bytes| {
        let sub: lite::Sub<'_> = decode(TREE, key, bytes)?;
        if sub.kind != lite::SUBSCRIPTION {
            return Ok(());
        }
        let interned = &mut read.interned;
        let owner = sub
            .account
            .as_deref()
            .map_or(Owner::Nobody, |a| Owner::Account(intern(interned, a)));
        let product = sub.product.as_deref().map(|p| intern(interned, p));
        batch.push(PendingSub {
            ci: sub.ci.as_deref().map(Into::into),
            service: sub.service.as_deref().map(Into::into),
            sub: Sub {
                id: (*sub.id).into(),
                owner,
                product,
                status_active: lite::status_active(sub.status.as_deref()),
                start: sub.start,
                end: sub.end,
            },
        });
        if batch.len() >= BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            out.send(full).map_err(|_| Stop::Closed)?;
        }
        Ok(())
    });
    match subs {
        Ok(()) => {}
        Err(Stop::Store(e)) => return Err(e),
        Err(Stop::Closed) => return Ok(read),
    }
    if !batch.is_empty() && out.send(batch).is_err() {
        return Ok(read);
    }
    drop(out);
    store.alerts_scan_raw(|key, bytes| {
        let alert = crate::store::alerts::Source::read(key, bytes)?;
        if let Some(ci) = alert.ci.as_deref() {
            let connector = intern(&mut read.interned, &alert.connector);
            read.alerts.push((ci.into(), connector));
        }
        Ok::<_, StoreError>(())
    })?;
    Ok(read)
}

impl Index {
    /// Reads every tree the rules compare. The customers' files give their
    /// own install base and map account numbers to customers.
    pub fn build(store: &Store, customers: &[Customer]) -> Result<Index, StoreError> {
        let mut index = Index::default();
        index.read_cmdb(store, customers)?;
        let alerts = std::thread::scope(|scope| {
            let (tx, rx) = sync_channel(IN_FLIGHT);
            let billing = scope.spawn(move || read_billing(store, tx));
            let placed = index
                .read_install_base(store, &rx)
                .map(|()| rx.iter().for_each(|batch| index.place_subs(batch)));
            // A failure here stops the other core at its next batch.
            drop(rx);
            let alerts = match billing.join() {
                Ok(alerts) => alerts,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            placed.and(alerts)
        })?;
        index.interned.extend(alerts.interned);
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
        for (ci, connector) in alerts.alerts {
            index.put_monitored(&ci, connector);
        }
        Ok(index)
    }

    fn place_subs(&mut self, batch: Vec<PendingSub>) {
        for pending in batch {
            let targets = self.targets(pending.ci.as_deref(), pending.service.as_deref());
            self.has_billing = true;
            self.place_sub(pending.sub, targets);
        }
    }

    /// The CMDB, the accounts and the customer files' install base: items
    /// and subscriptions name CIs by sys_id.
    fn read_cmdb(&mut self, store: &Store, customers: &[Customer]) -> Result<(), StoreError> {
        store.itsm_scan_raw("cis", |key, bytes| {
            let ci: lite::Ci<'_> = decode("cis", key, bytes)?;
            if ci.kind == lite::CI {
                self.put_ci(&ci);
            }
            Ok::<_, StoreError>(())
        })?;
        for record in store.itsm_scan("accounts")? {
            if let ItsmRecord::Account(account) = record?
                && let Some(number) = &account.number
                && let Some(customer) = customers
                    .iter()
                    .find(|c| c.itsm_account.as_deref() == Some(number.as_str()))
            {
                self.itsm_accounts
                    .insert(account.id.as_str().into(), customer.id.clone());
            }
        }
        for record in store.itsm_scan("billing_accounts")? {
            if let ItsmRecord::BillingAccount(account) = record?
                && let Some(number) = &account.number
                && let Some(customer) = customers
                    .iter()
                    .find(|c| c.billing_account.as_deref() == Some(number.as_str()))
            {
                self.billing_accounts
                    .insert(account.id.as_str().into(), customer.id.clone());
            }
        }
        for customer in customers {
            if let Some(itsm) = &customer.itsm_account {
                self.itsm_accounts
                    .insert(itsm.as_str().into(), customer.id.clone());
            }
            if let Some(billing) = &customer.billing_account {
                self.billing_accounts
                    .insert(billing.as_str().into(), customer.id.clone());
            }
            for (n, entry) in customer.install_base.iter().enumerate() {
                self.put_customer_item(
                    &format!("{}#{n}", customer.id),
                    &customer.id,
                    entry.ci.as_deref(),
                    entry.service.as_deref(),
                );
            }
        }
        Ok(())
    }

    /// The ITSM's install base, placing the subscriptions the other core
    /// sends as they come.
    fn read_install_base(
        &mut self,
        store: &Store,
        subs: &Receiver<Vec<PendingSub>>,
    ) -> Result<(), StoreError> {
        let mut read = 0usize;
        store.itsm_scan_raw("install_base", |key, bytes| {
            let item: lite::InstallBaseItem<'_> = decode("install_base", key, bytes)?;
            if item.kind == lite::INSTALL_BASE_ITEM {
                self.put_item(&item);
            }
            read += 1;
            if read.is_multiple_of(BATCH) {
                while let Ok(batch) = subs.try_recv() {
                    self.place_subs(batch);
                }
            }
            Ok::<_, StoreError>(())
        })
    }
}
