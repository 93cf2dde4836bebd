//! `facematch bench kernel|data`: the kernel's own speed, and the data `make bench`'s peers score.

use crate::bench;
use crate::output::print_json;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use facematch_job::MaxResults;
use facematch_job::kernel::{CodeLevel, Level};
use std::path::PathBuf;

/// `facematch bench …`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time the kernel on one thread: all faces against batches of histories (top-N cosine).
    Kernel {
        #[command(flatten)]
        data: BenchData,
        /// Batch sizes (histories scored together).
        #[arg(long, value_delimiter = ',', default_value = "1,16,256,1024,4096")]
        batches: Vec<usize>,
        /// N: results per history.
        #[arg(long, default_value_t = 10)]
        n: MaxResults,
        /// Kernel level (default: the widest this CPU has).
        #[arg(long)]
        level: Option<Level>,
        /// Time the int8 path a resident dataset (`serve`, `watch`) scans, at this integer
        /// level (portable, avx2, vnni, amx; `best`: the widest this CPU has).
        #[arg(long)]
        codes: Option<String>,
        /// Repetitions (the best is kept).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// Write the benchmark's faces and queries as faces.npy and queries.npy.
    Data {
        #[command(flatten)]
        data: BenchData,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
}

/// The seeded synthetic data every benchmark row scores.
#[derive(Debug, Args)]
pub struct BenchData {
    /// Faces in the synthetic dataset.
    #[arg(long, default_value_t = 1_000_000)]
    faces: usize,
    /// Query encodings generated (batches cycle through them).
    #[arg(long, default_value_t = 4096)]
    queries: usize,
    /// Encoding dimension.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Random seed: the same seed gives the same faces and queries to every peer.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs `facematch bench …`.
pub fn exec(cmd: BenchCommand, json: bool) -> Result<()> {
    match cmd {
        BenchCommand::Kernel {
            data,
            batches,
            n,
            level,
            codes,
            repeat,
        } => {
            if data.dim == 0 || data.faces == 0 || data.queries == 0 {
                bail!("--faces, --queries and --dim must be positive");
            }
            let path = match codes.as_deref() {
                None => {
                    let level = level.unwrap_or_else(Level::detect);
                    if !level.available() {
                        bail!("kernel level {level} is not available on this CPU");
                    }
                    bench::KernelPath::Float(level)
                }
                Some(name) => {
                    let level = match name {
                        "best" => CodeLevel::detect(),
                        name => name.parse::<CodeLevel>().map_err(anyhow::Error::msg)?,
                    };
                    if !level.available() {
                        bail!("integer kernel level {level} is not available on this CPU");
                    }
                    if !facematch_job::kernel::codes::codable(data.dim) {
                        bail!("--dim {} cannot be coded in int8", data.dim);
                    }
                    bench::KernelPath::Coded(level)
                }
            };
            let (faces, queries) = bench::data(data.faces, data.queries, data.dim, data.seed);
            let rows = bench::time_kernel(&faces, &queries, data.dim, &batches, n, path, repeat);
            if json {
                return print_json(&rows);
            }
            println!(
                "{:>6} {:>13} {:>10} {:>12} {:>14} {:>9}",
                "batch", "level", "ms", "ms/query", "pairs/s", "rescored"
            );
            for r in rows {
                println!(
                    "{:>6} {:>13} {:>10.1} {:>12.3} {:>14.3e} {:>9}",
                    r.batch, r.level, r.ms, r.ms_per_query, r.pairs_per_sec, r.rescored
                );
            }
        }
        BenchCommand::Data { data, out } => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let (faces, queries) = bench::data(data.faces, data.queries, data.dim, data.seed);
            bench::write_npy(&out.join("faces.npy"), &faces, data.dim)?;
            bench::write_npy(&out.join("queries.npy"), &queries, data.dim)?;
        }
    }
    Ok(())
}
