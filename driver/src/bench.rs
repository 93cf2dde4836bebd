//! `facematch bench`: the kernel's own speed, single-threaded, on seeded synthetic data — the
//! facematch rows of `make bench`. `bench data` writes the same faces and queries as `.npy` files
//! so the peers (numpy, FAISS, pgvector) score exactly what facematch scores.

use anyhow::{Context, Result};
use facematch_datasets::ShardBatch;
use facematch_job::kernel::synthetic::{self, SeededValues};
use facematch_job::kernel::{CodeLevel, Level, Scanner};
use facematch_job::resident::ResidentBatch;
use facematch_job::{MaxResults, Method};
use npyz::WriterBuilder;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// The benchmark's faces (`faces × dim`) and queries (`queries × dim`) for `seed`.
pub fn data(faces: usize, queries: usize, dim: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut values = SeededValues::new(seed);
    let f = values.take(faces * dim);
    let q = values.take(queries * dim);
    (f, q)
}

/// Writes `values` (`rows × dim`, float32) as a NumPy `.npy` file.
pub fn write_npy(path: &Path, values: &[f32], dim: usize) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&[(values.len() / dim) as u64, dim as u64])
        .writer(std::io::BufWriter::new(file))
        .begin_nd()?;
    writer.extend(values.iter().copied())?;
    writer.finish()?;
    Ok(())
}

/// One row of the kernel table.
#[derive(Debug, Clone, Serialize)]
pub struct KernelTiming {
    /// Histories scored together.
    pub batch: usize,
    /// Kernel level.
    pub level: String,
    /// Wall time of the best repetition (ms).
    pub ms: f64,
    /// Milliseconds per history.
    pub ms_per_query: f64,
    /// History × face pairs per second.
    pub pairs_per_sec: f64,
    /// Pairs re-scored in f64.
    pub rescored: u64,
}

/// Which kernel path a benchmark times.
#[derive(Debug, Clone, Copy)]
pub enum KernelPath {
    /// Float32 pruning at a level, faces as a shard streams them.
    Float(Level),
    /// Int8 codes at an integer level, the codes made beforehand as a resident dataset holds
    /// them.
    Coded(CodeLevel),
}

impl std::fmt::Display for KernelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelPath::Float(level) => write!(f, "{level}"),
            KernelPath::Coded(level) => write!(f, "int8-{level}"),
        }
    }
}

/// Times the kernel on one thread: every batch size scans all faces once (in 64k-face pieces,
/// as a shard is read), top-`n` cosine, best of `repeat`.
pub fn time_kernel(
    faces: &[f32],
    queries: &[f32],
    dim: usize,
    batches: &[usize],
    n: MaxResults,
    path: KernelPath,
    repeat: usize,
) -> Vec<KernelTiming> {
    const PIECE: usize = 65_536;
    let count = faces.len() / dim;
    let ids: Vec<i64> = (0..count as i64).collect();
    let sources = vec![b'A'; count];
    // Coded pieces are held as `serve` holds a dataset: faces placed in their codes' order.
    let coded: Vec<ResidentBatch> = match path {
        KernelPath::Coded(_) => faces
            .chunks(PIECE * dim)
            .zip(ids.chunks(PIECE))
            .map(|(piece, ids)| {
                let batch = ShardBatch {
                    face_ids: ids.to_vec(),
                    sources: vec![b'A'; ids.len()],
                    encodings: piece.to_vec().into(),
                    first_row: 0,
                };
                ResidentBatch::new(batch, dim)
            })
            .collect(),
        KernelPath::Float(_) => Vec::new(),
    };
    batches
        .iter()
        .map(|&batch| {
            let qs = synthetic::queries(queries, dim, batch, Method::Cosine, n);
            let mut best = f64::INFINITY;
            let mut rescored = 0;
            for _ in 0..repeat.max(1) {
                let started = Instant::now();
                let mut scanner = match path {
                    KernelPath::Float(level) => Scanner::with_level(&qs, dim, level),
                    KernelPath::Coded(level) => {
                        Scanner::with_level(&qs, dim, Level::Portable).with_code_level(level)
                    }
                };
                for (i, start) in (0..count).step_by(PIECE).enumerate() {
                    let end = (start + PIECE).min(count);
                    match coded.get(i) {
                        Some(ResidentBatch {
                            batch,
                            codes: Some(codes),
                        }) => scanner.scan_coded(
                            &batch.face_ids,
                            &batch.sources,
                            batch.values(),
                            codes,
                        ),
                        _ => scanner.scan(
                            &ids[start..end],
                            &sources[start..end],
                            &faces[start * dim..end * dim],
                        ),
                    }
                }
                rescored = scanner.rescored();
                std::hint::black_box(scanner.into_results());
                best = best.min(started.elapsed().as_secs_f64());
            }
            KernelTiming {
                batch,
                level: path.to_string(),
                ms: best * 1e3,
                ms_per_query: best * 1e3 / batch as f64,
                pairs_per_sec: (count * batch) as f64 / best,
                rescored,
            }
        })
        .collect()
}
