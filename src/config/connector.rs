//! `[[connector]]` entries: the profile each one names, its overrides, the
//! upstream it polls and how its webhooks are authenticated.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretBox, SecretString};

use super::customer::Severity;
use super::diag::{Diagnostics, SourceFile};
use super::sections::{ConnectorSection, DaemonSection, UpstreamAuthKind, WebhookAuthKind};
use super::value::{RateLimit, SecretContext};
use super::{Daemon, absolute, resolve_secret};
use crate::connector::rest::client::{ClientSettings, OAuth2, UpstreamAuth};
use crate::connector::rest::profile::{TicketProfile, TicketPurpose};
use crate::connector::{ConnectorKind, Parser, Polling, Profile};
use crate::model::ConnectorName;

/// A configured connector with its profile and overrides applied.
#[derive(Debug)]
pub struct Connector {
    pub name: ConnectorName,
    pub kind: ConnectorKind,
    /// The folder the profile was read from.
    pub profile_dir: PathBuf,
    pub parser: Parser,
    /// `None`: the connector accepts no webhooks (a polled connector
    /// without a `[connector.webhook]` section).
    pub webhook_auth: Option<WebhookAuth>,
    /// Set for connectors that poll their upstream.
    pub poll: Option<PollConfig>,
    /// Set for monitoring connectors whose alerts open ITSM tickets.
    pub tickets: Option<AlertTickets>,
    /// Set for connectors that import files from a folder (`billing-csv`).
    pub files: Option<FolderConfig>,
}

/// How a `billing-csv` connector watches its folder.
#[derive(Debug)]
pub struct FolderConfig {
    pub folder: PathBuf,
    pub archive: PathBuf,
    pub done_marker: bool,
    pub interval: Duration,
    pub files: crate::connector::billing_csv::Files,
}

/// `[connector.itsm]`, checked: the tickets a monitoring connector's
/// alerts open through an ITSM connector that can write them.
#[derive(Debug, Clone)]
pub struct AlertTickets {
    pub writeback: ConnectorName,
    pub min_severity: Severity,
    pub assignment_group: Option<String>,
}

impl Connector {
    /// How the connector writes tickets of `purpose`, when it can.
    pub fn ticket_profile(&self, purpose: TicketPurpose) -> Option<&TicketProfile> {
        self.poll
            .as_ref()?
            .polling
            .api
            .write
            .as_ref()?
            .tickets
            .get(&purpose)
    }
}

/// How a connector polls its upstream.
#[derive(Debug)]
pub struct PollConfig {
    pub client: ClientSettings,
    pub interval: Duration,
    pub filter: Option<String>,
    pub polling: Polling,
}

const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(300);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RATE: &str = "10/s";

#[derive(Debug)]
pub enum WebhookAuth {
    /// No authentication; only accepted while listening on loopback.
    None,
    Bearer(SecretString),
    /// Standard Webhooks HMAC-SHA256 signatures.
    StandardWebhooks {
        keys: Vec<SecretBox<Vec<u8>>>,
        tolerance: Duration,
    },
    /// A hex HMAC-SHA256 of the body in one header, or of
    /// `{timestamp}:{body}` when the sender also sends a timestamp header:
    /// Grafana's webhook contact point with an HMAC secret.
    HmacSha256 {
        /// The shared secret, used as-is (its UTF-8 bytes) as the key.
        key: SecretString,
        /// Headers the signature is read from, first present wins.
        headers: Vec<String>,
        timestamp_header: Option<String>,
        /// Largest accepted distance between the timestamp and now.
        tolerance: Duration,
    },
}

/// Where Grafana puts its signature when the contact point names no header,
/// as its documentation says.
const GRAFANA_SIGNATURE_HEADER: &str = "X-Grafana-Alerting-Signature";
/// The header grafana/alerting's HMAC round-tripper itself falls back to
/// when the header setting is empty (`http/hmac.go`): also read when
/// `header` is not configured, so either spelling is accepted.
const GRAFANA_SIGNATURE_HEADER_FALLBACK: &str = "X-Grafana-Alert-Signature";

/// Shortest accepted `hmac-sha256` secret.
const MIN_HMAC_SECRET_BYTES: usize = 16;

impl WebhookAuth {
    pub fn describe(&self) -> String {
        match self {
            WebhookAuth::None => "no auth".into(),
            WebhookAuth::Bearer(_) => "bearer token".into(),
            WebhookAuth::StandardWebhooks { keys, tolerance } => format!(
                "standard-webhooks, {} key(s), tolerance {}",
                keys.len(),
                humantime::format_duration(*tolerance)
            ),
            WebhookAuth::HmacSha256 {
                headers,
                timestamp_header,
                tolerance,
                ..
            } => {
                let signature = headers.first().map_or("", String::as_str);
                match timestamp_header {
                    Some(ts) => format!(
                        "hmac-sha256 in {signature}, timestamp in {ts}, tolerance {}",
                        humantime::format_duration(*tolerance)
                    ),
                    None => format!("hmac-sha256 in {signature}, no timestamp"),
                }
            }
        }
    }
}

pub(super) fn resolve_connectors(
    source: &SourceFile,
    sections: &[ConnectorSection],
    daemon_section: &DaemonSection,
    daemon: &Daemon,
    config_dir: &Path,
    secrets: &SecretContext,
    diags: &mut Diagnostics,
) -> Vec<Connector> {
    let search: Vec<PathBuf> = daemon_section
        .connector_dirs
        .iter()
        .map(|d| absolute(&config_dir.join(d)))
        .collect();
    let mut seen = BTreeSet::new();
    let mut connectors = Vec::new();
    for section in sections {
        let name = match section.name.get_ref().parse::<ConnectorName>() {
            Ok(name) if !seen.insert(name.clone()) => {
                diags.push(source.at(
                    section.name.span(),
                    format!("connector `{name}` is defined twice"),
                ));
                continue;
            }
            Ok(name) => name,
            Err(e) => {
                diags.push(source.at(section.name.span(), e.to_string()));
                continue;
            }
        };
        let Some(profile_dir) = search
            .iter()
            .map(|d| d.join(section.profile.get_ref()))
            .find(|d| d.join("profile.toml").is_file())
        else {
            let searched: Vec<_> = search.iter().map(|d| d.display().to_string()).collect();
            diags.push(source.at(
                section.profile.span(),
                format!(
                    "connector profile `{}` not found in {}",
                    section.profile.get_ref(),
                    searched.join(", ")
                ),
            ));
            continue;
        };
        let profile = match Profile::load(&profile_dir) {
            Ok(p) => p,
            Err(errors) => {
                errors.into_iter().for_each(|e| diags.push(e));
                continue;
            }
        };
        let fields: toml::Table = section.fields.as_ref().map_or_else(Default::default, |f| {
            f.get_ref()
                .iter()
                .map(|(k, v)| (k.get_ref().clone(), v.clone()))
                .collect()
        });
        let streams = section
            .streams
            .as_ref()
            .map(|s| s.get_ref().clone())
            .unwrap_or_default();
        let built = match profile.build(&fields, &streams) {
            Ok(built) => built,
            Err(errors) => {
                for e in errors {
                    let key = section.fields.as_ref().and_then(|f| {
                        let field = e.field.as_deref()?;
                        f.get_ref().keys().find(|k| k.get_ref() == field)
                    });
                    let span = match (key, &section.fields, &section.streams) {
                        (Some(key), _, _) => key.span(),
                        (None, Some(fields), _) => fields.span(),
                        (None, None, Some(streams)) => streams.span(),
                        (None, None, None) => section.profile.span(),
                    };
                    diags.push(source.at(span, e.message));
                }
                continue;
            }
        };
        let files = match built.files {
            Some(files) => match resolve_folder(source, section, files, config_dir, diags) {
                Some(folder) => Some(folder),
                None => continue,
            },
            None => {
                refuse_folder_settings(source, section, &profile, diags);
                None
            }
        };
        let poll = match built.polling {
            Some(polling) => match resolve_poll(source, section, polling, secrets, diags) {
                Some(poll) => Some(poll),
                None => continue,
            },
            None => {
                refuse_poll_settings(source, section, &profile, files.is_some(), diags);
                None
            }
        };
        let webhook_auth = match (&section.webhook, &poll, &files) {
            // A polled connector may take no webhooks at all.
            (None, Some(_), _) => None,
            // Files never arrive by webhook.
            (Some(webhook), _, Some(_)) => {
                diags.push(source.at(
                    webhook.span(),
                    format!(
                        "profile `{}` imports files from `folder`; it takes no webhooks",
                        section.profile.get_ref()
                    ),
                ));
                continue;
            }
            (None, _, Some(_)) => None,
            _ => match resolve_webhook_auth(source, section, daemon, secrets, diags) {
                Some(auth) => Some(auth),
                None => continue,
            },
        };
        let kind = profile.kind();
        let tickets = section.itsm.as_ref().and_then(|itsm| {
            if kind.is_monitoring() {
                let settings = itsm.get_ref();
                match settings.writeback.get_ref().parse::<ConnectorName>() {
                    Ok(writeback) => Some(AlertTickets {
                        writeback,
                        min_severity: settings.min_severity.unwrap_or(Severity::Critical),
                        assignment_group: settings.assignment_group.clone(),
                    }),
                    Err(e) => {
                        diags.push(source.at(settings.writeback.span(), e.to_string()));
                        None
                    }
                }
            } else {
                diags.push(source.at(
                    itsm.span(),
                    format!(
                        "[connector.itsm] opens tickets from alerts; profile `{}` does not read alerts",
                        section.profile.get_ref()
                    ),
                ));
                None
            }
        });
        connectors.push(Connector {
            name,
            kind,
            profile_dir,
            parser: built.parser,
            webhook_auth,
            poll,
            tickets,
            files,
        });
    }
    check_ticket_writers(source, sections, &connectors, diags);
    connectors
}

/// Every `[connector.itsm] writeback` names a connector that can write
/// both kinds of ticket.
fn check_ticket_writers(
    source: &SourceFile,
    sections: &[ConnectorSection],
    connectors: &[Connector],
    diags: &mut Diagnostics,
) {
    for connector in connectors {
        let Some(tickets) = &connector.tickets else {
            continue;
        };
        let Some(span) = sections
            .iter()
            .find(|s| s.name.get_ref() == connector.name.as_str())
            .and_then(|s| s.itsm.as_ref())
            .map(|itsm| itsm.get_ref().writeback.span())
        else {
            continue;
        };
        let Some(writer) = connectors.iter().find(|c| c.name == tickets.writeback) else {
            let known: Vec<&str> = connectors
                .iter()
                .filter(|c| c.poll.is_some())
                .map(|c| c.name.as_str())
                .collect();
            diags.push(source.at(
                span,
                format!(
                    "no connector `{}` to write tickets with (ITSM connectors: {})",
                    tickets.writeback,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
            continue;
        };
        let missing: Vec<&str> = [TicketPurpose::MajorIncident, TicketPurpose::ProactiveCase]
            .into_iter()
            .filter(|p| writer.ticket_profile(*p).is_none())
            .map(TicketPurpose::as_str)
            .collect();
        if !missing.is_empty() {
            diags.push(source.at(
                span,
                format!(
                    "connector `{}` cannot write these tickets: its profile has no [api.write.tickets.{}]",
                    writer.name,
                    missing.join("] or [api.write.tickets.")
                ),
            ));
        }
    }
}

fn resolve_webhook_auth(
    source: &SourceFile,
    section: &ConnectorSection,
    daemon: &Daemon,
    secrets: &SecretContext,
    diags: &mut Diagnostics,
) -> Option<WebhookAuth> {
    let Some(webhook) = &section.webhook else {
        diags.push(source.at(
            section.name.span(),
            format!(
                "connector `{}` has no [connector.webhook] section; set auth = \"bearer\", \"standard-webhooks\", \"hmac-sha256\" or \"none\"",
                section.name.get_ref()
            ),
        ));
        return None;
    };
    let w = webhook.get_ref();
    let at = |span: Range<usize>, message: String| source.at(span, message);
    match w.auth {
        WebhookAuthKind::None if daemon.listen.ip().is_loopback() => Some(WebhookAuth::None),
        WebhookAuthKind::None => {
            diags.push(at(
                webhook.span(),
                format!("auth = \"none\" is only allowed while daemon.listen is a loopback address, not {}", daemon.listen),
            ));
            None
        }
        WebhookAuthKind::Bearer => match &w.token {
            Some(token) => resolve_secret(source, token, secrets, diags).map(WebhookAuth::Bearer),
            None => {
                diags.push(at(webhook.span(), "auth = \"bearer\" needs `token = { env = \"NAME\" }` or `{ file = \"/path\" }`".into()));
                None
            }
        },
        WebhookAuthKind::StandardWebhooks => {
            if w.secrets.is_empty() {
                diags.push(at(
                    webhook.span(),
                    "auth = \"standard-webhooks\" needs at least one entry in `secrets`".into(),
                ));
                return None;
            }
            let mut keys = Vec::new();
            for secret in &w.secrets {
                let Some(value) = resolve_secret(source, secret, secrets, diags) else {
                    continue;
                };
                match signing_key(&value) {
                    Ok(key) => keys.push(key),
                    Err(e) => diags.push(at(
                        secret.span(),
                        format!("signing secret from {}: {e}", secret.get_ref()),
                    )),
                }
            }
            (keys.len() == w.secrets.len()).then_some(WebhookAuth::StandardWebhooks {
                keys,
                tolerance: w.tolerance.0,
            })
        }
        WebhookAuthKind::HmacSha256 => {
            let Some(secret) = &w.secret else {
                diags.push(at(
                    webhook.span(),
                    "auth = \"hmac-sha256\" needs `secret = { env = \"NAME\" }` or `{ file = \"/path\" }`".into(),
                ));
                return None;
            };
            let key = resolve_secret(source, secret, secrets, diags).filter(|key| {
                let long_enough = key.expose_secret().len() >= MIN_HMAC_SECRET_BYTES;
                if !long_enough {
                    diags.push(at(
                        secret.span(),
                        format!(
                            "signing secret from {} is shorter than {MIN_HMAC_SECRET_BYTES} bytes; generate a long random one (openssl rand -hex 32)",
                            secret.get_ref()
                        ),
                    ));
                }
                long_enough
            });
            let header_name = |h: &toml::Spanned<String>, diags: &mut Diagnostics| {
                match http::HeaderName::from_bytes(h.get_ref().as_bytes()) {
                    Ok(_) => Some(h.get_ref().clone()),
                    Err(_) => {
                        diags.push(at(
                            h.span(),
                            format!("{:?} is not an HTTP header name", h.get_ref()),
                        ));
                        None
                    }
                }
            };
            let headers = match &w.header {
                Some(h) => vec![header_name(h, diags)?],
                None => vec![
                    GRAFANA_SIGNATURE_HEADER.to_string(),
                    GRAFANA_SIGNATURE_HEADER_FALLBACK.to_string(),
                ],
            };
            let timestamp_header = match &w.timestamp_header {
                Some(h) => {
                    let name = header_name(h, diags)?;
                    if name.eq_ignore_ascii_case(&headers[0]) {
                        diags.push(at(
                            h.span(),
                            "timestamp_header must differ from the signature header".into(),
                        ));
                        return None;
                    }
                    Some(name)
                }
                None => None,
            };
            Some(WebhookAuth::HmacSha256 {
                key: key?,
                headers,
                timestamp_header,
                tolerance: w.tolerance.0,
            })
        }
    }
}

/// Decodes a Standard Webhooks secret, `whsec_` followed by base64.
fn signing_key(secret: &SecretString) -> Result<SecretBox<Vec<u8>>, &'static str> {
    let encoded = secret.expose_secret();
    let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "not a `whsec_` secret followed by base64")?;
    if key.len() < 16 {
        return Err("shorter than 16 bytes; generate at least 24 random bytes");
    }
    Ok(SecretBox::new(Box::new(key)))
}

/// The polling settings of a connector whose profile polls.
fn resolve_poll(
    source: &SourceFile,
    section: &ConnectorSection,
    polling: Polling,
    secrets: &SecretContext,
    diags: &mut Diagnostics,
) -> Option<PollConfig> {
    let name = section.name.get_ref();
    let Some(base) = &section.base_url else {
        diags.push(source.at(
            section.name.span(),
            format!("connector `{name}` polls its upstream: set `base_url`"),
        ));
        return None;
    };
    let base_url = match reqwest::Url::parse(base.get_ref()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        Ok(url) => {
            diags.push(source.at(
                base.span(),
                format!("base_url must be http or https, not {}", url.scheme()),
            ));
            return None;
        }
        Err(e) => {
            diags.push(source.at(
                base.span(),
                format!("invalid base_url {:?}: {e}", base.get_ref()),
            ));
            return None;
        }
    };
    let Some(auth_section) = &section.auth else {
        diags.push(source.at(
            section.name.span(),
            format!("connector `{name}` polls its upstream: add [connector.auth] with kind = \"basic\", \"bearer\" or \"oauth2\""),
        ));
        return None;
    };
    let a = auth_section.get_ref();
    let span = auth_section.span();
    let missing = |what: &str| {
        source.at(
            span.clone(),
            format!("auth kind = \"{}\" needs `{what}`", kind_name(a.kind)),
        )
    };
    let secret = |s: &Option<toml::Spanned<super::value::SecretRef>>,
                  what: &str,
                  diags: &mut Diagnostics| match s {
        Some(s) => resolve_secret(source, s, secrets, diags),
        None => {
            diags.push(missing(what));
            None
        }
    };
    let auth = match a.kind {
        UpstreamAuthKind::Basic => {
            let Some(username) = a.username.clone() else {
                diags.push(missing("username"));
                return None;
            };
            UpstreamAuth::Basic {
                username,
                password: secret(&a.password, "password", diags)?,
            }
        }
        UpstreamAuthKind::Bearer => UpstreamAuth::Bearer(secret(&a.token, "token", diags)?),
        UpstreamAuthKind::Oauth2 => {
            let Some(client_id) = a.client_id.clone() else {
                diags.push(missing("client_id"));
                return None;
            };
            let client_secret = secret(&a.client_secret, "client_secret", diags)?;
            let user = match &a.username {
                Some(username) => Some((username.clone(), secret(&a.password, "password", diags)?)),
                None => None,
            };
            let token_path = polling
                .api
                .oauth
                .as_ref()
                .map_or("/oauth_token.do", |o| o.token_path.as_str());
            let token_url = match base_url.join(token_path) {
                Ok(url) => url,
                Err(e) => {
                    diags.push(source.at(base.span(), format!("cannot build the token URL: {e}")));
                    return None;
                }
            };
            UpstreamAuth::OAuth2(OAuth2 {
                token_url,
                client_id,
                client_secret,
                user,
            })
        }
    };
    let rate_limit = match section.rate_limit.as_ref().map(|r| *r.get_ref()) {
        Some(RateLimit::Off) => None,
        Some(RateLimit::Limit(rate)) => Some(rate),
        None => DEFAULT_RATE.parse().ok(),
    };
    Some(PollConfig {
        client: ClientSettings {
            base_url,
            auth,
            timeout: section
                .timeout
                .as_ref()
                .map_or(DEFAULT_TIMEOUT, |t| t.get_ref().0),
            rate_limit,
            max_retries: 5,
            max_backoff: Duration::from_secs(60),
        },
        interval: section
            .poll_interval
            .as_ref()
            .map_or(DEFAULT_POLL_INTERVAL, |d| d.get_ref().0),
        filter: section
            .filter
            .as_ref()
            .map(|f| f.get_ref().clone())
            .filter(|f| !f.is_empty()),
        polling,
    })
}

fn kind_name(kind: UpstreamAuthKind) -> &'static str {
    match kind {
        UpstreamAuthKind::Basic => "basic",
        UpstreamAuthKind::Bearer => "bearer",
        UpstreamAuthKind::Oauth2 => "oauth2",
    }
}

/// The folder a `billing-csv` connector imports from; relative paths are
/// relative to the configuration file.
fn resolve_folder(
    source: &SourceFile,
    section: &ConnectorSection,
    files: crate::connector::billing_csv::Files,
    config_dir: &Path,
    diags: &mut Diagnostics,
) -> Option<FolderConfig> {
    let Some(folder) = &section.folder else {
        diags.push(source.at(
            section.name.span(),
            format!(
                "connector `{}` imports CSV files: set `folder`, where the exports are dropped",
                section.name.get_ref()
            ),
        ));
        return None;
    };
    if folder.get_ref().is_empty() {
        diags.push(source.at(folder.span(), "`folder` is empty"));
        return None;
    }
    let folder_path = absolute(&config_dir.join(folder.get_ref()));
    let archive = match &section.archive {
        Some(a) if a.get_ref().is_empty() => {
            diags.push(source.at(a.span(), "`archive` is empty"));
            return None;
        }
        Some(a) => absolute(&config_dir.join(a.get_ref())),
        None => folder_path.join("archive"),
    };
    if archive == folder_path {
        let span = section.archive.as_ref().map_or(folder.span(), |a| a.span());
        diags.push(source.at(
            span,
            "`archive` must differ from `folder`, or imported files would be imported again",
        ));
        return None;
    }
    Some(FolderConfig {
        folder: folder_path,
        archive,
        done_marker: section.done_marker.as_ref().is_some_and(|d| *d.get_ref()),
        interval: section
            .poll_interval
            .as_ref()
            .map_or(DEFAULT_FOLDER_INTERVAL, |d| d.get_ref().0),
        files,
    })
}

const DEFAULT_FOLDER_INTERVAL: Duration = Duration::from_secs(60);

/// Folder settings on a connector that imports no files.
fn refuse_folder_settings(
    source: &SourceFile,
    section: &ConnectorSection,
    profile: &Profile,
    diags: &mut Diagnostics,
) {
    let spans = [
        ("folder", section.folder.as_ref().map(|s| s.span())),
        ("archive", section.archive.as_ref().map(|s| s.span())),
        (
            "done_marker",
            section.done_marker.as_ref().map(|s| s.span()),
        ),
    ];
    for (key, span) in spans {
        if let Some(span) = span {
            diags.push(source.at(
                span,
                format!(
                    "`{key}` is for connectors that import files (billing-csv), not profile `{}`",
                    profile.kind()
                ),
            ));
        }
    }
}

/// Polling settings on a connector whose profile does not poll are a
/// mistake worth pointing at (a folder-watching one takes `poll_interval`).
fn refuse_poll_settings(
    source: &SourceFile,
    section: &ConnectorSection,
    profile: &Profile,
    watches_folder: bool,
    diags: &mut Diagnostics,
) {
    let spans = [
        ("base_url", section.base_url.as_ref().map(|s| s.span())),
        ("auth", section.auth.as_ref().map(|s| s.span())),
        (
            "poll_interval",
            section
                .poll_interval
                .as_ref()
                .filter(|_| !watches_folder)
                .map(|s| s.span()),
        ),
        ("rate_limit", section.rate_limit.as_ref().map(|s| s.span())),
        ("timeout", section.timeout.as_ref().map(|s| s.span())),
        ("filter", section.filter.as_ref().map(|s| s.span())),
    ];
    for (key, span) in spans {
        if let Some(span) = span {
            diags.push(source.at(
                span,
                format!(
                    "`{key}` is for polled connectors; profile `{}` {}",
                    profile.kind(),
                    if watches_folder {
                        "imports files from `folder`"
                    } else {
                        "only receives webhooks"
                    }
                ),
            ));
        }
    }
}
