//! `schedule_windows`: the windows of `facematch schedule`. A window is taken by inserting its key;
//! the primary key lets exactly one scheduler win it, however many share the database.

use anyhow::Result;
use postgres::GenericClient;

/// Takes the window `key` for `scheduler`; false when another scheduler already has it.
pub fn take(client: &mut impl GenericClient, key: &str, scheduler: &str) -> Result<bool> {
    Ok(client.execute(
        "INSERT INTO schedule_windows (window_key, scheduler) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&key, &scheduler],
    )? == 1)
}

/// Whether a run would find work: a PENDING history, or a RUNNING one whose lease expired.
pub fn has_work(client: &mut impl GenericClient) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM histories WHERE status = 'PENDING'
                              OR (status = 'RUNNING' AND lease_expires_at < now()))",
            &[],
        )?
        .get(0))
}

/// How a window ended.
#[derive(Debug, Clone, Copy)]
pub struct WindowEnd<'a> {
    /// FINISHED or ERROR.
    pub status: &'a str,
    /// Why it failed.
    pub error: Option<&'a str>,
    /// The run it made, if any.
    pub run_id: Option<i64>,
    /// Histories it claimed.
    pub histories: usize,
}

/// Records how window `key` ended.
pub fn finish(client: &mut impl GenericClient, key: &str, end: WindowEnd<'_>) -> Result<()> {
    client.execute(
        "UPDATE schedule_windows SET status = $2, error = $3, run_id = $4, histories = $5,
                finished_at = now()
          WHERE window_key = $1",
        &[
            &key,
            &end.status,
            &end.error,
            &end.run_id,
            &(end.histories as i32),
        ],
    )?;
    Ok(())
}
