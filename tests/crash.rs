//! The acceptance test of "every acknowledged event survives `kill -9`":
//! the real binary takes a flood of webhooks, is killed mid-flood, and
//! after a restart on the same data directory holds every event it
//! acknowledged, exactly once. Senders then retry what was not
//! acknowledged and end with every event stored exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Api, Auth, ConfigDir, Daemon, PATIENCE, alert_body, bearer, wait_until};

const TOKEN: &str = "crash-test-bearer-token";
const EVENTS_PER_ROUND: usize = 1200;
const SENDERS: usize = 48;
const ROUNDS: usize = 3;

/// What the senders saw: ids answered 2xx, and how many got no answer.
#[derive(Default)]
struct Outcome {
    acknowledged: Mutex<BTreeSet<String>>,
    acknowledged_count: AtomicUsize,
    /// Refused with 409: this webhook-id was stored before.
    replays: Mutex<BTreeSet<String>>,
    /// Posts that got no answer (the daemon was gone).
    unanswered: AtomicUsize,
}

fn event_id(round: usize, i: usize) -> String {
    format!("r{round}-e{i:04}")
}

/// One delivery per event, sent as Alertmanager or Grafana would: with the
/// event id as `webhook-id`, so a retry is recognised.
async fn post(api: &Api, id: &str) -> Result<u16, reqwest::Error> {
    let mut headers = bearer(TOKEN);
    headers.push(("webhook-id".into(), id.into()));
    let body = alert_body(id, &format!("crash test event {id}"));
    Ok(api
        .try_post_webhook("monitoring", &headers, body)
        .await?
        .status)
}

/// Starts `SENDERS` tasks posting `ids` as fast as the daemon takes them.
/// A sender stops at its first unanswered post, as the daemon is gone.
fn flood(api: &Api, ids: Vec<String>, outcome: Arc<Outcome>) -> Vec<tokio::task::JoinHandle<()>> {
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    (0..SENDERS)
        .map(|_| {
            let (api, ids, next, outcome) =
                (api.clone(), ids.clone(), next.clone(), outcome.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(id) = ids.get(i) else { return };
                    match post(&api, id).await {
                        Ok(status) if (200..300).contains(&status) => {
                            outcome.acknowledged.lock().unwrap().insert(id.clone());
                            outcome.acknowledged_count.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(409) => {
                            outcome.replays.lock().unwrap().insert(id.clone());
                        }
                        Ok(status) => panic!("{id}: unexpected status {status}"),
                        Err(_) => {
                            outcome.unanswered.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            })
        })
        .collect()
}

/// How many times each event id is in the journal, read through the admin API.
async fn stored_ids(api: &Api) -> BTreeMap<String, usize> {
    let events = api.all_events().await;
    let seqs: BTreeSet<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), events.len(), "a sequence number was reused");
    let mut counts = BTreeMap::new();
    for event in &events {
        let id = event["event"]["source_id"].as_str().expect("source_id");
        *counts.entry(id.to_string()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_kill_9_and_retries_store_it_once() {
    let mut config = ConfigDir::new()
        .on_free_port()
        .with_connector("monitoring", Auth::Bearer(TOKEN.into()));
    let mut daemon = Daemon::start(&mut config, &[]).await;
    // Every id ever acknowledged, and every id of the finished rounds
    // (acknowledged before the kill or on a retry after it).
    let mut acknowledged_so_far = BTreeSet::new();
    let mut complete_so_far = BTreeSet::new();

    for round in 0..ROUNDS {
        let ids: Vec<String> = (0..EVENTS_PER_ROUND).map(|i| event_id(round, i)).collect();
        let outcome = Arc::new(Outcome::default());
        let senders = flood(&daemon.api, ids.clone(), outcome.clone());

        // Kill it once a third has been acknowledged, the rest in flight.
        wait_until("a third of the events acknowledged", PATIENCE, || {
            let n = outcome.acknowledged_count.load(Ordering::Relaxed);
            async move { n >= EVENTS_PER_ROUND / 3 }
        })
        .await;
        daemon.kill9();
        for sender in senders {
            sender.await.expect("sender task");
        }
        let acknowledged = outcome.acknowledged.lock().unwrap().clone();
        assert!(
            outcome.unanswered.load(Ordering::Relaxed) > 0,
            "round {round}: the kill came after every post was answered"
        );
        acknowledged_so_far.extend(acknowledged.iter().cloned());

        // Restart on the same data dir: every acknowledged event is there
        // exactly once, from this round and every earlier one.
        daemon = Daemon::start(&mut config, &[]).await;
        let stored = stored_ids(&daemon.api).await;
        for id in acknowledged_so_far.iter().chain(&complete_so_far) {
            assert_eq!(
                stored.get(id),
                Some(&1),
                "round {round}: acknowledged event {id} is not stored exactly once"
            );
        }
        assert!(
            stored.values().all(|&n| n == 1),
            "round {round}: an event is stored twice"
        );

        // The senders retry what got no answer: it is stored now, or
        // refused as a replay if it had reached the disk before the kill.
        let unanswered: Vec<String> = ids
            .iter()
            .filter(|id| !acknowledged.contains(*id))
            .cloned()
            .collect();
        let retried = Arc::new(Outcome::default());
        for sender in flood(&daemon.api, unanswered.clone(), retried.clone()) {
            sender.await.expect("retry task");
        }
        assert_eq!(retried.unanswered.load(Ordering::Relaxed), 0);
        let replays = retried.replays.lock().unwrap().clone();
        for id in &replays {
            assert_eq!(
                stored.get(id),
                Some(&1),
                "409 for {id}, which was never stored"
            );
        }
        complete_so_far.extend(ids);
        eprintln!(
            "round {round}: {} acknowledged before the kill, {} retried, {} of those had been stored",
            acknowledged.len(),
            unanswered.len(),
            replays.len(),
        );
    }

    let stored = stored_ids(&daemon.api).await;
    assert_eq!(stored.len(), ROUNDS * EVENTS_PER_ROUND, "events missing");
    assert!(stored.values().all(|&n| n == 1), "an event is stored twice");
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}:\n{}", daemon.log());
}
