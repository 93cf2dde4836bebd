//! `dataset_builds`, `build_failures` and the staging tables of an unfinished build
//! (`build_faces`, `build_images`, `build_shards`): the record of every photo build, whether it
//! produced a version or not, of every photo it could not use, and of what it has registered so
//! far, invisible until [`publish`] moves it into `faces` and `images` (ARCHITECTURE.md:
//! Building from photos).

use super::faces::PhotoFace;
use anyhow::{Context, Result};
use facematch_datasets::{FaceRecord, FaceSource, ShardInfo};
use postgres::GenericClient;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use std::collections::HashSet;

/// Counts of a build, summed over its chunks (and its attempts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildCounts {
    /// Photos encoded with at least one face.
    pub encoded: usize,
    /// Photos the dataset already held.
    pub known: usize,
    /// Photos that repeat an earlier photo of the build.
    pub duplicates: usize,
    /// Photos that failed.
    pub failed: usize,
    /// Faces registered.
    pub faces: u64,
}

impl BuildCounts {
    /// Adds another chunk's counts.
    pub fn add(&mut self, other: &BuildCounts) {
        self.encoded += other.encoded;
        self.known += other.known;
        self.duplicates += other.duplicates;
        self.failed += other.failed;
        self.faces += other.faces;
    }
}

/// A photo a build could not use.
#[derive(Debug, Clone)]
pub struct FailedPhoto {
    /// The photo's URI.
    pub image: String,
    /// sha256 of its bytes, when it could be read.
    pub sha256: Option<String>,
    /// Where it failed: read, decode, no_face, models.
    pub stage: String,
    /// What was wrong.
    pub message: String,
}

/// What a new build records when it starts.
#[derive(Debug, Clone)]
pub struct NewBuild<'a> {
    /// Dataset name.
    pub dataset_name: &'a str,
    /// Where the photos are.
    pub photos_uri: &'a str,
    /// Timely workers in all.
    pub workers: usize,
    /// Photos listed.
    pub photos: usize,
    /// The version it makes.
    pub version: u32,
    /// What was asked, compared on resume.
    pub settings: &'a serde_json::Value,
    /// `--runner`'s label.
    pub runner: &'a str,
}

/// A build that did not finish and can be taken up again.
#[derive(Debug, Clone)]
pub struct Interrupted {
    /// `dataset_builds.id`.
    pub id: i64,
    /// `RUNNING` (its driver died) or `ERROR`.
    pub status: String,
    /// The version it makes.
    pub version: u32,
    /// Where its parts are.
    pub staging_uri: String,
    /// What it was asked.
    pub settings: serde_json::Value,
    /// Photos registered so far.
    pub registered_photos: usize,
    /// Photos listed.
    pub photos: usize,
}

/// Takes the lock that lets one `dataset build` of `name` run at a time, held by this session
/// until it ends (a driver killed with SIGKILL loses it with its connection); false when another
/// session holds it.
pub fn try_lock_builds_of(client: &mut impl GenericClient, name: &str) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext('facematch.build:' || $1))",
            &[&name],
        )?
        .get(0))
}

/// Records a build as started (and resumable); returns its id.
pub fn start(client: &mut impl GenericClient, build: &NewBuild<'_>) -> Result<i64> {
    Ok(client
        .query_one(
            "INSERT INTO dataset_builds (dataset_name, photos_uri, workers, photos, version,
                                         settings, runner, resumable)
             VALUES ($1, $2, $3, $4, $5, $6, $7, true) RETURNING id",
            &[
                &build.dataset_name,
                &build.photos_uri,
                &(build.workers as i32),
                &(build.photos as i32),
                &(build.version as i32),
                build.settings,
                &build.runner,
            ],
        )?
        .get(0))
}

/// Records where the build's parts go (a folder named after its id).
pub fn set_staging_uri(client: &mut impl GenericClient, build_id: i64, uri: &str) -> Result<()> {
    client.execute(
        "UPDATE dataset_builds SET staging_uri = $2 WHERE id = $1",
        &[&build_id, &uri],
    )?;
    Ok(())
}

/// The build of `name` that can be resumed, if any.
pub fn interrupted(client: &mut impl GenericClient, name: &str) -> Result<Option<Interrupted>> {
    Ok(client
        .query_opt(
            "SELECT id, status, version, staging_uri, settings, registered_photos, photos
               FROM dataset_builds WHERE dataset_name = $1 AND resumable",
            &[&name],
        )?
        .map(|r| Interrupted {
            id: r.get(0),
            status: r.get(1),
            version: r.get::<_, i32>(2) as u32,
            staging_uri: r.get(3),
            settings: r.get(4),
            registered_photos: r.get::<_, i32>(5) as usize,
            photos: r.get::<_, i32>(6) as usize,
        }))
}

/// Marks an interrupted build RUNNING again, for one more attempt on `runner` with `workers`.
pub fn resume(
    client: &mut impl GenericClient,
    build_id: i64,
    runner: &str,
    workers: usize,
) -> Result<()> {
    client.execute(
        "UPDATE dataset_builds SET status = 'RUNNING', error = NULL, finished_at = NULL,
                attempts = attempts + 1, runner = $2, workers = $3 WHERE id = $1",
        &[&build_id, &runner, &(workers as i32)],
    )?;
    Ok(())
}

/// Gives an interrupted build up: its staged rows go, and no build resumes it.
pub fn discard(client: &mut impl GenericClient, build_id: i64, reason: &str) -> Result<()> {
    let mut tx = client.transaction()?;
    delete_staged(&mut tx, build_id)?;
    tx.execute(
        "UPDATE dataset_builds SET status = 'ERROR', resumable = false, error = $2,
                finished_at = coalesce(finished_at, now()) WHERE id = $1",
        &[&build_id, &reason],
    )?;
    tx.commit()?;
    Ok(())
}

/// Records the photos a build could not use (again after a resume: the first record stays).
pub fn record_failures<'a>(
    tx: &mut impl GenericClient,
    build_id: i64,
    failures: impl IntoIterator<Item = &'a FailedPhoto>,
) -> Result<()> {
    let statement = tx.prepare(
        "INSERT INTO build_failures (build_id, image_uri, image_sha256, stage, message)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )?;
    for failure in failures {
        tx.execute(
            &statement,
            &[
                &build_id,
                &failure.image,
                &failure.sha256,
                &failure.stage,
                &failure.message,
            ],
        )
        .with_context(|| format!("recording the failure of {}", failure.image))?;
    }
    Ok(())
}

/// The first `limit` photos build `build_id` could not use, by URI.
pub fn failures(
    client: &mut impl GenericClient,
    build_id: i64,
    limit: usize,
) -> Result<Vec<FailedPhoto>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(client
        .query(
            "SELECT image_uri, image_sha256, stage, message FROM build_failures
              WHERE build_id = $1 ORDER BY image_uri LIMIT $2",
            &[&build_id, &limit],
        )?
        .iter()
        .map(|r| FailedPhoto {
            image: r.get(0),
            sha256: r.get(1),
            stage: r.get(2),
            message: r.get(3),
        })
        .collect())
}

/// Adds one chunk's counts and moves the registered mark to `registered_photos`.
pub fn add_chunk(
    tx: &mut impl GenericClient,
    build_id: i64,
    registered_photos: usize,
    counts: &BuildCounts,
) -> Result<()> {
    tx.execute(
        "UPDATE dataset_builds SET registered_photos = $2, encoded = encoded + $3,
                skipped = skipped + $4 + $5, duplicates = duplicates + $5, failed = failed + $6,
                faces = faces + $7 WHERE id = $1",
        &[
            &build_id,
            &(registered_photos as i32),
            &(counts.encoded as i32),
            &(counts.known as i32),
            &(counts.duplicates as i32),
            &(counts.failed as i32),
            &(counts.faces as i64),
        ],
    )?;
    Ok(())
}

/// The counts registered so far.
pub fn counts(client: &mut impl GenericClient, build_id: i64) -> Result<BuildCounts> {
    let row = client.query_one(
        "SELECT encoded, skipped - duplicates, duplicates, failed, faces
           FROM dataset_builds WHERE id = $1",
        &[&build_id],
    )?;
    Ok(BuildCounts {
        encoded: row.get::<_, i32>(0) as usize,
        known: row.get::<_, i32>(1) as usize,
        duplicates: row.get::<_, i32>(2) as usize,
        failed: row.get::<_, i32>(3) as usize,
        faces: row.get::<_, i64>(4) as u64,
    })
}

/// Marks a build FINISHED with the version it made, if any.
pub fn finish(tx: &mut impl GenericClient, build_id: i64, dataset_id: Option<i64>) -> Result<()> {
    tx.execute(
        "UPDATE dataset_builds SET status = 'FINISHED', resumable = false, dataset_id = $2,
                finished_at = now() WHERE id = $1",
        &[&build_id, &dataset_id],
    )?;
    Ok(())
}

/// Marks a build ERROR with the reason; what it registered stays for a resume.
pub fn fail(client: &mut impl GenericClient, build_id: i64, message: &str) -> Result<()> {
    client.execute(
        "UPDATE dataset_builds SET status = 'ERROR', error = $2, finished_at = now() WHERE id = $1",
        &[&build_id, &message],
    )?;
    Ok(())
}

/// sha256 of every photo dataset `name` already holds.
pub fn known_photos(client: &mut impl GenericClient, name: &str) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT sha256 FROM images WHERE dataset_name = $1",
            &[&name],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Which of `sha256s` the build has registered already (their photos are duplicates).
pub fn staged_photos(
    client: &mut impl GenericClient,
    build_id: i64,
    sha256s: &[String],
) -> Result<HashSet<String>> {
    Ok(client
        .query(
            "SELECT sha256 FROM build_images WHERE build_id = $1 AND sha256 = ANY($2)",
            &[&build_id, &sha256s],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// A photo a build registered: the first copy of its bytes.
#[derive(Debug, Clone)]
pub struct StagedImage {
    /// sha256 of its bytes.
    pub sha256: String,
    /// Where it is.
    pub uri: String,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Faces found in it.
    pub face_count: usize,
}

/// Stages a chunk's photos.
pub fn stage_images(
    tx: &mut impl GenericClient,
    build_id: i64,
    images: &[StagedImage],
) -> Result<()> {
    let statement = tx.prepare(
        "INSERT INTO build_images (build_id, sha256, uri, width, height, face_count)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )?;
    for image in images {
        tx.execute(
            &statement,
            &[
                &build_id,
                &image.sha256,
                &image.uri,
                &(image.width as i32),
                &(image.height as i32),
                &(image.face_count as i32),
            ],
        )?;
    }
    Ok(())
}

/// Copies a chunk's faces into the staging table, each with its shard (0 = the build's first).
pub fn stage_faces(
    tx: &mut postgres::Transaction<'_>,
    build_id: i64,
    faces: &[(usize, PhotoFace)],
) -> Result<()> {
    let sink = tx.copy_in(
        "COPY build_faces (build_id, id, shard, source, actor_id, image_uri, image_sha256, bbox,
                           encoding, detector)
         FROM STDIN BINARY",
    )?;
    let mut copy = BinaryCopyInWriter::new(
        sink,
        &[
            Type::INT8,
            Type::INT8,
            Type::INT4,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::INT4_ARRAY,
            Type::FLOAT4_ARRAY,
            Type::TEXT,
        ],
    );
    for (shard, face) in faces {
        copy.write(&[
            &build_id,
            &face.id,
            &(*shard as i32),
            &face.source.to_string(),
            &face.actor_id,
            &face.image_uri,
            &face.image_sha256,
            &face.bbox.to_vec(),
            &face.encoding,
            &face.detector,
        ])?;
    }
    copy.finish()?;
    Ok(())
}

/// Faces the build has staged.
pub fn staged_faces(client: &mut impl GenericClient, build_id: i64) -> Result<u64> {
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM build_faces WHERE build_id = $1",
            &[&build_id],
        )?
        .get(0);
    Ok(n as u64)
}

/// The staged faces of the build's shard `shard`, by id.
pub fn shard_faces(
    client: &mut impl GenericClient,
    build_id: i64,
    shard: usize,
) -> Result<Vec<FaceRecord>> {
    client
        .query(
            "SELECT id, source, encoding FROM build_faces WHERE build_id = $1 AND shard = $2
              ORDER BY id",
            &[&build_id, &(shard as i32)],
        )?
        .iter()
        .map(|r| {
            Ok(FaceRecord {
                face_id: r.get(0),
                source: r.get::<_, String>(1).parse::<FaceSource>()?,
                encoding: r.get(2),
            })
        })
        .collect()
}

/// Records that the build wrote its shard `shard`.
pub fn record_shard(
    client: &mut impl GenericClient,
    build_id: i64,
    shard: usize,
    info: &ShardInfo,
) -> Result<()> {
    client.execute(
        "INSERT INTO build_shards (build_id, shard, path, rows, bytes, sha256)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (build_id, shard) DO UPDATE SET path = excluded.path, rows = excluded.rows,
             bytes = excluded.bytes, sha256 = excluded.sha256",
        &[
            &build_id,
            &(shard as i32),
            &info.path,
            &(info.rows as i64),
            &(info.bytes as i64),
            &info.sha256,
        ],
    )?;
    Ok(())
}

/// The shards the build has written, by shard number.
pub fn written_shards(
    client: &mut impl GenericClient,
    build_id: i64,
) -> Result<Vec<(usize, ShardInfo)>> {
    Ok(client
        .query(
            "SELECT shard, path, rows, bytes, sha256 FROM build_shards WHERE build_id = $1
              ORDER BY shard",
            &[&build_id],
        )?
        .iter()
        .map(|r| {
            (
                r.get::<_, i32>(0) as usize,
                ShardInfo {
                    path: r.get(1),
                    rows: r.get::<_, i64>(2) as u64,
                    bytes: r.get::<_, i64>(3) as u64,
                    sha256: r.get(4),
                },
            )
        })
        .collect())
}

/// Moves what the build staged into `faces` (first seen in `dataset_id`) and `images` (known to
/// `dataset_name`), inside the transaction that registers the version.
pub fn publish(
    tx: &mut impl GenericClient,
    build_id: i64,
    dataset_name: &str,
    dataset_id: Option<i64>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO faces (id, source, actor_id, image_uri, image_sha256, bbox, encoding, dim,
                            first_dataset_id, detector)
         SELECT id, source, actor_id, image_uri, image_sha256, bbox, encoding,
                cardinality(encoding), $2, detector
           FROM build_faces WHERE build_id = $1",
        &[&build_id, &dataset_id],
    )?;
    tx.execute(
        "INSERT INTO images (dataset_name, sha256, uri, width, height, face_count, dataset_id)
         SELECT $2, sha256, uri, width, height, face_count, $3 FROM build_images
          WHERE build_id = $1
         ON CONFLICT DO NOTHING",
        &[&build_id, &dataset_name, &dataset_id],
    )?;
    delete_staged(tx, build_id)
}

/// Deletes what build `build_id` staged: once published, or when it is given up.
fn delete_staged(tx: &mut impl GenericClient, build_id: i64) -> Result<()> {
    for table in ["build_faces", "build_images", "build_shards"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE build_id = $1"),
            &[&build_id],
        )?;
    }
    Ok(())
}
