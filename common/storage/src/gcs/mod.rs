//! Google Cloud Storage access for herd: `gs://` URIs, listing, metadata, parallel verified
//! downloads and (for tests and tools) uploads and bucket creation.
//!
//! Reads and writes go through Google's official `google-cloud-storage` crate; listing and object
//! metadata go through the JSON API on reqwest (the official crate lists only over gRPC, which the
//! emulator lacks). `STORAGE_EMULATOR_HOST` is honoured by [`GcsClient::from_env`] (endpoint +
//! anonymous credentials); otherwise application default credentials are used.
//! With the `testing` feature, `emulator::FakeGcs` runs the real fake-gcs-server binary for tests.

mod client;
mod download;
#[cfg(feature = "testing")]
pub mod emulator;
mod uri;

pub use client::GcsClient;
pub use download::TEMP_MARKER;
pub use uri::GcsUri;

use std::path::PathBuf;

/// Metadata of one object, from a listing or [`GcsClient::stat`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub bucket: String,
    pub name: String,
    pub size: u64,
    /// CRC32C of the object's bytes, when GCS reports one (composite objects have none of MD5, but
    /// always a CRC32C on real GCS).
    pub crc32c: Option<u32>,
    pub generation: i64,
}

impl ObjectInfo {
    /// `gs://bucket/name`
    pub fn uri(&self) -> String {
        format!("gs://{}/{}", self.bucket, self.name)
    }
}

/// How [`GcsClient::download`] splits an object into ranged reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadOptions {
    /// Ranged reads in flight at once (at least 1).
    pub parallelism: usize,
    /// Bytes per ranged read (at least 1).
    pub chunk_bytes: u64,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            parallelism: 8,
            chunk_bytes: 32 << 20,
        }
    }
}

/// Every message names the `gs://` URI (or the endpoint) and the reason.
#[derive(thiserror::Error, Debug)]
pub enum GcsError {
    #[error("invalid GCS URI '{uri}': {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("{uri}: not found")]
    NotFound { uri: String },
    #[error(
        "{uri}: crc32c mismatch: GCS records {expected:#010x}, the downloaded bytes have {actual:#010x}"
    )]
    Checksum {
        uri: String,
        expected: u32,
        actual: u32,
    },
    #[error("{uri}: size mismatch: expected {expected} bytes, got {actual}")]
    Size {
        uri: String,
        expected: u64,
        actual: u64,
    },
    #[error("{uri}: permission denied (HTTP {status}): {message}")]
    PermissionDenied {
        uri: String,
        status: u16,
        message: String,
    },
    #[error("{uri}: {operation} failed: HTTP {status}: {message}")]
    Http {
        uri: String,
        operation: String,
        status: u16,
        message: String,
    },
    #[error("{uri}: {operation} failed: {reason}")]
    Request {
        uri: String,
        operation: String,
        reason: String,
    },
    #[error("{uri}: credentials: {reason}")]
    Auth { uri: String, reason: String },
    #[error("{uri}: {}: {source}", path.display())]
    Io {
        uri: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("fake-gcs-server: {reason}")]
    Emulator { reason: String },
}

impl GcsError {
    /// The object, prefix or bucket does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, GcsError::NotFound { .. })
    }

    /// The URI the error is about (the endpoint for errors that concern no object).
    pub fn uri(&self) -> &str {
        match self {
            GcsError::InvalidUri { uri, .. }
            | GcsError::NotFound { uri }
            | GcsError::Checksum { uri, .. }
            | GcsError::Size { uri, .. }
            | GcsError::PermissionDenied { uri, .. }
            | GcsError::Http { uri, .. }
            | GcsError::Request { uri, .. }
            | GcsError::Auth { uri, .. }
            | GcsError::Io { uri, .. } => uri,
            GcsError::Emulator { .. } => "",
        }
    }
}

/// Decodes the JSON API's `crc32c` field: base64 of the big-endian u32.
pub fn decode_crc32c(b64: &str) -> Option<u32> {
    let bytes = base64_decode(b64)?;
    let arr: [u8; 4] = bytes.try_into().ok()?;
    Some(u32::from_be_bytes(arr))
}

/// Encodes a CRC32C the way the JSON API does (base64 of the big-endian u32).
pub fn encode_crc32c(crc: u32) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = crc.to_be_bytes();
    let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
    let m = (b[3] as u32) << 16;
    let c = |v: u32, shift: u32| ALPHABET[((v >> shift) & 63) as usize] as char;
    [
        c(n, 18),
        c(n, 12),
        c(n, 6),
        c(n, 0),
        c(m, 18),
        c(m, 12),
        '=',
        '=',
    ]
    .iter()
    .collect()
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for ch in s.bytes() {
        let v = match ch {
            b'A'..=b'Z' => ch - b'A',
            b'a'..=b'z' => ch - b'a' + 26,
            b'0'..=b'9' => ch - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_base64_round_trip() {
        // "hello world" has CRC32C 0xc99465aa; GCS shows it as "yZRlqg=="
        assert_eq!(crc32c::crc32c(b"hello world"), 0xc99465aa);
        assert_eq!(encode_crc32c(0xc99465aa), "yZRlqg==");
        assert_eq!(decode_crc32c("yZRlqg=="), Some(0xc99465aa));
        for v in [0u32, 1, 0xffff_ffff, 0x1234_5678] {
            assert_eq!(decode_crc32c(&encode_crc32c(v)), Some(v));
        }
        assert_eq!(decode_crc32c("!!"), None);
        assert_eq!(decode_crc32c("AAAAAAAA"), None);
    }

    #[test]
    fn errors_name_the_uri() {
        let e = GcsError::NotFound {
            uri: "gs://b/x".into(),
        };
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "gs://b/x: not found");
        let e = GcsError::Checksum {
            uri: "gs://b/x".into(),
            expected: 1,
            actual: 2,
        };
        assert!(e.to_string().contains("gs://b/x") && e.to_string().contains("0x00000001"));
    }
}
