//! Child processes for tests and herd-sim: each killed (SIGKILL) when dropped, with its output in
//! a numbered log file that a failure message can quote; the free-port helper; and the
//! `coord serve` command line every harness starts a coordinator with.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `coord serve` (binary `bin`) on 127.0.0.1:`port` with its state file, output folder, lease
/// timeout and heartbeat interval; callers add their other flags.
pub fn coord_serve(
    bin: &Path,
    state: &Path,
    port: u16,
    out_dir: &Path,
    lease_timeout_ms: u64,
    heartbeat_interval_ms: u64,
) -> Command {
    let mut command = Command::new(bin);
    command
        .arg("serve")
        .arg("--state")
        .arg(state)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--out-dir")
        .arg(out_dir)
        .arg("--lease-timeout-ms")
        .arg(lease_timeout_ms.to_string())
        .arg("--heartbeat-interval-ms")
        .arg(heartbeat_interval_ms.to_string());
    command
}

/// A child process that is killed (SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// Starts `command` with its output in `<log_dir>/<name>.<n>.log` (the first unused n);
    /// panics when it cannot (tests).
    pub fn spawn(name: &str, command: Command, log_dir: &Path) -> Proc {
        Proc::try_spawn(name, command, log_dir).unwrap_or_else(|e| panic!("starting {name}: {e}"))
    }

    /// [`Proc::spawn`], with an error naming the process and the reason.
    pub fn try_spawn(name: &str, mut command: Command, log_dir: &Path) -> std::io::Result<Proc> {
        let named = |what: &str, e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("{name}: {what}: {e}"))
        };
        std::fs::create_dir_all(log_dir).map_err(|e| named("log folder", e))?;
        let mut n = 0;
        let log = loop {
            let candidate = log_dir.join(format!("{name}.{n}.log"));
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        let out = File::create(&log).map_err(|e| named("log file", e))?;
        let err = out.try_clone().map_err(|e| named("log file", e))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = command.spawn().map_err(|e| named("starting", e))?;
        Ok(Proc {
            name: name.to_string(),
            log,
            child: Some(child),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: sending a signal to our own child process
            unsafe {
                libc::kill(pid as i32, signal);
            }
        }
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "---- {} ({}) ----\n{}",
            self.name,
            self.log.display(),
            all[start..].join("\n")
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A free port on 127.0.0.1 (bound then released, so a restarted server can take it again).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
