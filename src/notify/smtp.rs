//! SMTP delivery: lettre speaks the protocol (EHLO, STARTTLS, AUTH, MAIL,
//! RCPT, DATA, dot-stuffing); csmd opens the sockets and keeps the pool.
//!
//! Why not lettre's own pooled transport: lettre 0.11.23 writes the
//! message and the final `CRLF.CRLF` as two writes on a socket without
//! `TCP_NODELAY`, so Nagle's algorithm holds the short second write until
//! the server's delayed ACK, about 40 ms per message (fixed upstream, not
//! yet released). Opening the socket here lets us set `TCP_NODELAY` and
//! hand the stream to [`AsyncSmtpConnection::connect_with_transport`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::{self, TlsMode};

/// A pooled connection unused for longer than this is closed rather than
/// reused: servers commonly hang up after a minute or more of silence.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a message was not handed over.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("cannot connect to {server}: {source}")]
    Connect { server: String, source: io::Error },
    #[error("no answer from {server} within {timeout:?}")]
    Timeout { server: String, timeout: Duration },
    #[error("cannot set up TLS towards {server}: {source}")]
    Tls { server: String, source: io::Error },
    /// The server answered with an error, or the session broke.
    #[error(transparent)]
    Smtp(#[from] lettre::transport::smtp::Error),
}

/// How the session is secured, with what it needs, built once.
enum Security {
    /// Plain text (configuration allows it only towards loopback).
    Plain,
    /// STARTTLS after the greeting, required.
    Starttls(TlsParameters),
    /// TLS from the first byte.
    Implicit(Arc<rustls::ClientConfig>),
}

/// Connections to one SMTP server, reused while they stay healthy.
pub struct SmtpPool {
    host: String,
    port: u16,
    security: Security,
    timeout: Duration,
    credentials: Option<Credentials>,
    hello: ClientId,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl SmtpPool {
    pub fn new(smtp: &config::Smtp) -> Result<SmtpPool, String> {
        let security = match smtp.tls {
            TlsMode::None => Security::Plain,
            TlsMode::Starttls => {
                let mut parameters = TlsParameters::builder(smtp.host.clone());
                for der in &smtp.extra_roots {
                    let root = Certificate::from_der(der.clone())
                        .map_err(|e| format!("cannot use a ca_file certificate: {e}"))?;
                    parameters = parameters.add_root_certificate(root);
                }
                Security::Starttls(
                    parameters
                        .build()
                        .map_err(|e| format!("cannot set up TLS towards {}: {e}", smtp.host))?,
                )
            }
            TlsMode::Tls => {
                crate::install_crypto_provider();
                let mut roots =
                    rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.to_vec());
                for der in &smtp.extra_roots {
                    roots
                        .add(rustls::pki_types::CertificateDer::from(der.clone()))
                        .map_err(|e| format!("cannot use a ca_file certificate: {e}"))?;
                }
                Security::Implicit(Arc::new(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(roots)
                        .with_no_client_auth(),
                ))
            }
        };
        Ok(SmtpPool {
            host: smtp.host.clone(),
            port: smtp.port,
            security,
            timeout: smtp.timeout,
            credentials: smtp.credentials.as_ref().map(|(user, password)| {
                Credentials::new(user.clone(), password.expose_secret().to_owned())
            }),
            hello: ClientId::default(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Hands one message to the server, on a pooled connection when one is
    /// still alive (checked with NOOP), else on a new one. The whole
    /// exchange is bounded by the configured timeout.
    pub async fn send(&self, envelope: &Envelope, email: &[u8]) -> Result<(), SmtpError> {
        let mut connection = match self.pooled().await {
            Some(connection) => connection,
            None => self.bounded(self.connect()).await?,
        };
        let sent = self
            .bounded(async { Ok(connection.send(envelope, email).await?) })
            .await;
        // lettre marks a connection broken after any error; only a healthy
        // one goes back.
        if sent.is_ok() && !connection.has_broken() {
            self.lock_idle().push((connection, Instant::now()));
        }
        sent.map(|_| ())
    }

    /// Says goodbye on every idle connection.
    pub async fn shutdown(&self) {
        let idle = std::mem::take(&mut *self.lock_idle());
        for (mut connection, _) in idle {
            let _ = tokio::time::timeout(self.timeout, connection.quit()).await;
        }
    }

    /// The most recently used idle connection that still answers NOOP.
    async fn pooled(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut connection, since) = self.lock_idle().pop()?;
            if since.elapsed() < IDLE_TIMEOUT
                && tokio::time::timeout(self.timeout, connection.test_connected())
                    .await
                    .unwrap_or(false)
            {
                return Some(connection);
            }
            // Closed by the server, or idle too long: drop it quietly.
            let _ = tokio::time::timeout(Duration::from_millis(100), connection.abort()).await;
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SmtpError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| self.connect_error(source))?;
        tcp.set_nodelay(true)
            .map_err(|source| self.connect_error(source))?;
        let stream: Box<dyn AsyncTokioStream> = match &self.security {
            Security::Implicit(config) => Box::new(self.wrap_tls(tcp, config.clone()).await?),
            Security::Plain | Security::Starttls(_) => Box::new(tcp),
        };
        let mut connection =
            AsyncSmtpConnection::connect_with_transport(stream, &self.hello).await?;
        if let Security::Starttls(parameters) = &self.security {
            // Required: a server that does not offer it is an error.
            connection.starttls(parameters.clone(), &self.hello).await?;
        }
        if let Some(credentials) = &self.credentials {
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        Ok(connection)
    }

    async fn wrap_tls(
        &self,
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<ImplicitTls, SmtpError> {
        let tls_error = |source| SmtpError::Tls {
            server: self.server(),
            source,
        };
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| tls_error(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(tls_error)?;
        Ok(ImplicitTls(stream))
    }

    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, SmtpError>>,
    ) -> Result<T, SmtpError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| SmtpError::Timeout {
                server: self.server(),
                timeout: self.timeout,
            })?
    }

    fn connect_error(&self, source: io::Error) -> SmtpError {
        SmtpError::Connect {
            server: self.server(),
            source,
        }
    }

    fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<(AsyncSmtpConnection, Instant)>> {
        // The list stays consistent even if a holder panicked.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A TLS session opened before the SMTP greeting (port 465), as lettre's
/// stream trait wants it.
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for ImplicitTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
