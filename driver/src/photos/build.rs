//! `facematch dataset build`: a new dataset version from a folder or S3 prefix of photos.
//!
//! The driver lists the photos, pins the next version and the face ids under the dataset's lock,
//! runs the build dataflow ([`facematch_job::build`]) that encodes the photos and writes the new
//! shards in parallel, then writes the manifest (the base version's shards plus the new ones) and
//! registers the version, its faces and its photos in one transaction. Photos that fail are
//! recorded per build in `build_failures` and the build carries on; if the build itself fails,
//! the new version's files are deleted and the database keeps only the failed build's record.

use super::{DIM, EMBEDDER, PHOTO_EXTENSIONS, photo_extension};
use crate::store::builds::{self, BuildCounts, FailedPhoto};
use crate::store::datasets::{self, DatasetRow};
use crate::store::faces::{self, ImageRow, PhotoFace};
use anyhow::{Result, anyhow, bail};
use facematch_datasets::face::{Encoder, EncoderOptions, ModelPaths};
use facematch_datasets::{DatasetWriter, FaceSource, Manifest, S3Options, Storage};
use facematch_job::build::{
    BuildOutput, BuildProgress, BuildSpec, FailureStage, PhotoOutcome, PhotoTask, run_build,
};
use indicatif::ProgressBar;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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
    /// The progress bar to keep up to date (its length is set to the number of photos), or
    /// `ProgressBar::hidden()`.
    pub progress: ProgressBar,
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

/// One build on its way: what was asked, and what it has found so far.
struct Build<'a> {
    request: &'a BuildRequest,
    build_id: i64,
    photos_storage: &'a Storage,
    /// The photos (key, actor), in the order that numbers their faces.
    photos: &'a [(String, Option<String>)],
    output_storage: Storage,
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
    let mut client = crate::store::connect_checked(url, crate::store::Access::Write)?;
    let build_id = builds::start(
        &mut client,
        &request.name,
        photos_storage.root_uri(),
        request.workers,
        photos.len(),
    )?;
    let build = Build {
        request,
        build_id,
        photos_storage: &photos_storage,
        photos: &photos,
        output_storage: Storage::open(&request.dataset_root, &request.s3)?,
    };
    match build_in_transaction(&mut client, &build) {
        Ok(mut report) => {
            report.total_secs = started.elapsed().as_secs_f64();
            Ok(report)
        }
        Err(e) => {
            builds::fail(&mut client, build_id, &format!("{e:#}"))?;
            Err(e)
        }
    }
}

/// Pins the version and the face ids, runs the dataflow, and registers what it made, in one
/// transaction; the new version's files are deleted if anything fails.
fn build_in_transaction(client: &mut postgres::Client, build: &Build<'_>) -> Result<BuildReport> {
    let request = build.request;
    let mut tx = client.transaction()?;
    // The dataset's lock (as for imports) pins the version; the face-id lock pins the ids.
    datasets::lock_name(&mut tx, &request.name)?;
    let base = base_manifest(datasets::latest(&mut tx, &request.name)?, &request.s3)?;
    let version = datasets::next_version(&mut tx, &request.name)?;
    let version_folder = format!("{}/v{version}/", request.name);
    if !build.output_storage.list(&version_folder)?.is_empty() {
        bail!(
            "{} already holds files of {}@v{version}, which this database does not know; \
             use another --name or --dataset-root",
            build.output_storage.uri_of(&version_folder),
            request.name
        );
    }
    let spec = Arc::new(BuildSpec {
        photos_root: build.photos_storage.root_uri().to_string(),
        photos: build
            .photos
            .iter()
            .map(|(key, _)| PhotoTask {
                key: key.clone(),
                source: request.source,
            })
            .collect(),
        known_sha256: builds::known_photos(&mut tx, &request.name)?,
        s3: request.s3.clone(),
        models_dir: request.models.dir().to_path_buf(),
        encoder: request.encoder,
        output_root: build.output_storage.root_uri().to_string(),
        name: request.name.clone(),
        version,
        first_face_id: faces::lock_next_face_id(&mut tx)?,
        shard_rows: request.shard_rows,
        first_shard: base.as_ref().map_or(0, |m| m.shards.len()),
    });
    let registered = run_with_progress(spec.clone(), request).and_then(|output| {
        let report = register(&mut tx, build, &spec, &output, base.as_ref())?;
        tx.commit()?;
        Ok(report)
    });
    if registered.is_err() {
        for key in build
            .output_storage
            .list(&version_folder)
            .unwrap_or_default()
        {
            let _ = build.output_storage.delete(&key);
        }
    }
    registered
}

/// The manifest of the version a build adds to, which must hold dlib encodings.
fn base_manifest(base: Option<DatasetRow>, s3: &S3Options) -> Result<Option<Manifest>> {
    match base {
        Some(row) if row.dim as usize != DIM || row.embedder != EMBEDDER => bail!(
            "{} holds {}-d {} encodings; build photos into another --name",
            row.label(),
            row.dim,
            row.embedder
        ),
        Some(row) => Ok(Some(row.load_manifest(s3)?.1)),
        None => Ok(None),
    }
}

/// Runs the build dataflow, with a progress bar fed from the workers' counters when asked.
fn run_with_progress(spec: Arc<BuildSpec>, request: &BuildRequest) -> Result<BuildOutput> {
    let progress = Arc::new(BuildProgress::default());
    let total = spec.photos.len() as u64;
    let bar = request.progress.clone();
    bar.set_length(total);
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

/// What the dataflow's photo outcomes amount to: the report's counts and failures, and the
/// faces and photos to register.
struct Sorted {
    report: BuildReport,
    faces: Vec<PhotoFace>,
    images: Vec<ImageRow>,
}

/// Registers the build's faces, photos and version (if it made one) and records the build.
fn register(
    tx: &mut postgres::Transaction<'_>,
    build: &Build<'_>,
    spec: &BuildSpec,
    output: &BuildOutput,
    base: Option<&Manifest>,
) -> Result<BuildReport> {
    let Sorted {
        mut report,
        faces,
        images,
    } = sort_outcomes(tx, build, output)?;
    if faces.len() as u64 != output.faces {
        bail!(
            "the build wrote {} faces to shards but found {}",
            output.faces,
            faces.len()
        );
    }
    let dataset = if faces.is_empty() {
        None
    } else {
        Some(register_version(tx, build, spec, output, base, &faces)?)
    };
    report.dataset = dataset.as_ref().map(DatasetRow::label);
    let dataset_id = dataset.map(|row| row.id);
    faces::insert_images(tx, &build.request.name, &images, dataset_id)?;
    builds::record_failures(
        tx,
        build.build_id,
        report.failures.iter().map(|f| FailedPhoto {
            image: &f.image,
            sha256: f.sha256.as_deref(),
            stage: f.stage,
            message: &f.message,
        }),
    )?;
    let counts = BuildCounts {
        encoded: report.encoded,
        skipped: report.known + report.duplicates,
        failed: report.failures.len(),
        faces: report.faces,
    };
    builds::finish(tx, build.build_id, counts, dataset_id)?;
    Ok(report)
}

/// Goes through every photo's outcome: encoded photos give faces (numbered as the dataflow
/// numbered them) and image rows, the others counts and failures.
fn sort_outcomes(
    tx: &mut postgres::Transaction<'_>,
    build: &Build<'_>,
    output: &BuildOutput,
) -> Result<Sorted> {
    let mut sorted = Sorted {
        report: BuildReport {
            build_id: build.build_id,
            photos: build.photos.len(),
            encoded: 0,
            faces: output.faces,
            known: 0,
            duplicates: 0,
            failures: Vec::new(),
            dataset: None,
            workers: build.request.workers,
            dataflow_secs: output.elapsed.as_secs_f64(),
            total_secs: 0.0,
        },
        faces: Vec::new(),
        images: Vec::new(),
    };
    let mut actors = ActorIds::default();
    for photo in &output.photos {
        let (key, actor) = &build.photos[photo.index];
        let uri = build.photos_storage.uri_of(key);
        let report = &mut sorted.report;
        match &photo.outcome {
            PhotoOutcome::Encoded(encoded) => {
                sorted.images.push(ImageRow {
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
                    Some(name) => Some(actors.get(tx, name)?),
                    None => None,
                };
                for (k, face) in encoded.faces.iter().enumerate() {
                    let b = face.bbox.clipped(encoded.width, encoded.height);
                    sorted.faces.push(PhotoFace {
                        id: photo.first_face_id + k as i64,
                        source: build.request.source,
                        actor_id,
                        user_id: None,
                        image_uri: uri.clone(),
                        image_sha256: encoded.sha256.clone(),
                        bbox: [b.left, b.top, b.right, b.bottom].map(|v| v as i32),
                        encoding: face.encoding.clone(),
                        detector: face.detector.as_str(),
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
    Ok(sorted)
}

/// Actor ids by name, each looked up (or created) once per build.
#[derive(Default)]
struct ActorIds(BTreeMap<String, i64>);

impl ActorIds {
    fn get(&mut self, tx: &mut postgres::Transaction<'_>, name: &str) -> Result<i64> {
        if let Some(id) = self.0.get(name) {
            return Ok(*id);
        }
        let id = faces::actor_id(tx, name)?;
        self.0.insert(name.to_string(), id);
        Ok(id)
    }
}

/// Writes the new version's manifest (the base version's shards plus the new ones) and
/// registers the version and its faces.
fn register_version(
    tx: &mut postgres::Transaction<'_>,
    build: &Build<'_>,
    spec: &BuildSpec,
    output: &BuildOutput,
    base: Option<&Manifest>,
    photo_faces: &[PhotoFace],
) -> Result<DatasetRow> {
    let request = build.request;
    // The lock taken before the build is still held: the ids computed then are still free.
    faces::reserve_face_ids(tx, spec.first_face_id, photo_faces.len() as i64)?;
    let mut writer = DatasetWriter::create(
        build.output_storage.clone(),
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
    let row =
        datasets::register_version(tx, &build.output_storage, &manifest, request.make_current)?;
    faces::insert_photo_faces(tx, photo_faces, Some(row.id))?;
    Ok(row)
}
