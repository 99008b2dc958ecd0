//! `gs://bucket/object` URIs.

use super::GcsError;

/// A parsed `gs://bucket/object` URI. `object` may be a prefix (a "folder") and may be empty.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GcsUri {
    pub bucket: String,
    pub object: String,
}

impl GcsUri {
    /// Parses `gs://bucket`, `gs://bucket/` or `gs://bucket/a/b`. Errors name the URI and the reason.
    pub fn parse(uri: &str) -> Result<GcsUri, GcsError> {
        let invalid = |reason: &str| GcsError::InvalidUri {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        let rest = uri
            .strip_prefix("gs://")
            .ok_or_else(|| invalid("expected gs://bucket/object"))?;
        let (bucket, object) = match rest.split_once('/') {
            Some((b, o)) => (b, o),
            None => (rest, ""),
        };
        if bucket.is_empty() {
            return Err(invalid("the bucket name is empty"));
        }
        if !bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(
                "bucket names use only lowercase letters, digits, '-', '_' and '.'",
            ));
        }
        if bucket.len() > 222 {
            return Err(invalid("the bucket name is longer than 222 characters"));
        }
        if object.contains(['\0', '\r', '\n']) {
            return Err(invalid(
                "the object name contains a NUL or newline character",
            ));
        }
        Ok(GcsUri {
            bucket: bucket.to_string(),
            object: object.to_string(),
        })
    }
}

impl std::fmt::Display for GcsUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gs://{}/{}", self.bucket, self.object)
    }
}

impl std::str::FromStr for GcsUri {
    type Err = GcsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GcsUri::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let u = GcsUri::parse("gs://ckpts/run1/step100/streaming_params").unwrap();
        assert_eq!(u.bucket, "ckpts");
        assert_eq!(u.object, "run1/step100/streaming_params");
        assert_eq!(u.to_string(), "gs://ckpts/run1/step100/streaming_params");
        let b = GcsUri::parse("gs://ckpts").unwrap();
        assert_eq!(b.object, "");
        assert_eq!(b.to_string(), "gs://ckpts/");
        assert_eq!(GcsUri::parse("gs://ckpts/").unwrap().object, "");
        assert_eq!(GcsUri::parse("gs://ckpts/pfx/").unwrap().object, "pfx/");
    }

    #[test]
    fn errors_name_the_uri() {
        for bad in ["s3://x/y", "gs:///y", "ckpts/y", "gs://Upper/y", ""] {
            let e = GcsUri::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("'{bad}'")), "{e}");
        }
    }
}
