//! A real SMTP server for the e-mail tests: aiosmtpd, run by
//! `tests/smtp/server.py` as a child process in a temp dir, and what it
//! received, read back from its maildir. The server's failures (rejected
//! recipients, temporary failures at DATA, a 421 greeting, a slow DATA, AUTH,
//! idle connections closed) are switched by rules the test writes while it
//! runs; the script documents them. [`SmtpServer::start_tls`] serves
//! STARTTLS or implicit TLS with a certificate from a throwaway CA
//! (trustme), whose certificate the client is given as `ca_file`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mail_parser::{HeaderName, MessageParser, MessagePart, MimeHeaders, PartType};
use serde_json::Value;

use super::{PATIENCE, repo_path};

/// How often the maildir is looked at while waiting for messages.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// The exit code of the script when aiosmtpd is missing.
const EXIT_NO_AIOSMTPD: i32 = 3;

/// The exit code of the script when trustme (for TLS) is missing.
const EXIT_NO_TRUSTME: i32 = 4;

/// An aiosmtpd server on 127.0.0.1, killed when dropped.
pub struct SmtpServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// `starttls` or `implicit`, or plain text.
    tls: Option<&'static str>,
}

impl SmtpServer {
    /// Starts the server on a free port with no rules (it accepts
    /// everything) and an empty maildir.
    pub fn start() -> SmtpServer {
        SmtpServer::start_with(None)
    }

    /// Starts the server speaking TLS: `"starttls"` (offered and required)
    /// or `"implicit"` (from the first byte). Its CA is [`Self::ca_file`].
    pub fn start_tls(mode: &'static str) -> SmtpServer {
        SmtpServer::start_with(Some(mode))
    }

    /// The CA certificate (PEM) that signed a TLS server's certificate,
    /// which is for `localhost`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls").join("ca.pem")
    }

    fn start_with(tls: Option<&'static str>) -> SmtpServer {
        let dir = tempfile::Builder::new()
            .prefix("csmd-smtp-")
            .tempdir()
            .expect("temp dir for the SMTP server");
        let mut server = SmtpServer {
            dir,
            port: 0,
            child: None,
            tls,
        };
        server.set_rules(serde_json::json!({}));
        let (child, port) = server.spawn(0);
        server.child = Some(child);
        server.port = port;
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where accepted messages land, as `<n>.eml` and `<n>.json`.
    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    /// Replaces the rules; the server applies them from its next command
    /// on. Writing rules again, even the same ones, starts a new
    /// `tempfail_data` count.
    pub fn set_rules(&self, rules: Value) {
        let path = self.rules_path();
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, rules.to_string()).expect("write the SMTP rules");
        std::fs::rename(&tmp, &path).expect("replace the SMTP rules");
    }

    /// Every message accepted so far, in the order they were accepted.
    pub fn messages(&self) -> Vec<Received> {
        let maildir = self.maildir();
        let Ok(entries) = std::fs::read_dir(&maildir) else {
            return Vec::new(); // nothing accepted yet
        };
        let mut numbers: Vec<String> = entries
            .filter_map(|entry| {
                let name = entry.expect("maildir entry").file_name();
                let stem = name.to_str()?.strip_suffix(".json")?.to_owned();
                stem.bytes().all(|b| b.is_ascii_digit()).then_some(stem)
            })
            .collect();
        numbers.sort();
        numbers
            .iter()
            .map(|n| Received::read(&maildir, n))
            .collect()
    }

    /// Polls the maildir until it holds at least `n` messages; fails the
    /// test after `timeout`. Blocks the thread: from a test whose daemon
    /// runs in the same tokio runtime, use [`Self::wait_for_messages_async`].
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(messages) = self.arrived(n, timeout, deadline) {
                return messages;
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// [`Self::wait_for_messages`] without blocking the runtime.
    pub async fn wait_for_messages_async(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(messages) = self.arrived(n, timeout, deadline) {
                return messages;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// The messages once there are `n`; fails the test past `deadline`.
    fn arrived(&self, n: usize, timeout: Duration, deadline: Instant) -> Option<Vec<Received>> {
        let messages = self.messages();
        if messages.len() >= n {
            return Some(messages);
        }
        self.assert_waiting(n, messages.len(), timeout, deadline);
        None
    }

    /// Kills the server; the maildir and the rules stay. Clients then get
    /// "connection refused".
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().expect("reap the SMTP server");
        }
    }

    /// Starts the server again on the same port, maildir and rules.
    pub fn restart(&mut self) {
        self.stop();
        let (child, port) = self.spawn(self.port);
        assert_eq!(port, self.port, "the SMTP server restarted on another port");
        self.child = Some(child);
    }

    /// How many SMTP connections this run of the server has opened and
    /// closed so far (closed by either side).
    pub fn connections(&self) -> (u64, u64) {
        let path = self.rules_path().with_extension("json.connections");
        let counts: Value = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let count = |field: &str| counts[field].as_u64().unwrap_or_default();
        (count("opened"), count("closed"))
    }

    /// What the server wrote on stderr, over all its runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn rules_path(&self) -> PathBuf {
        self.dir.path().join("rules.json")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn assert_waiting(&self, wanted: usize, arrived: usize, timeout: Duration, deadline: Instant) {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {wanted} message(s) at the SMTP server; \
             {arrived} arrived\n{}",
            self.log()
        );
    }

    /// Runs the script and waits for its `READY <port>` line.
    fn spawn(&self, port: u16) -> (Child, u16) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the SMTP server log");
        let mut command = Command::new("python3");
        command
            .arg(repo_path("tests/smtp/server.py"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--maildir")
            .arg(self.maildir())
            .arg("--rules")
            .arg(self.rules_path());
        if let Some(mode) = self.tls {
            command
                .arg("--tls")
                .arg(mode)
                .arg("--tls-dir")
                .arg(self.dir.path().join("tls"));
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("run python3 tests/smtp/server.py (is python3 installed?)");

        // A thread reads the line, so a server that hangs cannot hang the test.
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, ready) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = match ready.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the SMTP server did not get ready within {PATIENCE:?}\n{}",
                    self.log()
                );
            }
        };
        if let Some(port) = line.trim().strip_prefix("READY ") {
            let port = port.parse().expect("READY <port> names a port");
            return (child, port);
        }

        // No READY line: the script ended; say why.
        let status = child.wait().expect("reap the SMTP server");
        if status.code() == Some(EXIT_NO_TRUSTME) {
            panic!(
                "the TLS SMTP server needs trustme: run `python3 -m pip install trustme` \
                 (scripts/test does it)\n{}",
                self.log()
            );
        }
        if status.code() == Some(EXIT_NO_AIOSMTPD) {
            panic!(
                "the SMTP server needs aiosmtpd: run `python3 -m pip install aiosmtpd` \
                 (scripts/test does it)\n{}",
                self.log()
            );
        }
        panic!(
            "the SMTP server exited ({status}) before it was ready\n{}",
            self.log()
        );
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        // A failed test must not leave a server behind.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One message the server accepted: its envelope and the raw DATA bytes.
#[derive(Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub raw: Vec<u8>,
    /// The `Message-ID` header as written, angle brackets included.
    pub message_id: Option<String>,
    /// When the server accepted it, in seconds since the Unix epoch.
    pub received_at: f64,
}

impl Received {
    fn read(maildir: &Path, n: &str) -> Received {
        let meta_path = maildir.join(format!("{n}.json"));
        let meta: Value = serde_json::from_slice(
            &std::fs::read(&meta_path).expect("read an accepted message's envelope"),
        )
        .expect("the envelope is JSON");
        let raw =
            std::fs::read(maildir.join(format!("{n}.eml"))).expect("read an accepted message");
        let mut received = Received {
            mail_from: meta["mail_from"].as_str().unwrap_or_default().to_owned(),
            rcpt_tos: meta["rcpt_tos"]
                .as_array()
                .expect("rcpt_tos is a list")
                .iter()
                .map(|rcpt| rcpt.as_str().expect("a recipient").to_owned())
                .collect(),
            raw,
            message_id: None,
            received_at: meta["received_at"]
                .as_f64()
                .expect("the envelope has received_at"),
        };
        received.message_id = received.header("Message-ID");
        received
    }

    /// The header fields in order, each value unfolded and trimmed but not
    /// decoded (RFC 2047 words stay as written).
    pub fn headers(&self) -> Vec<(String, String)> {
        let text = String::from_utf8_lossy(header_block(&self.raw));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.starts_with([' ', '\t']) {
                // Unfolding removes the line break and keeps the whitespace.
                if let Some((_, value)) = headers.last_mut() {
                    value.push_str(line);
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_owned(), value.to_owned()));
            }
        }
        for (_, value) in &mut headers {
            *value = value.trim().to_owned();
        }
        headers
    }

    /// The first header field called `name` (any case), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers()
            .into_iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// The whole message, MIME parsed, for what the helpers here do not cover.
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        MessageParser::default()
            .parse(&self.raw)
            .unwrap_or_else(|| panic!("the SMTP server received an unparseable message: {self:?}"))
    }

    /// The decoded subject.
    pub fn subject(&self) -> Option<String> {
        self.parsed().subject().map(str::to_owned)
    }

    /// The first `text/plain` body part, decoded.
    pub fn text_body(&self) -> Option<String> {
        self.body_of_type("text/plain")
    }

    /// The first `text/html` body part, decoded.
    pub fn html_body(&self) -> Option<String> {
        self.body_of_type("text/html")
    }

    /// The first leaf part, attachment or not, whose MIME type starts with
    /// `content_type_prefix` (any case): its `Content-Type` header as
    /// written (unfolded) and its decoded contents. For the `text/calendar`
    /// part of a maintenance notice, say.
    pub fn attachment_or_part(&self, content_type_prefix: &str) -> Option<(String, Vec<u8>)> {
        let message = self.parsed();
        let prefix = content_type_prefix.to_ascii_lowercase();
        let part = message.parts.iter().find(|part| {
            matches!(
                part.body,
                PartType::Text(_)
                    | PartType::Html(_)
                    | PartType::Binary(_)
                    | PartType::InlineBinary(_)
            ) && mime_type(part).starts_with(&prefix)
        })?;
        let header = part
            .headers
            .iter()
            .find(|header| header.name == HeaderName::ContentType)
            .map(|header| {
                let raw = &self.raw[header.offset_start as usize..header.offset_end as usize];
                unfold(&String::from_utf8_lossy(raw))
            })
            .unwrap_or_else(|| mime_type(part));
        Some((header, part.contents().to_vec()))
    }

    fn body_of_type(&self, wanted: &str) -> Option<String> {
        let message = self.parsed();
        let bodies: Vec<&MessagePart<'_>> = if wanted == "text/html" {
            message.html_bodies().collect()
        } else {
            message.text_bodies().collect()
        };
        // mail-parser lists an HTML part among the text bodies when there is
        // no plain one (and the reverse); only the asked type counts.
        bodies
            .into_iter()
            .find(|part| mime_type(part) == wanted)
            .and_then(|part| part.text_contents())
            .map(str::to_owned)
    }
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("mail_from", &self.mail_from)
            .field("rcpt_tos", &self.rcpt_tos)
            .field("message_id", &self.message_id)
            .field("raw", &String::from_utf8_lossy(&self.raw))
            .finish()
    }
}

/// The header section: everything before the first empty line.
fn header_block(raw: &[u8]) -> &[u8] {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(raw.len());
    &raw[..end]
}

fn unfold(value: &str) -> String {
    value
        .replace("\r\n", "")
        .replace('\n', "")
        .trim()
        .to_owned()
}

/// `type/subtype` in lower case; `text/plain` when the part does not say.
fn mime_type(part: &MessagePart<'_>) -> String {
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(subtype) => format!("{}/{}", ct.ctype(), subtype).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => "text/plain".to_owned(),
    }
}
