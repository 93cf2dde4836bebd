//! Datasets and faces in Postgres: registering a new dataset version together with its faces, and
//! resolving which version a run uses.
//!
//! A version is written to storage and registered in one database transaction that is committed
//! only after the manifest is in place; if anything fails, the transaction rolls back and the
//! version's files are deleted, so database and storage stay as they were.

use anyhow::{Context, Result, anyhow, bail};
use facematch_datasets::{DatasetRef, DatasetWriter, FaceRecord, Manifest, S3Options, Storage};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::{Client, GenericClient};

/// A registered dataset version.
#[derive(Debug, Clone)]
pub struct DatasetRow {
    /// Database id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Version.
    pub version: i32,
    /// Storage root.
    pub root_uri: String,
    /// Full URI of the manifest.
    pub manifest_uri: String,
    /// Dimension.
    pub dim: i32,
    /// Number of faces.
    pub face_count: i64,
    /// Number of shards.
    pub shard_count: i32,
    /// Embedder.
    pub embedder: String,
    /// Whether runs use it by default.
    pub is_current: bool,
    /// Creation time.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl DatasetRow {
    /// `name@vN`.
    pub fn label(&self) -> String {
        format!("{}@v{}", self.name, self.version)
    }

    fn from_row(row: &postgres::Row) -> DatasetRow {
        DatasetRow {
            id: row.get("id"),
            name: row.get("name"),
            version: row.get("version"),
            root_uri: row.get("root_uri"),
            manifest_uri: row.get("manifest_uri"),
            dim: row.get("dim"),
            face_count: row.get("face_count"),
            shard_count: row.get("shard_count"),
            embedder: row.get("embedder"),
            is_current: row.get("is_current"),
            created_at: row.get("created_at"),
        }
    }

    /// Reads and verifies this version's manifest from storage.
    pub fn load_manifest(&self, s3: &S3Options) -> Result<(Storage, Manifest)> {
        let storage = Storage::open(&self.root_uri, s3)?;
        let key = Manifest::key(&self.name, self.version as u32);
        let bytes = storage.get(&key)?;
        let manifest = Manifest::parse(&self.manifest_uri, &bytes)?;
        if manifest.dim != self.dim as usize || manifest.count != self.face_count as u64 {
            bail!(
                "manifest {} does not match the database (dim {} vs {}, count {} vs {})",
                self.manifest_uri,
                manifest.dim,
                self.dim,
                manifest.count,
                self.face_count
            );
        }
        Ok((storage, manifest))
    }
}

const DATASET_COLUMNS: &str =
    "id, name, version, root_uri, manifest_uri, dim, face_count, shard_count, embedder, is_current, created_at";

/// All registered versions, newest first.
pub fn list(client: &mut Client) -> Result<Vec<DatasetRow>> {
    Ok(client
        .query(&format!("SELECT {DATASET_COLUMNS} FROM datasets ORDER BY name, version DESC"), &[])?
        .iter()
        .map(DatasetRow::from_row)
        .collect())
}

/// Resolves `name`, `name@vN`, or (None) the current dataset.
pub fn resolve(client: &mut impl GenericClient, dataset: Option<&DatasetRef>) -> Result<DatasetRow> {
    let row = match dataset {
        None => client
            .query_opt(&format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE is_current"), &[])?
            .ok_or_else(|| anyhow!("no current dataset: build, import or synth one first, or pass --dataset"))?,
        Some(DatasetRef { name, version: None }) => client
            .query_opt(
                &format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE name = $1 ORDER BY version DESC LIMIT 1"),
                &[name],
            )?
            .ok_or_else(|| anyhow!("no dataset named {name:?}"))?,
        Some(DatasetRef { name, version: Some(v) }) => client
            .query_opt(
                &format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE name = $1 AND version = $2"),
                &[name, &(*v as i32)],
            )?
            .ok_or_else(|| anyhow!("no dataset {name}@v{v}"))?,
    };
    Ok(DatasetRow::from_row(&row))
}

/// The next free version number of `name`.
pub fn next_version(client: &mut impl GenericClient, name: &str) -> Result<u32> {
    let v: i32 = client
        .query_one("SELECT coalesce(max(version), 0) + 1 FROM datasets WHERE name = $1", &[&name])?
        .get(0);
    Ok(v as u32)
}

/// A face to register together with a dataset version.
#[derive(Debug, Clone)]
pub struct NewFace {
    /// The face (id, source, encoding).
    pub record: FaceRecord,
    /// Where its image is, if known.
    pub image_uri: Option<String>,
}

/// Parameters of a new dataset version.
pub struct NewDataset<'a> {
    /// Where to write it.
    pub storage: &'a Storage,
    /// Name (the version is the next free one).
    pub name: &'a str,
    /// Dimension.
    pub dim: usize,
    /// Embedder label.
    pub embedder: &'a str,
    /// Faces per shard.
    pub shard_rows: usize,
    /// Make it the default for runs.
    pub make_current: bool,
}

/// Writes a new dataset version from `faces` and registers it and its faces, all or nothing.
/// A face id already known with a different source or encoding is an error.
pub fn create_dataset(
    client: &mut Client,
    new: &NewDataset<'_>,
    faces: impl IntoIterator<Item = Result<NewFace>>,
    mut progress: impl FnMut(u64),
) -> Result<(DatasetRow, Manifest)> {
    let mut tx = client.transaction()?;
    // Serialise writers of the same name so two imports never pick the same version.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&new.name])?;
    let version = next_version(&mut tx, new.name)?;
    let mut writer = DatasetWriter::create(
        new.storage.clone(),
        new.name,
        version,
        new.dim,
        new.embedder,
        new.shard_rows,
    )?;
    let written = (|| -> Result<Manifest> {
        tx.batch_execute(
            "CREATE TEMP TABLE incoming_faces (id bigint, source text, encoding real[], image_uri text) ON COMMIT DROP",
        )?;
        let sink = tx.copy_in("COPY incoming_faces (id, source, encoding, image_uri) FROM STDIN BINARY")?;
        let mut copy = BinaryCopyInWriter::new(sink, &[Type::INT8, Type::TEXT, Type::FLOAT4_ARRAY, Type::TEXT]);
        let mut count = 0u64;
        for face in faces {
            let face = face?;
            let source = face.record.source.to_string();
            copy.write(&[&face.record.face_id, &source, &face.record.encoding, &face.image_uri])?;
            writer.push(face.record)?;
            count += 1;
            if count.is_multiple_of(10_000) {
                progress(count);
            }
        }
        progress(count);
        if count == 0 {
            bail!("no faces to write");
        }
        copy.finish()?;
        Ok(writer.finish()?)
    })();
    let manifest = match written {
        Ok(m) => m,
        Err(e) => {
            drop(tx);
            delete_version_files(new.storage, new.name, version, None);
            return Err(e);
        }
    };
    let registered = register_in_tx(&mut tx, new, &manifest).and_then(|row| {
        tx.commit()?;
        Ok(row)
    });
    match registered {
        Ok(row) => Ok((row, manifest)),
        Err(e) => {
            delete_version_files(new.storage, new.name, version, Some(&manifest));
            Err(e)
        }
    }
}

fn register_in_tx(tx: &mut postgres::Transaction<'_>, new: &NewDataset<'_>, manifest: &Manifest) -> Result<DatasetRow> {
    let conflicts = tx.query(
        "SELECT i.id FROM incoming_faces i JOIN faces f ON f.id = i.id
          WHERE f.source <> i.source OR f.encoding <> i.encoding ORDER BY i.id LIMIT 5",
        &[],
    )?;
    if !conflicts.is_empty() {
        let ids: Vec<String> = conflicts.iter().map(|r| r.get::<_, i64>(0).to_string()).collect();
        bail!(
            "face id(s) {} already exist with a different source or encoding; face ids are global, pick new ids",
            ids.join(", ")
        );
    }
    if new.make_current {
        tx.execute("UPDATE datasets SET is_current = false WHERE is_current", &[])?;
    }
    let manifest_key = Manifest::key(&manifest.name, manifest.version);
    let row = tx.query_one(
        &format!(
            "INSERT INTO datasets (name, version, root_uri, manifest_uri, dim, face_count, shard_count, embedder,
                                   manifest_sha256, is_current)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {DATASET_COLUMNS}"
        ),
        &[
            &manifest.name,
            &(manifest.version as i32),
            &new.storage.root_uri(),
            &new.storage.uri_of(&manifest_key),
            &(manifest.dim as i32),
            &(manifest.count as i64),
            &(manifest.shards.len() as i32),
            &manifest.embedder,
            &facematch_datasets::shard::sha256_hex(&manifest.to_json()),
            &new.make_current,
        ],
    )?;
    let dataset = DatasetRow::from_row(&row);
    tx.execute(
        "INSERT INTO faces (id, source, encoding, dim, image_uri, first_dataset_id)
         SELECT id, source, encoding, cardinality(encoding), image_uri, $1 FROM incoming_faces
         ON CONFLICT (id) DO NOTHING",
        &[&dataset.id],
    )?;
    Ok(dataset)
}

/// Best-effort removal of a version that could not be registered (it was never visible).
fn delete_version_files(storage: &Storage, name: &str, version: u32, manifest: Option<&Manifest>) {
    let prefix = format!("{name}/v{version}/");
    let _ = storage.delete(&Manifest::key(name, version));
    let mut index = 0;
    loop {
        let key = format!("{prefix}shard-{index:05}.parquet");
        let known = manifest.is_some_and(|m| m.shards.iter().any(|s| s.path == key));
        if !known && !storage.exists(&key).unwrap_or(false) {
            break;
        }
        let _ = storage.delete(&key);
        index += 1;
    }
}

/// Reads faces' encodings by id (for query faces).
pub fn face_encoding(client: &mut impl GenericClient, face_id: i64) -> Result<Option<(String, Vec<f32>)>> {
    Ok(client
        .query_opt("SELECT source, encoding FROM faces WHERE id = $1", &[&face_id])
        .context("reading a face")?
        .map(|r| (r.get(0), r.get(1))))
}
