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

/// Connects to `url` (any Postgres, not only the local one). A URL without a password takes the
/// one in `PGPASSWORD`, as libpq does, so a password never has to be written into a URL.
pub fn connect(url: &str) -> Result<Client> {
    config(url, std::env::var("PGPASSWORD").ok())?
        .connect(NoTls)
        .with_context(|| format!("cannot connect to Postgres at {}", redact(url)))
}

/// The connection settings of `url`, with `password` when the URL has none.
fn config(url: &str, password: Option<String>) -> Result<postgres::Config> {
    let mut config: postgres::Config = url
        .parse()
        .with_context(|| format!("not a Postgres URL: {}", redact(url)))?;
    if config.get_password().is_none()
        && let Some(password) = password
    {
        config.password(password);
    }
    Ok(config)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpassword_fills_in_a_url_without_a_password() {
        let set = |url: &str, pw: Option<&str>| {
            config(url, pw.map(str::to_string))
                .unwrap()
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned())
        };
        // A password with characters a URL would need escaped, passed as it is.
        let secret = "p@ss:w/rd%?# x";
        assert_eq!(
            set("postgres://app@db:5432/facematch", Some(secret)).as_deref(),
            Some(secret)
        );
        assert_eq!(
            set("postgres://app:inline@db/facematch", Some(secret)).as_deref(),
            Some("inline")
        );
        assert_eq!(set("postgres://app@db/facematch", None), None);
        assert!(config("not a url at all ::", None).is_err());
    }
}
