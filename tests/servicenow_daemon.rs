//! The ITSM connector in the real `csmd` binary: the operator's CLI
//! (`csmd sync`, `csmd connectors`) against `csmd run`, and a `kill -9` in
//! the middle of a large sync, after which the sync resumes where the
//! store left off.

mod common;
mod itsm;
mod sim;

use std::time::Duration;

use common::{Daemon, PATIENCE, metric, run_cli, wait_until};
use itsm::{
    Connector, assert_all_stored, at, first_sync, incident_updated_in_turn, instance, page_queries,
    query_after,
};
use sim::servicenow::Fault;

#[tokio::test]
async fn csmd_sync_prints_what_it_read_and_csmd_connectors_shows_the_connector_ok() {
    let sn = instance().await;
    sn.insert_many("incident", (0..5).map(incident_updated_in_turn));
    let mut config = Connector::new(&sn).config().on_free_port();
    let daemon = Daemon::start(&mut config, &[]).await;
    first_sync(&daemon.api).await;
    let ids = sn.insert_many("incident", (5..47).map(incident_updated_in_turn));
    let path = config.path();
    let path = path.to_str().expect("a UTF-8 path");

    let synced = run_cli(&["sync", "--connector", "itsm", "--config", path]).await;
    let table = String::from_utf8_lossy(&synced.stdout);
    assert!(synced.status.success(), "{synced:?}");
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.contains("incidents"))
        .unwrap_or_else(|| panic!("no incidents row in\n{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        ["incidents", "synced", "42", "0", "1", "0"],
        "stream, status, records, skipped, pages, remaining:\n{table}"
    );
    assert_all_stored(&daemon.api, "incidents", &ids[41], 47).await;

    let listed = run_cli(&["connectors", "--config", path]).await;
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{listed:?}");
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.contains("itsm"))
        .unwrap_or_else(|| panic!("no itsm row in\n{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[..2], ["itsm", "servicenow"], "{table}");
    assert!(row.contains(&"ok"), "{table}");
    assert!(
        row.iter().any(|cell| cell.starts_with(&sn.url())),
        "{table}"
    );
    assert_eq!(row.last(), Some(&"47"), "records read so far:\n{table}");
}

#[tokio::test]
async fn after_kill_9_mid_sync_the_sync_resumes_after_the_last_stored_page() {
    let sn = instance().await;
    let ids = sn.insert_many("incident", (0..5_000).map(incident_updated_in_turn));
    // Once the second page is served, the instance holds the next request
    // long enough for the daemon to be killed while it waits.
    let mut pages = 0;
    sn.on_page(move |page, sn| {
        if page.limit == 1000 {
            pages += 1;
            if pages == 2 {
                sn.fail_next(Fault::Delay(Duration::from_secs(60)), 1);
            }
        }
    });
    let mut config = Connector::new(&sn).config().on_free_port();
    let mut daemon = Daemon::start(&mut config, &[]).await;
    // The third page is asked for while the second is being stored; once
    // the journal holds both, the daemon is killed waiting for the third.
    wait_until("the request for the third page", PATIENCE, || async {
        page_queries(&sn).len() == 2 && sn.pending_faults() == 0
    })
    .await;
    wait_until("the second page durable", PATIENCE, || async {
        let metrics = daemon.api.metrics().await;
        metric(
            &metrics,
            "csmd_events_ingested_total",
            &[("connector", "itsm")],
        ) == 2_000.0
    })
    .await;
    daemon.kill9();

    sn.clear_page_hook();
    sn.clear_requests();
    let daemon = Daemon::start(&mut config, &[]).await;
    let health = first_sync(&daemon.api).await;

    assert!(health["last_error"].is_null(), "{health}");
    let queries = page_queries(&sn);
    assert_eq!(
        queries.first(),
        Some(&query_after(&at(1_999), &ids[1_999])),
        "the first page after the restart follows the last stored one"
    );
    assert_eq!(
        health["streams"]["incidents"]["records_total"], 3_000,
        "only the three pages not stored before are read: {health}"
    );
    assert_all_stored(&daemon.api, "incidents", &ids[4_999], 5_000).await;
    assert_eq!(
        daemon.api.journal_total().await,
        5_000,
        "every record was read exactly once across both runs"
    );
}
