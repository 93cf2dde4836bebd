//! `facematch dataset build`: a new dataset version from a folder or S3 prefix of photos, on any
//! runner (ARCHITECTURE.md: Building from photos).
//!
//! The driver lists the photos, pins the next version, and records the build (resumable) with
//! its spec in a staging area beside the dataset. A runner's workers encode the photos chunk by
//! chunk into parts ([`facematch_job::build`]); meanwhile [`super::register`] registers the parts
//! in photo order and writes the shards. The last transaction registers the version, its faces
//! and its photos at once. Photos that fail are recorded per build in `build_failures` and the
//! build carries on. A build that fails or whose driver dies keeps its parts and registered
//! chunks: the same command resumes it, encoding only the chunks without a part.

use super::register::Registrar;
use super::{DIM, EMBEDDER, PHOTO_EXTENSIONS, photo_extension};
use crate::runner::{RemoteJob, RunContext, Runner};
use crate::store::builds::{self, BuildCounts, Interrupted, NewBuild};
use crate::store::datasets::{self, DatasetRow};
use anyhow::{Context, Result, anyhow, bail};
use facematch_datasets::face::{Encoder, EncoderOptions, ModelPaths, StageSecs};
use facematch_datasets::{DatasetWriter, FaceSource, Manifest, S3Options, Storage};
use facematch_job::build::{BuildOutput, BuildSpec, PhotoTask, part_key};
use indicatif::ProgressBar;
use serde::Serialize;
use std::time::Instant;

/// What to do with an interrupted build of the same dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Resume it if there is one (it must have been asked the same), else start afresh.
    Auto,
    /// Resume it; an error if there is none.
    Required,
    /// Give it up (its parts and staged rows are deleted) and start afresh.
    Fresh,
}

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
    /// Where dlib's models are (on every worker host).
    pub models: ModelPaths,
    /// Dataset name.
    pub name: String,
    /// Storage root of the dataset.
    pub dataset_root: String,
    /// Faces per shard.
    pub shard_rows: usize,
    /// Photos per chunk.
    pub chunk_photos: usize,
    /// Make the new version the default for runs.
    pub make_current: bool,
    /// What to do with an interrupted build.
    pub resume: Resume,
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
    pub stage: String,
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
    /// Photos that failed.
    pub failed: usize,
    /// The first [`REPORTED_FAILURES`] of them by URI, with the reason (`build_failures` holds
    /// every one).
    pub failures: Vec<PhotoFailure>,
    /// The new version (`name@vN`), or none when nothing changed.
    pub dataset: Option<String>,
    /// Where it ran (`--runner`'s label).
    pub runner: String,
    /// Timely workers in all.
    pub workers: usize,
    /// Whether this command resumed an interrupted build.
    pub resumed: bool,
    /// Chunks whose part an earlier attempt had written (not encoded again).
    pub chunks_reused: usize,
    /// Photos this command ran through the detector (a resumed build encodes only the rest).
    pub photos_encoded_now: u64,
    /// Seconds in the dataflow (encoding; registration runs alongside).
    pub dataflow_secs: f64,
    /// Where the workers' time went, stage by stage, summed over the workers (thread-seconds).
    pub stage_secs: StageSecs,
    /// Seconds the driver spent registering parts in Postgres and writing shards, alongside the
    /// workers.
    pub register_secs: f64,
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
        .map(|key| (key.clone(), actor_of(&key, actors_from_dirs)))
        .collect())
}

fn actor_of(key: &str, actors_from_dirs: bool) -> Option<String> {
    actors_from_dirs
        .then(|| key.split_once('/').map(|(dir, _)| dir.to_string()))
        .flatten()
}

/// One build on its way: what was asked, and where everything is.
pub struct Build<'a> {
    /// What was asked.
    pub request: &'a BuildRequest,
    /// `dataset_builds.id`.
    pub build_id: i64,
    /// The version it makes.
    pub version: u32,
    /// Where the photos are.
    pub photos_storage: Storage,
    /// The photos (key, actor), in the order that numbers their faces.
    pub photos: Vec<(String, Option<String>)>,
    /// The dataset's storage root.
    pub output_storage: Storage,
    /// The workers' spec (every chunk).
    pub spec: BuildSpec,
    /// Shards the base version carries over (the build's shard `n` is file `first_shard + n`).
    pub first_shard: usize,
    /// Photos an earlier attempt registered.
    pub registered_photos: usize,
}

impl Build<'_> {
    /// Key of the build's `n`-th new shard.
    pub fn shard_key(&self, n: usize) -> String {
        facematch_datasets::writer::shard_key(
            &self.request.name,
            self.version,
            self.first_shard + n,
        )
    }

    /// Updates the progress bar: photos registered, faces, failures (rate and ETA by indicatif).
    pub fn show_progress(&self, registered: usize, counts: &BuildCounts) {
        let bar = &self.request.progress;
        bar.set_position(registered as u64);
        bar.set_message(format!(
            "{} faces, {} skipped, {} failed",
            counts.faces,
            counts.known + counts.duplicates,
            counts.failed
        ));
    }
}

/// Most failures a [`BuildReport`] lists.
pub const REPORTED_FAILURES: usize = 1000;

/// Runs a build on `runner`; per-photo failures are in the report, anything else is an error
/// (and the build stays resumable).
pub fn build_dataset(
    url: &str,
    request: &BuildRequest,
    runner: &dyn Runner,
) -> Result<BuildReport> {
    let started = Instant::now();
    if request.shard_rows == 0 || request.chunk_photos == 0 {
        bail!("--shard-rows and --chunk-photos must be at least 1");
    }
    Encoder::check_models(&request.models, request.encoder)?;
    let photos_storage = Storage::open(&request.photos_uri, &request.s3)?;
    let output_storage = Storage::open(&request.dataset_root, &request.s3)?;
    runner.check_build(photos_storage.root_uri(), output_storage.root_uri())?;
    let mut client = crate::store::connect_checked(url, crate::store::Access::Write)?;
    if !builds::try_lock_builds_of(&mut client, &request.name)? {
        bail!(
            "another `dataset build --name {}` is running; wait for it (dataset_builds shows it)",
            request.name
        );
    }
    let settings = settings(request, &photos_storage, &output_storage);
    let interrupted = builds::interrupted(&mut client, &request.name)?;
    let to_resume = match (interrupted, request.resume) {
        (Some(old), Resume::Fresh) => {
            discard(
                &mut client,
                &old,
                &output_storage,
                &request.name,
                &request.s3,
            )?;
            None
        }
        (Some(old), _) => Some(old),
        (None, Resume::Required) => bail!(
            "no interrupted build of {} to resume (dataset_builds has none left resumable)",
            request.name
        ),
        (None, _) => None,
    };
    let resumed = to_resume.is_some();
    let stores = (photos_storage, output_storage);
    let build = match to_resume {
        Some(old) => resume(&mut client, request, stores, &settings, old, runner)?,
        None => start(&mut client, request, stores, &settings, runner)?,
    };
    let result = run_and_register(&mut client, &build, runner)
        .and_then(|output| finish(&mut client, &build, resumed, output, runner, started));
    if let Err(e) = &result {
        let message = format!("{e:#}");
        // The database may be what failed; the build stays RUNNING then, and resumable all the same.
        let _ = builds::fail(&mut client, build.build_id, &message);
        return Err(anyhow!(
            "{message}\nbuild {} of {} stopped; run the same command again to resume it",
            build.build_id,
            request.name
        ));
    }
    result
}

/// What a resume must ask the same as the build it resumes.
fn settings(request: &BuildRequest, photos: &Storage, output: &Storage) -> serde_json::Value {
    serde_json::json!({
        "photos": photos.root_uri(),
        "dataset_root": output.root_uri(),
        "actors_from_dirs": request.actors_from_dirs,
        "source": request.source.to_string(),
        "encoder": request.encoder,
        "shard_rows": request.shard_rows,
        "chunk_photos": request.chunk_photos,
    })
}

/// The staging area of build `id` of `name`, under the dataset root.
fn staging_key(name: &str, id: i64) -> String {
    format!("{name}/.builds/build-{id}")
}

/// Where a build's spec is kept in its staging area.
const SPEC_KEY: &str = "spec.json";

/// Starts a new build: lists the photos and pins the version under the dataset's lock.
fn start<'a>(
    client: &mut postgres::Client,
    request: &'a BuildRequest,
    (photos_storage, output_storage): (Storage, Storage),
    settings: &serde_json::Value,
    runner: &dyn Runner,
) -> Result<Build<'a>> {
    let photos = list_photos(&photos_storage, request.actors_from_dirs)?;
    if photos.is_empty() {
        bail!(
            "no photos ({}) under {}",
            PHOTO_EXTENSIONS.join(", "),
            photos_storage.root_uri()
        );
    }
    let mut tx = client.transaction()?;
    datasets::lock_name(&mut tx, &request.name)?;
    let base = base_manifest(datasets::latest(&mut tx, &request.name)?, &request.s3)?;
    let version = datasets::next_version(&mut tx, &request.name)?;
    let version_folder = format!("{}/v{version}/", request.name);
    if !output_storage.list(&version_folder)?.is_empty() {
        bail!(
            "{} already holds files of {}@v{version}, which this database does not know; \
             use another --name or --dataset-root",
            output_storage.uri_of(&version_folder),
            request.name
        );
    }
    let known_sha256 = builds::known_photos(&mut tx, &request.name)?;
    // The id comes with the row; the staging URI follows from it.
    let build_id = builds::start(
        &mut tx,
        &NewBuild {
            dataset_name: &request.name,
            photos_uri: photos_storage.root_uri(),
            workers: runner.capacity().threads,
            photos: photos.len(),
            version,
            settings,
            runner: &runner.label(),
        },
    )?;
    let staging_uri = output_storage.uri_of(&staging_key(&request.name, build_id));
    builds::set_staging_uri(&mut tx, build_id, &staging_uri)?;
    let spec = BuildSpec {
        photos_root: photos_storage.root_uri().to_string(),
        photos: photos
            .iter()
            .map(|(key, _)| PhotoTask {
                key: key.clone(),
                source: request.source,
            })
            .collect(),
        known_sha256,
        s3: request.s3.clone(),
        models_dir: request.models.dir().to_path_buf(),
        encoder: request.encoder,
        staging_root: staging_uri.clone(),
        chunk_photos: request.chunk_photos,
        chunks: Vec::new(),
    };
    let staging = Storage::open(&staging_uri, &request.s3)?;
    staging.put(SPEC_KEY, serde_json::to_vec(&spec)?.into())?;
    tx.commit()?;
    Ok(Build {
        request,
        build_id,
        version,
        photos_storage,
        photos,
        output_storage,
        first_shard: base.as_ref().map_or(0, |m| m.shards.len()),
        spec,
        registered_photos: 0,
    })
}

/// Takes an interrupted build up again, with the photo list it started with.
fn resume<'a>(
    client: &mut postgres::Client,
    request: &'a BuildRequest,
    (photos_storage, output_storage): (Storage, Storage),
    settings: &serde_json::Value,
    old: Interrupted,
    runner: &dyn Runner,
) -> Result<Build<'a>> {
    if &old.settings != settings {
        bail!(
            "build {} of {} was interrupted ({} of {} photos registered) with other settings:\n  \
             it asked   {}\n  this asks {}\nrun it with the same settings to resume it, or add \
             --fresh to give it up and start again",
            old.id,
            request.name,
            old.registered_photos,
            old.photos,
            old.settings,
            settings
        );
    }
    let next = datasets::next_version(client, &request.name)?;
    if next != old.version {
        bail!(
            "build {} of {} was to make {}@v{}, but that version exists now; add --fresh to \
             give the build up and start again",
            old.id,
            request.name,
            request.name,
            old.version
        );
    }
    let base = base_manifest(datasets::latest(client, &request.name)?, &request.s3)?;
    let staging = Storage::open(&old.staging_uri, &request.s3)?;
    let spec: BuildSpec = serde_json::from_slice(&staging.get(SPEC_KEY).with_context(|| {
        format!(
            "build {} cannot be resumed without its spec; add --fresh to start again",
            old.id
        )
    })?)
    .with_context(|| format!("{}: unreadable build spec", staging.uri_of(SPEC_KEY)))?;
    builds::resume(client, old.id, &runner.label(), runner.capacity().threads)?;
    tracing::info!(
        build = old.id,
        registered = old.registered_photos,
        photos = old.photos,
        "resuming an interrupted build ({})",
        old.status
    );
    let photos = spec
        .photos
        .iter()
        .map(|p| (p.key.clone(), actor_of(&p.key, request.actors_from_dirs)))
        .collect();
    Ok(Build {
        request,
        build_id: old.id,
        version: old.version,
        photos_storage,
        photos,
        output_storage,
        first_shard: base.as_ref().map_or(0, |m| m.shards.len()),
        spec,
        registered_photos: old.registered_photos,
    })
}

/// Gives an interrupted build up for `--fresh`: its rows, parts and shards go.
fn discard(
    client: &mut postgres::Client,
    old: &Interrupted,
    output: &Storage,
    name: &str,
    s3: &S3Options,
) -> Result<()> {
    builds::discard(client, old.id, "given up for a --fresh build")?;
    delete_all(&Storage::open(&old.staging_uri, s3)?)?;
    for key in output.list(&format!("{name}/v{}/", old.version))? {
        output.delete(&key)?;
    }
    Ok(())
}

fn delete_all(storage: &Storage) -> Result<()> {
    for key in storage.list("")? {
        storage.delete(&key)?;
    }
    Ok(())
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

/// The build's run as the runners see it.
struct BuildContext(i64);

impl RunContext for BuildContext {
    fn run_id(&self) -> i64 {
        self.0
    }

    fn record(&self, job: &RemoteJob) {
        tracing::info!(
            build = self.0,
            cluster = job.cluster_id,
            state = job.cluster_state,
            "cluster"
        );
    }
}

/// Has the workers encode the chunks without a part while this thread registers the parts in
/// order; returns the workers' output once every chunk is registered.
fn run_and_register(
    client: &mut postgres::Client,
    build: &Build<'_>,
    runner: &dyn Runner,
) -> Result<Attempt> {
    let staging = Storage::open(&build.spec.staging_root, &build.request.s3)?;
    let chunks = build.spec.chunk_count();
    let done: std::collections::HashSet<String> = staging.list("parts/")?.into_iter().collect();
    let todo: Vec<usize> = (0..chunks)
        .filter(|c| !done.contains(&part_key(*c)))
        .collect();
    let reused = chunks - todo.len();
    let bar = &build.request.progress;
    bar.set_length(build.spec.photos.len() as u64);
    bar.set_position(build.registered_photos as u64);
    bar.reset_eta();
    let mut registrar = Registrar::resume(build, client)?;
    let spec = BuildSpec {
        chunks: todo,
        ..build.spec.clone()
    };
    let finished = std::sync::atomic::AtomicBool::new(false);
    // The runner stays on this thread (runners need not be `Sync`); the registrar follows the
    // parts beside it.
    let (output, followed) = std::thread::scope(|scope| {
        let registering = scope.spawn(|| {
            let followed = registrar.follow(&|| finished.load(std::sync::atomic::Ordering::SeqCst));
            (registrar, followed)
        });
        let output = if spec.chunks.is_empty() {
            Ok(BuildOutput::default())
        } else {
            runner.build(spec, &BuildContext(build.build_id))
        };
        finished.store(true, std::sync::atomic::Ordering::SeqCst);
        let followed = registering
            .join()
            .map_err(|_| anyhow!("the build's registering thread panicked"));
        (output, followed)
    });
    let (mut registrar, all_in) = followed?;
    let output = output?;
    if !all_in? {
        bail!(
            "the workers finished, but chunk {} has no part under {}",
            registrar.registered_chunks(),
            staging.root_uri()
        );
    }
    registrar.close()?;
    bar.finish_and_clear();
    Ok(Attempt {
        output,
        reused,
        register_secs: registrar.busy_secs(),
    })
}

/// What one command's run of a build did, for its report.
struct Attempt {
    /// The workers' output.
    output: BuildOutput,
    /// Chunks an earlier attempt had written.
    reused: usize,
    /// Seconds the driver spent registering.
    register_secs: f64,
}

/// Registers the version (when the build found faces), its faces and photos in one transaction,
/// marks the build FINISHED, and deletes its staging area.
fn finish(
    client: &mut postgres::Client,
    build: &Build<'_>,
    resumed: bool,
    attempt: Attempt,
    runner: &dyn Runner,
    started: Instant,
) -> Result<BuildReport> {
    let request = build.request;
    let counts = builds::counts(client, build.build_id)?;
    let shards = builds::written_shards(client, build.build_id)?;
    let mut tx = client.transaction()?;
    datasets::lock_name(&mut tx, &request.name)?;
    let dataset = if counts.faces == 0 {
        None
    } else {
        if datasets::next_version(&mut tx, &request.name)? != build.version {
            bail!(
                "{}@v{} was registered by someone else while build {} ran",
                request.name,
                build.version,
                build.build_id
            );
        }
        let base = base_manifest(datasets::latest(&mut tx, &request.name)?, &request.s3)?;
        let mut writer = DatasetWriter::create(
            build.output_storage.clone(),
            &request.name,
            build.version,
            DIM,
            EMBEDDER,
            request.shard_rows,
        )?;
        if let Some(base) = &base {
            writer.include_version(base)?;
        }
        let placed: u64 = shards.iter().map(|(_, s)| s.rows).sum();
        if placed != counts.faces {
            bail!(
                "build {} registered {} faces but its shards hold {placed}",
                build.build_id,
                counts.faces
            );
        }
        for (_, shard) in shards {
            writer.add_shard(shard)?;
        }
        let manifest = writer.finish()?;
        Some(datasets::register_version(
            &mut tx,
            &build.output_storage,
            &manifest,
            request.make_current,
        )?)
    };
    let dataset_id = dataset.as_ref().map(|row| row.id);
    builds::publish(&mut tx, build.build_id, &request.name, dataset_id)?;
    builds::finish(&mut tx, build.build_id, dataset_id)?;
    tx.commit()?;
    // The parts served their purpose; a failure to delete them costs only space.
    if let Err(e) = Storage::open(&build.spec.staging_root, &request.s3)
        .map_err(anyhow::Error::from)
        .and_then(|s| delete_all(&s))
    {
        tracing::warn!("could not delete {}: {e:#}", build.spec.staging_root);
    }
    // A bounded list: a corpus of millions of photos may hold millions without a face, which
    // the report would hold in memory and print; the database keeps them all.
    let failures = builds::failures(client, build.build_id, REPORTED_FAILURES)?
        .into_iter()
        .map(|f| PhotoFailure {
            image: f.image,
            sha256: f.sha256,
            stage: f.stage,
            message: f.message,
        })
        .collect();
    Ok(BuildReport {
        build_id: build.build_id,
        photos: build.photos.len(),
        encoded: counts.encoded,
        faces: counts.faces,
        known: counts.known,
        duplicates: counts.duplicates,
        failed: counts.failed,
        failures,
        dataset: dataset.as_ref().map(DatasetRow::label),
        runner: runner.label(),
        workers: runner.capacity().threads,
        resumed,
        chunks_reused: attempt.reused,
        photos_encoded_now: attempt.output.photos_encoded,
        dataflow_secs: attempt.output.elapsed_secs,
        stage_secs: attempt.output.stage_secs,
        register_secs: attempt.register_secs,
        total_secs: started.elapsed().as_secs_f64(),
    })
}
