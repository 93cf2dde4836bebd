//! The photo verbs — `encode`, `faces add`, `dataset build` and `search --image` — which need the
//! face pipeline (feature `photos`). Their flags exist in every build, so a binary without the
//! feature parses them and says what is missing instead of calling them unknown.

use super::common::{DatabaseArgs, ImageStoreArgs, S3Args};
use super::dataset::WriteArgs;
use super::run::RunnerArgs;
use super::submit::QueryArgs;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// dlib's detection is run on images scaled down to this longest side (boxes are mapped back).
const DEFAULT_MAX_DETECT_SIDE: u32 = 2400;

/// Photos per chunk of a build by default: small enough that an interrupted build loses little,
/// large enough that a part's transaction is not paid per photo.
const DEFAULT_CHUNK_PHOTOS: u64 = 32;

/// How to find faces (shared by every command that reads photos).
#[derive(Debug, Clone, Args)]
#[cfg_attr(not(feature = "photos"), allow(dead_code))]
pub struct FaceArgs {
    /// Face detector: auto (HOG, and dlib's CNN on a photo where HOG finds no face), hog
    /// (fast, frontal faces) or cnn (finds more poses, ~10× slower on every photo).
    #[arg(long, default_value = "auto")]
    pub detector: String,
    /// Times the image is upsampled before detection (finds smaller faces; each one ×4 the work).
    #[arg(long, default_value_t = 1)]
    pub upsample: u32,
    /// Align with the 68-point landmark model instead of the 5-point one.
    #[arg(long)]
    pub landmarks_68: bool,
    /// Longest side an image is detected at; larger ones are scaled down for detection only.
    #[arg(long, default_value_t = DEFAULT_MAX_DETECT_SIDE)]
    pub max_detect_side: u32,
    /// Folder with dlib's model files.
    #[arg(long, env = "FACEMATCH_MODELS")]
    pub models: Option<PathBuf>,
}

/// Whose faces a photo holds.
#[derive(Debug, Args)]
#[cfg_attr(not(feature = "photos"), allow(dead_code))]
pub struct OwnerArgs {
    /// The faces are this user's (source U; the user is created if new).
    #[arg(long, conflicts_with = "actor")]
    pub user: Option<String>,
    /// The faces are this actor's (source A; the actor is created if new).
    #[arg(long)]
    pub actor: Option<String>,
}

/// `facematch encode`.
#[derive(Debug, Args)]
#[cfg_attr(not(feature = "photos"), allow(dead_code))]
pub struct EncodeArgs {
    /// Photos (JPEG, PNG, GIF, BMP).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    face: FaceArgs,
}

/// `facematch faces …`.
#[derive(Debug, Subcommand)]
pub enum FacesCommand {
    /// Detect and encode the faces of photos and register one face per detected face.
    Add(FacesAddArgs),
}

/// `facematch faces add`.
#[derive(Debug, Args)]
#[cfg_attr(not(feature = "photos"), allow(dead_code))]
pub struct FacesAddArgs {
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
    #[command(flatten)]
    store: ImageStoreArgs,
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    s3: S3Args,
}

/// `facematch dataset build`.
#[derive(Debug, Args)]
#[cfg_attr(not(feature = "photos"), allow(dead_code))]
pub struct BuildArgs {
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
    /// Exit with an error when any photo failed (the build still completes).
    #[arg(long)]
    strict: bool,
    /// Photos per chunk: the workers' unit of work, and what an interrupted build resumes from.
    #[arg(long, default_value_t = DEFAULT_CHUNK_PHOTOS, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    chunk_photos: u64,
    /// Resume the interrupted build of this dataset (an error if there is none). Without it, an
    /// interrupted build asked the same is resumed all the same.
    #[arg(long, conflicts_with = "fresh")]
    resume: bool,
    /// Give an interrupted build of this dataset up (its parts and shards are deleted) and start
    /// again.
    #[arg(long)]
    fresh: bool,
    #[command(flatten)]
    face: FaceArgs,
    /// Where the workers run (each worker thread loads its own models).
    #[command(flatten)]
    cluster: RunnerArgs,
}

#[cfg(not(feature = "photos"))]
pub use disabled::{build, encode, faces, query_face, require};
#[cfg(feature = "photos")]
pub use enabled::{build, encode, faces, query_face, require};

#[cfg(feature = "photos")]
mod enabled {
    use super::*;
    use crate::output::{photos as report, print_json};
    use crate::photos::add::{AddRequest, LazyEncoder, Owner, PhotoSource, add_faces};
    use crate::photos::build::{BuildRequest, Resume, build_dataset};
    use crate::photos::encode::encode_file;
    use crate::store::datasets;
    use anyhow::anyhow;
    use facematch_datasets::FaceSource;
    use facematch_datasets::face::{Detector, Encoder, EncoderOptions, Landmarks, ModelPaths};

    /// This build has the face pipeline: `verb` can run.
    pub fn require(_verb: &str) -> Result<()> {
        Ok(())
    }

    impl FaceArgs {
        /// The detection and encoding settings these flags ask for.
        pub fn options(&self) -> Result<EncoderOptions> {
            Ok(EncoderOptions {
                detector: self
                    .detector
                    .parse::<Detector>()
                    .map_err(anyhow::Error::msg)?,
                upsample: self.upsample,
                landmarks: if self.landmarks_68 {
                    Landmarks::SixtyEight
                } else {
                    Landmarks::Five
                },
                max_detect_side: self.max_detect_side,
            })
        }

        /// Where the model files are.
        pub fn model_paths(&self) -> ModelPaths {
            ModelPaths::locate(self.models.as_deref())
        }

        /// Loads an encoder with these settings.
        pub fn encoder(&self) -> Result<Encoder> {
            Ok(Encoder::load(&self.model_paths(), self.options()?)?)
        }
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

    /// `facematch encode`: every photo is reported; exit 1 when one could not be read.
    pub fn encode(args: EncodeArgs, json: bool) -> Result<ExitCode> {
        let encoder = args.face.encoder()?;
        let mut results = Vec::new();
        for path in &args.images {
            let out = encode_file(&encoder, path);
            match &out.error {
                Some(error) => eprintln!("error: {error}"),
                None if !json => print!("{}", report::encoded(&out)),
                None => {}
            }
            results.push(out);
        }
        if json {
            print_json(&results)?;
        }
        let all_read = results.iter().all(|r| r.error.is_none());
        Ok(if all_read {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    /// `facematch faces add`.
    pub fn faces(cmd: FacesCommand, json: bool) -> Result<ExitCode> {
        let FacesCommand::Add(args) = cmd;
        let images: Vec<PhotoSource> = args
            .images
            .iter()
            .cloned()
            .map(PhotoSource::Location)
            .collect();
        let request = AddRequest {
            images: &images,
            owner: args.owner.owner(),
            largest: args.largest,
            image_store: &args.store.image_store,
            s3: &args.s3.options(),
            prefer_dataset: None,
        };
        let mut encoder = LazyEncoder::new(|| args.face.encoder());
        let added = add_faces(&mut args.db.writer()?, &request, &mut encoder)?;
        if json {
            print_json(&added)?;
        } else {
            print!("{}", report::added_faces(&added));
        }
        Ok(ExitCode::SUCCESS)
    }

    /// `facematch dataset build`: exit 1 with `--strict` when a photo failed.
    pub fn build(args: BuildArgs, json: bool) -> Result<ExitCode> {
        if args.cluster.workers == 0 {
            anyhow::bail!("--workers must be at least 1");
        }
        let s3 = args.write.s3.options();
        let runner = args.cluster.runner(&s3)?;
        let request = BuildRequest {
            photos_uri: args.images.clone(),
            actors_from_dirs: args.actors_from_dirs,
            source: args.source.parse::<FaceSource>()?,
            encoder: args.face.options()?,
            models: args.face.model_paths(),
            name: args.write.name.clone(),
            dataset_root: args.write.root.dataset_root.clone(),
            shard_rows: args.write.shard_rows,
            chunk_photos: args.chunk_photos as usize,
            make_current: !args.write.no_current,
            resume: match (args.resume, args.fresh) {
                (true, _) => Resume::Required,
                (_, true) => Resume::Fresh,
                _ => Resume::Auto,
            },
            s3,
            progress: if json {
                indicatif::ProgressBar::hidden()
            } else {
                crate::output::progress_bar(
                    0,
                    "{spinner} encoding [{bar:30}] {pos}/{len} photos, {msg}, {per_sec} ({elapsed}, eta {eta})",
                )
            },
        };
        let built = build_dataset(&args.write.db.url()?, &request, runner.as_ref())?;
        if json {
            print_json(&built)?;
        } else {
            print!("{}", report::build(&built));
        }
        if args.strict && !built.failures.is_empty() {
            return Ok(ExitCode::FAILURE);
        }
        Ok(ExitCode::SUCCESS)
    }

    /// `search --image` / `submit --image`: the largest face of the photo, added if new. A
    /// known photo's face is taken from the dataset the search runs on, when it is there.
    pub fn query_face(
        query: &QueryArgs,
        image: &str,
        client: &mut postgres::Client,
        s3: &S3Args,
        dataset: Option<&str>,
    ) -> Result<i64> {
        let dataset = super::super::common::parse_dataset(dataset)?;
        let target = datasets::resolve(client, dataset.as_ref())
            .ok()
            .map(|row| row.name);
        let images = [PhotoSource::Location(image.to_string())];
        let request = AddRequest {
            images: &images,
            owner: query.owner.owner(),
            largest: true,
            image_store: &query.store.image_store,
            s3: &s3.options(),
            prefer_dataset: target.as_deref(),
        };
        let added = add_faces(
            client,
            &request,
            &mut LazyEncoder::new(|| query.photo.encoder()),
        )?;
        let face = added
            .first()
            .ok_or_else(|| anyhow!("image {image}: no face"))?;
        eprintln!(
            "query face {} ({}) from {image}",
            face.face_id,
            if face.known { "already known" } else { "added" },
        );
        Ok(face.face_id)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_flag_default_is_the_encoder_default() {
            assert_eq!(
                DEFAULT_MAX_DETECT_SIDE,
                EncoderOptions::default().max_detect_side
            );
        }
    }
}

#[cfg(not(feature = "photos"))]
mod disabled {
    use super::*;

    /// What a verb of the face pipeline says in a binary built without it.
    fn needs_photos(verb: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "`facematch {verb}` needs the face pipeline, and this binary was built without the \
             `photos` feature (a search worker); use a facematch built with default features \
             (`cargo build -p facematch`)"
        )
    }

    /// `verb` needs the face pipeline this build lacks: an error that says so.
    pub fn require(verb: &str) -> Result<()> {
        Err(needs_photos(verb))
    }

    /// `facematch encode`: not in this build.
    pub fn encode(_: EncodeArgs, _: bool) -> Result<ExitCode> {
        Err(needs_photos("encode"))
    }

    /// `facematch faces add`: not in this build.
    pub fn faces(_: FacesCommand, _: bool) -> Result<ExitCode> {
        Err(needs_photos("faces add"))
    }

    /// `facematch dataset build`: not in this build.
    pub fn build(_: BuildArgs, _: bool) -> Result<ExitCode> {
        Err(needs_photos("dataset build"))
    }

    /// `--image`: not in this build.
    pub fn query_face(
        _: &QueryArgs,
        _: &str,
        _: &mut postgres::Client,
        _: &S3Args,
        _: Option<&str>,
    ) -> Result<i64> {
        Err(needs_photos("… --image"))
    }
}
