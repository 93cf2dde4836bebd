//! The `facematch` command line: clap definitions and what each verb does.

use crate::build::{BuildRequest, build_dataset};
use crate::encode::FaceArgs;
use crate::faces::{AddRequest, Owner, add_faces};
use crate::histories::{self, ClaimScope, Submission};
use crate::localdb::LocalPostgres;
use crate::registry::{self, NewDataset, NewFace};
use crate::run::{RunOptions, run_pending};
use crate::runner::RunnerKind;
use crate::{db, report};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use facematch_datasets::export::{ExportFormat, write_header, write_record};
use facematch_datasets::import::{ImportFormat, ImportOptions, import_file};
use facematch_datasets::shard::read_all;
use facematch_datasets::synth::SynthSpec;
use facematch_datasets::{DatasetRef, FaceSource, S3Options, ShardReader, Storage};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Exit code when the command worked but some history ended in ERROR (or the run failed).
pub const EXIT_HISTORY_ERROR: u8 = 3;
/// Exit code when the planner refused the runner (nothing was claimed).
pub const EXIT_PLAN_REFUSED: u8 = 4;

/// facematch: finds the faces most like a given face, exactly, over a whole dataset, in batch.
#[derive(Debug, Parser)]
#[command(name = "facematch", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// Postgres URL. Default: the local server of `facematch db start`.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// Where new dataset versions are written: a folder, file:///path or s3://bucket/prefix.
    #[arg(
        long,
        env = "FACEMATCH_DATASET_ROOT",
        global = true,
        default_value = ".local/datasets"
    )]
    dataset_root: String,
    /// Custom S3 endpoint (S3-compatible servers); implies path-style addressing.
    #[arg(long, env = "AWS_ENDPOINT_URL", global = true)]
    s3_endpoint: Option<String>,
    /// S3 region (default: the AWS chain, then us-east-1).
    #[arg(long, env = "AWS_REGION", global = true)]
    s3_region: Option<String>,
    /// Use path-style S3 addressing even without a custom endpoint.
    #[arg(long, global = true)]
    s3_path_style: bool,
    /// Where `faces add` keeps photos: a folder, file:///path or s3://bucket/prefix.
    #[arg(
        long,
        env = "FACEMATCH_IMAGE_STORE",
        global = true,
        default_value = ".local/images"
    )]
    image_store: String,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

impl Global {
    fn s3(&self) -> S3Options {
        S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style,
        }
    }

    fn database_url(&self) -> Result<String> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        LocalPostgres::from_env().url().ok_or_else(|| {
            anyhow!("no database: set DATABASE_URL or --database-url, or run `facematch db start`")
        })
    }

    fn client(&self) -> Result<postgres::Client> {
        db::connect_migrated(&self.database_url()?)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Local Postgres server and schema.
    #[command(subcommand)]
    Db(DbCommand),
    /// Datasets: generate, import, export, list.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Queue a search (a PENDING history); prints its id.
    Submit(QueryArgs),
    /// Claim every PENDING history and answer them all in one pass over the dataset.
    Run(RunArgs),
    /// Submit a search, run it now, and print the result.
    Search {
        #[command(flatten)]
        query: QueryArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Benchmarks: the kernel's own speed, and the data the peers of `make bench` score.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// EMR clusters: status and termination.
    #[command(subcommand)]
    Emr(crate::emr::cli::EmrCommand),
    /// Run the PENDING histories as one batch every period (windows are never run twice, even by
    /// several schedulers on one database); SIGTERM finishes the current window and exits.
    Schedule {
        /// The period, e.g. 30s, 5m, 1h.
        #[arg(long, value_parser = humantime::parse_duration)]
        every: Duration,
        /// Run the current window (if no scheduler has) and exit: for cron.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Show a history and its results.
    Show {
        /// History id.
        id: i64,
    },
    /// Find the faces in photos and print their boxes and 128-d encodings.
    Encode(crate::encode::EncodeArgs),
    /// Faces from photos, registered in the database.
    #[command(subcommand)]
    Faces(FacesCommand),
    /// Join a timely cluster as one worker process (what `--runner processes`, a cluster host or
    /// an EMR step starts).
    Worker(WorkerArgs),
    /// Counts of faces and photos per source, and the mean encoding of a dataset.
    Stats {
        /// `name` or `name@vN` (default: the current dataset).
        #[arg(long, env = "FACEMATCH_DATASET")]
        dataset: Option<String>,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("run").required(true).args(["rendezvous", "pool"])))]
struct WorkerArgs {
    /// The run's rendezvous: a folder or s3://bucket/prefix holding spec.json.
    #[arg(long)]
    rendezvous: Option<String>,
    /// A pool (folder or s3://bucket/prefix) whose `current` names the run to join; without a
    /// run there within --connect-timeout the process exits 0.
    #[arg(long)]
    pool: Option<String>,
    /// This process's index, 0-based (process 0 assembles the cluster and writes the output).
    /// Without it the process joins at whichever position process 0 gives it.
    #[arg(long, requires = "processes")]
    process: Option<usize>,
    /// Number of processes in the cluster (with --process).
    #[arg(long)]
    processes: Option<usize>,
    /// Timely worker threads in this process.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Address the other processes reach this one at; `auto` is this machine's host name.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Seconds to wait for the other processes before giving up, naming the missing ones.
    #[arg(long, default_value_t = 30)]
    connect_timeout: u64,
    /// The processes' host:port, one per line in process order, instead of registering in the
    /// rendezvous (which then only carries the job and its output).
    #[arg(long, requires = "process")]
    hostfile: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Time the kernel on one thread: all faces against batches of histories (top-N cosine).
    Kernel {
        #[command(flatten)]
        data: BenchData,
        /// Batch sizes (histories scored together).
        #[arg(long, value_delimiter = ',', default_value = "1,16,256,1024,4096")]
        batches: Vec<usize>,
        /// N: results per history.
        #[arg(long, default_value_t = 10)]
        n: usize,
        /// Kernel level (default: the widest this CPU has).
        #[arg(long)]
        level: Option<facematch_job::kernel::Level>,
        /// Repetitions (the best is kept).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// Write the benchmark's faces and queries as faces.npy and queries.npy.
    Data {
        #[command(flatten)]
        data: BenchData,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
struct BenchData {
    /// Faces.
    #[arg(long, default_value_t = 1_000_000)]
    faces: usize,
    /// Queries generated (batches cycle through them).
    #[arg(long, default_value_t = 4096)]
    queries: usize,
    /// Dimension.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, Subcommand)]
enum FacesCommand {
    /// Detect and encode the faces of photos and register one face per detected face.
    Add(FacesAddArgs),
}

#[derive(Debug, Args)]
struct FacesAddArgs {
    /// Photos: paths or s3://bucket/key (JPEG, PNG, GIF, BMP).
    #[arg(required = true)]
    images: Vec<String>,
    #[command(flatten)]
    owner: OwnerArgs,
    /// Keep only the largest face of each photo.
    #[arg(long)]
    largest: bool,
    #[command(flatten)]
    face: FaceArgs,
}

#[derive(Debug, Args)]
struct OwnerArgs {
    /// The faces are this user's (source U; the user is created if new).
    #[arg(long, conflicts_with = "actor")]
    user: Option<String>,
    /// The faces are this actor's (source A; the actor is created if new).
    #[arg(long)]
    actor: Option<String>,
}

impl OwnerArgs {
    fn owner(&self) -> Owner {
        match (&self.user, &self.actor) {
            (Some(user), _) => Owner::User(user.clone()),
            (None, Some(actor)) => Owner::Actor(actor.clone()),
            (None, None) => Owner::Anonymous,
        }
    }
}

#[derive(Debug, Subcommand)]
enum DbCommand {
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
    Migrate,
}

#[derive(Debug, Subcommand)]
enum DatasetCommand {
    /// Build a new version from photos (a folder or s3://bucket/prefix), encoding them in parallel.
    Build(BuildArgs),
    /// Generate a synthetic clustered dataset (K identities × M faces, unit vectors, seeded).
    Synth(SynthArgs),
    /// Import faces from dataset.dat, CSV, JSONL or .npy as a new dataset version.
    Import(ImportArgs),
    /// Export a dataset version to CSV or the old dataset.dat format.
    Export(ExportArgs),
    /// List dataset versions.
    List,
    /// Show one dataset version and its shards (default: the current one).
    Show {
        /// `name` or `name@vN`.
        dataset: Option<String>,
    },
}

#[derive(Debug, Args)]
struct WriteArgs {
    /// Dataset name.
    #[arg(long, default_value = "faces")]
    name: String,
    /// Faces per shard.
    #[arg(long, default_value_t = facematch_datasets::writer::DEFAULT_SHARD_ROWS)]
    shard_rows: usize,
    /// Do not make the new version the default for runs.
    #[arg(long)]
    no_current: bool,
}

#[derive(Debug, Args)]
struct BuildArgs {
    #[command(flatten)]
    write: WriteArgs,
    /// The photos: a folder, file:///path or s3://bucket/prefix (searched recursively).
    #[arg(long)]
    images: String,
    /// Each photo's actor is the folder it is in (`Name/photo.jpg`).
    #[arg(long)]
    actors_from_dirs: bool,
    /// Source of the faces: A (actor) or U (user).
    #[arg(long, default_value = "A")]
    source: String,
    /// Timely worker threads (each loads its own models).
    #[arg(long, short, default_value_t = default_workers())]
    workers: usize,
    /// Exit with an error when any photo failed (the build still completes).
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    face: FaceArgs,
}

#[derive(Debug, Args)]
struct SynthArgs {
    #[command(flatten)]
    write: WriteArgs,
    /// Identities (clusters).
    #[arg(long, default_value_t = 100)]
    identities: u64,
    /// Faces per identity.
    #[arg(long, default_value_t = 10)]
    per_identity: u64,
    /// Encoding dimension.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Number of shards (overrides --shard-rows).
    #[arg(long)]
    shards: Option<usize>,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Id of the first face.
    #[arg(long, default_value_t = 1)]
    first_id: i64,
}

#[derive(Debug, Args)]
struct ImportArgs {
    #[command(flatten)]
    write: WriteArgs,
    /// The file to import.
    file: PathBuf,
    /// dat, csv, jsonl or npy (default: from the extension).
    #[arg(long)]
    format: Option<String>,
    /// Source of faces whose input does not say (npy, early dataset.dat): A or U.
    #[arg(long, default_value = "A")]
    source: String,
    /// For .npy: face ids (text, one per line, or an integer .npy).
    #[arg(long)]
    ids: Option<PathBuf>,
    /// For .npy without --ids: the first face id.
    #[arg(long, default_value_t = 1)]
    first_id: i64,
    /// Embedder label recorded in the manifest.
    #[arg(long, default_value = "imported")]
    embedder: String,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// `name` or `name@vN` (default: the current dataset).
    #[arg(long)]
    dataset: Option<String>,
    /// csv or dat.
    #[arg(long, default_value = "csv")]
    format: String,
    /// Output file (`-` for standard output).
    #[arg(long, short)]
    output: PathBuf,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("query_face").required(true).args(["face", "image"])))]
struct QueryArgs {
    /// The query face id.
    #[arg(long)]
    face: Option<i64>,
    /// A photo (path or s3://bucket/key): its largest face is added (or found, if known) and queried.
    #[arg(long)]
    image: Option<String>,
    #[command(flatten)]
    owner: OwnerArgs,
    #[command(flatten)]
    photo: FaceArgs,
    /// cosine or euclidean.
    #[arg(long, default_value = "cosine")]
    method: String,
    /// all, actor or user.
    #[arg(long, default_value = "all")]
    filter: String,
    /// N: how many results (1..=1000).
    #[arg(long, default_value_t = facematch_job::query::DEFAULT_MAX_RESULTS)]
    max_results: i64,
    /// Only faces within this euclidean distance (dlib's match threshold is 0.6).
    #[arg(long)]
    max_distance: Option<f64>,
    /// Let the query face match itself.
    #[arg(long)]
    include_self: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Where the dataflow runs.
    #[arg(long, default_value = "inline")]
    runner: String,
    /// Timely worker threads per process.
    #[arg(long, short, default_value_t = default_workers())]
    workers: usize,
    /// Dataset `name` or `name@vN` (default: the current one).
    #[arg(long, env = "FACEMATCH_DATASET")]
    dataset: Option<String>,
    /// Claim at most this many histories (oldest first).
    #[arg(long)]
    limit: Option<i64>,
    /// Seconds a claim lasts without a heartbeat before another run may requeue it.
    #[arg(long, default_value_t = 300)]
    lease_secs: u64,
    /// Attempts before a history whose runs keep dying ends in ERROR.
    #[arg(long, default_value_t = 3)]
    max_attempts: i32,
    /// processes runner: hand the workers a hostfile instead of letting them register.
    #[arg(long)]
    hostfile: bool,
    /// Run on a cluster even when the planner says this machine alone would finish first.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    emr: Box<crate::emr::cli::EmrArgs>,
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl RunArgs {
    fn options(&self, global: &Global, scope: ClaimScope) -> Result<RunOptions> {
        if self.workers == 0 {
            bail!("--workers must be at least 1");
        }
        Ok(RunOptions {
            dataset: parse_dataset(self.dataset.as_deref())?,
            scope: ClaimScope {
                limit: self.limit,
                ..scope
            },
            lease: Duration::from_secs(self.lease_secs.max(1)),
            max_attempts: self.max_attempts.max(1),
            s3: global.s3(),
            print_plan: true,
            force: self.force,
        })
    }

    fn runner(&self, global: &Global) -> Result<Box<dyn crate::runner::Runner>> {
        let s3 = global.s3();
        self.runner
            .parse::<RunnerKind>()
            .map_err(anyhow::Error::msg)?
            .build(self.workers, &s3, self.hostfile, &|| {
                self.emr.options(self.workers, &s3)
            })
    }
}

impl QueryArgs {
    /// The query face: `--face`, or the largest face of `--image` (added if new).
    fn face_id(
        &self,
        g: &Global,
        client: &mut postgres::Client,
        dataset: Option<&str>,
    ) -> Result<i64> {
        if let Some(face) = self.face {
            return Ok(face);
        }
        // A known photo's face is taken from the dataset the search runs on, when it is there.
        let dataset = parse_dataset(dataset)?;
        let target = registry::resolve(client, dataset.as_ref())
            .ok()
            .map(|row| row.name);
        let image = self.image.clone().unwrap_or_default();
        let images = [image];
        let request = AddRequest {
            images: &images,
            owner: self.owner.owner(),
            largest: true,
            image_store: &g.image_store,
            s3: &g.s3(),
            prefer_dataset: target.as_deref(),
        };
        let added = add_faces(client, &request, || self.photo.encoder())?;
        let face = added
            .first()
            .ok_or_else(|| anyhow!("image {}: no face", images[0]))?;
        eprintln!(
            "query face {} ({}) from {}",
            face.face_id,
            if face.known { "already known" } else { "added" },
            images[0]
        );
        Ok(face.face_id)
    }

    fn submission(&self, face_id: i64) -> Submission {
        Submission {
            face_id,
            method: self.method.clone(),
            filter: self.filter.clone(),
            max_results: self.max_results,
            include_self: self.include_self,
            max_distance: self.max_distance,
            user_id: None,
        }
    }
}

/// `name` or `name@vN`, when given.
fn parse_dataset(dataset: Option<&str>) -> Result<Option<DatasetRef>> {
    Ok(dataset.map(str::parse::<DatasetRef>).transpose()?)
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Parses arguments, runs the command, maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<crate::run::PlanRefused>().is_some() {
                ExitCode::from(EXIT_PLAN_REFUSED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn execute(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Db(DbCommand::Start { dir, port }) => {
            let server = dir
                .map(LocalPostgres::new)
                .unwrap_or_else(LocalPostgres::from_env);
            let url = server.start(port)?;
            db::connect_migrated(&url)?;
            println!("{url}");
        }
        Command::Db(DbCommand::Stop { dir }) => {
            dir.map(LocalPostgres::new)
                .unwrap_or_else(LocalPostgres::from_env)
                .stop()?;
        }
        Command::Db(DbCommand::Migrate) => {
            let applied = db::migrate(&mut db::connect(&g.database_url()?)?)?;
            println!("schema up to date ({applied} migration(s) applied)");
        }
        Command::Dataset(cmd) => return dataset_command(g, cmd),
        Command::Encode(args) => {
            if !crate::encode::encode_command(&args, g.json)? {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Submit(query) => {
            let mut client = g.client()?;
            let face = query.face_id(g, &mut client, None)?;
            let id = histories::submit(&mut client, &query.submission(face))?;
            if g.json {
                print_json(&serde_json::json!({ "history_id": id }))?;
            } else {
                println!("{id}");
            }
        }
        Command::Run(args) => {
            let runner = args.runner(g)?;
            let summary = run_pending(
                &g.database_url()?,
                runner.as_ref(),
                &args.options(g, ClaimScope::default())?,
            )?;
            if g.json {
                print_json(&summary)?;
            } else {
                print!("{}", report::run_summary(&summary));
            }
            if summary.errored > 0 || summary.error.is_some() {
                return Ok(ExitCode::from(EXIT_HISTORY_ERROR));
            }
        }
        Command::Search { query, run } => {
            let url = g.database_url()?;
            let mut client = db::connect_migrated(&url)?;
            let face = query.face_id(g, &mut client, run.dataset.as_deref())?;
            let id = histories::submit(&mut client, &query.submission(face))?;
            let runner = run.runner(g)?;
            let scope = ClaimScope {
                only: Some(vec![id]),
                limit: None,
            };
            // One question answered now: the plan would only be noise.
            let options = RunOptions {
                print_plan: false,
                ..run.options(g, scope)?
            };
            let summary = run_pending(&url, runner.as_ref(), &options)?;
            let view = histories::load(&mut db::connect(&url)?, id)?;
            if g.json {
                print_json(&view)?;
            } else {
                print!("{}", report::history(&view));
                eprint!("{}", report::run_summary(&summary));
            }
            if view.status != "FINISHED" {
                return Ok(ExitCode::from(EXIT_HISTORY_ERROR));
            }
        }
        Command::Faces(FacesCommand::Add(args)) => {
            let request = AddRequest {
                images: &args.images,
                owner: args.owner.owner(),
                largest: args.largest,
                image_store: &g.image_store,
                s3: &g.s3(),
                prefer_dataset: None,
            };
            let added = add_faces(&mut g.client()?, &request, || args.face.encoder())?;
            if g.json {
                print_json(&added)?;
            } else {
                print!("{}", report::added_faces(&added));
            }
        }
        Command::Worker(args) => {
            use crate::cluster::{Position, RunSource};
            let run = match (args.rendezvous, args.pool) {
                (Some(uri), _) => RunSource::Rendezvous(uri),
                (None, Some(uri)) => RunSource::Pool(uri),
                (None, None) => bail!("give --rendezvous or --pool"),
            };
            let position = match (args.process, args.processes) {
                (Some(process), Some(processes)) => Position::Index { process, processes },
                _ => Position::Join,
            };
            let host = if args.host == "auto" {
                crate::cluster::host_name()?
            } else {
                args.host
            };
            crate::cluster::run_worker_process(&crate::cluster::WorkerOptions {
                run,
                position,
                threads: args.threads,
                host,
                connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
                s3: g.s3(),
                hostfile: args.hostfile,
            })?;
        }
        Command::Stats { dataset } => {
            let dataset = parse_dataset(dataset.as_deref())?;
            let mut client = g.client()?;
            let row = registry::resolve(&mut client, dataset.as_ref())?;
            let stats = crate::stats::collect(&mut client, &row, &g.s3())?;
            if g.json {
                print_json(&stats)?;
            } else {
                print!("{}", crate::stats::render(&stats));
            }
        }
        Command::Schedule { every, once, run } => {
            if every.is_zero() {
                bail!("--every must be positive");
            }
            let runner = run.runner(g)?;
            let options = run.options(g, ClaimScope::default())?;
            let json = g.json;
            crate::schedule::schedule(
                &g.database_url()?,
                runner.as_ref(),
                &options,
                every,
                once,
                |done| {
                    if json {
                        let _ = print_json(done);
                    } else if let Some(summary) = &done.run {
                        print!("window {}: {}", done.window, report::run_summary(summary));
                    } else if done.ran {
                        println!("window {}: nothing pending", done.window);
                    } else {
                        println!("window {}: already run by another scheduler", done.window);
                    }
                },
            )?;
        }
        Command::Bench(cmd) => bench_command(g, cmd)?,
        Command::Emr(cmd) => {
            let (json, text) = crate::emr::cli::emr_command(cmd, g.s3_region.as_deref())?;
            if g.json {
                print_json(&json)?;
            } else {
                print!("{text}");
            }
        }
        Command::Show { id } => {
            let view = histories::load(&mut g.client()?, id)?;
            if g.json {
                print_json(&view)?;
            } else {
                print!("{}", report::history(&view));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_command(g: &Global, cmd: BenchCommand) -> Result<()> {
    use crate::bench;
    match cmd {
        BenchCommand::Kernel {
            data,
            batches,
            n,
            level,
            repeat,
        } => {
            if data.dim == 0 || data.faces == 0 || data.queries == 0 {
                bail!("--faces, --queries and --dim must be positive");
            }
            let level = level.unwrap_or_else(facematch_job::kernel::Level::detect);
            if !level.available() {
                bail!("kernel level {level} is not available on this CPU");
            }
            let (faces, queries) = bench::data(data.faces, data.queries, data.dim, data.seed);
            let rows = bench::time_kernel(&faces, &queries, data.dim, &batches, n, level, repeat);
            if g.json {
                print_json(&rows)?;
            } else {
                println!(
                    "{:>6} {:>8} {:>10} {:>12} {:>14} {:>9}",
                    "batch", "level", "ms", "ms/query", "pairs/s", "rescored"
                );
                for r in rows {
                    println!(
                        "{:>6} {:>8} {:>10.1} {:>12.3} {:>14.3e} {:>9}",
                        r.batch, r.level, r.ms, r.ms_per_query, r.pairs_per_sec, r.rescored
                    );
                }
            }
        }
        BenchCommand::Data { data, out } => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let (faces, queries) = bench::data(data.faces, data.queries, data.dim, data.seed);
            bench::write_npy(&out.join("faces.npy"), &faces, data.dim)?;
            bench::write_npy(&out.join("queries.npy"), &queries, data.dim)?;
        }
    }
    Ok(())
}

fn dataset_command(g: &Global, cmd: DatasetCommand) -> Result<ExitCode> {
    match cmd {
        DatasetCommand::Build(args) => {
            if args.workers == 0 {
                bail!("--workers must be at least 1");
            }
            let request = BuildRequest {
                photos_uri: args.images.clone(),
                actors_from_dirs: args.actors_from_dirs,
                source: args.source.parse::<FaceSource>()?,
                encoder: args.face.options()?,
                models: args.face.model_paths(),
                name: args.write.name.clone(),
                dataset_root: g.dataset_root.clone(),
                shard_rows: args.write.shard_rows,
                make_current: !args.write.no_current,
                workers: args.workers,
                s3: g.s3(),
                progress: !g.json,
            };
            let report = build_dataset(&g.database_url()?, &request)?;
            if g.json {
                print_json(&report)?;
            } else {
                print!("{}", report::build(&report));
            }
            if args.strict && !report.failures.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        DatasetCommand::Synth(args) => {
            let spec = SynthSpec {
                identities: args.identities,
                per_identity: args.per_identity,
                dim: args.dim,
                seed: args.seed,
                first_id: args.first_id,
                spread: 0.5,
            };
            if spec.count() == 0 || args.dim == 0 {
                bail!("a synthetic dataset needs at least one face and dimension ≥ 1");
            }
            let shard_rows = match args.shards {
                Some(0) => bail!("--shards must be at least 1"),
                Some(s) => spec.count().div_ceil(s as u64) as usize,
                None => args.write.shard_rows,
            };
            let bar = progress(spec.count(), "generating");
            let faces = spec.faces().map(|record| {
                Ok(NewFace {
                    record,
                    image_uri: None,
                })
            });
            let layout = Layout {
                shard_rows,
                dim: args.dim,
                embedder: "synthetic",
                id_range: Some(spec.id_range()),
            };
            write_dataset(g, &args.write, layout, faces, &bar)?;
        }
        DatasetCommand::Import(args) => {
            let format = match &args.format {
                Some(f) => f.parse::<ImportFormat>()?,
                None => ImportFormat::from_path(&args.file).ok_or_else(|| {
                    anyhow!(
                        "cannot tell the format of {} from its extension; pass --format",
                        args.file.display()
                    )
                })?,
            };
            let options = ImportOptions {
                default_source: args.source.parse::<FaceSource>()?,
                ids_file: args.ids.clone(),
                first_id: args.first_id,
            };
            let faces = import_file(&args.file, format, &options)?;
            let layout = Layout {
                shard_rows: args.write.shard_rows,
                dim: faces[0].record.encoding.len(),
                embedder: &args.embedder,
                id_range: id_range(faces.iter().map(|f| f.record.face_id)),
            };
            let bar = progress(faces.len() as u64, "importing");
            let faces = faces.into_iter().map(|f| {
                Ok(NewFace {
                    record: f.record,
                    image_uri: f.image_uri,
                })
            });
            write_dataset(g, &args.write, layout, faces, &bar)?;
        }
        DatasetCommand::Export(args) => {
            let format: ExportFormat = args.format.parse()?;
            let dataset = parse_dataset(args.dataset.as_deref())?;
            let row = registry::resolve(&mut g.client()?, dataset.as_ref())?;
            let (storage, manifest) = row.load_manifest(&g.s3())?;
            let mut out: Box<dyn Write> = if args.output.as_os_str() == "-" {
                Box::new(std::io::stdout().lock())
            } else {
                Box::new(
                    std::fs::File::create(&args.output)
                        .with_context(|| format!("cannot create {}", args.output.display()))?,
                )
            };
            let mut out = std::io::BufWriter::new(&mut out);
            write_header(&mut out, format)?;
            let mut count = 0u64;
            for shard in &manifest.shards {
                let reader = ShardReader::fetch(&storage, shard, manifest.dim)?;
                for record in read_all(reader, manifest.dim)? {
                    write_record(&mut out, format, &record)?;
                    count += 1;
                }
            }
            out.flush()?;
            drop(out);
            eprintln!(
                "exported {count} faces of {} to {}",
                row.label(),
                args.output.display()
            );
        }
        DatasetCommand::List => {
            let rows = registry::list(&mut g.client()?)?;
            if g.json {
                print_json(&rows.iter().map(dataset_json).collect::<Vec<_>>())?;
            } else {
                print!("{}", report::datasets(&rows));
            }
        }
        DatasetCommand::Show { dataset } => {
            let dataset = parse_dataset(dataset.as_deref())?;
            let row = registry::resolve(&mut g.client()?, dataset.as_ref())?;
            let (_, manifest) = row.load_manifest(&g.s3())?;
            if g.json {
                print_json(
                    &serde_json::json!({ "dataset": dataset_json(&row), "manifest": manifest }),
                )?;
            } else {
                print!("{}", report::datasets(std::slice::from_ref(&row)));
                for shard in &manifest.shards {
                    println!(
                        "  {}  {} rows  {} bytes  sha256 {}",
                        shard.path, shard.rows, shard.bytes, shard.sha256
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn dataset_json(d: &registry::DatasetRow) -> serde_json::Value {
    serde_json::json!({
        "id": d.id, "name": d.name, "version": d.version, "label": d.label(), "current": d.is_current,
        "faces": d.face_count, "dim": d.dim, "shards": d.shard_count, "embedder": d.embedder,
        "root_uri": d.root_uri, "manifest_uri": d.manifest_uri, "created_at": d.created_at,
    })
}

/// Shape of a dataset version about to be written.
struct Layout<'a> {
    shard_rows: usize,
    dim: usize,
    embedder: &'a str,
    id_range: Option<RangeInclusive<i64>>,
}

/// The smallest range holding every id, if there is any.
fn id_range(ids: impl Iterator<Item = i64>) -> Option<RangeInclusive<i64>> {
    ids.fold(None, |range: Option<RangeInclusive<i64>>, id| {
        Some(match range {
            None => id..=id,
            Some(r) => (*r.start()).min(id)..=(*r.end()).max(id),
        })
    })
}

fn write_dataset(
    g: &Global,
    write: &WriteArgs,
    layout: Layout<'_>,
    faces: impl IntoIterator<Item = Result<NewFace>>,
    bar: &ProgressBar,
) -> Result<()> {
    let storage = Storage::open(&g.dataset_root, &g.s3())?;
    let mut client = g.client()?;
    let new = NewDataset {
        storage: &storage,
        name: &write.name,
        dim: layout.dim,
        embedder: layout.embedder,
        shard_rows: layout.shard_rows,
        make_current: !write.no_current,
        id_range: layout.id_range,
    };
    let started = std::time::Instant::now();
    let (row, manifest) =
        registry::create_dataset(&mut client, &new, faces, |n| bar.set_position(n))?;
    bar.finish_and_clear();
    if g.json {
        print_json(&dataset_json(&row))?;
    } else {
        println!(
            "{}: {} faces of dimension {} in {} shard(s) at {} ({:.1} s)",
            row.label(),
            manifest.count,
            manifest.dim,
            manifest.shards.len(),
            row.manifest_uri,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
