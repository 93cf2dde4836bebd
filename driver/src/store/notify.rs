//! LISTEN/NOTIFY: the channels the schema's triggers notify on (migration V7) and waiting on
//! them. A notification arrives only once its transaction committed, so whoever hears a history
//! end finds its items there.

use anyhow::{Context, Result};
use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;
use std::time::{Duration, Instant};

/// A history became PENDING (inserted or requeued); payload empty.
pub const PENDING: &str = "facematch_pending";
/// Every status change of a history; payload `{"id": …, "status": "…"}`.
pub const HISTORY_STATUS: &str = "facematch_history_status";
/// A history ended (FINISHED or ERROR); payload `{"id": …, "status": "…"}`.
pub const HISTORY_DONE: &str = "facematch_history_done";
/// A dataset version became current; payload `{"id": …, "name": "…", "version": …}`.
pub const DATASET: &str = "facematch_dataset";

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The channel.
    pub channel: String,
    /// Its payload.
    pub payload: String,
}

/// A history's status change, as [`HISTORY_STATUS`] and [`HISTORY_DONE`] carry it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct StatusChange {
    /// `histories.id`.
    pub id: i64,
    /// The new status.
    pub status: String,
    /// `histories.attempts` with it (migration V8).
    #[serde(default)]
    pub attempts: i32,
}

impl StatusChange {
    /// Where the change comes in the history's life: later changes have larger keys. Each claim
    /// adds an attempt; within one, RUNNING comes first, then a requeue's PENDING or the end.
    pub fn order(&self) -> (i32, u8) {
        let step = match self.status.as_str() {
            "RUNNING" => 0,
            "PENDING" => 1,
            _ => 2,
        };
        (self.attempts, step)
    }
}

impl Notice {
    /// The status change this notice carries, if it is one.
    pub fn status_change(&self) -> Option<StatusChange> {
        (self.channel == HISTORY_STATUS || self.channel == HISTORY_DONE)
            .then(|| serde_json::from_str(&self.payload).ok())
            .flatten()
    }
}

/// A connection listening on some channels, made again at the next [`Listener::wait`] after it
/// was lost (a restarted server, a failover).
pub struct Listener {
    database_url: String,
    channels: &'static [&'static str],
    client: Option<Client>,
}

impl Listener {
    /// Connects to `database_url` and listens on `channels`.
    pub fn connect(database_url: &str, channels: &'static [&'static str]) -> Result<Listener> {
        let mut listener = Listener {
            database_url: database_url.to_string(),
            channels,
            client: None,
        };
        listener.ensure()?;
        Ok(listener)
    }

    fn ensure(&mut self) -> Result<&mut Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let mut client = super::connect(&self.database_url)?;
            let statements: String = self
                .channels
                .iter()
                .map(|c| format!("LISTEN {c};"))
                .collect();
            client
                .batch_execute(&statements)
                .with_context(|| format!("listening on {}", self.channels.join(", ")))?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// The notifications that arrive within `timeout` (returning as soon as one has, with every
    /// other already queued behind it); empty when none came. After an error the connection is
    /// dropped, and the next call makes it again; anything notified meanwhile is lost, so a
    /// caller looks for work itself after one.
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<Notice>> {
        let waited = self.ensure().and_then(|client| wait_on(client, timeout));
        if waited.is_err() {
            self.client = None;
        }
        waited
    }
}

fn wait_on(client: &mut Client, timeout: Duration) -> Result<Vec<Notice>> {
    let deadline = Instant::now() + timeout;
    let mut notices = Vec::new();
    let mut notifications = client.notifications();
    let first = notifications
        .timeout_iter(deadline.saturating_duration_since(Instant::now()))
        .next()
        .context("waiting for notifications")?;
    if let Some(first) = first {
        notices.push(first);
        let mut queued = notifications.iter();
        while let Some(more) = queued.next().context("reading notifications")? {
            notices.push(more);
        }
    }
    Ok(notices
        .into_iter()
        .map(|n| Notice {
            channel: n.channel().to_string(),
            payload: n.payload().to_string(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_s_changes_order_through_requeues() {
        let change = |status: &str, attempts| StatusChange {
            id: 1,
            status: status.into(),
            attempts,
        };
        // Inserted, claimed, requeued by a dead run, claimed again, finished.
        let life = [
            change("PENDING", 0),
            change("RUNNING", 1),
            change("PENDING", 1),
            change("RUNNING", 2),
            change("FINISHED", 2),
        ];
        assert!(life.windows(2).all(|w| w[0].order() < w[1].order()));
        let notice = Notice {
            channel: HISTORY_STATUS.into(),
            payload: r#"{"id": 7, "status": "RUNNING"}"#.into(),
        };
        // A V7 payload (no attempts) still reads.
        assert_eq!(notice.status_change().map(|c| c.attempts), Some(0));
    }
}
