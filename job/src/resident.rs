//! A dataset version held in memory, so that a long-lived process (`facematch serve`,
//! `facematch watch`) reads, verifies and decodes its shards once instead of on every pass.
//!
//! A batch run streams every shard from storage and checks its sha256 each time; for one search
//! over a million faces that costs ten times the scoring. A [`ResidentDataset`] is loaded once —
//! the same reads and the same checks as a streamed pass — and [`crate::dataflow::run_job_on`]
//! scans it with the same kernel, so the results are those of a streamed pass, byte for byte.
//! Versions share shards: [`ResidentDataset::load_after`] takes the shards a previous resident
//! version already holds (same path and sha256) and reads only the new ones.
//!
//! Each batch is also coded once into int8 ([`FaceCodes`]), so a pass reads a quarter of the
//! bytes for one query and multiplies on the integer units for many; the float32 values stay
//! for the exact re-scoring, which decides every result.

use crate::kernel::codes::{self, FaceCodes};
use facematch_datasets::{DatasetError, Manifest, S3Options, ShardBatch, ShardReader, Storage};
use std::collections::HashMap;
use std::sync::Arc;

/// One batch of a shard, decoded, with its codes (None where the dimension cannot be coded).
pub struct ResidentBatch {
    /// The faces as read, placed in the order of their codes (so a face's place in the batch
    /// is no longer its row in the file).
    pub batch: ShardBatch,
    /// Their int8 codes.
    pub codes: Option<FaceCodes>,
}

/// The decoded batches of one shard.
pub type ResidentShard = Arc<Vec<ResidentBatch>>;

/// Faces per resident batch: twice what a pass streaming from storage decodes at once, so
/// that a batch's int8 codes of 128-d faces are 2 MiB, one huge page (the `facematch` binary's
/// allocator puts allocations of 2 MiB and more on huge pages), and its floats four. A pass over
/// a million faces streams 128 MB of codes: on 4 KiB pages that is a TLB miss every two panels,
/// which cost a 100-search pass on two workers about 2.5 ms of its 22 ms scan here.
pub const RESIDENT_BATCH_FACES: usize = 16_384;

/// One dataset version's shards, decoded and verified, in manifest order.
pub struct ResidentDataset {
    root_uri: String,
    manifest: Manifest,
    shards: Vec<ResidentShard>,
}

impl std::fmt::Debug for ResidentDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResidentDataset")
            .field("root_uri", &self.root_uri)
            .field("dataset", &self.manifest.dataset_ref().to_string())
            .field("faces", &self.manifest.count)
            .finish()
    }
}

impl ResidentDataset {
    /// Reads and verifies every shard of `manifest` under `root_uri`, on up to `threads` threads.
    pub fn load(
        root_uri: &str,
        s3: &S3Options,
        manifest: &Manifest,
        threads: usize,
    ) -> Result<ResidentDataset, DatasetError> {
        ResidentDataset::load_after(None, root_uri, s3, manifest, threads)
    }

    /// [`ResidentDataset::load`], taking from `previous` the shards it already holds.
    pub fn load_after(
        previous: Option<&ResidentDataset>,
        root_uri: &str,
        s3: &S3Options,
        manifest: &Manifest,
        threads: usize,
    ) -> Result<ResidentDataset, DatasetError> {
        let known: HashMap<(&str, &str), &ResidentShard> = previous
            .filter(|p| p.root_uri == root_uri && p.manifest.dim == manifest.dim)
            .map(|p| {
                p.manifest
                    .shards
                    .iter()
                    .map(|s| (s.path.as_str(), s.sha256.as_str()))
                    .zip(&p.shards)
                    .collect()
            })
            .unwrap_or_default();
        let mut shards: Vec<Option<ResidentShard>> = manifest
            .shards
            .iter()
            .map(|s| {
                known
                    .get(&(s.path.as_str(), s.sha256.as_str()))
                    .map(|b| Arc::clone(b))
            })
            .collect();
        let missing: Vec<usize> = (0..shards.len()).filter(|i| shards[*i].is_none()).collect();
        if !missing.is_empty() {
            let storage = Storage::open(root_uri, s3)?;
            let threads = threads.clamp(1, missing.len());
            let loaded = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads)
                    .map(|t| {
                        let (storage, missing) = (&storage, &missing);
                        scope.spawn(
                            move || -> Result<Vec<(usize, ResidentShard)>, DatasetError> {
                                missing
                                    .iter()
                                    .skip(t)
                                    .step_by(threads)
                                    .map(|&i| {
                                        let info = &manifest.shards[i];
                                        let reader = ShardReader::fetch_in_batches(
                                            storage,
                                            info,
                                            manifest.dim,
                                            RESIDENT_BATCH_FACES,
                                        )?;
                                        let batches = reader
                                            .map(|batch| {
                                                batch.map(|b| ResidentBatch::new(b, manifest.dim))
                                            })
                                            .collect::<Result<Vec<_>, _>>()?;
                                        Ok((i, Arc::new(batches)))
                                    })
                                    .collect()
                            },
                        )
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("a shard loader panicked"))
                    .collect::<Result<Vec<_>, _>>()
            })?;
            for (i, batches) in loaded.into_iter().flatten() {
                shards[i] = Some(batches);
            }
        }
        Ok(ResidentDataset {
            root_uri: root_uri.to_string(),
            manifest: manifest.clone(),
            shards: shards
                .into_iter()
                .map(|s| s.expect("every shard loaded"))
                .collect(),
        })
    }

    /// Whether this is the version `manifest` describes, under `root_uri`.
    pub fn holds(&self, root_uri: &str, manifest: &Manifest) -> bool {
        self.root_uri == root_uri && self.manifest == *manifest
    }

    /// The version's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The decoded batches of shard `index` (manifest order).
    pub fn shard(&self, index: usize) -> &[ResidentBatch] {
        &self.shards[index]
    }

    /// Bytes of encodings held.
    pub fn encoding_bytes(&self) -> u64 {
        self.manifest.count * self.manifest.dim as u64 * 4
    }

    /// Bytes of int8 codes and their per-face numbers held.
    pub fn code_bytes(&self) -> u64 {
        self.shards
            .iter()
            .flat_map(|s| s.iter())
            .filter_map(|b| b.codes.as_ref())
            .map(|c| c.bytes() as u64)
            .sum()
    }
}

impl ResidentBatch {
    /// `batch` with its codes (`dim` each), its faces placed in the codes' order: the faces a
    /// pass re-scores in f64 together are the ones its integer test passes together,
    /// neighbours in the codes, and so they are read from neighbouring memory instead of from
    /// all over the batch.
    pub fn new(batch: ShardBatch, dim: usize) -> ResidentBatch {
        if !codes::codable(dim) {
            return ResidentBatch { batch, codes: None };
        }
        let mut codes = FaceCodes::new(batch.values(), dim);
        let order = codes.take_order();
        let values = batch.values();
        let mut placed = Vec::with_capacity(values.len());
        for &index in &order {
            let index = index as usize;
            placed.extend_from_slice(&values[index * dim..(index + 1) * dim]);
        }
        let batch = ShardBatch {
            face_ids: order.iter().map(|&i| batch.face_ids[i as usize]).collect(),
            sources: order.iter().map(|&i| batch.sources[i as usize]).collect(),
            encodings: placed.into(),
            first_row: batch.first_row,
        };
        ResidentBatch {
            batch,
            codes: Some(codes),
        }
    }
}
