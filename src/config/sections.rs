//! The sections of `csmd.toml`, as operators write them. Every field's `///`
//! line is its documentation; defaults are the named `default_*` functions.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::customer::Severity;
use super::value::{CronExpr, HumanDuration, Rate, RateLimit, SecretRef, TimeZone};
pub use crate::connector::rest::profile::StreamOverride;
use crate::model::integrity::Rule;

/// `[daemon]`: where csmd keeps its state and how it listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    /// Directory of the sled store. Relative paths are relative to the
    /// configuration file. Default: `$STATE_DIRECTORY` (set by systemd's
    /// `StateDirectory=`) or `/var/lib/csmd`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Address of the one HTTP listener: webhooks, admin API, health, metrics.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer token of the admin API (`/api/v1`) and so of the CLI. Without
    /// it the admin API is switched off.
    #[serde(default)]
    pub admin_token: Option<Spanned<SecretRef>>,
    /// The provider's time zone, for schedules and for customers without one.
    #[serde(default)]
    pub time_zone: TimeZone,
    /// `text` for people, `json` for log shippers.
    #[serde(default)]
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `csmd=debug,info`; `RUST_LOG` wins.
    #[serde(default = "default_log_level")]
    pub log_level: Spanned<String>,
    /// Directory of the customer files (`*.toml`), relative to this file.
    #[serde(default = "default_customers_dir")]
    pub customers_dir: PathBuf,
    /// Where connector profiles are looked up, first match wins: each holds
    /// one folder per profile with its `profile.toml`.
    #[serde(default = "default_connector_dirs")]
    pub connector_dirs: Vec<PathBuf>,
    /// Largest webhook body accepted, in bytes; larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Memory sled may use to cache the store's pages, in MiB. More makes
    /// large trees (alerts of big alert storms, ITSM tables of hundreds of
    /// thousands of records) faster to write and read, at that much more
    /// resident memory.
    #[serde(default = "default_store_cache_mib")]
    pub store_cache_mib: Spanned<u64>,
    /// Webhook deliveries wait (up to 2 s, then they are stored anyway)
    /// while more acknowledged events than this wait for the engine, so a
    /// storm of alerts is acknowledged at the pace it is applied and its
    /// disruption notices stay prompt. `0` never waits.
    #[serde(default = "default_max_unapplied_events")]
    pub max_unapplied_events: u64,
    /// How long applied events stay in the ingest journal (`csmd events`).
    #[serde(default = "default_journal_retention")]
    pub journal_retention: HumanDuration,
    /// How long a resolved alert is kept after it was last delivered;
    /// firing alerts are always kept. At least a day, so that a source
    /// delivering a resolution again (or late) still finds it.
    #[serde(default = "default_alert_retention")]
    pub alert_retention: Spanned<HumanDuration>,
    /// How long in-flight requests may take to finish on shutdown.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: HumanDuration,
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/csmd"))
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8480))
}

fn default_log_level() -> Spanned<String> {
    Spanned::new(0..0, "info".into())
}

fn default_customers_dir() -> PathBuf {
    PathBuf::from("customers")
}

fn default_connector_dirs() -> Vec<PathBuf> {
    vec![
        PathBuf::from("connectors"),
        PathBuf::from("/usr/share/csmd/connectors"),
    ]
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}

fn default_store_cache_mib() -> Spanned<u64> {
    Spanned::new(0..0, crate::store::DEFAULT_CACHE_MIB)
}

fn default_max_unapplied_events() -> u64 {
    500
}

fn default_journal_retention() -> HumanDuration {
    HumanDuration::from_secs(7 * 86_400)
}

fn default_alert_retention() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration::from_secs(30 * 86_400))
}

fn default_shutdown_grace() -> HumanDuration {
    HumanDuration::from_secs(10)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[email]`: how customers' e-mail leaves csmd.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSection {
    /// The sender customers see, like `"Example Telecom CSM <csm@example.net>"`.
    pub from: Spanned<String>,
    /// `file` (write `.eml` files, the default), `smtp` or `sendmail`.
    #[serde(default)]
    pub transport: TransportKind,
    /// Folder of the `file` transport. Default: `mail/` in the data directory.
    #[serde(default)]
    pub file_dir: Option<PathBuf>,
    /// Path of the `sendmail` program for the `sendmail` transport.
    #[serde(default = "default_sendmail_command")]
    pub sendmail_command: PathBuf,
    /// Most messages sent per period, across all customers, like "10/s";
    /// "off" sends as fast as the transport takes them.
    #[serde(default = "default_send_rate")]
    pub rate: RateLimit,
    /// Messages handed to the transport at once (SMTP connections in the
    /// pool).
    #[serde(default = "default_concurrency")]
    pub concurrency: u16,
    /// Where customers' replies go, when not to `from`.
    #[serde(default)]
    pub reply_to: Option<Spanned<String>>,
    /// A folder of templates overriding the embedded ones, file by file
    /// (same names; see the README). Relative to the configuration file.
    #[serde(default)]
    pub templates_dir: Option<PathBuf>,
    /// First wait after a transient failure (connection refused, timeout,
    /// SMTP 4xx); it doubles on each further failure.
    #[serde(default = "default_retry_backoff")]
    pub retry_backoff: HumanDuration,
    /// The longest wait between two attempts.
    #[serde(default = "default_retry_backoff_max")]
    pub retry_backoff_max: HumanDuration,
    /// A message still failing this long after it was queued is given up
    /// (marked dead, with the last error).
    #[serde(default = "default_give_up_after")]
    pub give_up_after: HumanDuration,
    /// Sent and dead messages are deleted this long after they were
    /// finished; their ids are kept, so none is ever queued again.
    #[serde(default = "default_keep_sent")]
    pub keep_sent: HumanDuration,
    /// The provider's branding in every message.
    #[serde(default)]
    pub branding: BrandingSection,
    /// The SMTP server, for the `smtp` transport.
    #[serde(default)]
    pub smtp: Option<Spanned<SmtpSection>>,
}

/// `[email.branding]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrandingSection {
    /// The provider's name as customers know it. Default: the display
    /// name of `from`.
    #[serde(default)]
    pub name: Option<String>,
    /// An https URL of the logo shown at the top of HTML messages.
    #[serde(default)]
    pub logo_url: Option<String>,
    /// A line at the bottom of every message (address, support hours…).
    #[serde(default)]
    pub footer: Option<String>,
    /// The provider's website or customer portal.
    #[serde(default)]
    pub website: Option<String>,
}

fn default_concurrency() -> u16 {
    4
}

fn default_retry_backoff() -> HumanDuration {
    HumanDuration::from_secs(30)
}

fn default_retry_backoff_max() -> HumanDuration {
    HumanDuration::from_secs(30 * 60)
}

fn default_give_up_after() -> HumanDuration {
    HumanDuration::from_secs(3 * 86_400)
}

fn default_keep_sent() -> HumanDuration {
    HumanDuration::from_secs(90 * 86_400)
}

/// `[maintenance]`: which tracked changes customers hear about.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceSection {
    /// Change types (`standard`, `normal`, `emergency`) that are not
    /// customer-impacting: they send no notices.
    #[serde(default)]
    pub not_customer_impacting_types: Vec<String>,
    /// CIs (by name or sys_id) whose changes are not customer-impacting.
    #[serde(default)]
    pub not_customer_impacting_cis: Vec<String>,
}

/// `[integrity]`: the data-integrity reconciliation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegritySection {
    /// The ITSM connector writing one "Data Integrity" ticket per issue;
    /// without it issues are only listed.
    #[serde(default)]
    pub writeback: Option<Spanned<String>>,
    /// The assignment group of the tickets.
    #[serde(default)]
    pub assignment_group: Option<String>,
    /// What an issue seen again after its resolution gets: `same` (its
    /// ticket reopened) or `new` (another ticket). Default: same.
    #[serde(default)]
    pub reopen: Reopen,
    /// How long after its closing a billable change must be charged.
    /// Default: 30d.
    #[serde(default)]
    pub charge_within: Option<HumanDuration>,
    /// Per rule: `enabled` (default true) and `grace` (how long a finding
    /// must last before it is raised; default 0s).
    #[serde(default)]
    pub rules: BTreeMap<Rule, RuleSection>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reopen {
    #[default]
    Same,
    New,
}

/// `[integrity.rules.<rule>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_grace")]
    pub grace: HumanDuration,
}

impl Default for RuleSection {
    fn default() -> Self {
        RuleSection {
            enabled: true,
            grace: default_grace(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_grace() -> HumanDuration {
    HumanDuration::from_secs(0)
}

/// `[disruptions]`: how alerts become proactive disruption notices.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DisruptionsSection {
    /// Alerts of one customer starting within this of the first make one
    /// notice.
    #[serde(default = "default_group_window")]
    pub group_window: HumanDuration,
    /// At most one update per disruption this often, for alerts joining it.
    #[serde(default = "default_group_interval")]
    pub group_interval: HumanDuration,
}

impl Default for DisruptionsSection {
    fn default() -> Self {
        DisruptionsSection {
            group_window: default_group_window(),
            group_interval: default_group_interval(),
        }
    }
}

fn default_group_window() -> HumanDuration {
    HumanDuration::from_secs(30)
}

fn default_group_interval() -> HumanDuration {
    HumanDuration::from_secs(300)
}

/// `[sip]`: the Service Improvement Program.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipSection {
    /// A CSAT answer scoring under this creates an action. The scale is
    /// the survey's: the default suits 1 to 5.
    #[serde(default = "default_csat_below")]
    pub csat_below: f64,
    /// An NPS answer (0 to 10) under this creates an action; the default
    /// catches detractors (0 to 6).
    #[serde(default = "default_nps_below")]
    pub nps_below: f64,
    /// Who receives the digest of overdue actions on the `sip_digest`
    /// schedule (the CSM team); none: no digest.
    #[serde(default)]
    pub digest_to: Vec<Spanned<String>>,
}

impl Default for SipSection {
    fn default() -> Self {
        SipSection {
            csat_below: default_csat_below(),
            nps_below: default_nps_below(),
            digest_to: Vec::new(),
        }
    }
}

fn default_csat_below() -> f64 {
    3.0
}

fn default_nps_below() -> f64 {
    7.0
}

fn default_sendmail_command() -> PathBuf {
    PathBuf::from("/usr/sbin/sendmail")
}

fn default_send_rate() -> RateLimit {
    const TEN: std::num::NonZeroU32 = std::num::NonZeroU32::new(10).unwrap();
    RateLimit::Limit(Rate {
        count: TEN,
        per: std::time::Duration::from_secs(1),
    })
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    #[default]
    File,
    Smtp,
    Sendmail,
}

/// `[email.smtp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    pub host: String,
    /// Default: 587 for `starttls`, 465 for `tls`, 25 for `none`.
    #[serde(default)]
    pub port: Option<u16>,
    /// `starttls` (required upgrade, the default), `tls` (implicit TLS) or
    /// `none` (plain text, accepted only towards a loopback address).
    #[serde(default)]
    pub tls: TlsMode,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Spanned<SecretRef>>,
    /// Connect and command timeout.
    #[serde(default = "default_smtp_timeout")]
    pub timeout: HumanDuration,
    /// PEM file of extra CA certificates to trust (a relay with a private
    /// CA), besides the public roots. Relative to the configuration file.
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
}

fn default_smtp_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    #[default]
    Starttls,
    Tls,
    None,
}

/// `[schedules]`: cron expressions, five fields (minute hour day month
/// weekday) in the daemon's time zone unless said otherwise.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulesSection {
    /// The monthly service report run, in each customer's time zone.
    #[serde(default = "default_monthly_report")]
    pub monthly_report: CronExpr,
    /// The full data-integrity reconciliation.
    #[serde(default = "default_reconciliation")]
    pub reconciliation: CronExpr,
    /// The digest of overdue SIP actions to the CSM.
    #[serde(default = "default_sip_digest")]
    pub sip_digest: CronExpr,
}

impl Default for SchedulesSection {
    fn default() -> Self {
        SchedulesSection {
            monthly_report: default_monthly_report(),
            reconciliation: default_reconciliation(),
            sip_digest: default_sip_digest(),
        }
    }
}

fn cron_default(expr: &str) -> CronExpr {
    // The defaults are constants checked by a unit test.
    expr.parse()
        .unwrap_or_else(|e| panic!("default schedule {expr:?}: {e}"))
}

fn default_monthly_report() -> CronExpr {
    cron_default("0 7 1 * *")
}

fn default_reconciliation() -> CronExpr {
    cron_default("30 2 * * *")
}

fn default_sip_digest() -> CronExpr {
    cron_default("0 8 * * Mon-Fri")
}

/// One `[[connector]]`: an upstream system csmd reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSection {
    /// Unique name, used in `/webhooks/{name}`, metrics and logs.
    pub name: Spanned<String>,
    /// The profile (a folder under `connector_dirs`), like `webhook-json`.
    pub profile: Spanned<String>,
    /// How inbound webhooks of this connector are authenticated.
    #[serde(default)]
    pub webhook: Option<Spanned<WebhookSection>>,
    /// Overrides of the profile's field mapping, `name = "source field"`
    /// (profiles with a single record shape, like `webhook-json`).
    #[serde(default)]
    pub fields: Option<Spanned<BTreeMap<Spanned<String>, toml::Value>>>,
    /// The upstream's URL, for polled profiles, like
    /// `"https://example.service-now.com"`.
    #[serde(default)]
    pub base_url: Option<Spanned<String>>,
    /// How csmd authenticates to the upstream it polls.
    #[serde(default)]
    pub auth: Option<Spanned<UpstreamAuthSection>>,
    /// Time between two polls. Default: 5m.
    #[serde(default)]
    pub poll_interval: Option<Spanned<HumanDuration>>,
    /// Most requests per period towards the upstream, or "off". Default: "10/s".
    #[serde(default)]
    pub rate_limit: Option<Spanned<RateLimit>>,
    /// Timeout of one request to the upstream. Default: 30s.
    #[serde(default)]
    pub timeout: Option<Spanned<HumanDuration>>,
    /// A query ANDed to every stream's, like `"company=<sys_id>"`.
    #[serde(default)]
    pub filter: Option<Spanned<String>>,
    /// Per-stream overrides: `enabled`, `table`, `filter` and `fields`
    /// (custom `u_` columns of an instance).
    #[serde(default)]
    pub streams: Option<Spanned<BTreeMap<String, StreamOverride>>>,
    /// Tickets a monitoring connector's alerts open in the ITSM.
    #[serde(default)]
    pub itsm: Option<Spanned<ConnectorItsmSection>>,
    /// `billing-csv`: the folder exports are dropped into.
    #[serde(default)]
    pub folder: Option<Spanned<String>>,
    /// `billing-csv`: where imported files are moved. Default: `archive`
    /// inside `folder`.
    #[serde(default)]
    pub archive: Option<Spanned<String>>,
    /// `billing-csv`: import a file only once `<name>.done` exists beside
    /// it. Default: false (files are complete once renamed into `folder`).
    #[serde(default)]
    pub done_marker: Option<Spanned<bool>>,
}

/// `[connector.itsm]` of a monitoring connector: one major incident per
/// outage and one proactive case per impacted customer, written through
/// an ITSM connector's write-back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorItsmSection {
    /// The ITSM connector writing the tickets; its profile needs
    /// `[api.write.tickets.major_incident]` and `…proactive_case`.
    pub writeback: Spanned<String>,
    /// Lowest alert severity that opens tickets. Default: "critical".
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// The assignment group of the tickets.
    #[serde(default)]
    pub assignment_group: Option<String>,
}

/// `[connector.auth]`: credentials towards a polled upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamAuthSection {
    /// `basic`, `bearer` or `oauth2`.
    pub kind: UpstreamAuthKind,
    /// For `basic`, and for the OAuth2 password grant.
    #[serde(default)]
    pub username: Option<String>,
    /// For `basic`, and for the OAuth2 password grant.
    #[serde(default)]
    pub password: Option<Spanned<SecretRef>>,
    /// For `bearer`.
    #[serde(default)]
    pub token: Option<Spanned<SecretRef>>,
    /// For `oauth2`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// For `oauth2`.
    #[serde(default)]
    pub client_secret: Option<Spanned<SecretRef>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamAuthKind {
    Basic,
    Bearer,
    /// OAuth2: the password grant when `username` is set, client
    /// credentials otherwise.
    Oauth2,
}

/// `[connector.webhook]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// `bearer`, `standard-webhooks` (HMAC-SHA256 signatures),
    /// `hmac-sha256` (a hex HMAC-SHA256 of the body, as Grafana signs) or
    /// `none`.
    pub auth: WebhookAuthKind,
    /// The bearer token, for `auth = "bearer"`.
    #[serde(default)]
    pub token: Option<Spanned<SecretRef>>,
    /// Signing secrets (`whsec_…`), for `auth = "standard-webhooks"`. Several
    /// are accepted at once so a key can be rotated without downtime.
    #[serde(default, deserialize_with = "super::value::secret_list")]
    pub secrets: Vec<Spanned<SecretRef>>,
    /// The shared secret, for `auth = "hmac-sha256"`.
    #[serde(default)]
    pub secret: Option<Spanned<SecretRef>>,
    /// The header carrying the hex signature, for `auth = "hmac-sha256"`
    /// (default `X-Grafana-Alerting-Signature`).
    #[serde(default)]
    pub header: Option<Spanned<String>>,
    /// The header carrying the Unix time signed with the body, for
    /// `auth = "hmac-sha256"` when the sender sends one.
    #[serde(default)]
    pub timestamp_header: Option<Spanned<String>>,
    /// Largest accepted difference between the sender's timestamp
    /// (`webhook-timestamp`, or `timestamp_header`) and now.
    #[serde(default = "default_tolerance")]
    pub tolerance: HumanDuration,
}

fn default_tolerance() -> HumanDuration {
    HumanDuration::from_secs(300)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookAuthKind {
    Bearer,
    StandardWebhooks,
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    None,
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_schedules_parse() {
        let s = super::SchedulesSection::default();
        assert_eq!(s.monthly_report.source, "0 7 1 * *");
    }
}
