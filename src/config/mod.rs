//! Configuration: `csmd.toml`, the customer files and the connector
//! profiles, loaded and checked in one place. `csmd check-config` and
//! `csmd run` call the same [`load`], so what passes the check is what runs.
//!
//! Loading collects every problem it can find, each as `file:line:column:
//! message`. A section with a TOML type error or unknown key stops at that
//! error, but every other section, entry and file is still checked.

mod connector;
pub mod customer;
pub mod diag;
mod sections;
pub mod value;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

pub use connector::{AlertTickets, Connector, WebhookAuth};
pub use customer::Customer;
use customer::PathStep;
pub use diag::{Diagnostic, Diagnostics};
pub use sections::{
    BrandingSection, ConnectorSection, DaemonSection, DisruptionsSection, EmailSection,
    IntegritySection, LogFormat, MaintenanceSection, Reopen, RuleSection, SchedulesSection,
    SipSection, SmtpSection, TlsMode, TransportKind, WebhookAuthKind, WebhookSection,
};

use crate::connector::rest::profile::TicketPurpose;
use crate::model::integrity::Rule;
use crate::model::{ConnectorName, CustomerId};
use diag::{SourceFile, file_error};
use value::{RateLimit, SecretContext, SecretRef, TimeZone, io_reason};

/// The default configuration path, overridden by `--config` or `CSMD_CONFIG`.
pub const DEFAULT_PATH: &str = "/etc/csmd/csmd.toml";

/// The whole validated configuration: what the daemon runs with.
#[derive(Debug)]
pub struct Config {
    /// The configuration file this was loaded from.
    pub path: PathBuf,
    pub daemon: Daemon,
    pub email: Email,
    pub schedules: SchedulesSection,
    pub maintenance: MaintenanceSection,
    pub sip: Sip,
    pub disruptions: DisruptionsSection,
    pub integrity: Integrity,
    pub connectors: Vec<Connector>,
    pub customers: Vec<Customer>,
}

/// `[integrity]`, checked.
#[derive(Debug, Clone)]
pub struct Integrity {
    /// The ITSM connector writing the tickets.
    pub writeback: Option<ConnectorName>,
    pub assignment_group: Option<String>,
    pub reopen: Reopen,
    pub charge_within: std::time::Duration,
    rules: BTreeMap<Rule, RuleSection>,
}

impl Default for Integrity {
    fn default() -> Self {
        Integrity {
            writeback: None,
            assignment_group: None,
            reopen: Reopen::Same,
            charge_within: DEFAULT_CHARGE_WITHIN,
            rules: BTreeMap::new(),
        }
    }
}

const DEFAULT_CHARGE_WITHIN: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

impl Integrity {
    /// A rule's settings: on, without grace, unless configured.
    pub fn rule(&self, rule: Rule) -> RuleSection {
        self.rules.get(&rule).cloned().unwrap_or_default()
    }

    /// The rules that are on, with their grace periods, and where tickets
    /// go, for the check-config summary.
    pub fn describe(&self) -> String {
        let on: Vec<(Rule, RuleSection)> = Rule::ALL
            .iter()
            .map(|&rule| (rule, self.rule(rule)))
            .filter(|(_, section)| section.enabled)
            .collect();
        let tickets = match &self.writeback {
            Some(connector) => format!("one ticket per issue through {connector}"),
            None => "no tickets (no [integrity] writeback)".to_string(),
        };
        let graceless = on.iter().all(|(_, section)| section.grace.0.is_zero());
        let rules = if on.is_empty() {
            "every rule off".to_string()
        } else if on.len() == Rule::ALL.len() && graceless {
            format!("all {} rules on", on.len())
        } else {
            let named: Vec<String> = on
                .iter()
                .map(|(rule, section)| {
                    if section.grace.0.is_zero() {
                        rule.to_string()
                    } else {
                        format!("{rule} (grace {})", section.grace)
                    }
                })
                .collect();
            format!(
                "{} of {} rules on: {}",
                on.len(),
                Rule::ALL.len(),
                named.join(", ")
            )
        };
        format!("{rules}; {tickets}")
    }
}

/// `[sip]`, checked.
#[derive(Debug, Clone)]
pub struct Sip {
    pub csat_below: f64,
    pub nps_below: f64,
    pub digest_to: Vec<lettre::message::Mailbox>,
}

impl Default for Sip {
    fn default() -> Self {
        let section = SipSection::default();
        Sip {
            csat_below: section.csat_below,
            nps_below: section.nps_below,
            digest_to: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct Daemon {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_token: Option<SecretString>,
    pub time_zone: TimeZone,
    pub log_format: LogFormat,
    pub log_level: String,
    pub max_body_bytes: usize,
    /// sled's page cache, in bytes.
    pub store_cache_bytes: u64,
    /// Acknowledged events the engine may trail by before deliveries wait.
    pub max_unapplied_events: u64,
    pub shutdown_grace: Duration,
    pub journal_retention: Duration,
    /// How long resolved alerts are kept after their last delivery.
    pub alert_retention: Duration,
}

#[derive(Debug)]
pub struct Email {
    pub from: lettre::message::Mailbox,
    pub reply_to: Option<lettre::message::Mailbox>,
    pub rate: RateLimit,
    pub concurrency: usize,
    pub transport: Transport,
    pub templates_dir: Option<PathBuf>,
    pub branding: BrandingSection,
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    pub give_up_after: Duration,
    pub keep_sent: Duration,
}

#[derive(Debug)]
pub enum Transport {
    File { dir: PathBuf },
    Smtp(Smtp),
    Sendmail { command: PathBuf },
}

#[derive(Debug)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub credentials: Option<(String, SecretString)>,
    pub timeout: Duration,
    /// Extra trusted CA certificates (DER), from `ca_file`.
    pub extra_roots: Vec<Vec<u8>>,
}

/// Loads and checks the configuration at `path`, its customer files and the
/// connector profiles it names.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    let mut diags = Diagnostics::default();
    let text = read_config(path)?;
    let source = SourceFile { path, text: &text };
    let root = DeTable::parse(&text).map_err(|e| one(source.from_toml(&e)))?;
    let config_dir = absolute(path.parent().unwrap_or(Path::new(".")));
    let secrets = SecretContext::from_env(&config_dir);

    let mut daemon = None;
    // Whether connectors and customer files can be checked: not when
    // `[daemon]` has an error in the keys they depend on.
    let mut daemon_usable = true;
    let mut email_present = false;
    let mut email = None;
    let mut schedules = None;
    let mut maintenance = None;
    let mut sip = None;
    let mut disruptions = None;
    let mut integrity_section = None;
    let mut connector_sections = Vec::new();
    for (key, value) in root.into_inner() {
        match key.get_ref().as_ref() {
            "daemon" => {
                daemon = section::<DaemonSection>(&source, value.clone(), &mut diags);
                if daemon.is_none() {
                    daemon = daemon_fallback(value);
                    daemon_usable = daemon.is_some();
                }
            }
            "email" => {
                email_present = true;
                email = section::<EmailSection>(&source, value, &mut diags);
            }
            "schedules" => schedules = section::<SchedulesSection>(&source, value, &mut diags),
            "maintenance" => {
                maintenance = section::<MaintenanceSection>(&source, value, &mut diags);
            }
            "disruptions" => {
                disruptions = section::<DisruptionsSection>(&source, value, &mut diags);
            }
            "integrity" => {
                integrity_section = section::<IntegritySection>(&source, value, &mut diags);
            }
            "sip" => {
                sip = section::<SipSection>(&source, value, &mut diags)
                    .map(|s| resolve_sip(&source, &s, &mut diags));
            }
            "connector" => connector_sections = connector_entries(&source, value, &mut diags),
            other => diags.push(source.at(
                key.span(),
                format!("unknown section `{other}`; expected `daemon`, `email`, `schedules`, `maintenance`, `disruptions`, `integrity`, `sip` or `connector`"),
            )),
        }
    }

    let daemon_section = match daemon {
        Some(d) => d,
        None => section::<DaemonSection>(&source, empty_table(), &mut diags)
            .ok_or_else(|| std::mem::take(&mut diags))?,
    };
    let daemon = resolve_daemon(&source, &daemon_section, &config_dir, &secrets, &mut diags);
    let email = match email {
        Some(section) => resolve_email(
            &source,
            &section,
            &daemon.data_dir,
            &config_dir,
            &secrets,
            &mut diags,
        ),
        // Its error is already reported.
        None if email_present => None,
        None => {
            diags.push(file_error(
                path,
                "missing [email] section: set at least `from`, the sender customers see",
            ));
            None
        }
    };
    let (connectors, customers) = if daemon_usable {
        let connectors = connector::resolve_connectors(
            &source,
            &connector_sections,
            &daemon_section,
            &daemon,
            &config_dir,
            &secrets,
            &mut diags,
        );
        let customers_dir = absolute(&config_dir.join(&daemon_section.customers_dir));
        (connectors, load_customers(&customers_dir, &mut diags))
    } else {
        (Vec::new(), Vec::new())
    };

    let integrity = integrity_section
        .map(|section| resolve_integrity(&source, section, &connectors, &mut diags))
        .unwrap_or_default();

    match email {
        Some(email) if diags.is_empty() => Ok(Config {
            path: path.to_path_buf(),
            daemon,
            email,
            schedules: schedules.unwrap_or_default(),
            maintenance: maintenance.unwrap_or_default(),
            sip: sip.unwrap_or_default(),
            disruptions: disruptions.unwrap_or_default(),
            integrity,
            connectors,
            customers,
        }),
        _ => Err(diags),
    }
}

/// `[integrity]`: its `writeback` names a connector that can write "Data
/// Integrity" tickets.
fn resolve_integrity(
    source: &SourceFile,
    section: IntegritySection,
    connectors: &[Connector],
    diags: &mut Diagnostics,
) -> Integrity {
    let writeback = section.writeback.as_ref().and_then(|name| {
        let span = name.span();
        let found = connectors.iter().find(|c| c.name.as_str() == name.get_ref());
        match found {
            Some(c) if c.ticket_profile(TicketPurpose::DataIntegrity).is_some() => {
                Some(c.name.clone())
            }
            Some(c) => {
                diags.push(source.at(
                    span,
                    format!(
                        "connector `{}` cannot write data-integrity tickets: its profile has no [api.write.tickets.data_integrity]",
                        c.name
                    ),
                ));
                None
            }
            None => {
                diags.push(source.at(
                    span,
                    format!("no connector `{}` to write tickets with", name.get_ref()),
                ));
                None
            }
        }
    });
    Integrity {
        writeback,
        assignment_group: section.assignment_group,
        reopen: section.reopen,
        charge_within: section.charge_within.map_or(DEFAULT_CHARGE_WITHIN, |d| d.0),
        rules: section.rules,
    }
}

fn read_config(path: &Path) -> Result<String, Diagnostics> {
    std::fs::read_to_string(path).map_err(|e| {
        one(file_error(
            path,
            format!("cannot read configuration: {}", io_reason(&e)),
        ))
    })
}

fn one(d: Diagnostic) -> Diagnostics {
    Diagnostics(vec![d])
}

/// The absolute form of `path` with `.` and `..` folded away lexically, so
/// paths read well in summaries and logs.
pub(crate) fn absolute(path: &Path) -> PathBuf {
    use std::path::Component;
    let full = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut clean = PathBuf::new();
    for part in full.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    clean
}

/// When `[daemon]` has an error: its defaults, with the keys connectors and
/// customer files are checked against (`listen`, `customers_dir`,
/// `connector_dirs`) read on their own, so one mistake in `[daemon]` neither
/// hides problems elsewhere nor invents some (a profile "not found" in the
/// default folders). `None` when one of those keys is itself the mistake.
fn daemon_fallback(value: Spanned<DeValue>) -> Option<DaemonSection> {
    #[derive(serde::Deserialize)]
    struct Locations {
        listen: Option<SocketAddr>,
        customers_dir: Option<PathBuf>,
        connector_dirs: Option<Vec<PathBuf>>,
    }
    let found = Locations::deserialize(ValueDeserializer::from(value)).ok()?;
    let mut fallback = DaemonSection::deserialize(ValueDeserializer::from(empty_table())).ok()?;
    fallback.listen = found.listen.unwrap_or(fallback.listen);
    fallback.customers_dir = found.customers_dir.unwrap_or(fallback.customers_dir);
    fallback.connector_dirs = found.connector_dirs.unwrap_or(fallback.connector_dirs);
    Some(fallback)
}

fn empty_table<'a>() -> Spanned<DeValue<'a>> {
    Spanned::new(0..0, DeValue::Table(DeTable::new()))
}

/// Deserializes one section, recording its first error.
fn section<T: DeserializeOwned>(
    source: &SourceFile,
    value: Spanned<DeValue>,
    diags: &mut Diagnostics,
) -> Option<T> {
    T::deserialize(ValueDeserializer::from(value))
        .map_err(|e| diags.push(source.from_toml(&e)))
        .ok()
}

fn connector_entries(
    source: &SourceFile,
    value: Spanned<DeValue>,
    diags: &mut Diagnostics,
) -> Vec<ConnectorSection> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => items
            .into_iter()
            .filter_map(|item| section::<ConnectorSection>(source, item, diags))
            .collect(),
        _ => {
            diags.push(source.at(
                span,
                "`connector` must be an array of tables: write each as [[connector]]",
            ));
            Vec::new()
        }
    }
}

pub(crate) fn resolve_secret(
    source: &SourceFile,
    secret: &Spanned<SecretRef>,
    secrets: &SecretContext,
    diags: &mut Diagnostics,
) -> Option<SecretString> {
    secret
        .get_ref()
        .resolve(secrets)
        .map_err(|e| diags.push(source.at(secret.span(), e)))
        .ok()
}

/// The shortest `alert_retention` accepted: sources deliver a resolution
/// again for a while (Alertmanager on every `repeat_interval` and on
/// retries), and an alert removed before it stops would be taken for new.
const MIN_ALERT_RETENTION: Duration = Duration::from_secs(86_400);

/// The largest page cache `store_cache_mib` accepts: 64 GiB.
const MAX_CACHE_MIB: u64 = 64 * 1024;

fn resolve_daemon(
    source: &SourceFile,
    section: &DaemonSection,
    config_dir: &Path,
    secrets: &SecretContext,
    diags: &mut Diagnostics,
) -> Daemon {
    let log_level = section.log_level.get_ref();
    if let Err(e) = log_level.parse::<tracing_subscriber::EnvFilter>() {
        diags.push(source.at(
            section.log_level.span(),
            format!("log_level {log_level:?} is not a tracing filter: {e}"),
        ));
    }
    let cache_mib = *section.store_cache_mib.get_ref();
    if !(1..=MAX_CACHE_MIB).contains(&cache_mib) {
        diags.push(source.at(
            section.store_cache_mib.span(),
            format!("store_cache_mib must be from 1 to {MAX_CACHE_MIB} (MiB), not {cache_mib}"),
        ));
    }
    let alert_retention = section.alert_retention.get_ref().0;
    if alert_retention < MIN_ALERT_RETENTION {
        diags.push(source.at(
            section.alert_retention.span(),
            format!(
                "alert_retention must be at least 1d, not {}",
                section.alert_retention.get_ref()
            ),
        ));
    }
    Daemon {
        data_dir: absolute(&config_dir.join(&section.data_dir)),
        listen: section.listen,
        admin_token: section
            .admin_token
            .as_ref()
            .and_then(|s| resolve_secret(source, s, secrets, diags)),
        time_zone: section.time_zone,
        log_format: section.log_format,
        log_level: log_level.clone(),
        max_body_bytes: section.max_body_bytes,
        store_cache_bytes: cache_mib.clamp(1, MAX_CACHE_MIB) * 1024 * 1024,
        max_unapplied_events: section.max_unapplied_events,
        shutdown_grace: section.shutdown_grace.0,
        journal_retention: section.journal_retention.0,
        alert_retention,
    }
}

fn resolve_sip(source: &SourceFile, section: &SipSection, diags: &mut Diagnostics) -> Sip {
    let mut digest_to = Vec::new();
    for to in &section.digest_to {
        match to.get_ref().parse::<lettre::message::Mailbox>() {
            Ok(mailbox) => digest_to.push(mailbox),
            Err(e) => diags.push(source.at(
                to.span(),
                format!(
                    "invalid digest recipient {:?} ({e}): expected an address like \"CSM team <csm@example.net>\"",
                    to.get_ref()
                ),
            )),
        }
    }
    Sip {
        csat_below: section.csat_below,
        nps_below: section.nps_below,
        digest_to,
    }
}

fn resolve_email(
    source: &SourceFile,
    section: &EmailSection,
    data_dir: &Path,
    config_dir: &Path,
    secrets: &SecretContext,
    diags: &mut Diagnostics,
) -> Option<Email> {
    let from = section
        .from
        .get_ref()
        .parse::<lettre::message::Mailbox>()
        .map_err(|e| {
            diags.push(source.at(
                section.from.span(),
                format!("invalid sender {:?}: {e}", section.from.get_ref()),
            ))
        })
        .ok();
    let transport = match section.transport {
        TransportKind::File => Some(Transport::File {
            dir: section
                .file_dir
                .as_ref()
                .map_or_else(|| data_dir.join("mail"), |d| data_dir.join(d)),
        }),
        TransportKind::Sendmail => Some(Transport::Sendmail {
            command: section.sendmail_command.clone(),
        }),
        TransportKind::Smtp => match &section.smtp {
            None => {
                diags.push(file_error(
                    source.path,
                    "[email] transport = \"smtp\" needs an [email.smtp] section with `host`",
                ));
                None
            }
            Some(smtp) => resolve_smtp(source, smtp, secrets, diags).map(Transport::Smtp),
        },
    };
    let reply_to = match &section.reply_to {
        None => Some(None),
        Some(reply_to) => match reply_to.get_ref().parse::<lettre::message::Mailbox>() {
            Ok(mailbox) => Some(Some(mailbox)),
            Err(e) => {
                diags.push(source.at(
                    reply_to.span(),
                    format!("invalid reply_to {:?}: {e}", reply_to.get_ref()),
                ));
                None
            }
        },
    };
    if section.concurrency == 0 {
        diags.push(file_error(
            source.path,
            "[email] concurrency must be at least 1",
        ));
        return None;
    }
    let from = from?;
    let mut branding = section.branding.clone();
    if branding.name.is_none() {
        branding.name = Some(
            from.name
                .clone()
                .unwrap_or_else(|| from.email.domain().to_string()),
        );
    }
    Some(Email {
        from,
        reply_to: reply_to?,
        rate: section.rate,
        concurrency: usize::from(section.concurrency),
        transport: transport?,
        templates_dir: section
            .templates_dir
            .as_ref()
            .map(|d| absolute(&config_dir.join(d))),
        branding,
        retry_backoff: section.retry_backoff.0,
        retry_backoff_max: section.retry_backoff_max.0,
        give_up_after: section.give_up_after.0,
        keep_sent: section.keep_sent.0,
    })
}

fn resolve_smtp(
    source: &SourceFile,
    smtp: &Spanned<SmtpSection>,
    secrets: &SecretContext,
    diags: &mut Diagnostics,
) -> Option<Smtp> {
    let s = smtp.get_ref();
    let loopback = s.host == "localhost"
        || s.host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if s.tls == TlsMode::None && !loopback {
        diags.push(source.at(
            smtp.span(),
            format!("tls = \"none\" sends mail in clear text; it is only allowed towards a loopback host, not {:?}", s.host),
        ));
        return None;
    }
    let credentials = match (&s.username, &s.password) {
        (Some(user), Some(password)) => Some((
            user.clone(),
            resolve_secret(source, password, secrets, diags)?,
        )),
        (None, None) => None,
        _ => {
            diags.push(source.at(
                smtp.span(),
                "[email.smtp] needs both `username` and `password`, or neither",
            ));
            return None;
        }
    };
    let extra_roots = match &s.ca_file {
        Some(file) => Some(read_ca_file(source, file, diags)?),
        None => None,
    };
    let port = s.port.unwrap_or(match s.tls {
        TlsMode::Starttls => 587,
        TlsMode::Tls => 465,
        TlsMode::None => 25,
    });
    Some(Smtp {
        host: s.host.clone(),
        port,
        tls: s.tls,
        credentials,
        timeout: s.timeout.0,
        extra_roots: extra_roots.unwrap_or_default(),
    })
}

/// The certificates of `[email.smtp] ca_file`, as DER; an error at the
/// key when the file cannot be read or holds none.
fn read_ca_file(
    source: &SourceFile,
    file: &Spanned<String>,
    diags: &mut Diagnostics,
) -> Option<Vec<Vec<u8>>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let dir = absolute(source.path.parent().unwrap_or(Path::new(".")));
    let path = dir.join(file.get_ref());
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(e) => {
            diags.push(source.at(
                file.span(),
                format!("cannot read ca_file {}: {}", path.display(), io_reason(&e)),
            ));
            return None;
        }
    };
    let certificates: Result<Vec<Vec<u8>>, _> = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect();
    match certificates {
        Ok(certificates) if !certificates.is_empty() => Some(certificates),
        Ok(_) => {
            diags.push(source.at(
                file.span(),
                format!("ca_file {} holds no PEM certificate", path.display()),
            ));
            None
        }
        Err(e) => {
            diags.push(source.at(
                file.span(),
                format!("ca_file {} is not valid PEM: {e}", path.display()),
            ));
            None
        }
    }
}

fn load_customers(dir: &Path, diags: &mut Diagnostics) -> Vec<Customer> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            diags.push(file_error(
                dir,
                format!("cannot read customers directory: {}", io_reason(&e)),
            ));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut by_id: HashMap<CustomerId, PathBuf> = HashMap::new();
    let mut customers = Vec::new();
    for file in files {
        let Some((customer, id_span, text)) = load_customer(&file, diags) else {
            continue;
        };
        if let Some(other) = by_id.insert(customer.id.clone(), file.clone()) {
            let source = SourceFile {
                path: &file,
                text: &text,
            };
            diags.push(source.at(
                id_span,
                format!(
                    "customer id `{}` is also used by {}",
                    customer.id,
                    other.display()
                ),
            ));
            continue;
        }
        customers.push(customer);
    }
    customers
}

fn load_customer(path: &Path, diags: &mut Diagnostics) -> Option<(Customer, Range<usize>, String)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| {
            diags.push(file_error(
                path,
                format!("cannot read customer file: {}", io_reason(&e)),
            ))
        })
        .ok()?;
    let source = SourceFile { path, text: &text };
    let table = DeTable::parse(&text)
        .map_err(|e| diags.push(source.from_toml(&e)))
        .ok()?;
    let root = Spanned::new(table.span(), DeValue::Table(table.get_ref().clone()));
    let customer = Customer::deserialize(toml::de::Deserializer::from(table))
        .map_err(|e| diags.push(source.from_toml(&e)))
        .ok()?;
    let problems = customer.problems();
    for (path, message) in &problems {
        diags.push(source.at(span_at(&root, path), message.clone()));
    }
    let id_span = span_at(&root, &[PathStep::Key("id")]);
    problems
        .is_empty()
        .then(|| (customer, id_span, text.clone()))
}

/// The span of the value at `path`, or of the deepest part of it present.
fn span_at(root: &Spanned<DeValue>, path: &[PathStep]) -> Range<usize> {
    let mut at = root;
    for step in path {
        let next = match *step {
            PathStep::Key(key) => at.get_ref().get(key),
            PathStep::Entry(i) => at.get_ref().get(i),
        };
        match next {
            Some(value) => at = value,
            None => break,
        }
    }
    at.span()
}

use serde::Deserialize as _;

/// What the CLI needs from the configuration: the daemon's address and
/// admin token. Reads only `[daemon]`, so a CLI user needs neither the
/// customer files nor the connectors' secrets.
pub fn load_daemon_section(path: &Path) -> Result<Daemon, Diagnostics> {
    let mut diags = Diagnostics::default();
    let text = read_config(path)?;
    let source = SourceFile { path, text: &text };
    let mut root = DeTable::parse(&text)
        .map_err(|e| one(source.from_toml(&e)))?
        .into_inner();
    let value = root.remove("daemon").unwrap_or_else(empty_table);
    let section = section::<DaemonSection>(&source, value, &mut diags)
        .ok_or_else(|| std::mem::take(&mut diags))?;
    let config_dir = absolute(path.parent().unwrap_or(Path::new(".")));
    let daemon = resolve_daemon(
        &source,
        &section,
        &config_dir,
        &SecretContext::from_env(&config_dir),
        &mut diags,
    );
    if diags.is_empty() {
        Ok(daemon)
    } else {
        Err(diags)
    }
}

impl Config {
    /// What `csmd check-config` prints: everything an operator wants to see
    /// confirmed, and no secret.
    /// The configured customer with this id.
    pub fn customer(&self, id: &CustomerId) -> Option<&Customer> {
        self.customers.iter().find(|c| c.id == *id)
    }

    pub fn summary(&self) -> String {
        let mut out = String::new();
        let d = &self.daemon;
        let _ = writeln!(out, "configuration {} is valid", self.path.display());
        let _ = writeln!(out, "  listen        {}", d.listen);
        let _ = writeln!(out, "  data_dir      {}", d.data_dir.display());
        let _ = writeln!(out, "  time zone     {}", d.time_zone);
        let _ = writeln!(
            out,
            "  admin API     {}",
            if d.admin_token.is_some() {
                "enabled (bearer token set)"
            } else {
                "disabled (no admin_token)"
            }
        );
        let transport = match &self.email.transport {
            Transport::File { dir } => format!("file, writing .eml files to {}", dir.display()),
            Transport::Smtp(s) => format!(
                "smtp {}:{} ({:?}{})",
                s.host,
                s.port,
                s.tls,
                if s.credentials.is_some() {
                    ", with AUTH"
                } else {
                    ""
                }
            )
            .to_lowercase(),
            Transport::Sendmail { command } => format!("sendmail via {}", command.display()),
        };
        let _ = writeln!(
            out,
            "  e-mail        from {}, {transport}, at most {}",
            self.email.from, self.email.rate
        );
        let _ = writeln!(
            out,
            "  schedules     monthly_report \"{}\", reconciliation \"{}\", sip_digest \"{}\"",
            self.schedules.monthly_report, self.schedules.reconciliation, self.schedules.sip_digest
        );
        let _ = writeln!(
            out,
            "  SIP           actions from CSAT under {} and NPS under {}; overdue digest {}",
            self.sip.csat_below,
            self.sip.nps_below,
            if self.sip.digest_to.is_empty() {
                "off (no [sip] digest_to)".to_string()
            } else {
                format!(
                    "to {}",
                    self.sip
                        .digest_to
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        let _ = writeln!(out, "  integrity     {}", self.integrity.describe());
        let _ = writeln!(out, "  connectors    {}", self.connectors.len());
        for c in &self.connectors {
            let webhook = c
                .webhook_auth
                .as_ref()
                .map_or_else(|| "off".into(), WebhookAuth::describe);
            let _ = writeln!(
                out,
                "    {:<16} {:<14} webhook: {webhook}",
                c.name.as_str(),
                c.kind.as_str()
            );
            if let Some(poll) = &c.poll {
                let streams: Vec<_> = poll
                    .polling
                    .streams
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect();
                let _ = writeln!(
                    out,
                    "    {:<16} {:<14} polls {} every {}, {}; streams: {}",
                    "",
                    "",
                    poll.client.base_url,
                    humantime::format_duration(poll.interval),
                    poll.client
                        .rate_limit
                        .map_or_else(|| "no rate limit".to_string(), |r| format!("at most {r}")),
                    streams.join(", ")
                );
            }
            if let Some(files) = &c.files {
                let _ = writeln!(
                    out,
                    "    {:<16} {:<14} imports complete files from {} every {}{}, then moves them to {}",
                    "",
                    "",
                    files.folder.display(),
                    humantime::format_duration(files.interval),
                    if files.done_marker {
                        " (each with its .done marker)"
                    } else {
                        ""
                    },
                    files.archive.display()
                );
            }
            if let Some(tickets) = &c.tickets {
                let _ = writeln!(
                    out,
                    "    {:<16} {:<14} alerts at {} or above open a major incident and proactive cases through {}",
                    "", "", tickets.min_severity, tickets.writeback
                );
            }
        }
        let _ = writeln!(out, "  customers     {}", self.customers.len());
        for c in &self.customers {
            let tz = c.time_zone.unwrap_or(d.time_zone);
            let _ = writeln!(
                out,
                "    {:<16} {} ({}, {} contact(s))",
                c.id.as_str(),
                c.name,
                tz,
                c.contacts.len()
            );
        }
        out
    }

    pub fn connector(&self, name: &str) -> Option<&Connector> {
        self.connectors.iter().find(|c| c.name.as_str() == name)
    }
}
