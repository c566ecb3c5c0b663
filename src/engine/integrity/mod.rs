//! Data-integrity reconciliation across the ITSM, billing and monitoring:
//! the rules ([`rules`]) run over an index of what each system says
//! ([`index`]), and each finding is followed as an issue:
//!
//! - first seen, it is `pending` for its rule's grace period, then raised
//!   (`open`), with one "Data Integrity" ticket in the ITSM when
//!   `[integrity] writeback` is set (`ticketed`);
//! - when the systems agree again it is `resolved`, its ticket noted and
//!   resolved; a pending one is dropped;
//! - seen again after that, it is raised again: its ticket reopened, or a
//!   new one, as `[integrity] reopen` says.
//!
//! A full run evaluates every rule over everything, over an index that has
//! followed the journal: at start, the one saved beside the store
//! ([`index::snapshot`]) after the last full run; after a configuration
//! reload and on the `[schedules] reconciliation` cron, the one kept since.
//! It builds the index from the store instead when there is none that
//! matches the store and configuration, when the journal no longer holds
//! what the index has not read, or when following could leave it
//! different from a rebuilt one (see [`Index::needs_rebuild`]).
//! In between, each run follows the journal from where the last one
//! stopped and evaluates only the CIs, services and changes whose records
//! arrived. Issues and their queued tickets change in one
//! transaction: a crash can neither lose an issue nor open a second ticket
//! for it (and a restart begins with a full run).

pub mod index;
mod lite;
pub mod rules;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{Config, Reopen};
use crate::connector::rest::profile::{TicketField, TicketProfile, TicketPurpose};
use crate::model::integrity::{Finding, IntegrityIssue, IssueStatus, Rule};
use crate::model::itsm::ItsmWrite;
use crate::model::{Event, JournalEntry};
use crate::store::outbox::StateChange;
use crate::store::tickets::TicketWrite;
use crate::store::{SCHEMA_VERSION, Store, StoreError};
use index::snapshot::{self, Fingerprint, Origin, SnapshotError};
use index::{Changed, Index, Touched};
use rules::Checking;

#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot save the index: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("cannot encode an issue: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The rules about one CI or service.
const THING_RULES: &[Rule] = &[
    Rule::CiNotBilled,
    Rule::BilledNotInInstallBase,
    Rule::BilledAfterDecommission,
    Rule::CustomerMismatch,
    Rule::MonitoredUnknownCi,
];

/// Journal entries read at a time by an incremental run.
const BATCH: usize = 1000;

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Reconciled {
    pub full: bool,
    /// The index was built from the store (not kept, nor read from its
    /// snapshot).
    pub rebuilt: bool,
    /// Findings of this run.
    pub findings: usize,
    pub raised: usize,
    pub resolved: usize,
    /// Ticket creations and updates queued.
    pub writes: usize,
}

/// Why the index is built from the store.
#[derive(Debug, thiserror::Error)]
enum Rebuild {
    #[error("no snapshot of the index is kept")]
    NoSnapshot,
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("the snapshot is of journal position {snapshot}, the store is at {store}")]
    StoreBehind { snapshot: u64, store: u64 },
    #[error("the customers' accounts or install base changed")]
    Configuration,
    #[error("there is no index yet")]
    NoIndex,
    #[error("the journal no longer holds every entry the index has not read")]
    JournalTrimmed,
    #[error("an account changed")]
    AccountChanged,
    #[error("an update left the index other than a rebuild would make it")]
    Diverged,
}

/// Where the index is saved, and the journal position of what is there.
struct Snapshot {
    path: PathBuf,
    saved: Option<u64>,
}

/// The reconciliation's memory between runs: the index, how far it has
/// followed the journal, and what of the configuration it was built from.
#[derive(Default)]
pub struct Reconciler {
    index: Option<Index>,
    position: u64,
    built_for: Option<Fingerprint>,
    /// Pending issues' keys and when their grace ends.
    pending: HashMap<String, DateTime<Utc>>,
    snapshot: Option<Snapshot>,
}

impl Reconciler {
    /// A reconciler that keeps its index in memory only.
    pub fn new() -> Reconciler {
        Reconciler::default()
    }

    /// A reconciler that saves its index to `path` ([`Reconciler::save`])
    /// and reads it back at start ([`Reconciler::resume`]).
    pub fn with_snapshot(path: PathBuf) -> Reconciler {
        Reconciler {
            snapshot: Some(Snapshot { path, saved: None }),
            ..Reconciler::default()
        }
    }

    /// Every rule over every record, at start and after a configuration
    /// reload: over the index kept since the last run, or else the one
    /// saved beside the store, once it has followed the journal, when it
    /// was built from the same customers' accounts and install base; over
    /// an index built from the store otherwise.
    pub fn resume(
        &mut self,
        store: &Store,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<Reconciled, IntegrityError> {
        let configuration = Fingerprint::of(&config.customers);
        let restored = if self.index.is_none() {
            self.restore(store, configuration)?
        } else if self.built_for != Some(configuration) {
            Err(Rebuild::Configuration)
        } else {
            Ok(())
        };
        match restored {
            Ok(()) => self.review(store, config, now),
            Err(why) => {
                tracing::info!(reason = %why, "Building the data-integrity index from the store");
                self.full(store, config, now)
            }
        }
    }

    /// Every rule over every record, from an index built from the store.
    pub fn full(
        &mut self,
        store: &Store,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<Reconciled, IntegrityError> {
        // Entries after this are read again by the next incremental run:
        // applying a record twice to the index changes nothing.
        let position = store.engine_position();
        // Two indexes at once would double the peak memory.
        self.index = None;
        if let Some(snapshot) = &mut self.snapshot {
            snapshot.saved = None;
        }
        self.index = Some(Index::build(store, &config.customers)?);
        self.position = position;
        self.built_for = Some(Fingerprint::of(&config.customers));
        let mut done = self.every_rule(store, config, now)?;
        done.rebuilt = true;
        Ok(done)
    }

    /// Every rule over every record, from the index kept since the last
    /// full run once it has followed the journal: the scheduled run. The
    /// index is built from the store again when there is none, when the
    /// journal no longer has what it did not read, or when it may differ
    /// from a rebuilt one (an account changed, a CI was renamed, …).
    pub fn review(
        &mut self,
        store: &Store,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<Reconciled, IntegrityError> {
        match self.catch_up(store)? {
            Ok(()) => self.every_rule(store, config, now),
            Err(why) => {
                tracing::info!(reason = %why, "Building the data-integrity index from the store");
                self.full(store, config, now)
            }
        }
    }

    /// Follows the journal up to the engine's position; why the index must
    /// be built from the store instead when it cannot.
    fn catch_up(&mut self, store: &Store) -> Result<Result<(), Rebuild>, StoreError> {
        let target = store.engine_position();
        let Some(touched) = self.follow(store, target)? else {
            return Ok(Err(match self.index {
                None => Rebuild::NoIndex,
                Some(_) => Rebuild::JournalTrimmed,
            }));
        };
        Ok(if touched.everything {
            Err(Rebuild::AccountChanged)
        } else if self.index.as_ref().is_none_or(Index::needs_rebuild) {
            Err(Rebuild::Diverged)
        } else {
            Ok(())
        })
    }

    /// Reads the index saved beside the store, if it was built from this
    /// store and `configuration` and the store has reached its position.
    fn restore(
        &mut self,
        store: &Store,
        configuration: Fingerprint,
    ) -> Result<Result<(), Rebuild>, StoreError> {
        let Some(snapshot) = &mut self.snapshot else {
            return Ok(Err(Rebuild::NoSnapshot));
        };
        let origin = Origin {
            store: store.id()?,
            schema: SCHEMA_VERSION,
            configuration,
        };
        let started = Instant::now();
        let (index, position) = match snapshot::read(&snapshot.path, &origin) {
            Ok(read) => read,
            Err(e) => return Ok(Err(e.into())),
        };
        let reached = store.engine_position();
        if position > reached {
            return Ok(Err(Rebuild::StoreBehind {
                snapshot: position,
                store: reached,
            }));
        }
        tracing::info!(
            position,
            took_ms = started.elapsed().as_millis() as u64,
            "Read the data-integrity index from its snapshot"
        );
        snapshot.saved = Some(position);
        self.index = Some(index);
        self.position = position;
        self.built_for = Some(configuration);
        Ok(Ok(()))
    }

    /// Saves the index, if this reconciler keeps a snapshot, when it has
    /// moved since it was last saved or read: after a full run and at
    /// shutdown. A failure is logged; it only means that the next start
    /// follows more of the journal, or builds the index from the store.
    pub fn save(&mut self, store: &Store) {
        let Some(snapshot) = &self.snapshot else {
            return;
        };
        if snapshot.saved == Some(self.position) {
            return;
        }
        let path = snapshot.path.clone();
        let started = Instant::now();
        match self.write_snapshot(store, &path) {
            Ok(Some(bytes)) => {
                tracing::info!(
                    position = self.position,
                    bytes,
                    took_ms = started.elapsed().as_millis() as u64,
                    "Saved the data-integrity index"
                );
                if let Some(snapshot) = &mut self.snapshot {
                    snapshot.saved = Some(self.position);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                error = %e,
                path = %path.display(),
                "Saving the data-integrity index failed"
            ),
        }
    }

    /// Writes the index, with the journal position it reflects, to `path`;
    /// returns the file's size, or `None` when there is no index or it
    /// differs from what a rebuild would make (a restart rebuilds it).
    pub fn write_snapshot(
        &self,
        store: &Store,
        path: &Path,
    ) -> Result<Option<u64>, IntegrityError> {
        let (Some(index), Some(configuration)) = (&self.index, self.built_for) else {
            return Ok(None);
        };
        if index.needs_rebuild() {
            return Ok(None);
        }
        let origin = Origin {
            store: store.id()?,
            schema: SCHEMA_VERSION,
            configuration,
        };
        Ok(Some(snapshot::write(path, index, origin, self.position)?))
    }

    /// The rules over the whole index.
    fn every_rule(
        &mut self,
        store: &Store,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<Reconciled, IntegrityError> {
        let Some(index) = self.index.as_ref() else {
            return Ok(Reconciled::default());
        };
        let checking = checking(index, config, now);
        let mut findings = Vec::new();
        for (key, thing) in index.things() {
            findings.extend(checking.thing(key, thing));
        }
        findings.extend(index.changes.keys().filter_map(|n| checking.change(n)));
        for customer in &config.customers {
            findings.extend(rules::contacts(customer));
        }
        let settled = store
            .integrity_issues()
            .map_err(IntegrityError::from)
            .and_then(|stored| {
                let mut candidates: HashSet<String> =
                    stored.iter().map(|i| i.key.clone()).collect();
                candidates.extend(findings.iter().map(|f| f.key.clone()));
                let stored = stored.into_iter().map(|i| (i.key.clone(), i)).collect();
                self.pending.clear();
                self.settle(store, config, candidates, findings, stored, now)
            });
        match settled {
            Ok(mut done) => {
                done.full = true;
                Ok(done)
            }
            Err(e) => {
                // What was found is not stored: the next run starts over.
                self.index = None;
                Err(e)
            }
        }
    }

    /// The rules over what arrived since the last run, and over the issues
    /// whose grace ended; a full run when there is no index yet or the
    /// journal no longer has what was not read.
    pub fn incremental(
        &mut self,
        store: &Store,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<Reconciled, IntegrityError> {
        let target = store.engine_position();
        match self.follow(store, target)? {
            Some(touched) => self.evaluate(store, config, touched, now),
            None => self.full(store, config, now),
        }
    }

    /// Brings the journal's entries up to `target` into the index; `None`
    /// when there is no index or the journal no longer has them.
    fn follow(&mut self, store: &Store, target: u64) -> Result<Option<Touched>, StoreError> {
        if self.index.is_none()
            || (target > self.position && store.journal_entry(self.position + 1)?.is_none())
        {
            return Ok(None);
        }
        let mut touched = Touched::default();
        let mut position = self.position;
        while position < target {
            let entries = store.journal_since(position, BATCH)?;
            let Some(last) = entries.last().map(|e| e.seq) else {
                break;
            };
            let Some(index) = self.index.as_mut() else {
                break;
            };
            for entry in entries.iter().filter(|e| e.seq <= target) {
                // Most alerts are on hosts already known to be monitored,
                // or on no host at all: they change nothing, and need no
                // read of their state.
                let unchanging = match &entry.event {
                    Event::Alert(alert) => alert
                        .ci
                        .as_ref()
                        .is_none_or(|ci| index.monitors(entry.connector.as_str(), ci)),
                    // Incidents, contacts and the like: no rule reads them.
                    Event::Itsm(record) => !Index::follows(record),
                    Event::Feedback(_) => true,
                };
                if unchanging {
                    continue;
                }
                if let Some(changed) = current(store, entry)? {
                    index.update(changed, &mut touched);
                }
            }
            position = last.min(target);
        }
        self.position = position;
        Ok(Some(touched))
    }

    /// Brings records changed outside the journal into the index and
    /// evaluates what they touch: what an incremental run does once it has
    /// read the journal.
    pub fn changed(
        &mut self,
        store: &Store,
        config: &Config,
        records: impl IntoIterator<Item = crate::model::itsm::ItsmRecord>,
        now: DateTime<Utc>,
    ) -> Result<Reconciled, IntegrityError> {
        let mut touched = Touched::default();
        let Some(index) = self.index.as_mut() else {
            return self.full(store, config, now);
        };
        for record in records {
            index.update(Changed::Record(record), &mut touched);
        }
        self.evaluate(store, config, touched, now)
    }

    /// The rules over what `touched` names and over the issues whose grace
    /// ended.
    fn evaluate(
        &mut self,
        store: &Store,
        config: &Config,
        mut touched: Touched,
        now: DateTime<Utc>,
    ) -> Result<Reconciled, IntegrityError> {
        if touched.everything {
            return self.full(store, config, now);
        }
        // Issues whose grace ended are raised now.
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in due {
            let Some((rule, subject)) = key.split_once('/') else {
                continue;
            };
            match rule.parse::<Rule>() {
                Ok(Rule::BillableChangeNotBilled) => {
                    touched.changes.insert(subject.into());
                }
                Ok(Rule::ContactMissing) => touched.everything = true,
                Ok(_) => {
                    touched.things.insert(subject.into());
                }
                Err(_) => {}
            }
        }
        if touched.everything {
            return self.full(store, config, now);
        }
        if touched.is_empty() {
            return Ok(Reconciled::default());
        }
        let Some(index) = self.index.as_ref() else {
            return Ok(Reconciled::default());
        };
        let checking = checking(index, config, now);
        let mut findings = Vec::new();
        let mut candidates = HashSet::new();
        for key in &touched.things {
            candidates.extend(THING_RULES.iter().map(|r| format!("{r}/{key}")));
            if let Some(thing) = index.thing(key) {
                findings.extend(checking.thing(key, thing));
            }
        }
        for number in &touched.changes {
            candidates.insert(format!("{}/{number}", Rule::BillableChangeNotBilled));
            findings.extend(checking.change(number));
        }
        let mut stored = HashMap::new();
        for key in &candidates {
            if let Some(issue) = store.integrity_issue(key)? {
                stored.insert(key.clone(), issue);
            }
        }
        self.settle(store, config, candidates, findings, stored, now)
    }

    /// The billable changes whose charging delay may have run out since the
    /// last run: they fall due with the clock, not with a record.
    pub fn clock(
        &mut self,
        store: &Store,
        config: &Config,
        now: DateTime<Utc>,
    ) -> Result<Reconciled, IntegrityError> {
        let Some(index) = self.index.as_ref() else {
            return self.full(store, config, now);
        };
        let checking = checking(index, config, now);
        let mut candidates = HashSet::new();
        let mut findings = Vec::new();
        for number in index.changes.keys() {
            if let Some(finding) = checking.change(number) {
                candidates.insert(finding.key.clone());
                findings.push(finding);
            }
        }
        let mut stored = HashMap::new();
        for key in &candidates {
            if let Some(issue) = store.integrity_issue(key)? {
                stored.insert(key.clone(), issue);
            }
        }
        self.settle(store, config, candidates, findings, stored, now)
    }

    /// Moves every candidate issue to what the findings say, and stores the
    /// issues with the tickets and notes this causes in one transaction.
    fn settle(
        &mut self,
        store: &Store,
        config: &Config,
        candidates: HashSet<String>,
        findings: Vec<Finding>,
        mut stored: HashMap<String, IntegrityIssue>,
        now: DateTime<Utc>,
    ) -> Result<Reconciled, IntegrityError> {
        let settings = &config.integrity;
        let mut findings: HashMap<String, Finding> = findings
            .into_iter()
            .filter(|f| settings.rule(f.rule).enabled)
            .map(|f| (f.key.clone(), f))
            .collect();
        let tickets = Tickets::of(config);
        let mut done = Reconciled {
            findings: findings.len(),
            ..Reconciled::default()
        };
        let mut states = Vec::new();
        let mut writes = Vec::new();
        let mut keys: Vec<String> = candidates.into_iter().collect();
        keys.sort();
        for key in keys {
            let finding = findings.remove(&key);
            let issue = stored.remove(&key);
            if issue
                .as_ref()
                .is_some_and(|i| !settings.rule(i.rule).enabled)
            {
                // A rule switched off leaves its issues as they are.
                continue;
            }
            let before = issue.clone();
            let after = match (finding, issue) {
                (None, None) => continue,
                (Some(finding), None) => {
                    let grace = grace(config, finding.rule);
                    let mut issue = IntegrityIssue {
                        key: finding.key.clone(),
                        rule: finding.rule,
                        subject: finding.subject.clone(),
                        customer: finding.customer.clone(),
                        status: IssueStatus::Pending,
                        evidence: finding.evidence.clone(),
                        first_seen: now,
                        last_seen: now,
                        opened_at: None,
                        resolved_at: None,
                        ticket: None,
                        occurrences: 0,
                    };
                    if grace.is_zero() {
                        raise(&mut issue, &tickets, now, &mut writes);
                        done.raised += 1;
                    } else {
                        self.pending.insert(issue.key.clone(), now + grace);
                    }
                    Some(issue)
                }
                (Some(finding), Some(mut issue)) => {
                    if finding.evidence != issue.evidence || finding.customer != issue.customer {
                        issue.evidence = finding.evidence;
                        issue.customer = finding.customer;
                        issue.last_seen = now;
                    }
                    match issue.status {
                        IssueStatus::Pending => {
                            let due = issue.first_seen + grace(config, issue.rule);
                            if due <= now {
                                self.pending.remove(&issue.key);
                                raise(&mut issue, &tickets, now, &mut writes);
                                done.raised += 1;
                            } else {
                                self.pending.insert(issue.key.clone(), due);
                            }
                        }
                        IssueStatus::Open => {
                            // A write-back configured since it was raised.
                            if tickets.is_some() {
                                ticket(&mut issue, &tickets, now, &mut writes);
                            }
                        }
                        IssueStatus::Ticketed => {}
                        IssueStatus::Resolved => {
                            reopen(&mut issue, &tickets, settings.reopen, now, &mut writes);
                            done.raised += 1;
                        }
                    }
                    Some(issue)
                }
                (None, Some(mut issue)) => match issue.status {
                    IssueStatus::Pending => {
                        self.pending.remove(&issue.key);
                        None
                    }
                    IssueStatus::Open | IssueStatus::Ticketed => {
                        resolve(&mut issue, &tickets, now, &mut writes);
                        done.resolved += 1;
                        Some(issue)
                    }
                    IssueStatus::Resolved => Some(issue),
                },
            };
            if after == before {
                continue;
            }
            states.push(match &after {
                Some(issue) => StateChange::Put {
                    name: issue.key.clone(),
                    value: serde_json::to_vec(issue)?,
                },
                None => StateChange::Remove { name: key },
            });
        }
        done.writes = store.commit_integrity(&states, &writes, now)?;
        if done.raised + done.resolved > 0 {
            tracing::info!(
                raised = done.raised,
                resolved = done.resolved,
                tickets = done.writes,
                "Data-integrity issues changed"
            );
        }
        Ok(done)
    }
}

fn checking<'a>(index: &'a Index, config: &Config, now: DateTime<Utc>) -> Checking<'a> {
    Checking {
        index,
        now,
        charge_within: chrono::Duration::from_std(config.integrity.charge_within)
            .unwrap_or(chrono::Duration::MAX),
    }
}

fn grace(config: &Config, rule: Rule) -> chrono::Duration {
    chrono::Duration::from_std(config.integrity.rule(rule).grace.0).unwrap_or(chrono::Duration::MAX)
}

/// The record or alert a journal entry is about, as the store has it now
/// (the journal may hold an older copy the engine did not apply).
fn current(store: &Store, entry: &JournalEntry) -> Result<Option<Changed>, StoreError> {
    match &entry.event {
        Event::Itsm(record) => Ok(store
            .itsm_record(record.tree(), record.id())?
            .map(Changed::Record)),
        Event::Alert(alert) => Ok(store
            .alert(&entry.connector, &alert.source_id)?
            .map(Changed::Alert)),
        Event::Feedback(_) => Ok(None),
    }
}

/// How tickets are written, when they are.
struct TicketSettings<'a> {
    connector: &'a crate::model::ConnectorName,
    profile: &'a TicketProfile,
    group: Option<&'a str>,
}

struct Tickets;

impl Tickets {
    fn of(config: &Config) -> Option<TicketSettings<'_>> {
        let connector = config.integrity.writeback.as_ref()?;
        let profile = config
            .connectors
            .iter()
            .find(|c| c.name == *connector)?
            .ticket_profile(TicketPurpose::DataIntegrity)?;
        Some(TicketSettings {
            connector,
            profile,
            group: config.integrity.assignment_group.as_deref(),
        })
    }
}

fn column(
    profile: &TicketProfile,
    field: TicketField,
    value: String,
    into: &mut Map<String, Value>,
) {
    if let Some(column) = profile.fields.get(&field) {
        into.insert(column.clone(), Value::String(value));
    }
}

fn evidence_text(issue: &IntegrityIssue) -> String {
    issue
        .evidence
        .iter()
        .map(|(system, says)| format!("- {system}: {says}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ticket key of an issue's `occurrence`: a hash of the issue key (its
/// subject may hold any character), one per occurrence with `reopen = new`.
fn ticket_key(issue: &IntegrityIssue, occurrence: u32) -> String {
    let digest = Sha256::digest(issue.key.as_bytes());
    let base = format!("csmd-di-{}", hex::encode(&digest[..8]));
    if occurrence > 1 {
        format!("{base}-{occurrence}")
    } else {
        base
    }
}

fn raise(
    issue: &mut IntegrityIssue,
    tickets: &Option<TicketSettings<'_>>,
    now: DateTime<Utc>,
    writes: &mut Vec<TicketWrite>,
) {
    issue.status = IssueStatus::Open;
    issue.opened_at = Some(now);
    issue.resolved_at = None;
    issue.occurrences += 1;
    ticket(issue, tickets, now, writes);
}

/// Queues the issue's ticket.
fn ticket(
    issue: &mut IntegrityIssue,
    tickets: &Option<TicketSettings<'_>>,
    now: DateTime<Utc>,
    writes: &mut Vec<TicketWrite>,
) {
    let Some(settings) = tickets else {
        return;
    };
    let key = ticket_key(issue, issue.occurrences.max(1));
    let profile = settings.profile;
    let mut fields = profile.create.clone();
    column(
        profile,
        TicketField::Title,
        format!(
            "Data integrity: {} {}",
            issue.subject,
            issue.rule.describe()
        ),
        &mut fields,
    );
    column(
        profile,
        TicketField::Description,
        format!(
            "csmd's reconciliation found a data-integrity issue.\n\n\
             Rule: {rule} ({describe})\nSubject: {subject}\nCustomer: {customer}\n\
             First seen: {first}\n\nEvidence:\n{evidence}\n\n\
             csmd resolves this ticket when the systems agree again (issue key {key}).",
            rule = issue.rule,
            describe = issue.rule.describe(),
            subject = issue.subject,
            customer = issue.customer.as_ref().map_or("unknown", |c| c.as_str()),
            first = issue.first_seen.format("%Y-%m-%d %H:%M UTC"),
            evidence = evidence_text(issue),
            key = issue.key,
        ),
        &mut fields,
    );
    if let Some(group) = settings.group {
        column(profile, TicketField::Group, group.to_string(), &mut fields);
    }
    writes.push(TicketWrite::Create(ItsmWrite::new(
        settings.connector.clone(),
        &key,
        &profile.table,
        fields,
        now,
    )));
    issue.ticket = Some(key);
    issue.status = IssueStatus::Ticketed;
}

fn note(
    settings: &TicketSettings<'_>,
    base: &Map<String, Value>,
    text: String,
) -> Map<String, Value> {
    let mut fields = base.clone();
    column(settings.profile, TicketField::Note, text, &mut fields);
    fields
}

fn resolve(
    issue: &mut IntegrityIssue,
    tickets: &Option<TicketSettings<'_>>,
    now: DateTime<Utc>,
    writes: &mut Vec<TicketWrite>,
) {
    issue.status = IssueStatus::Resolved;
    issue.resolved_at = Some(now);
    if let (Some(settings), Some(key)) = (tickets, &issue.ticket) {
        writes.push(TicketWrite::Update {
            connector: settings.connector.clone(),
            key: key.clone(),
            fields: note(
                settings,
                &settings.profile.resolve,
                format!(
                    "Resolved by csmd: the systems agree again ({}).",
                    now.format("%Y-%m-%d %H:%M UTC")
                ),
            ),
        });
    }
}

fn reopen(
    issue: &mut IntegrityIssue,
    tickets: &Option<TicketSettings<'_>>,
    policy: Reopen,
    now: DateTime<Utc>,
    writes: &mut Vec<TicketWrite>,
) {
    match (tickets, &issue.ticket, policy) {
        (Some(settings), Some(key), Reopen::Same) => {
            writes.push(TicketWrite::Update {
                connector: settings.connector.clone(),
                key: key.clone(),
                fields: note(
                    settings,
                    &settings.profile.reopen,
                    format!(
                        "Reopened by csmd: the issue is back ({}).\n{}",
                        now.format("%Y-%m-%d %H:%M UTC"),
                        evidence_text(issue)
                    ),
                ),
            });
            issue.status = IssueStatus::Ticketed;
            issue.opened_at = Some(now);
            issue.resolved_at = None;
            issue.occurrences += 1;
        }
        _ => raise(issue, tickets, now, writes),
    }
}

/// Issues raised and not resolved, per rule: for `/metrics`.
pub fn open_per_rule(store: &Store) -> Result<BTreeMap<Rule, i64>, StoreError> {
    let mut counts: BTreeMap<Rule, i64> = Rule::ALL.iter().map(|r| (*r, 0)).collect();
    for issue in store.integrity_issues()? {
        if issue.status.is_open() {
            *counts.entry(issue.rule).or_default() += 1;
        }
    }
    Ok(counts)
}

/// How often pending issues and billable changes are looked at again even
/// when nothing arrives: they fall due with the clock.
const CLOCK: std::time::Duration = std::time::Duration::from_secs(60);

/// Reconciles until shutdown: in full at start, on the `[schedules]
/// reconciliation` cron and after a configuration reload; incrementally
/// after each journal catch-up (`applied`, `alerted`); the clock-driven
/// rules every minute. The index is saved to `snapshot` after each full
/// run (once its findings are stored) and at shutdown, and read back from
/// it at start. `queued` is told
/// how many ticket writes each run queued.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    store: Store,
    config: impl Fn() -> std::sync::Arc<Config> + Send,
    snapshot: PathBuf,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    mut applied: tokio::sync::watch::Receiver<()>,
    mut alerted: tokio::sync::watch::Receiver<()>,
    queued: impl Fn(usize) + Send,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let reconciler =
        std::sync::Arc::new(std::sync::Mutex::new(Reconciler::with_snapshot(snapshot)));
    let mut current: Option<std::sync::Arc<Config>> = None;
    let mut next_full: Option<DateTime<Utc>> = None;
    let mut last_clock = tokio::time::Instant::now();
    loop {
        let latest = config();
        let now = Utc::now();
        let reloaded = !current
            .as_ref()
            .is_some_and(|c| std::sync::Arc::ptr_eq(c, &latest));
        let scheduled = next_full.is_some_and(|at| at <= now);
        let full = reloaded || scheduled;
        let clock = last_clock.elapsed() >= CLOCK;
        if clock {
            last_clock = tokio::time::Instant::now();
        }
        let job = {
            let store = store.clone();
            let config = latest.clone();
            let reconciler = reconciler.clone();
            move || {
                let mut reconciler = reconciler
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = Utc::now();
                let mut done = if reloaded {
                    reconciler.resume(&store, &config, now)?
                } else if scheduled {
                    reconciler.review(&store, &config, now)?
                } else {
                    reconciler.incremental(&store, &config, now)?
                };
                if clock && !full {
                    let timed = reconciler.clock(&store, &config, now)?;
                    done.raised += timed.raised;
                    done.resolved += timed.resolved;
                    done.writes += timed.writes;
                }
                let counts = (full || done.raised + done.resolved > 0)
                    .then(|| open_per_rule(&store))
                    .transpose()?;
                Ok::<_, IntegrityError>((done, counts))
            }
        };
        match tokio::task::spawn_blocking(job).await {
            Ok(Ok((done, counts))) => {
                if done.full {
                    tracing::info!(
                        findings = done.findings,
                        raised = done.raised,
                        resolved = done.resolved,
                        rebuilt = done.rebuilt,
                        "Full data-integrity reconciliation done"
                    );
                    save(&reconciler, &store).await;
                }
                if done.writes > 0 {
                    queued(done.writes);
                }
                for (rule, open) in counts.into_iter().flatten() {
                    metrics
                        .integrity_open
                        .get_or_create(&crate::metrics::RuleLabels {
                            rule: rule.to_string(),
                        })
                        .set(open);
                }
                current = Some(latest.clone());
            }
            Ok(Err(e)) => tracing::error!(error = %e, "Data-integrity reconciliation failed"),
            Err(e) => tracing::error!(error = %e, "Data-integrity reconciliation failed"),
        }
        if full || next_full.is_none() {
            next_full = super::schedule::next(
                &latest.schedules.reconciliation.schedule,
                latest.daemon.time_zone.0,
                Utc::now(),
            );
        }
        let until_full = next_full
            .and_then(|at| (at - Utc::now()).to_std().ok())
            .unwrap_or(CLOCK);
        let stop = tokio::select! {
            _ = shutdown.cancelled() => true,
            changed = applied.changed() => changed.is_err(),
            changed = alerted.changed() => changed.is_err(),
            _ = tokio::time::sleep(until_full.min(CLOCK)) => false,
        };
        if stop {
            // What the index followed since its last full run need not be
            // followed again at the next start.
            save(&reconciler, &store).await;
            return;
        }
    }
}

/// Saves the index on the reconciler's blocking thread.
async fn save(reconciler: &std::sync::Arc<std::sync::Mutex<Reconciler>>, store: &Store) {
    let reconciler = reconciler.clone();
    let store = store.clone();
    let saving = move || {
        reconciler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .save(&store);
    };
    if let Err(e) = tokio::task::spawn_blocking(saving).await {
        tracing::warn!(error = %e, "Saving the data-integrity index failed");
    }
}
