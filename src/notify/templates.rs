//! Message templates: embedded defaults, overridable from a folder.
//!
//! Every template is a file under `config/templates/` compiled into the
//! binary; an operator's folder (`[email] templates_dir`) replaces any of them
//! by file name. [`Templates::load`] compiles and trial-renders them all, so a
//! broken override stops `csmd run` and `csmd check-config` at startup instead
//! of failing a customer's notice later. Templates named `*.html` are
//! HTML-escaped automatically; subjects are forced onto one line after
//! rendering, whatever the data or the template put in them.
//!
//! Instants reach templates as RFC 3339 UTC strings; the filters and
//! functions registered here format them in the customer's time zone, so
//! templates never do time arithmetic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{Environment, ErrorKind, State, UndefinedBehavior, context};

const LAYOUT_HTML: &str = "layout.html";
const MAINTENANCE_SUBJECT: &str = "maintenance.subject.txt";
const MAINTENANCE_TEXT: &str = "maintenance.txt";
const MAINTENANCE_HTML: &str = "maintenance.html";
const DISRUPTION_SUBJECT: &str = "disruption.subject.txt";
const DISRUPTION_TEXT: &str = "disruption.txt";
const DISRUPTION_HTML: &str = "disruption.html";
const SIP_DIGEST_SUBJECT: &str = "sip_digest.subject.txt";
const SIP_DIGEST_TEXT: &str = "sip_digest.txt";
const SIP_DIGEST_HTML: &str = "sip_digest.html";
const REPORT_SUBJECT: &str = "report.subject.txt";
const REPORT_TEXT: &str = "report.txt";
const REPORT_HTML: &str = "report.html";

/// The default templates, by the file name an override must have.
const EMBEDDED: &[(&str, &str)] = &[
    (
        LAYOUT_HTML,
        include_str!("../../config/templates/layout.html"),
    ),
    (
        MAINTENANCE_SUBJECT,
        include_str!("../../config/templates/maintenance.subject.txt"),
    ),
    (
        MAINTENANCE_TEXT,
        include_str!("../../config/templates/maintenance.txt"),
    ),
    (
        MAINTENANCE_HTML,
        include_str!("../../config/templates/maintenance.html"),
    ),
    (
        DISRUPTION_SUBJECT,
        include_str!("../../config/templates/disruption.subject.txt"),
    ),
    (
        DISRUPTION_TEXT,
        include_str!("../../config/templates/disruption.txt"),
    ),
    (
        DISRUPTION_HTML,
        include_str!("../../config/templates/disruption.html"),
    ),
    (
        SIP_DIGEST_SUBJECT,
        include_str!("../../config/templates/sip_digest.subject.txt"),
    ),
    (
        SIP_DIGEST_TEXT,
        include_str!("../../config/templates/sip_digest.txt"),
    ),
    (
        SIP_DIGEST_HTML,
        include_str!("../../config/templates/sip_digest.html"),
    ),
    (
        REPORT_SUBJECT,
        include_str!("../../config/templates/report.subject.txt"),
    ),
    (
        REPORT_TEXT,
        include_str!("../../config/templates/report.txt"),
    ),
    (
        REPORT_HTML,
        include_str!("../../config/templates/report.html"),
    ),
];

/// The provider's identity, shown in every message (the `branding` global).
#[derive(Debug, Clone, Default)]
pub struct Branding {
    /// The provider's name as customers know it.
    pub name: String,
    /// An https URL of the logo at the top of HTML messages.
    pub logo_url: Option<String>,
    /// A line (or a few) at the bottom of every message.
    pub footer: Option<String>,
    /// The provider's website or customer portal.
    pub website: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The override folder or one of its files could not be read.
    #[error("cannot read templates from {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A template does not compile, or fails on sample data at load time.
    #[error("template {file}{}: {error}", line_suffix(*line))]
    Load {
        /// The override's path, or `embedded <name>` for a default.
        file: String,
        line: Option<usize>,
        error: minijinja::Error,
    },
    /// A template that loaded fails on real data.
    #[error("cannot render template {template}: {error}")]
    Render {
        template: &'static str,
        error: minijinja::Error,
    },
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|line| format!(":{line}")).unwrap_or_default()
}

/// A rendered message, ready for a multipart/alternative body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line, without control characters.
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceKind {
    /// The advance notice of a planned window.
    Notice,
    /// The window moved or the change's details changed.
    Update,
    Cancellation,
    /// The change was implemented; `close_code` says how it went.
    Completion,
}

impl MaintenanceKind {
    /// The name templates compare `kind` against.
    pub fn as_str(&self) -> &'static str {
        match self {
            MaintenanceKind::Notice => "notice",
            MaintenanceKind::Update => "update",
            MaintenanceKind::Cancellation => "cancellation",
            MaintenanceKind::Completion => "completion",
        }
    }
}

/// Everything a maintenance message says to one customer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MaintenanceNotice {
    pub kind: MaintenanceKind,
    /// The advance notice went out later than the customer's lead time asks.
    pub short_notice: bool,
    pub customer_name: String,
    pub recipient_name: Option<String>,
    /// e.g. `CHG0030001`
    pub change_number: String,
    /// The change's short description.
    pub summary: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// For an update: the window announced before, when it moved.
    pub previous_window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Serialised as its IANA name.
    #[serde(with = "tz_name")]
    pub time_zone: Tz,
    /// Services and CIs of this customer the change affects (names).
    pub services: Vec<String>,
    pub cis: Vec<String>,
    /// For a completion: ServiceNow close_code: "successful" |
    /// "successful_issues" | "unsuccessful" | other/None.
    pub close_code: Option<String>,
    pub sequence: u32,
}

/// `Tz` as its IANA name (chrono-tz's own serde support is a feature this
/// crate does not enable).
mod tz_name {
    use chrono_tz::Tz;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(tz: &Tz, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(tz.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Tz, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse::<Tz>()
            .map_err(|_| serde::de::Error::custom(format!("unknown time zone {name:?}")))
    }
}

/// The compiled templates; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    /// Where each template came from, for errors found at load time.
    origins: BTreeMap<&'static str, String>,
}

impl Templates {
    /// Embedded defaults, each replaced by the file of the same name in
    /// `overrides` when present. Every template is compiled here, so a broken
    /// override fails at startup (csmd check-config calls this too).
    pub fn load(overrides: Option<&Path>, branding: Branding) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|error| TemplateError::Load {
                file: "syntax settings".to_owned(),
                line: None,
                error,
            })?;
        env.set_syntax(syntax);
        // A misspelt variable in an override fails the trial render below
        // rather than silently printing nothing to customers.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_filter("datetime", datetime_filter);
        env.add_filter("date", date_filter);
        env.add_filter("time", time_filter);
        env.add_function("window", window_function);
        env.add_function("duration", duration_function);
        env.add_global(
            "branding",
            context! {
                name => branding.name,
                logo_url => branding.logo_url,
                footer => branding.footer,
                website => branding.website,
            },
        );

        if let Some(dir) = overrides {
            warn_about_unknown_files(dir)?;
        }
        let mut origins = BTreeMap::new();
        for &(name, embedded) in EMBEDDED {
            let (file, source) = match overrides.map(|dir| dir.join(name)) {
                Some(path) => match std::fs::read_to_string(&path) {
                    Ok(source) => (path.display().to_string(), source),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        (format!("embedded {name}"), embedded.to_owned())
                    }
                    Err(source) => return Err(TemplateError::Read { path, source }),
                },
                None => (format!("embedded {name}"), embedded.to_owned()),
            };
            if let Err(error) = env.add_template_owned(name, source) {
                return Err(TemplateError::Load {
                    file,
                    line: error.line(),
                    error,
                });
            }
            origins.insert(name, file);
        }

        let templates = Templates { env, origins };
        templates.trial_render()?;
        Ok(templates)
    }

    pub fn maintenance(&self, notice: &MaintenanceNotice) -> Result<Rendered, TemplateError> {
        let names = [MAINTENANCE_SUBJECT, MAINTENANCE_TEXT, MAINTENANCE_HTML];
        self.message(names, maintenance_context(notice))
    }

    pub fn disruption(&self, notice: &DisruptionNotice) -> Result<Rendered, TemplateError> {
        let names = [DISRUPTION_SUBJECT, DISRUPTION_TEXT, DISRUPTION_HTML];
        self.message(names, Value::from(minijinja::value::Serde(notice)))
    }

    pub fn sip_digest(&self, digest: &SipDigest) -> Result<Rendered, TemplateError> {
        let names = [SIP_DIGEST_SUBJECT, SIP_DIGEST_TEXT, SIP_DIGEST_HTML];
        self.message(names, Value::from(minijinja::value::Serde(digest)))
    }

    /// The monthly service report (see `crate::report::render`).
    pub fn report(
        &self,
        report: &crate::report::render::ReportView,
    ) -> Result<Rendered, TemplateError> {
        let names = [REPORT_SUBJECT, REPORT_TEXT, REPORT_HTML];
        self.message(names, Value::from(minijinja::value::Serde(report)))
    }

    /// Subject, text and HTML from their three templates; the subject is
    /// made one line and given to the bodies.
    fn message(&self, names: [&'static str; 3], ctx: Value) -> Result<Rendered, TemplateError> {
        let [subject, text, html] = names;
        let subject = single_line(&self.render(subject, &ctx)?);
        let ctx = context! { subject => &subject, ..ctx };
        Ok(Rendered {
            text: self.render(text, &ctx)?,
            html: self.render(html, &ctx)?,
            subject,
        })
    }

    fn render(&self, template: &'static str, ctx: &Value) -> Result<String, TemplateError> {
        self.env
            .get_template(template)
            .and_then(|t| t.render(ctx))
            .map_err(|error| TemplateError::Render { template, error })
    }

    /// Renders every kind of message from sample data, with and without
    /// the optional fields, and blames the file the first failure is in.
    fn trial_render(&self) -> Result<(), TemplateError> {
        let maintenance = sample_notices().into_iter().map(|n| self.maintenance(&n));
        let digests = sample_digests().into_iter().map(|d| self.sip_digest(&d));
        let disruptions = sample_disruptions()
            .into_iter()
            .map(|d| self.disruption(&d));
        let reports = crate::report::render::sample_views()
            .into_iter()
            .map(|r| self.report(&r));
        for rendered in maintenance.chain(digests).chain(disruptions).chain(reports) {
            if let Err(TemplateError::Render { template, error }) = rendered {
                let name = error.name().unwrap_or(template);
                let file = self
                    .origins
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| name.to_owned());
                return Err(TemplateError::Load {
                    file,
                    line: error.line(),
                    error,
                });
            }
        }
        Ok(())
    }
}

/// Files in the override folder that replace nothing are most likely
/// misspelt; say so instead of ignoring them silently.
fn warn_about_unknown_files(dir: &Path) -> Result<(), TemplateError> {
    let read_error = |source| TemplateError::Read {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let name = entry.map_err(read_error)?.file_name();
        let name = name.to_string_lossy();
        let is_template = name.ends_with(".txt") || name.ends_with(".html");
        if is_template && !EMBEDDED.iter().any(|(known, _)| *known == name) {
            tracing::warn!(
                folder = %dir.display(),
                file = %name,
                "Template override matches no template and is ignored"
            );
        }
    }
    Ok(())
}

fn maintenance_context(notice: &MaintenanceNotice) -> Value {
    // An "update" whose window did not move has no previous window to show.
    let previous = notice
        .previous_window
        .filter(|&window| window != (notice.start, notice.end));
    context! {
        kind => notice.kind.as_str(),
        short_notice => notice.short_notice,
        customer_name => &notice.customer_name,
        recipient_name => &notice.recipient_name,
        change_number => &notice.change_number,
        summary => &notice.summary,
        start => rfc3339(notice.start),
        end => rfc3339(notice.end),
        previous_start => previous.map(|(start, _)| rfc3339(start)),
        previous_end => previous.map(|(_, end)| rfc3339(end)),
        time_zone => notice.time_zone.name(),
        services => &notice.services,
        cis => &notice.cis,
        outcome => crate::model::itsm::close_outcome(notice.close_code.as_deref()),
        sequence => notice.sequence,
    }
}

/// A proactive disruption message to one contact.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DisruptionNotice {
    /// `notice`, `update` or `resolved`.
    pub kind: &'static str,
    pub customer_name: String,
    pub recipient_name: Option<String>,
    pub reference: String,
    /// RFC 3339, like every time the templates format.
    pub started: String,
    pub ended: Option<String>,
    pub time_zone: String,
    pub services: Vec<String>,
    pub cis: Vec<String>,
    pub alerts: Vec<DisruptionAlert>,
    pub sequence: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DisruptionAlert {
    pub summary: String,
    pub ci: Option<String>,
    pub service: Option<String>,
    pub severity: Option<String>,
    pub started: String,
    pub ended: Option<String>,
    /// `firing` or `resolved`.
    pub status: String,
}

fn sample_disruptions() -> Vec<DisruptionNotice> {
    let alert = DisruptionAlert {
        summary: "Sample alert".into(),
        ci: Some("sample-ci".into()),
        service: Some("Sample service".into()),
        severity: Some("critical".into()),
        started: "2026-01-01T10:00:00Z".into(),
        ended: Some("2026-01-01T11:00:00Z".into()),
        status: "resolved".into(),
    };
    let firing = DisruptionAlert {
        ci: None,
        service: None,
        severity: None,
        ended: None,
        status: "firing".into(),
        ..alert.clone()
    };
    let notice = DisruptionNotice {
        kind: "notice",
        customer_name: "Sample Customer".into(),
        recipient_name: Some("Sample Contact".into()),
        reference: "DIS-sample-1".into(),
        started: "2026-01-01T10:00:00Z".into(),
        ended: None,
        time_zone: "Europe/Paris".into(),
        services: vec!["Sample service".into()],
        cis: vec!["sample-ci".into()],
        alerts: vec![firing, alert],
        sequence: 0,
    };
    let resolved = DisruptionNotice {
        kind: "resolved",
        recipient_name: None,
        ended: Some("2026-01-01T11:00:00Z".into()),
        services: Vec::new(),
        cis: Vec::new(),
        ..notice.clone()
    };
    vec![notice, resolved]
}

/// The digest of overdue SIP actions, for the CSM team.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SipDigest {
    /// The day, `YYYY-MM-DD`, in the daemon's time zone.
    pub date: String,
    pub count: usize,
    pub customers: Vec<DigestCustomer>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DigestCustomer {
    pub id: String,
    pub name: String,
    pub actions: Vec<DigestAction>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DigestAction {
    pub id: String,
    pub title: String,
    pub owner: Option<String>,
    pub target_date: String,
    pub days_overdue: i64,
    pub status: String,
    pub source: String,
    /// What it is linked to: a problem and its task (`PRB…`, `PTASK…`),
    /// a change, incidents.
    pub problem: Option<String>,
    pub problem_task: Option<String>,
    pub change: Option<String>,
    pub incidents: Vec<String>,
}

fn sample_digests() -> Vec<SipDigest> {
    let action = DigestAction {
        id: "SIP-1".into(),
        title: "Sample action".into(),
        owner: Some("Sample Owner".into()),
        target_date: "2026-01-31".into(),
        days_overdue: 3,
        status: "in-progress".into(),
        source: "rca".into(),
        problem: Some("PRB0000001".into()),
        problem_task: Some("PTASK0000001".into()),
        change: Some("CHG0000001".into()),
        incidents: vec!["INC0000001".into()],
    };
    let bare = DigestAction {
        owner: None,
        days_overdue: 1,
        problem: None,
        problem_task: None,
        change: None,
        incidents: Vec::new(),
        ..action.clone()
    };
    vec![SipDigest {
        date: "2026-02-03".into(),
        count: 2,
        customers: vec![DigestCustomer {
            id: "sample".into(),
            name: "Sample Customer".into(),
            actions: vec![action, bare],
        }],
    }]
}

fn sample_notices() -> Vec<MaintenanceNotice> {
    let start = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(20_000);
    let end = start + chrono::Duration::hours(4);
    let full = MaintenanceNotice {
        kind: MaintenanceKind::Notice,
        short_notice: true,
        customer_name: "Sample Customer".to_owned(),
        recipient_name: Some("Sam Sample".to_owned()),
        change_number: "CHG0000000".to_owned(),
        summary: Some("Sample change".to_owned()),
        start,
        end,
        previous_window: Some((start - chrono::Duration::days(1), end)),
        time_zone: Tz::Europe__Paris,
        services: vec!["Sample service".to_owned()],
        cis: vec!["sample-ci".to_owned()],
        close_code: Some("successful".to_owned()),
        sequence: 1,
    };
    let minimal = MaintenanceNotice {
        short_notice: false,
        recipient_name: None,
        summary: None,
        previous_window: None,
        services: Vec::new(),
        cis: Vec::new(),
        close_code: None,
        ..full.clone()
    };
    let kinds = [
        MaintenanceKind::Notice,
        MaintenanceKind::Update,
        MaintenanceKind::Cancellation,
        MaintenanceKind::Completion,
    ];
    kinds
        .into_iter()
        .flat_map(|kind| {
            [
                MaintenanceNotice {
                    kind,
                    ..full.clone()
                },
                MaintenanceNotice {
                    kind,
                    ..minimal.clone()
                },
            ]
        })
        .collect()
}

/// Header-safe text: no control characters (CR, LF, tab…), no runs of
/// white space, nothing at either end, so no value can start a header of
/// its own.
pub fn single_line(subject: &str) -> String {
    subject
        .split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn parse_instant(value: &str) -> Result<DateTime<Utc>, minijinja::Error> {
    DateTime::parse_from_rfc3339(value)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| {
            minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("{value:?} is not an RFC 3339 date and time: {e}"),
            )
        })
}

/// The zone named by the argument, else the context's `time_zone`.
fn zone(state: &State, tz: Option<&str>) -> Result<Tz, minijinja::Error> {
    let from_context = state.lookup("time_zone");
    let name = match tz {
        Some(name) => name,
        None => from_context
            .as_ref()
            .and_then(Value::as_str)
            .ok_or_else(|| {
                minijinja::Error::new(
                    ErrorKind::MissingArgument,
                    "no time zone given and no time_zone in the context",
                )
            })?,
    };
    name.parse::<Tz>().map_err(|_| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("unknown time zone {name:?} (expected an IANA name like Europe/Paris)"),
        )
    })
}

const DATE: &str = "%a %-d %b %Y";
const TIME: &str = "%H:%M";

/// `{{ start|datetime }}` → `Tue 15 Dec 2026, 22:00 CET`.
fn datetime_filter(
    state: &State,
    value: &str,
    tz: Option<&str>,
) -> Result<String, minijinja::Error> {
    let at = parse_instant(value)?.with_timezone(&zone(state, tz)?);
    Ok(at.format(&format!("{DATE}, {TIME} %Z")).to_string())
}

/// `{{ start|date }}` → `Tue 15 Dec 2026`.
fn date_filter(state: &State, value: &str, tz: Option<&str>) -> Result<String, minijinja::Error> {
    let at = parse_instant(value)?.with_timezone(&zone(state, tz)?);
    Ok(at.format(DATE).to_string())
}

/// `{{ start|time }}` → `22:00 CET`.
fn time_filter(state: &State, value: &str, tz: Option<&str>) -> Result<String, minijinja::Error> {
    let at = parse_instant(value)?.with_timezone(&zone(state, tz)?);
    Ok(at.format(&format!("{TIME} %Z")).to_string())
}

/// `{{ window(start, end) }}` → `Tue 15 Dec 2026, 22:00–23:30 CET (Europe/Paris)`.
fn window_function(
    state: &State,
    start: &str,
    end: &str,
    tz: Option<&str>,
) -> Result<String, minijinja::Error> {
    Ok(format_window(
        parse_instant(start)?,
        parse_instant(end)?,
        zone(state, tz)?,
    ))
}

/// `{{ duration(start, end) }}` → `3 hours 30 minutes`.
fn duration_function(start: &str, end: &str) -> Result<String, minijinja::Error> {
    Ok(format_duration(parse_instant(end)? - parse_instant(start)?))
}

/// A window in one zone, naming the zone's abbreviation (per end, when
/// daylight saving changes inside the window) and its IANA name; both
/// dates when the window crosses midnight.
fn format_window(start: DateTime<Utc>, end: DateTime<Utc>, tz: Tz) -> String {
    let (start, end) = (start.with_timezone(&tz), end.with_timezone(&tz));
    let start_zone = start.format("%Z").to_string();
    let end_zone = end.format("%Z").to_string();
    let start_day = start.format(&format!("{DATE}, {TIME}")).to_string();
    let same_day = start.date_naive() == end.date_naive();
    let end_time = if same_day {
        end.format(TIME).to_string()
    } else {
        end.format(&format!("{DATE}, {TIME}")).to_string()
    };
    let zone_name = tz.name();
    match (same_day, start_zone == end_zone) {
        (true, true) => format!("{start_day}–{end_time} {end_zone} ({zone_name})"),
        (false, true) => format!("{start_day} – {end_time} {end_zone} ({zone_name})"),
        (_, false) => format!("{start_day} {start_zone} – {end_time} {end_zone} ({zone_name})"),
    }
}

fn format_duration(duration: chrono::Duration) -> String {
    let minutes = duration.num_minutes().max(0);
    let parts = [
        (minutes / 1440, "day"),
        (minutes / 60 % 24, "hour"),
        (minutes % 60, "minute"),
    ];
    let words: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}{}", if *n == 1 { "" } else { "s" }))
        .collect();
    if words.is_empty() {
        "less than a minute".to_owned()
    } else {
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn branding() -> Branding {
        Branding {
            name: "Example Networks".to_owned(),
            logo_url: None,
            footer: Some("Support: +33 1 23 45 67 89, 24/7".to_owned()),
            website: Some("https://portal.example.net".to_owned()),
        }
    }

    fn templates() -> Templates {
        Templates::load(None, branding()).unwrap()
    }

    /// A four-hour window from 21:00Z on Tuesday 15 December 2026 for a
    /// customer in Paris.
    fn notice(kind: MaintenanceKind) -> MaintenanceNotice {
        MaintenanceNotice {
            kind,
            short_notice: false,
            customer_name: "Acme Corp".to_owned(),
            recipient_name: Some("Jane Doe".to_owned()),
            change_number: "CHG0030001".to_owned(),
            summary: Some("Core router firmware upgrade".to_owned()),
            start: at("2026-12-15T21:00:00Z"),
            end: at("2026-12-16T01:00:00Z"),
            previous_window: None,
            time_zone: Tz::Europe__Paris,
            services: vec!["Internet access".to_owned(), "MPLS VPN".to_owned()],
            cis: vec!["par-core-rtr-01".to_owned()],
            close_code: None,
            sequence: 0,
        }
    }

    const PARIS_WINDOW: &str = "Tue 15 Dec 2026, 22:00 – Wed 16 Dec 2026, 02:00 CET (Europe/Paris)";

    /// What a mail client shows of the HTML's text (entities decoded).
    fn unescaped(html: &str) -> String {
        html.replace("&#x2f;", "/")
            .replace("&#x27;", "'")
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    fn assert_in_both(rendered: &Rendered, fact: &str) {
        assert!(
            rendered.text.contains(fact),
            "text lacks {fact:?}:\n{}",
            rendered.text
        );
        let html = unescaped(&rendered.html);
        assert!(html.contains(fact), "html lacks {fact:?}:\n{html}");
    }

    #[test]
    fn a_notice_names_the_change_the_window_in_the_customers_zone_and_what_is_affected() {
        let rendered = templates()
            .maintenance(&notice(MaintenanceKind::Notice))
            .unwrap();
        assert_eq!(
            rendered.subject,
            "Planned maintenance CHG0030001 on Tue 15 Dec 2026, 22:00 CET"
        );
        for fact in [
            "Dear Jane Doe",
            "CHG0030001",
            "Core router firmware upgrade",
            PARIS_WINDOW,
            "4 hours",
            "Internet access",
            "MPLS VPN",
            "par-core-rtr-01",
            "Example Networks",
        ] {
            assert_in_both(&rendered, fact);
        }
        assert!(!rendered.text.contains("short notice"));
    }

    #[test]
    fn a_short_notice_says_so_in_the_subject_and_body() {
        let rendered = templates()
            .maintenance(&MaintenanceNotice {
                short_notice: true,
                ..notice(MaintenanceKind::Notice)
            })
            .unwrap();
        assert_eq!(
            rendered.subject,
            "[Short notice] Planned maintenance CHG0030001 on Tue 15 Dec 2026, 22:00 CET"
        );
        assert_in_both(&rendered, "later than the notice period agreed with you");
    }

    #[test]
    fn summer_time_and_other_zones_are_named_with_abbreviation_and_iana_name() {
        let templates = templates();
        let summer = MaintenanceNotice {
            start: at("2026-07-14T21:00:00Z"),
            end: at("2026-07-14T21:30:00Z"),
            ..notice(MaintenanceKind::Notice)
        };
        let rendered = templates.maintenance(&summer).unwrap();
        assert_eq!(
            rendered.subject,
            "Planned maintenance CHG0030001 on Tue 14 Jul 2026, 23:00 CEST"
        );
        assert_in_both(
            &rendered,
            "Tue 14 Jul 2026, 23:00–23:30 CEST (Europe/Paris)",
        );
        assert_in_both(&rendered, "30 minutes");

        let new_york = MaintenanceNotice {
            time_zone: Tz::America__New_York,
            ..notice(MaintenanceKind::Notice)
        };
        let rendered = templates.maintenance(&new_york).unwrap();
        assert_eq!(
            rendered.subject,
            "Planned maintenance CHG0030001 on Tue 15 Dec 2026, 16:00 EST"
        );
        assert_in_both(
            &rendered,
            "Tue 15 Dec 2026, 16:00–20:00 EST (America/New_York)",
        );
    }

    #[test]
    fn a_window_across_a_clock_change_names_both_offsets() {
        let rendered = templates()
            .maintenance(&MaintenanceNotice {
                start: at("2026-10-24T23:00:00Z"),
                end: at("2026-10-25T02:00:00Z"),
                ..notice(MaintenanceKind::Notice)
            })
            .unwrap();
        assert_in_both(
            &rendered,
            "Sun 25 Oct 2026, 01:00 CEST – 03:00 CET (Europe/Paris)",
        );
        assert_in_both(&rendered, "3 hours");
    }

    #[test]
    fn an_update_shows_the_old_and_the_new_window() {
        let rendered = templates()
            .maintenance(&MaintenanceNotice {
                previous_window: Some((at("2026-12-08T21:00:00Z"), at("2026-12-09T01:00:00Z"))),
                sequence: 1,
                ..notice(MaintenanceKind::Update)
            })
            .unwrap();
        assert_eq!(
            rendered.subject,
            "Updated: Planned maintenance CHG0030001 on Tue 15 Dec 2026, 22:00 CET"
        );
        assert_in_both(&rendered, "has been moved");
        assert_in_both(
            &rendered,
            "Tue 8 Dec 2026, 22:00 – Wed 9 Dec 2026, 02:00 CET (Europe/Paris)",
        );
        assert_in_both(&rendered, PARIS_WINDOW);
        assert_in_both(&rendered, "Internet access");
    }

    #[test]
    fn an_update_without_a_move_says_the_window_is_unchanged() {
        let unchanged = notice(MaintenanceKind::Update);
        let rendered = templates()
            .maintenance(&MaintenanceNotice {
                previous_window: Some((unchanged.start, unchanged.end)),
                ..unchanged
            })
            .unwrap();
        assert_in_both(&rendered, "The window is unchanged");
        assert!(!rendered.text.contains("has been moved"));
    }

    #[test]
    fn a_cancellation_says_nothing_will_happen() {
        let rendered = templates()
            .maintenance(&notice(MaintenanceKind::Cancellation))
            .unwrap();
        assert_eq!(
            rendered.subject,
            "Cancelled: Planned maintenance CHG0030001 on Tue 15 Dec 2026, 22:00 CET"
        );
        assert_in_both(&rendered, "has been cancelled");
        assert_in_both(&rendered, "No work will take place");
        assert_in_both(&rendered, PARIS_WINDOW);
    }

    #[test]
    fn a_completion_states_the_outcome_in_words() {
        let templates = templates();
        let cases = [
            (Some("successful"), "completed successfully"),
            (Some("successful_issues"), "completed with issues"),
            (
                Some("unsuccessful"),
                "was not successful; our team will contact you",
            ),
            (Some("cancelled"), "has been completed"),
            (None, "has been completed"),
        ];
        for (close_code, words) in cases {
            let rendered = templates
                .maintenance(&MaintenanceNotice {
                    close_code: close_code.map(str::to_owned),
                    ..notice(MaintenanceKind::Completion)
                })
                .unwrap();
            assert_eq!(
                rendered.subject,
                "Completed: Planned maintenance CHG0030001 on Tue 15 Dec 2026, 22:00 CET"
            );
            assert_in_both(&rendered, words);
        }
    }

    #[test]
    fn html_escapes_every_field_and_text_keeps_them_verbatim() {
        let rendered = templates()
            .maintenance(&MaintenanceNotice {
                customer_name: "<b>Evil & Co</b>".to_owned(),
                recipient_name: None,
                summary: Some("<script>alert(1)</script>".to_owned()),
                services: vec!["<img src=x onerror=alert(1)>".to_owned()],
                ..notice(MaintenanceKind::Notice)
            })
            .unwrap();
        assert!(
            rendered
                .html
                .contains("&lt;b&gt;Evil &amp; Co&lt;&#x2f;b&gt;")
        );
        assert!(
            rendered
                .html
                .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;")
        );
        assert!(!rendered.html.contains("<b>Evil"));
        assert!(!rendered.html.contains("<script"));
        assert!(!rendered.html.contains("<img src=x"));
        assert!(rendered.text.contains("<b>Evil & Co</b>"));
    }

    #[test]
    fn subjects_stay_on_one_line_whatever_the_data() {
        let rendered = templates()
            .maintenance(&MaintenanceNotice {
                change_number: "CHG1\r\nBcc: x@y\u{0}\t  two".to_owned(),
                customer_name: "Acme\r\nBcc: x@y".to_owned(),
                ..notice(MaintenanceKind::Notice)
            })
            .unwrap();
        assert!(!rendered.subject.contains(['\r', '\n', '\t', '\0']));
        assert!(
            rendered
                .subject
                .starts_with("Planned maintenance CHG1 Bcc: x@y two on ")
        );
    }

    #[test]
    fn branding_appears_in_both_parts_and_the_logo_only_when_configured() {
        let without_logo = templates()
            .maintenance(&notice(MaintenanceKind::Notice))
            .unwrap();
        assert!(!without_logo.html.contains("<img"));
        assert!(
            without_logo
                .text
                .contains("Support: +33 1 23 45 67 89, 24/7")
        );
        assert!(without_logo.text.contains("https://portal.example.net"));
        assert!(
            without_logo
                .html
                .contains("Support: +33 1 23 45 67 89, 24&#x2f;7")
        );

        let with_logo = Templates::load(
            None,
            Branding {
                logo_url: Some("https://cdn.example.net/logo.png".to_owned()),
                ..branding()
            },
        )
        .unwrap()
        .maintenance(&notice(MaintenanceKind::Notice))
        .unwrap();
        assert!(with_logo.html.contains(
            r#"<img src="https:&#x2f;&#x2f;cdn.example.net&#x2f;logo.png" alt="Example Networks""#
        ));
    }

    #[test]
    fn the_html_is_a_single_600px_column_without_external_resources() {
        let html = templates()
            .maintenance(&notice(MaintenanceKind::Notice))
            .unwrap()
            .html;
        assert!(html.contains("max-width:600px"));
        assert!(html.contains(r#"name="viewport""#));
        assert!(!html.contains("<link"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("<style"));
    }

    #[test]
    fn an_override_replaces_only_its_own_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(MAINTENANCE_SUBJECT),
            "Works {{ change_number }} at {{ start|time }} ({{ kind }})\n",
        )
        .unwrap();
        let rendered = Templates::load(Some(dir.path()), branding())
            .unwrap()
            .maintenance(&notice(MaintenanceKind::Notice))
            .unwrap();
        assert_eq!(rendered.subject, "Works CHG0030001 at 22:00 CET (notice)");
        assert_in_both(&rendered, PARIS_WINDOW);
    }

    #[test]
    fn a_broken_override_fails_at_load_naming_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MAINTENANCE_TEXT);
        std::fs::write(&path, "Hello\n{% if kind == %}\n{% endif %}\n").unwrap();
        let error = Templates::load(Some(dir.path()), branding()).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, TemplateError::Load { line: Some(2), .. }),
            "{error:?}"
        );
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.contains(&format!("{}:2: ", path.display())),
            "{message}"
        );
        assert!(message.contains("syntax error"), "{message}");
    }

    #[test]
    fn an_override_using_an_unknown_variable_fails_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LAYOUT_HTML);
        std::fs::write(
            &path,
            "<p>{{ brandng.name }}</p>{% block content %}{% endblock %}",
        )
        .unwrap();
        let message = Templates::load(Some(dir.path()), branding())
            .unwrap_err()
            .to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("undefined"), "{message}");
    }

    #[test]
    fn a_missing_override_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let error = Templates::load(Some(&missing), branding()).unwrap_err();
        assert!(matches!(error, TemplateError::Read { .. }), "{error:?}");
    }

    #[test]
    fn templates_can_be_shared_between_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Templates>();
    }

    #[test]
    fn durations_read_naturally() {
        let cases = [
            (0, "less than a minute"),
            (1, "1 minute"),
            (90, "1 hour 30 minutes"),
            (24 * 60 + 60, "1 day 1 hour"),
        ];
        for (minutes, words) in cases {
            assert_eq!(format_duration(chrono::Duration::minutes(minutes)), words);
        }
    }
}
