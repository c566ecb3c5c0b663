//! Change tracking end to end: change requests read from the ITSM (the
//! ServiceNow simulator, polled or pushing) keep a history of their states
//! and windows at the ITSM's times, reach customers through task_ci and the
//! install base, and are listed and shown by `/api/v1/changes` and
//! `csmd changes` as a CSM asks: upcoming per customer, executed in a
//! month, failed, overdue.

mod common;
mod itsm;
mod sim;

use common::{ConfigDir, TestApp, bearer, free_port, run_cli, wait_until};
use itsm::{Connector, at, cli, first_sync, rfc3339_at, sync_now};
use serde_json::{Value, json};
use sim::servicenow::{DATETIME_FORMAT, Simulator};

/// The profile's change columns and the instance's own flag columns.
fn change_fields() -> Vec<&'static str> {
    [itsm::CHANGE_FIELDS, &["u_billable", "u_customer_requested"]].concat()
}

/// The instance's own columns for the flags, mapped as an operator would.
const FLAG_FIELDS: &str = "[connector.streams.changes]\n\
     fields = { billable = \"u_billable\", customer_requested = \"u_customer_requested\" }";

const PUSH_TOKEN: &str = "token-of-the-business-rule";

async fn instance() -> Simulator {
    Simulator::builder()
        .table("change_request", &change_fields())
        .table("task_ci", &["task", "ci_item"])
        .table(
            "cmdb_ci",
            &[
                "name",
                "sys_class_name",
                "install_status",
                "operational_status",
                "company",
            ],
        )
        .basic_user(itsm::USER, itsm::PASSWORD)
        .now(itsm::EPOCH)
        .start()
        .await
}

/// A customer file with one maintenance contact, using `ci` (a name or a
/// sys_id) for `service`.
fn customer(config: &ConfigDir, id: &str, name: &str, ci: &str, service: &str) {
    let text = format!(
        "id = \"{id}\"\nname = \"{name}\"\ntime_zone = \"Europe/Paris\"\n\n\
         [[contact]]\nname = \"Ops {id}\"\nemail = \"ops@{id}.example\"\nroles = [\"maintenance\"]\n\n\
         [[install_base]]\nci = \"{ci}\"\nservice = \"{service}\"\n"
    );
    std::fs::write(config.customers_dir().join(format!("{id}.toml")), text)
        .expect("write customer file");
}

/// A change request as the instance stores it.
fn change(number: &str, state: &str, ci: &str, window: (&str, &str)) -> Value {
    json!({
        "number": number,
        "state": state,
        "type": "normal",
        "short_description": format!("Work {number}"),
        "start_date": window.0,
        "end_date": window.1,
        "cmdb_ci": ci,
    })
}

fn s(window: &(String, String)) -> (&str, &str) {
    (&window.0, &window.1)
}

fn sn_time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format(DATETIME_FORMAT).to_string()
}

/// The planned window from `hours` to `hours + 2` from now.
fn in_hours(hours: i64) -> (String, String) {
    let start = chrono::Utc::now() + chrono::Duration::hours(hours);
    (sn_time(start), sn_time(start + chrono::Duration::hours(2)))
}

async fn get(app: &TestApp, path: &str) -> common::Reply {
    app.api.admin_get(path).await
}

/// `GET /api/v1/changes/{key}`, which must exist.
async fn show(app: &TestApp, key: &str) -> Value {
    let reply = get(app, &format!("/api/v1/changes/{key}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json
}

/// Waits until change `key` has `len` history entries; returns it.
async fn wait_history(app: &TestApp, key: &str, len: usize) -> Value {
    wait_until(
        &format!("{len} history entries of {key}"),
        common::PATIENCE,
        || async {
            let reply = get(app, &format!("/api/v1/changes/{key}")).await;
            reply.status == 200 && reply.json["history"].as_array().map(Vec::len) == Some(len)
        },
    )
    .await;
    show(app, key).await
}

/// The history as (from, to, at) triples.
fn steps(change: &Value) -> Vec<(Value, Value, Value)> {
    change["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|t| (t["from"].clone(), t["to"].clone(), t["at"].clone()))
        .collect()
}

/// The numbers a list answers, in its order.
async fn numbers(app: &TestApp, query: &str) -> Vec<String> {
    let reply = get(app, &format!("/api/v1/changes{query}")).await;
    assert_eq!(reply.status, 200, "{query}: {}", reply.text);
    let changes = reply.json["changes"].as_array().expect("changes").clone();
    assert_eq!(reply.json["count"], changes.len(), "{query}");
    changes
        .iter()
        .map(|c| c["number"].as_str().expect("number").to_string())
        .collect()
}

#[tokio::test]
async fn a_change_polled_through_its_life_has_each_transition_at_the_itsms_time() {
    let sn = instance().await;
    let switch = sn.insert(
        "cmdb_ci",
        json!({ "name": "core-sw-1", "install_status": "1" }),
    );
    let router = sn.insert(
        "cmdb_ci",
        json!({ "name": "edge-rtr-2", "install_status": "1" }),
    );
    let planned = ("2026-12-01 20:00:00", "2026-12-01 22:00:00");
    let mut record = change("CHG0030001", "-5", &router, planned);
    record["u_billable"] = json!("true");
    record["u_customer_requested"] = json!("false");
    let id = sn.insert("change_request", record);
    sn.insert("task_ci", json!({ "task": id, "ci_item": switch }));

    let config = Connector::new(&sn)
        .streams(&["cis", "changes", "change_cis"])
        .with(FLAG_FIELDS)
        .config();
    // acme names the CI it uses, globex does not use it, initech uses the
    // change's main CI by sys_id.
    customer(&config, "acme", "ACME Logistics SAS", "core-sw-1", "ip-vpn");
    customer(&config, "globex", "Globex", "dns-9", "dns");
    customer(&config, "initech", "Initech", &router, "internet");
    let app = TestApp::start(config).await;
    first_sync(&app.api).await;
    wait_history(&app, "CHG0030001", 1).await;

    // One version per poll, each stamped by the instance's clock.
    let versions = [
        (60, json!({ "state": "-2" })),
        (
            120,
            json!({ "start_date": "2026-12-02 20:00:00", "end_date": "2026-12-02 23:00:00" }),
        ),
        (
            180,
            json!({ "state": "-1", "work_start": "2026-12-02 20:05:00" }),
        ),
        (
            240,
            json!({ "state": "0", "work_end": "2026-12-02 21:40:00", "close_code": "successful" }),
        ),
        (300, json!({ "state": "3" })),
    ];
    for (n, (seconds, fields)) in versions.into_iter().enumerate() {
        sn.set_now(&at(seconds));
        sn.update("change_request", &id, fields);
        sync_now(&app.api).await;
        wait_history(&app, "CHG0030001", n + 2).await;
    }

    // A poll with nothing new, then a barrier: a change read after it.
    sync_now(&app.api).await;
    sn.set_now(&at(360));
    sn.insert(
        "change_request",
        change("CHG0030002", "-5", &router, planned),
    );
    sync_now(&app.api).await;
    wait_history(&app, "CHG0030002", 1).await;

    let shown = show(&app, "CHG0030001").await;
    let s = |v: &str| json!(v);
    assert_eq!(
        steps(&shown),
        [
            (Value::Null, s("new"), s(&rfc3339_at(0))),
            (s("new"), s("scheduled"), s(&rfc3339_at(60))),
            (s("scheduled"), s("scheduled"), s(&rfc3339_at(120))),
            (s("scheduled"), s("implement"), s(&rfc3339_at(180))),
            (s("implement"), s("review"), s(&rfc3339_at(240))),
            (s("review"), s("closed"), s(&rfc3339_at(300))),
        ]
    );
    assert_eq!(
        shown["history"][2]["rescheduled"],
        json!({
            "before": { "start": "2026-12-01T20:00:00Z", "end": "2026-12-01T22:00:00Z" },
            "after": { "start": "2026-12-02T20:00:00Z", "end": "2026-12-02T23:00:00Z" },
        })
    );
    for (n, entry) in shown["history"]
        .as_array()
        .expect("history")
        .iter()
        .enumerate()
    {
        assert_eq!(
            entry["rescheduled"].is_null(),
            n != 2,
            "only the third moved the window: {entry}"
        );
    }

    // Reached through task_ci (acme, by the CI's name) and its main CI
    // (initech, by sys_id); globex uses neither.
    assert_eq!(
        shown["customers"],
        json!([
            { "id": "acme", "name": "ACME Logistics SAS", "cis": ["core-sw-1"], "services": ["ip-vpn"] },
            { "id": "initech", "name": "Initech", "cis": ["edge-rtr-2"], "services": ["internet"] },
        ])
    );
    let mut cis: Vec<_> = shown["cis"]
        .as_array()
        .expect("cis")
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    cis.sort_by_key(|n| n.to_string());
    assert_eq!(cis, [json!("core-sw-1"), json!("edge-rtr-2")]);
    assert_eq!(
        (
            &shown["state"],
            &shown["billable"],
            &shown["customer_requested"]
        ),
        (&json!("closed"), &json!(true), &json!(false))
    );
    assert_eq!(
        shown["executed"],
        json!({ "start": "2026-12-02T20:05:00Z", "end": "2026-12-02T21:40:00Z", "window": "actual" })
    );
    assert_eq!(
        (&shown["failed"], &shown["open"]),
        (&json!(false), &json!(false))
    );
    // Found by sys_id as well as by number.
    assert_eq!(show(&app, &id).await["number"], "CHG0030001");
    app.stop().await;
}

/// Change `CHG0040001` as a business rule pushes it: raw values with its
/// sys_id and `sys_updated_on` (`EPOCH + seconds`).
fn pushed(number: &str, seconds: i64, state: &str) -> Value {
    let mut record = change(
        number,
        state,
        "ci-core",
        ("2026-12-10 20:00:00", "2026-12-10 22:00:00"),
    );
    record["sys_id"] = json!(format!("{:0>32}", number.trim_start_matches("CHG")));
    record["sys_updated_on"] = json!(at(seconds));
    record
}

#[tokio::test]
async fn pushed_versions_show_the_states_between_polls_and_a_replay_adds_nothing() {
    let sn = instance().await;
    let config = Connector::new(&sn)
        .streams(&["changes"])
        .secret("sn_push_token", PUSH_TOKEN)
        .with("[connector.webhook]\nauth = \"bearer\"\ntoken = { file = \"sn_push_token\" }")
        .config();
    let app = TestApp::start(config).await;
    first_sync(&app.api).await;
    let push = |body: Value| {
        let api = app.api.clone();
        async move {
            let reply = api
                .post_webhook("itsm", &bearer(PUSH_TOKEN), body.to_string())
                .await;
            assert_eq!(reply.status, 200, "{}", reply.text);
        }
    };

    // Three updates within a few minutes, pushed as they happen: a poll
    // would have seen only the last.
    for (seconds, state) in [(100, "-5"), (200, "-4"), (300, "-3")] {
        push(json!({ "table": "change_request", "record": pushed("CHG0040001", seconds, state) }))
            .await;
    }
    let first = wait_history(&app, "CHG0040001", 3).await;

    // A retried delivery of the second version and an older one arrive
    // late; then another change, as a barrier.
    push(json!({ "table": "change_request", "records": [
        pushed("CHG0040001", 200, "-4"),
        pushed("CHG0040001", 150, "-2"),
    ]}))
    .await;
    push(json!({ "table": "change_request", "record": pushed("CHG0040002", 400, "-5") })).await;
    wait_history(&app, "CHG0040002", 1).await;

    let after = show(&app, "CHG0040001").await;
    let s = |v: &str| json!(v);
    assert_eq!(
        steps(&after),
        [
            (Value::Null, s("new"), s(&rfc3339_at(100))),
            (s("new"), s("assess"), s(&rfc3339_at(200))),
            (s("assess"), s("authorize"), s(&rfc3339_at(300))),
        ]
    );
    assert_eq!(after["history"], first["history"], "entries unchanged");
    assert_eq!(after["state"], "authorize");
    app.stop().await;
}

/// Inserts a change and, when `task_ci` names a CI, a task_ci row for it.
fn insert(sn: &Simulator, record: Value, task_ci: Option<&str>) -> String {
    let id = sn.insert("change_request", record);
    if let Some(ci) = task_ci {
        sn.insert("task_ci", json!({ "task": id, "ci_item": ci }));
    }
    id
}

fn closed(number: &str, ci: &str, code: &str, work: Option<(&str, &str)>) -> Value {
    let mut record = change(
        number,
        "3",
        ci,
        work.unwrap_or(("2026-06-20 20:00:00", "2026-06-20 21:00:00")),
    );
    record["close_code"] = json!(code);
    if let Some((start, end)) = work {
        record["work_start"] = json!(start);
        record["work_end"] = json!(end);
    }
    record
}

#[tokio::test]
async fn lists_answer_exactly_the_changes_a_csm_asks_for_over_the_api_and_the_cli() {
    let sn = instance().await;
    let (a, b, c, later) = (in_hours(48), in_hours(24), in_hours(72), in_hours(96));
    insert(&sn, change("CHG0050001", "-2", "ci-core", s(&a)), None);
    insert(&sn, change("CHG0050002", "-2", "ci-edge", s(&b)), None);
    insert(
        &sn,
        change("CHG0050003", "-5", "ci-core", s(&c)),
        Some("ci-edge"),
    );
    let late = (
        sn_time(chrono::Utc::now() - chrono::Duration::hours(5)),
        sn_time(chrono::Utc::now() - chrono::Duration::hours(1)),
    );
    insert(&sn, change("CHG0050004", "-1", "ci-edge", s(&late)), None);
    let june = |day: &str, from: &str, to: &str| {
        (
            format!("2026-06-{day} {from}:00"),
            format!("2026-06-{day} {to}:00"),
        )
    };
    let ok = june("10", "20:00", "22:00");
    insert(
        &sn,
        closed("CHG0050005", "ci-core", "successful", Some(s(&ok))),
        None,
    );
    insert(
        &sn,
        closed("CHG0050006", "ci-core", "successful", None),
        None,
    );
    insert(
        &sn,
        closed(
            "CHG0050007",
            "ci-core",
            "successful",
            Some(("2026-07-01 01:00:00", "2026-07-01 02:00:00")),
        ),
        None,
    );
    let bad = june("05", "20:00", "23:00");
    insert(
        &sn,
        closed("CHG0050008", "ci-edge", "unsuccessful", Some(s(&bad))),
        None,
    );
    let mut backed_out = closed(
        "CHG0050009",
        "ci-edge",
        "backed_out",
        Some(("2026-08-01 20:00:00", "2026-08-01 21:00:00")),
    );
    backed_out["state"] = json!("0");
    insert(&sn, backed_out, None);
    let now_window = (
        sn_time(chrono::Utc::now() - chrono::Duration::hours(2)),
        sn_time(chrono::Utc::now() + chrono::Duration::hours(2)),
    );
    let under_way = insert(
        &sn,
        change("CHG0050010", "-1", "ci-core", s(&now_window)),
        None,
    );
    let early = insert(&sn, change("CHG0050011", "-2", "ci-core", s(&later)), None);

    let config = Connector::new(&sn)
        .streams(&["changes", "change_cis"])
        .config();
    customer(&config, "acme", "ACME Logistics SAS", "ci-core", "ip-vpn");
    customer(&config, "globex", "Globex", "ci-edge", "internet");
    let app = TestApp::start(config).await;
    first_sync(&app.api).await;
    wait_history(&app, "CHG0050011", 1).await;

    // Both cancelled: one once under way (its history says it reached
    // Implement; no work start was recorded), one before.
    sn.advance_clock(std::time::Duration::from_secs(60));
    sn.update("change_request", &under_way, json!({ "state": "4" }));
    sn.update("change_request", &early, json!({ "state": "4" }));
    sync_now(&app.api).await;
    wait_history(&app, "CHG0050010", 2).await;
    wait_history(&app, "CHG0050011", 2).await;
    // The task_ci rows may be applied after the changes they name.
    wait_until("CHG0050003 reaching globex", common::PATIENCE, || async {
        show(&app, "CHG0050003").await["customers"]
            .as_array()
            .is_some_and(|c| c.len() == 2)
    })
    .await;

    let cases: &[(&str, &[&str])] = &[
        (
            "?view=upcoming&customer=acme",
            &["CHG0050001", "CHG0050003"],
        ),
        (
            "?view=upcoming&customer=globex",
            &["CHG0050002", "CHG0050003"],
        ),
        (
            "?view=upcoming",
            &["CHG0050002", "CHG0050001", "CHG0050003"],
        ),
        // Executed in June: by the end of the work, the planned window
        // standing in for a change closed without one; July's is not.
        (
            "?month=2026-06",
            &["CHG0050008", "CHG0050005", "CHG0050006"],
        ),
        (
            "?view=executed&month=2026-06&customer=acme",
            &["CHG0050005", "CHG0050006"],
        ),
        ("?view=failed", &["CHG0050008", "CHG0050009", "CHG0050010"]),
        (
            "?view=failed&customer=globex",
            &["CHG0050008", "CHG0050009"],
        ),
        ("?view=overdue", &["CHG0050004"]),
        ("?overdue=true", &["CHG0050004"]),
        ("?status=canceled", &["CHG0050010", "CHG0050011"]),
        (
            "?status=open",
            &["CHG0050001", "CHG0050002", "CHG0050003", "CHG0050004"],
        ),
        ("?status=review", &["CHG0050009"]),
    ];
    for (query, expected) in cases {
        assert_eq!(numbers(&app, query).await, *expected, "{query}");
    }

    // What cannot be answered says why, as JSON.
    let errors = [
        ("/api/v1/changes/CHG9999999", 404, "CHG9999999"),
        ("/api/v1/changes?month=2026-13", 400, "YYYY-MM"),
        ("/api/v1/changes?colour=red", 400, "colour"),
        ("/api/v1/changes?view=sideways", 400, "sideways"),
        ("/api/v1/changes?status=pending", 400, "pending"),
        ("/api/v1/changes?customer=nobody", 400, "nobody"),
    ];
    for (path, status, needle) in errors {
        let reply = get(&app, path).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text);
        assert!(
            reply.error().contains(needle),
            "{path}: {needle:?} in {:?}",
            reply.error()
        );
    }

    // The CLI: a table by default…
    let out = cli(
        &app.api,
        &["changes", "list", "--upcoming", "--customer", "acme"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    for column in [
        "NUMBER",
        "STATE",
        "TYPE",
        "PLANNED (UTC)",
        "CUSTOMERS",
        "CLOSE CODE",
        "SUMMARY",
    ] {
        assert!(lines[0].contains(column), "{column} in {stdout}");
    }
    let rows: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.trim_start())
        .filter(|l| l.starts_with("CHG"))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(rows[0].starts_with("CHG0050001"), "{stdout}");
    assert!(rows[1].starts_with("CHG0050003"), "{stdout}");
    assert!(
        rows[1].contains("new") && rows[1].contains("acme, globex"),
        "{stdout}"
    );
    let start = &c.0[..16];
    assert!(rows[1].contains(start), "{start} in {stdout}");

    // …the API's JSON with --json…
    let out = cli(&app.api, &["changes", "list", "--failed", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let failed: Vec<_> = body["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["number"].clone())
        .collect();
    assert_eq!(
        failed,
        [
            json!("CHG0050008"),
            json!("CHG0050009"),
            json!("CHG0050010")
        ]
    );

    // …one change with its history…
    let out = cli(&app.api, &["changes", "show", "CHG0050010"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let history = stdout.split("History:").nth(1).expect("a history table");
    let moves: Vec<Vec<&str>> = history
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("2026-"))
        .map(|l| l.split_whitespace().skip(2).take(2).collect())
        .collect();
    assert_eq!(
        moves,
        [vec!["implement"], vec!["implement", "canceled"]],
        "{stdout}"
    );
    assert!(stdout.contains("acme"), "{stdout}");

    // …and the errors a user can make.
    let out = cli(&app.api, &["changes", "list", "--upcoming", "--failed"]).await;
    assert_eq!(out.status.code(), Some(2), "one view at a time");
    let out = cli(&app.api, &["changes", "show", "CHG9999999"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("404") && stderr.contains("CHG9999999"),
        "{stderr}"
    );

    // The daemon stopped, the CLI says so.
    let api = app.api.clone();
    app.stop().await;
    let out = cli(&api, &["changes", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not reachable") && stderr.contains("is it running?"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_cli_reading_the_configuration_says_when_the_daemon_is_not_running() {
    let mut config = ConfigDir::new();
    config.listen = free_port();
    config.write();
    let path = config.path();
    let out = run_cli(&[
        "changes",
        "list",
        "--config",
        path.to_str().expect("UTF-8 path"),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&config.listen.to_string()) && stderr.contains("is it running?"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}
