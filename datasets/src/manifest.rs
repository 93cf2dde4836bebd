//! The manifest of one immutable dataset version, and how datasets are named (`name@vN`).

use crate::error::{DatasetError, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Current manifest format version.
pub const FORMAT_VERSION: u32 = 1;

/// One shard file of a dataset version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Path relative to the storage root (may point into an older version's folder: versions share shards).
    pub path: String,
    /// Number of faces in the shard.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// Hex sha256 of the file.
    pub sha256: String,
}

/// `manifest.json` of one dataset version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format_version: u32,
    /// Dataset name.
    pub name: String,
    /// Dataset version (1, 2, ...).
    pub version: u32,
    /// Encoding dimension D.
    pub dim: usize,
    /// Which embedder made the encodings, e.g. `dlib_face_recognition_resnet_model_v1`.
    pub embedder: String,
    /// Total number of faces.
    pub count: u64,
    /// The shards, in order.
    pub shards: Vec<ShardInfo>,
    /// RFC 3339 creation time.
    pub created_at: String,
}

impl Manifest {
    /// Storage key of the manifest of `name` version `version`.
    pub fn key(name: &str, version: u32) -> String {
        format!("{name}/v{version}/manifest.json")
    }

    /// Parses and checks a manifest (counts add up, shards named).
    pub fn parse(uri: &str, bytes: &[u8]) -> Result<Manifest> {
        let fail = |message: String| DatasetError::Manifest {
            uri: uri.to_string(),
            message,
        };
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| fail(format!("not valid JSON: {e}")))?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(fail(format!(
                "format version {} is not supported (expected {FORMAT_VERSION})",
                manifest.format_version
            )));
        }
        if manifest.dim == 0 {
            return Err(fail("dim must be at least 1".into()));
        }
        // A shard lives beside its manifest: an absolute path or one climbing out would make a
        // manifest a way to read any file.
        if let Some(bad) = manifest.shards.iter().find(|s| {
            s.path.is_empty()
                || s.path.starts_with('/')
                || s.path.contains('\\')
                || s.path.split('/').any(|c| c == "..")
        }) {
            return Err(fail(format!(
                "shard path {:?} must be relative to the dataset root, without `..`",
                bad.path
            )));
        }
        let rows: u64 = manifest.shards.iter().map(|s| s.rows).sum();
        if rows != manifest.count {
            return Err(fail(format!(
                "count is {} but the shards hold {rows} rows",
                manifest.count
            )));
        }
        Ok(manifest)
    }

    /// The JSON text written to storage.
    pub fn to_json(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec_pretty(self).expect("manifest serializes");
        text.push(b'\n');
        text
    }

    /// `name@vN`.
    pub fn dataset_ref(&self) -> DatasetRef {
        DatasetRef {
            name: self.name.clone(),
            version: Some(self.version),
        }
    }
}

/// A dataset name with an optional pinned version: `faces` or `faces@v3` (or `faces@3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRef {
    /// Dataset name.
    pub name: String,
    /// Pinned version, or the latest.
    pub version: Option<u32>,
}

impl FromStr for DatasetRef {
    type Err = DatasetError;
    fn from_str(s: &str) -> Result<Self> {
        let (name, version) = match s.split_once('@') {
            Some((name, v)) => {
                let digits = v.strip_prefix('v').unwrap_or(v);
                let version = digits.parse::<u32>().map_err(|_| {
                    DatasetError::Invalid(format!(
                        "bad dataset version {v:?} in {s:?} (expected vN)"
                    ))
                })?;
                (name, Some(version))
            }
            None => (s, None),
        };
        validate_name(name)?;
        Ok(DatasetRef {
            name: name.to_string(),
            version,
        })
    }
}

impl fmt::Display for DatasetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(v) => write!(f, "{}@v{v}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// Dataset names become path components, so keep them to a safe alphabet.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(DatasetError::Invalid(format!(
            "bad dataset name {name:?}: use letters, digits, '-', '_' and '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_refs_parse() {
        let r: DatasetRef = "faces@v3".parse().unwrap();
        assert_eq!((r.name.as_str(), r.version), ("faces", Some(3)));
        assert_eq!("faces@3".parse::<DatasetRef>().unwrap().version, Some(3));
        assert_eq!("faces".parse::<DatasetRef>().unwrap().version, None);
        assert!("faces@vx".parse::<DatasetRef>().is_err());
        assert!("../etc".parse::<DatasetRef>().is_err());
    }

    #[test]
    fn a_shard_path_outside_the_root_is_refused() {
        let manifest = |path: &str| {
            serde_json::json!({
                "format_version": FORMAT_VERSION, "name": "x", "version": 1, "dim": 2,
                "embedder": "e", "count": 1, "created_at": "2026-12-01T00:00:00Z",
                "shards": [{ "path": path, "rows": 1, "bytes": 1, "sha256": "00" }]
            })
            .to_string()
        };
        assert!(Manifest::parse("m", manifest("x/v1/shard-00000.parquet").as_bytes()).is_ok());
        for bad in ["/etc/passwd", "x/../../etc/passwd", "..", "", "x\\..\\y"] {
            let err = Manifest::parse("s3://b/x/v1/manifest.json", manifest(bad).as_bytes())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("s3://b/x/v1/manifest.json") && err.contains("must be relative"),
                "{bad}: {err}"
            );
        }
    }
}
