//! The job's timely dataflow: scan → score → local top-N → exchange by history → merge.
//!
//! Each worker turns its own shards (see [`crate::assign`]) into a stream, streams each shard from
//! storage batch by batch through the [`Scanner`](crate::kernel::Scanner) — so a worker holds one
//! shard and one decoded batch at a time, never the dataset — and, when its input is exhausted,
//! emits its local top-N per history. (The threads of one process scanning a dataset held in
//! memory take shards from one queue instead, whichever thread is free first.) Those candidates
//! go through differential-dataflow's `reduce`,
//! which exchanges them by history id and hands each history's candidates to one worker *sorted*;
//! the merge is then "take the first N". Differential fits here because the merge is exactly a
//! keyed reduction over a small collection (workers × histories × N rows) and its sorted input
//! gives the tie rule for free; it would not fit the scan itself, where arranging a million faces
//! per history would cost far more than the scoring. Final rows, shard failures and scan counts
//! are routed to worker 0, which is the only worker (of process 0) that returns them.

use crate::assign::assign_shards;
use crate::kernel::{Floors, Scanner};
use crate::query::{Match, Query};
use crate::resident::ResidentDataset;
use crate::topn::{score_from_key, score_key};
use differential_dataflow::AsCollection;
use facematch_datasets::{Manifest, S3Options, ShardReader, Storage};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Exchange, Inspect, ToStream};

/// Everything a worker needs to run its part of a job; serialisable so other processes can get it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    /// Storage root of the dataset.
    pub root_uri: String,
    /// How to reach S3, if the root is on S3.
    pub s3: S3Options,
    /// The pinned dataset version.
    pub manifest: Manifest,
    /// The claimed histories.
    pub queries: Vec<Query>,
}

/// What worker 0 returns (serialisable: a worker process hands it to the driver).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobOutput {
    /// Final matches per history id, best first (every queried history has an entry).
    pub results: BTreeMap<i64, Vec<Match>>,
    /// Faces read from storage.
    pub faces_scanned: u64,
    /// (query, face) pairs scored.
    pub pairs_scored: u64,
    /// Pairs that needed f64 re-scoring.
    pub pairs_rescored: u64,
    /// Wall time of the dataflow.
    pub elapsed: Duration,
}

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// One or more shards could not be read or verified; the message names them.
    #[error("{0}")]
    Shards(String),
    /// Storage did not answer for a shard, after retries: the infrastructure's failure, not the
    /// data's (the run requeues); the message names the shards.
    #[error("{0}")]
    Unavailable(String),
    /// The timely runtime failed (a worker panicked or could not start).
    #[error("dataflow failed: {0}")]
    Runtime(String),
    /// The job spec itself is unusable.
    #[error("{0}")]
    Invalid(String),
}

/// What a worker reports besides candidates.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Report {
    Failed {
        shard: String,
        message: String,
        /// Storage was unavailable (retried in vain), rather than the shard bad or missing.
        #[serde(default)]
        transient: bool,
    },
    Scanned {
        faces: u64,
        pairs: u64,
        rescored: u64,
    },
}

/// Checks that the spec can run (query dimensions match the dataset).
pub fn check_spec(spec: &JobSpec) -> Result<(), JobError> {
    for q in &spec.queries {
        if q.encoding.len() != spec.manifest.dim {
            return Err(JobError::Invalid(format!(
                "history {}: query encoding has dimension {}, dataset {} has {}",
                q.history_id,
                q.encoding.len(),
                spec.manifest.dataset_ref(),
                spec.manifest.dim
            )));
        }
    }
    Ok(())
}

/// Runs the job on the timely workers described by `config` and returns worker 0's output
/// (other workers return `None`).
pub fn run_job(spec: Arc<JobSpec>, config: timely::Config) -> Result<Option<JobOutput>, JobError> {
    run_job_connected(spec, config, || {})
}

/// [`run_job`] scanning `resident`, which must hold the spec's dataset version, instead of
/// reading the shards from storage (threads of one process only: the data is in its memory).
pub fn run_job_on(
    spec: Arc<JobSpec>,
    resident: Arc<ResidentDataset>,
    workers: usize,
) -> Result<Option<JobOutput>, JobError> {
    if !resident.holds(&spec.root_uri, &spec.manifest) {
        return Err(JobError::Invalid(format!(
            "the resident dataset is {}, the job asks for {} under {}",
            resident.manifest().dataset_ref(),
            spec.manifest.dataset_ref(),
            spec.root_uri
        )));
    }
    run_timely(
        spec,
        Some(resident),
        timely::Config::process(workers.max(1)),
        || {},
    )
}

/// [`run_job`], calling `connected` once timely has connected to every other process (at once
/// for a single process), so a caller can bound how long connecting may take.
pub fn run_job_connected(
    spec: Arc<JobSpec>,
    config: timely::Config,
    connected: impl FnOnce(),
) -> Result<Option<JobOutput>, JobError> {
    run_timely(spec, None, config, connected)
}

/// Runs the dataflow, scanning `resident` when given and storage otherwise.
fn run_timely(
    spec: Arc<JobSpec>,
    resident: Option<Arc<ResidentDataset>>,
    config: timely::Config,
    connected: impl FnOnce(),
) -> Result<Option<JobOutput>, JobError> {
    check_spec(&spec)?;
    let started = Instant::now();
    // The workers of this process prune with each other's N-th scores (kernel::floors).
    let floors = Arc::new(Floors::new(
        spec.queries.iter().map(|q| q.max_results as usize),
    ));
    // Threads sharing a resident dataset take its shards from one queue: a worker the machine
    // holds up (a busy neighbour) scans fewer shards instead of making the pass wait for it.
    let queue = resident.as_ref().map(|_| Arc::new(ShardQueue::default()));
    let guards = timely::execute(config, move |worker| {
        run_worker(
            worker,
            &spec,
            resident.clone(),
            queue.clone(),
            floors.clone(),
        )
    })
    .map_err(JobError::Runtime)?;
    connected();
    let mut output = None;
    for result in guards.join() {
        match result.map_err(JobError::Runtime)? {
            Some(Ok(mut out)) => {
                out.elapsed = started.elapsed();
                output = Some(out);
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    Ok(output)
}

type Candidate = ((i64, (u64, i64, u8)), u64, isize);

/// A final row as worker 0 collects it: (history, score key, face id, source).
type FinalRow = (i64, u64, i64, u8);

/// What the dataflow hands worker 0 once it has run.
#[derive(Default)]
struct Collected {
    rows: Vec<FinalRow>,
    reports: Vec<Report>,
}

/// The next shard of a resident dataset for whichever worker asks first.
#[derive(Default)]
struct ShardQueue(std::sync::atomic::AtomicUsize);

impl ShardQueue {
    /// A shard no worker has taken yet, if one is left of `shards`.
    fn take(&self, shards: usize) -> Option<usize> {
        let shard = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (shard < shards).then_some(shard)
    }
}

fn run_worker(
    worker: &mut timely::worker::Worker,
    spec: &JobSpec,
    resident: Option<Arc<ResidentDataset>>,
    queue: Option<Arc<ShardQueue>>,
    floors: Arc<Floors>,
) -> Option<Result<JobOutput, JobError>> {
    let index = worker.index();
    let collected = Arc::new(std::sync::Mutex::new(Collected::default()));
    build_dataflow(worker, spec, resident, queue, floors, collected.clone());
    // Run the dataflow to completion before reading what it collected.
    while worker.step_or_park(None) {}
    if index != 0 {
        return None;
    }
    let collected = std::mem::take(&mut *collected.lock().expect("collected lock"));
    Some(collect_output(spec, collected))
}

/// Scan this worker's shards (its own, or with `queue` whatever it takes first) → candidates
/// reduced by history → final rows and reports, both routed to worker 0's `collected`.
fn build_dataflow(
    worker: &mut timely::worker::Worker,
    spec: &JobSpec,
    resident: Option<Arc<ResidentDataset>>,
    queue: Option<Arc<ShardQueue>>,
    floors: Arc<Floors>,
    collected: Arc<std::sync::Mutex<Collected>>,
) {
    let owner = assign_shards(&spec.manifest.shards, worker.peers());
    let index = worker.index();
    let my_shards: Vec<usize> = match queue {
        Some(_) => Vec::new(),
        None => (0..owner.len()).filter(|s| owner[*s] == index).collect(),
    };
    let shard_count = spec.manifest.shards.len();
    let limits: HashMap<i64, usize> = spec
        .queries
        .iter()
        .map(|q| (q.history_id, q.max_results as usize))
        .collect();
    let scan_spec = spec.clone();
    let rows_sink = collected.clone();
    worker.dataflow::<u64, _, _>(move |scope| {
        let scanned = my_shards
            .to_stream(scope)
            .unary_frontier(Pipeline, "Scan", move |cap, _info| {
                let mut cap = Some(cap);
                let mut state = ScanState::new(&scan_spec, resident.clone(), floors.clone());
                move |(input, frontier), output| {
                    input.for_each(|_time, shards: &mut Vec<usize>| {
                        for shard in shards.drain(..) {
                            state.scan_shard(shard);
                        }
                    });
                    if frontier.is_empty()
                        && let Some(cap) = cap.take()
                    {
                        while let Some(shard) = queue.as_ref().and_then(|q| q.take(shard_count)) {
                            state.scan_shard(shard);
                        }
                        let mut session = output.session(&cap);
                        for item in state.finish() {
                            session.give(item);
                        }
                    }
                }
            })
            .container::<Vec<ScanItem>>();

        scanned
            .clone()
            .flat_map(|item: ScanItem| match item {
                ScanItem::Candidate(history, m) => Some((
                    (history, (score_key(m.score), m.face_id, m.source)),
                    0u64,
                    1isize,
                )),
                ScanItem::Report(_) => None,
            })
            .as_collection()
            .reduce(
                move |history: &i64,
                      input: &[(&(u64, i64, u8), isize)],
                      output: &mut Vec<((u64, i64, u8), isize)>| {
                    // Differential hands the values sorted: best score first, ties by face id.
                    let n = limits.get(history).copied().unwrap_or(0);
                    for (value, _) in input.iter().filter(|(_, d)| *d > 0).take(n) {
                        output.push((**value, 1));
                    }
                },
            )
            .inner
            .exchange(|_: &Candidate| 0)
            .inspect(
                move |((history, (key, face, source)), _time, diff): &Candidate| {
                    if *diff > 0 {
                        rows_sink
                            .lock()
                            .expect("collected lock")
                            .rows
                            .push((*history, *key, *face, *source));
                    }
                },
            );

        scanned
            .flat_map(|item: ScanItem| match item {
                ScanItem::Report(r) => Some(r),
                ScanItem::Candidate(..) => None,
            })
            .exchange(|_: &Report| 0)
            .inspect(move |r: &Report| {
                collected
                    .lock()
                    .expect("collected lock")
                    .reports
                    .push(r.clone())
            });
    });
}

/// Worker 0's output from what the dataflow collected: counts, then either the shard failures
/// or every history's matches in result order.
fn collect_output(spec: &JobSpec, collected: Collected) -> Result<JobOutput, JobError> {
    let mut output = JobOutput::default();
    let mut failures = Vec::new();
    let mut unavailable = false;
    for report in collected.reports {
        match report {
            Report::Failed {
                shard,
                message,
                transient,
            } => {
                unavailable |= transient;
                failures.push(format!("shard {shard}: {message}"));
            }
            Report::Scanned {
                faces,
                pairs,
                rescored,
            } => {
                output.faces_scanned += faces;
                output.pairs_scored += pairs;
                output.pairs_rescored += rescored;
            }
        }
    }
    if !failures.is_empty() {
        failures.sort();
        let message = failures.join("; ");
        // One shard storage could not serve makes the whole run the machinery's failure: the
        // others' verdicts wait for a run that can read everything.
        return Err(if unavailable {
            JobError::Unavailable(message)
        } else {
            JobError::Shards(message)
        });
    }
    for q in &spec.queries {
        output.results.insert(q.history_id, Vec::new());
    }
    for (history, key, face_id, source) in collected.rows {
        output.results.entry(history).or_default().push(Match {
            face_id,
            source,
            score: score_from_key(key),
        });
    }
    for matches in output.results.values_mut() {
        matches.sort_by(crate::topn::rank_cmp);
    }
    Ok(output)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum ScanItem {
    Candidate(i64, Match),
    Report(Report),
}

/// One worker's scan: its storage handle, its kernel, and what went wrong.
struct ScanState {
    spec: JobSpec,
    /// The shards in memory (`serve`, `watch`); None streams them from storage.
    resident: Option<Arc<ResidentDataset>>,
    storage: Option<Storage>,
    scanner: Scanner,
    faces: u64,
    failures: Vec<Report>,
}

impl ScanState {
    fn new(
        spec: &JobSpec,
        resident: Option<Arc<ResidentDataset>>,
        floors: Arc<Floors>,
    ) -> ScanState {
        ScanState {
            scanner: Scanner::new(&spec.queries, spec.manifest.dim).with_floors(floors),
            spec: spec.clone(),
            resident,
            storage: None,
            faces: 0,
            failures: Vec::new(),
        }
    }

    fn scan_shard(&mut self, shard: usize) {
        let info = self.spec.manifest.shards[shard].clone();
        if !self.failures.is_empty() {
            return; // the run has failed; do not spend time on the rest
        }
        if let Some(resident) = &self.resident {
            for held in resident.shard(shard) {
                let batch = &held.batch;
                match &held.codes {
                    Some(codes) => self.scanner.scan_coded(
                        &batch.face_ids,
                        &batch.sources,
                        batch.values(),
                        codes,
                    ),
                    None => self
                        .scanner
                        .scan(&batch.face_ids, &batch.sources, batch.values()),
                }
                self.faces += batch.len() as u64;
            }
            return;
        }
        if let Err(error) = self.try_scan(&info) {
            self.failures.push(Report::Failed {
                shard: info.path.clone(),
                message: error.to_string(),
                transient: error.is_transient(),
            });
        }
    }

    fn try_scan(
        &mut self,
        info: &facematch_datasets::ShardInfo,
    ) -> Result<(), facematch_datasets::DatasetError> {
        let storage = match &self.storage {
            Some(storage) => storage.clone(),
            None => {
                let storage = Storage::open(&self.spec.root_uri, &self.spec.s3)?;
                self.storage = Some(storage.clone());
                storage
            }
        };
        let reader = ShardReader::fetch(&storage, info, self.spec.manifest.dim)?;
        for batch in reader {
            let batch = batch?;
            self.scanner
                .scan(&batch.face_ids, &batch.sources, batch.values());
            self.faces += batch.len() as u64;
        }
        Ok(())
    }

    fn finish(&mut self) -> Vec<ScanItem> {
        let scanner =
            std::mem::replace(&mut self.scanner, Scanner::new(&[], self.spec.manifest.dim));
        let mut items: Vec<ScanItem> = self.failures.drain(..).map(ScanItem::Report).collect();
        items.push(ScanItem::Report(Report::Scanned {
            faces: self.faces,
            pairs: scanner.scored_pairs(),
            rescored: scanner.rescored(),
        }));
        if items.len() == 1 {
            for (history, matches) in scanner.into_results() {
                items.extend(matches.into_iter().map(|m| ScanItem::Candidate(history, m)));
            }
        }
        items
    }
}
