//! The driver's half of a build: follows the parts the workers write and registers them in
//! photo order, one short transaction per chunk, while the workers go on encoding
//! (ARCHITECTURE.md: Building from photos).
//!
//! For each chunk, in order: the photos the dataset already holds are counted, the failures
//! recorded, a photo whose bytes an earlier photo of the build had is a duplicate, and the faces
//! of the others get ids — reserved under the face-id lock inside the chunk's transaction, which
//! lasts milliseconds — and a place in the build's k-th new shard (`k = position / shard_rows`,
//! positions counted over the build in photo order). A shard is written as soon as its last face
//! is registered. Memory holds one chunk and the open shard, whatever the corpus.
//!
//! Every chunk's transaction also moves the build's registered mark, so a driver that dies
//! resumes at the first chunk not registered, and the faces, ids and shards come out as an
//! uninterrupted build would have made them.

use super::build::Build;
use crate::store::builds::{self, BuildCounts, FailedPhoto, StagedImage};
use crate::store::faces::{self, PhotoFace};
use anyhow::{Context, Result, bail};
use facematch_datasets::writer::write_shard;
use facematch_datasets::{FaceRecord, Storage};
use facematch_job::build::{FailureStage, Part, PhotoOutcome};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// How often the driver looks for the next part while the workers run.
const POLL: Duration = Duration::from_millis(100);

/// Registration state of one build.
pub struct Registrar<'a> {
    build: &'a Build<'a>,
    client: &'a mut postgres::Client,
    staging: Storage,
    /// The first chunk not registered yet.
    next_chunk: usize,
    /// Faces registered so far (the next face's position in the build).
    faces: u64,
    /// Faces of the open shard (positions `faces - open.len() .. faces`).
    open: Vec<FaceRecord>,
    /// Counts registered so far, over every attempt.
    counts: BuildCounts,
    actors: BTreeMap<String, i64>,
    /// Seconds spent registering parts and writing shards (Postgres and the dataset store).
    busy_secs: f64,
}

impl<'a> Registrar<'a> {
    /// Picks the build up where its registered mark is: reloads the open shard and writes any
    /// full shard a dead driver registered but did not write.
    pub fn resume(build: &'a Build<'a>, client: &'a mut postgres::Client) -> Result<Self> {
        let staging = Storage::open(&build.spec.staging_root, &build.request.s3)?;
        let id = build.build_id;
        let faces = builds::staged_faces(client, id)?;
        let counts = builds::counts(client, id)?;
        let shard_rows = build.request.shard_rows as u64;
        let written: HashSet<usize> = builds::written_shards(client, id)?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let full = (faces / shard_rows) as usize;
        let mut registrar = Registrar {
            next_chunk: build
                .registered_photos
                .div_ceil(build.spec.chunk_photos.max(1)),
            build,
            client,
            staging,
            faces,
            open: Vec::new(),
            counts,
            actors: BTreeMap::new(),
            busy_secs: 0.0,
        };
        for shard in (0..full).filter(|n| !written.contains(n)) {
            let records = builds::shard_faces(registrar.client, id, shard)?;
            registrar.write_shard(shard, records)?;
        }
        if faces % shard_rows != 0 {
            registrar.open = builds::shard_faces(registrar.client, id, full)?;
        }
        Ok(registrar)
    }

    /// Chunks registered so far.
    pub fn registered_chunks(&self) -> usize {
        self.next_chunk
    }

    /// Seconds this driver spent registering parts and writing shards.
    pub fn busy_secs(&self) -> f64 {
        self.busy_secs
    }

    /// Registers every part as it appears, until all are in or `workers_done` says no more
    /// will come; true when every chunk is registered.
    pub fn follow(&mut self, workers_done: &dyn Fn() -> bool) -> Result<bool> {
        let chunks = self.build.spec.chunk_count();
        while self.next_chunk < chunks {
            // Read the flag before looking: a part written before the workers ended is seen.
            let done = workers_done();
            match Part::read(&self.staging, self.next_chunk).map_err(anyhow::Error::msg)? {
                Some(part) => {
                    let started = std::time::Instant::now();
                    self.register(part)?;
                    self.busy_secs += started.elapsed().as_secs_f64();
                }
                None if done => return Ok(false),
                None => std::thread::sleep(POLL),
            }
        }
        Ok(true)
    }

    /// Writes the last, partly filled shard.
    pub fn close(&mut self) -> Result<()> {
        if !self.open.is_empty() {
            let started = std::time::Instant::now();
            let shard = ((self.faces - 1) / self.build.request.shard_rows as u64) as usize;
            let records = std::mem::take(&mut self.open);
            self.write_shard(shard, records)?;
            self.busy_secs += started.elapsed().as_secs_f64();
        }
        Ok(())
    }

    /// Registers one chunk's part.
    fn register(&mut self, part: Part) -> Result<()> {
        let build = self.build;
        let range = build.spec.chunk_range(part.chunk);
        let indices: Vec<usize> = part.photos.iter().map(|(i, _)| *i).collect();
        if indices != range.clone().collect::<Vec<_>>() {
            bail!(
                "{}: chunk {} holds photos {indices:?}, expected {range:?}",
                self.staging
                    .uri_of(&facematch_job::build::part_key(part.chunk)),
                part.chunk
            );
        }
        let shas: Vec<String> = part
            .photos
            .iter()
            .filter_map(|(_, outcome)| match outcome {
                PhotoOutcome::Encoded(p) => Some(p.sha256.clone()),
                _ => None,
            })
            .collect();
        let mut seen = builds::staged_photos(self.client, build.build_id, &shas)?;
        let mut counts = BuildCounts::default();
        let mut failures = Vec::new();
        let mut images = Vec::new();
        let mut new_faces = Vec::new();
        for (index, outcome) in part.photos {
            let (key, actor) = &build.photos[index];
            let uri = build.photos_storage.uri_of(key);
            match outcome {
                PhotoOutcome::Known { .. } => counts.known += 1,
                PhotoOutcome::Failed {
                    sha256,
                    stage,
                    message,
                } => failures.push(FailedPhoto {
                    image: uri,
                    sha256,
                    stage: stage.as_str().to_string(),
                    message,
                }),
                PhotoOutcome::Encoded(photo) => {
                    if !seen.insert(photo.sha256.clone()) {
                        counts.duplicates += 1;
                        continue;
                    }
                    images.push(StagedImage {
                        sha256: photo.sha256.clone(),
                        uri: uri.clone(),
                        width: photo.width,
                        height: photo.height,
                        face_count: photo.faces.len(),
                    });
                    if photo.faces.is_empty() {
                        failures.push(FailedPhoto {
                            message: format!("image {uri}: no face found"),
                            image: uri,
                            sha256: Some(photo.sha256),
                            stage: FailureStage::NoFace.as_str().to_string(),
                        });
                        continue;
                    }
                    counts.encoded += 1;
                    for face in &photo.faces {
                        let b = face.bbox.clipped(photo.width, photo.height);
                        new_faces.push((
                            actor.clone(),
                            PhotoFace {
                                id: 0,
                                source: build.request.source,
                                actor_id: None,
                                user_id: None,
                                image_uri: uri.clone(),
                                image_sha256: photo.sha256.clone(),
                                bbox: [b.left, b.top, b.right, b.bottom].map(|v| v as i32),
                                encoding: face.encoding.clone(),
                                detector: face.detector.as_str(),
                            },
                        ));
                    }
                }
            }
        }
        counts.failed = failures.len();
        counts.faces = new_faces.len() as u64;
        let staged = self.stage_chunk(range.end, &counts, &failures, &images, new_faces)?;
        self.counts.add(&counts);
        self.next_chunk += 1;
        self.place(staged)?;
        build.show_progress(range.end, &self.counts);
        Ok(())
    }

    /// The chunk's one transaction: its photos, failures and faces, with ids reserved last so
    /// the face-id lock is held only for the copy.
    fn stage_chunk(
        &mut self,
        registered_photos: usize,
        counts: &BuildCounts,
        failures: &[FailedPhoto],
        images: &[StagedImage],
        new_faces: Vec<(Option<String>, PhotoFace)>,
    ) -> Result<Vec<(usize, PhotoFace)>> {
        let build = self.build;
        let shard_rows = build.request.shard_rows as u64;
        let mut tx = self.client.transaction()?;
        builds::stage_images(&mut tx, build.build_id, images)?;
        builds::record_failures(&mut tx, build.build_id, failures)?;
        let mut faces = Vec::with_capacity(new_faces.len());
        for (actor, face) in new_faces {
            let actor_id = match actor {
                Some(name) => Some(match self.actors.get(&name) {
                    Some(id) => *id,
                    None => {
                        let id = faces::actor_id(&mut tx, &name)?;
                        self.actors.insert(name, id);
                        id
                    }
                }),
                None => None,
            };
            faces.push(PhotoFace { actor_id, ..face });
        }
        builds::add_chunk(&mut tx, build.build_id, registered_photos, counts)?;
        let mut placed = Vec::with_capacity(faces.len());
        if !faces.is_empty() {
            // The staged rows reserve the ids (see `faces::lock_next_face_id`).
            let first = faces::lock_next_face_id(&mut tx)?;
            for (k, face) in faces.into_iter().enumerate() {
                let shard = ((self.faces + k as u64) / shard_rows) as usize;
                placed.push((
                    shard,
                    PhotoFace {
                        id: first + k as i64,
                        ..face
                    },
                ));
            }
            builds::stage_faces(&mut tx, build.build_id, &placed)?;
        }
        tx.commit()
            .with_context(|| format!("registering chunk {}", self.next_chunk))?;
        Ok(placed)
    }

    /// Adds registered faces to the open shard, writing each shard that fills.
    fn place(&mut self, staged: Vec<(usize, PhotoFace)>) -> Result<()> {
        let shard_rows = self.build.request.shard_rows;
        for (shard, face) in staged {
            self.open.push(FaceRecord {
                face_id: face.id,
                source: face.source,
                encoding: face.encoding,
            });
            self.faces += 1;
            if self.open.len() == shard_rows {
                let records = std::mem::take(&mut self.open);
                self.write_shard(shard, records)?;
            }
        }
        Ok(())
    }

    /// Writes the build's shard `shard` and records it.
    fn write_shard(&mut self, shard: usize, mut records: Vec<FaceRecord>) -> Result<()> {
        let build = self.build;
        records.sort_by_key(|r| r.face_id);
        let dim = records.first().map_or(0, |r| r.encoding.len());
        for record in &records {
            record.validate(dim)?;
        }
        let key = build.shard_key(shard);
        let info = write_shard(&build.output_storage, &key, &records, dim)
            .with_context(|| format!("writing {}", build.output_storage.uri_of(&key)))?;
        builds::record_shard(self.client, build.build_id, shard, &info)?;
        Ok(())
    }
}
