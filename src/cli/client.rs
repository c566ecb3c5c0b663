//! The admin-API client. It finds the daemon and its token in the same
//! configuration file the daemon reads, or in `--url` and `CSMD_ADMIN_TOKEN`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::config;

#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The daemon's configuration, read for its address and admin token.
    #[arg(long, env = "CSMD_CONFIG", default_value = config::DEFAULT_PATH, global = true)]
    pub config: PathBuf,
    /// The daemon's URL, instead of the one in the configuration; the token
    /// then comes from CSMD_ADMIN_TOKEN.
    #[arg(long, env = "CSMD_URL", global = true)]
    pub url: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

pub struct Client {
    base: String,
    token: Option<SecretString>,
    http: reqwest::Client,
    pub json: bool,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let (base, token) = match &args.url {
            Some(url) => (
                url.trim_end_matches('/').to_string(),
                std::env::var("CSMD_ADMIN_TOKEN")
                    .ok()
                    .map(SecretString::from),
            ),
            None => {
                let daemon = config::load_daemon_section(&args.config)
                    .map_err(|d| anyhow::anyhow!("{d}"))?;
                (format!("http://{}", daemon.listen), daemon.admin_token)
            }
        };
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client {
            base,
            token,
            http,
            json: args.json,
        })
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.request(reqwest::Method::GET, path, query, None).await
    }

    /// POST, waiting as long as the daemon works on it (a sync can take
    /// minutes).
    pub async fn post(&self, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        self.request(reqwest::Method::POST, path, &[], body).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.request(reqwest::Method::PATCH, path, &[], Some(body))
            .await
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let long = method == reqwest::Method::POST;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .query(query);
        if long {
            request = request.timeout(std::time::Duration::from_secs(3600));
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose_secret());
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow::anyhow!(
                    "the csmd daemon is not reachable at {} ({}); is it running? (systemctl status csmd)",
                    self.base,
                    root_cause(&e)
                )
            } else {
                anyhow::anyhow!("request to the csmd daemon at {} failed: {}", self.base, root_cause(&e))
            }
        })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = body["error"].as_str().unwrap_or("no details");
            bail!("the daemon answered {status}: {message}");
        }
        Ok(body)
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
