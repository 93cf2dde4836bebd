//! `facematch report`: searches as one self-contained HTML file to mail around.

use super::common::{DatabaseArgs, S3Args};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// `facematch report`.
#[derive(Debug, Args)]
#[cfg_attr(not(feature = "web"), allow(dead_code))]
pub struct ReportArgs {
    /// The searches (history ids) to put in the report.
    #[arg(required_unless_present = "last", value_parser = clap::value_parser!(i64).range(1..))]
    histories: Vec<i64>,
    /// Report the newest N searches instead (newest last).
    #[arg(long, conflicts_with = "histories", value_parser = clap::value_parser!(i64).range(1..=1000))]
    last: Option<i64>,
    /// The HTML file to write.
    #[arg(long, short, default_value = "report.html")]
    output: PathBuf,
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    s3: S3Args,
}

/// Writes the report and prints its path.
#[cfg(feature = "web")]
pub fn exec(args: ReportArgs) -> Result<()> {
    use anyhow::Context;
    let mut client = args.db.reader()?;
    let ids = match args.last {
        Some(n) => {
            let (newest, _) = crate::store::histories::page(&mut client, None, n)?;
            newest.iter().rev().map(|h| h.id).collect()
        }
        None => args.histories,
    };
    if ids.is_empty() {
        anyhow::bail!("there is no search to report yet: run one first");
    }
    let html = crate::web::report::render(&mut client, &ids, &args.s3.options())?;
    // Written beside its place and renamed: a reader never sees half a report.
    let partial = args.output.with_extension("html.partial");
    std::fs::write(&partial, html).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!("{}", args.output.display());
    Ok(())
}

/// Without the feature: says what is missing.
#[cfg(not(feature = "web"))]
pub fn exec(_: ReportArgs) -> Result<()> {
    anyhow::bail!("this facematch was built without the `web` feature: `report` is not in it")
}
