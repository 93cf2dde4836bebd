//! `facematch stats`: counts of faces and photos per source, and the mean encoding of a dataset.

use super::common::{DatabaseArgs, S3Args, parse_dataset};
use crate::output::{print_json, stats};
use crate::store::datasets;
use anyhow::Result;
use clap::Args;

/// `facematch stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// `name` or `name@vN` (default: the current dataset).
    #[arg(long, env = "FACEMATCH_DATASET")]
    dataset: Option<String>,
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    s3: S3Args,
}

/// Prints the figures.
pub fn exec(args: StatsArgs, json: bool) -> Result<()> {
    let dataset = parse_dataset(args.dataset.as_deref())?;
    let mut client = args.db.reader()?;
    let row = datasets::resolve(&mut client, dataset.as_ref())?;
    let figures = stats::collect(&mut client, &row, &args.s3.options())?;
    if json {
        print_json(&figures)
    } else {
        print!("{}", stats::render(&figures));
        Ok(())
    }
}
