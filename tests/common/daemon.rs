//! The real `csmd` binary: `csmd run` as a child process, and the CLI.

use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Api, ConfigDir, PATIENCE, free_port, wait_until};

/// The `csmd` binary under test.
pub fn csmd_binary() -> &'static str {
    env!("CARGO_BIN_EXE_csmd")
}

/// Environment a test must not leak into the binary: systemd's and the
/// CLI's variables, and a developer's `RUST_LOG`.
const SCRUBBED_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "CREDENTIALS_DIRECTORY",
    "STATE_DIRECTORY",
    "CSMD_CONFIG",
    "CSMD_URL",
    "CSMD_ADMIN_TOKEN",
    "RUST_LOG",
];

pub fn csmd_command() -> std::process::Command {
    let mut command = std::process::Command::new(csmd_binary());
    for name in SCRUBBED_ENV {
        command.env_remove(name);
    }
    command
}

/// Runs a CLI command to completion.
pub async fn run_cli(args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::from(csmd_command());
    command.args(args).stdin(Stdio::null());
    tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("the CLI finishes in time")
        .expect("run the csmd CLI")
}

static LOG_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// `csmd run` as a child process, its stderr captured to a file.
pub struct Daemon {
    child: Child,
    pub api: Api,
    pub log_path: PathBuf,
    config_path: PathBuf,
}

impl Daemon {
    /// Spawns `csmd run --config <dir>/csmd.toml` without waiting for it.
    pub fn spawn(config: &ConfigDir, env: &[(&str, &str)]) -> Daemon {
        config.write();
        let n = LOG_COUNTER.fetch_add(1, Ordering::Relaxed);
        let log_path = config.dir().join(format!("csmd-{n}.log"));
        let log = std::fs::File::create(&log_path).expect("create log file");
        let mut command = csmd_command();
        command
            .arg("run")
            .arg("--config")
            .arg(config.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        let child = command.spawn().expect("spawn csmd run");
        Daemon {
            child,
            api: Api::new(config.listen),
            log_path,
            config_path: config.path(),
        }
    }

    /// Spawns the daemon and waits until `/readyz` answers 200. If the port
    /// picked for it was taken meanwhile, picks another and tries again.
    pub async fn start(config: &mut ConfigDir, env: &[(&str, &str)]) -> Daemon {
        for _ in 0..3 {
            let mut daemon = Daemon::spawn(config, env);
            match daemon.wait_ready().await {
                Ok(()) => return daemon,
                Err(log) if log.contains("Address already in use") => {
                    config.listen = free_port();
                }
                Err(log) => panic!("csmd run exited before it was ready:\n{log}"),
            }
        }
        panic!("no free port found for csmd run");
    }

    /// Polls `/readyz` until it answers 200 for this configuration (not
    /// some other daemon that took the port); `Err(log)` if the process
    /// exited first.
    pub async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Err(format!("({status})\n{}", self.log()));
            }
            if let Ok(r) = probe.get(self.api.url("/readyz")).send().await
                && r.status() == 200
                && let Ok(body) = r.json::<Value>().await
                && body["config"].as_str() == self.config_path.to_str()
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "csmd did not become ready within {PATIENCE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal, as systemd or an operator would.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // own child, which has not been reaped yet (we hold its `Child`).
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// `kill -9`, and reap it.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL csmd");
        self.child.wait().expect("reap csmd");
    }

    /// Waits for the process to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "csmd did not exit within {timeout:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log holds `needle`.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        let mut log = String::new();
        wait_until(&format!("{needle:?} in the log"), PATIENCE, || {
            log = self.log();
            let found = log.contains(needle);
            async move { found }
        })
        .await;
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failed test must not leave a daemon behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
