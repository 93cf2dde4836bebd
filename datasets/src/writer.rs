//! Writes one new, immutable dataset version: shards first, the manifest last, so a version is
//! visible only once complete.

use crate::encoding::FaceRecord;
use crate::error::{DatasetError, Result};
use crate::manifest::{FORMAT_VERSION, Manifest, ShardInfo, validate_name};
use crate::shard::{encode_shard, sha256_hex};
use crate::storage::Storage;
use std::collections::HashSet;

/// Key of shard file `n` of version `version` of dataset `name`, under the storage root.
pub fn shard_key(name: &str, version: u32, n: usize) -> String {
    format!("{name}/v{version}/shard-{n:05}.parquet")
}

/// Encodes `records` (of dimension `dim`) as one shard, writes it at `key` and describes it for
/// a manifest.
pub fn write_shard(
    storage: &Storage,
    key: &str,
    records: &[FaceRecord],
    dim: usize,
) -> Result<ShardInfo> {
    let data = encode_shard(records, dim)?;
    let info = ShardInfo {
        path: key.to_string(),
        rows: records.len() as u64,
        bytes: data.len() as u64,
        sha256: sha256_hex(&data),
    };
    storage.put(key, data)?;
    Ok(info)
}

/// Default number of faces per shard.
pub const DEFAULT_SHARD_ROWS: usize = 65_536;

/// Builds a dataset version shard by shard; holds at most one shard of records in memory.
pub struct DatasetWriter {
    storage: Storage,
    name: String,
    version: u32,
    dim: usize,
    embedder: String,
    shard_rows: usize,
    pending: Vec<FaceRecord>,
    shards: Vec<ShardInfo>,
    count: u64,
    seen: HashSet<i64>,
}

impl DatasetWriter {
    /// Starts version `version` of dataset `name`; refuses if that version already exists.
    pub fn create(
        storage: Storage,
        name: &str,
        version: u32,
        dim: usize,
        embedder: &str,
        shard_rows: usize,
    ) -> Result<DatasetWriter> {
        validate_name(name)?;
        if dim == 0 {
            return Err(DatasetError::Invalid("dimension must be at least 1".into()));
        }
        if shard_rows == 0 {
            return Err(DatasetError::Invalid(
                "shard size must be at least 1 row".into(),
            ));
        }
        let key = Manifest::key(name, version);
        if storage.exists(&key)? {
            return Err(DatasetError::Invalid(format!(
                "{} already exists: dataset versions are immutable",
                storage.uri_of(&key)
            )));
        }
        Ok(DatasetWriter {
            storage,
            name: name.to_string(),
            version,
            dim,
            embedder: embedder.to_string(),
            shard_rows,
            pending: Vec::with_capacity(shard_rows.min(1 << 20)),
            shards: Vec::new(),
            count: 0,
            seen: HashSet::new(),
        })
    }

    /// Makes the new version include every shard of an older version (new faces then go in new shards).
    pub fn include_version(&mut self, base: &Manifest) -> Result<()> {
        if base.dim != self.dim {
            return Err(DatasetError::Invalid(format!(
                "base version {} has dimension {}, this one {}",
                base.dataset_ref(),
                base.dim,
                self.dim
            )));
        }
        self.shards.extend(base.shards.iter().cloned());
        self.count += base.count;
        Ok(())
    }

    /// Adds a shard written elsewhere (by a build worker) under this version's folder.
    pub fn add_shard(&mut self, info: ShardInfo) -> Result<()> {
        let folder = format!("{}/v{}/", self.name, self.version);
        if !info.path.starts_with(&folder) {
            return Err(DatasetError::Invalid(format!(
                "shard {} is not in {folder}",
                info.path
            )));
        }
        self.count += info.rows;
        self.shards.push(info);
        Ok(())
    }

    /// The encoding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Adds one face; validates it and rejects an id already added.
    pub fn push(&mut self, record: FaceRecord) -> Result<()> {
        record.validate(self.dim)?;
        if !self.seen.insert(record.face_id) {
            return Err(DatasetError::Encoding {
                face_id: record.face_id,
                message: "face id appears twice".into(),
            });
        }
        self.pending.push(record);
        if self.pending.len() >= self.shard_rows {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = shard_key(&self.name, self.version, self.shards.len());
        let info = write_shard(&self.storage, &path, &self.pending, self.dim)?;
        self.count += info.rows;
        self.shards.push(info);
        self.pending.clear();
        Ok(())
    }

    /// Writes the last shard and then the manifest; returns the manifest.
    pub fn finish(mut self) -> Result<Manifest> {
        self.flush()?;
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            name: self.name.clone(),
            version: self.version,
            dim: self.dim,
            embedder: self.embedder.clone(),
            count: self.count,
            shards: self.shards.clone(),
            created_at: now_rfc3339(),
        };
        self.storage.put(
            &Manifest::key(&self.name, self.version),
            manifest.to_json().into(),
        )?;
        Ok(manifest)
    }
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil-from-days (Howard Hinnant), to avoid a date crate for one timestamp.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
