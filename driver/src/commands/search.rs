//! `facematch search`: submit a search, run it now, and print the result.

use super::EXIT_HISTORY_ERROR;
use super::run::RunArgs;
use super::submit::QueryArgs;
use crate::batch::{RunOptions, run_pending};
use crate::output::{print_json, tables};
use crate::store::histories::{self, ClaimScope};
use anyhow::Result;
use clap::Args;
use std::process::ExitCode;

/// `facematch search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    query: QueryArgs,
    #[command(flatten)]
    run: RunArgs,
}

/// Submits one history, runs just it, prints it; exit 3 unless it FINISHED.
pub fn exec(args: SearchArgs, json: bool) -> Result<ExitCode> {
    args.query.check("search")?;
    let url = args.run.db.url()?;
    let mut client = crate::store::connect_checked(&url, crate::store::Access::Write)?;
    let face = args
        .query
        .face_id(&mut client, &args.run.s3, args.run.dataset.as_deref())?;
    let id = histories::submit(&mut client, &args.query.submission(face))?;
    let runner = args.run.runner()?;
    let scope = ClaimScope {
        only: Some(vec![id]),
        ..ClaimScope::default()
    };
    // One question answered now: the plan would only be noise.
    let options = RunOptions {
        print_plan: false,
        ..args.run.options(scope)?
    };
    let summary = run_pending(&url, runner.as_ref(), &options)?;
    let view = histories::load(&mut crate::store::connect(&url)?, id)?;
    if json {
        print_json(&view)?;
    } else {
        print!("{}", tables::history(&view));
        eprint!("{}", tables::run_summary(&summary));
    }
    if view.status != "FINISHED" {
        return Ok(ExitCode::from(EXIT_HISTORY_ERROR));
    }
    Ok(ExitCode::SUCCESS)
}
