//! The server side of herd's RPC security (issue 7): the bearer-token check in front of both
//! services, TLS (server certificate, optional client certificates), and the limits (message
//! sizes, rewards per message, per-worker lease rate, concurrent calls per connection).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::BoxFuture;
use subtle::ConstantTimeEq;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::Status;

pub use herd_proto::security::{resolve_token, ClientSecurity, TOKEN_ENV};

/// `coord serve` security flags.
#[derive(clap::Args, Clone, Debug, Default)]
#[command(next_help_heading = "Security")]
pub struct SecurityArgs {
    /// file whose first line is the bearer token every RPC must carry (default: $HERD_TOKEN)
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// the token itself, for in-process callers (`coord run`, tests); never a flag
    #[arg(skip)]
    pub token: Option<String>,
    /// serve without a token: any client that can reach the port may lease, submit and cancel
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// the server certificate chain (PEM): serve TLS
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// the server certificate's private key (PEM)
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that signs client certificates: clients must present one (mTLS)
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// allow plaintext (no TLS) on a non-loopback listen address
    #[arg(long)]
    pub allow_plaintext: bool,
}

impl SecurityArgs {
    /// Security for in-process servers: this token, plaintext (loopback).
    pub fn with_token(token: &str) -> Self {
        SecurityArgs {
            token: Some(token.to_string()),
            ..Default::default()
        }
    }

    /// The token to check, or `None` with `--insecure-no-auth`; refuses to go on without either.
    pub fn server_token(&self) -> anyhow::Result<Option<String>> {
        let token = match &self.token {
            Some(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            Some(_) => anyhow::bail!("the token is empty"),
            None => resolve_token(self.token_file.as_deref()).map_err(anyhow::Error::msg)?,
        };
        match (token, self.insecure_no_auth) {
            (Some(token), _) => Ok(Some(token)),
            (None, true) => {
                tracing::warn!(
                    "--insecure-no-auth: RPCs are NOT authenticated; anyone who can reach this \
                     port can lease tasks, write results, submit and cancel sweeps"
                );
                Ok(None)
            }
            (None, false) => anyhow::bail!(
                "no token: pass --token-file PATH or set ${TOKEN_ENV} (every worker and client \
                 needs the same token), or --insecure-no-auth to serve without one"
            ),
        }
    }

    /// The TLS configuration, or `None` for plaintext (refused on a non-loopback address unless
    /// `--allow-plaintext`).
    pub fn server_tls(&self, listen: SocketAddr) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            if !listen.ip().is_loopback() {
                anyhow::ensure!(
                    self.allow_plaintext,
                    "refusing plaintext gRPC on {listen}: pass --tls-cert/--tls-key, or \
                     --allow-plaintext on a network you trust"
                );
                tracing::warn!(
                    %listen,
                    "--allow-plaintext: RPCs (and the token) travel unencrypted"
                );
            }
            return Ok(None);
        };
        herd_proto::security::install_crypto_provider();
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
        if let Some(ca) = &self.tls_client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(Some(tls))
    }
}

/// `coord serve` limits.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// largest request the server decodes (a ResultBatch, a Submit)
    #[arg(long, default_value_t = 64 << 20)]
    pub max_message_bytes: usize,
    /// most rewards in one ResultBatch message (more: INVALID_ARGUMENT)
    #[arg(long, default_value_t = 4096)]
    pub max_results_per_message: usize,
    /// Lease calls per second each worker may make on average (0: unlimited); above it the
    /// answer is RESOURCE_EXHAUSTED and the worker backs off
    #[arg(long, default_value_t = 20.0)]
    pub lease_rate: f64,
    /// Lease calls a worker may make at once before the rate applies
    #[arg(long, default_value_t = 40)]
    pub lease_burst: u32,
    /// concurrent calls per client connection (further calls wait)
    #[arg(long, default_value_t = 1024)]
    pub max_concurrent_rpcs_per_connection: usize,
}

impl Default for LimitArgs {
    fn default() -> Self {
        LimitArgs {
            max_message_bytes: 64 << 20,
            max_results_per_message: 4096,
            lease_rate: 20.0,
            lease_burst: 40,
            max_concurrent_rpcs_per_connection: 1024,
        }
    }
}

/// A token bucket per worker id for Lease calls.
pub struct LeaseLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl LeaseLimiter {
    /// `None` when the rate is 0 (unlimited).
    pub fn new(limits: &LimitArgs) -> Option<Arc<Self>> {
        (limits.lease_rate > 0.0).then(|| {
            Arc::new(LeaseLimiter {
                rate: limits.lease_rate,
                burst: f64::from(limits.lease_burst.max(1)),
                buckets: Mutex::new(HashMap::new()),
            })
        })
    }

    /// Takes one token for `worker`, or says how long until one is there.
    pub fn check(&self, worker: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            // forget workers idle long enough to have a full bucket again
            let full = Duration::from_secs_f64(self.burst / self.rate);
            buckets.retain(|_, (_, last)| now.duration_since(*last) < full);
        }
        let (tokens, last) = buckets
            .entry(worker.to_string())
            .or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

/// RESOURCE_EXHAUSTED for a worker over its lease rate, with `retry-after-ms` metadata.
pub fn rate_limited(wait: Duration) -> Status {
    let ms = wait.as_millis().max(1) as u64;
    let mut status = Status::resource_exhausted(format!("lease rate limit: retry in {ms} ms"));
    if let Ok(value) = ms.to_string().parse() {
        status.metadata_mut().insert("retry-after-ms", value);
    }
    status
}

/// The bearer-token check in front of both services: `authorization: Bearer <token>`, compared
/// in constant time; otherwise UNAUTHENTICATED, logged with the peer and the RPC (never the token).
#[derive(Clone)]
pub struct AuthLayer {
    token: Option<Arc<[u8]>>,
}

impl AuthLayer {
    /// `None`: every call passes (`--insecure-no-auth`).
    pub fn new(token: Option<&str>) -> Self {
        AuthLayer {
            token: token.map(|t| Arc::from(t.as_bytes())),
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            token: self.token.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    token: Option<Arc<[u8]>>,
}

/// Why a call was refused, or `None` when its token matches.
fn refusal(expected: &[u8], header: Option<&http::HeaderValue>) -> Option<&'static str> {
    let Some(header) = header else {
        return Some("no authorization header");
    };
    let Some(given) = header.as_bytes().strip_prefix(b"Bearer ") else {
        return Some("authorization is not a bearer token");
    };
    // ct_eq: equal lengths compared in constant time; a length mismatch is not secret
    if bool::from(given.ct_eq(expected)) {
        None
    } else {
        Some("wrong token")
    }
}

fn peer<B>(request: &http::Request<B>) -> Option<SocketAddr> {
    let ext = request.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Auth<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if let Some(expected) = &self.token {
            let header = request.headers().get(http::header::AUTHORIZATION);
            if let Some(reason) = refusal(expected, header) {
                let peer = peer(&request)
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "unknown".into());
                tracing::warn!(peer = %peer, rpc = %request.uri().path(), reason, "unauthenticated call refused");
                let response = Status::unauthenticated(format!(
                    "{reason}: this coordinator needs `authorization: Bearer <token>` \
                     (--token-file or ${TOKEN_ENV})"
                ))
                .into_http();
                return Box::pin(async move { Ok(response) });
            }
        }
        // the clone is ready-polled on its next use; take the polled one (tower's usual dance)
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(request).await })
    }
}

/// A random token (hex, 256 bits) for `coord run`'s embedded server and the tests.
pub fn random_token() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
