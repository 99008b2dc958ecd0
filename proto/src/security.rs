//! The client side of herd's RPC security, shared by `coord` (client commands, `coord run`),
//! `worker` and the tests: the bearer token sent on every call (the worker token from
//! `--token-file` or `$HERD_TOKEN` for the Workers service, the operator token from
//! `--operator-token-file` or `$HERD_OPERATOR_TOKEN` for the Sweeps service), and TLS (`https://`
//! URLs, `--tls-ca`, optional client certificate for mTLS).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};
use tonic::{Request, Status};

/// The environment variable that carries the worker token when no `--token-file` is given.
pub const TOKEN_ENV: &str = "HERD_TOKEN";

/// The environment variable that carries the operator token when no `--operator-token-file` is
/// given.
pub const OPERATOR_TOKEN_ENV: &str = "HERD_OPERATOR_TOKEN";

/// Who calls: each role has its own token and may call one service only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// GPU workers: the `Workers` service (register, lease, heartbeat, results, complete, fail)
    Worker,
    /// people and scripts: the `Sweeps` service (submit, status, results, cancel)
    Operator,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Worker, Role::Operator];

    /// "worker token" / "operator token", for messages.
    pub fn token_name(self) -> &'static str {
        match self {
            Role::Worker => "worker token",
            Role::Operator => "operator token",
        }
    }

    /// The environment variable that carries this role's token.
    pub fn env(self) -> &'static str {
        match self {
            Role::Worker => TOKEN_ENV,
            Role::Operator => OPERATOR_TOKEN_ENV,
        }
    }

    /// The flag that names a file holding this role's token.
    pub fn flag(self) -> &'static str {
        match self {
            Role::Worker => "--token-file",
            Role::Operator => "--operator-token-file",
        }
    }

    /// The gRPC service (`package.Service`) this role may call.
    pub fn service(self) -> &'static str {
        match self {
            Role::Worker => crate::v1::workers_server::SERVICE_NAME,
            Role::Operator => crate::v1::sweeps_server::SERVICE_NAME,
        }
    }

    /// The role whose service a gRPC request path (`/package.Service/Method`) belongs to.
    pub fn of_path(path: &str) -> Option<Role> {
        let service = path.strip_prefix('/')?.split_once('/')?.0;
        Role::ALL.into_iter().find(|r| r.service() == service)
    }
}

/// Installs ring as the process's rustls crypto provider (once; a provider already installed
/// stays). Both ring and aws-lc-rs are linked, so rustls cannot choose by itself.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The token a client or server uses for `role`: the file's first line (trimmed) when `file` is
/// given, else the role's environment variable; `None` when neither is set. An empty token is an
/// error.
pub fn resolve_token(file: Option<&Path>, role: Role) -> Result<Option<String>, String> {
    let what = role.token_name();
    let (token, from) = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading the {what} file {}: {e}", path.display()))?;
            (
                text.trim().to_string(),
                format!("{what} file {}", path.display()),
            )
        }
        None => match std::env::var(role.env()) {
            Ok(value) => (
                value.trim().to_string(),
                format!("{what} in ${}", role.env()),
            ),
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

/// Whether a call to `uri` would carry a token in the clear to another machine: `http://` (no
/// TLS) to a host that is not loopback (`localhost`, 127.0.0.0/8, ::1).
pub fn sends_token_in_clear(uri: &Uri) -> bool {
    if uri.scheme_str() != Some("http") {
        return false;
    }
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    !loopback
}

/// Warns (once per process) that the token travels unencrypted to `uri`; true when this call
/// printed the warning.
pub fn warn_token_in_clear(uri: &Uri) -> bool {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if WARNED.swap(true, Ordering::Relaxed) {
        return false;
    }
    tracing::warn!(
        coordinator = %uri,
        "the bearer token is sent unencrypted (http://) to a host that is not this machine: \
         anyone on the network path can read it; use an https:// coordinator URL (--tls-ca for a \
         private CA)"
    );
    true
}

/// A channel that sends `authorization: Bearer <token>` on every call.
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

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

    /// Applies TLS to `endpoint` when the URL is `https://` or a CA/client certificate is given;
    /// a token bound for another machine over `http://` is warned about (once per process).
    pub fn apply(&self, endpoint: Endpoint) -> Result<Endpoint, String> {
        let https = endpoint.uri().scheme_str() == Some("https");
        let wants_tls = https || self.tls_ca.is_some() || self.tls_cert.is_some();
        if !wants_tls {
            if self.token.is_some() && sends_token_in_clear(endpoint.uri()) {
                warn_token_in_clear(endpoint.uri());
            }
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

/// The flag that names a file holding one role's token, with that role.
pub trait TokenFlag: clap::Args + clap::FromArgMatches + Clone + std::fmt::Debug {
    const ROLE: Role;
    fn file(&self) -> Option<&Path>;
}

/// `--token-file`: the worker token, which opens the coordinator's Workers service.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct WorkerTokenFlag {
    /// file whose first line is the worker token, which opens the coordinator's Workers service
    /// (default: $HERD_TOKEN)
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

impl TokenFlag for WorkerTokenFlag {
    const ROLE: Role = Role::Worker;
    fn file(&self) -> Option<&Path> {
        self.token_file.as_deref()
    }
}

/// `--operator-token-file`: the operator token, which opens the coordinator's Sweeps service.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct OperatorTokenFlag {
    /// file whose first line is the operator token (default: $HERD_OPERATOR_TOKEN); the worker
    /// token ($HERD_TOKEN) is refused by the Sweeps service
    #[arg(long, value_name = "PATH")]
    pub operator_token_file: Option<PathBuf>,
}

impl TokenFlag for OperatorTokenFlag {
    const ROLE: Role = Role::Operator;
    fn file(&self) -> Option<&Path> {
        self.operator_token_file.as_deref()
    }
}

/// The flags of a client's transport security: its role's token file, and TLS (the CA that
/// signed the coordinator's certificate, a client certificate for mTLS). `worker` uses it with
/// the worker token, `coord`'s client commands with the operator token.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ClientSecurityArgs<T: TokenFlag> {
    #[command(flatten)]
    pub token: T,
    /// CA (PEM) that signed the coordinator's TLS certificate (with an https:// URL)
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// client certificate (PEM), for a coordinator that requires one (mTLS)
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// the client certificate's private key (PEM)
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// `--token-file` and the TLS flags (`worker`).
pub type WorkerSecurityArgs = ClientSecurityArgs<WorkerTokenFlag>;
/// `--operator-token-file` and the TLS flags (`coord submit`, `status`, `results`, `cancel`).
pub type OperatorSecurityArgs = ClientSecurityArgs<OperatorTokenFlag>;

impl<T: TokenFlag> ClientSecurityArgs<T> {
    /// The token (the file, else the role's environment variable) and the TLS files these flags
    /// name.
    pub fn security(&self) -> Result<ClientSecurity, String> {
        Ok(ClientSecurity {
            token: resolve_token(self.token.file(), T::ROLE)?,
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_clear_are_http_urls_off_loopback() {
        let clear = |url: &str| sends_token_in_clear(&url.parse::<Uri>().unwrap());
        for url in [
            "http://10.0.0.7:50051",
            "http://herd-coord.herd:50051",
            "http://[2001:db8::1]:50051",
            "http://128.0.0.1:50051",
        ] {
            assert!(clear(url), "{url}");
        }
        for url in [
            "http://127.0.0.1:50051",
            "http://127.3.2.1:50051",
            "http://localhost:50051",
            "http://LOCALHOST:50051",
            "http://[::1]:50051",
            "https://herd-coord.herd:50051",
            "https://10.0.0.7:50051",
        ] {
            assert!(!clear(url), "{url}");
        }
    }

    #[test]
    fn the_clear_token_warning_is_printed_once_per_process() {
        let uri: Uri = "http://10.0.0.7:50051".parse().unwrap();
        assert!(warn_token_in_clear(&uri));
        assert!(!warn_token_in_clear(&uri));
        assert!(!warn_token_in_clear(&"http://10.0.0.8:1".parse().unwrap()));
    }

    #[test]
    fn roles_are_told_apart_by_service_path() {
        assert_eq!(Role::of_path("/herd.v1.Workers/Lease"), Some(Role::Worker));
        assert_eq!(
            Role::of_path("/herd.v1.Sweeps/Cancel"),
            Some(Role::Operator)
        );
        for path in [
            "/herd.v1.WorkersX/Lease",
            "/herd.v1.Sweep/Cancel",
            "herd.v1.Sweeps/Cancel",
            "/grpc.health.v1.Health/Check",
            "/",
            "",
        ] {
            assert_eq!(Role::of_path(path), None, "{path}");
        }
    }

    #[test]
    fn each_binary_gets_its_roles_token_flag_and_the_same_tls_flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Worker {
            #[command(flatten)]
            security: WorkerSecurityArgs,
        }
        #[derive(Parser)]
        struct Operator {
            #[command(flatten)]
            security: OperatorSecurityArgs,
        }
        let worker = Worker::try_parse_from(["worker", "--token-file", "w", "--tls-ca", "ca.pem"])
            .unwrap()
            .security;
        assert_eq!(worker.token.file(), Some(Path::new("w")));
        assert_eq!(worker.tls_ca.as_deref(), Some(Path::new("ca.pem")));
        let operator =
            Operator::try_parse_from(["coord", "--operator-token-file", "o", "--tls-ca", "ca"])
                .unwrap()
                .security;
        assert_eq!(operator.token.file(), Some(Path::new("o")));
        // each role only its own token flag; a client certificate needs its key
        assert!(Worker::try_parse_from(["worker", "--operator-token-file", "o"]).is_err());
        assert!(Operator::try_parse_from(["coord", "--token-file", "w"]).is_err());
        let error = Worker::try_parse_from(["worker", "--tls-cert", "c.pem"])
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("--tls-key"), "{error}");
    }

    #[test]
    fn each_role_reads_its_own_file() {
        let dir = std::env::temp_dir().join(format!("herd-rpc-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("op");
        std::fs::write(&file, "  op-secret \n").unwrap();
        assert_eq!(
            resolve_token(Some(&file), Role::Operator)
                .unwrap()
                .as_deref(),
            Some("op-secret")
        );
        std::fs::write(&file, "\n").unwrap();
        let err = resolve_token(Some(&file), Role::Operator).unwrap_err();
        assert!(
            err.contains("operator token file") && err.contains("empty"),
            "{err}"
        );
        let err = resolve_token(Some(&dir.join("missing")), Role::Worker).unwrap_err();
        assert!(err.contains("worker token file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
