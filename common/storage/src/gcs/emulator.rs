//! The real fake-gcs-server, started on 127.0.0.1 for tests and local development.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::GcsError;

/// A running fake-gcs-server (in-memory backend, HTTP, 127.0.0.1 only). Killed on Drop.
#[derive(Debug)]
pub struct FakeGcs {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

/// Where the binary comes from: `$HERD_FAKE_GCS_SERVER`, else `fake-gcs-server` on PATH.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HERD_FAKE_GCS_SERVER") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("fake-gcs-server"))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16, GcsError> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| GcsError::Emulator {
        reason: format!("no free port on 127.0.0.1: {e}"),
    })?;
    Ok(l.local_addr().map(|a| a.port()).unwrap_or(0))
}

/// One HTTP/1.0 GET against the bucket list; true when it answers 200.
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /storage/v1/b?project=test HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    got >= 12 && buf[..12].starts_with(b"HTTP/1.") && &buf[9..12] == b"200"
}

impl FakeGcs {
    /// Starts `fake-gcs-server -scheme http -host 127.0.0.1 -port <free> -backend memory
    /// -external-url http://127.0.0.1:<port>` and waits until it answers.
    pub fn start() -> Result<FakeGcs, GcsError> {
        let bin = binary().ok_or_else(|| GcsError::Emulator {
            reason: "binary not found ($HERD_FAKE_GCS_SERVER unset or not a file, and no \
                     fake-gcs-server on PATH): run scripts/setup, then source scripts/env"
                .into(),
        })?;
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let log = std::env::temp_dir()
                .join(format!("herd-fake-gcs-{}-{port}.log", std::process::id()));
            let log_file = std::fs::File::create(&log).map_err(|e| GcsError::Emulator {
                reason: format!("{}: {e}", log.display()),
            })?;
            let child = Command::new(&bin)
                .args(["-scheme", "http", "-host", "127.0.0.1", "-port"])
                .arg(port.to_string())
                .args(["-backend", "memory", "-log-level", "warn", "-external-url"])
                .arg(format!("http://127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .map_err(|e| GcsError::Emulator {
                    reason: format!("starting {}: {e}", bin.display()),
                })?;
            let mut server = FakeGcs {
                child: Some(child),
                port,
                log,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if answers(port) {
                    return Ok(server);
                }
                if let Some(status) = server
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    last_error = format!(
                        "{} exited with {status}: {}",
                        bin.display(),
                        std::fs::read_to_string(&server.log)
                            .unwrap_or_default()
                            .trim()
                    );
                    break;
                }
                if Instant::now() > deadline {
                    last_error = format!(
                        "{} did not answer on 127.0.0.1:{port} within 20 s: {}",
                        bin.display(),
                        std::fs::read_to_string(&server.log)
                            .unwrap_or_default()
                            .trim()
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            server.stop();
        }
        Err(GcsError::Emulator { reason: last_error })
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (simulates the service going away). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        self.stop();
    }
}
