//! The index as the snapshot's body: postcard values, one at a time, in
//! sections the header gives the lengths of ([`Sections`]):
//!
//! 1. the counts of what follows (to size each map once) and the strings
//!    the index interns (account ids, products, connectors), which the
//!    things name by number;
//! 2. every thing's key, in number order;
//! 3. every thing, in number order, with its items and subscriptions;
//! 4. the CMDB's sys_ids;
//! 5. the account maps, the billable changes, the charges.
//!
//! Reading is bound by inserting millions of entries into hash maps, each
//! a miss in the CPU's caches, so the keys and sys_ids (sections 2 and 4)
//! are read on a second core while this one reads the things. A record
//! under two things is written under both and shared again when read.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{SnapshotError, io};
use crate::engine::integrity::index::{
    BillableChange, CmdbCi, Fast, Index, Item, Owner, Placement, Sub, Thing, ThingId,
};
use crate::model::CustomerId;

/// The number of sections.
pub const SECTIONS: usize = 5;

/// Each section's length in bytes.
pub type Sections = [u64; SECTIONS];

/// The body is written to the file in pieces of about this size.
const PIECE: usize = 256 * 1024;

/// Counts of what the body holds.
#[derive(Serialize, Deserialize)]
struct Sizes {
    strings: u32,
    things: u32,
    placed_items: u32,
    placed_subs: u32,
    ci_names: u32,
    itsm_accounts: u32,
    billing_accounts: u32,
    changes: u32,
    charged: u32,
}

/// One thing, followed by its items and subscriptions.
#[derive(Serialize, Deserialize)]
struct ThingHead<'a> {
    #[serde(borrow)]
    name: Name<'a>,
    /// Whether the CMDB's CI is retired, if the CMDB has it.
    ci: Option<bool>,
    /// The connector, in the strings.
    monitored: Option<u32>,
    items: u32,
    subscriptions: u32,
}

#[derive(Serialize, Deserialize)]
enum Name<'a> {
    Unnamed,
    /// The key is the name.
    Key,
    Other(&'a str),
}

#[derive(Serialize, Deserialize)]
enum OwnerRecord<'a> {
    /// In the strings.
    Account(u32),
    Customer(&'a str),
    Nobody,
}

#[derive(Serialize, Deserialize)]
struct ItemRecord<'a> {
    id: &'a str,
    #[serde(borrow)]
    owner: OwnerRecord<'a>,
    in_use: bool,
}

#[derive(Serialize, Deserialize)]
struct SubRecord<'a> {
    id: &'a str,
    #[serde(borrow)]
    owner: OwnerRecord<'a>,
    /// In the strings.
    product: Option<u32>,
    status_active: bool,
    start: Option<Time>,
    end: Option<Time>,
}

#[derive(Serialize, Deserialize)]
struct ChangeRecord<'a> {
    number: &'a str,
    closed_at: Option<Time>,
    ci: Option<ThingId>,
}

/// An instant, exactly.
#[derive(Serialize, Deserialize)]
struct Time {
    secs: i64,
    nanos: u32,
}

impl Time {
    fn of(at: DateTime<Utc>) -> Time {
        Time {
            secs: at.timestamp(),
            nanos: at.timestamp_subsec_nanos(),
        }
    }

    fn at(self) -> Result<DateTime<Utc>, SnapshotError> {
        DateTime::from_timestamp(self.secs, self.nanos)
            .ok_or(SnapshotError::Corrupt("an instant out of range"))
    }
}

/// Whether the index has read an install base, subscriptions and a CMDB.
#[derive(Serialize, Deserialize)]
struct Presence {
    install_base: bool,
    billing: bool,
    cmdb: bool,
}

fn count(n: usize) -> Result<u32, SnapshotError> {
    u32::try_from(n).map_err(|_| SnapshotError::TooLarge)
}

/// The body on its way to `out`, with its CRC-32 and length.
pub struct BodyWriter<'a, W> {
    pub out: W,
    pub path: &'a Path,
    pub crc: crc32fast::Hasher,
    /// Bytes passed to `out`.
    pub len: u64,
    piece: Vec<u8>,
}

impl<'a, W: Write> BodyWriter<'a, W> {
    pub fn new(out: W, path: &'a Path) -> Self {
        BodyWriter {
            out,
            path,
            crc: crc32fast::Hasher::new(),
            len: 0,
            piece: Vec::with_capacity(PIECE + 1024),
        }
    }

    fn put<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SnapshotError> {
        let piece = std::mem::take(&mut self.piece);
        self.piece = postcard::to_extend(value, piece).map_err(SnapshotError::Encode)?;
        if self.piece.len() >= PIECE {
            self.flush()?;
        }
        Ok(())
    }

    /// Bytes written so far, passed to `out` or not.
    fn offset(&self) -> u64 {
        self.len + self.piece.len() as u64
    }

    pub fn flush(&mut self) -> Result<(), SnapshotError> {
        self.crc.update(&self.piece);
        self.len += self.piece.len() as u64;
        self.out
            .write_all(&self.piece)
            .map_err(io("write", self.path))?;
        self.piece.clear();
        Ok(())
    }
}

/// The account ids, products and connectors the things name, numbered.
#[derive(Default)]
struct Strings<'a> {
    numbers: HashMap<&'a str, u32, Fast>,
    list: Vec<&'a str>,
}

impl<'a> Strings<'a> {
    fn of(index: &'a Index) -> Strings<'a> {
        let mut strings = Strings::default();
        for thing in &index.things {
            let items = thing.items.iter().map(|i| &i.owner);
            for owner in items.chain(thing.subscriptions.iter().map(|s| &s.owner)) {
                if let Owner::Account(account) = owner {
                    strings.add(account);
                }
            }
            for product in thing
                .subscriptions
                .iter()
                .filter_map(|s| s.product.as_deref())
            {
                strings.add(product);
            }
            if let Some(connector) = &thing.monitored {
                strings.add(connector);
            }
        }
        strings
    }

    fn add(&mut self, value: &'a str) {
        if !self.numbers.contains_key(value) {
            let n = self.list.len() as u32;
            self.numbers.insert(value, n);
            self.list.push(value);
        }
    }

    fn number(&self, value: &str) -> Result<u32, SnapshotError> {
        self.numbers
            .get(value)
            .copied()
            .ok_or(SnapshotError::Corrupt("a string missing from the table"))
    }

    fn owner<'o>(&self, owner: &'o Owner) -> Result<OwnerRecord<'o>, SnapshotError> {
        Ok(match owner {
            Owner::Account(account) => OwnerRecord::Account(self.number(account)?),
            Owner::Customer(customer) => OwnerRecord::Customer(customer.as_str()),
            Owner::Nobody => OwnerRecord::Nobody,
        })
    }
}

/// Writes `index`; returns the sections' lengths.
pub fn write<W: Write>(
    index: &Index,
    out: &mut BodyWriter<'_, W>,
) -> Result<Sections, SnapshotError> {
    if index.keys.len() != index.things.len() {
        return Err(SnapshotError::Corrupt("things and keys differ in number"));
    }
    let mut ends = [0; SECTIONS];
    let strings = Strings::of(index);
    out.put(&Sizes {
        strings: count(strings.list.len())?,
        things: count(index.things.len())?,
        placed_items: count(index.placed_items.len())?,
        placed_subs: count(index.placed_subs.len())?,
        ci_names: count(index.ci_names.len())?,
        itsm_accounts: count(index.itsm_accounts.len())?,
        billing_accounts: count(index.billing_accounts.len())?,
        changes: count(index.changes.len())?,
        charged: count(index.charged.len())?,
    })?;
    for string in &strings.list {
        out.put(*string)?;
    }
    ends[0] = out.offset();
    for key in &index.keys {
        out.put(&**key)?;
    }
    ends[1] = out.offset();
    for (key, thing) in index.keys.iter().zip(&index.things) {
        write_thing(key, thing, &strings, out)?;
    }
    ends[2] = out.offset();
    for (sys_id, thing) in &index.ci_names {
        out.put(&(&**sys_id, *thing))?;
    }
    ends[3] = out.offset();
    for accounts in [&index.itsm_accounts, &index.billing_accounts] {
        for (account, customer) in accounts {
            out.put(&(&**account, customer.as_str()))?;
        }
    }
    for (number, change) in &index.changes {
        out.put(&ChangeRecord {
            number,
            closed_at: change.closed_at.map(Time::of),
            ci: change.ci,
        })?;
    }
    for number in &index.charged {
        out.put(&**number)?;
    }
    out.put(&Presence {
        install_base: index.has_install_base,
        billing: index.has_billing,
        cmdb: index.has_cmdb,
    })?;
    ends[4] = out.offset();
    let mut sections = [0; SECTIONS];
    let mut start = 0;
    for (length, end) in sections.iter_mut().zip(ends) {
        *length = end - start;
        start = end;
    }
    Ok(sections)
}

fn write_thing<W: Write>(
    key: &str,
    thing: &Thing,
    strings: &Strings<'_>,
    out: &mut BodyWriter<'_, W>,
) -> Result<(), SnapshotError> {
    out.put(&ThingHead {
        name: match thing.name.as_deref() {
            None => Name::Unnamed,
            Some(name) if name == key => Name::Key,
            Some(name) => Name::Other(name),
        },
        ci: thing.ci.map(|ci| ci.retired),
        monitored: thing
            .monitored
            .as_deref()
            .map(|m| strings.number(m))
            .transpose()?,
        items: count(thing.items.len())?,
        subscriptions: count(thing.subscriptions.len())?,
    })?;
    for item in &thing.items {
        out.put(&ItemRecord {
            id: &item.id,
            owner: strings.owner(&item.owner)?,
            in_use: item.in_use,
        })?;
    }
    for sub in &thing.subscriptions {
        out.put(&SubRecord {
            id: &sub.id,
            owner: strings.owner(&sub.owner)?,
            product: sub
                .product
                .as_deref()
                .map(|p| strings.number(p))
                .transpose()?,
            status_active: sub.status_active,
            start: sub.start.map(Time::of),
            end: sub.end.map(Time::of),
        })?;
    }
    Ok(())
}

/// One section's values, one at a time.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn next<T: Deserialize<'a>>(&mut self) -> Result<T, SnapshotError> {
        let (value, rest) = postcard::take_from_bytes(self.rest).map_err(SnapshotError::Decode)?;
        self.rest = rest;
        Ok(value)
    }

    /// `n` as a number of values to come, each at least a byte long.
    fn bounded(&self, n: u32) -> Result<usize, SnapshotError> {
        let n = n as usize;
        if n > self.rest.len() {
            return Err(SnapshotError::Corrupt("a count beyond the end"));
        }
        Ok(n)
    }

    /// Fails unless the section was read to its end.
    fn end(&self) -> Result<(), SnapshotError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(SnapshotError::Corrupt("bytes after the end of a section"))
        }
    }
}

/// Reads the index from `body`, cut into `sections`.
pub fn read(body: &[u8], sections: &Sections) -> Result<Index, SnapshotError> {
    let mut rest = body;
    let mut parts = [&body[..0]; SECTIONS];
    for (part, length) in parts.iter_mut().zip(sections) {
        let length = usize::try_from(*length).map_err(|_| SnapshotError::TooLarge)?;
        if length > rest.len() {
            return Err(SnapshotError::Corrupt("a section beyond the end"));
        }
        (*part, rest) = rest.split_at(length);
    }
    let [head, keys, things, ci_names, tail] = parts;
    let mut head = Reader { rest: head };
    let sizes: Sizes = head.next()?;
    let mut strings = Vec::with_capacity(head.bounded(sizes.strings)?);
    for _ in 0..sizes.strings {
        strings.push(Arc::<str>::from(head.next::<&str>()?));
    }
    head.end()?;
    let (named, placed) = std::thread::scope(|scope| {
        let names = || read_names(keys, ci_names, &sizes);
        let other = std::thread::Builder::new()
            .name("csmd-snapshot".into())
            .spawn_scoped(scope, names);
        let placed = read_things(things, &strings, &sizes);
        let named = match other {
            Ok(other) => other
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No second thread: one after the other.
            Err(_) => names(),
        };
        (named, placed)
    });
    let (named, placed) = (named?, placed?);
    let mut index = Index {
        keys: named.keys,
        by_key: named.by_key,
        ci_names: named.ci_names,
        things: placed.things,
        placed_items: placed.items,
        placed_subs: placed.subs,
        interned: strings.into_iter().collect(),
        ..Index::default()
    };
    if index.keys.len() != index.things.len() {
        return Err(SnapshotError::Corrupt("things and keys differ in number"));
    }
    for id in placed.named_by_key {
        let id = id as usize;
        if let (Some(thing), Some(key)) = (index.things.get_mut(id), index.keys.get(id)) {
            thing.name = Some(key.clone());
        }
    }
    read_tail(tail, &sizes, &mut index)?;
    Ok(index)
}

/// What the second core reads: each thing's key, and the CMDB's sys_ids.
struct Named {
    keys: Vec<Arc<str>>,
    by_key: HashMap<Arc<str>, ThingId, Fast>,
    ci_names: HashMap<Box<str>, ThingId, Fast>,
}

fn read_names(keys: &[u8], ci_names: &[u8], sizes: &Sizes) -> Result<Named, SnapshotError> {
    let mut keys = Reader { rest: keys };
    let things = keys.bounded(sizes.things)?;
    let mut named = Named {
        keys: Vec::with_capacity(things),
        by_key: HashMap::with_capacity_and_hasher(things, Fast::default()),
        ci_names: HashMap::default(),
    };
    for id in 0..sizes.things {
        let key = Arc::<str>::from(keys.next::<&str>()?);
        if named.by_key.insert(key.clone(), id).is_some() {
            return Err(SnapshotError::Corrupt("a key given twice"));
        }
        named.keys.push(key);
    }
    keys.end()?;
    let mut ci_names = Reader { rest: ci_names };
    named.ci_names.reserve(ci_names.bounded(sizes.ci_names)?);
    for _ in 0..sizes.ci_names {
        let (sys_id, thing): (&str, ThingId) = ci_names.next()?;
        if thing >= sizes.things {
            return Err(SnapshotError::Corrupt("a thing beyond the things"));
        }
        named.ci_names.insert(sys_id.into(), thing);
    }
    ci_names.end()?;
    Ok(named)
}

/// What this core reads: the things, and where each record was placed.
struct Placed {
    things: Vec<Thing>,
    /// The things named by their key, whose name is shared with it once
    /// the keys are read.
    named_by_key: Vec<ThingId>,
    items: HashMap<Arc<str>, Placement, Fast>,
    subs: HashMap<Arc<str>, Placement, Fast>,
}

fn read_things(bytes: &[u8], strings: &[Arc<str>], sizes: &Sizes) -> Result<Placed, SnapshotError> {
    let mut section = Reader { rest: bytes };
    let things = section.bounded(sizes.things)?;
    let mut placed = Placed {
        things: Vec::with_capacity(things),
        named_by_key: Vec::with_capacity(things),
        items: HashMap::default(),
        subs: HashMap::default(),
    };
    placed.items.reserve(section.bounded(sizes.placed_items)?);
    placed.subs.reserve(section.bounded(sizes.placed_subs)?);
    let table = Table(strings);
    for id in 0..sizes.things {
        let thing = read_thing(&mut section, &table, &mut placed, id)?;
        placed.things.push(thing);
    }
    section.end()?;
    if placed.items.len() != sizes.placed_items as usize
        || placed.subs.len() != sizes.placed_subs as usize
    {
        return Err(SnapshotError::Corrupt("records placed other than counted"));
    }
    Ok(placed)
}

/// The strings, read.
struct Table<'a>(&'a [Arc<str>]);

impl Table<'_> {
    fn string(&self, n: u32) -> Result<Arc<str>, SnapshotError> {
        self.0
            .get(n as usize)
            .cloned()
            .ok_or(SnapshotError::Corrupt("a string beyond the table"))
    }

    fn owner(&self, owner: OwnerRecord<'_>) -> Result<Owner, SnapshotError> {
        Ok(match owner {
            OwnerRecord::Account(n) => Owner::Account(self.string(n)?),
            OwnerRecord::Customer(customer) => Owner::Customer(Arc::new(customer_id(customer)?)),
            OwnerRecord::Nobody => Owner::Nobody,
        })
    }
}

fn customer_id(id: &str) -> Result<CustomerId, SnapshotError> {
    id.parse()
        .map_err(|_| SnapshotError::Corrupt("an invalid customer id"))
}

fn read_thing(
    section: &mut Reader<'_>,
    table: &Table<'_>,
    placed: &mut Placed,
    id: ThingId,
) -> Result<Thing, SnapshotError> {
    let head: ThingHead<'_> = section.next()?;
    let name = match head.name {
        Name::Unnamed => None,
        Name::Key => {
            placed.named_by_key.push(id);
            None
        }
        Name::Other(name) => Some(name.into()),
    };
    let mut items = Vec::with_capacity(section.bounded(head.items)?);
    for _ in 0..head.items {
        let item: ItemRecord<'_> = section.next()?;
        items.push(Item {
            id: place(&mut placed.items, item.id, id)?,
            owner: table.owner(item.owner)?,
            in_use: item.in_use,
        });
    }
    let mut subscriptions = Vec::with_capacity(section.bounded(head.subscriptions)?);
    for _ in 0..head.subscriptions {
        let sub: SubRecord<'_> = section.next()?;
        subscriptions.push(Sub {
            id: place(&mut placed.subs, sub.id, id)?,
            owner: table.owner(sub.owner)?,
            product: sub.product.map(|p| table.string(p)).transpose()?,
            status_active: sub.status_active,
            start: sub.start.map(Time::at).transpose()?,
            end: sub.end.map(Time::at).transpose()?,
        });
    }
    Ok(Thing {
        name,
        items,
        subscriptions,
        ci: head.ci.map(|retired| CmdbCi { retired }),
        monitored: head.monitored.map(|m| table.string(m)).transpose()?,
    })
}

/// Notes that record `id` is under `thing`; returns its id, shared with
/// the other thing it is under if it was met there first.
fn place(
    placed: &mut HashMap<Arc<str>, Placement, Fast>,
    id: &str,
    thing: ThingId,
) -> Result<Arc<str>, SnapshotError> {
    match placed.entry(id.into()) {
        Entry::Vacant(vacant) => {
            let shared = vacant.key().clone();
            vacant.insert(Placement::One(thing));
            Ok(shared)
        }
        Entry::Occupied(mut occupied) => {
            let Placement::One(first) = *occupied.get() else {
                return Err(SnapshotError::Corrupt("a record under three things"));
            };
            occupied.insert(Placement::Two(first, thing));
            Ok(occupied.key().clone())
        }
    }
}

/// The account maps, the billable changes, the charges, and what the
/// index has read at all.
fn read_tail(bytes: &[u8], sizes: &Sizes, index: &mut Index) -> Result<(), SnapshotError> {
    let mut section = Reader { rest: bytes };
    for (accounts, n) in [
        (&mut index.itsm_accounts, sizes.itsm_accounts),
        (&mut index.billing_accounts, sizes.billing_accounts),
    ] {
        for _ in 0..section.bounded(n)? {
            let (account, customer): (&str, &str) = section.next()?;
            accounts.insert(account.into(), customer_id(customer)?);
        }
    }
    index.changes.reserve(section.bounded(sizes.changes)?);
    for _ in 0..sizes.changes {
        let change: ChangeRecord<'_> = section.next()?;
        if change.ci.is_some_and(|ci| ci >= sizes.things) {
            return Err(SnapshotError::Corrupt("a thing beyond the things"));
        }
        let closed_at = change.closed_at.map(Time::at).transpose()?;
        let ci = change.ci;
        index
            .changes
            .insert(change.number.into(), BillableChange { closed_at, ci });
    }
    index.charged.reserve(section.bounded(sizes.charged)?);
    for _ in 0..sizes.charged {
        index.charged.insert(section.next::<&str>()?.into());
    }
    let presence: Presence = section.next()?;
    (index.has_install_base, index.has_billing, index.has_cmdb) =
        (presence.install_base, presence.billing, presence.cmdb);
    section.end()
}
