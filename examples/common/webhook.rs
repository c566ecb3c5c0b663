//! The HTTP side of the webhook load generators (`ingest_load`,
//! `alert_load`): keep-alive connections, a POST with prebuilt headers, and
//! the daemon's group-commit counters from `/metrics`.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const HOST: HeaderValue = HeaderValue::from_static("127.0.0.1");

/// Where the clients post, with the headers built once: the load generator
/// shares the cores with the daemon, so a request should cost it little.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub uri: Uri,
    pub authorization: HeaderValue,
}

/// The server's counters that say how group commit behaved.
#[derive(Clone, Copy, Default)]
pub struct Scrape {
    pub flushes: f64,
    pub flush_seconds: f64,
    pub group_sum: f64,
    pub groups: f64,
}

/// A keep-alive HTTP/1.1 connection to the daemon.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Posts one payload; returns the status and the answer's body.
pub async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    body: String,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let request = Request::post(target.uri.clone())
        .header(header::HOST, HOST)
        .header(header::AUTHORIZATION, target.authorization.clone())
        .header(header::CONTENT_TYPE, JSON)
        .body(Full::new(Bytes::from(body)))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Reads the group-commit counters from `GET /metrics`.
pub async fn scrape(addr: SocketAddr) -> anyhow::Result<Scrape> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get("/metrics")
        .header(header::HOST, HOST)
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        bail!("GET /metrics answered {}", response.status());
    }
    let body = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body);
    let value = |name: &str| -> anyhow::Result<f64> {
        text.lines()
            .find_map(|line| {
                let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .with_context(|| format!("no {name} in /metrics"))
    };
    Ok(Scrape {
        flushes: value("csmd_store_flush_seconds_count")?,
        flush_seconds: value("csmd_store_flush_seconds_sum")?,
        group_sum: value("csmd_journal_group_size_sum")?,
        groups: value("csmd_journal_group_size_count")?,
    })
}
