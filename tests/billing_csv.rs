//! The billing CSV connector (`connectors/billing-csv`): exports dropped
//! into a folder are imported once complete (renamed into the folder, or
//! with a `.done` marker), in one batch, then archived; bad rows are named
//! by file and line and left out while the good rows are imported; a file
//! found again after its import (a crash before the move) is only archived.

mod common;

use std::path::{Path, PathBuf};

use common::{Api, ConfigDir, PATIENCE, TestApp, repo_path, wait_until};
use serde_json::Value;

const NAME: &str = "billing-files";

fn config(extra: &str) -> ConfigDir {
    let mut config = ConfigDir::new();
    config.extra = format!(
        r#"
[[connector]]
name = "{NAME}"
profile = "billing-csv"
folder = "drop"
poll_interval = "1h"
{extra}
"#
    );
    std::fs::create_dir_all(config.dir().join("drop")).expect("drop folder");
    config
}

fn drop_dir(app: &TestApp) -> PathBuf {
    app.config.dir().join("drop")
}

fn archive_dir(app: &TestApp) -> PathBuf {
    drop_dir(app).join("archive")
}

/// Writes a file the way an export job should: under a temporary name,
/// then renamed into the folder.
fn deliver(folder: &Path, name: &str, content: &[u8]) {
    let part = folder.join(format!(".{name}.part"));
    std::fs::write(&part, content).expect("write export");
    std::fs::rename(&part, folder.join(name)).expect("rename export");
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo_path(&format!(
        "connectors/billing-csv/fixtures/{name}"
    )))
    .expect("fixture")
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn connector(api: &Api) -> Value {
    let reply = api.admin_get("/api/v1/connectors").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["connectors"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == NAME))
        .unwrap_or_else(|| panic!("no connector {NAME} in {}", reply.text))
        .clone()
}

async fn first_scan(api: &Api) -> Value {
    wait_until("the scan at start", PATIENCE, || async {
        let health = &connector(api).await["health"];
        !health["last_success"].is_null() || !health["last_error"].is_null()
    })
    .await;
    connector(api).await["health"].clone()
}

async fn sync_now(api: &Api) -> Value {
    let reply = api
        .admin_post(&format!("/api/v1/connectors/{NAME}/sync"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json
}

async fn stored(api: &Api, kind: &str, id: &str) -> Option<Value> {
    let reply = api.admin_get(&format!("/api/v1/records/{kind}/{id}")).await;
    match reply.status {
        200 => Some(reply.json),
        404 => None,
        other => panic!("GET record {kind}/{id}: {other} {}", reply.text),
    }
}

async fn wait_stored(api: &Api, kind: &str, id: &str) -> Value {
    wait_until(&format!("{kind} {id} in the store"), PATIENCE, || async {
        stored(api, kind, id).await.is_some()
    })
    .await;
    stored(api, kind, id).await.expect("just seen")
}

async fn count(api: &Api, kind: &str) -> u64 {
    let reply = api.admin_get(&format!("/api/v1/records/{kind}")).await;
    reply.json["count"].as_u64().expect("count")
}

#[test]
fn check_config_says_where_files_are_imported_from_and_archived_to() {
    let config = config("done_marker = true");
    config.write();
    let summary = config.load().summary();
    let dir = config.dir().display().to_string();
    let line = format!(
        "imports complete files from {dir}/drop every 1h (each with its .done marker), then moves them to {dir}/drop/archive"
    );
    assert!(summary.contains(&line), "{line:?} missing from:\n{summary}");
}

#[tokio::test]
async fn a_complete_export_is_imported_and_moved_to_the_archive() {
    let config = config("");
    deliver(
        &config.dir().join("drop"),
        "subscriptions-2026-11.csv",
        &fixture("subscriptions-2026-11.csv"),
    );
    let app = TestApp::start(config).await;
    let health = first_scan(&app.api).await;

    assert!(health["last_error"].is_null(), "{health}");
    assert_eq!(health["streams"]["subscriptions"]["records_total"], 3);
    let sub = wait_stored(&app.api, "subscriptions", "SUB-0003").await;
    assert_eq!(sub["product"], "SD-WAN, premium", "a quoted comma");
    assert_eq!(sub["quantity"], 12.5);
    assert_eq!(sub["ci"], "edge-ber-01");
    assert_eq!(sub["updated_at"], "2026-11-20T09:30:00Z");
    let cancelled = stored(&app.api, "subscriptions", "SUB-0002")
        .await
        .expect("stored");
    assert_eq!(cancelled["end"], "2026-10-31T00:00:00Z");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(count(&app.api, "subscriptions").await, 3);
    assert_eq!(files_in(&drop_dir(&app)), Vec::<String>::new());
    assert_eq!(files_in(&archive_dir(&app)), ["subscriptions-2026-11.csv"]);

    // The next export, found by `csmd sync` without waiting for the interval.
    deliver(
        &drop_dir(&app),
        "charges-2026-11.csv",
        &fixture("charges-2026-11.csv"),
    );
    deliver(
        &drop_dir(&app),
        "accounts-2026-11.csv",
        &fixture("accounts-2026-11.csv"),
    );
    let report = sync_now(&app.api).await;
    assert_eq!(report["streams"]["charges"]["status"], "synced", "{report}");
    assert_eq!(report["streams"]["charges"]["records"], 2, "{report}");
    assert_eq!(report["streams"]["accounts"]["records"], 2, "{report}");
    let charge = wait_stored(&app.api, "charges", "CH-0007").await;
    assert_eq!(charge["change"], "CHG0030001");
    assert_eq!(charge["amount"], 450.0);
    wait_stored(&app.api, "billing_accounts", "ACC-1002").await;
    assert_eq!(app.api.journal_total().await, 7);
    assert_eq!(files_in(&archive_dir(&app)).len(), 3);

    // `csmd connectors` shows the folder it reads and what it imported.
    let listed = connector(&app.api).await;
    assert_eq!(
        listed["files"]["folder"],
        drop_dir(&app).display().to_string()
    );
    let output = tokio::process::Command::from(common::csmd_command())
        .args(["connectors", "--url", &app.api.base])
        .env("CSMD_ADMIN_TOKEN", common::ADMIN_TOKEN)
        .output()
        .await
        .expect("run csmd connectors");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{table}");
    let row = table
        .lines()
        .find(|l| l.contains(NAME))
        .unwrap_or_else(|| panic!("no {NAME} in:\n{table}"));
    let drop = drop_dir(&app).display().to_string();
    assert!(row.contains(&drop), "{row}");
    assert_eq!(
        row.split_whitespace().last(),
        Some("7"),
        "seven records imported: {row}"
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_rows_are_named_by_file_and_line_and_the_good_rows_are_imported() {
    let app = TestApp::start(config("")).await;
    first_scan(&app.api).await;
    let export = "id,account,product,ci,service,quantity,start,end,status,updated_at\n\
                  SUB-1,ACC-1001,MPLS,rtr-1,MPLS VPN,1,2026-01-01,,active,2026-11-20 08:00:00\n\
                  SUB-2,ACC-1001,MPLS,rtr-2,MPLS VPN,two,2026-01-01,,active,2026-11-20 08:00:00\n\
                  SUB-3,ACC-1001,MPLS,rtr-3,MPLS VPN,1,2026-01-01,,active,2026-11-20 08:00:00\n\
                  SUB-4,ACC-1001,MPLS\n\
                  SUB-5,ACC-1001,MPLS,rtr-5,MPLS VPN,1,2026-01-01,,active,2026-11-20 08:00:00\n";
    deliver(&drop_dir(&app), "subscriptions-bad.csv", export.as_bytes());
    let report = sync_now(&app.api).await;

    assert_eq!(report["streams"]["subscriptions"]["records"], 3, "{report}");
    assert_eq!(report["streams"]["subscriptions"]["skipped"], 2, "{report}");
    wait_stored(&app.api, "subscriptions", "SUB-5").await;
    assert_eq!(count(&app.api, "subscriptions").await, 3);
    assert!(stored(&app.api, "subscriptions", "SUB-2").await.is_none());
    assert_eq!(
        files_in(&archive_dir(&app)),
        ["subscriptions-bad.csv"],
        "archived with its good rows imported"
    );

    let health = connector(&app.api).await["health"].clone();
    assert_eq!(
        health["rejected_rows"],
        serde_json::json!([
            "subscriptions-bad.csv:3: `quantity` \"two\" is not a number",
            "subscriptions-bad.csv:5: 3 fields where the header has 10"
        ]),
        "{health}"
    );
    let error = health["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with("2 row(s) not imported"), "{health}");

    // The operator's view.
    let mut command = tokio::process::Command::from(common::csmd_command());
    command
        .args(["connectors", "--url", &app.api.base])
        .env("CSMD_ADMIN_TOKEN", common::ADMIN_TOKEN)
        .stdin(std::process::Stdio::null());
    let listed = command.output().await.expect("run csmd connectors");
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{listed:?}");
    assert!(table.contains("subscriptions-bad.csv:3"), "{table}");

    // A clean file afterwards clears the report.
    deliver(
        &drop_dir(&app),
        "subscriptions-fixed.csv",
        &fixture("subscriptions-2026-11.csv"),
    );
    sync_now(&app.api).await;
    let health = connector(&app.api).await["health"].clone();
    assert!(health["last_error"].is_null(), "{health}");
    assert!(health["rejected_rows"].is_null(), "{health}");
    app.stop().await;
}

#[tokio::test]
async fn a_file_still_being_written_is_left_until_renamed_into_the_folder() {
    let app = TestApp::start(config("")).await;
    first_scan(&app.api).await;
    let folder = drop_dir(&app);
    for partial in [
        ".subscriptions-a.csv",
        "subscriptions-a.csv.part",
        "subscriptions-a.csv.tmp",
    ] {
        std::fs::write(folder.join(partial), fixture("subscriptions-2026-11.csv")).expect("write");
    }
    let report = sync_now(&app.api).await;
    assert_eq!(report["streams"]["subscriptions"]["records"], 0, "{report}");
    assert_eq!(app.api.journal_total().await, 0);
    assert_eq!(files_in(&folder).len(), 3, "nothing moved");

    std::fs::rename(
        folder.join("subscriptions-a.csv.part"),
        folder.join("subscriptions-a.csv"),
    )
    .expect("rename");
    let report = sync_now(&app.api).await;
    assert_eq!(report["streams"]["subscriptions"]["records"], 3, "{report}");
    assert_eq!(files_in(&archive_dir(&app)), ["subscriptions-a.csv"]);
    app.stop().await;
}

#[tokio::test]
async fn with_done_markers_a_file_waits_for_its_marker() {
    let app = TestApp::start(config("done_marker = true")).await;
    first_scan(&app.api).await;
    let folder = drop_dir(&app);
    std::fs::write(
        folder.join("charges-2026-11.csv"),
        fixture("charges-2026-11.csv"),
    )
    .expect("write");
    let report = sync_now(&app.api).await;
    assert_eq!(report["streams"]["charges"]["records"], 0, "{report}");
    assert_eq!(app.api.journal_total().await, 0);

    std::fs::write(folder.join("charges-2026-11.csv.done"), b"").expect("marker");
    let report = sync_now(&app.api).await;
    assert_eq!(report["streams"]["charges"]["records"], 2, "{report}");
    wait_stored(&app.api, "charges", "CH-0008").await;
    assert_eq!(
        files_in(&folder),
        Vec::<String>::new(),
        "file and marker gone"
    );
    assert_eq!(files_in(&archive_dir(&app)), ["charges-2026-11.csv"]);
    app.stop().await;
}

#[tokio::test]
async fn a_file_found_again_after_its_import_is_archived_without_a_second_import() {
    let app = TestApp::start(config("")).await;
    first_scan(&app.api).await;
    let folder = drop_dir(&app);
    deliver(
        &folder,
        "charges-2026-11.csv",
        &fixture("charges-2026-11.csv"),
    );
    sync_now(&app.api).await;
    wait_stored(&app.api, "charges", "CH-0008").await;
    assert_eq!(app.api.journal_total().await, 2);

    // As if csmd had died after storing the file's records but before
    // moving it: the same file is in the folder again, across a restart.
    std::fs::copy(
        archive_dir(&app).join("charges-2026-11.csv"),
        folder.join("charges-2026-11.csv"),
    )
    .expect("copy back");
    let app = app.restart().await;
    let health = first_scan(&app.api).await;
    assert!(health["last_error"].is_null(), "{health}");
    assert_eq!(
        app.api.journal_total().await,
        2,
        "the file's records were durable with its mark: not imported again"
    );
    assert_eq!(files_in(&folder), Vec::<String>::new());
    assert_eq!(
        files_in(&archive_dir(&app)).len(),
        2,
        "archived under a new name"
    );

    // A new export under the same name (other content) is imported.
    let changed = String::from_utf8(fixture("charges-2026-11.csv"))
        .expect("UTF-8")
        .replace("450.00", "475.00")
        .replace("2026-11-18 16:00:00\n", "2026-11-22 10:00:00\n");
    deliver(&folder, "charges-2026-11.csv", changed.as_bytes());
    let report = sync_now(&app.api).await;
    assert_eq!(report["streams"]["charges"]["records"], 2, "{report}");
    wait_until("the new amount", PATIENCE, || async {
        stored(&app.api, "charges", "CH-0007")
            .await
            .is_some_and(|c| c["amount"] == 475.0)
    })
    .await;
    app.stop().await;
}
