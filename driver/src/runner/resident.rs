//! The runner of long-lived processes (`facematch serve`, `facematch watch`): timely threads in
//! this process, like [`super::inline`], scanning a dataset version held in memory
//! ([`ResidentDataset`]) instead of reading its shards on every pass.
//!
//! The version is loaded (read, verified, decoded) the first time a pass asks for it and kept;
//! a pass that asks for another version — a new current one — loads that one, reusing the
//! shards the versions share, and the old one is dropped.

use super::{Capacity, DataFailure, RunContext, Runner, search_failure};
use anyhow::{Result, anyhow};
use facematch_datasets::{DatasetError, Manifest, S3Options};
use facematch_job::dataflow::run_job_on;
use facematch_job::resident::ResidentDataset;
use facematch_job::{Work, WorkOutput};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One process, `workers` threads, the dataset in memory.
pub struct ResidentRunner {
    workers: usize,
    s3: S3Options,
    loaded: Mutex<Option<Arc<ResidentDataset>>>,
}

impl ResidentRunner {
    /// A runner with `workers` threads reaching S3 with `s3`; nothing loaded yet.
    pub fn new(workers: usize, s3: S3Options) -> ResidentRunner {
        ResidentRunner {
            workers: workers.max(1),
            s3,
            loaded: Mutex::new(None),
        }
    }

    /// The version `manifest` under `root_uri`, loaded now unless it is held already.
    pub fn load(&self, root_uri: &str, manifest: &Manifest) -> Result<Arc<ResidentDataset>> {
        let mut loaded = self
            .loaded
            .lock()
            .map_err(|_| anyhow!("resident dataset lock poisoned"))?;
        if let Some(held) = loaded.as_ref().filter(|d| d.holds(root_uri, manifest)) {
            return Ok(held.clone());
        }
        let started = Instant::now();
        let fresh = ResidentDataset::load_after(
            loaded.as_deref(),
            root_uri,
            &self.s3,
            manifest,
            self.workers,
        )
        .map_err(|e| load_error(e, manifest))?;
        let fresh = Arc::new(fresh);
        tracing::info!(
            dataset = %manifest.dataset_ref(),
            faces = manifest.count,
            bytes = fresh.encoding_bytes(),
            code_bytes = fresh.code_bytes(),
            code_kernel = %facematch_job::kernel::CodeLevel::detect(),
            ms = started.elapsed().as_millis() as u64,
            "dataset loaded into memory"
        );
        *loaded = Some(fresh.clone());
        Ok(fresh)
    }
}

/// A shard that cannot be read is the data's failure (the histories' answer), unless storage was
/// out of reach (the machinery's: they wait for the next pass).
fn load_error(error: DatasetError, manifest: &Manifest) -> anyhow::Error {
    let message = format!("loading {}: {error}", manifest.dataset_ref());
    if error.is_transient() {
        anyhow!(message)
    } else {
        DataFailure(message).into()
    }
}

impl Runner for ResidentRunner {
    fn label(&self) -> String {
        format!("resident:{}", self.workers)
    }

    fn capacity(&self) -> Capacity {
        Capacity {
            threads: self.workers,
            startup: Duration::ZERO,
            remote: false,
        }
    }

    fn prepare(&self, dataset_root: &str, manifest: &Manifest) -> Result<()> {
        self.load(dataset_root, manifest).map(drop)
    }

    fn execute(&self, work: Arc<Work>, _: &dyn RunContext) -> Result<WorkOutput> {
        #[allow(clippy::infallible_destructuring_match)] // builds exist only with `photos`
        let spec = match &*work {
            Work::Search(spec) => spec,
            #[cfg(feature = "photos")]
            Work::Build(_) => {
                anyhow::bail!("the resident runner answers searches; run a build on another runner")
            }
        };
        let resident = self.load(&spec.root_uri, &spec.manifest)?;
        let output =
            run_job_on(Arc::new(spec.clone()), resident, self.workers).map_err(search_failure)?;
        let output = output.ok_or_else(|| anyhow!("worker 0 returned no output"))?;
        Ok(WorkOutput::Search(output))
    }
}
