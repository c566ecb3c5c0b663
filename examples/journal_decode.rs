//! Decoding one journal entry holding an incident, in a loop (see
//! BENCHMARKS.md): what the engine and the integrity reconciler pay for
//! each entry they read back from the journal tree.
//!
//! ```text
//! cargo run --release --example journal_decode
//! ```

use std::time::Instant;

use chrono::Utc;
use csmd::model::itsm::{Incident, IncidentState, ItsmRecord};
use csmd::model::{Event, JournalEntry};

const ROUNDS: u32 = 200_000;

fn main() {
    let now = Utc::now();
    let id = |prefix: &str| format!("{prefix}{}", "0123456789abcdef".repeat(2));
    let incident = Incident {
        id: id(""),
        number: "INC0012345".into(),
        priority: Some(3),
        state: IncidentState::InProgress,
        short_description: Some("Users cannot reach the VPN concentrator".into()),
        opened_at: Some(now),
        responded_at: None,
        resolved_at: Some(now),
        closed_at: None,
        on_hold_seconds: None,
        ci: Some(id("ci")),
        service: Some(id("svc")),
        account: Some(id("acc")),
        company: None,
        major: false,
        updated_at: now,
    };
    let entry = JournalEntry {
        seq: 1,
        connector: "itsm".parse().expect("a connector name"),
        received_at: now,
        delivery_id: None,
        event: Event::Itsm(ItsmRecord::Incident(incident.clone())),
    };
    let entry = serde_json::to_vec(&entry).expect("an entry encodes");
    let alone = serde_json::to_vec(&incident).expect("an incident encodes");
    println!("entry     {} bytes of JSON", entry.len());
    for _ in 0..2 {
        let started = Instant::now();
        for _ in 0..ROUNDS {
            let decoded: JournalEntry = serde_json::from_slice(&entry).expect("an entry");
            std::hint::black_box(decoded);
        }
        let per_entry = started.elapsed() / ROUNDS;
        let started = Instant::now();
        for _ in 0..ROUNDS {
            let decoded: Incident = serde_json::from_slice(&alone).expect("an incident");
            std::hint::black_box(decoded);
        }
        let per_incident = started.elapsed() / ROUNDS;
        println!("decode    {per_entry:?} an entry, {per_incident:?} its incident alone");
    }
}
