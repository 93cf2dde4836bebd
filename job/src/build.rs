//! The dataset-build dataflow: photos → encoded faces, spread over timely workers, written as
//! *parts* a driver turns into a dataset version (ARCHITECTURE.md: Building from photos).
//!
//! The driver cuts the sorted photo list into chunks of [`BuildSpec::chunk_photos`] photos and
//! names the chunks still to encode ([`BuildSpec::chunks`]); worker `w` of `W` (over every
//! process of the cluster) takes the chunks at positions `w, w + W, …` of that list. For each of
//! its chunks a worker reads, hashes, decodes, detects and encodes the photos — skipping photos
//! whose sha256 the dataset already holds — with its own dlib models (they are `Send` but not
//! `Sync`), and writes the chunk's [`Part`] to the build's staging area in one `put`, so a part
//! is either complete or absent. A photo that fails is a result like any other; the build
//! carries on. Only a failure of the machinery (models that cannot be loaded, a part that cannot
//! be written) fails the build, and then the parts already written stay for the next attempt.
//!
//! Nothing here numbers faces or writes shards: a photo's result depends on its bytes alone, so
//! the parts — and the version the driver makes of them, in photo order — are the same whatever
//! the runner, the number of processes and threads, or the interruptions on the way.

use facematch_datasets::face::timings::timed;
use facematch_datasets::face::{
    DecodeLimits, EncodedPhoto, Encoder, EncoderOptions, ModelPaths, StageSecs, decode_image,
    use_one_blas_thread,
};
use facematch_datasets::shard::sha256_hex;
use facematch_datasets::{FaceSource, S3Options, Storage};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Exchange, Inspect, ToStream};

/// One photo to build from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhotoTask {
    /// Key of the photo under the photo root.
    pub key: String,
    /// Source its faces get.
    pub source: FaceSource,
}

/// Everything the workers of a build need; serialisable so other processes can get it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildSpec {
    /// Storage root of the photos (folder or `s3://bucket/prefix`).
    pub photos_root: String,
    /// The photos, in the order that numbers their faces.
    pub photos: Vec<PhotoTask>,
    /// sha256 of photos the dataset already holds (skipped).
    pub known_sha256: Vec<String>,
    /// How to reach S3.
    pub s3: S3Options,
    /// The driver's folder with dlib's models; a worker on a host without it uses its own (the
    /// worker bundle's models, `ModelPaths::locate_preferring`).
    pub models_dir: PathBuf,
    /// Detection and encoding settings.
    pub encoder: EncoderOptions,
    /// Storage root of the build's staging area, where the parts go.
    pub staging_root: String,
    /// Photos per chunk (the last chunk may hold fewer).
    pub chunk_photos: usize,
    /// The chunks to encode in this attempt (those without a part yet), ascending.
    pub chunks: Vec<usize>,
}

impl BuildSpec {
    /// Number of chunks the photo list makes.
    pub fn chunk_count(&self) -> usize {
        self.photos.len().div_ceil(self.chunk_photos.max(1))
    }

    /// Positions in [`BuildSpec::photos`] of chunk `chunk`'s photos.
    pub fn chunk_range(&self, chunk: usize) -> Range<usize> {
        let size = self.chunk_photos.max(1);
        let start = (chunk * size).min(self.photos.len());
        start..(start + size).min(self.photos.len())
    }
}

/// Key of chunk `chunk`'s part under the staging root.
pub fn part_key(chunk: usize) -> String {
    format!("parts/chunk-{chunk:07}.json")
}

/// What one chunk's photos became: the unit a build writes, resumes from and registers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// The chunk.
    pub chunk: usize,
    /// (position in [`BuildSpec::photos`], outcome) of each of its photos, in order.
    pub photos: Vec<(usize, PhotoOutcome)>,
}

impl Part {
    /// Reads chunk `chunk`'s part from the staging area; `None` while it is not written.
    pub fn read(staging: &Storage, chunk: usize) -> Result<Option<Part>, String> {
        let key = part_key(chunk);
        if !staging.exists(&key).map_err(|e| e.to_string())? {
            return Ok(None);
        }
        let bytes = staging.get(&key).map_err(|e| e.to_string())?;
        let part: Part = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: unreadable part: {e}", staging.uri_of(&key)))?;
        if part.chunk != chunk {
            return Err(format!(
                "{}: holds chunk {}, not {chunk}",
                staging.uri_of(&key),
                part.chunk
            ));
        }
        Ok(Some(part))
    }
}

/// Where in the pipeline a photo failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureStage {
    /// It could not be read from storage.
    Read,
    /// It is not a usable image (empty, not an image, truncated, corrupt, too large).
    Decode,
    /// It decoded but holds no face (reported for an `Encoded` photo without faces).
    NoFace,
    /// The worker's models could not be loaded (fails the whole build).
    Models,
}

impl FailureStage {
    /// Short name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureStage::Read => "read",
            FailureStage::Decode => "decode",
            FailureStage::NoFace => "no_face",
            FailureStage::Models => "models",
        }
    }
}

/// What became of one photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PhotoOutcome {
    /// Encoded. No face at all is a [`FailureStage::NoFace`] failure for the report, kept here
    /// so the photo is remembered as known.
    Encoded(EncodedPhoto),
    /// The dataset already holds this photo.
    Known {
        /// Its sha256.
        sha256: String,
    },
    /// It failed; see the message.
    Failed {
        /// Its sha256, when it could be read.
        sha256: Option<String>,
        /// Where it failed.
        stage: FailureStage,
        /// What was wrong, naming the photo.
        message: String,
    },
}

/// What a build attempt's workers did (from worker 0 of process 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildOutput {
    /// Parts written in this attempt.
    pub chunks: usize,
    /// Photos decoded and run through the detector in this attempt (known photos and photos
    /// that failed to read or decode are not counted).
    pub photos_encoded: u64,
    /// Wall time of the dataflow, in seconds.
    pub elapsed_secs: f64,
    /// Where the workers' time went, summed over every worker of the cluster.
    #[serde(default)]
    pub stage_secs: StageSecs,
}

/// Why a build failed as a whole (single photos failing do not fail it).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A part could not be written, or the models could not be loaded.
    #[error("{0}")]
    Fatal(String),
    /// The timely runtime failed.
    #[error("dataflow failed: {0}")]
    Runtime(String),
}

/// One chunk done by a worker: the photos it encoded and the seconds each stage took, or why the
/// build cannot go on.
type ChunkDone = Result<(u64, StageSecs), String>;

/// Runs the build on the timely workers of `config`; worker 0 of process 0 returns the output.
pub fn run_build(
    spec: Arc<BuildSpec>,
    config: timely::Config,
) -> Result<Option<BuildOutput>, BuildError> {
    run_build_connected(spec, config, || {})
}

/// [`run_build`], calling `connected` once timely has connected to every other process.
pub fn run_build_connected(
    spec: Arc<BuildSpec>,
    config: timely::Config,
    connected: impl FnOnce(),
) -> Result<Option<BuildOutput>, BuildError> {
    if spec.chunk_photos == 0 {
        return Err(BuildError::Fatal(
            "chunks must hold at least 1 photo".into(),
        ));
    }
    let started = Instant::now();
    let guards = timely::execute(config, move |worker| build_worker(worker, &spec))
        .map_err(BuildError::Runtime)?;
    connected();
    let mut output = None;
    for result in guards.join() {
        if let Some(out) = result.map_err(BuildError::Runtime)? {
            let mut out = out?;
            out.elapsed_secs = started.elapsed().as_secs_f64();
            output = Some(out);
        }
    }
    Ok(output)
}

fn build_worker(
    worker: &mut timely::worker::Worker,
    spec: &Arc<BuildSpec>,
) -> Option<Result<BuildOutput, BuildError>> {
    let (index, peers) = (worker.index(), worker.peers());
    let mine: Vec<usize> = spec
        .chunks
        .iter()
        .copied()
        .skip(index)
        .step_by(peers)
        .collect();
    let collected = Arc::new(Mutex::new(Vec::<ChunkDone>::new()));
    let sink = collected.clone();
    let encode_spec = spec.clone();

    worker.dataflow::<u64, _, _>(move |scope| {
        let mut encoder = PhotoEncoder::new(encode_spec);
        mine.to_stream(scope)
            .map(move |chunk| encoder.encode_chunk(chunk))
            .exchange(|_| 0)
            .inspect(move |done: &ChunkDone| sink.lock().expect("build sink").push(done.clone()));
    });

    while worker.step_or_park(None) {}

    if index != 0 {
        return None;
    }
    let done = std::mem::take(&mut *collected.lock().expect("build sink"));
    let mut output = BuildOutput::default();
    let mut fatal = Vec::new();
    for chunk in done {
        match chunk {
            Ok((encoded, secs)) => {
                output.chunks += 1;
                output.photos_encoded += encoded;
                output.stage_secs.add(&secs);
            }
            Err(e) => fatal.push(e),
        }
    }
    if !fatal.is_empty() {
        fatal.sort();
        fatal.dedup();
        return Some(Err(BuildError::Fatal(fatal.join("; "))));
    }
    Some(Ok(output))
}

/// One worker's encoding stage: its storage handles and its own models, loaded on first use.
struct PhotoEncoder {
    spec: Arc<BuildSpec>,
    known: HashSet<String>,
    photos: Option<Result<Storage, String>>,
    staging: Option<Result<Storage, String>>,
    encoder: Option<Result<Encoder, String>>,
    /// Set by the first fatal failure: the chunks after it are not tried.
    broken: Option<String>,
    /// Seconds of the chunk being encoded, by stage.
    secs: StageSecs,
}

impl PhotoEncoder {
    fn new(spec: Arc<BuildSpec>) -> PhotoEncoder {
        PhotoEncoder {
            known: spec.known_sha256.iter().cloned().collect(),
            spec,
            photos: None,
            staging: None,
            encoder: None,
            broken: None,
            secs: StageSecs::default(),
        }
    }

    /// Encodes chunk `chunk` and writes its part.
    fn encode_chunk(&mut self, chunk: usize) -> ChunkDone {
        if let Some(broken) = &self.broken {
            return Err(broken.clone());
        }
        let done = self.try_encode_chunk(chunk);
        if let Err(e) = &done {
            self.broken = Some(e.clone());
        }
        done
    }

    fn try_encode_chunk(&mut self, chunk: usize) -> ChunkDone {
        let mut part = Part {
            chunk,
            photos: Vec::new(),
        };
        let mut encoded = 0;
        for index in self.spec.chunk_range(chunk) {
            let outcome = self.encode(index);
            match &outcome {
                PhotoOutcome::Failed {
                    stage: FailureStage::Models,
                    message,
                    ..
                } => return Err(message.clone()),
                PhotoOutcome::Encoded(_) => encoded += 1,
                _ => {}
            }
            part.photos.push((index, outcome));
        }
        let staging = self
            .staging
            .get_or_insert_with(|| {
                Storage::open(&self.spec.staging_root, &self.spec.s3).map_err(|e| e.to_string())
            })
            .clone()?;
        let key = part_key(chunk);
        let mut secs = std::mem::take(&mut self.secs);
        if let Some(Ok(encoder)) = &self.encoder {
            secs.add(&encoder.take_timings());
        }
        timed(&mut secs.write, || {
            let bytes = serde_json::to_vec(&part).map_err(|e| e.to_string())?;
            staging
                .put(&key, bytes.into())
                .map_err(|e| format!("cannot write {}: {e}", staging.uri_of(&key)))
        })?;
        Ok((encoded, secs))
    }

    fn encode(&mut self, index: usize) -> PhotoOutcome {
        let task = &self.spec.photos[index];
        let failed = |sha256: Option<String>, stage, message: String| PhotoOutcome::Failed {
            sha256,
            stage,
            message,
        };
        let storage = self
            .photos
            .get_or_insert_with(|| {
                Storage::open(&self.spec.photos_root, &self.spec.s3).map_err(|e| e.to_string())
            })
            .clone();
        let name = match &storage {
            Ok(s) => s.uri_of(&task.key),
            Err(_) => task.key.clone(),
        };
        let read = timed(&mut self.secs.read, || {
            storage.and_then(|s| s.get(&task.key).map_err(|e| e.to_string()))
        });
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => return failed(None, FailureStage::Read, e),
        };
        let sha256 = timed(&mut self.secs.decode, || sha256_hex(&bytes));
        if self.known.contains(&sha256) {
            return PhotoOutcome::Known { sha256 };
        }
        // Decoded before the models load, so a build of known and broken photos loads none.
        let decoded = timed(&mut self.secs.decode, || {
            decode_image(&name, &bytes, DecodeLimits::default())
        });
        let image = match decoded {
            Ok(image) => image,
            Err(e) => return failed(Some(sha256), FailureStage::Decode, e.to_string()),
        };
        let (models_dir, options) = (&self.spec.models_dir, self.spec.encoder);
        let encoder = match self.encoder.get_or_insert_with(|| {
            // The workers are the parallelism; a multi-threaded BLAS under each would oversubscribe.
            use_one_blas_thread();
            Encoder::load(&ModelPaths::locate_preferring(models_dir), options)
                .map_err(|e| e.to_string())
        }) {
            Ok(encoder) => encoder,
            Err(e) => return failed(Some(sha256), FailureStage::Models, e.clone()),
        };
        // A photo without a face stays `Encoded` (with no faces) so the dataset remembers it
        // and the next build skips it; it is reported as a failure all the same.
        PhotoOutcome::Encoded(EncodedPhoto::encode(encoder, sha256, &image))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(photos: usize, chunk_photos: usize) -> BuildSpec {
        BuildSpec {
            photos_root: "/photos".into(),
            photos: (0..photos)
                .map(|i| PhotoTask {
                    key: format!("{i}.jpg"),
                    source: FaceSource::Actor,
                })
                .collect(),
            known_sha256: Vec::new(),
            s3: S3Options::default(),
            models_dir: PathBuf::from("/models"),
            encoder: EncoderOptions::default(),
            staging_root: "/staging".into(),
            chunk_photos,
            chunks: Vec::new(),
        }
    }

    #[test]
    fn chunks_cover_every_photo_once_in_order() {
        for (photos, size) in [(0, 3), (1, 3), (7, 3), (9, 3), (5, 1), (4, 10)] {
            let spec = spec(photos, size);
            let covered: Vec<usize> = (0..spec.chunk_count())
                .flat_map(|c| spec.chunk_range(c))
                .collect();
            assert_eq!(
                covered,
                (0..photos).collect::<Vec<_>>(),
                "{photos} by {size}"
            );
            assert!((0..spec.chunk_count()).all(|c| !spec.chunk_range(c).is_empty()));
        }
        assert_eq!(part_key(12), "parts/chunk-0000012.json");
    }

    #[test]
    fn a_part_reads_back_as_written_and_a_misplaced_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Storage::open(dir.path().to_str().unwrap(), &S3Options::default()).unwrap();
        assert_eq!(Part::read(&staging, 3), Ok(None));
        let part = Part {
            chunk: 3,
            photos: vec![(
                6,
                PhotoOutcome::Known {
                    sha256: "ab".into(),
                },
            )],
        };
        let bytes = serde_json::to_vec(&part).unwrap();
        staging.put(&part_key(3), bytes.clone().into()).unwrap();
        assert_eq!(Part::read(&staging, 3), Ok(Some(part)));
        staging.put(&part_key(4), bytes.into()).unwrap();
        let err = Part::read(&staging, 4).unwrap_err();
        assert!(err.contains("holds chunk 3, not 4"), "{err}");
    }
}
