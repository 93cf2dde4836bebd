//! Postgres, the system of record: connecting, the embedded migrations (refinery,
//! `driver/migrations/`), and one module per kind of row — [`histories`] (the state machine),
//! [`datasets`] (dataset versions), [`faces`] (faces, photos, actors and users, face-id
//! allocation), [`job_runs`] (what each run did), [`builds`] (dataset builds), [`windows`]
//! (scheduled windows), [`notify`] (LISTEN/NOTIFY) — plus [`local`], the throwaway server of `facematch db start`.
//!
//! Every SQL statement of the driver lives here; the rest of the driver calls these functions and
//! never writes SQL of its own (ARCHITECTURE.md: Invariants).

pub mod builds;
pub mod datasets;
pub mod faces;
pub mod histories;
pub mod job_runs;
pub mod local;
pub mod notify;
pub mod tls;
pub mod windows;

use anyhow::{Context, Result, bail};
use postgres::Client;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Connects to `url` (any Postgres, not only the local one), with the TLS its `sslmode` and
/// `sslrootcert` ask for ([`tls`]). A URL without a password takes the one in `PGPASSWORD`, as
/// libpq does, so a password never has to be written into a URL.
pub fn connect(url: &str) -> Result<Client> {
    let (rest, settings) =
        tls::split(url).with_context(|| format!("not a Postgres URL: {}", redact(url)))?;
    let mut config = config(&rest, std::env::var("PGPASSWORD").ok())?;
    let (mode, connector) = tls::connector(&settings)
        .with_context(|| format!("cannot connect to Postgres at {}", redact(url)))?;
    config.ssl_mode(mode);
    config
        .connect(connector)
        .map_err(|e| refused(e, url, &settings))
}

/// What a failed connection says, with what to do about a refused certificate.
fn refused(error: postgres::Error, url: &str, settings: &tls::TlsSettings) -> anyhow::Error {
    use rustls::CertificateError::{NotValidForName, NotValidForNameContext, UnknownIssuer};
    let root = settings
        .root_cert
        .as_deref()
        .unwrap_or("~/.postgresql/root.crt");
    let hint = match tls::refused_certificate(&error) {
        Some(UnknownIssuer) => format!(
            ": the server's certificate is not signed by a CA in sslrootcert={root} (give the CA \
             that signed it)"
        ),
        Some(NotValidForName | NotValidForNameContext { .. }) => {
            ": the server's certificate is not issued for the host connected to (sslmode=\
             verify-full checks the name: connect by a name the certificate lists)"
                .to_string()
        }
        Some(other) => format!(": the server's certificate was refused ({other:?})"),
        None => String::new(),
    };
    // With its causes: the server's own words ("pg_hba.conf rejects …") or the TLS error.
    let text = format!("{:#}", anyhow::Error::new(error));
    anyhow::anyhow!(
        "cannot connect to Postgres at {}{hint}: {text}",
        redact(url)
    )
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

/// What a command does with the database, for the schema check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only reads (needs SELECT rights, and works on a newer schema than this facematch knows).
    Read,
    /// Writes rows (refused on a schema newer than this facematch knows).
    Write,
}

/// Connects and checks that the schema is the one this facematch was built for. Nothing but
/// `facematch db migrate` (and `db start`, for its own server) changes the schema: a newer
/// facematch never migrates a production database as a side effect of another command.
pub fn connect_checked(url: &str, access: Access) -> Result<Client> {
    let mut client = connect(url)?;
    check_schema(&mut client, access)?;
    Ok(client)
}

/// The newest migration this facematch embeds.
pub fn known_schema() -> u32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0)
}

/// The newest migration applied to the database (0: none).
pub fn applied_schema(client: &mut Client) -> Result<u32> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let version: Option<i32> = client
        .query_one("SELECT max(version) FROM refinery_schema_history", &[])?
        .get(0);
    Ok(version.map_or(0, |v| v.max(0) as u32))
}

fn check_schema(client: &mut Client, access: Access) -> Result<()> {
    let (applied, known) = (applied_schema(client)?, known_schema());
    match applied.cmp(&known) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less if applied == 0 => bail!(
            "the database has no facematch schema yet (this facematch needs V{known}): run \
             `facematch db migrate`"
        ),
        std::cmp::Ordering::Less => bail!(
            "schema is at V{applied}, this facematch needs V{known}: run `facematch db migrate`"
        ),
        std::cmp::Ordering::Greater if access == Access::Write => bail!(
            "schema is at V{applied}, newer than this facematch knows (V{known}): it refuses to \
             write; use the facematch that migrated it"
        ),
        std::cmp::Ordering::Greater => {
            tracing::warn!(
                "schema is at V{applied}, newer than this facematch knows (V{known}): reading only"
            );
            Ok(())
        }
    }
}

/// Connects and brings the schema up to date: `db start`'s own server only.
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

/// The connection string without its password, for messages: `scheme://user:***@…`,
/// `?password=***`, and `password=***` in libpq's key=value form.
pub fn redact(url: &str) -> String {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return match tls::key_values(url) {
            Ok(pairs) => pairs
                .into_iter()
                .map(|(key, value)| match key.as_str() {
                    "password" => format!("{key}=***"),
                    _ => format!("{key}={value}"),
                })
                .collect::<Vec<_>>()
                .join(" "),
            // Not even parseable: say nothing of it rather than risk printing a password.
            Err(_) => "<unparseable connection string>".to_string(),
        };
    }
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    // The user info ends at the last `@` of the authority (a password may hold `@` and `/`).
    let authority_end = base[scheme_end..]
        .rfind('@')
        .map(|at| scheme_end + at)
        .unwrap_or(scheme_end);
    let mut out = match base[scheme_end..authority_end].split_once(':') {
        Some((user, _)) => format!(
            "{}{user}:***{}",
            &base[..scheme_end],
            &base[authority_end..]
        ),
        None => base.to_string(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=***".to_string(),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
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

    #[test]
    fn no_password_survives_redaction_in_any_syntax() {
        let secret = "s3cr@t/pw";
        for (url, shown) in [
            (
                "postgres://app:s3cr@t/pw@db:5432/facematch",
                "postgres://app:***@db:5432/facematch",
            ),
            (
                "postgresql://app@db/facematch?sslmode=require&password=s3cr@t/pw",
                "postgresql://app@db/facematch?sslmode=require&password=***",
            ),
            (
                "host=db user=app password='s3cr@t/pw' dbname=facematch",
                "host=db user=app password=*** dbname=facematch",
            ),
            ("host=db password = s3cr@t/pw", "host=db password=***"),
            ("password='s3cr@t/pw", "<unparseable connection string>"),
        ] {
            let redacted = redact(url);
            assert_eq!(redacted, shown);
            assert!(!redacted.contains(secret), "{redacted}");
        }
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
    }
}
