//! The Prometheus `/metrics` endpoint: the default registry in the text format.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `GET /metrics` (Prometheus text format, the default registry) on `addr` until the
/// process ends. `refresh` runs on the blocking pool before each scrape (gauges read from state).
pub async fn serve_metrics(
    addr: SocketAddr,
    refresh: Arc<dyn Fn() + Send + Sync>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics-listen {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let refresh = refresh.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut len = 0;
                // the request line and headers; the body (none for GET) is ignored
                while len < buf.len() {
                    match socket.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..len]);
                let path = head.split_whitespace().nth(1).unwrap_or("");
                let (status, content_type, body) = if path == "/metrics" {
                    let _ = tokio::task::spawn_blocking(move || refresh()).await;
                    (
                        "200 OK",
                        "text/plain; version=0.0.4; charset=utf-8",
                        metrics_text(),
                    )
                } else {
                    (
                        "404 Not Found",
                        "text/plain",
                        "not found: try /metrics\n".into(),
                    )
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    Ok(bound)
}

/// The default registry in the Prometheus text format.
pub fn metrics_text() -> String {
    let encoder = prometheus::TextEncoder::new();
    encoder
        .encode_to_string(&prometheus::gather())
        .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
}
