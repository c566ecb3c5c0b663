//! The ITSM connector reading a ServiceNow instance (the Table API
//! simulator, a real HTTP server on loopback) with csmd running in-process
//! on port 0: what an operator sees through the admin API and `/metrics`
//! after a sync; that no record is lost or read twice however the
//! instance's data moves during one; and which columns and rows a stream
//! reads: custom columns mapped in the config, never a column the instance
//! lacks (it would silently ignore it and read everything).

mod common;
mod itsm;
mod sim;

use common::{TestApp, metric};
use itsm::{
    Connector, EPOCH, assert_all_stored, at, first_sync, incident, incident_updated_in_turn,
    instance, page_queries, query_after, rfc3339_at, stored, stored_count, sync_now, wait_stored,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_stores_every_incident_with_its_fields() {
    let sn = instance().await;
    let ids = sn.insert_many("incident", (0..10_000).map(incident_updated_in_turn));
    sn.update(
        "incident",
        &ids[7],
        json!({"state": "6", "resolved_at": "2026-11-20 09:15:00", "sys_updated_on": at(10_007)}),
    );

    let app = TestApp::start(Connector::new(&sn).config()).await;
    let health = first_sync(&app.api).await;

    assert!(health["last_error"].is_null(), "{health}");
    assert_eq!(health["streams"]["incidents"]["records_total"], 10_000);
    assert_eq!(health["streams"]["incidents"]["remaining"], 0);
    assert_all_stored(&app.api, "incidents", &ids[7], 10_000).await;
    assert_eq!(
        page_queries(&sn).len(),
        11,
        "10,000 records are ten pages of 1,000, and an empty one says it is the end"
    );

    let first = stored(&app.api, "incidents", &ids[0])
        .await
        .expect("stored");
    assert_eq!(first["number"], "INC0000000");
    assert_eq!(first["priority"], 1);
    assert_eq!(first["state"], "in_progress");
    assert_eq!(first["ci"], "ci-0");
    assert_eq!(first["company"], "acme-company");
    assert_eq!(first["opened_at"], "2026-11-19T10:00:00Z");
    assert_eq!(first["updated_at"], rfc3339_at(0));
    assert_eq!(first["major"], false);
    let resolved = stored(&app.api, "incidents", &ids[7])
        .await
        .expect("stored");
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["resolved_at"], "2026-11-20T09:15:00Z");
    assert_eq!(resolved["updated_at"], rfc3339_at(10_007));
    let last = stored(&app.api, "incidents", &ids[9_999])
        .await
        .expect("stored");
    assert_eq!(last["number"], "INC0009999");
    assert_eq!(last["priority"], 2);
    assert_eq!(last["ci"], "ci-49");
    assert_eq!(last["short_description"], "Incident 9999");

    let metrics = app.api.metrics().await;
    let labels = [("connector", "itsm"), ("stream", "incidents")];
    assert_eq!(
        metric(&metrics, "csmd_connector_records_total", &labels),
        10_000.0
    );
    assert_eq!(
        metric(&metrics, "csmd_connector_up", &[("connector", "itsm")]),
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn the_next_sync_reads_only_what_changed_after_the_cursor() {
    let sn = instance().await;
    let ids = sn.insert_many("incident", (0..1_500).map(incident_updated_in_turn));
    let app = TestApp::start(Connector::new(&sn).config()).await;
    let health = first_sync(&app.api).await;
    assert_eq!(health["streams"]["incidents"]["records_total"], 1_500);
    let cursor = &health["streams"]["incidents"]["cursor"];
    assert_eq!(
        (cursor["updated"].as_str(), cursor["id"].as_str()),
        (Some(at(1_499).as_str()), Some(ids[1_499].as_str())),
        "the cursor is the last record read"
    );

    // Three incidents change upstream.
    sn.set_now(&at(2_000));
    for n in [3, 700, 1_200] {
        sn.update("incident", &ids[n], json!({"state": "3"}));
    }
    sn.clear_requests();
    let report = sync_now(&app.api).await;

    let incidents = &report["streams"]["incidents"];
    assert_eq!(incidents["status"], "synced", "{report}");
    assert_eq!(incidents["records"], 3, "{report}");
    assert_eq!(incidents["pages"], 1, "{report}");
    assert_eq!(
        page_queries(&sn),
        [query_after(&at(1_499), &ids[1_499])],
        "the only page asked for starts after the cursor"
    );
    for n in [3, 700, 1_200] {
        let record = wait_state(&app, &ids[n], "on_hold").await;
        assert_eq!(record["updated_at"], rfc3339_at(2_000), "{record}");
    }
    assert_eq!(stored_count(&app.api, "incidents").await, 1_500);

    // They changed in the instance's current second, which may still see
    // more updates: the cursor stays before them, and once that second is
    // over the next sync reads them again and moves past them.
    sn.set_now(&at(2_001));
    let report = sync_now(&app.api).await;
    assert_eq!(report["streams"]["incidents"]["records"], 3, "{report}");
    let report = sync_now(&app.api).await;
    assert_eq!(report["streams"]["incidents"]["records"], 0, "{report}");
    app.stop().await;
}

#[tokio::test]
async fn an_update_later_in_the_same_second_as_the_last_read_is_not_lost() {
    let sn = instance().await;
    sn.set_now(&at(10));
    let a = sn.insert("incident", incident(1));
    let b = sn.insert("incident", incident(2));
    // The one that sorts first: a cursor inside the second is already past it.
    let first = a.min(b);
    let app = TestApp::start(Connector::new(&sn).config()).await;
    first_sync(&app.api).await;
    wait_state(&app, &first, "in_progress").await;

    // Within the same second, an incident read a moment ago is updated
    // again: same sys_updated_on, new state.
    sn.update("incident", &first, json!({"state": "6"}));
    sync_now(&app.api).await;
    let record = wait_state(&app, &first, "resolved").await;
    assert_eq!(record["updated_at"], rfc3339_at(10));
    app.stop().await;
}

/// Waits until the stored incident `id` is in `state`; returns it.
async fn wait_state(app: &TestApp, id: &str, state: &str) -> serde_json::Value {
    common::wait_until(
        &format!("incident {id} {state}"),
        common::PATIENCE,
        || async {
            stored(&app.api, "incidents", id)
                .await
                .is_some_and(|r| r["state"] == state)
        },
    )
    .await;
    stored(&app.api, "incidents", id).await.expect("stored")
}

#[tokio::test]
async fn records_updated_during_a_sync_are_read_again_in_the_same_sync() {
    let sn = instance().await;
    let ids = sn.insert_many("incident", (0..3_000).map(incident_updated_in_turn));
    let (served, not_yet_served) = (ids[10].clone(), ids[2_500].clone());
    // While the first page is on its way, an agent updates an incident that
    // page holds and one a later page holds.
    let mut pages = 0;
    let (a, b) = (served.clone(), not_yet_served.clone());
    sn.on_page(move |page, sn| {
        if page.limit == 1000 {
            pages += 1;
            if pages == 1 {
                sn.set_now(&at(5_000));
                sn.update("incident", &a, json!({"state": "6"}));
                sn.update("incident", &b, json!({"state": "7"}));
            }
        }
    });

    let app = TestApp::start(Connector::new(&sn).config()).await;
    let health = first_sync(&app.api).await;

    assert!(health["last_error"].is_null(), "{health}");
    assert_eq!(
        health["streams"]["incidents"]["records_total"], 3_001,
        "every record once, and the one updated after it was read a second time"
    );
    // Both are on the last page, read after every other.
    common::wait_until("the last page applied", common::PATIENCE, || async {
        let served = stored(&app.api, "incidents", &served).await;
        let later = stored(&app.api, "incidents", &not_yet_served).await;
        served.is_some_and(|r| r["state"] == "resolved")
            && later.is_some_and(|r| r["state"] == "closed")
    })
    .await;
    assert_eq!(stored_count(&app.api, "incidents").await, 3_000);
    for id in [&served, &not_yet_served] {
        let record = stored(&app.api, "incidents", id).await.expect("stored");
        assert_eq!(record["updated_at"], rfc3339_at(5_000), "{record}");
    }
    assert_eq!(app.api.journal_total().await, 3_001);
    app.stop().await;
}

#[tokio::test]
async fn more_than_a_page_of_records_with_one_timestamp_are_each_read_once() {
    let sn = instance().await;
    // A bulk update stamped 2,500 incidents with the same second, a while ago.
    sn.set_now(EPOCH);
    let mut ids = sn.insert_many("incident", (0..2_500).map(incident));
    ids.sort();
    sn.set_now(itsm::INSTANCE_NOW);

    let app = TestApp::start(Connector::new(&sn).config()).await;
    let health = first_sync(&app.api).await;

    assert!(health["last_error"].is_null(), "{health}");
    assert_eq!(health["streams"]["incidents"]["records_total"], 2_500);
    assert_eq!(
        page_queries(&sn),
        [
            "ORDERBYsys_updated_on^ORDERBYsys_id".to_string(),
            query_after(EPOCH, &ids[999]),
            query_after(EPOCH, &ids[1_999]),
        ],
        "within one timestamp the pages go on by sys_id"
    );
    assert_all_stored(&app.api, "incidents", &ids[2_499], 2_500).await;
    assert_eq!(app.api.journal_total().await, 2_500, "none read twice");

    let report = sync_now(&app.api).await;
    assert_eq!(report["streams"]["incidents"]["records"], 0, "{report}");
    app.stop().await;
}

#[tokio::test]
async fn readyz_shows_the_connector_ok_after_a_good_sync() {
    let sn = instance().await;
    sn.insert("incident", incident(1));
    let app = TestApp::start(Connector::new(&sn).config()).await;
    first_sync(&app.api).await;

    let ready = app.api.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    let itsm = &ready.json["connectors"][0];
    assert_eq!(itsm["name"], "itsm", "{}", ready.text);
    assert_eq!(itsm["kind"], "servicenow", "{}", ready.text);
    assert_eq!(itsm["ok"], true, "{}", ready.text);
    assert!(itsm["last_success"].is_string(), "{}", ready.text);
    assert!(itsm["last_error"].is_null(), "{}", ready.text);
    app.stop().await;
}

#[tokio::test]
async fn a_custom_column_mapped_in_the_config_fills_the_major_flag() {
    let sn = instance().await;
    let mut major = incident(1);
    major["u_major"] = json!("true");
    let major = sn.insert("incident", major);
    // The profile's own column says "accepted", the instance's custom one
    // says no: the override decides.
    let mut minor = incident(2);
    minor["u_major"] = json!("false");
    minor["major_incident_state"] = json!("accepted");
    let minor = sn.insert("incident", minor);

    let app = TestApp::start(
        Connector::new(&sn)
            .with("[connector.streams.incidents]\nfields = { major = \"u_major\" }")
            .config(),
    )
    .await;
    let health = first_sync(&app.api).await;
    assert!(health["last_error"].is_null(), "{health}");
    assert_eq!(health["field_errors"], json!([]), "{health}");

    let major = wait_stored(&app.api, "incidents", &major).await;
    assert_eq!(major["major"], true, "{major}");
    let minor = wait_stored(&app.api, "incidents", &minor).await;
    assert_eq!(minor["major"], false, "{minor}");
    let asked = sn.requests()[1]
        .param("sysparm_fields")
        .unwrap_or_default()
        .to_string();
    assert!(
        asked.split(',').any(|f| f == "u_major")
            && !asked.split(',').any(|f| f == "major_incident_state"),
        "the page asks for the custom column instead: {asked}"
    );
    app.stop().await;
}

/// A connector reading incidents (with `incidents` overrides) and problems.
async fn with_broken_incidents_stream(sn: &sim::servicenow::Simulator, incidents: &str) -> TestApp {
    sn.insert_many("incident", (0..5).map(incident));
    let problem = sn.insert(
        "problem",
        json!({"number": "PRB0000001", "state": "2", "short_description": "Disk firmware"}),
    );
    let app = TestApp::start(
        Connector::new(sn)
            .streams(&["incidents", "problems"])
            .with(&format!("[connector.streams.incidents]\n{incidents}"))
            .config(),
    )
    .await;
    first_sync(&app.api).await;
    wait_stored(&app.api, "problems", &problem).await;
    app
}

/// What an operator sees of a stream that names a column the instance
/// lacks: it is not read at all, the health names the column, `csmd sync`
/// fails; the other stream syncs.
async fn assert_stream_refused(sn: &sim::servicenow::Simulator, app: &TestApp, column: &str) {
    let listed = itsm::connector(&app.api).await;
    let errors = listed["health"]["field_errors"].to_string();
    assert!(
        errors.contains("`incidents`") && errors.contains(column),
        "the health names the stream and the column: {listed}"
    );
    assert_eq!(listed["ok"], false, "{listed}");
    assert!(
        sn.requests()
            .iter()
            .filter(|r| r.path.ends_with("/table/incident"))
            .all(|r| r.param("sysparm_limit") == Some("1")),
        "only the one-record probe read the incidents table"
    );
    assert_eq!(stored_count(&app.api, "incidents").await, 0);

    let synced = itsm::cli(&app.api, &["sync", "--connector", "itsm"]).await;
    let table = String::from_utf8_lossy(&synced.stdout);
    assert_eq!(synced.status.code(), Some(1), "{synced:?}");
    let incidents_row = table
        .lines()
        .find(|l| l.contains("incidents"))
        .unwrap_or_default();
    let problems_row = table
        .lines()
        .find(|l| l.contains("problems"))
        .unwrap_or_default();
    assert!(
        incidents_row.contains("skipped") && incidents_row.contains(column),
        "csmd sync shows why incidents are not read:\n{table}"
    );
    assert!(problems_row.contains("synced"), "{table}");
    assert_eq!(stored_count(&app.api, "problems").await, 1);
}

#[tokio::test]
async fn a_mapped_column_the_instance_lacks_stops_only_its_stream() {
    let sn = instance().await;
    let app = with_broken_incidents_stream(&sn, "fields = { major = \"u_does_not_exist\" }").await;
    assert_stream_refused(&sn, &app, "u_does_not_exist").await;
    app.stop().await;
}

#[tokio::test]
async fn a_typo_in_a_stream_filter_is_refused_instead_of_reading_everything() {
    let sn = instance().await;
    let app = with_broken_incidents_stream(&sn, "filter = \"actve=true\"").await;
    assert_stream_refused(&sn, &app, "actve").await;
    app.stop().await;
}

#[tokio::test]
async fn a_filter_with_word_operators_reads_only_the_records_it_selects() {
    let sn = instance().await;
    let states = ["1", "2", "6", "7", "2"];
    let ids = sn.insert_many(
        "incident",
        states.iter().enumerate().map(|(n, state)| {
            let mut record = incident(n);
            record["state"] = json!(state);
            record
        }),
    );

    let app = TestApp::start(
        Connector::new(&sn)
            .with("[connector.streams.incidents]\nfilter = \"stateIN1,2,3^resolved_atISEMPTY\"")
            .config(),
    )
    .await;
    let health = first_sync(&app.api).await;

    assert_eq!(health["field_errors"], json!([]), "{health}");
    assert!(health["last_error"].is_null(), "{health}");
    assert_eq!(
        health["streams"]["incidents"]["records_total"], 3,
        "{health}"
    );
    for n in [0, 1, 4] {
        wait_stored(&app.api, "incidents", &ids[n]).await;
    }
    assert_eq!(stored_count(&app.api, "incidents").await, 3);
    app.stop().await;
}
