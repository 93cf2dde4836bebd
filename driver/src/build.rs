//! `facematch dataset build`: a new dataset version from a folder or S3 prefix of photos.
//!
//! The driver lists the photos, pins the next version and the face ids under the dataset's lock,
//! runs the build dataflow ([`facematch_job::build`]) that encodes the photos and writes the new
//! shards in parallel, then writes the manifest (the base version's shards plus the new ones) and
//! registers the version, its faces and its photos in one transaction. Photos that fail are
//! recorded per build in `build_failures` and the build carries on; if the build itself fails,
//! the new version's files are deleted and the database keeps only the failed build's record.

use crate::registry::{self, ImageRow, PhotoFace};
use anyhow::{Context, Result, anyhow, bail};
use facematch_datasets::face::{Encoder, EncoderOptions, ModelPaths};
use facematch_datasets::{DatasetWriter, FaceSource, Manifest, S3Options, Storage};
use facematch_job::build::{
    BuildOutput, BuildProgress, BuildSpec, FailureStage, PhotoOutcome, PhotoTask, run_build,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The embedder label of datasets built from photos.
pub const EMBEDDER: &str = "dlib_face_recognition_resnet_model_v1";
/// The dimension of dlib's encodings.
pub const DIM: usize = 128;
/// File extensions taken as photos.
pub const PHOTO_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "gif", "bmp"];

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// Folder, `file://` or `s3://bucket/prefix` holding the photos.
    pub photos_uri: String,
    /// Name each photo's actor after its first folder (`Name/photo.jpg`).
    pub actors_from_dirs: bool,
    /// Source of the faces.
    pub source: FaceSource,
    /// Detection and encoding settings.
    pub encoder: EncoderOptions,
    /// Where dlib's models are.
    pub models: ModelPaths,
    /// Dataset name.
    pub name: String,
    /// Storage root of the dataset.
    pub dataset_root: String,
    /// Faces per shard.
    pub shard_rows: usize,
    /// Make the new version the default for runs.
    pub make_current: bool,
    /// Timely worker threads.
    pub workers: usize,
    /// How to reach S3.
    pub s3: S3Options,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
}

/// A photo that could not be used.
#[derive(Debug, Clone, Serialize)]
pub struct PhotoFailure {
    /// The photo.
    pub image: String,
    /// sha256 of its bytes, when it could be read.
    pub sha256: Option<String>,
    /// Where it failed: read, decode, no_face.
    pub stage: &'static str,
    /// What was wrong.
    pub message: String,
}

/// What a build did.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// `dataset_builds.id`.
    pub build_id: i64,
    /// Photos listed.
    pub photos: usize,
    /// Photos encoded with at least one face.
    pub encoded: usize,
    /// Faces added.
    pub faces: u64,
    /// Photos the dataset already held.
    pub known: usize,
    /// Photos that repeat another photo of this build.
    pub duplicates: usize,
    /// Photos that failed, with the reason.
    pub failures: Vec<PhotoFailure>,
    /// The new version (`name@vN`), or none when nothing changed.
    pub dataset: Option<String>,
    /// Timely workers.
    pub workers: usize,
    /// Seconds in the dataflow (encoding and shard writing).
    pub dataflow_secs: f64,
    /// Seconds in all.
    pub total_secs: f64,
}

/// The extension of a photo's name, lower-cased, if it is one of [`PHOTO_EXTENSIONS`].
pub fn photo_extension(name: &str) -> Option<String> {
    name.rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .filter(|ext| PHOTO_EXTENSIONS.contains(&ext.as_str()))
}

/// Lists the photos under `photos_uri` (sorted keys with a photo extension).
pub fn list_photos(
    storage: &Storage,
    actors_from_dirs: bool,
) -> Result<Vec<(String, Option<String>)>> {
    let keys = storage.list("")?;
    Ok(keys
        .into_iter()
        .filter(|key| photo_extension(key).is_some())
        .map(|key| {
            let actor = actors_from_dirs
                .then(|| key.split_once('/').map(|(dir, _)| dir.to_string()))
                .flatten();
            (key, actor)
        })
        .collect())
}

/// Runs a build; per-photo failures are in the report, anything else is an error.
pub fn build_dataset(url: &str, request: &BuildRequest) -> Result<BuildReport> {
    let started = Instant::now();
    Encoder::check_models(&request.models, request.encoder)?;
    let photos_storage = Storage::open(&request.photos_uri, &request.s3)?;
    let photos = list_photos(&photos_storage, request.actors_from_dirs)?;
    if photos.is_empty() {
        bail!(
            "no photos ({}) under {}",
            PHOTO_EXTENSIONS.join(", "),
            photos_storage.root_uri()
        );
    }
    let mut client = crate::db::connect_migrated(url)?;
    let build_id: i64 = client
        .query_one(
            "INSERT INTO dataset_builds (dataset_name, photos_uri, workers, photos) VALUES ($1, $2, $3, $4) RETURNING id",
            &[&request.name, &photos_storage.root_uri(), &(request.workers as i32), &(photos.len() as i32)],
        )?
        .get(0);
    let result = build_in_transaction(&mut client, request, build_id, &photos_storage, &photos);
    match result {
        Ok(mut report) => {
            report.total_secs = started.elapsed().as_secs_f64();
            Ok(report)
        }
        Err(e) => {
            let message = format!("{e:#}");
            client.execute(
                "UPDATE dataset_builds SET status = 'ERROR', error = $2, finished_at = now() WHERE id = $1",
                &[&build_id, &message],
            )?;
            Err(e)
        }
    }
}

fn build_in_transaction(
    client: &mut postgres::Client,
    request: &BuildRequest,
    build_id: i64,
    photos_storage: &Storage,
    photos: &[(String, Option<String>)],
) -> Result<BuildReport> {
    let output_storage = Storage::open(&request.dataset_root, &request.s3)?;
    let mut tx = client.transaction()?;
    // The dataset's lock (as for imports) pins the version; the face-id lock pins the ids.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&request.name],
    )?;
    let base = registry::latest(&mut tx, &request.name)?;
    let base_manifest = match &base {
        Some(row) if row.dim as usize != DIM || row.embedder != EMBEDDER => bail!(
            "{} holds {}-d {} encodings; build photos into another --name",
            row.label(),
            row.dim,
            row.embedder
        ),
        Some(row) => Some(row.load_manifest(&request.s3)?.1),
        None => None,
    };
    let version = registry::next_version(&mut tx, &request.name)?;
    let known: Vec<String> = tx
        .query(
            "SELECT sha256 FROM images WHERE dataset_name = $1",
            &[&request.name],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let version_folder = format!("{}/v{version}/", request.name);
    if !output_storage.list(&version_folder)?.is_empty() {
        bail!(
            "{} already holds files of {}@v{version}, which this database does not know; \
             use another --name or --dataset-root",
            output_storage.uri_of(&version_folder),
            request.name
        );
    }
    let first_face_id = registry::lock_next_face_id(&mut tx)?;
    let spec = Arc::new(BuildSpec {
        photos_root: photos_storage.root_uri().to_string(),
        photos: photos
            .iter()
            .map(|(key, _)| PhotoTask {
                key: key.clone(),
                source: request.source,
            })
            .collect(),
        known_sha256: known,
        s3: request.s3.clone(),
        models_dir: request.models.dir().to_path_buf(),
        encoder: request.encoder,
        output_root: output_storage.root_uri().to_string(),
        name: request.name.clone(),
        version,
        first_face_id,
        shard_rows: request.shard_rows,
        first_shard: base_manifest.as_ref().map_or(0, |m| m.shards.len()),
    });

    let cleanup = |storage: &Storage| {
        for key in storage.list(&version_folder).unwrap_or_default() {
            let _ = storage.delete(&key);
        }
    };
    let output = match run_with_progress(spec.clone(), request) {
        Ok(output) => output,
        Err(e) => {
            cleanup(&output_storage);
            return Err(e);
        }
    };
    let registered = (|| -> Result<BuildReport> {
        let report = register(
            &mut tx,
            request,
            build_id,
            photos_storage,
            photos,
            &spec,
            &output,
            &output_storage,
            base_manifest.as_ref(),
        )?;
        tx.commit()?;
        Ok(report)
    })();
    if registered.is_err() {
        cleanup(&output_storage);
    }
    registered
}

fn run_with_progress(spec: Arc<BuildSpec>, request: &BuildRequest) -> Result<BuildOutput> {
    let progress = Arc::new(BuildProgress::default());
    let total = spec.photos.len() as u64;
    let bar = if request.progress {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} encoding [{bar:30}] {pos}/{len} photos, {msg} ({elapsed}, eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let watcher = {
        let (progress, bar) = (progress.clone(), bar.clone());
        std::thread::spawn(move || {
            loop {
                let done = progress.done.load(Ordering::Relaxed);
                bar.set_position(done);
                bar.set_message(format!(
                    "{} faces, {} skipped, {} errors",
                    progress.faces.load(Ordering::Relaxed),
                    progress.skipped.load(Ordering::Relaxed),
                    progress.failed.load(Ordering::Relaxed)
                ));
                if done >= total || Arc::strong_count(&progress) == 1 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let config = facematch_job::timely::Config::process(request.workers.max(1));
    let result = run_build(spec, config, progress.clone());
    drop(progress);
    let _ = watcher.join();
    bar.finish_and_clear();
    result?.ok_or_else(|| anyhow!("the build dataflow returned nothing"))
}

#[allow(clippy::too_many_arguments)]
fn register(
    tx: &mut postgres::Transaction<'_>,
    request: &BuildRequest,
    build_id: i64,
    photos_storage: &Storage,
    photos: &[(String, Option<String>)],
    spec: &BuildSpec,
    output: &BuildOutput,
    output_storage: &Storage,
    base: Option<&Manifest>,
) -> Result<BuildReport> {
    let mut report = BuildReport {
        build_id,
        photos: photos.len(),
        encoded: 0,
        faces: output.faces,
        known: 0,
        duplicates: 0,
        failures: Vec::new(),
        dataset: None,
        workers: request.workers,
        dataflow_secs: output.elapsed.as_secs_f64(),
        total_secs: 0.0,
    };
    let mut actors = BTreeMap::new();
    let mut faces = Vec::new();
    let mut images = Vec::new();
    for photo in &output.photos {
        let (key, actor) = &photos[photo.index];
        let uri = photos_storage.uri_of(key);
        match &photo.outcome {
            PhotoOutcome::Encoded(encoded) => {
                images.push(ImageRow {
                    sha256: encoded.sha256.clone(),
                    uri: uri.clone(),
                    width: encoded.width,
                    height: encoded.height,
                    face_count: encoded.faces.len(),
                });
                if encoded.faces.is_empty() {
                    report.failures.push(PhotoFailure {
                        image: uri.clone(),
                        sha256: Some(encoded.sha256.clone()),
                        stage: FailureStage::NoFace.as_str(),
                        message: format!("image {uri}: no face found"),
                    });
                    continue;
                }
                report.encoded += 1;
                let actor_id = match actor {
                    Some(name) => Some(match actors.get(name) {
                        Some(id) => *id,
                        None => {
                            let id = registry::actor_id(tx, name)?;
                            actors.insert(name.clone(), id);
                            id
                        }
                    }),
                    None => None,
                };
                for (k, face) in encoded.faces.iter().enumerate() {
                    let b = face.bbox.clipped(encoded.width, encoded.height);
                    faces.push(PhotoFace {
                        id: photo.first_face_id + k as i64,
                        source: request.source,
                        actor_id,
                        user_id: None,
                        image_uri: uri.clone(),
                        image_sha256: encoded.sha256.clone(),
                        bbox: [b.left, b.top, b.right, b.bottom].map(|v| v as i32),
                        encoding: face.encoding.clone(),
                    });
                }
            }
            PhotoOutcome::Known { .. } => report.known += 1,
            PhotoOutcome::Duplicate { .. } => report.duplicates += 1,
            PhotoOutcome::Failed {
                sha256,
                stage,
                message,
            } => report.failures.push(PhotoFailure {
                image: uri,
                sha256: sha256.clone(),
                stage: stage.as_str(),
                message: message.clone(),
            }),
        }
    }
    if faces.len() as u64 != output.faces {
        bail!(
            "the build wrote {} faces to shards but found {}",
            output.faces,
            faces.len()
        );
    }
    let dataset_id = if faces.is_empty() {
        None
    } else {
        // The lock taken before the build is still held: the ids computed then are still free.
        registry::reserve_face_ids(tx, spec.first_face_id, faces.len() as i64)?;
        let mut writer = DatasetWriter::create(
            output_storage.clone(),
            &request.name,
            spec.version,
            DIM,
            EMBEDDER,
            request.shard_rows,
        )?;
        if let Some(base) = base {
            writer.include_version(base)?;
        }
        for shard in &output.shards {
            writer.add_shard(shard.clone())?;
        }
        let manifest = writer.finish()?;
        let row = registry::register_version(tx, output_storage, &manifest, request.make_current)?;
        registry::insert_photo_faces(tx, &faces, Some(row.id))?;
        report.dataset = Some(row.label());
        Some(row.id)
    };
    registry::insert_images(tx, &request.name, &images, dataset_id)?;
    let statement = tx.prepare(
        "INSERT INTO build_failures (build_id, image_uri, image_sha256, stage, message) VALUES ($1, $2, $3, $4, $5)",
    )?;
    for failure in &report.failures {
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
    tx.execute(
        "UPDATE dataset_builds SET status = 'FINISHED', encoded = $2, skipped = $3, failed = $4, faces = $5,
                dataset_id = $6, finished_at = now() WHERE id = $1",
        &[
            &build_id,
            &(report.encoded as i32),
            &((report.known + report.duplicates) as i32),
            &(report.failures.len() as i32),
            &(report.faces as i64),
            &dataset_id,
        ],
    )?;
    Ok(report)
}
