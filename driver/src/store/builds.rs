//! `dataset_builds` and `build_failures`: the record of every photo build, whether it produced a
//! version or not, and of every photo it could not use.

use anyhow::{Context, Result};
use postgres::GenericClient;

/// What a build tells the database when it ends well.
#[derive(Debug, Clone, Copy)]
pub struct BuildCounts {
    /// Photos encoded with at least one face.
    pub encoded: usize,
    /// Photos skipped (already known or duplicates).
    pub skipped: usize,
    /// Photos that failed.
    pub failed: usize,
    /// Faces added.
    pub faces: u64,
}

/// A photo a build could not use.
#[derive(Debug, Clone, Copy)]
pub struct FailedPhoto<'a> {
    /// The photo's URI.
    pub image: &'a str,
    /// sha256 of its bytes, when it could be read.
    pub sha256: Option<&'a str>,
    /// Where it failed: read, decode, no_face.
    pub stage: &'a str,
    /// What was wrong.
    pub message: &'a str,
}

/// Records a build as started; returns its id.
pub fn start(
    client: &mut impl GenericClient,
    dataset_name: &str,
    photos_uri: &str,
    workers: usize,
    photos: usize,
) -> Result<i64> {
    Ok(client
        .query_one(
            "INSERT INTO dataset_builds (dataset_name, photos_uri, workers, photos)
             VALUES ($1, $2, $3, $4) RETURNING id",
            &[
                &dataset_name,
                &photos_uri,
                &(workers as i32),
                &(photos as i32),
            ],
        )?
        .get(0))
}

/// Records the photos a build could not use.
pub fn record_failures<'a>(
    tx: &mut impl GenericClient,
    build_id: i64,
    failures: impl IntoIterator<Item = FailedPhoto<'a>>,
) -> Result<()> {
    let statement = tx.prepare(
        "INSERT INTO build_failures (build_id, image_uri, image_sha256, stage, message)
         VALUES ($1, $2, $3, $4, $5)",
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

/// Marks a build FINISHED with its counts and the version it made, if any.
pub fn finish(
    tx: &mut impl GenericClient,
    build_id: i64,
    counts: BuildCounts,
    dataset_id: Option<i64>,
) -> Result<()> {
    tx.execute(
        "UPDATE dataset_builds SET status = 'FINISHED', encoded = $2, skipped = $3, failed = $4,
                faces = $5, dataset_id = $6, finished_at = now() WHERE id = $1",
        &[
            &build_id,
            &(counts.encoded as i32),
            &(counts.skipped as i32),
            &(counts.failed as i32),
            &(counts.faces as i64),
            &dataset_id,
        ],
    )?;
    Ok(())
}

/// Marks a build ERROR with the reason (its transaction rolled back: nothing else remains of it).
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
