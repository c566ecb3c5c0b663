//! `csmd store export` and `csmd store import` as an operator uses them
//! with the daemon stopped: a backup that restores into a fresh data
//! directory with every event and delivery id, refusals while the daemon
//! runs or when the target already holds data, and broken dumps that name
//! the line and leave nothing behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{Auth, ConfigDir, Daemon, alert_body, bearer, csmd_command, run_cli};
use serde_json::Value;

const TOKEN: &str = "store-dump-bearer-token";

fn monitoring() -> ConfigDir {
    ConfigDir::new()
        .on_free_port()
        .with_connector("monitoring", Auth::Bearer(TOKEN.into()))
}

/// Bearer auth plus a `webhook-id`, so the journal holds a delivery id too.
fn headers(delivery_id: &str) -> Vec<(String, String)> {
    let mut headers = bearer(TOKEN);
    headers.push(("webhook-id".into(), delivery_id.into()));
    headers
}

/// Posts one alert per id, each with its id as `webhook-id`.
async fn post_alerts(daemon: &Daemon, ids: &[&str]) {
    for id in ids {
        let body = alert_body(id, &format!("Alert {id}"));
        let reply = daemon
            .api
            .post_webhook("monitoring", &headers(id), body)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
}

async fn stop(mut daemon: Daemon) {
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}:\n{}", daemon.log());
}

fn config_arg(config: &ConfigDir) -> String {
    config.path().display().to_string()
}

async fn export(config: &ConfigDir, out: &Path) -> Output {
    run_cli(&[
        "store",
        "export",
        "--config",
        &config_arg(config),
        "--out",
        &out.display().to_string(),
    ])
    .await
}

async fn import_file(config: &ConfigDir, dump: &Path) -> Output {
    run_cli(&[
        "store",
        "import",
        "--config",
        &config_arg(config),
        &dump.display().to_string(),
    ])
    .await
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        stderr(output)
    );
}

/// Exit status 1 with `message` in what the CLI printed.
fn assert_fails_with(output: &Output, message: &str) {
    assert_eq!(output.status.code(), Some(1), "{}", stderr(output));
    assert!(
        stderr(output).contains(message),
        "expected {message:?} in {:?}",
        stderr(output)
    );
}

fn lines(dump: &Path) -> Vec<String> {
    std::fs::read_to_string(dump)
        .unwrap_or_else(|e| panic!("read {}: {e}", dump.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
}

fn store_dir(config: &ConfigDir) -> PathBuf {
    config.data_dir().join("store")
}

/// What a broken import must leave: no store, and no staging directory.
fn assert_no_store(config: &ConfigDir) {
    let data = config.data_dir();
    let left: Vec<_> = std::fs::read_dir(&data)
        .map(|entries| entries.map(|e| e.expect("dir entry").file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{} holds {left:?}", data.display());
}

/// Starts a daemon, stores `ids` as events, stops it and exports its store.
async fn exported_store(ids: &[&str]) -> (ConfigDir, PathBuf, Vec<Value>) {
    let mut config = monitoring();
    let daemon = Daemon::start(&mut config, &[]).await;
    post_alerts(&daemon, ids).await;
    let events = daemon.api.all_events().await;
    assert_eq!(events.len(), ids.len());
    stop(daemon).await;
    let dump = config.dir().join("dump.jsonl");
    assert_success(&export(&config, &dump).await);
    (config, dump, events)
}

#[tokio::test]
async fn an_export_restores_into_a_fresh_data_dir_with_every_event() {
    let ids = ["alert-1", "alert-2", "alert-3"];
    let (_source, dump, events) = exported_store(&ids).await;

    let lines = lines(&dump);
    let header = parse(&lines[0]);
    assert_eq!(header["csmd_dump"], 1);
    assert_eq!(header["schema_version"], csmd::store::SCHEMA_VERSION);
    assert_eq!(header["csmd_version"], env!("CARGO_PKG_VERSION"));
    let created_at = header["created_at"].as_str().expect("created_at");
    chrono::DateTime::parse_from_rfc3339(created_at).expect("created_at is RFC 3339");
    let trailer = parse(lines.last().expect("trailer"));
    assert_eq!(
        trailer,
        serde_json::json!({ "end": true, "records": lines.len() - 2 })
    );
    let records: Vec<Value> = lines[1..lines.len() - 1].iter().map(|l| parse(l)).collect();
    let dumped_ids: Vec<&str> = records
        .iter()
        .filter(|r| r["tree"] == "journal")
        .filter_map(|r| r["value"]["event"]["source_id"].as_str())
        .collect();
    assert_eq!(dumped_ids, ids);
    assert!(
        records
            .iter()
            .any(|r| r["tree"] == "customers" && r["key"] == "acme"),
        "no customer in the dump"
    );
    assert!(
        !dump.with_extension("jsonl.partial").exists(),
        "the temporary file was left behind"
    );

    // Restored into another data directory, from stdin.
    let mut target = monitoring();
    target.write();
    let imported = csmd_command()
        .args(["store", "import", "--config", &config_arg(&target)])
        .stdin(Stdio::from(std::fs::File::open(&dump).expect("open dump")))
        .output()
        .expect("run csmd store import");
    assert_success(&imported);
    assert!(
        stderr(&imported).contains(&format!("imported {} records", lines.len() - 2)),
        "{}",
        stderr(&imported)
    );

    // Exported again, the records are the same, line for line.
    let again = target.dir().join("again.jsonl");
    assert_success(&export(&target, &again).await);
    let again = self::lines(&again);
    assert_eq!(again[1..], lines[1..]);

    // The daemon on the restored store has every event, and remembers
    // the delivery ids it has seen.
    let daemon = Daemon::start(&mut target, &[]).await;
    assert_eq!(daemon.api.all_events().await, events);
    let replay = daemon
        .api
        .post_webhook(
            "monitoring",
            &headers("alert-2"),
            alert_body("alert-2", "Again"),
        )
        .await;
    assert_eq!(replay.status, 409, "{}", replay.text);
    stop(daemon).await;
}

#[tokio::test]
async fn export_is_refused_while_the_daemon_runs() {
    let mut config = monitoring();
    let daemon = Daemon::start(&mut config, &[]).await;
    post_alerts(&daemon, &["running-1"]).await;

    let out = config.dir().join("dump.jsonl");
    let refused = export(&config, &out).await;
    assert_fails_with(&refused, "is csmd already running?");
    assert!(refused.stdout.is_empty());
    assert!(!out.exists(), "{} was written", out.display());
    assert!(!out.with_extension("jsonl.partial").exists());

    // The daemon is unharmed.
    assert_eq!(daemon.api.journal_total().await, 1);
    stop(daemon).await;
}

#[tokio::test]
async fn export_without_a_store_says_there_is_none_and_creates_nothing() {
    let config = monitoring();
    config.write();
    let out = config.dir().join("dump.jsonl");
    let refused = export(&config, &out).await;
    assert_fails_with(
        &refused,
        &format!("there is no store at {}", store_dir(&config).display()),
    );
    assert!(!out.exists());
    assert!(!store_dir(&config).exists(), "export created a store");
}

#[tokio::test]
async fn import_refuses_a_store_that_holds_data_and_leaves_it_alone() {
    let (_source, dump, _) = exported_store(&["from-the-dump"]).await;
    let mut target = monitoring();
    let daemon = Daemon::start(&mut target, &[]).await;
    post_alerts(&daemon, &["already-here"]).await;
    stop(daemon).await;

    let refused = import_file(&target, &dump).await;
    assert_fails_with(&refused, "already holds data");
    assert_fails_with(
        &refused,
        &format!("move {} aside", store_dir(&target).display()),
    );

    let daemon = Daemon::start(&mut target, &[]).await;
    let events = daemon.api.all_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"]["source_id"], "already-here");
    stop(daemon).await;
}

#[tokio::test]
async fn a_broken_dump_names_its_line_and_imports_nothing() {
    let (_source, dump, events) = exported_store(&["alert-a", "alert-b"]).await;
    let lines = lines(&dump);
    let mut target = monitoring();
    target.write();

    // Truncated at a line boundary: the trailer is missing.
    let truncated = target.dir().join("truncated.jsonl");
    std::fs::write(&truncated, lines[..lines.len() - 1].join("\n") + "\n").unwrap();
    let refused = import_file(&target, &truncated).await;
    assert_fails_with(
        &refused,
        &format!("{}:{}: ", truncated.display(), lines.len() - 1),
    );
    assert_fails_with(&refused, "without its trailer line");
    assert_no_store(&target);

    // Line 3 cut in the middle of its JSON.
    let malformed = target.dir().join("malformed.jsonl");
    let mut broken = lines.clone();
    broken[2] = r#"{"tree":"journal","key_hex":"65000"#.into();
    std::fs::write(&malformed, broken.join("\n") + "\n").unwrap();
    let refused = import_file(&target, &malformed).await;
    assert_fails_with(
        &refused,
        &format!("{}:3: not a JSON object", malformed.display()),
    );
    assert_no_store(&target);

    // A record the trailer does not account for.
    let extra = target.dir().join("extra.jsonl");
    let mut longer = lines.clone();
    longer.insert(1, r#"{"tree":"sip","key":"x","value":{}}"#.into());
    std::fs::write(&extra, longer.join("\n") + "\n").unwrap();
    let refused = import_file(&target, &extra).await;
    assert_fails_with(
        &refused,
        &format!("{}:{}: the trailer counts", extra.display(), longer.len()),
    );
    assert_no_store(&target);

    // The intact dump still imports afterwards.
    assert_success(&import_file(&target, &dump).await);
    let daemon = Daemon::start(&mut target, &[]).await;
    assert_eq!(daemon.api.all_events().await, events);
    stop(daemon).await;
}
