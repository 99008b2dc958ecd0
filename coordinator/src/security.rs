//! The server side of herd's RPC security: the bearer-token check in front of both services
//! (the worker token opens `Workers`, the operator token `Sweeps`), the per-registration worker
//! secrets, TLS (server certificate, optional client certificates), and the per-worker lease
//! rate (the other limits are applied by the server, see [`crate::config::Limits`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::Status;

use crate::config::Limits;

pub use herd_rpc::security::{resolve_token, ClientSecurity, Role, OPERATOR_TOKEN_ENV, TOKEN_ENV};

/// How `coord serve` authenticates callers and protects the connection (`cli::serve` fills it
/// from flags; in-process servers use [`SecurityConfig::with_tokens`]).
#[derive(Clone, Debug, Default)]
pub struct SecurityConfig {
    /// file whose first line is the worker token (None: $HERD_TOKEN)
    pub token_file: Option<PathBuf>,
    /// file whose first line is the operator token (None: $HERD_OPERATOR_TOKEN)
    pub operator_token_file: Option<PathBuf>,
    /// the tokens themselves, for in-process callers (`coord run`, tests): the files and the
    /// environment are then not read
    pub tokens: Option<RoleTokens>,
    /// serve without tokens: any client that can reach the port may lease, submit and cancel
    pub insecure_no_auth: bool,
    /// the server certificate chain (PEM): serve TLS (with `tls_key`)
    pub tls_cert: Option<PathBuf>,
    /// the server certificate's private key (PEM)
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that signs client certificates: clients must present one (mTLS)
    pub tls_client_ca: Option<PathBuf>,
    /// allow plaintext (no TLS) on a non-loopback listen address
    pub allow_plaintext: bool,
}

/// The two bearer tokens a coordinator checks (Debug never prints them).
#[derive(Clone, PartialEq, Eq)]
pub struct RoleTokens {
    /// opens the Workers service
    pub worker: String,
    /// opens the Sweeps service
    pub operator: String,
}

impl RoleTokens {
    /// Two fresh random tokens (`coord run`, tests).
    pub fn random() -> anyhow::Result<Self> {
        Ok(RoleTokens {
            worker: random_token()?,
            operator: random_token()?,
        })
    }

    pub fn get(&self, role: Role) -> &str {
        match role {
            Role::Worker => &self.worker,
            Role::Operator => &self.operator,
        }
    }
}

impl std::fmt::Debug for RoleTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoleTokens(<set>)")
    }
}

impl SecurityConfig {
    /// Security for in-process servers: these tokens, plaintext (loopback).
    pub fn with_tokens(tokens: &RoleTokens) -> Self {
        SecurityConfig {
            tokens: Some(tokens.clone()),
            ..Default::default()
        }
    }

    /// The tokens to check, or `None` with `--insecure-no-auth`. Both tokens or neither: a
    /// coordinator given only one refuses to start (one service would be open, or the
    /// `--insecure-no-auth` choice ambiguous), and so does one whose two tokens are equal (the
    /// roles would not be separate).
    pub fn server_tokens(&self) -> anyhow::Result<Option<RoleTokens>> {
        let tokens = match &self.tokens {
            Some(t) => {
                for role in Role::ALL {
                    anyhow::ensure!(
                        !t.get(role).trim().is_empty(),
                        "the {} is empty",
                        role.token_name()
                    );
                }
                Some(RoleTokens {
                    worker: t.worker.trim().to_string(),
                    operator: t.operator.trim().to_string(),
                })
            }
            None => {
                let worker = resolve_token(self.token_file.as_deref(), Role::Worker)
                    .map_err(anyhow::Error::msg)?;
                let operator = resolve_token(self.operator_token_file.as_deref(), Role::Operator)
                    .map_err(anyhow::Error::msg)?;
                match (worker, operator) {
                    (Some(worker), Some(operator)) => Some(RoleTokens { worker, operator }),
                    (None, None) => None,
                    (worker, _) => {
                        let (have, missing) = if worker.is_some() {
                            (Role::Worker, Role::Operator)
                        } else {
                            (Role::Operator, Role::Worker)
                        };
                        anyhow::bail!(
                            "a {} is set but no {}: pass {} PATH or set ${} (a coordinator \
                             checks both tokens or, with --insecure-no-auth, neither)",
                            have.token_name(),
                            missing.token_name(),
                            missing.flag(),
                            missing.env()
                        )
                    }
                }
            }
        };
        match (tokens, self.insecure_no_auth) {
            (Some(tokens), _) => {
                anyhow::ensure!(
                    tokens.worker != tokens.operator,
                    "the worker token and the operator token are the same: give them different \
                     values (a worker could otherwise submit and cancel sweeps)"
                );
                Ok(Some(tokens))
            }
            (None, true) => {
                tracing::warn!(
                    "--insecure-no-auth: RPCs are NOT authenticated; anyone who can reach this \
                     port can lease tasks, write results, submit and cancel sweeps"
                );
                Ok(None)
            }
            (None, false) => anyhow::bail!(
                "no tokens: pass --token-file PATH (the worker token, also given to every worker) \
                 and --operator-token-file PATH (the operator token, for coord \
                 submit/status/results/cancel), or set ${TOKEN_ENV} and ${OPERATOR_TOKEN_ENV}; \
                 or --insecure-no-auth to serve without them"
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
        herd_rpc::security::install_crypto_provider();
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
        if let Some(ca) = &self.tls_client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(Some(tls))
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
    pub fn new(limits: &Limits) -> Option<Arc<Self>> {
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

/// The bearer-token check in front of both services, deciding by the gRPC service path:
/// `/herd.v1.Workers/*` needs the worker token, `/herd.v1.Sweeps/*` the operator token, any
/// other path either token (the router then answers UNIMPLEMENTED). The presented token is
/// compared with both tokens in constant time. No token, or one that is neither: UNAUTHENTICATED
/// (the caller is nobody). The other role's token: PERMISSION_DENIED (the caller is known, but
/// that service is not its own). Refusals are logged with the peer and the RPC, never a token.
#[derive(Clone)]
pub struct AuthLayer {
    tokens: Option<Arc<RoleTokens>>,
}

impl AuthLayer {
    /// `None`: every call passes (`--insecure-no-auth`).
    pub fn new(tokens: Option<&RoleTokens>) -> Self {
        AuthLayer {
            tokens: tokens.cloned().map(Arc::new),
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    tokens: Option<Arc<RoleTokens>>,
}

/// Why a call to `path` was refused, or `None` when its token opens that path.
fn refusal(tokens: &RoleTokens, path: &str, header: Option<&http::HeaderValue>) -> Option<Status> {
    let unauthenticated = |reason: &str| {
        Some(Status::unauthenticated(format!(
            "{reason}: this coordinator needs `authorization: Bearer <token>` (the worker token \
             from --token-file or ${TOKEN_ENV} for Workers, the operator token from \
             --operator-token-file or ${OPERATOR_TOKEN_ENV} for Sweeps)"
        )))
    };
    let Some(header) = header else {
        return unauthenticated("no authorization header");
    };
    let Some(given) = header.as_bytes().strip_prefix(b"Bearer ") else {
        return unauthenticated("authorization is not a bearer token");
    };
    // both compared every time; ct_eq: equal lengths in constant time (a length is not secret)
    let worker = bool::from(given.ct_eq(tokens.worker.as_bytes()));
    let operator = bool::from(given.ct_eq(tokens.operator.as_bytes()));
    let presented = match (worker, operator) {
        (true, _) => Role::Worker,
        (_, true) => Role::Operator,
        (false, false) => return unauthenticated("wrong token"),
    };
    match Role::of_path(path) {
        Some(needed) if needed != presented => Some(Status::permission_denied(format!(
            "the {} cannot call {}: it needs the {}",
            presented.token_name(),
            needed.service(),
            needed.token_name()
        ))),
        _ => None,
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
        if let Some(tokens) = &self.tokens {
            let header = request.headers().get(http::header::AUTHORIZATION);
            if let Some(status) = refusal(tokens, request.uri().path(), header) {
                let peer = peer(&request)
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "unknown".into());
                let rpc = request.uri().path();
                if status.code() == tonic::Code::PermissionDenied {
                    tracing::warn!(peer = %peer, rpc = %rpc, reason = status.message(), "call with the other role's token refused");
                } else {
                    tracing::warn!(peer = %peer, rpc = %rpc, reason = status.message(), "unauthenticated call refused");
                }
                let response = status.into_http();
                return Box::pin(async move { Ok(response) });
            }
        }
        // the clone is ready-polled on its next use; take the polled one (tower's usual dance)
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(request).await })
    }
}

/// A random token (hex, 256 bits from the operating system's CSPRNG): `coord run`'s tokens and
/// every worker registration's secret.
pub fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("the system random source: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What the state file keeps of a worker secret: its SHA-256 (the secret itself is never
/// stored, so a copy of the file does not let anyone act as a worker).
pub fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `secret` is the one whose digest is `stored`, in constant time.
pub fn secret_matches(secret: &str, stored: &[u8]) -> bool {
    bool::from(secret_digest(secret).as_slice().ct_eq(stored))
}
