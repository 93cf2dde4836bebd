//! Flag groups several verbs share. Each verb flattens only the groups it uses, so its `--help`
//! lists only flags that mean something for it.

use crate::store::local::LocalPostgres;
use anyhow::{Result, anyhow};
use clap::Args;
use facematch_datasets::{DatasetRef, S3Options};

/// Where the database is.
#[derive(Clone, Args)]
pub struct DatabaseArgs {
    /// Postgres URL or key=value string, with `sslmode` (disable, prefer, require, verify-ca,
    /// verify-full) and `sslrootcert` as libpq's; a password may come from PGPASSWORD. Default:
    /// the local server of `facematch db start`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

/// Redacted: a debug print of the arguments must not show a password.
impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field(
                "database_url",
                &self.database_url.as_deref().map(crate::store::redact),
            )
            .finish()
    }
}

impl DatabaseArgs {
    /// The URL given, or that of the local server.
    pub fn url(&self) -> Result<String> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        LocalPostgres::from_env().url().ok_or_else(|| {
            anyhow!("no database: set DATABASE_URL or --database-url, or run `facematch db start`")
        })
    }

    /// A connection for a command that only reads (the schema checked, never changed).
    pub fn reader(&self) -> Result<postgres::Client> {
        crate::store::connect_checked(&self.url()?, crate::store::Access::Read)
    }

    /// A connection for a command that writes (the schema checked, never changed).
    pub fn writer(&self) -> Result<postgres::Client> {
        crate::store::connect_checked(&self.url()?, crate::store::Access::Write)
    }
}

/// How to reach S3 (datasets, photos, rendezvous on `s3://`).
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// Custom S3 endpoint (S3-compatible servers); implies path-style addressing.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    s3_endpoint: Option<String>,
    /// S3 region (default: the AWS chain, then us-east-1).
    #[arg(long, env = "AWS_REGION")]
    s3_region: Option<String>,
    /// Use path-style S3 addressing even without a custom endpoint.
    #[arg(long)]
    s3_path_style: bool,
}

impl S3Args {
    /// The options every storage handle is opened with.
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            path_style: self.s3_path_style,
        }
    }
}

/// Where new dataset versions are written.
#[derive(Debug, Clone, Args)]
pub struct DatasetRootArgs {
    /// Where new dataset versions are written: a folder, file:///path or s3://bucket/prefix.
    #[arg(
        long,
        env = "FACEMATCH_DATASET_ROOT",
        default_value = ".local/datasets"
    )]
    pub dataset_root: String,
}

/// Where uploaded photos are kept.
#[derive(Debug, Clone, Args)]
pub struct ImageStoreArgs {
    /// Where photos added as faces are kept: a folder, file:///path or s3://bucket/prefix.
    #[arg(long, env = "FACEMATCH_IMAGE_STORE", default_value = ".local/images")]
    pub image_store: String,
}

/// `name` or `name@vN`, when given.
pub fn parse_dataset(dataset: Option<&str>) -> Result<Option<DatasetRef>> {
    Ok(dataset.map(str::parse::<DatasetRef>).transpose()?)
}

/// One timely worker per core of this machine.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
