//! `facematch stats`: how many faces and photos there are, per source, and the component-wise
//! mean encoding of a dataset version (the old FRS `/stats`).

use crate::store::datasets::DatasetRow;
use crate::store::{faces, histories};
use anyhow::Result;
use facematch_datasets::{S3Options, ShardReader};
use postgres::Client;
use serde::Serialize;

/// Faces of one source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStats {
    /// `A` or `U`.
    pub source: String,
    /// Faces.
    pub faces: i64,
    /// Distinct photos they come from.
    pub images: i64,
}

/// The figures `facematch stats` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Faces registered in all.
    pub faces: i64,
    /// Distinct photos with at least one face.
    pub images: i64,
    /// Per source.
    pub sources: Vec<SourceStats>,
    /// Actors.
    pub actors: i64,
    /// Users.
    pub users: i64,
    /// Histories per status.
    pub histories: Vec<(String, i64)>,
    /// The dataset version the mean was computed on.
    pub dataset: String,
    /// Faces in that version.
    pub dataset_faces: u64,
    /// Component-wise mean encoding of that version, computed in f64.
    pub mean_encoding: Vec<f64>,
}

/// `previous` with the database's counts read again (the mean is the dataset version's, which
/// never changes).
pub fn recount(client: &mut Client, previous: &Stats) -> Result<Stats> {
    counted(
        client,
        previous.dataset.clone(),
        previous.dataset_faces,
        previous.mean_encoding.clone(),
    )
}

/// Counts from the database and the mean over `dataset`'s shards.
pub fn collect(client: &mut Client, dataset: &DatasetRow, s3: &S3Options) -> Result<Stats> {
    let (dataset_faces, mean_encoding) = mean_encoding(dataset, s3)?;
    counted(client, dataset.label(), dataset_faces, mean_encoding)
}

/// The database's counts beside a version's mean.
fn counted(
    client: &mut Client,
    dataset: String,
    dataset_faces: u64,
    mean_encoding: Vec<f64>,
) -> Result<Stats> {
    let counts = faces::counts(client)?;
    Ok(Stats {
        faces: counts.faces,
        images: counts.images,
        sources: counts
            .sources
            .into_iter()
            .map(|(source, faces, images)| SourceStats {
                source,
                faces,
                images,
            })
            .collect(),
        actors: counts.actors,
        users: counts.users,
        histories: histories::status_counts(client)?,
        dataset,
        dataset_faces,
        mean_encoding,
    })
}

/// Streams every shard of the version, verifying each, and averages the encodings in f64.
fn mean_encoding(dataset: &DatasetRow, s3: &S3Options) -> Result<(u64, Vec<f64>)> {
    let (storage, manifest) = dataset.load_manifest(s3)?;
    let dim = manifest.dim;
    let mut sum = vec![0f64; dim];
    let mut count = 0u64;
    for shard in &manifest.shards {
        for batch in ShardReader::fetch(&storage, shard, dim)? {
            let batch = batch?;
            for row in batch.values().chunks_exact(dim) {
                for (s, v) in sum.iter_mut().zip(row) {
                    *s += f64::from(*v);
                }
            }
            count += batch.len() as u64;
        }
    }
    if count > 0 {
        sum.iter_mut().for_each(|s| *s /= count as f64);
    }
    Ok((count, sum))
}

/// The figures as text.
pub fn render(stats: &Stats) -> String {
    let mut out = format!(
        "faces: {} from {} photo(s); actors: {}, users: {}\n",
        stats.faces, stats.images, stats.actors, stats.users
    );
    for s in &stats.sources {
        let name = if s.source == "A" { "actor" } else { "user" };
        out.push_str(&format!(
            "  {} ({name}): {} faces from {} photo(s)\n",
            s.source, s.faces, s.images
        ));
    }
    if !stats.histories.is_empty() {
        let parts: Vec<String> = stats
            .histories
            .iter()
            .map(|(status, n)| format!("{status} {n}"))
            .collect();
        out.push_str(&format!("histories: {}\n", parts.join(", ")));
    }
    let head: Vec<String> = stats
        .mean_encoding
        .iter()
        .take(8)
        .map(|v| format!("{v:+.4}"))
        .collect();
    out.push_str(&format!(
        "mean encoding of {} ({} faces, {} values): [{}{}]\n",
        stats.dataset,
        stats.dataset_faces,
        stats.mean_encoding.len(),
        head.join(", "),
        if stats.mean_encoding.len() > 8 {
            ", …"
        } else {
            ""
        }
    ));
    out
}
