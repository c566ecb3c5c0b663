//! Connectors: how csmd reads each kind of upstream system. A connector kind
//! is one arm of [`ConnectorKind`] and [`Parser`], one module here, and one
//! folder under `connectors/` with its declarative `profile.toml`.

pub mod alertmanager;
pub mod billing_csv;
pub mod feedback;
mod pointer;
pub mod rest;
pub mod servicenow;
pub mod webhook_json;

use std::collections::BTreeMap;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;

use crate::config::diag::{Diagnostic, SourceFile, file_error};
use crate::config::value::io_reason;
use crate::model::Event;

/// The kinds of upstream csmd knows how to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectorKind {
    /// A generic JSON webhook mapped with JSON pointers.
    WebhookJson,
    /// Survey answers and complaints, mapped with JSON pointers.
    FeedbackJson,
    /// Prometheus Alertmanager's webhook (payload version 4).
    Alertmanager,
    /// The ServiceNow Table API, polled, plus records pushed by business rules.
    #[serde(rename = "servicenow")]
    ServiceNow,
    /// A billing system's REST API (accounts, subscriptions, charges),
    /// polled with cursor pagination and `updated_since`.
    BillingRest,
    /// A billing system's CSV exports, dropped into a folder.
    BillingCsv,
}

impl ConnectorKind {
    /// Whether the connector's events are alerts from monitoring.
    pub fn is_monitoring(self) -> bool {
        matches!(
            self,
            ConnectorKind::Alertmanager | ConnectorKind::WebhookJson
        )
    }

    pub const ALL: &'static [ConnectorKind] = &[
        ConnectorKind::WebhookJson,
        ConnectorKind::FeedbackJson,
        ConnectorKind::Alertmanager,
        ConnectorKind::ServiceNow,
        ConnectorKind::BillingRest,
        ConnectorKind::BillingCsv,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorKind::WebhookJson => "webhook-json",
            ConnectorKind::FeedbackJson => "feedback-json",
            ConnectorKind::Alertmanager => "alertmanager",
            ConnectorKind::ServiceNow => "servicenow",
            ConnectorKind::BillingRest => "billing-rest",
            ConnectorKind::BillingCsv => "billing-csv",
        }
    }
}

impl FromStr for ConnectorKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ConnectorKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = ConnectorKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown connector kind {s:?}; known kinds: {}",
                    known.join(", ")
                )
            })
    }
}

impl fmt::Display for ConnectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A loaded profile, before the connector's own overrides.
#[derive(Debug, Clone)]
pub enum Profile {
    WebhookJson(webhook_json::Profile),
    FeedbackJson(feedback::Profile),
    Alertmanager(alertmanager::Profile),
    ServiceNow(Box<rest::profile::RestProfile>),
    BillingRest(Box<rest::profile::RestProfile>),
    BillingCsv(billing_csv::Profile),
}

/// A connector's parser for inbound webhook bodies: the profile with the
/// connector's overrides applied.
#[derive(Debug, Clone)]
pub enum Parser {
    WebhookJson(webhook_json::Mapping),
    FeedbackJson(feedback::Mapping),
    Alertmanager(alertmanager::Mapping),
    ServiceNow(servicenow::Push),
    /// Billing records pushed in the same `{"table", "record"}` shape.
    BillingRest(servicenow::Push),
    /// Takes no webhooks: its records arrive as files.
    BillingCsv,
}

/// A connector built from its profile and overrides: how it parses
/// webhooks, and how it polls when its profile polls.
#[derive(Debug, Clone)]
pub struct Built {
    pub parser: Parser,
    pub polling: Option<Polling>,
    /// The CSV files a folder-watching profile imports.
    pub files: Option<billing_csv::Files>,
}

/// What a polled profile reads, with the connector's overrides applied.
#[derive(Debug, Clone)]
pub struct Polling {
    pub api: rest::profile::Api,
    pub streams: Vec<rest::profile::Stream>,
}

/// A problem with a profile's field mapping or a connector's override of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingError {
    /// The overridden field it is about, so it can be reported at that key;
    /// `None` for a problem of the profile itself.
    pub field: Option<String>,
    pub message: String,
}

/// Why a webhook body was refused. The message is shown to the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl Profile {
    /// Reads `<dir>/profile.toml`.
    pub fn load(dir: &Path) -> Result<Profile, Vec<Diagnostic>> {
        let path = dir.join("profile.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            vec![file_error(
                &path,
                format!("cannot read profile: {}", io_reason(&e)),
            )]
        })?;
        let source = SourceFile {
            path: &path,
            text: &text,
        };
        #[derive(Deserialize)]
        struct Head {
            kind: toml::Spanned<String>,
        }
        let head: Head = toml::from_str(&text).map_err(|e| vec![source.from_toml(&e)])?;
        let kind: ConnectorKind = head
            .kind
            .get_ref()
            .parse()
            .map_err(|e| vec![source.at(head.kind.span(), e)])?;
        match kind {
            ConnectorKind::WebhookJson => toml::from_str(&text)
                .map(Profile::WebhookJson)
                .map_err(|e| vec![source.from_toml(&e)]),
            ConnectorKind::FeedbackJson => toml::from_str(&text)
                .map(Profile::FeedbackJson)
                .map_err(|e| vec![source.from_toml(&e)]),
            ConnectorKind::Alertmanager => toml::from_str(&text)
                .map(Profile::Alertmanager)
                .map_err(|e| vec![source.from_toml(&e)]),
            ConnectorKind::ServiceNow => toml::from_str(&text)
                .map(|p| Profile::ServiceNow(Box::new(p)))
                .map_err(|e| vec![source.from_toml(&e)]),
            ConnectorKind::BillingRest => toml::from_str(&text)
                .map(|p| Profile::BillingRest(Box::new(p)))
                .map_err(|e| vec![source.from_toml(&e)]),
            ConnectorKind::BillingCsv => toml::from_str(&text)
                .map(Profile::BillingCsv)
                .map_err(|e| vec![source.from_toml(&e)]),
        }
    }

    pub fn kind(&self) -> ConnectorKind {
        match self {
            Profile::WebhookJson(_) => ConnectorKind::WebhookJson,
            Profile::FeedbackJson(_) => ConnectorKind::FeedbackJson,
            Profile::Alertmanager(_) => ConnectorKind::Alertmanager,
            Profile::ServiceNow(_) => ConnectorKind::ServiceNow,
            Profile::BillingRest(_) => ConnectorKind::BillingRest,
            Profile::BillingCsv(_) => ConnectorKind::BillingCsv,
        }
    }

    pub fn description(&self) -> &str {
        match self {
            Profile::WebhookJson(p) => &p.description,
            Profile::FeedbackJson(p) => &p.description,
            Profile::Alertmanager(p) => &p.description,
            Profile::ServiceNow(p) | Profile::BillingRest(p) => &p.description,
            Profile::BillingCsv(p) => &p.description,
        }
    }

    /// Whether connectors of this profile poll an upstream.
    pub fn polls(&self) -> bool {
        matches!(self, Profile::ServiceNow(_) | Profile::BillingRest(_))
    }

    /// Applies a connector's overrides: `[connector.fields]` for profiles
    /// with one record shape, `[connector.streams.*]` for polled ones.
    pub fn build(
        &self,
        fields: &toml::Table,
        streams: &BTreeMap<String, rest::profile::StreamOverride>,
    ) -> Result<Built, Vec<MappingError>> {
        let unsupported = |what: &str| MappingError {
            field: None,
            message: format!("profile `{}` has no {what}", self.kind()),
        };
        match self {
            Profile::WebhookJson(p) => {
                if !streams.is_empty() {
                    return Err(vec![unsupported("streams; use [connector.fields]")]);
                }
                let parser = p.mapping(fields).map(Parser::WebhookJson)?;
                Ok(Built {
                    parser,
                    polling: None,
                    files: None,
                })
            }
            Profile::FeedbackJson(p) => {
                if !streams.is_empty() {
                    return Err(vec![unsupported("streams; use [connector.fields]")]);
                }
                let parser = p.mapping(fields).map(Parser::FeedbackJson)?;
                Ok(Built {
                    parser,
                    polling: None,
                    files: None,
                })
            }
            Profile::Alertmanager(p) => {
                if !streams.is_empty() {
                    return Err(vec![unsupported("streams; use [connector.fields]")]);
                }
                let parser = p.mapping(fields).map(Parser::Alertmanager)?;
                Ok(Built {
                    parser,
                    polling: None,
                    files: None,
                })
            }
            Profile::ServiceNow(p) | Profile::BillingRest(p) => {
                if !fields.is_empty() {
                    return Err(vec![unsupported(
                        "[connector.fields]; override per stream in [connector.streams.NAME] fields",
                    )]);
                }
                let streams = p.streams(streams).map_err(|errors| {
                    errors
                        .into_iter()
                        .map(|message| MappingError {
                            field: None,
                            message,
                        })
                        .collect::<Vec<_>>()
                })?;
                let push = servicenow::Push::new(streams.clone(), p.api.time_format.clone());
                let parser = match self {
                    Profile::BillingRest(_) => Parser::BillingRest(push),
                    _ => Parser::ServiceNow(push),
                };
                Ok(Built {
                    parser,
                    polling: Some(Polling {
                        api: p.api.clone(),
                        streams,
                    }),
                    files: None,
                })
            }
            Profile::BillingCsv(p) => {
                if !fields.is_empty() {
                    return Err(vec![unsupported(
                        "[connector.fields]; override per file kind in [connector.streams.NAME] fields",
                    )]);
                }
                let files = p.files(streams).map_err(|errors| {
                    errors
                        .into_iter()
                        .map(|message| MappingError {
                            field: None,
                            message,
                        })
                        .collect::<Vec<_>>()
                })?;
                Ok(Built {
                    parser: Parser::BillingCsv,
                    polling: None,
                    files: Some(files),
                })
            }
        }
    }
}

/// What a webhook body held.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub events: Vec<Event>,
    /// Events the sender said it left out (Alertmanager's
    /// `truncatedAlerts`, when a receiver sets `max_alerts`).
    pub truncated: u64,
}

impl From<Vec<Event>> for Parsed {
    fn from(events: Vec<Event>) -> Parsed {
        Parsed {
            events,
            truncated: 0,
        }
    }
}

impl Parser {
    /// Parses one webhook body into events, or says what is wrong with it.
    pub fn parse(&self, body: &[u8]) -> Result<Parsed, ParseError> {
        match self {
            Parser::WebhookJson(mapping) => mapping.parse(body).map(Parsed::from),
            Parser::FeedbackJson(mapping) => mapping.parse(body).map(Parsed::from),
            Parser::Alertmanager(mapping) => mapping.parse(body),
            Parser::ServiceNow(push) | Parser::BillingRest(push) => {
                push.parse(body).map(Parsed::from)
            }
            Parser::BillingCsv => Err(ParseError(
                "this connector imports CSV files from its folder; it takes no webhooks".into(),
            )),
        }
    }
}
