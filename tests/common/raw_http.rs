//! An HTTP/1.1 connection driven byte by byte.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{PATIENCE, Reply};

/// An HTTP/1.1 connection driven byte by byte, for what a ready-made
/// client hides: chunked bodies of our choosing, `Expect: 100-continue`,
/// a request left half sent.
pub struct RawConnection {
    stream: tokio::net::TcpStream,
    buffer: Vec<u8>,
}

impl RawConnection {
    pub async fn open(addr: SocketAddr) -> RawConnection {
        RawConnection {
            stream: tokio::net::TcpStream::connect(addr)
                .await
                .expect("connect to the daemon"),
            buffer: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write request");
    }

    /// Reads the next response (1xx included). The body is read by its
    /// Content-Length; the daemon's JSON answers always carry one.
    pub async fn response(&mut self) -> Reply {
        let head_end = loop {
            if let Some(i) = find(&self.buffer, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await;
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {head:?}"));
        let mut headers = reqwest::header::HeaderMap::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').expect("header line");
            headers.append(
                reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).expect("name"),
                value.trim().parse().expect("header value"),
            );
        }
        let length: usize = headers
            .get("content-length")
            .map_or(0, |v| v.to_str().unwrap().parse().unwrap());
        while self.buffer.len() < head_end + length {
            self.fill().await;
        }
        let body: Vec<u8> = self
            .buffer
            .drain(..head_end + length)
            .skip(head_end)
            .collect();
        let text = String::from_utf8_lossy(&body).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk))
            .await
            .expect("the daemon answers in time")
            .expect("read response");
        assert!(
            n > 0,
            "connection closed mid-response after {:?}",
            String::from_utf8_lossy(&self.buffer)
        );
        self.buffer.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
