//! The ways a message leaves csmd: SMTP ([`SmtpPool`], TLS required unless
//! towards loopback), the local sendmail program (lettre's transport), or
//! `.eml` files in a folder.

use std::path::PathBuf;

use lettre::{AsyncSendmailTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::io::AsyncWriteExt;

use super::smtp::{SmtpError, SmtpPool};
use crate::config;

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
    Smtp(SmtpPool),
    Sendmail(AsyncSendmailTransport<Tokio1Executor>),
    /// Writes `<id>.eml` into the folder: sending the same message again
    /// replaces the file, so it is never there twice.
    File(PathBuf),
}

impl Transport {
    /// Builds the configured transport. SMTP connects on first use; the
    /// worker's concurrency bounds how many connections it opens.
    pub fn build(config: &config::Transport) -> Result<Transport, String> {
        match config {
            config::Transport::File { dir } => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create the mail folder {}: {e}", dir.display()))?;
                Ok(Transport::File(dir.clone()))
            }
            config::Transport::Sendmail { command } => Ok(Transport::Sendmail(
                AsyncSendmailTransport::new_with_command(command.as_os_str()),
            )),
            config::Transport::Smtp(smtp) => Ok(Transport::Smtp(SmtpPool::new(smtp)?)),
        }
    }

    /// Closes what stays open between messages (pooled SMTP connections).
    pub async fn shutdown(&self) {
        if let Transport::Smtp(pool) = self {
            pool.shutdown().await;
        }
    }

    /// Hands one message over; `id` names the file of the file transport.
    pub async fn send(&self, id: &str, message: &Message) -> Result<(), SendError> {
        match self {
            Transport::Smtp(pool) => pool
                .send(message.envelope(), &message.formatted())
                .await
                .map_err(smtp_error),
            Transport::Sendmail(sendmail) => sendmail
                .send(message.clone())
                .await
                .map_err(|e| SendError::Transient(format!("sendmail: {e}"))),
            Transport::File(dir) => {
                let bytes = message.formatted();
                let path = dir.join(format!("{id}.eml"));
                let partial = dir.join(format!(".{id}.eml.partial"));
                let write = async {
                    let mut file = tokio::fs::File::create(&partial).await?;
                    file.write_all(&bytes).await?;
                    file.sync_all().await?;
                    tokio::fs::rename(&partial, &path).await
                };
                write.await.map_err(|e| {
                    SendError::Transient(format!("cannot write {}: {e}", path.display()))
                })
            }
        }
    }
}

/// SMTP replies that refuse our login, not the message (RFC 4954): 530
/// authentication required, 534 mechanism too weak, 535 credentials
/// invalid, 538 encryption required. Fixing the configuration fixes them,
/// so the messages wait instead of dying.
const AUTH_REFUSED: [u16; 4] = [530, 534, 535, 538];

fn smtp_error(e: SmtpError) -> SendError {
    let SmtpError::Smtp(e) = e else {
        return SendError::Transient(format!("SMTP: {e}"));
    };
    let code = e.status().map(u16::from);
    if code.is_some_and(|code| AUTH_REFUSED.contains(&code)) {
        SendError::Transient(format!(
            "the SMTP server refused csmd's login (check [email.smtp] username and password): {e}"
        ))
    } else if e.is_permanent() {
        SendError::Permanent(format!("the SMTP server refused the message: {e}"))
    } else {
        SendError::Transient(format!("SMTP: {e}"))
    }
}
