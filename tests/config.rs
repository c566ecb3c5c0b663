//! The configuration as an operator meets it. Every mistake in `csmd.toml`,
//! a customer file or a secret is reported as `file:line:column: message`,
//! all of them in one pass, and no secret value ever appears in what csmd
//! prints. The tables drive `csmd::config::load` (the loader `csmd run` and
//! `csmd check-config` share); the last tests run the real `csmd
//! check-config` and read its exit code, stdout and stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use base64::Engine as _;
use secrecy::ExposeSecret as _;

/// The connector profiles shipped in the repository; every test config dir
/// links them as `connectors/`, the default first place profiles are found.
const SHIPPED_CONNECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/connectors");
const SHIPPED_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/csmd.example.toml");

/// The shortest configuration that loads: everything else has a default.
const MINIMAL: &str = r#"
[email]
from = "Example Telecom CSM <csm@example.net>"
"#;

/// SMTP towards a relay whose CA is in `relay-ca.pem` beside `csmd.toml`.
const SMTP_WITH_CA_FILE: &str = r#"
[email]
from = "Example Telecom CSM <csm@example.net>"
transport = "smtp"

[email.smtp]
host = "smtp.example.net"
ca_file = "relay-ca.pem"
"#;

/// A customer file that is fine, for cases about other files.
const ACME: &str = r#"
id = "acme"
name = "ACME Logistics SAS"

[[contact]]
name = "Claire Martin"
email = "claire.martin@acme.example"
roles = ["primary"]
"#;

/// One operator mistake: the files as written, and exactly what csmd says,
/// with `{dir}` standing for the configuration directory.
struct Case {
    mistake: &'static str,
    csmd_toml: &'static str,
    /// Customer files, secret files, profiles: paths relative to `{dir}`.
    other_files: &'static [(&'static str, &'static str)],
    errors: &'static [&'static str],
}

/// What a case has unless it says otherwise: a valid `csmd.toml` and no
/// other file.
const CASE: Case = Case {
    mistake: "",
    csmd_toml: MINIMAL,
    other_files: &[],
    errors: &[],
};

#[test]
fn a_missing_configuration_file_is_named() {
    let dir = ConfigDir::new(&[]);
    assert_eq!(
        dir.errors(),
        ["{dir}/csmd.toml: cannot read configuration: no such file or directory"]
    );
}

#[test]
fn mistakes_in_csmd_toml_are_reported_where_they_are() {
    check(&[
        Case {
            mistake: "a section header without its closing bracket",
            csmd_toml: r#"
[daemon
listen = "127.0.0.1:8480"
"#,
            errors: &["{dir}/csmd.toml:1:8: unclosed table, expected `]`"],
            ..CASE
        },
        Case {
            mistake: "a section csmd does not have",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[smtp]
host = "smtp.example.net"
"#,
            errors: &[
                "{dir}/csmd.toml:4:2: unknown section `smtp`; expected `daemon`, `email`, `schedules`, `maintenance`, `disruptions`, `integrity`, `sip` or `connector`",
            ],
            ..CASE
        },
        Case {
            mistake: "a misspelt key in [daemon]",
            csmd_toml: r#"
[daemon]
listen_addr = "0.0.0.0:8480"

[email]
from = "Example Telecom CSM <csm@example.net>"
"#,
            errors: &[
                "{dir}/csmd.toml:2:1: unknown field `listen_addr`, expected one of `data_dir`, `listen`, `admin_token`, `time_zone`, `log_format`, `log_level`, `customers_dir`, `connector_dirs`, `max_body_bytes`, `store_cache_mib`, `max_unapplied_events`, `journal_retention`, `alert_retention`, `shutdown_grace`",
            ],
            ..CASE
        },
        Case {
            mistake: "a duration in a unit csmd does not know",
            csmd_toml: r#"
[daemon]
shutdown_grace = "5 parsecs"

[email]
from = "Example Telecom CSM <csm@example.net>"
"#,
            errors: &[
                r#"{dir}/csmd.toml:2:18: invalid duration "5 parsecs" (unknown time unit "parsecs", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)); write it like "90s", "5m" or "5d""#,
            ],
            ..CASE
        },
        Case {
            mistake: "a time zone that is not an IANA name",
            csmd_toml: r#"
[daemon]
time_zone = "Europe/Pariss"

[email]
from = "Example Telecom CSM <csm@example.net>"
"#,
            errors: &[
                r#"{dir}/csmd.toml:2:13: unknown time zone "Europe/Pariss"; use an IANA name like "Europe/Paris" or "UTC""#,
            ],
            ..CASE
        },
        Case {
            mistake: "a store cache of nothing",
            csmd_toml: r#"
[daemon]
store_cache_mib = 0

[email]
from = "Example Telecom CSM <csm@example.net>"
"#,
            errors: &["{dir}/csmd.toml:2:19: store_cache_mib must be from 1 to 65536 (MiB), not 0"],
            ..CASE
        },
        Case {
            mistake: "resolved alerts kept for less than a day",
            csmd_toml: r#"
[daemon]
alert_retention = "12h"

[email]
from = "Example Telecom CSM <csm@example.net>"
"#,
            errors: &["{dir}/csmd.toml:2:19: alert_retention must be at least 1d, not 12h"],
            ..CASE
        },
        Case {
            mistake: "a log level that is not a tracing filter",
            csmd_toml: r#"
[daemon]
log_level = "csmd=loud"

[email]
from = "Example Telecom CSM <csm@example.net>"
"#,
            errors: &[
                r#"{dir}/csmd.toml:2:13: log_level "csmd=loud" is not a tracing filter: error parsing level filter: expected one of "off", "error", "warn", "info", "debug", "trace", or a number 0-5"#,
            ],
            ..CASE
        },
        Case {
            mistake: "a send rate per fortnight",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"
rate = "10/fortnight"
"#,
            // Only the rate: a broken [email] is not also "missing".
            errors: &[
                r#"{dir}/csmd.toml:3:8: invalid rate "10/fortnight"; write it like "10/s", "600/m" or "5000/h", or "off""#,
            ],
            ..CASE
        },
        Case {
            mistake: "a sender that is not an address",
            csmd_toml: r#"
[email]
from = "csm at example.net"
"#,
            errors: &[r#"{dir}/csmd.toml:2:8: invalid sender "csm at example.net": Invalid input"#],
            ..CASE
        },
        Case {
            mistake: "no [email] section at all",
            csmd_toml: r#"
[daemon]
listen = "127.0.0.1:8480"
"#,
            errors: &[
                "{dir}/csmd.toml: missing [email] section: set at least `from`, the sender customers see",
            ],
            ..CASE
        },
        Case {
            mistake: "the smtp transport without a server",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"
transport = "smtp"
"#,
            errors: &[
                r#"{dir}/csmd.toml: [email] transport = "smtp" needs an [email.smtp] section with `host`"#,
            ],
            ..CASE
        },
        Case {
            mistake: "clear-text SMTP to a remote server",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"
transport = "smtp"

[email.smtp]
host = "smtp.example.net"
tls = "none"
"#,
            errors: &[
                r#"{dir}/csmd.toml:5:1: tls = "none" sends mail in clear text; it is only allowed towards a loopback host, not "smtp.example.net""#,
            ],
            ..CASE
        },
        Case {
            mistake: "an SMTP ca_file that is missing",
            csmd_toml: SMTP_WITH_CA_FILE,
            errors: &[
                "{dir}/csmd.toml:7:11: cannot read ca_file {dir}/relay-ca.pem: no such file or directory",
            ],
            ..CASE
        },
        Case {
            mistake: "an SMTP ca_file with no certificate",
            csmd_toml: SMTP_WITH_CA_FILE,
            other_files: &[("relay-ca.pem", "not a certificate\n")],
            errors: &["{dir}/csmd.toml:7:11: ca_file {dir}/relay-ca.pem holds no PEM certificate"],
        },
        Case {
            mistake: "a weekday that does not exist in a schedule",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[schedules]
sip_digest = "0 8 * * Funday"
"#,
            errors: &[
                r#"{dir}/csmd.toml:5:14: invalid cron expression "0 8 * * Funday": 'Funday' is not a valid day of the week."#,
            ],
            ..CASE
        },
        Case {
            mistake: "a digest recipient that is not an address",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[sip]
digest_to = ["CSM team <csm@example.net>", "the CSM team"]
"#,
            errors: &[
                r#"{dir}/csmd.toml:5:44: invalid digest recipient "the CSM team" (Invalid input): expected an address like "CSM team <csm@example.net>""#,
            ],
            ..CASE
        },
        Case {
            mistake: "a schedule in words instead of cron fields",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[schedules]
reconciliation = "daily"
"#,
            errors: &[
                r#"{dir}/csmd.toml:5:18: invalid cron expression "daily": expected 5 fields (minute hour day month weekday), found 1"#,
            ],
            ..CASE
        },
        Case {
            mistake: "a trailing comma in a cron field",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[schedules]
monthly_report = "0 7 1,15, * *"
"#,
            errors: &[
                r#"{dir}/csmd.toml:5:18: invalid cron expression "0 7 1,15, * *": cannot parse it from character 9"#,
            ],
            ..CASE
        },
    ]);
}

#[test]
fn mistakes_in_connectors_are_reported_where_they_are() {
    check(&[
        Case {
            mistake: "a key a connector does not have",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[[connector]]
name = "monitoring"
profile = "webhook-json"
url = "https://monitoring.example.net"
[connector.webhook]
auth = "none"
"#,
            errors: &[
                "{dir}/csmd.toml:7:1: unknown field `url`, expected one of `name`, `profile`, `webhook`, `fields`, `base_url`, `auth`, `poll_interval`, `rate_limit`, `timeout`, `filter`, `streams`, `itsm`, `folder`, `archive`, `done_marker`",
            ],
            ..CASE
        },
        Case {
            mistake: "tickets through a connector that does not exist",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[[connector]]
name = "monitoring"
profile = "alertmanager"
[connector.webhook]
auth = "none"
[connector.itsm]
writeback = "servicenow"
"#,
            errors: &[
                "{dir}/csmd.toml:10:13: no connector `servicenow` to write tickets with (ITSM connectors: none)",
            ],
            ..CASE
        },
        Case {
            mistake: "tickets from a connector that reads no alerts",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[[connector]]
name = "surveys"
profile = "feedback-json"
[connector.webhook]
auth = "none"
[connector.itsm]
writeback = "surveys"
"#,
            errors: &[
                "{dir}/csmd.toml:9:1: [connector.itsm] opens tickets from alerts; profile `feedback-json` does not read alerts",
            ],
            ..CASE
        },
        Case {
            mistake: "a profile that is not installed",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[[connector]]
name = "itsm"
profile = "bmc-remedy"
[connector.webhook]
auth = "none"
"#,
            errors: &[
                "{dir}/csmd.toml:6:11: connector profile `bmc-remedy` not found in {dir}/connectors, /usr/share/csmd/connectors",
            ],
            ..CASE
        },
        Case {
            mistake: "two connectors with one name",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[[connector]]
name = "monitoring"
profile = "webhook-json"
[connector.webhook]
auth = "none"

[[connector]]
name = "monitoring"
profile = "webhook-json"
[connector.webhook]
auth = "none"
"#,
            errors: &["{dir}/csmd.toml:11:8: connector `monitoring` is defined twice"],
            ..CASE
        },
        Case {
            mistake: "a connector name that cannot be a URL path",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[[connector]]
name = "Monitoring EU"
profile = "webhook-json"
[connector.webhook]
auth = "none"
"#,
            errors: &[
                r#"{dir}/csmd.toml:5:8: invalid connector name "Monitoring EU": use 1 to 64 characters from a-z, 0-9, '-', '_' and '.', starting with a letter or digit"#,
            ],
            ..CASE
        },
        Case {
            mistake: "field overrides: a pointer without its slash, and a field the profile lacks",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[[connector]]
name = "monitoring"
profile = "webhook-json"
[connector.webhook]
auth = "none"
[connector.fields]
ci = "labels/u_hostname"
hostname = "/labels/host"
"#,
            errors: &[
                r#"{dir}/csmd.toml:10:1: field `ci` must be a JSON pointer string like "/labels/instance""#,
                "{dir}/csmd.toml:11:1: unknown field `hostname`; webhook-json fields are id, status, summary, service, ci, customer, severity, starts_at, ends_at",
            ],
            ..CASE
        },
        Case {
            mistake: "[connector] written as a single table",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[connector]
name = "monitoring"
profile = "webhook-json"
"#,
            errors: &[
                "{dir}/csmd.toml:4:1: `connector` must be an array of tables: write each as [[connector]]",
            ],
            ..CASE
        },
    ]);
}

#[test]
fn webhook_authentication_is_required_and_checked() {
    check(&[
        Case {
            mistake: "a connector without a word on webhook auth",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[[connector]]
name = "monitoring"
profile = "webhook-json"
"#,
            errors: &[
                r#"{dir}/csmd.toml:5:8: connector `monitoring` has no [connector.webhook] section; set auth = "bearer", "standard-webhooks", "hmac-sha256" or "none""#,
            ],
            ..CASE
        },
        Case {
            mistake: "no webhook auth while listening on every address",
            csmd_toml: r#"
[daemon]
listen = "0.0.0.0:8480"

[email]
from = "Example Telecom CSM <csm@example.net>"

[[connector]]
name = "monitoring"
profile = "webhook-json"
[connector.webhook]
auth = "none"
"#,
            errors: &[
                r#"{dir}/csmd.toml:10:1: auth = "none" is only allowed while daemon.listen is a loopback address, not 0.0.0.0:8480"#,
            ],
            ..CASE
        },
        Case {
            mistake: "bearer auth without a token",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[[connector]]
name = "monitoring"
profile = "webhook-json"
[connector.webhook]
auth = "bearer"
"#,
            errors: &[
                r#"{dir}/csmd.toml:7:1: auth = "bearer" needs `token = { env = "NAME" }` or `{ file = "/path" }`"#,
            ],
            ..CASE
        },
        Case {
            mistake: "standard-webhooks without any signing secret",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[[connector]]
name = "monitoring"
profile = "webhook-json"
[connector.webhook]
auth = "standard-webhooks"
"#,
            errors: &[
                r#"{dir}/csmd.toml:7:1: auth = "standard-webhooks" needs at least one entry in `secrets`"#,
            ],
            ..CASE
        },
        Case {
            mistake: "a standard-webhooks secret that is not base64",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[[connector]]
name = "monitoring"
profile = "webhook-json"
[connector.webhook]
auth = "standard-webhooks"
secrets = [{ file = "monitoring.whsec" }]
"#,
            other_files: &[("monitoring.whsec", "whsec_hunter2!\n")],
            errors: &[
                "{dir}/csmd.toml:9:12: signing secret from file monitoring.whsec: not a `whsec_` secret followed by base64",
            ],
        },
        Case {
            mistake: "hmac-sha256 (Grafana) without its shared secret",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[[connector]]
name = "grafana"
profile = "grafana"
[connector.webhook]
auth = "hmac-sha256"
timestamp_header = "X-Grafana-Alerting-Timestamp"
"#,
            errors: &[
                r#"{dir}/csmd.toml:7:1: auth = "hmac-sha256" needs `secret = { env = "NAME" }` or `{ file = "/path" }`"#,
            ],
            ..CASE
        },
    ]);
}

#[test]
fn secrets_come_from_the_environment_or_a_file_and_are_never_echoed() {
    check(&[
        Case {
            mistake: "an admin token from a variable that is not set",
            csmd_toml: r#"
[daemon]
admin_token = { env = "CSMD_TEST_UNSET_ADMIN_TOKEN" }

[email]
from = "Example Telecom CSM <csm@example.net>"
"#,
            errors: &[
                "{dir}/csmd.toml:2:15: environment variable CSMD_TEST_UNSET_ADMIN_TOKEN is not set",
            ],
            ..CASE
        },
        Case {
            mistake: "an admin token from a file that does not exist (relative: next to csmd.toml)",
            csmd_toml: r#"
[daemon]
admin_token = { file = "admin_token" }

[email]
from = "Example Telecom CSM <csm@example.net>"
"#,
            errors: &[
                "{dir}/csmd.toml:2:15: cannot read secret file {dir}/admin_token: no such file or directory",
            ],
            ..CASE
        },
        Case {
            mistake: "a secret file that is a directory",
            csmd_toml: r#"
[daemon]
admin_token = { file = "customers" }

[email]
from = "Example Telecom CSM <csm@example.net>"
"#,
            errors: &[
                "{dir}/csmd.toml:2:15: cannot read secret file {dir}/customers: it is a directory",
            ],
            ..CASE
        },
        Case {
            mistake: "an empty secret file",
            csmd_toml: r#"
[daemon]
admin_token = { file = "admin_token" }

[email]
from = "Example Telecom CSM <csm@example.net>"
"#,
            other_files: &[("admin_token", "\n")],
            errors: &["{dir}/csmd.toml:2:15: secret from file admin_token is empty"],
        },
        Case {
            mistake: "an admin token written inline",
            csmd_toml: r#"
[daemon]
admin_token = "hunter2"

[email]
from = "Example Telecom CSM <csm@example.net>"
"#,
            errors: &[
                r#"{dir}/csmd.toml:2:15: a secret is written { env = "NAME" } or { file = "/path" }, never inline"#,
            ],
            ..CASE
        },
        Case {
            mistake: "a numeric PIN written inline",
            csmd_toml: r#"
[daemon]
admin_token = 2024.1105

[email]
from = "Example Telecom CSM <csm@example.net>"
"#,
            errors: &[
                r#"{dir}/csmd.toml:2:15: a secret is written { env = "NAME" } or { file = "/path" }, never inline"#,
            ],
            ..CASE
        },
        Case {
            mistake: "an SMTP password written inline",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"
transport = "smtp"

[email.smtp]
host = "smtp.example.net"
username = "csmd"
password = "hunter2"
"#,
            errors: &[
                r#"{dir}/csmd.toml:8:12: a secret is written { env = "NAME" } or { file = "/path" }, never inline"#,
            ],
            ..CASE
        },
        Case {
            mistake: "a signing secret written inline, without the list brackets",
            csmd_toml: r#"
[email]
from = "Example Telecom CSM <csm@example.net>"

[[connector]]
name = "monitoring"
profile = "webhook-json"
[connector.webhook]
auth = "standard-webhooks"
secrets = "whsec_aHVudGVyMmh1bnRlcjJodW50ZXIy"
"#,
            errors: &[
                r#"{dir}/csmd.toml:9:11: a list of secrets is written [{ env = "NAME" }, { file = "/path" }], never inline"#,
            ],
            ..CASE
        },
        Case {
            mistake: "a secret naming both a variable and a file",
            csmd_toml: r#"
[daemon]
admin_token = { env = "CSMD_ADMIN_TOKEN", file = "admin_token" }

[email]
from = "Example Telecom CSM <csm@example.net>"
"#,
            errors: &[
                r#"{dir}/csmd.toml:2:15: a secret is written { env = "NAME" } or { file = "/path" }, never inline: give only one of `env` or `file`"#,
            ],
            ..CASE
        },
        Case {
            mistake: "an unterminated inline secret (a TOML syntax error on the secret's line)",
            csmd_toml: r#"
[daemon]
admin_token = "hunter2

[email]
from = "Example Telecom CSM <csm@example.net>"
"#,
            errors: &[r#"{dir}/csmd.toml:2:23: invalid basic string, expected `"`"#],
            ..CASE
        },
    ]);
}

#[test]
fn mistakes_in_customer_files_are_reported_in_those_files() {
    check(&[
        Case {
            mistake: "a contact address without a domain, on the second contact",
            other_files: &[(
                "customers/acme.toml",
                r#"
id = "acme"
name = "ACME Logistics SAS"

[[contact]]
name = "Claire Martin"
email = "claire.martin@acme.example"

[[contact]]
name = "Service Desk"
email = "it-ops.acme.example"
"#,
            )],
            errors: &[
                r#"{dir}/customers/acme.toml:10:9: contact "Service Desk": invalid e-mail address "it-ops.acme.example": Missing domain or user"#,
            ],
            ..CASE
        },
        Case {
            mistake: "one customer id in two files",
            other_files: &[
                ("customers/acme.toml", ACME),
                (
                    "customers/acme-logistics.toml",
                    r#"
name = "ACME Logistics (old file)"
id = "acme"
"#,
                ),
            ],
            // Files are read in name order: acme-logistics.toml comes first.
            errors: &[
                "{dir}/customers/acme.toml:1:6: customer id `acme` is also used by {dir}/customers/acme-logistics.toml",
            ],
            ..CASE
        },
        Case {
            mistake: "a key a customer does not have",
            other_files: &[(
                "customers/acme.toml",
                r#"
id = "acme"
name = "ACME Logistics SAS"
phone = "+33 1 23 45 67 89"
"#,
            )],
            errors: &[
                "{dir}/customers/acme.toml:3:1: unknown field `phone`, expected one of `id`, `name`, `time_zone`, `subscriptions`, `itsm_account`, `billing_account`, `contact`, `contract`, `install_base`",
            ],
            ..CASE
        },
        Case {
            mistake: "a key a contact does not have",
            other_files: &[(
                "customers/acme.toml",
                r#"
id = "acme"
name = "ACME Logistics SAS"

[[contact]]
name = "Claire Martin"
email = "claire.martin@acme.example"
phone = "+33 1 23 45 67 89"
"#,
            )],
            errors: &[
                "{dir}/customers/acme.toml:7:1: unknown field `phone`, expected one of `name`, `email`, `roles`",
            ],
            ..CASE
        },
        Case {
            mistake: "a customer id with capitals",
            other_files: &[(
                "customers/acme.toml",
                r#"
id = "ACME"
name = "ACME Logistics SAS"
"#,
            )],
            errors: &[
                r#"{dir}/customers/acme.toml:1:6: invalid customer id "ACME": use 1 to 64 characters from a-z, 0-9, '-', '_' and '.', starting with a letter or digit"#,
            ],
            ..CASE
        },
        Case {
            mistake: "a lead time in words and an availability over 100%",
            other_files: &[
                (
                    "customers/acme.toml",
                    r#"
id = "acme"
name = "ACME Logistics SAS"

[contract]
maintenance_notice_lead_time = "a week"
"#,
                ),
                (
                    "customers/globex.toml",
                    r#"
id = "globex"
name = "Globex Retail GmbH"

[contract]
availability_target = 999.5
"#,
                ),
            ],
            errors: &[
                r#"{dir}/customers/acme.toml:5:32: invalid duration "a week" (expected number at 0); write it like "90s", "5m" or "5d""#,
                "{dir}/customers/globex.toml:5:23: availability_target 999.5 is not a percentage",
            ],
            ..CASE
        },
        Case {
            mistake: "an install-base entry naming neither a CI nor a service",
            other_files: &[(
                "customers/acme.toml",
                r#"
id = "acme"
name = "ACME Logistics SAS"

[[install_base]]
ci = "core-sw-par-01"

[[install_base]]
"#,
            )],
            errors: &[
                "{dir}/customers/acme.toml:7:1: an [[install_base]] entry needs `ci` or `service`",
            ],
            ..CASE
        },
        Case {
            mistake: "a customers_dir that does not exist",
            csmd_toml: r#"
[daemon]
customers_dir = "clients"

[email]
from = "Example Telecom CSM <csm@example.net>"
"#,
            errors: &["{dir}/clients: cannot read customers directory: no such file or directory"],
            ..CASE
        },
    ]);
}

#[test]
fn every_mistake_is_reported_in_one_pass() {
    check(&[
        Case {
            mistake: "one mistake in each section and in two customer files",
            csmd_toml: r#"
[daemon]
admin_token = { env = "CSMD_TEST_UNSET_ADMIN_TOKEN" }

[email]
from = "Example Telecom CSM <csm@example.net>"
rate = "0/s"

[schedules]
monthly_report = "0 7 1 * Funday"

[[connector]]
name = "itsm"
profile = "bmc-remedy"
[connector.webhook]
auth = "none"

[[connector]]
name = "monitoring"
profile = "webhook-json"
[connector.webhook]
auth = "bearer"
token = { file = "monitoring_token" }
"#,
            other_files: &[
                (
                    "customers/acme.toml",
                    r#"
id = "acme"
name = "ACME Logistics SAS"

[[contact]]
name = "Claire Martin"
email = "claire.martin"
"#,
                ),
                (
                    "customers/globex.toml",
                    r#"
id = "globex"
name = "Globex Retail GmbH"
account_manager = "Jonas"
"#,
                ),
            ],
            errors: &[
                r#"{dir}/csmd.toml:6:8: rate "0/s" must be above zero, or "off""#,
                r#"{dir}/csmd.toml:9:18: invalid cron expression "0 7 1 * Funday": 'Funday' is not a valid day of the week."#,
                "{dir}/csmd.toml:2:15: environment variable CSMD_TEST_UNSET_ADMIN_TOKEN is not set",
                "{dir}/csmd.toml:13:11: connector profile `bmc-remedy` not found in {dir}/connectors, /usr/share/csmd/connectors",
                "{dir}/csmd.toml:22:9: cannot read secret file {dir}/monitoring_token: no such file or directory",
                r#"{dir}/customers/acme.toml:6:9: contact "Claire Martin": invalid e-mail address "claire.martin": Missing domain or user"#,
                "{dir}/customers/globex.toml:3:1: unknown field `account_manager`, expected one of `id`, `name`, `time_zone`, `subscriptions`, `itsm_account`, `billing_account`, `contact`, `contract`, `install_base`",
            ],
        },
        Case {
            mistake: "a mistake in [daemon] neither hides nor invents errors in connectors and customers",
            csmd_toml: r#"
[daemon]
listen = "0.0.0.0:8480"
shutdown_grace = "ten seconds"
connector_dirs = ["profiles"]
customers_dir = "clients"

[email]
from = "Example Telecom CSM <csm@example.net>"

[[connector]]
name = "monitoring"
profile = "webhook-json"
[connector.webhook]
auth = "none"
"#,
            other_files: &[
                (
                    "profiles/webhook-json/profile.toml",
                    include_str!("../connectors/webhook-json/profile.toml"),
                ),
                ("clients/acme.toml", "id = \"acme\"\nname = \"\"\n"),
            ],
            errors: &[
                r#"{dir}/csmd.toml:3:18: invalid duration "ten seconds" (expected number at 0); write it like "90s", "5m" or "5d""#,
                r#"{dir}/csmd.toml:13:1: auth = "none" is only allowed while daemon.listen is a loopback address, not 0.0.0.0:8480"#,
                "{dir}/clients/acme.toml:2:8: name must not be empty",
            ],
        },
    ]);
}

#[test]
fn the_shipped_example_loads_with_its_customers_and_connector() {
    let _env = EnvVars::set(&[("CSMD_ADMIN_TOKEN", Some("change-me"))]);
    let config = csmd::config::load(Path::new(SHIPPED_EXAMPLE)).unwrap_or_else(|d| panic!("{d}"));

    let customers: Vec<_> = config.customers.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(customers, ["acme", "globex"]);
    assert_eq!(config.customers[0].contacts.len(), 3);
    let monitoring = config
        .connector("monitoring")
        .expect("the monitoring connector");
    assert_eq!(monitoring.kind.as_str(), "webhook-json");
    assert_eq!(
        monitoring
            .webhook_auth
            .as_ref()
            .expect("webhook auth")
            .describe(),
        "no auth"
    );
    let token = config.daemon.admin_token.as_ref().expect("admin token");
    assert_eq!(token.expose_secret(), "change-me");
    assert_eq!(config.daemon.time_zone.to_string(), "Europe/Paris");
    assert_eq!(config.schedules.monthly_report.to_string(), "0 7 1 * *");
}

#[test]
fn the_shipped_example_names_the_variable_it_needs() {
    let _env = EnvVars::set(&[("CSMD_ADMIN_TOKEN", None)]);
    let errors = csmd::config::load(Path::new(SHIPPED_EXAMPLE)).expect_err("no admin token");
    assert_eq!(
        errors.to_string(),
        format!("{SHIPPED_EXAMPLE}:15:15: environment variable CSMD_ADMIN_TOKEN is not set")
    );
}

#[test]
fn relative_secret_files_are_read_from_the_credentials_directory() {
    let dir = ConfigDir::new(&[
        (
            "csmd.toml",
            r#"
[daemon]
admin_token = { file = "admin_token" }

[email]
from = "Example Telecom CSM <csm@example.net>"
"#,
        ),
        // Next to csmd.toml, where it would be read without systemd.
        ("admin_token", "from-the-config-dir\n"),
    ]);
    let credentials = tempfile::tempdir().expect("credentials dir");
    let credentials_dir = credentials.path().to_str().expect("UTF-8 temp path");

    let errors = {
        let _env = EnvVars::set(&[("CREDENTIALS_DIRECTORY", Some(credentials_dir))]);
        csmd::config::load(&dir.config()).expect_err("credential not installed yet")
    };
    assert_eq!(
        errors.to_string(),
        format!(
            "{}:2:15: cannot read secret file {credentials_dir}/admin_token: no such file or directory",
            dir.config().display()
        )
    );

    std::fs::write(credentials.path().join("admin_token"), "from-systemd\n").expect("credential");
    let _env = EnvVars::set(&[("CREDENTIALS_DIRECTORY", Some(credentials_dir))]);
    let config = csmd::config::load(&dir.config()).unwrap_or_else(|d| panic!("{d}"));
    let token = config.daemon.admin_token.as_ref().expect("admin token");
    assert_eq!(token.expose_secret(), "from-systemd");
}

// ---- the real binary -------------------------------------------------------

/// A secret distinctive enough that finding it anywhere is a leak.
const SECRET: &str = "s3cr3t-VALUE-must-not-leak";

/// A configuration using every kind of secret: the admin token and an SMTP
/// password from the environment, a bearer token and a Standard Webhooks
/// signing key from files.
const EVERY_SECRET: &str = r#"
[daemon]
data_dir = "state"
listen = "127.0.0.1:8480"
admin_token = { env = "CSMD_TEST_ADMIN_TOKEN" }
time_zone = "Europe/Paris"

[email]
from = "Example Telecom CSM <csm@example.net>"
transport = "smtp"
rate = "600/m"

[email.smtp]
host = "smtp.example.net"
username = "csmd"
password = { env = "CSMD_TEST_SMTP_PASSWORD" }

[schedules]
monthly_report = "0 6 1 * *"

[integrity.rules.customer-mismatch]
enabled = false
[integrity.rules.contact-missing]
grace = "1d"

[[connector]]
name = "monitoring"
profile = "webhook-json"
[connector.webhook]
auth = "bearer"
token = { file = "monitoring_token" }

[[connector]]
name = "events"
profile = "webhook-json"
[connector.webhook]
auth = "standard-webhooks"
secrets = [{ file = "events.whsec" }]
tolerance = "2m"
"#;

const GLOBEX: &str = r#"
id = "globex"
name = "Globex Retail GmbH"
time_zone = "Europe/Berlin"

[[contact]]
name = "Jonas Weber"
email = "jonas.weber@globex.example"
roles = ["primary", "reports"]
"#;

/// The signing key file's content: the secret as a Standard Webhooks key.
fn whsec() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(SECRET)
    )
}

/// The configuration directory of [`EVERY_SECRET`], with the secret files
/// holding `SECRET` and both customers.
fn every_secret_dir(csmd_toml: &str) -> ConfigDir {
    let dir = ConfigDir::new(&[
        ("customers/acme.toml", ACME),
        ("customers/globex.toml", GLOBEX),
        ("monitoring_token", SECRET),
    ]);
    dir.write("csmd.toml", csmd_toml);
    dir.write("events.whsec", &whsec());
    dir
}

#[test]
fn check_config_prints_what_will_run() {
    let dir = every_secret_dir(EVERY_SECRET);
    let out = dir.check_config();

    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out).replace(&dir.path().display().to_string(), "{dir}"),
        "\
configuration {dir}/csmd.toml is valid
  listen        127.0.0.1:8480
  data_dir      {dir}/state
  time zone     Europe/Paris
  admin API     enabled (bearer token set)
  e-mail        from Example Telecom CSM <csm@example.net>, smtp smtp.example.net:587 (starttls, with auth), at most 600/m
  schedules     monthly_report \"0 6 1 * *\", reconciliation \"30 2 * * *\", sip_digest \"0 8 * * Mon-Fri\"
  SIP           actions from CSAT under 3 and NPS under 7; overdue digest off (no [sip] digest_to)
  integrity     6 of 7 rules on: ci-not-billed, billed-not-in-install-base, billed-after-decommission, monitored-unknown-ci, billable-change-not-billed, contact-missing (grace 1day); no tickets (no [integrity] writeback)
  connectors    2
    monitoring       webhook-json   webhook: bearer token
    events           webhook-json   webhook: standard-webhooks, 1 key(s), tolerance 2m
  customers     2
    acme             ACME Logistics SAS (Europe/Paris, 1 contact(s))
    globex           Globex Retail GmbH (Europe/Berlin, 1 contact(s))
"
    );
    assert_eq!(stderr(&out), "");
}

#[test]
fn check_config_renders_the_operators_templates_as_the_daemon_does() {
    let dir = ConfigDir::new(&[
        (
            "csmd.toml",
            r#"
[email]
from = "Example Telecom CSM <csm@example.net>"
templates_dir = "templates"
"#,
        ),
        (
            "templates/maintenance.txt",
            "Hello\n{% if kind == %}\n{% endif %}\n",
        ),
    ]);
    let out = dir.check_config();

    assert_eq!(out.status.code(), Some(1), "stdout: {}", stdout(&out));
    assert_eq!(stdout(&out), "");
    let stderr = stderr(&out).replace(&dir.path().display().to_string(), "{dir}");
    assert!(
        stderr.starts_with(
            "{dir}/csmd.toml: e-mail templates: template {dir}/templates/maintenance.txt:2: "
        ),
        "{stderr}"
    );
    assert!(stderr.contains("syntax error"), "{stderr}");
    assert!(
        stderr.ends_with("1 error(s); the configuration was not accepted\n"),
        "{stderr}"
    );

    // Fixed, the same configuration is accepted.
    dir.write("templates/maintenance.txt", "Hello {{ customer_name }}\n");
    let out = dir.check_config();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", self::stderr(&out));
}

#[test]
fn check_config_lists_every_error_and_exits_1() {
    let dir = ConfigDir::new(&[
        (
            "csmd.toml",
            r#"
[daemon]
shutdown_grace = "5 parsecs"

[email]
from = "Example Telecom CSM <csm@example.net>"

[schedules]
reconciliation = "daily"
"#,
        ),
        (
            "customers/acme.toml",
            "id = \"acme\"\nname = \"ACME\"\ncolour = \"red\"\n",
        ),
    ]);
    let out = dir.check_config();

    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out).replace(&dir.path().display().to_string(), "{dir}"),
        r#"{dir}/csmd.toml:2:18: invalid duration "5 parsecs" (unknown time unit "parsecs", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)); write it like "90s", "5m" or "5d"
{dir}/csmd.toml:8:18: invalid cron expression "daily": expected 5 fields (minute hour day month weekday), found 1
{dir}/customers/acme.toml:3:1: unknown field `colour`, expected one of `id`, `name`, `time_zone`, `subscriptions`, `itsm_account`, `billing_account`, `contact`, `contract`, `install_base`
3 error(s); the configuration was not accepted
"#
    );
}

#[test]
fn check_config_never_prints_a_secret() {
    // Each variant keeps the secrets in place and breaks something, some of
    // them right next to a secret or by writing one inline.
    let inline_token = format!("token = \"{SECRET}\"");
    let variants: Vec<(&str, String)> = vec![
        ("valid", EVERY_SECRET.to_string()),
        (
            "a bearer token written inline",
            EVERY_SECRET.replace("token = { file = \"monitoring_token\" }", &inline_token),
        ),
        (
            "an admin token written inline with a syntax error",
            EVERY_SECRET.replace(
                "admin_token = { env = \"CSMD_TEST_ADMIN_TOKEN\" }",
                &format!("admin_token = \"{SECRET}"),
            ),
        ),
        (
            "an admin token written bare",
            EVERY_SECRET.replace(
                "admin_token = { env = \"CSMD_TEST_ADMIN_TOKEN\" }",
                &format!("admin_token = {SECRET}"),
            ),
        ),
        (
            "a signing secret written inline without brackets",
            EVERY_SECRET.replace(
                "secrets = [{ file = \"events.whsec\" }]",
                &format!("secrets = \"{}\"", whsec()),
            ),
        ),
        (
            "a signing key file holding a token instead of a whsec_ key",
            EVERY_SECRET.replace("events.whsec", "monitoring_token"),
        ),
        (
            "an SMTP password in clear text to a remote host",
            EVERY_SECRET.replace("username = \"csmd\"", "username = \"csmd\"\ntls = \"none\""),
        ),
        (
            "an unknown key beside the secrets",
            EVERY_SECRET.replace("[email.smtp]", "[email.smtp]\npasword = \"x\""),
        ),
        (
            "no webhook auth on a public listener",
            EVERY_SECRET
                .replace("127.0.0.1:8480", "0.0.0.0:8480")
                .replace("auth = \"bearer\"", "auth = \"none\""),
        ),
    ];
    let leaked = [SECRET.to_string(), whsec()];

    for (variant, csmd_toml) in &variants {
        let dir = every_secret_dir(csmd_toml);
        let out = dir.check_config();
        let expected = if *variant == "valid" { 0 } else { 1 };
        assert_eq!(
            out.status.code(),
            Some(expected),
            "{variant}: stdout: {}\nstderr: {}",
            stdout(&out),
            stderr(&out)
        );
        for output in [stdout(&out), stderr(&out)] {
            for secret in &leaked {
                assert!(
                    !output.contains(secret.as_str()),
                    "{variant}: a secret leaked:\n{output}"
                );
            }
        }
    }

    // The loaded configuration holds the secrets, and its Debug form (what a
    // stray `?config` in a log line would print) still does not show them.
    let dir = every_secret_dir(EVERY_SECRET);
    let config = {
        let _env = EnvVars::set(&[
            ("CREDENTIALS_DIRECTORY", None),
            ("CSMD_TEST_ADMIN_TOKEN", Some(SECRET)),
            ("CSMD_TEST_SMTP_PASSWORD", Some(SECRET)),
        ]);
        csmd::config::load(&dir.config()).unwrap_or_else(|d| panic!("{d}"))
    };
    let debug = format!("{config:?}");
    for secret in &leaked {
        assert!(!debug.contains(secret.as_str()), "Debug leaked:\n{debug}");
    }
    assert!(!config.summary().contains(SECRET));
    let token = config.daemon.admin_token.as_ref().expect("admin token");
    assert_eq!(token.expose_secret(), SECRET);
}

// ---- helpers ---------------------------------------------------------------

/// Runs each case and reports every case whose errors differ, not just the first.
fn check(cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let dir = ConfigDir::new(case.other_files);
        dir.write("csmd.toml", case.csmd_toml);
        let errors = dir.errors();
        if errors != case.errors {
            failures.push(format!(
                "{}:\n  expected:\n    {}\n  got:\n    {}",
                case.mistake,
                case.errors.join("\n    "),
                errors.join("\n    ")
            ));
        }
        // No case's output may echo the secret some of them write inline.
        assert!(
            !errors.iter().any(|e| e.contains("hunter2")),
            "{}: {errors:?}",
            case.mistake
        );
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// A configuration directory: `csmd.toml`, `customers/`, and the shipped
/// profiles linked as `connectors/`.
struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    /// Writes `files` (a leading newline in a text is dropped, so line 1 is
    /// the first line written after `r#"`).
    fn new(files: &[(&str, &str)]) -> ConfigDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("customers")).expect("customers dir");
        std::os::unix::fs::symlink(SHIPPED_CONNECTORS, dir.path().join("connectors"))
            .expect("link to the shipped profiles");
        let dir = ConfigDir { dir };
        for (name, text) in files {
            dir.write(name, text);
        }
        dir
    }

    fn write(&self, name: &str, text: &str) {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(path, text.strip_prefix('\n').unwrap_or(text)).expect("write");
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> PathBuf {
        self.path().join("csmd.toml")
    }

    /// Loads the configuration and renders each error, with the directory
    /// written as `{dir}`.
    fn errors(&self) -> Vec<String> {
        let result = {
            let _env = EnvVars::set(&[("CREDENTIALS_DIRECTORY", None)]);
            csmd::config::load(&self.config())
        };
        match result {
            Ok(_) => Vec::new(),
            Err(diagnostics) => diagnostics
                .0
                .iter()
                .map(|d| {
                    d.to_string()
                        .replace(&self.path().display().to_string(), "{dir}")
                })
                .collect(),
        }
    }

    /// `csmd check-config --config <dir>/csmd.toml`, with the secrets of
    /// [`EVERY_SECRET`] in its environment.
    fn check_config(&self) -> Output {
        Command::new(env!("CARGO_BIN_EXE_csmd"))
            .arg("check-config")
            .arg("--config")
            .arg(self.config())
            .env_remove("CSMD_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env("CSMD_TEST_ADMIN_TOKEN", SECRET)
            .env("CSMD_TEST_SMTP_PASSWORD", SECRET)
            .output()
            .expect("run csmd check-config")
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The process environment is shared by every test thread, and the loader
/// reads it (secrets, `CREDENTIALS_DIRECTORY`). Every in-process load holds
/// this lock, and only a holder changes the environment, restoring it on drop.
static ENV: Mutex<()> = Mutex::new(());

struct EnvVars {
    saved: Vec<(&'static str, Option<std::ffi::OsString>)>,
    _lock: MutexGuard<'static, ()>,
}

impl EnvVars {
    /// Sets (`Some`) or removes (`None`) variables until dropped.
    fn set(vars: &[(&'static str, Option<&str>)]) -> EnvVars {
        let lock = ENV.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let saved = vars
            .iter()
            .map(|(name, value)| {
                let old = std::env::var_os(name);
                // SAFETY: every in-process read of the environment by these
                // tests happens under `ENV`, which we hold; `Command` takes
                // std's own environment lock, as `set_var` does.
                unsafe {
                    match value {
                        Some(value) => std::env::set_var(name, value),
                        None => std::env::remove_var(name),
                    }
                }
                (*name, old)
            })
            .collect();
        EnvVars { saved, _lock: lock }
    }
}

impl Drop for EnvVars {
    fn drop(&mut self) {
        for (name, old) in self.saved.drain(..) {
            // SAFETY: as in `set`; the lock is still held.
            unsafe {
                match old {
                    Some(old) => std::env::set_var(name, old),
                    None => std::env::remove_var(name),
                }
            }
        }
    }
}
