//! The fields of the big trees' records the rules read, decoded from the
//! stored JSON without building the whole record: strings are borrowed
//! from the stored bytes (copied only when they hold escapes), the other
//! fields skipped. A full reconciliation reads a million records of each
//! kind, and decoding them through the tagged [`ItsmRecord`] enum costs
//! several times what reading them from the store does.
//!
//! Each tree holds one kind of record; `kind` is still checked, so a
//! record of another kind is skipped as the full decoding would skip it.
//!
//! [`ItsmRecord`]: crate::model::itsm::ItsmRecord

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::model::itsm::{self, Subscription};

/// A CMDB CI (`"kind": "ci"`).
#[derive(Debug, Deserialize)]
pub struct Ci<'a> {
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(default)]
    pub install_status: Option<i64>,
}

/// An install-base item (`"kind": "install_base_item"`).
#[derive(Debug, Deserialize)]
pub struct InstallBaseItem<'a> {
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub account: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub ci: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub service: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub state: Option<Cow<'a, str>>,
    /// Only whether there is one matters.
    #[serde(default)]
    pub uninstall_date: Option<IgnoredAny>,
}

impl InstallBaseItem<'_> {
    /// Installed and not uninstalled (as [`super::index`] has always read
    /// an item).
    pub fn in_use(&self) -> bool {
        self.uninstall_date.is_none() && self.state.as_deref().is_none_or(|s| s == "installed")
    }
}

/// A billing subscription (`"kind": "subscription"`).
#[derive(Debug, Deserialize)]
pub struct Sub<'a> {
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub account: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub product: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub ci: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub service: Option<Cow<'a, str>>,
    #[serde(default)]
    pub start: Option<DateTime<Utc>>,
    #[serde(default)]
    pub end: Option<DateTime<Utc>>,
    #[serde(borrow, default)]
    pub status: Option<Cow<'a, str>>,
}

/// Whether a subscription's status says it bills, whatever its dates:
/// [`Subscription::is_active`] is the one place that says which statuses
/// do.
pub fn status_active(status: Option<&str>) -> bool {
    Subscription {
        id: String::new(),
        account: None,
        product: None,
        ci: None,
        service: None,
        quantity: None,
        start: None,
        end: None,
        status: status.map(str::to_owned),
        updated_at: DateTime::<Utc>::MIN_UTC,
    }
    .is_active(DateTime::<Utc>::MIN_UTC)
}

/// The `kind` tags of the records decoded here.
pub const CI: &str = "ci";
pub const INSTALL_BASE_ITEM: &str = "install_base_item";
pub const SUBSCRIPTION: &str = "subscription";

/// The same views of records already decoded (an incremental run's).
impl<'a> Ci<'a> {
    pub fn of(ci: &'a itsm::Ci) -> Ci<'a> {
        Ci {
            kind: CI.into(),
            id: ci.id.as_str().into(),
            name: ci.name.as_str().into(),
            install_status: ci.install_status,
        }
    }
}

impl<'a> InstallBaseItem<'a> {
    pub fn of(item: &'a itsm::InstallBaseItem) -> InstallBaseItem<'a> {
        InstallBaseItem {
            kind: INSTALL_BASE_ITEM.into(),
            id: item.id.as_str().into(),
            account: item.account.as_deref().map(Into::into),
            ci: item.ci.as_deref().map(Into::into),
            service: item.service.as_deref().map(Into::into),
            state: item.state.as_deref().map(Into::into),
            uninstall_date: item.uninstall_date.map(|_| IgnoredAny),
        }
    }
}

impl<'a> Sub<'a> {
    pub fn of(sub: &'a Subscription) -> Sub<'a> {
        Sub {
            kind: SUBSCRIPTION.into(),
            id: sub.id.as_str().into(),
            account: sub.account.as_deref().map(Into::into),
            product: sub.product.as_deref().map(Into::into),
            ci: sub.ci.as_deref().map(Into::into),
            service: sub.service.as_deref().map(Into::into),
            start: sub.start,
            end: sub.end,
            status: sub.status.as_deref().map(Into::into),
        }
    }
}
