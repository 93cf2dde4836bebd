//! The run's heartbeat: a side thread that extends the lease of every history the run holds, so
//! no other run requeues them while this one is making progress.

use crate::store::histories;
use std::sync::mpsc;
use std::time::Duration;

/// Runs `work` while a side thread keeps run `run_id`'s lease alive (renewed every third of it).
pub fn with_heartbeat<T>(
    database_url: &str,
    run_id: i64,
    lease: Duration,
    work: impl FnOnce() -> T,
) -> T {
    let (stop, stopped) = mpsc::channel::<()>();
    let url = database_url.to_string();
    let beat = std::thread::spawn(move || {
        let mut client = None;
        let period = (lease / 3).max(Duration::from_millis(200));
        while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
            // A connection lost (the server restarted) is made again at the next beat: two
            // beats in three may fail before the lease runs out.
            if client.as_ref().is_none_or(postgres::Client::is_closed) {
                client = crate::store::connect(&url)
                    .inspect_err(|e| tracing::warn!(run_id, "heartbeat cannot connect: {e:#}"))
                    .ok();
            }
            if let Some(connection) = client.as_mut()
                && let Err(e) = histories::heartbeat(connection, run_id, lease)
            {
                tracing::warn!(run_id, "heartbeat failed: {e:#}");
            }
        }
    });
    let result = work();
    let _ = stop.send(());
    let _ = beat.join();
    result
}
