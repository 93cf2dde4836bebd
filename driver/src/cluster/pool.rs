//! A pool: a long-lived prefix whose `current` names the run to join.

use super::Rendezvous;
use anyhow::{Context, Result, bail};
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

    /// Where the run named `name` meets: `runs/<name>` under the pool.
    pub fn run_uri(&self, name: &str) -> String {
        self.storage.uri_of(&format!("runs/{name}"))
    }

    /// Makes `rendezvous` the run the pool's workers join next — unless the pool still serves
    /// another run that has not ended, which would lose its workers.
    pub fn point_at(&self, rendezvous: &str, s3: &S3Options) -> Result<()> {
        if let Some(current) = self.current()?
            && current != rendezvous
        {
            let serving = Rendezvous::open(&current, s3)?;
            if serving.has_spec()? && !serving.is_finished()? {
                bail!(
                    "{} still serves run {current}, which has not ended; wait for it (if its \
                     driver is gone, delete {})",
                    self.uri(),
                    self.storage.uri_of(CURRENT)
                );
            }
        }
        self.storage
            .put(CURRENT, rendezvous.as_bytes().to_vec().into())?;
        Ok(())
    }

    /// The run `current` names, if any.
    fn current(&self) -> Result<Option<String>> {
        if !self.storage.exists(CURRENT)? {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&self.storage.get(CURRENT)?)
            .trim()
            .to_string();
        Ok(Some(text))
    }

    /// Waits up to `timeout` (forever without one) for a current run that is not over yet and
    /// is not `skip` (the run a serving worker has just done).
    pub fn next_run(
        &self,
        s3: &S3Options,
        timeout: Option<Duration>,
        skip: Option<&str>,
    ) -> Result<Option<Rendezvous>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        // One storage handle (one S3 client) per run named, not one per poll.
        let mut named: Option<(String, Rendezvous)> = None;
        loop {
            if let Some(uri) = self.current()?
                && Some(uri.as_str()) != skip
            {
                if named.as_ref().is_none_or(|(known, _)| *known != uri) {
                    let rendezvous = Rendezvous::open(&uri, s3).with_context(|| {
                        format!("{}: bad run pointer", self.storage.uri_of(CURRENT))
                    })?;
                    named = Some((uri, rendezvous));
                }
                if let Some((_, rendezvous)) = &named
                    && rendezvous.has_spec()?
                    && !rendezvous.is_finished()?
                {
                    return Ok(named.map(|(_, r)| r));
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_serving_an_unfinished_run_is_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let s3 = S3Options::default();
        let pool = Pool::open(dir.path().join("pool").to_str().unwrap(), &s3).unwrap();
        let first = dir.path().join("run-1").display().to_string();
        let second = dir.path().join("run-2").display().to_string();
        let spec = facematch_job::JobSpec {
            root_uri: String::new(),
            s3: s3.clone(),
            manifest: serde_json::from_value(serde_json::json!({
                "format_version": 1, "name": "x", "version": 1, "dim": 2, "embedder": "e", "count": 0, "shards": [], "created_at": "2026-12-01T00:00:00Z"
            }))
            .unwrap(),
            queries: Vec::new(),
        };
        Rendezvous::open(&first, &s3)
            .unwrap()
            .publish_spec(&facematch_job::Work::Search(spec))
            .unwrap();
        pool.point_at(&first, &s3).unwrap();
        let err = pool.point_at(&second, &s3).unwrap_err().to_string();
        assert!(err.contains("still serves run"), "{err}");
        // A worker that has done run 1 waits for another one.
        let none = pool
            .next_run(&s3, Some(Duration::from_millis(300)), Some(&first))
            .unwrap();
        assert!(none.is_none());
        assert!(
            pool.next_run(&s3, Some(Duration::ZERO), None)
                .unwrap()
                .is_some()
        );
        // Once run 1 ends, run 2 may take the pool.
        Rendezvous::open(&first, &s3)
            .unwrap()
            .abandon("the driver stopped")
            .unwrap();
        pool.point_at(&second, &s3).unwrap();
    }
}
