//! A pool: a long-lived prefix whose `current` names the run to join.

use super::Rendezvous;
use anyhow::{Context, Result};
use facematch_datasets::{S3Options, Storage};
use std::time::{Duration, Instant};

/// A pool's pointer to its current run.
const CURRENT: &str = "current";

/// A long-lived meeting place whose `current` names the run to join: what the workers an EMR
/// bootstrap action starts wait on, so a running cluster serves one run after another.
pub struct Pool {
    storage: Storage,
}

impl Pool {
    /// Opens the pool at `uri` (a folder or `s3://bucket/prefix`).
    pub fn open(uri: &str, s3: &S3Options) -> Result<Pool> {
        Ok(Pool {
            storage: Storage::open(uri, s3)?,
        })
    }

    /// Canonical URI.
    pub fn uri(&self) -> &str {
        self.storage.root_uri()
    }

    /// Makes `rendezvous` the run the pool's workers join next.
    pub fn point_at(&self, rendezvous: &str) -> Result<()> {
        self.storage
            .put(CURRENT, rendezvous.as_bytes().to_vec().into())?;
        Ok(())
    }

    /// Waits up to `timeout` for a current run that is not over yet.
    pub fn next_run(&self, s3: &S3Options, timeout: Duration) -> Result<Option<Rendezvous>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.storage.exists(CURRENT)? {
                let uri = String::from_utf8_lossy(&self.storage.get(CURRENT)?)
                    .trim()
                    .to_string();
                let rendezvous = Rendezvous::open(&uri, s3).with_context(|| {
                    format!("{}: bad run pointer", self.storage.uri_of(CURRENT))
                })?;
                if rendezvous.has_spec()? && !rendezvous.is_finished()? {
                    return Ok(Some(rendezvous));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
