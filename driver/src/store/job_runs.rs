//! `job_runs`: one row per run — the runner, the pinned dataset version, where a remote job ran,
//! what the run did and how long each step took.

use anyhow::Result;
use postgres::GenericClient;

/// What a run did, written when it ends.
#[derive(Debug, Clone, Copy)]
pub struct RunTotals<'a> {
    /// Why the run failed, if it did (the row's status is then ERROR).
    pub error: Option<&'a str>,
    /// Histories claimed.
    pub histories: usize,
    /// Faces read.
    pub faces_scanned: u64,
    /// (history, face) pairs scored.
    pub pairs_scored: u64,
    /// Milliseconds claiming.
    pub claim_ms: u64,
    /// Milliseconds in the dataflow.
    pub scan_ms: u64,
    /// Milliseconds writing results.
    pub write_ms: u64,
}

/// Where a remote job is, as the run last saw it.
#[derive(Debug, Clone, Copy)]
pub struct RemotePlacement<'a> {
    /// Cluster id.
    pub cluster_id: &'a str,
    /// The unit of work running process 0 (an EMR step).
    pub step_id: Option<&'a str>,
    /// Last cluster state seen.
    pub cluster_state: &'a str,
    /// Last step state seen.
    pub step_state: Option<&'a str>,
    /// Whether this run started the cluster.
    pub started_here: bool,
}

/// Records a run as started (RUNNING); returns its id.
pub fn start(
    client: &mut impl GenericClient,
    runner: &str,
    dataset_id: i64,
    dataset: &str,
) -> Result<i64> {
    Ok(client
        .query_one(
            "INSERT INTO job_runs (runner, dataset_id, dataset) VALUES ($1, $2, $3) RETURNING id",
            &[&runner, &dataset_id, &dataset],
        )?
        .get(0))
}

/// Records where a remote run's job is.
pub fn record_placement(
    client: &mut impl GenericClient,
    run_id: i64,
    placement: RemotePlacement<'_>,
) -> Result<()> {
    client.execute(
        "UPDATE job_runs SET cluster_id = $2, step_id = $3, cluster_state = $4,
                step_state = $5, cluster_started_here = $6
          WHERE id = $1",
        &[
            &run_id,
            &placement.cluster_id,
            &placement.step_id,
            &placement.cluster_state,
            &placement.step_state,
            &placement.started_here,
        ],
    )?;
    Ok(())
}

/// Ends a run's row: FINISHED, or ERROR with the reason.
pub fn finish(client: &mut impl GenericClient, run_id: i64, totals: RunTotals<'_>) -> Result<()> {
    client.execute(
        "UPDATE job_runs SET status = $2, error = $3, histories = $4, faces_scanned = $5,
                pairs_scored = $6, claim_ms = $7, scan_ms = $8, write_ms = $9, finished_at = now()
          WHERE id = $1",
        &[
            &run_id,
            &if totals.error.is_some() {
                "ERROR"
            } else {
                "FINISHED"
            },
            &totals.error,
            &(totals.histories as i32),
            &(totals.faces_scanned as i64),
            &(totals.pairs_scored as i64),
            &(totals.claim_ms as i64),
            &(totals.scan_ms as i64),
            &(totals.write_ms as i64),
        ],
    )?;
    Ok(())
}
