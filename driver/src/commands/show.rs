//! `facematch show`: one history and its results.

use super::common::DatabaseArgs;
use crate::output::{print_json, tables};
use crate::store::histories;
use anyhow::Result;
use clap::Args;

/// `facematch show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// History id.
    id: i64,
    #[command(flatten)]
    db: DatabaseArgs,
}

/// Prints the history.
pub fn exec(args: ShowArgs, json: bool) -> Result<()> {
    let view = histories::load(&mut args.db.reader()?, args.id)?;
    if json {
        print_json(&view)
    } else {
        print!("{}", tables::history(&view));
        Ok(())
    }
}
