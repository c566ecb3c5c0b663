//! `[[connector]]` entries: the profile each one names, its overrides, the
//! upstream it polls and how its webhooks are authenticated.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use secrecy::{SecretBox, SecretString};

use super::diag::{Diagnostics, SourceFile};
use super::sections::{ConnectorSection, DaemonSection, WebhookAuthKind};
use super::{Daemon, absolute, resolve_secret};
use super::value::SecretContext;
use crate::connector::{ConnectorKind, Parser, Profile};
use crate::model::ConnectorName;

/// A configured connector with its profile and overrides applied.
#[derive(Debug)]
pub struct Connector {
    pub name: ConnectorName,
    pub kind: ConnectorKind,
    /// The folder the profile was read from.
    pub profile_dir: PathBuf,
    pub parser: Parser,
    pub webhook_auth: WebhookAuth,
}

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
}

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
        let overrides: toml::Table = section.fields.as_ref().map_or_else(Default::default, |f| {
            f.get_ref()
                .iter()
                .map(|(k, v)| (k.get_ref().clone(), v.clone()))
                .collect()
        });
        let parser = match profile.parser(&overrides) {
            Ok(p) => p,
            Err(errors) => {
                for e in errors {
                    let key = section.fields.as_ref().and_then(|f| {
                        let field = e.field.as_deref()?;
                        f.get_ref().keys().find(|k| k.get_ref() == field)
                    });
                    let span = match (key, &section.fields) {
                        (Some(key), _) => key.span(),
                        (None, Some(fields)) => fields.span(),
                        (None, None) => section.profile.span(),
                    };
                    diags.push(source.at(span, e.message));
                }
                continue;
            }
        };
        let Some(webhook_auth) = resolve_webhook_auth(source, section, daemon, secrets, diags)
        else {
            continue;
        };
        connectors.push(Connector {
            name,
            kind: profile.kind(),
            profile_dir,
            parser,
            webhook_auth,
        });
    }
    connectors
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
                "connector `{}` has no [connector.webhook] section; set auth = \"bearer\", \"standard-webhooks\" or \"none\"",
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
    }
}

/// Decodes a Standard Webhooks secret, `whsec_` followed by base64.
fn signing_key(secret: &SecretString) -> Result<SecretBox<Vec<u8>>, &'static str> {
    use secrecy::ExposeSecret;
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
