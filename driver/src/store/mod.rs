//! Postgres, the system of record: connecting, the embedded migrations (refinery,
//! `driver/migrations/`), and one module per kind of row — [`histories`] (the state machine),
//! [`datasets`] (dataset versions), [`faces`] (faces, photos, actors and users, face-id
//! allocation), [`job_runs`] (what each run did), [`builds`] (dataset builds), [`windows`]
//! (scheduled windows) — plus [`local`], the throwaway server of `facematch db start`.
//!
//! Every SQL statement of the driver lives here; the rest of the driver calls these functions and
//! never writes SQL of its own (ARCHITECTURE.md: Invariants).

pub mod builds;
pub mod datasets;
pub mod faces;
pub mod histories;
pub mod job_runs;
pub mod local;
pub mod windows;

use anyhow::{Context, Result};
use postgres::{Client, NoTls};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Connects to `url` (any Postgres, not only the local one).
pub fn connect(url: &str) -> Result<Client> {
    Client::connect(url, NoTls)
        .with_context(|| format!("cannot connect to Postgres at {}", redact(url)))
}

/// Connects and brings the schema up to date.
pub fn connect_migrated(url: &str) -> Result<Client> {
    let mut client = connect(url)?;
    migrate(&mut client)?;
    Ok(client)
}

/// Applies pending migrations; returns how many were applied. Safe to run concurrently: refinery
/// takes no lock, so we serialise on an advisory lock.
pub fn migrate(client: &mut Client) -> Result<usize> {
    client.execute("SELECT pg_advisory_lock(7346201)", &[])?;
    let report = embedded::migrations::runner().run(client);
    client.execute("SELECT pg_advisory_unlock(7346201)", &[])?;
    Ok(report
        .context("applying migrations")?
        .applied_migrations()
        .len())
}

/// Creates database `name` through an admin connection if it does not exist.
pub fn ensure_database(admin_url: &str, name: &str) -> Result<()> {
    let mut client = connect(admin_url)?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])?
        .is_some();
    if !exists {
        client.batch_execute(&format!("CREATE DATABASE \"{}\"", name.replace('"', "")))?;
    }
    Ok(())
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
