//! The ways a message leaves csmd, all through lettre: SMTP (pooled, TLS
//! required unless towards loopback), the local sendmail program, or `.eml`
//! files in a folder.

use std::path::PathBuf;

use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSendmailTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::{self, TlsMode};

/// Why a message was not accepted, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Connection refused, timeout, SMTP 4xx: try again later.
    #[error("{0}")]
    Transient(String),
    /// SMTP 5xx, an invalid address: trying again cannot help.
    #[error("{0}")]
    Permanent(String),
}

pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Sendmail(AsyncSendmailTransport<Tokio1Executor>),
    /// Writes `<id>.eml` into the folder: sending the same message again
    /// replaces the file, so it is never there twice.
    File(PathBuf),
}

impl Transport {
    /// Builds the configured transport; `connections` bounds the SMTP pool.
    pub fn build(config: &config::Transport, connections: usize) -> Result<Transport, String> {
        match config {
            config::Transport::File { dir } => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create the mail folder {}: {e}", dir.display()))?;
                Ok(Transport::File(dir.clone()))
            }
            config::Transport::Sendmail { command } => Ok(Transport::Sendmail(
                AsyncSendmailTransport::new_with_command(command.as_os_str()),
            )),
            config::Transport::Smtp(smtp) => {
                crate::install_crypto_provider();
                let tls = |host: &str| {
                    TlsParameters::new(host.to_string())
                        .map_err(|e| format!("cannot set up TLS towards {host}: {e}"))
                };
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
                        .port(smtp.port)
                        .timeout(Some(smtp.timeout))
                        .tls(match smtp.tls {
                            TlsMode::Starttls => Tls::Required(tls(&smtp.host)?),
                            TlsMode::Tls => Tls::Wrapper(tls(&smtp.host)?),
                            TlsMode::None => Tls::None,
                        })
                        .pool_config(
                            PoolConfig::new()
                                .max_size(u32::try_from(connections).unwrap_or(u32::MAX))
                                .idle_timeout(std::time::Duration::from_secs(30)),
                        );
                if let Some((user, password)) = &smtp.credentials {
                    builder = builder.credentials(Credentials::new(
                        user.clone(),
                        password.expose_secret().to_string(),
                    ));
                }
                Ok(Transport::Smtp(builder.build()))
            }
        }
    }

    /// Hands one message over; `id` names the file of the file transport.
    pub async fn send(&self, id: &str, message: &Message) -> Result<(), SendError> {
        match self {
            Transport::Smtp(smtp) => smtp.send(message.clone()).await.map(|_| ()).map_err(|e| {
                if e.is_permanent() {
                    SendError::Permanent(format!("the SMTP server refused the message: {e}"))
                } else {
                    SendError::Transient(format!("SMTP: {e}"))
                }
            }),
            Transport::Sendmail(sendmail) => sendmail
                .send(message.clone())
                .await
                .map_err(|e| SendError::Transient(format!("sendmail: {e}"))),
            Transport::File(dir) => {
                let bytes = message.formatted();
                let path = dir.join(format!("{id}.eml"));
                let partial = dir.join(format!(".{id}.eml.partial"));
                let write = async {
                    tokio::fs::write(&partial, &bytes).await?;
                    tokio::fs::File::open(&partial).await?.sync_all().await?;
                    tokio::fs::rename(&partial, &path).await
                };
                write.await.map_err(|e| {
                    SendError::Transient(format!("cannot write {}: {e}", path.display()))
                })
            }
        }
    }
}
