//! The dataset-build dataflow: photos → faces → Parquet shards, spread over timely workers.
//!
//! 1. **Encode**: worker `w` of `W` takes photos `w, w + W, …` of the sorted photo list, loads its
//!    own dlib models (they are `Send` but not `Sync`), and reads, hashes, decodes, detects and
//!    encodes each photo — skipping photos whose sha256 the dataset already holds. A photo that
//!    fails is a result like any other; the build carries on.
//! 2. **Place**: every worker receives every photo's (sha256, face count) by broadcast; once all
//!    are in, each computes the same layout: the first copy of a sha256 wins (later copies are
//!    duplicates), faces are numbered in photo order from `first_face_id`, and the build's k-th
//!    face goes to shard `k / shard_rows`.
//! 3. **Write**: faces are exchanged by shard; worker `s mod W` writes shard `s`.
//! 4. **Report**: photo results and written shards go to worker 0, which returns them.
//!
//! Face ids and shard contents therefore depend on the photo list alone, never on `W`.

use facematch_datasets::face::{
    DecodeLimits, EncodedPhoto, Encoder, EncoderOptions, ModelPaths, decode_image,
    use_one_blas_thread,
};
use facematch_datasets::shard::{encode_shard, sha256_hex};
use facematch_datasets::{FaceRecord, FaceSource, S3Options, ShardInfo, Storage};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::{Broadcast, Filter, Map};
use timely::dataflow::operators::{Concat, Exchange, Inspect, ToStream};

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
    /// Folder with dlib's models.
    pub models_dir: PathBuf,
    /// Detection and encoding settings.
    pub encoder: EncoderOptions,
    /// Storage root the new shards go to.
    pub output_root: String,
    /// Dataset name.
    pub name: String,
    /// The version being built.
    pub version: u32,
    /// Id of the build's first new face.
    pub first_face_id: i64,
    /// Faces per shard.
    pub shard_rows: usize,
    /// Number of the first new shard file (after the shards carried over from the base version).
    pub first_shard: usize,
}

impl BuildSpec {
    /// Key of the `n`-th new shard of this build.
    pub fn shard_key(&self, n: usize) -> String {
        format!(
            "{}/v{}/shard-{:05}.parquet",
            self.name,
            self.version,
            self.first_shard + n
        )
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
    /// Encoded; its faces are in the new shards (ids from [`PhotoResult::first_face_id`]). No
    /// face at all is a [`FailureStage::NoFace`] failure for the report, kept here so the photo
    /// is remembered as known.
    Encoded(EncodedPhoto),
    /// The dataset already holds this photo.
    Known {
        /// Its sha256.
        sha256: String,
    },
    /// Another photo of this build has the same bytes.
    Duplicate {
        /// Its sha256.
        sha256: String,
        /// Index of the copy that was kept.
        of: usize,
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

impl PhotoOutcome {
    fn sha256(&self) -> Option<&str> {
        match self {
            PhotoOutcome::Encoded(p) => Some(&p.sha256),
            PhotoOutcome::Known { sha256 } | PhotoOutcome::Duplicate { sha256, .. } => Some(sha256),
            PhotoOutcome::Failed { sha256, .. } => sha256.as_deref(),
        }
    }

    fn face_count(&self) -> usize {
        match self {
            PhotoOutcome::Encoded(p) => p.faces.len(),
            _ => 0,
        }
    }
}

/// One photo's result, as worker 0 returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhotoResult {
    /// Position in [`BuildSpec::photos`].
    pub index: usize,
    /// What became of it.
    pub outcome: PhotoOutcome,
    /// Id of its first face (the others follow consecutively).
    pub first_face_id: i64,
}

/// What a build returns (from worker 0).
#[derive(Debug, Clone, Default)]
pub struct BuildOutput {
    /// Every photo's result, in photo order.
    pub photos: Vec<PhotoResult>,
    /// The new shards, in order.
    pub shards: Vec<ShardInfo>,
    /// Faces written.
    pub faces: u64,
    /// Wall time of the dataflow.
    pub elapsed: Duration,
}

/// Why a build failed as a whole (single photos failing do not fail it).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A shard could not be written, or the models could not be loaded.
    #[error("{0}")]
    Fatal(String),
    /// The timely runtime failed.
    #[error("dataflow failed: {0}")]
    Runtime(String),
}

/// Live counters for a progress bar (shared by the workers of this process).
#[derive(Debug, Default)]
pub struct BuildProgress {
    /// Photos finished (encoded, skipped or failed).
    pub done: AtomicU64,
    /// Faces found.
    pub faces: AtomicU64,
    /// Photos that failed.
    pub failed: AtomicU64,
    /// Photos skipped as already known.
    pub skipped: AtomicU64,
}

/// Everything that flows between the stages.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum BuildItem {
    Photo(PhotoResult),
    Face(usize, FaceRecord),
    Shard(usize, Result<ShardInfo, String>),
}

/// Runs the build on the timely workers of `config`; worker 0 of process 0 returns the output.
pub fn run_build(
    spec: Arc<BuildSpec>,
    config: timely::Config,
    progress: Arc<BuildProgress>,
) -> Result<Option<BuildOutput>, BuildError> {
    if spec.shard_rows == 0 {
        return Err(BuildError::Fatal("shard size must be at least 1".into()));
    }
    let started = Instant::now();
    let guards = timely::execute(config, move |worker| {
        build_worker(worker, &spec, progress.clone())
    })
    .map_err(BuildError::Runtime)?;
    let mut output = None;
    for result in guards.join() {
        if let Some(out) = result.map_err(BuildError::Runtime)? {
            let mut out = out?;
            out.elapsed = started.elapsed();
            output = Some(out);
        }
    }
    Ok(output)
}

fn build_worker(
    worker: &mut timely::worker::Worker,
    spec: &Arc<BuildSpec>,
    progress: Arc<BuildProgress>,
) -> Option<Result<BuildOutput, BuildError>> {
    let (index, peers) = (worker.index(), worker.peers());
    let my_photos: Vec<usize> = (index..spec.photos.len()).step_by(peers).collect();
    let collected = Arc::new(Mutex::new(Vec::<BuildItem>::new()));
    let sink = collected.clone();
    let (encode_spec, place_spec, write_spec) = (spec.clone(), spec.clone(), spec.clone());

    worker.dataflow::<u64, _, _>(move |scope| {
        let mut photo_encoder = PhotoEncoder::new(encode_spec);
        let encoded = my_photos
            .to_stream(scope)
            .map(move |i| (i, photo_encoder.encode(i, &progress)));
        let summaries = encoded
            .clone()
            .map(|(i, outcome): (usize, PhotoOutcome)| {
                let sha = outcome.sha256().map(str::to_string);
                (i, sha, outcome.face_count())
            })
            .broadcast();

        let placed = encoded
            .binary_frontier(summaries, Pipeline, Pipeline, "Place", move |cap, _| {
                let mut cap = Some(cap);
                let mut mine = Vec::new();
                let mut all = Vec::new();
                move |(local, local_frontier), (summaries, summary_frontier), output| {
                    local.for_each(|_, data| mine.append(data));
                    summaries.for_each(|_, data| all.append(data));
                    // Every worker's summaries are needed before anyone can number a face.
                    if local_frontier.is_empty()
                        && summary_frontier.is_empty()
                        && let Some(cap) = cap.take()
                    {
                        let placed = place(&place_spec, std::mem::take(&mut all), mine.drain(..));
                        output.session(&cap).give_iterator(placed.into_iter());
                    }
                }
            })
            .container::<Vec<BuildItem>>();

        let written = placed
            .clone()
            .filter(|item| matches!(item, BuildItem::Face(..)))
            .exchange(move |item| match item {
                BuildItem::Face(shard, _) => (*shard % peers) as u64,
                _ => 0,
            })
            .unary_frontier(Pipeline, "WriteShards", move |cap, _| {
                let mut cap = Some(cap);
                let mut shards = ShardBuffers::default();
                move |(input, frontier), output| {
                    input.for_each(|_, data| shards.add(data.drain(..)));
                    if frontier.is_empty()
                        && let Some(cap) = cap.take()
                    {
                        let written = shards.write_all(&write_spec);
                        output.session(&cap).give_iterator(written.into_iter());
                    }
                }
            })
            .container::<Vec<BuildItem>>();

        placed
            .filter(|item| matches!(item, BuildItem::Photo(_)))
            .concat(written)
            .exchange(|_| 0)
            .inspect(move |item: &BuildItem| sink.lock().expect("build sink").push(item.clone()));
    });

    while worker.step_or_park(None) {}

    if index != 0 {
        return None;
    }
    let items = std::mem::take(&mut *collected.lock().expect("build sink"));
    Some(collect_output(spec, items))
}

/// The faces of the shards one worker writes, gathered until its input is complete.
#[derive(Default)]
struct ShardBuffers(BTreeMap<usize, Vec<FaceRecord>>);

impl ShardBuffers {
    fn add(&mut self, items: impl Iterator<Item = BuildItem>) {
        for item in items {
            if let BuildItem::Face(shard, record) = item {
                self.0.entry(shard).or_default().push(record);
            }
        }
    }

    /// Writes every shard, through one storage handle (one S3 client) for all of them.
    fn write_all(&mut self, spec: &BuildSpec) -> Vec<BuildItem> {
        let storage = Storage::open(&spec.output_root, &spec.s3).map_err(|e| e.to_string());
        std::mem::take(&mut self.0)
            .into_iter()
            .map(|(shard, records)| {
                let written = storage
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|s| write_shard(spec, s, shard, records));
                BuildItem::Shard(shard, written)
            })
            .collect()
    }
}

/// Worker 0's view of the finished dataflow, checked for fatal failures.
fn collect_output(spec: &BuildSpec, items: Vec<BuildItem>) -> Result<BuildOutput, BuildError> {
    let mut output = BuildOutput::default();
    let mut shards = BTreeMap::new();
    let mut fatal = Vec::new();
    for item in items {
        match item {
            BuildItem::Photo(photo) => {
                if let PhotoOutcome::Failed {
                    stage: FailureStage::Models,
                    message,
                    ..
                } = &photo.outcome
                {
                    fatal.push(message.clone());
                }
                output.photos.push(photo);
            }
            BuildItem::Shard(n, Ok(info)) => {
                output.faces += info.rows;
                shards.insert(n, info);
            }
            BuildItem::Shard(n, Err(e)) => fatal.push(format!("shard {}: {e}", spec.shard_key(n))),
            BuildItem::Face(..) => {}
        }
    }
    if !fatal.is_empty() {
        fatal.sort();
        fatal.dedup();
        return Err(BuildError::Fatal(fatal.join("; ")));
    }
    output.photos.sort_by_key(|p| p.index);
    output.shards = shards.into_values().collect();
    Ok(output)
}

/// One worker's encoding stage: its storage handle and its own models, loaded on first use.
struct PhotoEncoder {
    spec: Arc<BuildSpec>,
    known: HashSet<String>,
    storage: Option<Result<Storage, String>>,
    encoder: Option<Result<Encoder, String>>,
}

impl PhotoEncoder {
    fn new(spec: Arc<BuildSpec>) -> PhotoEncoder {
        PhotoEncoder {
            known: spec.known_sha256.iter().cloned().collect(),
            spec,
            storage: None,
            encoder: None,
        }
    }

    fn encode(&mut self, index: usize, progress: &BuildProgress) -> PhotoOutcome {
        let outcome = self.try_encode(index);
        match &outcome {
            PhotoOutcome::Encoded(p) if !p.faces.is_empty() => {
                progress
                    .faces
                    .fetch_add(p.faces.len() as u64, Ordering::Relaxed);
            }
            PhotoOutcome::Encoded(_) | PhotoOutcome::Failed { .. } => {
                progress.failed.fetch_add(1, Ordering::Relaxed);
            }
            PhotoOutcome::Known { .. } | PhotoOutcome::Duplicate { .. } => {
                progress.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
        progress.done.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    fn try_encode(&mut self, index: usize) -> PhotoOutcome {
        let task = &self.spec.photos[index];
        let failed = |sha256: Option<String>, stage, message: String| PhotoOutcome::Failed {
            sha256,
            stage,
            message,
        };
        let storage = self
            .storage
            .get_or_insert_with(|| {
                Storage::open(&self.spec.photos_root, &self.spec.s3).map_err(|e| e.to_string())
            })
            .clone();
        let name = match &storage {
            Ok(s) => s.uri_of(&task.key),
            Err(_) => task.key.clone(),
        };
        let bytes = match storage.and_then(|s| s.get(&task.key).map_err(|e| e.to_string())) {
            Ok(bytes) => bytes,
            Err(e) => return failed(None, FailureStage::Read, e),
        };
        let sha256 = sha256_hex(&bytes);
        if self.known.contains(&sha256) {
            return PhotoOutcome::Known { sha256 };
        }
        // Decoded before the models load, so a build of known and broken photos loads none.
        let image = match decode_image(&name, &bytes, DecodeLimits::default()) {
            Ok(image) => image,
            Err(e) => return failed(Some(sha256), FailureStage::Decode, e.to_string()),
        };
        let (models_dir, options) = (&self.spec.models_dir, self.spec.encoder);
        let encoder = match self.encoder.get_or_insert_with(|| {
            // The workers are the parallelism; a multi-threaded BLAS under each would oversubscribe.
            use_one_blas_thread();
            Encoder::load(&ModelPaths::locate(Some(models_dir)), options).map_err(|e| e.to_string())
        }) {
            Ok(encoder) => encoder,
            Err(e) => return failed(Some(sha256), FailureStage::Models, e.clone()),
        };
        // A photo without a face stays `Encoded` (with no faces) so the dataset remembers it
        // and the next build skips it; it is reported as a failure all the same.
        PhotoOutcome::Encoded(EncodedPhoto::encode(encoder, sha256, &image))
    }
}

/// The layout every worker computes alike from all photos' summaries; yields this worker's photo
/// results (with their face ids) and faces (with their shard).
fn place(
    spec: &BuildSpec,
    mut summaries: Vec<(usize, Option<String>, usize)>,
    mine: impl Iterator<Item = (usize, PhotoOutcome)>,
) -> Vec<BuildItem> {
    summaries.sort_by_key(|s| s.0);
    let mut first_copy: HashMap<&str, usize> = HashMap::new();
    let mut first_face = HashMap::new();
    let mut duplicates = HashMap::new();
    let mut next = 0usize;
    for (index, sha, faces) in &summaries {
        if let Some(sha) = sha {
            if let Some(&of) = first_copy.get(sha.as_str()) {
                duplicates.insert(*index, of);
                continue;
            }
            first_copy.insert(sha, *index);
        }
        first_face.insert(*index, next);
        next += faces;
    }
    let mut items = Vec::new();
    for (index, outcome) in mine {
        let outcome = match (duplicates.get(&index), outcome) {
            (Some(&of), outcome) => PhotoOutcome::Duplicate {
                sha256: outcome.sha256().unwrap_or_default().to_string(),
                of,
            },
            (None, outcome) => outcome,
        };
        let position = first_face.get(&index).copied().unwrap_or(next);
        let first_face_id = spec.first_face_id + position as i64;
        if let PhotoOutcome::Encoded(photo) = &outcome {
            let source = spec.photos[index].source;
            for (k, face) in photo.faces.iter().enumerate() {
                items.push(BuildItem::Face(
                    (position + k) / spec.shard_rows,
                    FaceRecord {
                        face_id: first_face_id + k as i64,
                        source,
                        encoding: face.encoding.clone(),
                    },
                ));
            }
        }
        items.push(BuildItem::Photo(PhotoResult {
            index,
            outcome,
            first_face_id,
        }));
    }
    items
}

/// Writes shard `n` of the build.
fn write_shard(
    spec: &BuildSpec,
    storage: &Storage,
    n: usize,
    mut records: Vec<FaceRecord>,
) -> Result<ShardInfo, String> {
    records.sort_by_key(|r| r.face_id);
    let dim = records.first().map_or(0, |r| r.encoding.len());
    for record in &records {
        record.validate(dim).map_err(|e| e.to_string())?;
    }
    let data = encode_shard(&records, dim).map_err(|e| e.to_string())?;
    let key = spec.shard_key(n);
    let info = ShardInfo {
        path: key.clone(),
        rows: records.len() as u64,
        bytes: data.len() as u64,
        sha256: sha256_hex(&data),
    };
    storage.put(&key, data).map_err(|e| e.to_string())?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use facematch_datasets::face::{DetectedFace, FaceBox};

    fn spec(photos: usize) -> BuildSpec {
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
            output_root: "/out".into(),
            name: "faces".into(),
            version: 3,
            first_face_id: 1000,
            shard_rows: 2,
            first_shard: 4,
        }
    }

    fn encoded(sha: &str, faces: usize) -> PhotoOutcome {
        let face = |k: usize| DetectedFace {
            bbox: FaceBox {
                left: k as i64,
                top: 0,
                right: 10,
                bottom: 10,
            },
            encoding: vec![k as f32 + 1.0; 4],
            detector: facematch_datasets::face::Detector::Hog,
        };
        PhotoOutcome::Encoded(EncodedPhoto {
            sha256: sha.into(),
            width: 20,
            height: 20,
            faces: (0..faces).map(face).collect(),
        })
    }

    /// Photo 0 has 2 faces, 1 failed, 2 repeats 0, 3 has 3 faces.
    fn outcomes() -> Vec<(usize, PhotoOutcome)> {
        vec![
            (0, encoded("a", 2)),
            (
                1,
                PhotoOutcome::Failed {
                    sha256: Some("b".into()),
                    stage: FailureStage::Decode,
                    message: "bad".into(),
                },
            ),
            (2, encoded("a", 2)),
            (3, encoded("c", 3)),
        ]
    }

    fn summaries() -> Vec<(usize, Option<String>, usize)> {
        outcomes()
            .into_iter()
            .map(|(i, o)| (i, o.sha256().map(str::to_string), o.face_count()))
            .collect()
    }

    /// (shard, face id) of every face and (photo, first id, duplicate-of) of every photo.
    type Layout = (Vec<(usize, i64)>, Vec<(usize, i64, Option<usize>)>);

    fn layout(items: Vec<BuildItem>) -> Layout {
        let (mut faces, mut photos) = (Vec::new(), Vec::new());
        for item in items {
            match item {
                BuildItem::Face(shard, record) => faces.push((shard, record.face_id)),
                BuildItem::Photo(p) => photos.push((
                    p.index,
                    p.first_face_id,
                    match p.outcome {
                        PhotoOutcome::Duplicate { of, .. } => Some(of),
                        _ => None,
                    },
                )),
                BuildItem::Shard(..) => {}
            }
        }
        faces.sort();
        photos.sort();
        (faces, photos)
    }

    #[test]
    fn the_layout_is_the_same_however_photos_are_spread_over_workers() {
        let spec = spec(4);
        let all = layout(place(&spec, summaries(), outcomes().into_iter()));
        assert_eq!(
            all.0,
            [(0, 1000), (0, 1001), (1, 1002), (1, 1003), (2, 1004)],
            "faces numbered in photo order, two per shard; the duplicate adds none"
        );
        assert_eq!(all.1[2].2, Some(0), "photo 2 repeats photo 0");
        for split in [vec![0, 2], vec![1, 3], vec![3], vec![0, 1, 2]] {
            let (mine, theirs): (Vec<_>, Vec<_>) =
                outcomes().into_iter().partition(|(i, _)| split.contains(i));
            let mut items = place(&spec, summaries(), mine.into_iter());
            items.extend(place(&spec, summaries(), theirs.into_iter()));
            assert_eq!(layout(items), all, "split {split:?}");
        }
        assert_eq!(spec.shard_key(1), "faces/v3/shard-00005.parquet");
    }
}
