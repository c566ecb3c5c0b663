//! The monthly service report: a fixture month computed by hand and
//! compared to the minute (availability with overlapping outages and an
//! approved maintenance window, breaches, MTTR, credits, the rounding
//! rule), an incident across the month boundary, a month with a daylight
//! saving change, on-hold time, content by subscription, the schedule's
//! exactly-once across restarts, missed runs and clock changes (the clock
//! is a parameter: nothing sleeps), and the e-mail a real SMTP server
//! (aiosmtpd) receives with its inline charts and CSV attachment.

mod common;

use chrono::{DateTime, Utc};
use common::{ConfigDir, PATIENCE, SmtpServer, TestApp, wait_until};
use csmd::config::Customer;
use csmd::model::integrity::{IntegrityIssue, IssueStatus, Rule};
use csmd::model::itsm::{Change, ChangeState, Incident, IncidentState, ItsmRecord};
use csmd::notify::templates::{Branding, Templates};
use csmd::report::compute::{self, BreachKind, MonthFigures};
use csmd::report::period::Month;
use csmd::report::{Preview, ReportError, Reporter};
use csmd::store::Store;
use csmd::store::outbox::StateChange;
use serde_json::json;

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("an RFC 3339 instant")
}

fn month(text: &str) -> Month {
    text.parse().expect("YYYY-MM")
}

/// ACME in Paris: IP-VPN through its router, Internet through its
/// firewall; P1 15 min / 4 h, P2 30 min / 8 h, P3 4 h / 24 h, P4 20 min /
/// 2 h; credits 5 % under 99.9, 10 % under 99.5, 25 % under 99.
const ACME: &str = r#"
id = "acme"
name = "ACME Logistics SAS"
time_zone = "Europe/Paris"
subscriptions = SUBSCRIPTIONS

[[contact]]
name = "Rita Reports"
email = "rita@acme.example"
roles = ["reports"]

[[contact]]
name = "Alan Accounts"
email = "alan@acme.example"
roles = ["accounting"]

[[contact]]
name = "Paula Primary"
email = "paula@acme.example"
roles = ["primary", "maintenance"]

[contract]
availability_target = 99.9
report_to_accounting = true
response = { P1 = "15m", P2 = "30m", P3 = "4h", P4 = "20m" }
resolution = { P1 = "4h", P2 = "8h", P3 = "24h", P4 = "2h" }
service_credit = [
  { below = 99.9, credit_percent = 5.0 },
  { below = 99.5, credit_percent = 10.0 },
  { below = 99.0, credit_percent = 25.0 },
]

[[install_base]]
ci = "rtr-par-1"
service = "IP-VPN"

[[install_base]]
ci = "fw-1"
service = "Internet"
"#;

const GLOBEX: &str = r#"
id = "globex"
name = "Globex"
time_zone = "America/New_York"

[[contact]]
name = "Gary Globex"
email = "gary@globex.example"
roles = ["reports"]

[[install_base]]
ci = "gw-ny-1"
service = "Internet"
"#;

fn acme(subscriptions: &str) -> Customer {
    toml::from_str(&ACME.replace("SUBSCRIPTIONS", subscriptions)).expect("the ACME file")
}

fn customers(subscriptions: &str) -> Vec<Customer> {
    vec![
        acme(subscriptions),
        toml::from_str(GLOBEX).expect("the Globex file"),
    ]
}

fn templates() -> Templates {
    Templates::load(
        None,
        Branding {
            name: "Example Networks".into(),
            ..Branding::default()
        },
    )
    .expect("the embedded templates")
}

fn from() -> lettre::message::Mailbox {
    "Example Networks CSM <csm@example.net>"
        .parse()
        .expect("a mailbox")
}

struct Inc {
    number: &'static str,
    priority: u8,
    major: bool,
    ci: Option<&'static str>,
    service: Option<&'static str>,
    opened: &'static str,
    responded: Option<&'static str>,
    resolved: Option<&'static str>,
    on_hold_minutes: i64,
    state: IncidentState,
}

impl Inc {
    fn new(number: &'static str, priority: u8, opened: &'static str) -> Inc {
        Inc {
            number,
            priority,
            major: false,
            ci: None,
            service: None,
            opened,
            responded: None,
            resolved: None,
            on_hold_minutes: 0,
            state: IncidentState::InProgress,
        }
    }

    fn record(self) -> ItsmRecord {
        let resolved = self.resolved.map(at);
        ItsmRecord::Incident(Incident {
            id: format!("sys-{}", self.number),
            number: self.number.into(),
            priority: Some(self.priority),
            state: if resolved.is_some() && self.state == IncidentState::InProgress {
                IncidentState::Resolved
            } else {
                self.state
            },
            short_description: Some(format!("{} summary", self.number)),
            opened_at: Some(at(self.opened)),
            responded_at: self.responded.map(at),
            resolved_at: resolved,
            closed_at: None,
            on_hold_seconds: (self.on_hold_minutes > 0).then_some(self.on_hold_minutes * 60),
            ci: self.ci.map(str::to_string),
            service: self.service.map(str::to_string),
            account: None,
            company: None,
            major: self.major,
            updated_at: at("2026-12-01T00:00:00Z"),
        })
    }
}

fn change(
    number: &str,
    ci: &str,
    state: ChangeState,
    change_type: &str,
    window: (&str, &str),
    close_code: Option<&str>,
) -> ItsmRecord {
    let closed = matches!(state, ChangeState::Closed | ChangeState::Review);
    ItsmRecord::Change(Change {
        id: format!("sys-{number}"),
        number: number.into(),
        state,
        change_type: Some(change_type.into()),
        short_description: Some(format!("{number} work")),
        planned_start: Some(at(window.0)),
        planned_end: Some(at(window.1)),
        work_start: closed.then(|| at(window.0)),
        work_end: closed.then(|| at(window.1)),
        close_code: close_code.map(str::to_string),
        closed_at: closed.then(|| at(window.1)),
        ci: Some(ci.into()),
        billable: false,
        customer_requested: false,
        updated_at: at("2026-12-01T00:00:00Z"),
    })
}

/// November 2026 in Paris (UTC+1 all month, 43,200 minutes). The
/// expected figures are worked out in the test below.
fn november() -> Vec<ItsmRecord> {
    vec![
        // P1 on IP-VPN through its CI: 90 min outage, both targets met.
        Inc {
            ci: Some("rtr-par-1"),
            responded: Some("2026-11-03T10:10:00Z"),
            resolved: Some("2026-11-03T11:30:00Z"),
            ..Inc::new("INC001", 1, "2026-11-03T10:00:00Z")
        }
        .record(),
        // Major P1 on IP-VPN 09:00-14:30: response 40 min (breach by 25),
        // resolution 330 - 60 on hold = 270 min (breach by 30).
        Inc {
            major: true,
            service: Some("IP-VPN"),
            responded: Some("2026-11-10T09:40:00Z"),
            resolved: Some("2026-11-10T14:30:00Z"),
            on_hold_minutes: 60,
            ..Inc::new("INC002", 1, "2026-11-10T09:00:00Z")
        }
        .record(),
        // Major P2 on IP-VPN 14:00-15:00, overlapping INC002 and inside
        // the approved maintenance window 14:00-16:00: no outage minute of
        // its own.
        Inc {
            major: true,
            ci: Some("rtr-par-1"),
            responded: Some("2026-11-10T14:05:00Z"),
            resolved: Some("2026-11-10T15:00:00Z"),
            ..Inc::new("INC003", 2, "2026-11-10T14:00:00Z")
        }
        .record(),
        // P1 on Internet across the month boundary: opened 31 Oct 23:30
        // Paris, resolved 1 Nov 02:00 Paris; 120 of its 150 min are in
        // November; responded in October (not measured in November).
        Inc {
            ci: Some("fw-1"),
            responded: Some("2026-10-31T22:40:00Z"),
            resolved: Some("2026-11-01T01:00:00Z"),
            ..Inc::new("INC004", 1, "2026-10-31T22:30:00Z")
        }
        .record(),
        // P3: 28 h elapsed, 6 h on hold: 22 h resolution, within 24 h only
        // because on-hold time does not count.
        Inc {
            service: Some("Internet"),
            responded: Some("2026-11-20T08:30:00Z"),
            resolved: Some("2026-11-21T12:00:00Z"),
            on_hold_minutes: 360,
            ..Inc::new("INC005", 3, "2026-11-20T08:00:00Z")
        }
        .record(),
        // P3 still open at the end of the month.
        Inc {
            ci: Some("fw-1"),
            ..Inc::new("INC006", 3, "2026-11-29T10:00:00Z")
        }
        .record(),
        // Cancelled: counts nowhere.
        Inc {
            ci: Some("fw-1"),
            state: IncidentState::Canceled,
            ..Inc::new("INC007", 2, "2026-11-12T10:00:00Z")
        }
        .record(),
        // Another customer's P1.
        Inc {
            ci: Some("gw-ny-1"),
            resolved: Some("2026-11-05T12:00:00Z"),
            ..Inc::new("INC008", 1, "2026-11-05T10:00:00Z")
        }
        .record(),
        // P4, the rounding rule: response 20 min 29 s is 20 min (met);
        // resolution 120 min 30 s is 121 min (one minute over 2 h).
        Inc {
            ci: Some("fw-1"),
            responded: Some("2026-11-25T10:20:29Z"),
            resolved: Some("2026-11-25T12:00:30Z"),
            ..Inc::new("INC009", 4, "2026-11-25T10:00:00Z")
        }
        .record(),
        change(
            "CHG001",
            "rtr-par-1",
            ChangeState::Closed,
            "normal",
            ("2026-11-10T14:00:00Z", "2026-11-10T16:00:00Z"),
            Some("successful"),
        ),
        change(
            "CHG002",
            "fw-1",
            ChangeState::Closed,
            "emergency",
            ("2026-11-15T02:00:00Z", "2026-11-15T03:00:00Z"),
            Some("unsuccessful"),
        ),
        change(
            "CHG003",
            "gw-ny-1",
            ChangeState::Closed,
            "normal",
            ("2026-11-16T02:00:00Z", "2026-11-16T03:00:00Z"),
            Some("successful"),
        ),
        change(
            "CHG004",
            "fw-1",
            ChangeState::Scheduled,
            "normal",
            ("2026-12-05T21:00:00Z", "2026-12-05T23:00:00Z"),
            None,
        ),
        change(
            "CHG005",
            "fw-1",
            ChangeState::Canceled,
            "normal",
            ("2026-11-18T21:00:00Z", "2026-11-18T23:00:00Z"),
            None,
        ),
    ]
}

/// SIP actions: one overdue from October, one opened in November, one
/// opened and completed in November.
fn sip_actions(store: &Store) {
    let new = |title: &str, owner: &str, target: &str| -> csmd::model::sip::NewSip {
        serde_json::from_value(json!({
            "customer": "acme", "title": title, "owner": owner, "target_date": target,
        }))
        .expect("a new action")
    };
    let (old, _) = store
        .create_sip(
            new("Router redundancy", "Alice", "2026-11-15"),
            at("2026-10-05T09:00:00Z"),
        )
        .expect("create");
    store
        .create_sip(
            new("Monitoring review", "Bob", "2026-12-20"),
            at("2026-11-12T09:00:00Z"),
        )
        .expect("create");
    let (done, _) = store
        .create_sip(
            new("Firewall rules audit", "Carol", "2026-11-25"),
            at("2026-11-02T09:00:00Z"),
        )
        .expect("create");
    let status = |s: &str| -> csmd::model::sip::SipPatch {
        serde_json::from_value(json!({ "status": s })).expect("a patch")
    };
    store
        .update_sip(&old.id, |a| {
            a.apply(status("in-progress"), at("2026-10-06T09:00:00Z"))
        })
        .expect("update");
    store
        .update_sip(&done.id, |a| {
            a.apply(status("done"), at("2026-11-20T09:00:00Z"))
        })
        .expect("update");
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    customers: Vec<Customer>,
    templates: Templates,
    from: lettre::message::Mailbox,
}

impl Fixture {
    fn new(subscriptions: &str, records: Vec<ItsmRecord>) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("store")).expect("open the store");
        store.apply_itsm(&records).expect("apply the records");
        Fixture {
            _dir: dir,
            store,
            customers: customers(subscriptions),
            templates: templates(),
            from: from(),
        }
    }

    fn reporter(&self) -> Reporter<'_> {
        Reporter {
            customers: &self.customers,
            default_time_zone: chrono_tz::Tz::UTC,
            templates: &self.templates,
            from: &self.from,
        }
    }

    /// ACME's report of November 2026, as previewed on 1 December.
    fn acme_november_preview(&self) -> Preview {
        self.reporter()
            .preview(
                &self.store,
                "acme",
                month("2026-11"),
                at("2026-12-01T06:00:00Z"),
            )
            .unwrap()
    }

    fn figures(&self, customer: &str, m: Month) -> MonthFigures {
        let reporter = self.reporter();
        let customer = reporter.customer(customer).expect("a customer");
        let data = reporter
            .gather(&self.store, &[(customer, m)])
            .expect("gather")
            .remove(&customer.id)
            .unwrap_or_default();
        compute::month_figures(
            &data,
            &customer.contract,
            m,
            reporter.time_zone(customer),
            at("2026-12-15T00:00:00Z"),
        )
    }
}

#[test]
fn a_fixture_month_is_computed_to_the_minute() {
    let fixture = Fixture::new("[]", november());
    let f = fixture.figures("acme", month("2026-11"));
    assert_eq!(f.minutes, 30 * 1440);

    // Availability. IP-VPN: INC001 90 min + (INC002 ∪ INC003 = 09:00-15:00,
    // 360 min, less the 60 min inside CHG001's window) = 390 min.
    // Internet: INC004's 120 November minutes.
    let service = |name: &str| {
        f.services
            .iter()
            .find(|s| s.service == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let vpn = service("IP-VPN");
    assert_eq!((vpn.outage_minutes, vpn.maintenance_minutes), (390, 60));
    assert_eq!(compute::percent_text(vpn.availability), "99.097"); // 42810/43200
    assert!(!vpn.met);
    assert_eq!(vpn.credit_percent, Some(10.0)); // under 99.5, not under 99
    let internet = service("Internet");
    assert_eq!(
        (internet.outage_minutes, internet.maintenance_minutes),
        (120, 0)
    );
    assert_eq!(compute::percent_text(internet.availability), "99.722"); // 43080/43200
    assert_eq!(internet.credit_percent, Some(5.0));

    // Counts: opened in November (INC004 was opened in October, INC007
    // was cancelled, INC008 is Globex's).
    assert_eq!(f.opened, 6);
    let by = |p: &str| {
        f.priorities
            .iter()
            .find(|r| format!("{:?}", r.priority) == p)
            .unwrap_or_else(|| panic!("no {p} row"))
    };
    assert_eq!(
        [
            by("P1").opened,
            by("P2").opened,
            by("P3").opened,
            by("P4").opened
        ],
        [2, 1, 2, 1]
    );
    // Resolved in November: INC001 90, INC002 270, INC003 60, INC004 150,
    // INC005 1320 min, INC009 120.5 min: 120,630 s / 6 = 335.08 min.
    assert_eq!(f.resolved, 6);
    assert_eq!(f.mttr_minutes, Some(335));
    // P1: (90 + 270 + 150) / 3 = 170 min.
    assert_eq!(by("P1").mttr_minutes, Some(170));
    assert_eq!(by("P3").mttr_minutes, Some(1320));

    // Response: measured for INC001, 002, 003, 005, 009 (INC004 responded
    // in October): 4 of 5 within. Resolution: 4 of 6 within, 66.666 %
    // (truncated, not rounded up).
    assert_eq!((f.response.measured, f.response.met), (5, 4));
    assert_eq!((f.resolution.measured, f.resolution.met), (6, 4));
    assert_eq!(
        compute::percent_text(f.response.percent().unwrap()),
        "80.000"
    );
    assert_eq!(
        compute::percent_text(f.resolution.percent().unwrap()),
        "66.666"
    );

    // Every breach, with its minutes.
    let breaches: Vec<_> = f
        .breaches
        .iter()
        .map(|b| {
            (
                b.number.as_str(),
                b.kind,
                b.target_minutes,
                b.actual_minutes,
                b.on_hold_minutes,
            )
        })
        .collect();
    assert_eq!(
        breaches,
        [
            ("INC002", BreachKind::Response, 15, 40, 0),
            ("INC002", BreachKind::Resolution, 240, 270, 60),
            ("INC009", BreachKind::Resolution, 120, 121, 0),
        ]
    );
}

#[test]
fn on_hold_time_does_not_count_against_resolution() {
    let fixture = Fixture::new("[]", november());
    let f = fixture.figures("acme", month("2026-11"));
    // INC005 took 28 h with 6 h on hold: 22 h against a 24 h target.
    let p3 = f
        .priorities
        .iter()
        .find(|r| r.priority == csmd::config::customer::Priority::P3)
        .expect("a P3 row");
    assert_eq!((p3.resolution.measured, p3.resolution.met), (1, 1));
    assert!(!f.breaches.iter().any(|b| b.number == "INC005"));

    // The same incident without its on-hold time is a breach of 240 min.
    let mut records = november();
    for record in &mut records {
        if let ItsmRecord::Incident(i) = record
            && i.number == "INC005"
        {
            i.on_hold_seconds = None;
        }
    }
    let f = Fixture::new("[]", records).figures("acme", month("2026-11"));
    let breach = f
        .breaches
        .iter()
        .find(|b| b.number == "INC005")
        .expect("INC005 breaches without on-hold time");
    assert_eq!((breach.target_minutes, breach.actual_minutes), (1440, 1680));
}

#[test]
fn an_incident_across_the_month_boundary_counts_in_each_month_for_its_minutes() {
    let fixture = Fixture::new("[]", november());
    // October keeps INC004's first 30 minutes (22:30-23:00 UTC, before
    // midnight in Paris) and its response; November has its resolution.
    let october = fixture.figures("acme", month("2026-10"));
    let internet = october
        .services
        .iter()
        .find(|s| s.service == "Internet")
        .expect("Internet");
    assert_eq!(internet.outage_minutes, 30);
    assert_eq!(october.opened, 1);
    assert_eq!((october.response.measured, october.response.met), (1, 1));
    assert_eq!(october.resolved, 0);
    let november = fixture.figures("acme", month("2026-11"));
    let internet = november.services.iter().find(|s| s.service == "Internet");
    assert_eq!(internet.map(|s| s.outage_minutes), Some(120));
}

#[test]
fn a_month_with_a_daylight_saving_change_has_its_real_minutes() {
    // October 2026 in Paris ends summer time on the 25th: 44,700 minutes.
    // An incident at 00:30 on 1 October Paris time (22:30 UTC the day
    // before) is October's; one at 00:30 on 1 November Paris time (23:30
    // UTC on 31 October) is not.
    let records = vec![
        Inc {
            ci: Some("fw-1"),
            resolved: Some("2026-09-30T23:30:00Z"),
            ..Inc::new("INC101", 1, "2026-09-30T22:30:00Z")
        }
        .record(),
        Inc {
            ci: Some("fw-1"),
            resolved: Some("2026-11-01T00:30:00Z"),
            ..Inc::new("INC102", 1, "2026-10-31T23:30:00Z")
        }
        .record(),
    ];
    let fixture = Fixture::new("[]", records);
    let f = fixture.figures("acme", month("2026-10"));
    assert_eq!(f.minutes, 44_700);
    assert_eq!(f.opened, 1);
    let internet = f.services.iter().find(|s| s.service == "Internet").unwrap();
    assert_eq!(internet.outage_minutes, 60);
    // 44,640 / 44,700 = 99.86577…%
    assert_eq!(compute::percent_text(internet.availability), "99.865");
    assert!(!internet.met);

    // The report says so, in the customer's zone.
    let preview = fixture
        .reporter()
        .preview(
            &fixture.store,
            "acme",
            month("2026-10"),
            at("2026-12-01T00:00:00Z"),
        )
        .unwrap();
    assert!(preview.text.contains("44700 minutes"), "{}", preview.text);
    assert!(
        preview.text.contains("Thu 1 Oct 2026, 00:00 CEST"),
        "{}",
        preview.text
    );
    assert!(
        preview.text.contains("Sun 1 Nov 2026, 00:00 CET"),
        "{}",
        preview.text
    );
    assert!(
        preview
            .text
            .contains("Internet: 99.865 % MISSED, outage 1 h 00 min"),
        "{}",
        preview.text
    );
}

#[test]
fn the_report_text_states_the_figures_the_rule_and_every_section() {
    let fixture = Fixture::new("[]", november());
    sip_actions(&fixture.store);
    let preview = fixture.acme_november_preview();
    let text = &preview.text;
    assert_eq!(
        preview.subject,
        "Monthly service report November 2026: ACME Logistics SAS"
    );
    for fact in [
        "IP-VPN: 99.097 % MISSED, outage 6 h 30 min (and 60 min during approved maintenance, not counted)",
        "Internet: 99.722 % MISSED, outage 2 h 00 min",
        "IP-VPN: 10 % of the monthly fee (availability 99.097 %)",
        "Internet: 5 % of the monthly fee (availability 99.722 %)",
        "P1: 2 opened, 3 resolved, MTTR 2 h 50 min",
        "response   target 15 min, 1 of 2 within (50.000 %)",
        "INC002 (P1) response 40 min, target 15 min, 25 min over",
        "INC002 (P1) resolution 4 h 30 min, target 4 h 00 min, 30 min over; 1 h 00 min on hold not counted",
        "INC009 (P4) resolution 2 h 01 min, target 2 h 00 min, 1 min over",
        "6 opened, 6 resolved, mean time to resolve 5 h 35 min",
        "2 carried out: 1 successful, 0 with issues, 1 unsuccessful; 1 emergency.",
        "CHG002 CHG002 work, ended Sun 15 Nov 2026, 04:00 CET: unsuccessful (emergency)",
        "Planned maintenance in December 2026:",
        "CHG004 CHG004 work, Sat 5 Dec 2026, 22:00 – Sun 6 Dec 2026, 00:00 CET (Europe/Paris) (Internet)",
        "2 opened, 1 completed, 1 overdue, 2 open at the end of the month.",
        "SIP-1 Router redundancy; owner Alice, target 2026-11-15, 16 days late",
        "SIP-3 Firewall rules audit; owner Carol, target 2026-11-25",
        "No open data-integrity issues.",
        "rounded to the nearest whole minute (30 seconds and more round up)",
        "Percentages are truncated, never rounded up, to three decimals.",
        "incidents-acme-2026-11.csv",
    ] {
        assert!(text.contains(fact), "the text lacks {fact:?}:\n{text}");
    }
    assert!(!text.contains("CHG003"), "Globex's change:\n{text}");
    assert!(!text.contains("CHG005"), "a cancelled change:\n{text}");
    assert!(!text.contains("TRENDING"));
    assert!(!text.contains("INCIDENT DETAILS"));
    assert!(preview.charts.is_empty());

    // The CSV: one row per incident open in the month, by opening time.
    let mut csv = csv::Reader::from_reader(preview.csv.as_bytes());
    let rows: Vec<csv::StringRecord> = csv.records().map(|r| r.unwrap()).collect();
    let numbers: Vec<&str> = rows.iter().map(|r| &r[0]).collect();
    assert_eq!(
        numbers,
        [
            "INC004", "INC001", "INC002", "INC003", "INC007", "INC005", "INC009", "INC006"
        ]
    );
    let headers = csv.headers().unwrap().clone();
    let field = |row: &csv::StringRecord, name: &str| {
        let i = headers.iter().position(|h| h == name).unwrap();
        row[i].to_string()
    };
    let inc002 = &rows[2];
    assert_eq!(field(inc002, "opened_at"), "2026-11-10T10:00:00+01:00");
    assert_eq!(field(inc002, "resolution_minutes"), "270");
    assert_eq!(field(inc002, "on_hold_minutes"), "60");
    assert_eq!(field(inc002, "resolution_met"), "no");
    assert_eq!(field(inc002, "service"), "IP-VPN");
    assert_eq!(field(&rows[6], "resolution_minutes"), "121");
}

/// An integrity issue of `customer` with `status`, stored as the
/// reconciler stores it.
fn integrity_issue(rule: Rule, subject: &str, customer: &str, status: IssueStatus) -> StateChange {
    let first_seen = at("2026-11-03T23:30:00Z");
    let issue = IntegrityIssue {
        key: format!("{rule}/{subject}"),
        rule,
        subject: subject.into(),
        customer: Some(customer.parse().unwrap()),
        status,
        evidence: Default::default(),
        first_seen,
        last_seen: first_seen,
        opened_at: (status != IssueStatus::Pending).then_some(first_seen),
        resolved_at: None,
        ticket: None,
        occurrences: 1,
    };
    StateChange::Put {
        name: issue.key.clone(),
        value: serde_json::to_vec(&issue).unwrap(),
    }
}

#[test]
fn the_customers_open_data_integrity_issues_are_listed_and_no_others() {
    let fixture = Fixture::new("[]", november());
    fixture
        .store
        .commit_integrity(
            &[
                integrity_issue(
                    Rule::CiNotBilled,
                    "rtr-par-01",
                    "acme",
                    IssueStatus::Ticketed,
                ),
                integrity_issue(Rule::ContactMissing, "acme", "acme", IssueStatus::Open),
                // Not raised yet, no longer true, or another customer's.
                integrity_issue(Rule::CiNotBilled, "fw-par-02", "acme", IssueStatus::Pending),
                integrity_issue(
                    Rule::BilledAfterDecommission,
                    "sw-old",
                    "acme",
                    IssueStatus::Resolved,
                ),
                integrity_issue(Rule::CiNotBilled, "rtr-ber-01", "globex", IssueStatus::Open),
            ],
            &[],
            at("2026-11-04T00:00:00Z"),
        )
        .unwrap();
    let preview = fixture.acme_november_preview();
    let text = &preview.text;
    // Raised at 23:30 UTC on the 3rd: the 4th in Paris.
    for line in [
        "Contact missing: acme (a customer without a required contact), open since 2026-11-04",
        "Not billed: rtr-par-01 (in use in the install base but not billed), open since 2026-11-04",
    ] {
        assert!(text.contains(line), "the text lacks {line:?}:\n{text}");
    }
    for other in [
        "fw-par-02",
        "sw-old",
        "rtr-ber-01",
        "No open data-integrity issues.",
    ] {
        assert!(!text.contains(other), "the text has {other:?}:\n{text}");
    }
    assert!(preview.html.contains("open since 2026-11-04"));
}

#[test]
fn subscriptions_decide_the_content() {
    let now = at("2026-12-01T06:00:00Z");
    // Extended Service Delivery: trending over six months with four
    // charts, inline by Content-ID.
    let fixture = Fixture::new(r#"["extended-service-delivery"]"#, november());
    let reporter = fixture.reporter();
    let customer = reporter.customer("acme").unwrap();
    let data = reporter
        .gather(&fixture.store, &[(customer, month("2026-11"))])
        .unwrap()
        .remove(&customer.id)
        .unwrap();
    let report = reporter
        .report(customer, month("2026-11"), &data, now, true)
        .unwrap();
    let inline: Vec<_> = report
        .attachments
        .iter()
        .filter(|a| a.is_inline())
        .collect();
    assert_eq!(inline.len(), 4);
    let rendered = reporter.render(&report, Some("Rita Reports")).unwrap();
    for part in &inline {
        assert_eq!(part.content_type, "image/png");
        assert!(part.data.starts_with(b"\x89PNG"));
        let cid = part.content_id.as_deref().unwrap();
        assert!(cid.ends_with(".acme.2026-11@example.net"), "{cid}");
        assert!(
            rendered.html.contains(&format!("src=\"cid:{cid}\"")),
            "{cid} not in the HTML"
        );
    }
    assert!(rendered.text.contains("TRENDING"));
    assert!(rendered.text.contains("2026-05:"), "{}", rendered.text);
    assert!(
        rendered.text.contains("2026-11: availability 99.097 %"),
        "{}",
        rendered.text
    );
    assert!(!rendered.text.contains("INCIDENT DETAILS"));
    let files: Vec<_> = report
        .attachments
        .iter()
        .filter(|a| !a.is_inline())
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].filename, "incidents-acme-2026-11.csv");

    // Extended Service Support: the incident list, no charts.
    let fixture = Fixture::new(r#"["extended-service-support"]"#, november());
    let preview = fixture
        .reporter()
        .preview(&fixture.store, "acme", month("2026-11"), now)
        .unwrap();
    assert!(preview.charts.is_empty());
    assert!(preview.text.contains("INCIDENT DETAILS"));
    assert!(
        preview.text.contains("INC002 P1 major, resolved, IP-VPN"),
        "{}",
        preview.text
    );
    assert!(
        preview.text.contains("(4 h 30 min, 1 h 00 min on hold)"),
        "{}",
        preview.text
    );
    assert!(!preview.text.contains("INC008"));
    assert!(preview.html.contains("Incident details"));

    // Both: charts as data: URIs in a preview.
    let fixture = Fixture::new(
        r#"["extended-service-delivery", "extended-service-support"]"#,
        november(),
    );
    let preview = fixture
        .reporter()
        .preview(&fixture.store, "acme", month("2026-11"), now)
        .unwrap();
    assert_eq!(preview.charts.len(), 4);
    assert_eq!(
        preview
            .html
            .matches("src=\"data:image&#x2f;png;base64,")
            .count(),
        4
    );
    assert!(preview.text.contains("INCIDENT DETAILS"));
}

#[test]
fn recipients_are_the_reports_contacts_and_accounting_when_the_contract_says_so() {
    let fixture = Fixture::new("[]", november());
    let reporter = fixture.reporter();
    let names = |c: &Customer| -> Vec<String> {
        reporter
            .recipients(c)
            .iter()
            .map(|c| c.email.clone())
            .collect()
    };
    let mut customer = acme("[]");
    assert_eq!(names(&customer), ["rita@acme.example", "alan@acme.example"]);
    customer.contract.report_to_accounting = false;
    assert_eq!(names(&customer), ["rita@acme.example"]);
}

/// The schedule's store, opened again as a restart would.
fn reopen(fixture: Fixture) -> Fixture {
    let Fixture {
        _dir,
        store,
        customers,
        templates,
        from,
    } = fixture;
    drop(store);
    let store = Store::open(&_dir.path().join("store")).expect("reopen the store");
    Fixture {
        _dir,
        store,
        customers,
        templates,
        from,
    }
}

fn cron(expr: &str) -> cron::Schedule {
    expr.parse::<csmd::config::value::CronExpr>()
        .expect("a cron expression")
        .schedule
}

#[test]
fn the_schedule_queues_each_report_once_across_restarts_missed_runs_and_clock_changes() {
    let monthly = cron("0 7 1 * *");
    let queued_now = |f: &Fixture, now: &str| -> Vec<String> {
        let reporter = f.reporter();
        let before: std::collections::BTreeSet<String> = f
            .store
            .outbox_overview(&Default::default(), 10_000)
            .unwrap()
            .0
            .into_iter()
            .map(|m| m.key)
            .collect();
        reporter
            .run_schedule(&f.store, &monthly, at(now), &|_| {})
            .unwrap();
        let mut after: Vec<String> = f
            .store
            .outbox_overview(&Default::default(), 10_000)
            .unwrap()
            .0
            .into_iter()
            .map(|m| m.key)
            .filter(|k| !before.contains(k))
            .collect();
        after.sort();
        after
    };

    let fixture = Fixture::new("[]", november());
    // 06:59 Paris on 1 December: not yet.
    assert!(queued_now(&fixture, "2026-12-01T05:59:00Z").is_empty());
    // 07:00 Paris: ACME's November report to its reports and accounting
    // contacts. Globex (New York) is still on 30 November.
    assert_eq!(
        queued_now(&fixture, "2026-12-01T06:00:00Z"),
        [
            "report/acme/2026-11/alan@acme.example",
            "report/acme/2026-11/rita@acme.example"
        ]
    );
    // Checked again a minute later, and after a restart: nothing more.
    assert!(queued_now(&fixture, "2026-12-01T06:01:00Z").is_empty());
    let fixture = reopen(fixture);
    assert!(queued_now(&fixture, "2026-12-01T06:30:00Z").is_empty());
    // 07:00 in New York.
    assert_eq!(
        queued_now(&fixture, "2026-12-01T12:00:00Z"),
        ["report/globex/2026-11/gary@globex.example"]
    );
    // The clock set back a month, then forward again: nothing twice.
    assert!(queued_now(&fixture, "2026-11-01T08:00:00Z").is_empty());
    assert!(queued_now(&fixture, "2026-12-02T08:00:00Z").is_empty());
    // The next month's occurrence queues December's.
    assert_eq!(
        queued_now(&fixture, "2027-01-01T06:00:00Z"),
        [
            "report/acme/2026-12/alan@acme.example",
            "report/acme/2026-12/rita@acme.example"
        ]
    );

    // csmd down over the 1st: caught up once at start (within a week).
    let fixture = Fixture::new("[]", november());
    assert_eq!(queued_now(&fixture, "2026-12-03T10:00:00Z").len(), 3);
    let fixture = reopen(fixture);
    assert!(queued_now(&fixture, "2026-12-03T10:01:00Z").is_empty());

    // Down for longer than a week: left to `csmd report send`.
    let fixture = Fixture::new("[]", november());
    assert!(queued_now(&fixture, "2026-12-09T07:00:00Z").is_empty());
}

#[test]
fn send_refuses_a_second_time_without_force_and_an_unfinished_month() {
    let fixture = Fixture::new("[]", november());
    let reporter = fixture.reporter();
    let now = at("2026-12-02T09:00:00Z");
    let first = reporter
        .send(&fixture.store, "acme", month("2026-11"), false, now)
        .unwrap();
    assert_eq!(first.len(), 2);
    let again = reporter.send(&fixture.store, "acme", month("2026-11"), false, now);
    assert!(
        matches!(again, Err(ReportError::AlreadySent { revision: 0, .. })),
        "{again:?}"
    );
    let forced = reporter
        .send(&fixture.store, "acme", month("2026-11"), true, now)
        .unwrap();
    assert_eq!(forced.len(), 2);
    assert!(forced[0].key.contains("/r1/"), "{}", forced[0].key);
    assert!(
        first
            .iter()
            .all(|m| forced.iter().all(|f| f.message_id != m.message_id))
    );
    // The schedule then owes nothing for November.
    assert!(
        reporter
            .due(
                &fixture.store,
                &cron("0 7 1 * *"),
                at("2026-12-02T10:00:00Z")
            )
            .unwrap()
            .iter()
            .all(|d| d.customer.id.as_str() != "acme")
    );

    let unfinished = reporter.send(&fixture.store, "acme", month("2026-12"), false, now);
    assert!(
        matches!(unfinished, Err(ReportError::MonthNotOver { .. })),
        "{unfinished:?}"
    );
    let unknown = reporter.send(&fixture.store, "nobody", month("2026-11"), false, now);
    assert!(
        matches!(unknown, Err(ReportError::UnknownCustomer(_))),
        "{unknown:?}"
    );
}

/// The fixture's months are in the past: the daemon's own schedule must
/// not catch up on them while a test sends by hand (the schedule is tested
/// above with its clock given).
fn quiet_schedule(mut config: ConfigDir) -> ConfigDir {
    config.extra = "\n[schedules]\nmonthly_report = \"0 0 7 1 1 * 2099\"\n".into();
    config
}

/// The fixture a year earlier (November 2025 has the same 30 days in
/// CET), for the tests that run the daemon on the real clock, where only a
/// month that has ended can be sent.
fn november_2025() -> Vec<ItsmRecord> {
    let json = serde_json::to_string(&november()).expect("records as JSON");
    serde_json::from_str(&json.replace("2026-", "2025-")).expect("shifted records")
}

/// The daemon's store, written as the ITSM connector would.
fn apply(app: &TestApp, records: &[ItsmRecord]) {
    app.running()
        .state()
        .store
        .apply_itsm(records)
        .expect("apply records to the daemon's store");
}

#[tokio::test]
async fn a_sent_report_reaches_a_real_smtp_server_with_its_charts_inline_and_the_csv_attached() {
    let smtp = SmtpServer::start();
    let mut config = quiet_schedule(ConfigDir::new());
    config.email = format!(
        "transport = \"smtp\"\nrate = \"off\"\nretry_backoff = \"100ms\"\nretry_backoff_max = \"300ms\"\n\
         [email.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout = \"5s\"\n",
        smtp.port()
    );
    std::fs::write(
        config.customers_dir().join("acme.toml"),
        ACME.replace(
            "SUBSCRIPTIONS",
            r#"["extended-service-delivery", "extended-service-support"]"#,
        ),
    )
    .expect("write the customer");
    let app = TestApp::start(config).await;
    apply(&app, &november_2025());

    let reply = app
        .api
        .admin_post("/api/v1/reports/acme/2025-11/send")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["queued"], 2);
    let messages = smtp.wait_for_messages_async(2, PATIENCE).await;
    let rita = messages
        .iter()
        .find(|m| m.rcpt_tos == ["rita@acme.example"])
        .expect("the reports contact's copy");
    assert!(messages.iter().any(|m| m.rcpt_tos == ["alan@acme.example"]));
    assert_eq!(
        rita.subject().as_deref(),
        Some("Monthly service report November 2025: ACME Logistics SAS")
    );
    let text = rita.text_body().expect("a text part");
    assert!(text.contains("Dear Rita Reports"), "{text}");
    assert!(text.contains("IP-VPN: 99.097 % MISSED"), "{text}");
    let html = rita.html_body().expect("an HTML part");

    // Four PNG charts, each inline under the Content-ID the HTML names.
    let parsed = rita.parsed();
    use mail_parser::MimeHeaders as _;
    let images: Vec<_> = parsed
        .parts
        .iter()
        .filter(|p| {
            p.content_type()
                .is_some_and(|ct| ct.ctype() == "image" && ct.subtype() == Some("png"))
        })
        .collect();
    assert_eq!(images.len(), 4, "{:?}", rita);
    for image in &images {
        let cid = image.content_id().expect("a Content-ID");
        assert!(
            html.contains(&format!("cid:{cid}")),
            "{cid} is not in the HTML"
        );
        assert!(image.contents().starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_eq!(
            image
                .content_disposition()
                .map(|d| d.ctype().to_string())
                .as_deref(),
            Some("inline")
        );
    }
    let raw = String::from_utf8_lossy(&rita.raw);
    assert!(raw.contains("multipart/mixed"), "no mixed part");
    assert!(raw.contains("multipart/related"), "no related part");
    assert!(raw.contains("multipart/alternative"), "no alternative part");

    // The CSV attachment.
    let (content_type, csv) = rita.attachment_or_part("text/csv").expect("a CSV part");
    assert!(content_type.contains("text/csv"), "{content_type}");
    let csv = String::from_utf8(csv).expect("UTF-8 CSV");
    assert!(csv.starts_with("number,priority,state"), "{csv}");
    assert!(
        csv.contains("INC002,P1,resolved,yes,INC002 summary,IP-VPN"),
        "{csv}"
    );
    let attachment = parsed
        .attachments()
        .find(|a| a.attachment_name() == Some("incidents-acme-2025-11.csv"))
        .expect("the CSV is a named attachment");
    assert_eq!(
        attachment
            .content_disposition()
            .map(|d| d.ctype().to_string())
            .as_deref(),
        Some("attachment")
    );

    // Sent again only with force, as a new revision.
    let again = app
        .api
        .admin_post("/api/v1/reports/acme/2025-11/send")
        .await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert!(again.error().contains("--force"), "{}", again.text);
    let forced = app
        .api
        .admin_post_json(
            "/api/v1/reports/acme/2025-11/send",
            &json!({ "force": true }),
        )
        .await;
    assert_eq!(forced.status, 200, "{}", forced.text);
    let all = smtp.wait_for_messages_async(4, PATIENCE).await;
    let ids: std::collections::BTreeSet<_> = all.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(ids.len(), 4, "each revision has its own Message-ID");

    // Errors say what is wrong.
    let bad = app
        .api
        .admin_post("/api/v1/reports/acme/2026-13/send")
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let unknown = app.api.admin_get("/api/v1/reports/nobody/2026-11").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    wait_until("the outbox to be sent", PATIENCE, || async {
        app.api.admin_get("/api/v1/outbox?status=sent").await.json["counts"]["sent"] == 4
    })
    .await;
    // A message shown through the API describes its files, not their
    // bytes.
    let sent = app.api.admin_get("/api/v1/outbox?status=sent").await;
    let id = sent.json["messages"][0]["id"].as_str().unwrap().to_string();
    let shown = app.api.admin_get(&format!("/api/v1/outbox/{id}")).await;
    let files = shown.json["attachments"].as_array().unwrap();
    let csv = files
        .iter()
        .find(|f| f["content_type"] == "text/csv; charset=utf-8")
        .unwrap_or_else(|| panic!("no CSV in {files:?}"));
    assert!(csv["bytes"].as_u64().unwrap() > 0, "{csv}");
    assert!(files.iter().all(|f| f.get("data").is_none()), "{files:?}");
    app.stop().await;
}

#[tokio::test]
async fn csmd_report_render_writes_a_preview_with_its_charts_and_sends_nothing() {
    let config = quiet_schedule(ConfigDir::new());
    std::fs::write(
        config.customers_dir().join("acme.toml"),
        ACME.replace("SUBSCRIPTIONS", r#"["extended-service-delivery"]"#),
    )
    .expect("write the customer");
    let app = TestApp::start(config).await;
    apply(&app, &november_2025());
    let out = app.config.dir().join("preview").join("report.html");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let url = app.api.base.clone();
    let output = tokio::process::Command::from(common::csmd_command())
        .args([
            "report",
            "render",
            "--customer",
            "acme",
            "--month",
            "2025-11",
            "--out",
        ])
        .arg(&out)
        .args(["--url", &url])
        .env("CSMD_ADMIN_TOKEN", common::ADMIN_TOKEN)
        .output()
        .await
        .expect("run csmd report render");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("Monthly service report November 2025"),
        "{stdout}"
    );
    let html = std::fs::read_to_string(&out).expect("the HTML preview");
    assert_eq!(html.matches("src=\"data:image&#x2f;png;base64,").count(), 4);
    assert!(html.contains("99.097&nbsp;%"));
    let dir = out.parent().unwrap();
    assert!(dir.join("report.txt").exists());
    assert!(dir.join("incidents-acme-2025-11.csv").exists());
    assert!(dir.join("availability-2025-11.png").exists());
    let outbox = app.api.admin_get("/api/v1/outbox").await;
    assert_eq!(outbox.json["messages"].as_array().map(Vec::len), Some(0));
    app.stop().await;
}
