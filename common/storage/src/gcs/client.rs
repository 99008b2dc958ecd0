//! The GCS client: official crate for reads/writes, JSON API on reqwest for listing and metadata.

use std::time::Duration;

use google_cloud_auth::credentials::{self, AccessTokenCredentials, Credentials};
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_storage::client::Storage;
use google_cloud_storage::read_resume_policy::{ReadResumePolicyExt, Recommended};
use google_cloud_storage::retry_policy::RetryableErrors;
use serde::Deserialize;

use super::{decode_crc32c, GcsError, ObjectInfo};

/// The public JSON API endpoint (used when `STORAGE_EMULATOR_HOST` is not set).
const GCS_ENDPOINT: &str = "https://storage.googleapis.com";
/// Attempts per request (first try included) for transient errors; a dead endpoint fails in seconds.
const ATTEMPTS: u32 = 3;
const RETRY_TIME_LIMIT: Duration = Duration::from_secs(30);

/// A cheap-to-clone GCS client (everything inside is reference counted).
#[derive(Clone)]
pub struct GcsClient {
    pub(super) storage: Storage,
    http: reqwest::Client,
    /// JSON API base, e.g. `http://127.0.0.1:4443` or `https://storage.googleapis.com` (no trailing /)
    endpoint: String,
    /// None: anonymous (the emulator)
    auth: Option<AccessTokenCredentials>,
    list_page_size: Option<u32>,
}

impl std::fmt::Debug for GcsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsClient")
            .field("endpoint", &self.endpoint)
            .field("anonymous", &self.auth.is_none())
            .finish()
    }
}

/// `127.0.0.1:4443` -> `http://127.0.0.1:4443`; trailing slashes dropped.
pub(crate) fn normalize_endpoint(endpoint: &str) -> String {
    let e = endpoint.trim().trim_end_matches('/');
    if e.starts_with("http://") || e.starts_with("https://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonObject {
    bucket: String,
    name: String,
    #[serde(default)]
    size: Option<String>,
    #[serde(default)]
    crc32c: Option<String>,
    #[serde(default)]
    generation: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonList {
    #[serde(default)]
    items: Vec<JsonObject>,
    #[serde(default)]
    next_page_token: Option<String>,
}

impl JsonObject {
    fn into_info(self, uri: &str) -> Result<ObjectInfo, GcsError> {
        let bad = |what: &str, v: &str| GcsError::Request {
            uri: uri.to_string(),
            operation: "reading metadata".into(),
            reason: format!("unparsable {what} '{v}' in the JSON API response"),
        };
        let size = match &self.size {
            Some(s) => s.parse::<u64>().map_err(|_| bad("size", s))?,
            None => 0,
        };
        let generation = match &self.generation {
            Some(g) => g.parse::<i64>().map_err(|_| bad("generation", g))?,
            None => 0,
        };
        let crc32c = match &self.crc32c {
            Some(c) if !c.is_empty() => Some(decode_crc32c(c).ok_or_else(|| bad("crc32c", c))?),
            _ => None,
        };
        Ok(ObjectInfo {
            bucket: self.bucket,
            name: self.name,
            size,
            crc32c,
            generation,
        })
    }
}

impl GcsClient {
    /// `STORAGE_EMULATOR_HOST` set (e.g. `http://127.0.0.1:4443` or `127.0.0.1:4443`): that endpoint
    /// with anonymous credentials. Otherwise real GCS with application default credentials
    /// (`GOOGLE_APPLICATION_CREDENTIALS` service-account file, gcloud ADC, or the metadata server).
    pub async fn from_env() -> Result<GcsClient, GcsError> {
        match std::env::var("STORAGE_EMULATOR_HOST") {
            Ok(host) if !host.trim().is_empty() => Self::with_endpoint(&host).await,
            _ => {
                let creds = credentials::Builder::default()
                    .build_access_token_credentials()
                    .map_err(|e| GcsError::Auth {
                        uri: GCS_ENDPOINT.to_string(),
                        reason: format!("application default credentials: {e}"),
                    })?;
                Self::build(GCS_ENDPOINT, Some(creds)).await
            }
        }
    }

    /// A client for `endpoint` (an emulator) with anonymous credentials.
    pub async fn with_endpoint(endpoint: &str) -> Result<GcsClient, GcsError> {
        Self::build(&normalize_endpoint(endpoint), None).await
    }

    async fn build(
        endpoint: &str,
        auth: Option<AccessTokenCredentials>,
    ) -> Result<GcsClient, GcsError> {
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_delay(Duration::from_millis(100))
            .with_maximum_delay(Duration::from_secs(2))
            .build()
            .map_err(|e| GcsError::Request {
                uri: endpoint.to_string(),
                operation: "configuring the client".into(),
                reason: e.to_string(),
            })?;
        let mut builder = Storage::builder()
            .with_retry_policy(
                RetryableErrors
                    .with_attempt_limit(ATTEMPTS)
                    .with_time_limit(RETRY_TIME_LIMIT),
            )
            .with_backoff_policy(backoff)
            .with_read_resume_policy(Recommended.with_attempt_limit(ATTEMPTS));
        let creds: Credentials = match &auth {
            Some(a) => a.clone().into(),
            None => credentials::anonymous::Builder::new().build(),
        };
        builder = builder.with_credentials(creds);
        if endpoint != GCS_ENDPOINT {
            builder = builder.with_endpoint(endpoint);
        }
        let storage = builder.build().await.map_err(|e| GcsError::Request {
            uri: endpoint.to_string(),
            operation: "creating the storage client".into(),
            reason: e.to_string(),
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| GcsError::Request {
                uri: endpoint.to_string(),
                operation: "creating the HTTP client".into(),
                reason: e.to_string(),
            })?;
        Ok(GcsClient {
            storage,
            http,
            endpoint: endpoint.to_string(),
            auth,
            list_page_size: None,
        })
    }

    /// The JSON API endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Objects per listing page (`maxResults`); the server's default when unset. Tests use small
    /// pages to exercise pagination.
    pub fn with_list_page_size(mut self, page_size: u32) -> Self {
        self.list_page_size = Some(page_size.max(1));
        self
    }

    async fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        uri: &str,
    ) -> Result<reqwest::RequestBuilder, GcsError> {
        match &self.auth {
            None => Ok(req),
            Some(a) => {
                let token = a.access_token().await.map_err(|e| GcsError::Auth {
                    uri: uri.to_string(),
                    reason: e.to_string(),
                })?;
                Ok(req.bearer_auth(token.token))
            }
        }
    }

    /// Sends a JSON API request with bounded retries on transient failures (connect errors,
    /// 408/429/5xx). 404 maps to NotFound, 401/403 to PermissionDenied.
    async fn send_json(
        &self,
        make: impl Fn() -> reqwest::RequestBuilder,
        uri: &str,
        operation: &str,
    ) -> Result<reqwest::Response, GcsError> {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let req = self.authorize(make(), uri).await?;
            let transient = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if resp.status().is_success() {
                        return Ok(resp);
                    }
                    let body = resp.text().await.unwrap_or_default();
                    let message = summarize_body(&body);
                    match status {
                        404 => {
                            return Err(GcsError::NotFound {
                                uri: uri.to_string(),
                            })
                        }
                        401 | 403 => {
                            return Err(GcsError::PermissionDenied {
                                uri: uri.to_string(),
                                status,
                                message,
                            })
                        }
                        408 | 429 | 500..=599 => GcsError::Http {
                            uri: uri.to_string(),
                            operation: operation.to_string(),
                            status,
                            message,
                        },
                        _ => {
                            return Err(GcsError::Http {
                                uri: uri.to_string(),
                                operation: operation.to_string(),
                                status,
                                message,
                            })
                        }
                    }
                }
                Err(e) => GcsError::Request {
                    uri: uri.to_string(),
                    operation: operation.to_string(),
                    reason: error_chain(&e),
                },
            };
            if attempt >= ATTEMPTS {
                return Err(transient);
            }
            tracing::debug!(%uri, attempt, error = %transient, "retrying GCS request");
            tokio::time::sleep(delay).await;
            delay *= 4;
            attempt += 1;
        }
    }

    /// Every object under `prefix` (recursive: no delimiter), following all pages, in name order.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, GcsError> {
        let uri = format!("gs://{bucket}/{prefix}");
        let url = format!(
            "{}/storage/v1/b/{}/o",
            self.endpoint,
            urlencoding::encode(bucket)
        );
        let mut out = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut query: Vec<(&str, String)> = vec![
                ("prefix", prefix.to_string()),
                (
                    "fields",
                    "items(bucket,name,size,crc32c,generation),nextPageToken".to_string(),
                ),
            ];
            if let Some(n) = self.list_page_size {
                query.push(("maxResults", n.to_string()));
            }
            if let Some(t) = &page_token {
                query.push(("pageToken", t.clone()));
            }
            let resp = self
                .send_json(|| self.http.get(&url).query(&query), &uri, "listing")
                .await?;
            let page: JsonList = resp.json().await.map_err(|e| GcsError::Request {
                uri: uri.clone(),
                operation: "listing".into(),
                reason: format!("unreadable JSON API response: {}", error_chain(&e)),
            })?;
            for item in page.items {
                out.push(item.into_info(&uri)?);
            }
            match page.next_page_token {
                Some(t) if !t.is_empty() => page_token = Some(t),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        Ok(out)
    }

    /// Metadata of one object; `Err(GcsError::NotFound)` when it does not exist.
    pub async fn stat(&self, bucket: &str, name: &str) -> Result<ObjectInfo, GcsError> {
        let uri = format!("gs://{bucket}/{name}");
        if name.is_empty() {
            return Err(GcsError::InvalidUri {
                uri,
                reason: "no object name".into(),
            });
        }
        let url = format!(
            "{}/storage/v1/b/{}/o/{}",
            self.endpoint,
            urlencoding::encode(bucket),
            urlencoding::encode(name)
        );
        let resp = self
            .send_json(|| self.http.get(&url), &uri, "reading metadata")
            .await?;
        let obj: JsonObject = resp.json().await.map_err(|e| GcsError::Request {
            uri: uri.clone(),
            operation: "reading metadata".into(),
            reason: format!("unreadable JSON API response: {}", error_chain(&e)),
        })?;
        obj.into_info(&uri)
    }

    /// Uploads `data` in one request (never the resumable protocol, which hangs on fake-gcs-server).
    pub async fn upload(
        &self,
        bucket: &str,
        name: &str,
        data: bytes::Bytes,
    ) -> Result<(), GcsError> {
        let uri = format!("gs://{bucket}/{name}");
        self.storage
            .write_object(format!("projects/_/buckets/{bucket}"), name, data)
            .with_resumable_upload_threshold(usize::MAX)
            .send_buffered()
            .await
            .map_err(|e| map_storage_error(e, &uri, "upload"))?;
        Ok(())
    }

    /// Creates a bucket through the JSON API (`POST /storage/v1/b`); for the emulator and tests.
    /// An existing bucket (HTTP 409) is not an error.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), GcsError> {
        let uri = format!("gs://{bucket}/");
        let url = format!("{}/storage/v1/b", self.endpoint);
        let project = std::env::var("GOOGLE_CLOUD_PROJECT").unwrap_or_else(|_| "test".into());
        let body = serde_json::json!({ "name": bucket });
        match self
            .send_json(
                || {
                    self.http
                        .post(&url)
                        .query(&[("project", project.as_str())])
                        .json(&body)
                },
                &uri,
                "creating the bucket",
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(GcsError::Http { status: 409, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn summarize_body(body: &str) -> String {
    // JSON API errors: {"error": {"code": .., "message": ".."}}
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(m) = v.pointer("/error/message").and_then(|m| m.as_str()) {
            return m.to_string();
        }
    }
    let t = body.trim();
    if t.chars().count() > 300 {
        format!("{}...", t.chars().take(300).collect::<String>())
    } else if t.is_empty() {
        "(empty response)".to_string()
    } else {
        t.to_string()
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = inner.source();
    }
    s
}

/// Maps an error of the official crate to a GcsError naming `uri`.
pub(crate) fn map_storage_error(
    e: google_cloud_storage::Error,
    uri: &str,
    operation: &str,
) -> GcsError {
    let status = e.http_status_code();
    let code = e.status().map(|s| s.code);
    use google_cloud_gax::error::rpc::Code;
    if status == Some(404) || code == Some(Code::NotFound) {
        return GcsError::NotFound {
            uri: uri.to_string(),
        };
    }
    if e.is_authentication() {
        return GcsError::Auth {
            uri: uri.to_string(),
            reason: error_chain(&e),
        };
    }
    let message = e
        .http_payload()
        .map(|p| summarize_body(&String::from_utf8_lossy(p)))
        .or_else(|| e.status().map(|s| s.message.clone()))
        .unwrap_or_else(|| error_chain(&e));
    match status {
        Some(s @ (401 | 403)) => GcsError::PermissionDenied {
            uri: uri.to_string(),
            status: s,
            message,
        },
        Some(s) => GcsError::Http {
            uri: uri.to_string(),
            operation: operation.to_string(),
            status: s,
            message,
        },
        None => GcsError::Request {
            uri: uri.to_string(),
            operation: operation.to_string(),
            reason: error_chain(&e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_normalized() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:4443"),
            "http://127.0.0.1:4443"
        );
        assert_eq!(
            normalize_endpoint("http://127.0.0.1:4443/"),
            "http://127.0.0.1:4443"
        );
        assert_eq!(normalize_endpoint("https://x.example"), "https://x.example");
    }

    #[test]
    fn json_object_parsed() {
        let o: JsonObject = serde_json::from_str(
            r#"{"bucket":"b","name":"a/x","size":"11","crc32c":"yZRlqg==","generation":"1700"}"#,
        )
        .unwrap();
        let i = o.into_info("gs://b/a/x").unwrap();
        assert_eq!(i.size, 11);
        assert_eq!(i.crc32c, Some(0xc99465aa));
        assert_eq!(i.generation, 1700);
        assert_eq!(i.uri(), "gs://b/a/x");
    }
}
