//! The `facematch` command line, in the shape of cargo's own: one file per verb, each holding
//! that verb's clap arguments and a short `exec` that calls a library operation of another room
//! ([`crate::batch`], [`crate::store`], [`crate::runner`], …) and prints what it returns through
//! [`crate::output`]. This file holds the verb list, the one global flag (`--json`), the dispatch
//! and the exit codes (README: Using it).

mod bench;
mod common;
mod dataset;
mod db;
mod emr;
mod photos;
mod report;
mod run;
mod schedule;
mod search;
mod serve;
mod show;
mod stats;
mod submit;
mod watch;
mod worker;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Exit code when the command worked but some history ended in ERROR (or the run failed).
pub const EXIT_HISTORY_ERROR: u8 = 3;
/// Exit code when the planner refused the runner (nothing was claimed).
pub const EXIT_PLAN_REFUSED: u8 = 4;

/// facematch: finds the faces most like a given face, exactly, over a whole dataset, in batch.
#[derive(Debug, Parser)]
#[command(name = "facematch", version, about, propagate_version = true)]
pub struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Local Postgres server and schema.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Datasets: build, generate, import, export, list, show.
    #[command(subcommand)]
    Dataset(dataset::DatasetCommand),
    /// Queue a search (a PENDING history); prints its id.
    Submit(submit::SubmitArgs),
    /// Claim every PENDING history and answer them all in one pass over the dataset.
    Run(run::RunArgs),
    /// Submit a search, run it now, and print the result.
    Search(search::SearchArgs),
    /// Show a history and its results.
    Show(show::ShowArgs),
    /// Run the PENDING histories as one batch every period (windows are never run twice, even by
    /// several schedulers on one database); SIGTERM finishes the current window and exits.
    Schedule(schedule::ScheduleArgs),
    /// The web app and JSON API: upload a photo, see the most similar faces; searches are
    /// answered at once over the dataset held in memory.
    Serve(serve::ServeArgs),
    /// Searches as one self-contained HTML file (crops inline) to mail around.
    Report(report::ReportArgs),
    /// Answer histories as they arrive (LISTEN/NOTIFY) with the dataset held in memory, until
    /// SIGTERM: the engine of `serve` on a headless host.
    Watch(watch::WatchArgs),
    /// Join a timely cluster as one worker process (what `--runner processes`, a cluster host or
    /// an EMR step starts).
    Worker(worker::WorkerArgs),
    /// EMR clusters: status and termination.
    #[command(subcommand)]
    Emr(emr::EmrCommand),
    /// Find the faces in photos and print their boxes and 128-d encodings (needs the `photos`
    /// feature).
    Encode(photos::EncodeArgs),
    /// Faces from photos, registered in the database (needs the `photos` feature).
    #[command(subcommand)]
    Faces(photos::FacesCommand),
    /// Counts of faces and photos per source, and the mean encoding of a dataset.
    Stats(stats::StatsArgs),
    /// Benchmarks: the kernel's own speed, and the data the peers of `make bench` score.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

impl Command {
    /// Whether the command runs dlib over many photos, whose allocations want an allocator that
    /// keeps what it frees ([`facematch_datasets::face::keep_freed_memory`]). A worker may be
    /// handed a build.
    #[cfg(feature = "photos")]
    fn encodes_photos(&self) -> bool {
        matches!(
            self,
            Command::Dataset(dataset::DatasetCommand::Build(_))
                | Command::Encode(_)
                | Command::Faces(_)
                | Command::Worker(_)
        )
    }
}

/// Parses arguments, runs the command, maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread starts: the allocator settings apply to arenas made from here on.
    #[cfg(feature = "photos")]
    if cli.command.encodes_photos() {
        facematch_datasets::face::keep_freed_memory();
    }
    match exec(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<crate::batch::PlanRefused>().is_some() {
                ExitCode::from(EXIT_PLAN_REFUSED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn exec(cli: Cli) -> Result<ExitCode> {
    let json = cli.json;
    let done = |()| ExitCode::SUCCESS;
    match cli.command {
        Command::Db(cmd) => db::exec(cmd).map(done),
        Command::Dataset(cmd) => dataset::exec(cmd, json),
        Command::Submit(args) => submit::exec(args, json).map(done),
        Command::Run(args) => run::exec(args, json),
        Command::Search(args) => search::exec(args, json),
        Command::Show(args) => show::exec(args, json).map(done),
        Command::Schedule(args) => schedule::exec(args, json).map(done),
        Command::Serve(args) => serve::exec(args).map(done),
        Command::Report(args) => report::exec(args).map(done),
        Command::Watch(args) => watch::exec(args, json).map(done),
        Command::Worker(args) => worker::exec(args).map(done),
        Command::Emr(cmd) => emr::exec(cmd, json).map(done),
        Command::Encode(args) => photos::encode(args, json),
        Command::Faces(cmd) => photos::faces(cmd, json),
        Command::Stats(args) => stats::exec(args, json).map(done),
        Command::Bench(cmd) => bench::exec(cmd, json).map(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Each verb lists only the flags it uses: a benchmark knows no database or S3.
    #[test]
    fn verbs_show_only_their_own_flags() {
        let mut cli = Cli::command();
        cli.build(); // propagates the global --json to every verb
        let bench = cli.find_subcommand_mut("bench").expect("bench");
        let kernel = bench.find_subcommand_mut("kernel").expect("kernel");
        let help = kernel.render_long_help().to_string();
        for flag in [
            "--database-url",
            "--s3-endpoint",
            "--image-store",
            "--dataset-root",
        ] {
            assert!(
                !help.contains(flag),
                "bench kernel --help lists {flag}:\n{help}"
            );
        }
        assert!(help.contains("--json"), "{help}");
        let run = cli.find_subcommand_mut("run").expect("run");
        let help = run.render_long_help().to_string();
        for flag in [
            "--database-url",
            "--s3-endpoint",
            "--worker-binary",
            "--emr-prefix",
        ] {
            assert!(help.contains(flag), "run --help lacks {flag}");
        }
        assert!(!help.contains("--image-store"), "{help}");
    }

    /// Every argument of every verb says something: no one-word help like "Seed.".
    #[test]
    fn every_flag_has_a_help_text_that_says_something() {
        fn walk(cmd: &clap::Command, path: &str, bad: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                if matches!(arg.get_id().as_str(), "help" | "version") {
                    continue;
                }
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                if help.split_whitespace().count() < 2 {
                    bad.push(format!("{path} --{}: {help:?}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), bad);
            }
        }
        let mut bad = Vec::new();
        walk(&Cli::command(), "facematch", &mut bad);
        assert!(
            bad.is_empty(),
            "help texts that say nothing:\n{}",
            bad.join("\n")
        );
    }
}
