//! The Service Improvement Program end to end: actions created, updated and
//! noted by a CSM through the real `csmd` CLI, the rules they follow, the
//! actions csmd creates itself from RCA action items (polled from the
//! ServiceNow simulator) and from survey answers and complaints (a real
//! webhook), and the overdue digest in the outbox.

mod common;
mod itsm;
mod sim;

use common::{Api, ConfigDir, Daemon, PATIENCE, TestApp, wait_until};
use itsm::{Connector, at, cli, first_sync, sync_now};
use serde_json::{Value, json};
use sim::servicenow::Simulator;

/// The admin API's list of actions, with a query string.
async fn actions(api: &Api, query: &str) -> Vec<Value> {
    let reply = api.admin_get(&format!("/api/v1/sip{query}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["actions"].as_array().expect("actions").clone()
}

fn ids(actions: &[Value]) -> Vec<&str> {
    actions.iter().map(|a| a["id"].as_str().unwrap()).collect()
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs the CLI; asserts it succeeded and returns its standard output.
async fn ok(api: &Api, args: &[&str]) -> String {
    let output = cli(api, args).await;
    assert!(
        output.status.success(),
        "csmd {args:?} failed: {}{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Runs the CLI; asserts it failed and returns its standard error.
async fn fails(api: &Api, args: &[&str]) -> String {
    let output = cli(api, args).await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "csmd {args:?} should fail: {}",
        stdout(&output)
    );
    stderr(&output)
}

#[tokio::test]
async fn a_csm_adds_and_follows_an_action_and_the_rules_hold() {
    let mut config = ConfigDir::new().on_free_port();
    let daemon = Daemon::start(&mut config, &[]).await;
    let api = &daemon.api;

    let added = ok(
        api,
        &[
            "sip",
            "add",
            "--customer",
            "acme",
            "--title",
            "Review the escalation path with the NOC",
            "--author",
            "jane",
        ],
    )
    .await;
    assert!(
        added.starts_with("SIP-1  Review the escalation path"),
        "{added}"
    );
    assert!(added.contains("status       open"), "{added}");

    // It cannot leave "open" without an owner and a target date, and a
    // refused change changes nothing.
    let refused = fails(api, &["sip", "update", "SIP-1", "--status", "in-progress"]).await;
    assert!(
        refused.contains("422") && refused.contains("without an owner and a target date"),
        "{refused}"
    );
    let refused = fails(
        api,
        &[
            "sip", "update", "SIP-1", "--status", "done", "--owner", "Bob",
        ],
    )
    .await;
    assert!(refused.contains("without a target date"), "{refused}");
    let one = api.admin_get("/api/v1/sip/SIP-1").await;
    assert_eq!(one.json["status"], "open");
    assert_eq!(one.json["owner"], Value::Null);

    // With both, it moves; a target date in the past makes it overdue.
    ok(
        api,
        &[
            "sip",
            "update",
            "SIP-1",
            "--status",
            "in-progress",
            "--owner",
            "Bob Martin",
            "--target",
            "2026-01-15",
            "--author",
            "jane",
        ],
    )
    .await;
    ok(
        api,
        &[
            "sip",
            "note",
            "SIP-1",
            "Met the NOC lead",
            "--author",
            "bob",
        ],
    )
    .await;
    let list = ok(api, &["sip", "list", "--overdue"]).await;
    assert!(list.contains("SIP-1"), "{list}");
    assert!(list.contains("2026-01-15 OVERDUE"), "{list}");
    assert!(list.contains("Bob Martin"), "{list}");

    let shown = ok(api, &["sip", "show", "SIP-1"]).await;
    assert!(
        shown.contains("target date  2026-01-15 (OVERDUE)"),
        "{shown}"
    );
    assert!(shown.contains("Met the NOC lead"), "{shown}");
    let json: Value = serde_json::from_str(&ok(api, &["sip", "show", "SIP-1", "--json"]).await)
        .expect("--json prints JSON");
    let history: Vec<(String, Value, Value)> = json["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["field"].as_str().unwrap().to_string(),
                h["from"].clone(),
                h["to"].clone(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            ("status".into(), Value::Null, json!("open")),
            ("status".into(), json!("open"), json!("in-progress")),
            ("owner".into(), Value::Null, json!("Bob Martin")),
            ("target_date".into(), Value::Null, json!("2026-01-15")),
        ]
    );
    assert_eq!(json["history"][1]["author"], "jane");
    assert_eq!(json["updates"][0]["author"], "bob");
    assert_eq!(json["overdue"], true);

    // Moving the target date is history too; done is no longer overdue.
    ok(api, &["sip", "update", "SIP-1", "--target", "2099-12-31"]).await;
    assert!(actions(api, "?overdue=true").await.is_empty());
    ok(api, &["sip", "update", "SIP-1", "--status", "done"]).await;
    let done = api.admin_get("/api/v1/sip/SIP-1").await;
    assert_eq!(done.json["status"], "done");
    assert!(done.json["closed_at"].is_string(), "{}", done.text);
    let moves: Vec<_> = done.json["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["field"] == "target_date")
        .map(|h| h["to"].clone())
        .collect();
    assert_eq!(moves, [json!("2026-01-15"), json!("2099-12-31")]);

    // Filters.
    ok(
        api,
        &[
            "sip",
            "add",
            "--customer",
            "acme",
            "--title",
            "Second",
            "--source",
            "complaint",
        ],
    )
    .await;
    assert_eq!(ids(&actions(api, "?status=done").await), ["SIP-1"]);
    assert_eq!(ids(&actions(api, "?source=complaint").await), ["SIP-2"]);
    assert_eq!(ids(&actions(api, "?customer=acme").await).len(), 2);
    // Both were open this month; neither existed in January 2026.
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    assert_eq!(
        ids(&actions(api, &format!("?month={month}")).await).len(),
        2
    );
    assert!(actions(api, "?month=2026-01").await.is_empty());

    // Bad input is a clear error and changes nothing.
    let bad = api.admin_get("/api/v1/sip?month=2026-13").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error(), "month \"2026-13\" is not YYYY-MM");
    let bad = api.admin_get("/api/v1/sip?colour=red").await;
    assert_eq!(bad.status, 400);
    assert!(bad.error().contains("colour"), "{}", bad.text);
    let unknown = fails(api, &["sip", "add", "--customer", "nobody", "--title", "x"]).await;
    assert!(unknown.contains("no customer nobody"), "{unknown}");
    let missing = fails(api, &["sip", "note", "SIP-99", "hello"]).await;
    assert!(
        missing.contains("404") && missing.contains("no SIP action SIP-99"),
        "{missing}"
    );
    let bad_source = fails(
        api,
        &[
            "sip",
            "add",
            "--customer",
            "acme",
            "--title",
            "x",
            "--source",
            "gossip",
        ],
    )
    .await;
    assert!(
        bad_source.contains("unknown variant `gossip`"),
        "{bad_source}"
    );
    assert_eq!(actions(api, "").await.len(), 2);

    drop(daemon);
}

#[tokio::test]
async fn without_the_admin_token_the_sip_api_refuses_and_changes_nothing() {
    let app = TestApp::start(ConfigDir::new()).await;
    let created = app
        .api
        .admin_post_json("/api/v1/sip", &json!({"customer": "acme", "title": "Mine"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let http = &app.api.http;
    for token in [None, Some("not-the-token")] {
        let with = |request: reqwest::RequestBuilder| match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let requests = [
            with(http.get(app.api.url("/api/v1/sip"))),
            with(http.post(app.api.url("/api/v1/sip")))
                .json(&json!({"customer": "acme", "title": "Theirs"})),
            with(http.patch(app.api.url("/api/v1/sip/SIP-1")))
                .json(&json!({"title": "Changed", "author": "mallory"})),
            with(http.post(app.api.url("/api/v1/sip/SIP-1/notes")))
                .json(&json!({"text": "hi", "author": "mallory"})),
            with(http.post(app.api.url("/api/v1/sip/digest"))),
        ];
        for request in requests {
            let reply = request.send().await.expect("answer");
            assert_eq!(reply.status(), 401, "token {token:?}");
            let body: Value = reply.json().await.expect("JSON error");
            assert!(body["error"].is_string(), "{body}");
        }
    }
    let all = actions(&app.api, "").await;
    assert_eq!(ids(&all), ["SIP-1"]);
    assert_eq!(all[0]["title"], "Mine");
    assert!(all[0]["updates"].as_array().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn the_cli_says_when_the_daemon_is_not_running() {
    let nobody = common::free_port();
    let output = tokio::process::Command::from(common::csmd_command())
        .args(["sip", "list", "--url", &format!("http://{nobody}")])
        .output()
        .await
        .expect("run the CLI");
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("not reachable") && message.contains("is it running?"),
        "{message}"
    );
}

const FEEDBACK: &str = r#"
[sip]
csat_below = 3
nps_below = 7
digest_to = ["CSM team <csm-team@example.net>"]

[[connector]]
name = "surveys"
profile = "feedback-json"
[connector.webhook]
auth = "none"
"#;

#[tokio::test]
async fn low_scores_and_complaints_become_one_action_each_and_are_never_duplicated() {
    let mut config = ConfigDir::new();
    config.extra = FEEDBACK.into();
    let app = TestApp::start(config).await;
    let fixture = std::fs::read(common::repo_path(
        "connectors/feedback-json/fixtures/survey-answers.json",
    ))
    .expect("fixture");

    let reply = app.api.post_webhook("surveys", &[], fixture.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["stored"], 3);
    wait_until("two SIP actions", PATIENCE, || async {
        actions(&app.api, "").await.len() == 2
    })
    .await;
    let created = actions(&app.api, "").await;
    // The CSAT 2 (under 3) and the complaint; the NPS 9 is a promoter.
    assert_eq!(created[0]["source"], "survey");
    assert_eq!(
        created[0]["title"],
        "Low satisfaction score (2 in a CSAT survey)"
    );
    let description = created[0]["description"].as_str().unwrap();
    assert!(
        description.starts_with("From Alice Martin, 2026-11-18 15:02 CET:\n"),
        "{description}"
    );
    assert!(description.contains("two days to explain"), "{description}");
    assert_eq!(created[1]["source"], "complaint");
    assert_eq!(
        created[1]["title"],
        "Complaint: Nobody told us about last night's maintenance on the VPN."
    );
    assert_eq!(created[1]["status"], "open");
    assert_eq!(created[1]["customer"], "acme");

    // The survey tool delivers the same answers again (a retry): they are
    // stored as events, but make no second action.
    let again = app.api.post_webhook("surveys", &[], fixture).await;
    assert_eq!(again.status, 200, "{}", again.text);
    // A fresh complaint after them is the barrier: once its action exists,
    // the redelivery has been applied.
    let barrier = json!({"id": "cmp-barrier", "customer": "acme", "type": "complaint", "comment": "Late invoice"});
    assert_eq!(
        app.api
            .post_webhook("surveys", &[], barrier.to_string())
            .await
            .status,
        200
    );
    wait_until("the barrier's action", PATIENCE, || async {
        actions(&app.api, "").await.len() >= 3
    })
    .await;
    assert_eq!(
        ids(&actions(&app.api, "").await),
        ["SIP-1", "SIP-2", "SIP-3"]
    );

    // Feedback for a customer csmd does not know is refused, not lost
    // silently; a bad record is named. Neither is stored.
    let events = app.api.journal_total().await;
    let stranger = json!({"id": "x1", "customer": "nobody", "type": "complaint", "comment": "?"});
    let reply = app
        .api
        .post_webhook("surveys", &[], stranger.to_string())
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert_eq!(
        reply.error(),
        "record 0: no customer \"nobody\": expected a customer id or a customer's ITSM or billing account"
    );
    let bad = json!([{"id": "x2", "customer": "acme", "type": "nps", "score": 12}]);
    let reply = app.api.post_webhook("surveys", &[], bad.to_string()).await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.error(), "record 0: an NPS score is 0 to 10, found 12");
    assert_eq!(app.api.journal_total().await, events);

    app.stop().await;
}

#[tokio::test]
async fn the_overdue_digest_goes_to_the_csm_team_once_per_occurrence() {
    let mut config = ConfigDir::new();
    // Every minute: the occurrence at or before start is caught up at
    // start, so the digest is queued without waiting for the clock.
    config.extra = format!("{FEEDBACK}\n[schedules]\nsip_digest = \"* * * * *\"\n");
    let app = TestApp::start(config).await;

    // Nothing overdue: the manual digest queues nothing.
    let none = app.api.admin_post("/api/v1/sip/digest").await;
    assert_eq!(none.status, 200, "{}", none.text);
    assert_eq!(none.json["queued"], 0);

    let created = app
        .api
        .admin_post_json(
            "/api/v1/sip",
            &json!({"customer": "acme", "title": "Fix the <b>VPN</b> flaps", "owner": "Bob",
                    "target_date": "2026-01-15", "author": "jane"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let patched = app
        .api
        .http
        .patch(app.api.url("/api/v1/sip/SIP-1"))
        .bearer_auth(common::ADMIN_TOKEN)
        .json(&json!({"status": "in-progress", "author": "jane"}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(patched.status(), 200);

    let queued = app.api.admin_post("/api/v1/sip/digest").await;
    assert_eq!(queued.status, 200, "{}", queued.text);
    assert_eq!(queued.json["queued"], 1);
    let digests = async |app: &TestApp| {
        let reply = app.api.admin_get("/api/v1/outbox").await;
        reply.json["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["kind"] == "sip_digest")
            .cloned()
            .collect::<Vec<_>>()
    };
    // The manual digest's occurrence is now, to the nanosecond; the
    // schedule's are whole minutes, and one may come due meanwhile.
    let found: Vec<Value> = digests(&app)
        .await
        .into_iter()
        .filter(|m| !m["key"].as_str().unwrap().contains(":00+00:00/"))
        .collect();
    assert_eq!(found.len(), 1);
    let digest = &found[0];
    assert_eq!(digest["to"], "CSM team <csm-team@example.net>");
    assert_eq!(digest["customer"], Value::Null);
    let subject = digest["subject"].as_str().unwrap();
    assert!(
        subject.starts_with("SIP: 1 overdue action for 1 customer ("),
        "{subject}"
    );
    let id = digest["id"].as_str().unwrap();
    let full = app.api.admin_get(&format!("/api/v1/outbox/{id}")).await;
    let text = full.json["text"].as_str().unwrap();
    assert!(text.contains("ACME Logistics SAS (acme)"), "{text}");
    assert!(text.contains("SIP-1  Fix the <b>VPN</b> flaps"), "{text}");
    assert!(text.contains("owner Bob, target 2026-01-15"), "{text}");
    let html = full.json["html"].as_str().unwrap();
    assert!(
        html.contains("Fix the &lt;b&gt;VPN&lt;&#x2f;b&gt; flaps"),
        "{html}"
    );

    // The scheduled run of this minute happened at start, with nothing
    // overdue. After a restart the latest occurrence is caught up: the
    // digest is queued for it, keyed by it (a whole minute).
    let app = app.restart().await;
    let scheduled = |found: &[Value]| {
        found
            .iter()
            .filter(|m| m["key"].as_str().unwrap().contains(":00+00:00/"))
            .count()
    };
    wait_until("the digest of the schedule", PATIENCE, || async {
        scheduled(&digests(&app).await) >= 1
    })
    .await;
    app.stop().await;
}

/// The instance of the SIP tests: accounts, incidents, problems and their
/// tasks.
async fn rca_instance() -> Simulator {
    Simulator::builder()
        .table("customer_account", &["number", "name"])
        .table("incident", itsm::INCIDENT_FIELDS)
        .table("problem", itsm::PROBLEM_FIELDS)
        .table(
            "problem_task",
            &[
                "number",
                "problem",
                "state",
                "short_description",
                "assigned_to",
                "due_date",
                "closed_at",
            ],
        )
        .basic_user(itsm::USER, itsm::PASSWORD)
        .now(itsm::INSTANCE_NOW)
        .start()
        .await
}

#[tokio::test]
async fn rca_action_items_become_one_action_per_customer_and_close_with_their_task() {
    let sn = rca_instance().await;
    let account = sn.insert(
        "customer_account",
        json!({"number": "ACME-001", "name": "ACME", "sys_updated_on": at(1)}),
    );
    // A problem of ACME's account, and one without an account on a CI
    // that ACME's install base holds.
    let by_account = sn.insert(
        "problem",
        json!({"number": "PRB0001", "state": "103", "short_description": "Core switch reboots",
               "cause_notes": "Firmware bug", "company": account, "sys_updated_on": at(2)}),
    );
    let by_ci = sn.insert(
        "problem",
        json!({"number": "PRB0002", "state": "103", "cmdb_ci": "vpn-gw-7", "sys_updated_on": at(3)}),
    );
    let task = |number: &str, problem: &str, extra: Value| {
        let mut fields = json!({"number": number, "problem": problem, "state": "151",
                                "sys_updated_on": at(10)});
        for (k, v) in extra.as_object().unwrap() {
            fields[k] = v.clone();
        }
        sn.insert("problem_task", fields)
    };
    let upgrade = task(
        "PTASK0001",
        &by_account,
        json!({"short_description": "Upgrade the firmware", "assigned_to": "Bob Martin",
               "due_date": "2026-12-01 10:00:00"}),
    );
    task(
        "PTASK0002",
        &by_account,
        json!({"short_description": "Add a watchdog alert"}),
    );
    task("PTASK0003", &by_ci, json!({}));
    // A task closed before csmd ever saw it is history, not an action.
    task(
        "PTASK0004",
        &by_account,
        json!({"state": "157", "closed_at": "2026-11-19 10:00:00"}),
    );

    let config = Connector::new(&sn)
        .streams(&["accounts", "problems", "problem_tasks"])
        .config();
    std::fs::write(
        config.customers_dir().join("acme.toml"),
        "id = \"acme\"\nname = \"ACME Logistics SAS\"\ntime_zone = \"Europe/Paris\"\n\
         itsm_account = \"ACME-001\"\n\n[[install_base]]\nci = \"vpn-gw-7\"\n",
    )
    .expect("customer file");
    let app = TestApp::start(config).await;
    first_sync(&app.api).await;

    wait_until("three RCA actions", PATIENCE, || async {
        actions(&app.api, "?source=rca").await.len() == 3
    })
    .await;
    let created = actions(&app.api, "").await;
    let summary: Vec<(Value, Value, Value, Value)> = created
        .iter()
        .map(|a| {
            (
                a["title"].clone(),
                a["links"]["problem"].clone(),
                a["owner"].clone(),
                a["target_date"].clone(),
            )
        })
        .collect();
    // Ordered by the engine's reading order: by sys_updated_on, then sys_id.
    let mut expected = vec![
        (
            json!("Upgrade the firmware"),
            json!("PRB0001"),
            json!("Bob Martin"),
            json!("2026-12-01"),
        ),
        (
            json!("Add a watchdog alert"),
            json!("PRB0001"),
            Value::Null,
            Value::Null,
        ),
        (
            json!("RCA action PTASK0003"),
            json!("PRB0002"),
            Value::Null,
            Value::Null,
        ),
    ];
    let mut got = summary.clone();
    got.sort_by_key(|s| s.0.to_string());
    expected.sort_by_key(|s| s.0.to_string());
    assert_eq!(got, expected);
    let upgrade_action = created
        .iter()
        .find(|a| a["links"]["problem_task"] == "PTASK0001")
        .unwrap();
    assert_eq!(upgrade_action["customer"], "acme");
    assert!(
        upgrade_action["description"]
            .as_str()
            .unwrap()
            .contains("Root cause: Firmware bug"),
        "{upgrade_action}"
    );
    let id = upgrade_action["id"].as_str().unwrap().to_string();

    // A re-sync makes no second action.
    sync_now(&app.api).await;
    // The task closes in the ITSM: the action is done, with a note.
    sn.update(
        "problem_task",
        &upgrade,
        json!({"state": "157", "closed_at": "2026-11-20 16:00:00", "sys_updated_on": at(500)}),
    );
    sync_now(&app.api).await;
    wait_until("the action closed with its task", PATIENCE, || async {
        app.api.admin_get(&format!("/api/v1/sip/{id}")).await.json["status"] == "done"
    })
    .await;
    let closed = app.api.admin_get(&format!("/api/v1/sip/{id}")).await.json;
    assert_eq!(
        closed["updates"][0]["text"],
        "PTASK0001 was closed in the ITSM"
    );
    assert_eq!(closed["updates"][0]["author"], "csmd");
    assert_eq!(actions(&app.api, "").await.len(), 3);
    assert_eq!(actions(&app.api, "?status=done").await.len(), 1);

    app.stop().await;
}

/// `days` ago (from the real clock: the chronic window ends now), as the
/// instance writes datetimes.
fn days_ago(days: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(days))
        .format(sim::servicenow::DATETIME_FORMAT)
        .to_string()
}

#[tokio::test]
async fn repeated_incidents_on_a_customers_ci_make_one_chronic_action() {
    let sn = rca_instance().await;
    let incident = |number: &str, ci: &str, opened_days_ago: i64, updated: i64| {
        sn.insert(
            "incident",
            json!({"number": number, "priority": "3", "state": "6", "cmdb_ci": ci,
                   "short_description": format!("{ci} down"),
                   "opened_at": days_ago(opened_days_ago), "sys_updated_on": at(updated)}),
        )
    };
    // Two recent incidents on ACME's switch, one older than the window, and
    // three on a CI ACME does not use.
    incident("INC0000001", "core-sw-9", 40, 1);
    incident("INC0000002", "core-sw-9", 10, 2);
    incident("INC0000003", "core-sw-9", 5, 3);
    for n in 4..=6 {
        incident(&format!("INC000000{n}"), "other-sw", 3, n);
    }
    let config = Connector::new(&sn)
        .streams(&["incidents", "problems", "problem_tasks"])
        .config();
    std::fs::write(
        config.customers_dir().join("acme.toml"),
        "id = \"acme\"\nname = \"ACME Logistics SAS\"\ntime_zone = \"Europe/Paris\"\n\n\
         [[install_base]]\nci = \"core-sw-9\"\n\n\
         [contract.chronic_incidents]\ncount = 3\nwindow = \"30d\"\n",
    )
    .expect("customer file");
    let app = TestApp::start(config).await;
    first_sync(&app.api).await;

    // A third recent one on the switch: chronic.
    incident("INC0000007", "core-sw-9", 1, 10);
    sync_now(&app.api).await;
    wait_until("the chronic action", PATIENCE, || async {
        !actions(&app.api, "?source=chronic-incident")
            .await
            .is_empty()
    })
    .await;
    let chronic = actions(&app.api, "?source=chronic-incident").await;
    assert_eq!(chronic.len(), 1, "{chronic:?}");
    let action = &chronic[0];
    assert_eq!(action["customer"], "acme");
    assert_eq!(action["title"], "Chronic incidents on core-sw-9");
    assert_eq!(
        action["links"]["incidents"],
        json!(["INC0000002", "INC0000003", "INC0000007"])
    );
    let description = action["description"].as_str().unwrap();
    assert!(
        description.starts_with("3 incidents on core-sw-9 within 30 days:\n- INC0000002 opened "),
        "{description}"
    );

    // A fourth while the action is open makes no second one. The RCA
    // action of the same sync is the barrier: the incidents applied before
    // it were counted in the same run.
    incident("INC0000008", "core-sw-9", 0, 20);
    let problem = sn.insert(
        "problem",
        json!({"number": "PRB0000009", "cmdb_ci": "core-sw-9", "sys_updated_on": at(21)}),
    );
    sn.insert(
        "problem_task",
        json!({"number": "PTASK0000009", "problem": problem, "state": "151",
               "short_description": "Replace the switch", "sys_updated_on": at(22)}),
    );
    sync_now(&app.api).await;
    wait_until("the barrier's RCA action", PATIENCE, || async {
        !actions(&app.api, "?source=rca").await.is_empty()
    })
    .await;
    assert_eq!(
        actions(&app.api, "?source=chronic-incident").await.len(),
        1,
        "a second chronic action for the same incidents"
    );
    app.stop().await;
}
