//! `facematch dataset synth|import|export|list|show|build`: dataset versions in and out.

use super::common::{DatabaseArgs, DatasetRootArgs, S3Args, parse_dataset};
use super::photos::BuildArgs;
use crate::output::tables::{self, dataset_json};
use crate::output::{print_json, progress_bar};
use crate::store::datasets::{self, NewDataset, NewFace};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use facematch_datasets::export::{ExportFormat, write_header, write_record};
use facematch_datasets::import::{ImportFormat, ImportOptions, import_file};
use facematch_datasets::shard::read_all;
use facematch_datasets::synth::SynthSpec;
use facematch_datasets::{FaceSource, ShardReader, Storage};
use std::io::Write;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::ExitCode;

/// `facematch dataset …`.
#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Build a new version from photos (a folder or s3://bucket/prefix), encoding them in
    /// parallel (needs the `photos` feature).
    Build(BuildArgs),
    /// Generate a synthetic clustered dataset (K identities × M faces, unit vectors, seeded).
    Synth(SynthArgs),
    /// Import faces from dataset.dat, CSV, JSONL or .npy as a new dataset version.
    Import(ImportArgs),
    /// Export a dataset version to CSV or the old dataset.dat format.
    Export(ExportArgs),
    /// List dataset versions.
    List {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Show one dataset version and its shards (default: the current one).
    Show {
        /// `name` or `name@vN`.
        dataset: Option<String>,
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        s3: S3Args,
    },
}

/// Where and how a new version is written.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// Dataset name.
    #[arg(long, default_value = "faces")]
    pub name: String,
    /// Faces per shard.
    #[arg(long, default_value_t = facematch_datasets::writer::DEFAULT_SHARD_ROWS)]
    pub shard_rows: usize,
    /// Do not make the new version the default for runs.
    #[arg(long)]
    pub no_current: bool,
    #[command(flatten)]
    pub root: DatasetRootArgs,
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

/// `facematch dataset synth`.
#[derive(Debug, Args)]
pub struct SynthArgs {
    #[command(flatten)]
    write: WriteArgs,
    /// Identities (clusters of faces around one random centre).
    #[arg(long, default_value_t = 100)]
    identities: u64,
    /// Faces per identity.
    #[arg(long, default_value_t = 10)]
    per_identity: u64,
    /// Encoding dimension (dlib's is 128).
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Number of shards (overrides --shard-rows).
    #[arg(long)]
    shards: Option<usize>,
    /// Random seed: the same seed gives the same faces.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Id of the first face.
    #[arg(long, default_value_t = 1)]
    first_id: i64,
}

/// `facematch dataset import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
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

/// `facematch dataset export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// `name` or `name@vN` (default: the current dataset).
    #[arg(long)]
    dataset: Option<String>,
    /// csv or dat.
    #[arg(long, default_value = "csv")]
    format: String,
    /// Output file (`-` for standard output).
    #[arg(long, short)]
    output: PathBuf,
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    s3: S3Args,
}

/// Runs `facematch dataset …`.
pub fn exec(cmd: DatasetCommand, json: bool) -> Result<ExitCode> {
    match cmd {
        DatasetCommand::Build(args) => return super::photos::build(args, json),
        DatasetCommand::Synth(args) => synth(args, json)?,
        DatasetCommand::Import(args) => import(args, json)?,
        DatasetCommand::Export(args) => export(args)?,
        DatasetCommand::List { db } => {
            let rows = datasets::list(&mut db.reader()?)?;
            if json {
                print_json(&rows.iter().map(dataset_json).collect::<Vec<_>>())?;
            } else {
                print!("{}", tables::datasets(&rows));
            }
        }
        DatasetCommand::Show { dataset, db, s3 } => show(dataset.as_deref(), &db, &s3, json)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn synth(args: SynthArgs, json: bool) -> Result<()> {
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
        count: spec.count(),
        verb: "generating",
    };
    write_dataset(&args.write, layout, faces, json)
}

fn import(args: ImportArgs, json: bool) -> Result<()> {
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
    let Some(first) = faces.first() else {
        bail!("{}: no faces to import", args.file.display());
    };
    let layout = Layout {
        shard_rows: args.write.shard_rows,
        dim: first.record.encoding.len(),
        embedder: &args.embedder,
        id_range: id_range(faces.iter().map(|f| f.record.face_id)),
        count: faces.len() as u64,
        verb: "importing",
    };
    let faces = faces.into_iter().map(|f| {
        Ok(NewFace {
            record: f.record,
            image_uri: f.image_uri,
        })
    });
    write_dataset(&args.write, layout, faces, json)
}

fn export(args: ExportArgs) -> Result<()> {
    let format: ExportFormat = args.format.parse()?;
    let dataset = parse_dataset(args.dataset.as_deref())?;
    let row = datasets::resolve(&mut args.db.reader()?, dataset.as_ref())?;
    let (storage, manifest) = row.load_manifest(&args.s3.options())?;
    let out: Box<dyn Write> = if args.output.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&args.output)
                .with_context(|| format!("cannot create {}", args.output.display()))?,
        )
    };
    let mut out = std::io::BufWriter::new(out);
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
    eprintln!(
        "exported {count} faces of {} to {}",
        row.label(),
        args.output.display()
    );
    Ok(())
}

fn show(dataset: Option<&str>, db: &DatabaseArgs, s3: &S3Args, json: bool) -> Result<()> {
    let dataset = parse_dataset(dataset)?;
    let row = datasets::resolve(&mut db.reader()?, dataset.as_ref())?;
    let (_, manifest) = row.load_manifest(&s3.options())?;
    if json {
        return print_json(
            &serde_json::json!({ "dataset": dataset_json(&row), "manifest": manifest }),
        );
    }
    print!("{}", tables::datasets(std::slice::from_ref(&row)));
    for shard in &manifest.shards {
        println!(
            "  {}  {} rows  {} bytes  sha256 {}",
            shard.path, shard.rows, shard.bytes, shard.sha256
        );
    }
    Ok(())
}

/// Shape of a dataset version about to be written.
struct Layout<'a> {
    shard_rows: usize,
    dim: usize,
    embedder: &'a str,
    id_range: Option<RangeInclusive<i64>>,
    /// Faces to write (for the progress bar).
    count: u64,
    /// What the progress bar says is happening.
    verb: &'a str,
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

/// Writes and registers a new version of `write.name` from `faces`, all or nothing.
fn write_dataset(
    write: &WriteArgs,
    layout: Layout<'_>,
    faces: impl IntoIterator<Item = Result<NewFace>>,
    json: bool,
) -> Result<()> {
    let storage = Storage::open(&write.root.dataset_root, &write.s3.options())?;
    let mut client = write.db.writer()?;
    let new = NewDataset {
        storage: &storage,
        name: &write.name,
        dim: layout.dim,
        embedder: layout.embedder,
        shard_rows: layout.shard_rows,
        make_current: !write.no_current,
        id_range: layout.id_range,
    };
    let bar = progress_bar(
        layout.count,
        "{spinner} {msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta})",
    );
    bar.set_message(layout.verb.to_string());
    let started = std::time::Instant::now();
    let (row, manifest) =
        datasets::create_dataset(&mut client, &new, faces, |n| bar.set_position(n))?;
    bar.finish_and_clear();
    if json {
        return print_json(&dataset_json(&row));
    }
    println!(
        "{}: {} faces of dimension {} in {} shard(s) at {} ({:.1} s)",
        row.label(),
        manifest.count,
        manifest.dim,
        manifest.shards.len(),
        row.manifest_uri,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
