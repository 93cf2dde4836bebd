//! The history state machine in SQL: submit (PENDING), claim (PENDING→RUNNING, `FOR UPDATE SKIP
//! LOCKED`), finish (items + FINISHED in one transaction), fail (ERROR, zero items), requeue of
//! runs whose lease expired (RUNNING→PENDING, or ERROR once attempts are used up).
//!
//! Every transition names the state it leaves in its `WHERE` and, from RUNNING, the run that owns
//! the history, so a run that lost its claim can never write; a trigger in the schema rejects any
//! other edge whoever attempts it.

use anyhow::{Context, Result};
use facematch_job::{Match, MaxResults, Query, validate_params};
use postgres::Client;
use std::collections::BTreeMap;
use std::time::Duration;

/// A new search request.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Query face.
    pub face_id: i64,
    /// `cosine` or `euclidean`.
    pub method: String,
    /// `all`, `actor` or `user`.
    pub filter: String,
    /// N.
    pub max_results: MaxResults,
    /// Whether the query face is kept out of its own results.
    pub exclude_self: bool,
    /// Euclidean distance bound.
    pub max_distance: Option<f64>,
    /// Who asked.
    pub user_id: Option<i64>,
}

/// Why submissions were refused (nothing was inserted).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A parameter is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The query face is not in the database.
    #[error("face {0} does not exist")]
    NoSuchFace(i64),
}

/// What [`submit_all`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Submission `index` (0-based) was refused; none was inserted.
    #[error("search {} of {count}: {refusal}", index + 1)]
    Refused {
        /// Which one.
        index: usize,
        /// How many were submitted together.
        count: usize,
        /// Why.
        refusal: Refusal,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Validates and inserts a PENDING history; returns its id.
pub fn submit(client: &mut Client, s: &Submission) -> Result<i64> {
    match submit_all(client, std::slice::from_ref(s)) {
        Ok(ids) => Ok(ids[0]),
        Err(SubmitError::Refused { refusal, .. }) => Err(refusal.into()),
        Err(SubmitError::Store(e)) => Err(e),
    }
}

/// Validates and inserts PENDING histories, all or none, in one statement (so one round trip
/// and, through the trigger, one `facematch_pending` notification however many there are);
/// returns their ids in the order given.
pub fn submit_all(client: &mut Client, batch: &[Submission]) -> Result<Vec<i64>, SubmitError> {
    let count = batch.len();
    for (index, s) in batch.iter().enumerate() {
        validate_params(&s.method, &s.filter, s.max_results.into(), s.max_distance).map_err(
            |e| SubmitError::Refused {
                index,
                count,
                refusal: Refusal::Invalid(e),
            },
        )?;
    }
    let users: Vec<Option<i64>> = batch.iter().map(|s| s.user_id).collect();
    let faces: Vec<i64> = batch.iter().map(|s| s.face_id).collect();
    let methods: Vec<&str> = batch.iter().map(|s| s.method.as_str()).collect();
    let filters: Vec<&str> = batch.iter().map(|s| s.filter.as_str()).collect();
    let limits: Vec<i32> = batch.iter().map(|s| s.max_results as i32).collect();
    let excludes: Vec<bool> = batch.iter().map(|s| s.exclude_self).collect();
    let distances: Vec<Option<f64>> = batch.iter().map(|s| s.max_distance).collect();
    // Nothing is inserted if any face is missing: the statement is its own transaction.
    let rows = client
        .query(
            "WITH input AS (
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[],
                                      $5::int[], $6::bool[], $7::float8[])
                     WITH ORDINALITY AS t(user_id, face_id, method, filter, n, exclude, distance, i))
             INSERT INTO histories (user_id, in_face_id, similarity_method, face_source_filter,
                                    max_results, exclude_self, max_distance)
             SELECT user_id, face_id, method, filter, n, exclude, distance FROM input
              WHERE NOT EXISTS (SELECT 1 FROM input
                                 WHERE NOT EXISTS (SELECT 1 FROM faces WHERE faces.id = input.face_id))
              ORDER BY i
             RETURNING id",
            &[
                &users, &faces, &methods, &filters, &limits, &excludes, &distances,
            ],
        )
        .context("inserting histories")?;
    if rows.len() == count {
        // Ids come from a sequence, in insertion order.
        let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        ids.sort_unstable();
        return Ok(ids);
    }
    let known: std::collections::HashSet<i64> = client
        .query("SELECT id FROM faces WHERE id = ANY($1)", &[&faces])
        .context("looking up query faces")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    match faces.iter().position(|f| !known.contains(f)) {
        Some(index) => Err(SubmitError::Refused {
            index,
            count,
            refusal: Refusal::NoSuchFace(faces[index]),
        }),
        None => Err(anyhow::anyhow!(
            "the histories were not inserted (a query face was deleted meanwhile?)"
        )
        .into()),
    }
}

/// What a claim got.
#[derive(Debug, Default)]
pub struct Claim {
    /// Valid histories, now RUNNING under this run.
    pub queries: Vec<Query>,
    /// Histories that were claimed but are invalid; already ERROR with the message.
    pub rejected: Vec<(i64, String)>,
}

impl Claim {
    /// Whether nothing was claimed.
    pub fn is_empty(&self) -> bool {
        self.queries.is_empty() && self.rejected.is_empty()
    }
}

/// Which PENDING histories to claim.
#[derive(Debug, Clone, Default)]
pub struct ClaimScope {
    /// Only these ids.
    pub only: Option<Vec<i64>>,
    /// At most this many (oldest first).
    pub limit: Option<i64>,
    /// Only ids up to this one: a run answers what was there when it started, and what
    /// arrives meanwhile waits for the next run (so a steady stream cannot keep one run going).
    pub up_to: Option<i64>,
}

/// The newest history's id (None when there is none): the `up_to` of a run starting now.
pub fn newest_id(client: &mut Client) -> Result<Option<i64>> {
    Ok(client
        .query_one("SELECT max(id) FROM histories", &[])?
        .get(0))
}

/// How many PENDING histories a claim with `scope` would take now (the planner's count).
pub fn count_claimable(client: &mut Client, scope: &ClaimScope) -> Result<u64> {
    let row = client.query_one(
        "SELECT count(*) FROM (SELECT 1 FROM histories
                                WHERE status = 'PENDING' AND ($1::bigint[] IS NULL OR id = ANY($1))
                                  AND ($3::bigint IS NULL OR id <= $3)
                                LIMIT $2) picked",
        &[&scope.only, &scope.limit, &scope.up_to],
    )?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// The claim's statement: locks up to `$2` PENDING histories (`$1`: only these ids; `$7`: ids up
/// to this one) with `FOR UPDATE SKIP LOCKED` and moves them to RUNNING under run `$3` with a lease
/// of `$4` seconds and their `run_params` (`$5` dataset, `$6` runner), returning what a scan needs.
/// The picked ids are matched as an array (an index lookup each): joined to the table as a set,
/// the planner compared every pair whenever the statistics said there was nothing pending (an
/// application's bulk INSERT just before a run), a hundred million comparisons for 10,000.
pub const CLAIM_SQL: &str = "WITH picked AS (
     SELECT id FROM histories
      WHERE status = 'PENDING' AND ($1::bigint[] IS NULL OR id = ANY($1))
        AND ($7::bigint IS NULL OR id <= $7)
      ORDER BY id LIMIT $2
        FOR UPDATE SKIP LOCKED)
 UPDATE histories h
    SET status = 'RUNNING', started_at = now(), finished_at = NULL, output = NULL, run_id = $3,
        attempts = h.attempts + 1, lease_expires_at = now() + make_interval(secs => $4),
        run_params = format('method=%s, filter=%s, max_results=%s, exclude_self=%s, max_distance=%s, dataset=%s, runner=%s',
                            h.similarity_method, h.face_source_filter, h.max_results, h.exclude_self::text,
                            coalesce(h.max_distance::text, 'none'), $5::text, $6::text)
  WHERE h.id = ANY (ARRAY(SELECT id FROM picked)) AND h.status = 'PENDING'
RETURNING h.id, h.in_face_id, h.similarity_method, h.face_source_filter, h.max_results, h.exclude_self,
          h.max_distance, (SELECT encoding FROM faces f WHERE f.id = h.in_face_id)";

/// Claims PENDING histories for run `run_id` in one transaction: locks them with `FOR UPDATE SKIP
/// LOCKED` (so concurrent runs split the set and never share a history), marks them RUNNING with
/// their `run_params`, and ends invalid ones in ERROR straight away.
pub fn claim(
    client: &mut Client,
    run_id: i64,
    scope: &ClaimScope,
    dataset_label: &str,
    dim: usize,
    runner_label: &str,
    lease: Duration,
) -> Result<Claim> {
    let mut tx = client.transaction()?;
    let rows = tx.query(
        CLAIM_SQL,
        &[
            &scope.only,
            &scope.limit,
            &run_id,
            &lease.as_secs_f64(),
            &dataset_label,
            &runner_label,
            &scope.up_to,
        ],
    )?;
    let mut claim = Claim::default();
    for row in rows {
        let id: i64 = row.get(0);
        let face_id: i64 = row.get(1);
        let method: String = row.get(2);
        let filter: String = row.get(3);
        let max_results: i32 = row.get(4);
        let exclude_self: bool = row.get(5);
        let max_distance: Option<f64> = row.get(6);
        let encoding: Option<Vec<f32>> = row.get(7);
        let checked = validate_params(&method, &filter, max_results.into(), max_distance).and_then(|params| {
            let encoding = encoding.ok_or_else(|| format!("query face {face_id} does not exist"))?;
            if encoding.len() != dim {
                return Err(format!(
                    "query face {face_id} has an encoding of dimension {}, dataset {dataset_label} has {dim}",
                    encoding.len()
                ));
            }
            Ok((params, encoding))
        });
        match checked {
            Ok(((method, filter, max_results), encoding)) => claim.queries.push(Query {
                history_id: id,
                encoding,
                method,
                filter,
                max_results,
                exclude_self: exclude_self.then_some(face_id),
                max_distance,
            }),
            Err(message) => claim.rejected.push((id, message)),
        }
    }
    for (id, message) in &claim.rejected {
        mark_error(&mut tx, run_id, &[*id], message)?;
    }
    tx.commit()?;
    Ok(claim)
}

fn mark_error(
    client: &mut impl postgres::GenericClient,
    run_id: i64,
    ids: &[i64],
    message: &str,
) -> Result<u64> {
    Ok(client.execute(
        "UPDATE histories SET status = 'ERROR', output = $3, finished_at = now(), lease_expires_at = NULL
          WHERE id = ANY($1) AND status = 'RUNNING' AND run_id = $2
            AND (lease_expires_at IS NULL OR lease_expires_at > now())",
        &[&ids, &run_id, &message],
    )?)
}

/// Ends histories of `run_id` in ERROR with `message` (zero items); returns how many it ended.
pub fn fail(client: &mut Client, run_id: i64, ids: &[i64], message: &str) -> Result<u64> {
    mark_error(client, run_id, ids, message)
}

/// Puts the RUNNING histories of a run that died back to PENDING (or ERROR with `reason` once
/// they have had `max_attempts` attempts); returns (requeued, errored). They have no items.
pub fn requeue(
    client: &mut Client,
    run_id: i64,
    ids: &[i64],
    max_attempts: i32,
    reason: &str,
) -> Result<(u64, u64)> {
    let rows = requeue_matching(
        client,
        "id = ANY($2) AND run_id = $3",
        "$4::text",
        &[&max_attempts, &ids, &run_id, &reason],
    )?;
    Ok(count_requeued(&rows))
}

/// Sends the RUNNING histories matching `condition` back to PENDING, or to ERROR once they have
/// had `$1` attempts, with `reason` (an SQL text expression) and the attempt count as the output.
/// Returns each one's new status and run.
fn requeue_matching(
    client: &mut impl postgres::GenericClient,
    condition: &str,
    reason: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<Vec<postgres::Row>> {
    Ok(client.query(
        &format!(
            "UPDATE histories
                SET status = CASE WHEN attempts >= $1 THEN 'ERROR' ELSE 'PENDING' END,
                    output = CASE WHEN attempts >= $1
                                  THEN format('%s; gave up after %s attempts', {reason}, attempts) END,
                    finished_at = CASE WHEN attempts >= $1 THEN now() END,
                    lease_expires_at = NULL
              WHERE status = 'RUNNING' AND {condition}
          RETURNING status, run_id"
        ),
        params,
    )?)
}

/// Sends back to PENDING whatever `run_id` still holds as it ends — nothing, unless a claim
/// committed although its answer was lost with the connection — so no history waits out a lease
/// for a run that is over. Returns how many went back.
pub fn release(client: &mut Client, run_id: i64) -> Result<u64> {
    Ok(client.execute(
        "UPDATE histories SET status = 'PENDING', attempts = greatest(attempts - 1, 0), lease_expires_at = NULL
          WHERE status = 'RUNNING' AND run_id = $1",
        &[&run_id],
    )?)
}

/// (requeued, errored) among the rows of [`requeue_matching`].
fn count_requeued(rows: &[postgres::Row]) -> (u64, u64) {
    let errored = rows
        .iter()
        .filter(|r| r.get::<_, String>(0) == "ERROR")
        .count() as u64;
    (rows.len() as u64 - errored, errored)
}

/// Histories per write transaction: large enough to amortise commits, small enough to keep
/// transactions short.
const WRITE_CHUNK: usize = 256;

/// What [`finish`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Histories FINISHED with their items.
    pub finished: u64,
    /// Histories the run no longer owned (another run took them after its lease expired):
    /// nothing was written for them.
    pub lost: Vec<i64>,
}

/// Writes each history's items and flips it to FINISHED in the same transaction — only while
/// the run still owns it: RUNNING under this run, with a lease not yet expired (the fence that
/// keeps a paused run from writing over a history another run has taken). `before_commit` runs
/// with each chunk's transaction open, its rows written but not committed (where the tests cut
/// the connection).
pub fn finish(
    client: &mut Client,
    run_id: i64,
    results: &BTreeMap<i64, Vec<Match>>,
    before_commit: &mut dyn FnMut(),
) -> Result<Written> {
    let entries: Vec<(&i64, &Vec<Match>)> = results.iter().collect();
    let mut written = Written::default();
    for chunk in entries.chunks(WRITE_CHUNK) {
        let mut tx = client.transaction()?;
        let ids: Vec<i64> = chunk.iter().map(|(id, _)| **id).collect();
        let owned: Vec<i64> = tx
            .query(
                "UPDATE histories SET status = 'FINISHED', finished_at = now(), output = NULL, lease_expires_at = NULL
                  WHERE id = ANY($1) AND status = 'RUNNING' AND run_id = $2
                    AND lease_expires_at > now()
              RETURNING id",
                &[&ids, &run_id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // Written by this very run already — a write repeated after the connection was lost
        // once its commit had gone through — is not lost.
        let missing: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !owned.contains(id))
            .collect();
        let already: Vec<i64> = if missing.is_empty() {
            Vec::new()
        } else {
            tx.query(
                "SELECT id FROM histories WHERE id = ANY($1) AND status = 'FINISHED' AND run_id = $2",
                &[&missing, &run_id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
        };
        written.finished += already.len() as u64;
        let (mut h, mut rank, mut face, mut score) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, matches) in chunk {
            if !owned.contains(id) {
                if !already.contains(id) {
                    written.lost.push(**id);
                }
                continue;
            }
            for (i, m) in matches.iter().enumerate() {
                h.push(**id);
                rank.push(i as i32 + 1);
                face.push(m.face_id);
                score.push(m.score);
            }
        }
        tx.execute(
            "INSERT INTO history_items (history_id, rank, face_id, similarity_score)
             SELECT * FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::float8[])",
            &[&h, &rank, &face, &score],
        )?;
        before_commit();
        tx.commit()?;
        written.finished += owned.len() as u64;
    }
    Ok(written)
}

/// Extends the lease of every history `run_id` holds.
pub fn heartbeat(client: &mut Client, run_id: i64, lease: Duration) -> Result<()> {
    client.execute(
        "UPDATE histories SET lease_expires_at = now() + make_interval(secs => $2)
          WHERE run_id = $1 AND status = 'RUNNING'",
        &[&run_id, &lease.as_secs_f64()],
    )?;
    client.execute(
        "UPDATE job_runs SET heartbeat_at = now() WHERE id = $1",
        &[&run_id],
    )?;
    Ok(())
}

/// Requeues histories whose run died (lease expired): back to PENDING while attempts remain,
/// otherwise ERROR. Returns (requeued, errored).
pub fn requeue_expired(client: &mut Client, max_attempts: i32) -> Result<(u64, u64)> {
    let mut tx = client.transaction()?;
    let rows = requeue_matching(
        &mut tx,
        "lease_expires_at < now()",
        "format('run %s stopped responding (lease expired)', run_id)",
        &[&max_attempts],
    )?;
    let mut dead_runs: Vec<i64> = rows
        .iter()
        .filter_map(|r| r.get::<_, Option<i64>>(1))
        .collect();
    dead_runs.sort_unstable();
    dead_runs.dedup();
    tx.execute(
        "UPDATE job_runs SET status = 'ERROR', error = 'lease expired: the run stopped responding', finished_at = now()
          WHERE id = ANY($1) AND status = 'RUNNING'",
        &[&dead_runs],
    )?;
    tx.commit()?;
    Ok(count_requeued(&rows))
}

/// A history with its results, for display.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryView {
    /// Id.
    pub id: i64,
    /// Query face.
    pub in_face_id: i64,
    /// Method as stored.
    pub similarity_method: String,
    /// Filter as stored.
    pub face_source_filter: String,
    /// N as stored (an ERROR history may hold one out of range).
    pub max_results: i32,
    /// Self-exclusion.
    pub exclude_self: bool,
    /// Distance bound.
    pub max_distance: Option<f64>,
    /// Status.
    pub status: String,
    /// What was run.
    pub run_params: Option<String>,
    /// Error text on ERROR.
    pub output: Option<String>,
    /// Attempts so far.
    pub attempts: i32,
    /// Owning run.
    pub run_id: Option<i64>,
    /// Timestamps.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it went RUNNING.
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When it ended.
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Results, best first.
    pub items: Vec<ItemView>,
}

/// One result row, with what is known about the face.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemView {
    /// 1-based rank.
    pub rank: i32,
    /// Face id.
    pub face_id: i64,
    /// `A` or `U`.
    pub source: Option<String>,
    /// Similarity.
    pub score: f64,
    /// Actor or user name, else image, if known.
    pub label: Option<String>,
}

/// Loads a history and its items.
pub fn load(client: &mut Client, id: i64) -> Result<HistoryView> {
    find(client, id)?.with_context(|| format!("history {id} does not exist"))
}

/// A history and its items, None when there is none with this id.
pub fn find(client: &mut Client, id: i64) -> Result<Option<HistoryView>> {
    let Some(row) = client.query_opt(
            "SELECT id, in_face_id, similarity_method, face_source_filter, max_results, exclude_self, max_distance,
                    status, run_params, output, attempts, run_id, created_at, started_at, finished_at
               FROM histories WHERE id = $1",
        &[&id],
    )?
    else {
        return Ok(None);
    };
    let items = client
        .query(
            "SELECT i.rank, i.face_id, f.source, i.similarity_score,
                    nullif(concat_ws(' · ', coalesce(a.name, u.username), f.image_uri), '')
               FROM history_items i
               LEFT JOIN faces f ON f.id = i.face_id
               LEFT JOIN actors a ON a.id = f.actor_id
               LEFT JOIN users u ON u.id = f.user_id
              WHERE i.history_id = $1 ORDER BY i.rank",
            &[&id],
        )?
        .iter()
        .map(|r| ItemView {
            rank: r.get(0),
            face_id: r.get(1),
            source: r.get(2),
            score: r.get(3),
            label: r.get(4),
        })
        .collect();
    Ok(Some(HistoryView {
        id: row.get(0),
        in_face_id: row.get(1),
        similarity_method: row.get(2),
        face_source_filter: row.get(3),
        max_results: row.get(4),
        exclude_self: row.get(5),
        max_distance: row.get(6),
        status: row.get(7),
        run_params: row.get(8),
        output: row.get(9),
        attempts: row.get(10),
        run_id: row.get(11),
        created_at: row.get(12),
        started_at: row.get(13),
        finished_at: row.get(14),
        items,
    }))
}

/// How many histories are in each status, by status name.
pub fn status_counts(client: &mut Client) -> Result<Vec<(String, i64)>> {
    Ok(client
        .query(
            "SELECT status, count(*) FROM histories GROUP BY status ORDER BY status",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// One line of the list of searches (newest first).
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryLine {
    /// `histories.id`.
    pub id: i64,
    /// Query face.
    pub in_face_id: i64,
    /// Method as stored.
    pub similarity_method: String,
    /// Filter as stored.
    pub face_source_filter: String,
    /// N as stored.
    pub max_results: i32,
    /// Status.
    pub status: String,
    /// When it was submitted.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it ended.
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Results written.
    pub items: i64,
    /// Who the query face is (actor or user), if known.
    pub who: Option<String>,
}

/// Up to `limit` histories older than `before` (the newest when None), newest first, and how
/// many histories there are in all.
pub fn page(
    client: &mut Client,
    before: Option<i64>,
    limit: i64,
) -> Result<(Vec<HistoryLine>, i64)> {
    let lines = client
        .query(
            "SELECT h.id, h.in_face_id, h.similarity_method, h.face_source_filter, h.max_results,
                    h.status, h.created_at, h.finished_at,
                    (SELECT count(*) FROM history_items i WHERE i.history_id = h.id),
                    coalesce(a.name, u.username)
               FROM histories h
               LEFT JOIN faces f ON f.id = h.in_face_id
               LEFT JOIN actors a ON a.id = f.actor_id
               LEFT JOIN users u ON u.id = f.user_id
              WHERE $1::bigint IS NULL OR h.id < $1
              ORDER BY h.id DESC LIMIT $2",
            &[&before, &limit],
        )?
        .iter()
        .map(|r| HistoryLine {
            id: r.get(0),
            in_face_id: r.get(1),
            similarity_method: r.get(2),
            face_source_filter: r.get(3),
            max_results: r.get(4),
            status: r.get(5),
            created_at: r.get(6),
            finished_at: r.get(7),
            items: r.get(8),
            who: r.get(9),
        })
        .collect();
    let total = client
        .query_one("SELECT count(*) FROM histories", &[])?
        .get(0);
    Ok((lines, total))
}

/// The status of history `id`, if it exists.
pub fn status(client: &mut Client, id: i64) -> Result<Option<String>> {
    Ok(client
        .query_opt("SELECT status FROM histories WHERE id = $1", &[&id])?
        .map(|r| r.get(0)))
}

/// The status (and attempts) of those of `ids` that exist, as a notification would carry it.
pub fn statuses(
    client: &mut Client,
    ids: &[i64],
) -> Result<std::collections::HashMap<i64, super::notify::StatusChange>> {
    Ok(client
        .query(
            "SELECT id, status, attempts FROM histories WHERE id = ANY($1)",
            &[&ids],
        )?
        .iter()
        .map(|r| {
            let change = super::notify::StatusChange {
                id: r.get(0),
                status: r.get(1),
                attempts: r.get(2),
            };
            (change.id, change)
        })
        .collect())
}
