//! Dataset versions in Postgres: registering a new version together with its faces, and resolving
//! which version a run uses.
//!
//! A version is written to storage and registered in one database transaction that is committed
//! only after the manifest is in place; if anything fails, the transaction rolls back and the
//! version's files are deleted, so database and storage stay as they were.

use anyhow::{Result, anyhow, bail};
use facematch_datasets::{DatasetRef, DatasetWriter, FaceRecord, Manifest, S3Options, Storage};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::{Client, GenericClient};
use std::ops::RangeInclusive;

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

const DATASET_COLUMNS: &str = "id, name, version, root_uri, manifest_uri, dim, face_count, shard_count, embedder, is_current, created_at";

/// All registered versions, by name and, within a name, newest first.
pub fn list(client: &mut Client) -> Result<Vec<DatasetRow>> {
    Ok(client
        .query(
            &format!("SELECT {DATASET_COLUMNS} FROM datasets ORDER BY name, version DESC"),
            &[],
        )?
        .iter()
        .map(DatasetRow::from_row)
        .collect())
}

/// Resolves `name`, `name@vN`, or (None) the current dataset.
pub fn resolve(
    client: &mut impl GenericClient,
    dataset: Option<&DatasetRef>,
) -> Result<DatasetRow> {
    let row = match dataset {
        None => client
            .query_opt(
                &format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE is_current"),
                &[],
            )?
            .ok_or_else(|| {
                anyhow!("no current dataset: build, import or synth one first, or pass --dataset")
            })?,
        Some(DatasetRef {
            name,
            version: None,
        }) => {
            return latest(client, name)?.ok_or_else(|| anyhow!("no dataset named {name:?}"));
        }
        Some(DatasetRef {
            name,
            version: Some(v),
        }) => client
            .query_opt(
                &format!("SELECT {DATASET_COLUMNS} FROM datasets WHERE name = $1 AND version = $2"),
                &[name, &(*v as i32)],
            )?
            .ok_or_else(|| anyhow!("no dataset {name}@v{v}"))?,
    };
    Ok(DatasetRow::from_row(&row))
}

/// The latest version of `name`, if there is one.
pub fn latest(client: &mut impl GenericClient, name: &str) -> Result<Option<DatasetRow>> {
    Ok(client
        .query_opt(
            &format!(
                "SELECT {DATASET_COLUMNS} FROM datasets WHERE name = $1 ORDER BY version DESC LIMIT 1"
            ),
            &[&name],
        )?
        .as_ref()
        .map(DatasetRow::from_row))
}

/// The next free version number of `name`.
pub fn next_version(client: &mut impl GenericClient, name: &str) -> Result<u32> {
    let v: i32 = client
        .query_one(
            "SELECT coalesce(max(version), 0) + 1 FROM datasets WHERE name = $1",
            &[&name],
        )?
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
    /// The ids the faces will have, when known before they are read (synthetic datasets). If none
    /// of them exists yet, faces are copied straight into `faces`, skipping the staging table.
    pub id_range: Option<RangeInclusive<i64>>,
}

/// Where the faces of a new version are copied while its shards are written.
#[derive(Clone, Copy, PartialEq)]
enum FaceTarget {
    /// Straight into `faces`: every id is known to be new.
    Faces,
    /// Into a staging table, merged into `faces` after checking ids already known.
    Staging,
}

/// Writes a new dataset version from `faces` and registers it and its faces, all or nothing.
/// A face id already known with a different source or encoding is an error.
pub fn create_dataset(
    client: &mut Client,
    new: &NewDataset<'_>,
    faces: impl IntoIterator<Item = Result<NewFace>>,
    progress: impl FnMut(u64),
) -> Result<(DatasetRow, Manifest)> {
    let mut tx = client.transaction()?;
    // Serialise writers of the same name so two imports never pick the same version.
    lock_name(&mut tx, new.name)?;
    let version = next_version(&mut tx, new.name)?;
    let target = face_target(&mut tx, new.id_range.as_ref())?;
    let streamed = stream_version(&mut tx, new, version, target, faces, progress);
    let streamed = match streamed {
        Ok(streamed) => streamed,
        Err(e) => {
            drop(tx);
            delete_version_files(new.storage, new.name, version, None);
            return Err(e);
        }
    };
    tracing::info!(
        faces = streamed.manifest.count,
        "shards written and faces streamed to the database"
    );
    let registered = (|| -> Result<DatasetRow> {
        if target == FaceTarget::Staging {
            merge_staged_faces(&mut tx, streamed.ids)?;
        }
        let row = complete_dataset_row(
            &mut tx,
            streamed.dataset_id,
            new.make_current,
            &streamed.manifest,
        )?;
        tx.commit()?;
        Ok(row)
    })();
    match registered {
        Ok(row) => Ok((row, streamed.manifest)),
        Err(e) => {
            delete_version_files(new.storage, new.name, version, Some(&streamed.manifest));
            Err(e)
        }
    }
}

/// Takes the lock that serialises writers of dataset `name` until the transaction ends.
pub fn lock_name(tx: &mut impl GenericClient, name: &str) -> Result<()> {
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&name])?;
    Ok(())
}

/// Straight into `faces` when every announced id is new; through the staging table otherwise.
fn face_target(
    tx: &mut impl GenericClient,
    id_range: Option<&RangeInclusive<i64>>,
) -> Result<FaceTarget> {
    Ok(match id_range {
        Some(range) if !ids_in_use(tx, *range.start(), *range.end())? => FaceTarget::Faces,
        _ => FaceTarget::Staging,
    })
}

/// A version written to storage and its faces copied, not yet registered.
struct StreamedVersion {
    dataset_id: i64,
    /// Smallest and largest face id.
    ids: (i64, i64),
    manifest: Manifest,
}

/// Writes the shards and, in the same pass, copies every face into `target`.
fn stream_version(
    tx: &mut postgres::Transaction<'_>,
    new: &NewDataset<'_>,
    version: u32,
    target: FaceTarget,
    faces: impl IntoIterator<Item = Result<NewFace>>,
    mut progress: impl FnMut(u64),
) -> Result<StreamedVersion> {
    let mut writer = DatasetWriter::create(
        new.storage.clone(),
        new.name,
        version,
        new.dim,
        new.embedder,
        new.shard_rows,
    )?;
    // The row exists from the start so the faces can reference it; its figures are filled in
    // once the manifest is written, and nobody sees it before the commit.
    let dataset_id = insert_dataset_row(tx, new.storage, new.name, version, new.dim, new.embedder)?;
    let mut copy = open_face_copy(tx, target)?;
    let dim = new.dim as i32;
    let (mut ids, mut count) = ((i64::MAX, i64::MIN), 0u64);
    for face in faces {
        let face = face?;
        let id = face.record.face_id;
        if target == FaceTarget::Faces && !new.id_range.as_ref().is_some_and(|r| r.contains(&id)) {
            bail!(
                "face id {id} is outside the announced id range {:?}",
                new.id_range
            );
        }
        ids = (ids.0.min(id), ids.1.max(id));
        let source = face.record.source.to_string();
        copy.write(&[
            &id,
            &source,
            &face.record.encoding,
            &dim,
            &face.image_uri,
            &dataset_id,
        ])?;
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
    Ok(StreamedVersion {
        dataset_id,
        ids,
        manifest: writer.finish()?,
    })
}

/// A binary COPY into `faces` or into a staging table created for this transaction.
fn open_face_copy<'a>(
    tx: &'a mut postgres::Transaction<'_>,
    target: FaceTarget,
) -> Result<BinaryCopyInWriter<'a>> {
    let table = match target {
        FaceTarget::Faces => "faces",
        FaceTarget::Staging => {
            tx.batch_execute(
                "CREATE TEMP TABLE incoming_faces (LIKE faces INCLUDING DEFAULTS) ON COMMIT DROP",
            )?;
            "incoming_faces"
        }
    };
    let sink = tx.copy_in(&format!(
        "COPY {table} (id, source, encoding, dim, image_uri, first_dataset_id) FROM STDIN BINARY"
    ))?;
    Ok(BinaryCopyInWriter::new(
        sink,
        &[
            Type::INT8,
            Type::TEXT,
            Type::FLOAT4_ARRAY,
            Type::INT4,
            Type::TEXT,
            Type::INT8,
        ],
    ))
}

/// Inserts a version's row with its figures still zero (filled in by [`complete_dataset_row`]).
fn insert_dataset_row(
    tx: &mut impl GenericClient,
    storage: &Storage,
    name: &str,
    version: u32,
    dim: usize,
    embedder: &str,
) -> Result<i64> {
    Ok(tx
        .query_one(
            "INSERT INTO datasets (name, version, root_uri, manifest_uri, dim, face_count, shard_count,
                                   embedder, manifest_sha256)
             VALUES ($1, $2, $3, $4, $5, 0, 0, $6, '') RETURNING id",
            &[
                &name,
                &(version as i32),
                &storage.root_uri(),
                &storage.uri_of(&Manifest::key(name, version)),
                &(dim as i32),
                &embedder,
            ],
        )?
        .get(0))
}

/// Whether any face id in `min..=max` is already registered (answered by the primary-key index).
fn ids_in_use(tx: &mut impl GenericClient, min: i64, max: i64) -> Result<bool> {
    Ok(tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM faces WHERE id BETWEEN $1 AND $2)",
            &[&min, &max],
        )?
        .get(0))
}

/// Fills in the figures of a dataset row created at the start of its transaction.
fn complete_dataset_row(
    tx: &mut postgres::Transaction<'_>,
    dataset_id: i64,
    make_current: bool,
    manifest: &Manifest,
) -> Result<DatasetRow> {
    if make_current {
        tx.execute(
            "UPDATE datasets SET is_current = false WHERE is_current",
            &[],
        )?;
    }
    let row = tx.query_one(
        &format!(
            "UPDATE datasets SET face_count = $2, shard_count = $3, manifest_sha256 = $4, is_current = $5
              WHERE id = $1 RETURNING {DATASET_COLUMNS}"
        ),
        &[
            &dataset_id,
            &(manifest.count as i64),
            &(manifest.shards.len() as i32),
            &facematch_datasets::shard::sha256_hex(&manifest.to_json()),
            &make_current,
        ],
    )?;
    Ok(DatasetRow::from_row(&row))
}

/// Moves staged faces into `faces`: new ids are inserted, ids already known must be identical.
fn merge_staged_faces(
    tx: &mut postgres::Transaction<'_>,
    (min_id, max_id): (i64, i64),
) -> Result<()> {
    check_conflicts(tx, min_id, max_id)?;
    tx.execute(
        "INSERT INTO faces SELECT * FROM incoming_faces ON CONFLICT (id) DO NOTHING",
        &[],
    )?;
    Ok(())
}

/// Fails when a face id of the new version is already known with a different source or encoding.
/// Re-registering identical faces (a new version of the same data) is fine.
fn check_conflicts(tx: &mut postgres::Transaction<'_>, min_id: i64, max_id: i64) -> Result<()> {
    // Fresh ids are answered by the index without touching the incoming rows; only an
    // overlapping id range pays for the join.
    if !ids_in_use(tx, min_id, max_id)? {
        return Ok(());
    }
    // Without statistics the planner picks a nested loop over a million rows.
    tx.batch_execute("ANALYZE incoming_faces")?;
    let conflicts = tx.query(
        "SELECT i.id FROM incoming_faces i JOIN faces f ON f.id = i.id
          WHERE f.source <> i.source OR f.encoding <> i.encoding ORDER BY i.id LIMIT 5",
        &[],
    )?;
    if !conflicts.is_empty() {
        let ids: Vec<String> = conflicts
            .iter()
            .map(|r| r.get::<_, i64>(0).to_string())
            .collect();
        bail!(
            "face id(s) {} already exist with a different source or encoding; face ids are global, pick new ids",
            ids.join(", ")
        );
    }
    Ok(())
}

/// Best-effort removal of a version that could not be registered (it was never visible).
pub fn delete_version_files(
    storage: &Storage,
    name: &str,
    version: u32,
    manifest: Option<&Manifest>,
) {
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

/// Registers a version whose manifest is already written (a photo build); returns its row.
pub fn register_version(
    tx: &mut postgres::Transaction<'_>,
    storage: &Storage,
    manifest: &Manifest,
    make_current: bool,
) -> Result<DatasetRow> {
    let dataset_id = insert_dataset_row(
        tx,
        storage,
        &manifest.name,
        manifest.version,
        manifest.dim,
        &manifest.embedder,
    )?;
    complete_dataset_row(tx, dataset_id, make_current, manifest)
}
