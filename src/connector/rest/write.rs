//! Write-back: records csmd creates and updates in the ITSM (tickets,
//! cases, work notes). A create is idempotent across crashes: csmd's own
//! key goes into the record's correlation field, and every attempt first
//! looks that key up, so being killed between the upstream's "created" and
//! csmd storing the record id can never produce a second record.

use reqwest::{Method, Url};
use serde_json::{Map, Value};

use super::client::{RestClient, UpstreamError};
use super::profile::Api;

/// Creates and updates records of one upstream.
pub struct WriteBack<'a> {
    pub client: &'a RestClient,
    pub api: &'a Api,
}

impl WriteBack<'_> {
    fn table_url(&self, table: &str) -> Result<Url, UpstreamError> {
        self.client
            .base_url()
            .join(&self.api.table_path.replace("{table}", table))
            .map_err(|e| UpstreamError::Body {
                url: table.to_string(),
                message: format!("bad table path: {e}"),
            })
    }

    fn correlation_field(&self) -> Result<&str, UpstreamError> {
        self.api
            .write
            .as_ref()
            .map(|w| w.correlation_field.as_str())
            .ok_or_else(|| UpstreamError::Body {
                url: self.client.base_url().to_string(),
                message: "this profile has no [api.write] section: it cannot create records".into(),
            })
    }

    /// The id of the record carrying `key`, if one exists.
    pub async fn find(&self, table: &str, key: &str) -> Result<Option<String>, UpstreamError> {
        let field = self.correlation_field()?;
        let id_field = &self.api.cursor.id;
        let mut url = self.table_url(table)?;
        url.query_pairs_mut()
            .append_pair(&self.api.query_param, &format!("{field}={key}"))
            .append_pair(&self.api.fields_param, id_field)
            .append_pair(&self.api.limit_param, "1");
        let response = self.client.send(Method::GET, &url, None).await?;
        Ok(response
            .body
            .pointer(&self.api.records)
            .and_then(Value::as_array)
            .and_then(|records| records.first())
            .and_then(|r| r.get(id_field))
            .and_then(Value::as_str)
            .map(str::to_string))
    }

    /// Creates the record unless one carrying `key` exists; returns its id.
    /// Each retry looks the key up again first.
    pub async fn ensure_created(
        &self,
        table: &str,
        key: &str,
        fields: &Map<String, Value>,
    ) -> Result<String, UpstreamError> {
        let field = self.correlation_field()?.to_string();
        let url = self.table_url(table)?;
        let mut body = fields.clone();
        body.insert(field, Value::String(key.to_string()));
        let body = Value::Object(body);
        self.client
            .retrying(|| async {
                if let Some(id) = self.find(table, key).await? {
                    return Ok(id);
                }
                let response = self
                    .client
                    .send_once(Method::POST, &url, Some(&body))
                    .await?;
                response
                    .body
                    // A write answers one record where a read answers a list.
                    .pointer(&format!("{}/{}", self.api.records, self.api.cursor.id))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| UpstreamError::Body {
                        url: url.path().to_string(),
                        message: format!("the created record has no `{}`", self.api.cursor.id),
                    })
            })
            .await
    }

    /// Sets fields on an existing record (a repeated update is harmless).
    pub async fn update(
        &self,
        table: &str,
        id: &str,
        fields: &Map<String, Value>,
    ) -> Result<(), UpstreamError> {
        let mut url = self.table_url(table)?;
        url.path_segments_mut()
            .map_err(|()| UpstreamError::Body {
                url: table.to_string(),
                message: "base URL cannot take a path".into(),
            })?
            .push(id);
        self.client
            .send(Method::PATCH, &url, Some(&Value::Object(fields.clone())))
            .await?;
        Ok(())
    }
}
