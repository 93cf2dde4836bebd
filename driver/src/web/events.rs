//! The status hub: one LISTEN connection on `facematch_history_status`, fanned out to every
//! server-sent event stream (`GET /api/searches/{id}/events`) through a broadcast channel, so a
//! thousand open pages cost one database connection.
//!
//! A stream subscribes before it reads the history's current status, so a change between the
//! two is not lost; it ends once the history is FINISHED or ERROR.

use crate::store::notify::{self, StatusChange};
use anyhow::Result;
use std::time::Duration;
use tokio::sync::broadcast;

/// Statuses after which nothing changes.
pub fn is_final(status: &str) -> bool {
    matches!(status, "FINISHED" | "ERROR")
}

/// The sending side of the status changes.
pub struct Hub {
    sender: broadcast::Sender<StatusChange>,
}

impl Hub {
    /// Listens on `database_url` in a thread of its own, which makes the connection again when it
    /// is lost and ends when a stop is requested.
    pub fn start(database_url: &str) -> Result<Hub> {
        let (sender, _) = broadcast::channel(4096);
        let listener = notify::Listener::connect(database_url, &[notify::HISTORY_STATUS])?;
        let fan_out = sender.clone();
        std::thread::Builder::new()
            .name("status-hub".into())
            .spawn(move || listen(listener, fan_out))?;
        Ok(Hub { sender })
    }

    /// A receiver of every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StatusChange> {
        self.sender.subscribe()
    }
}

fn listen(mut listener: notify::Listener, fan_out: broadcast::Sender<StatusChange>) {
    while !crate::signals::stop_requested() {
        match listener.wait(Duration::from_millis(200)) {
            Ok(notices) => {
                for change in notices.iter().filter_map(notify::Notice::status_change) {
                    // No receiver is no error: nobody is watching right now.
                    let _ = fan_out.send(change);
                }
            }
            Err(e) => {
                // Reconnected at the next wait; open streams see their next change.
                tracing::warn!("status hub: {e:#}; listening again in a second");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
