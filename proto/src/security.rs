//! The client side of herd's RPC security, shared by `coord` (client commands, `coord run`),
//! `worker` and the tests: the bearer token (`--token-file` or `$HERD_TOKEN`) sent on every call,
//! and TLS (`https://` URLs, `--tls-ca`, optional client certificate for mTLS).

use std::path::{Path, PathBuf};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

/// The environment variable that carries the token when no `--token-file` is given.
pub const TOKEN_ENV: &str = "HERD_TOKEN";

/// Installs ring as the process's rustls crypto provider (once; a provider already installed
/// stays). Both ring and aws-lc-rs are linked, so rustls cannot choose by itself.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A channel that sends `authorization: Bearer <token>` on every call.
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

/// The token a client or server uses: the file's first line (trimmed) when `file` is given,
/// else `$HERD_TOKEN`; `None` when neither is set. An empty token is an error.
pub fn resolve_token(file: Option<&Path>) -> Result<Option<String>, String> {
    let (token, from) = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading the token file {}: {e}", path.display()))?;
            (
                text.trim().to_string(),
                format!("token file {}", path.display()),
            )
        }
        None => match std::env::var(TOKEN_ENV) {
            Ok(value) => (value.trim().to_string(), format!("${TOKEN_ENV}")),
            Err(_) => return Ok(None),
        },
    };
    if token.is_empty() {
        return Err(format!("the {from} is empty"));
    }
    if MetadataValue::<Ascii>::try_from(format!("Bearer {token}")).is_err() {
        return Err(format!(
            "the {from} holds characters not allowed in a header"
        ));
    }
    Ok(Some(token))
}

/// Adds the bearer token (when there is one) to every request.
#[derive(Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    pub fn new(token: Option<&str>) -> Self {
        BearerToken(token.and_then(|t| format!("Bearer {t}").parse().ok()))
    }
}

impl std::fmt::Debug for BearerToken {
    // never print the token
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BearerToken(<set>)"
        } else {
            "BearerToken(<none>)"
        })
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// How a client reaches the coordinator: token and TLS files (Debug never prints the token).
#[derive(Clone, Default)]
pub struct ClientSecurity {
    pub token: Option<String>,
    /// CA bundle (PEM) that signed the coordinator's certificate; `https://` URLs without it use
    /// the system roots
    pub tls_ca: Option<PathBuf>,
    /// client certificate and key (PEM) for a coordinator that requires them (mTLS)
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl std::fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecurity")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

impl ClientSecurity {
    /// Only a token (plaintext or system roots): what tests and in-process callers use.
    pub fn token(token: Option<&str>) -> Self {
        ClientSecurity {
            token: token.map(str::to_string),
            ..Default::default()
        }
    }

    /// Applies TLS to `endpoint` when the URL is `https://` or a CA/client certificate is given.
    pub fn apply(&self, endpoint: Endpoint) -> Result<Endpoint, String> {
        let https = endpoint.uri().scheme_str() == Some("https");
        let wants_tls = https || self.tls_ca.is_some() || self.tls_cert.is_some();
        if !wants_tls {
            return Ok(endpoint);
        }
        if !https {
            return Err(format!(
                "--tls-ca/--tls-cert need an https:// coordinator URL, not {}",
                endpoint.uri()
            ));
        }
        install_crypto_provider();
        let mut tls = ClientTlsConfig::new();
        if let Some(host) = endpoint.uri().host() {
            tls = tls.domain_name(host.trim_start_matches('[').trim_end_matches(']'));
        }
        match &self.tls_ca {
            Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read(ca)?)),
            None => tls = tls.with_native_roots(),
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => return Err("--tls-cert and --tls-key go together".to_string()),
        }
        endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS configuration: {e}"))
    }

    /// Wraps a channel so every call carries the token.
    pub fn intercept(&self, channel: Channel) -> AuthChannel {
        InterceptedService::new(channel, BearerToken::new(self.token.as_deref()))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
}
