//! `facematch submit`: queue a search (a PENDING history) and print its id. Also the query flags
//! `search` shares.

use super::common::{DatabaseArgs, ImageStoreArgs, S3Args};
use super::photos::{FaceArgs, OwnerArgs};
use crate::output::print_json;
use crate::store::histories::{self, Submission};
use anyhow::Result;
use clap::Args;
use facematch_job::MaxResults;

/// What to search for.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("query_face").required(true).args(["face", "image"])))]
pub struct QueryArgs {
    /// The query face id.
    #[arg(long)]
    pub face: Option<i64>,
    /// A photo (path or s3://bucket/key): its largest face is added (or found, if known) and
    /// queried (needs the `photos` feature).
    #[arg(long)]
    pub image: Option<String>,
    #[command(flatten)]
    pub owner: OwnerArgs,
    #[command(flatten)]
    pub photo: FaceArgs,
    #[command(flatten)]
    pub store: ImageStoreArgs,
    /// cosine or euclidean.
    #[arg(long, default_value = "cosine")]
    pub method: String,
    /// all, actor or user.
    #[arg(long, default_value = "all")]
    pub filter: String,
    /// N: how many results (1..=1000).
    #[arg(long, default_value_t = facematch_job::query::DEFAULT_MAX_RESULTS)]
    pub max_results: MaxResults,
    /// Only faces within this euclidean distance (dlib's match threshold is 0.6).
    #[arg(long)]
    pub max_distance: Option<f64>,
    /// Let the query face match itself (it is left out of its own results by default).
    #[arg(long)]
    pub include_self: bool,
}

impl QueryArgs {
    /// Fails at once, before anything is read or written, when the query needs what this build
    /// lacks (`--image` without the face pipeline).
    pub fn check(&self, verb: &str) -> Result<()> {
        if self.image.is_some() {
            super::photos::require(&format!("{verb} --image"))?;
        }
        Ok(())
    }

    /// The query face: `--face`, or the largest face of `--image` (added if new), preferring
    /// the faces of dataset `dataset` for a photo known in several.
    pub fn face_id(
        &self,
        client: &mut postgres::Client,
        s3: &S3Args,
        dataset: Option<&str>,
    ) -> Result<i64> {
        match (self.face, &self.image) {
            (Some(face), _) => Ok(face),
            (None, Some(image)) => super::photos::query_face(self, image, client, s3, dataset),
            (None, None) => anyhow::bail!("give --face or --image"),
        }
    }

    /// The history to insert for query face `face_id`.
    pub fn submission(&self, face_id: i64) -> Submission {
        Submission {
            face_id,
            method: self.method.clone(),
            filter: self.filter.clone(),
            max_results: self.max_results,
            exclude_self: !self.include_self,
            max_distance: self.max_distance,
            user_id: None,
        }
    }
}

/// `facematch submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    query: QueryArgs,
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    s3: S3Args,
}

/// Inserts the history and prints its id.
pub fn exec(args: SubmitArgs, json: bool) -> Result<()> {
    args.query.check("submit")?;
    let mut client = args.db.writer()?;
    let face = args.query.face_id(&mut client, &args.s3, None)?;
    let id = histories::submit(&mut client, &args.query.submission(face))?;
    if json {
        print_json(&serde_json::json!({ "history_id": id }))
    } else {
        println!("{id}");
        Ok(())
    }
}
