//! `facematch db start|stop|migrate`: the local throwaway server and the schema.

use super::common::DatabaseArgs;
use crate::store::{self, local::LocalPostgres};
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

/// `facematch db …`.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Start (initialising if needed) a local PostgreSQL 15 on 127.0.0.1; prints its DATABASE_URL.
    Start {
        /// Server folder [env FACEMATCH_PG_DIR, default .local/pg].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Port (0 = a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// Stop the local server.
    Stop {
        /// Server folder [env FACEMATCH_PG_DIR, default .local/pg].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Apply the embedded schema migrations to DATABASE_URL.
    Migrate {
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

/// Runs `facematch db …`.
pub fn exec(cmd: DbCommand) -> Result<()> {
    let server = |dir: Option<PathBuf>| {
        dir.map(LocalPostgres::new)
            .unwrap_or_else(LocalPostgres::from_env)
    };
    match cmd {
        DbCommand::Start { dir, port } => {
            let url = server(dir).start(port)?;
            store::connect_migrated(&url)?;
            println!("{url}");
        }
        DbCommand::Stop { dir } => server(dir).stop()?,
        DbCommand::Migrate { db } => {
            let mut client = store::connect(&db.url()?)?;
            let applied = store::migrate(&mut client)?;
            let version = store::applied_schema(&mut client)?;
            println!("schema at V{version} ({applied} migration(s) applied now)");
        }
    }
    Ok(())
}
