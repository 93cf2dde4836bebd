//! `facematch encode`: the faces in photos — boxes and 128-d encodings — as the old FRS API
//! returned them, without touching the database.

use anyhow::{Context, Result};
use clap::Args;
use facematch_datasets::face::{
    DecodeLimits, DetectedFace, Detector, Encoder, EncoderOptions, Landmarks, ModelPaths,
    encode_photo,
};
use serde::Serialize;
use std::path::PathBuf;

/// How to find faces (shared by every command that reads photos).
#[derive(Debug, Clone, Args)]
pub struct FaceArgs {
    /// Face detector: hog (fast) or cnn (finds more poses, slower).
    #[arg(long, default_value = "hog")]
    pub detector: String,
    /// Times the image is upsampled before detection (finds smaller faces; each one ×4 the work).
    #[arg(long, default_value_t = 1)]
    pub upsample: u32,
    /// Align with the 68-point landmark model instead of the 5-point one.
    #[arg(long)]
    pub landmarks_68: bool,
    /// Longest side an image is detected at; larger ones are scaled down for detection only.
    #[arg(long, default_value_t = EncoderOptions::default().max_detect_side)]
    pub max_detect_side: u32,
    /// Folder with dlib's model files.
    #[arg(long, env = "FACEMATCH_MODELS")]
    pub models: Option<PathBuf>,
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

/// Arguments of `facematch encode`.
#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Photos (JPEG, PNG, GIF, BMP).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub face: FaceArgs,
}

/// One face of one photo, as printed.
#[derive(Debug, Serialize)]
struct FaceOut {
    /// `[top, right, bottom, left]` clipped to the image (face_recognition's order).
    top_right_bottom_left: [i64; 4],
    encoding: Vec<f32>,
}

/// One photo's result.
#[derive(Debug, Serialize)]
struct ImageOut {
    image: String,
    sha256: String,
    width: u32,
    height: u32,
    faces: Vec<FaceOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Encodes every photo; a photo that cannot be read is reported and the others still are.
/// Returns whether every photo was readable.
pub fn encode_command(args: &EncodeArgs, json: bool) -> Result<bool> {
    let encoder = args.face.encoder()?;
    let mut all_ok = true;
    let mut results = Vec::new();
    for path in &args.images {
        let name = path.display().to_string();
        let result = std::fs::read(path)
            .with_context(|| format!("image {name}: cannot read"))
            .and_then(|bytes| {
                Ok(encode_photo(
                    &encoder,
                    &name,
                    &bytes,
                    DecodeLimits::default(),
                )?)
            });
        let out = match result {
            Ok(photo) => ImageOut {
                image: name,
                sha256: photo.sha256.clone(),
                width: photo.width,
                height: photo.height,
                faces: photo
                    .faces
                    .iter()
                    .map(|f| face_out(f, photo.width, photo.height))
                    .collect(),
                error: None,
            },
            Err(e) => {
                all_ok = false;
                eprintln!("error: {e:#}");
                ImageOut {
                    image: name,
                    sha256: String::new(),
                    width: 0,
                    height: 0,
                    faces: Vec::new(),
                    error: Some(format!("{e:#}")),
                }
            }
        };
        if !json {
            print_text(&out);
        }
        results.push(out);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(all_ok)
}

fn face_out(face: &DetectedFace, width: u32, height: u32) -> FaceOut {
    FaceOut {
        top_right_bottom_left: face.bbox.css_clipped(width, height),
        encoding: face.encoding.clone(),
    }
}

fn print_text(out: &ImageOut) {
    if out.error.is_some() {
        return;
    }
    println!(
        "{} ({}×{}): {} face(s)",
        out.image,
        out.width,
        out.height,
        out.faces.len()
    );
    for (i, face) in out.faces.iter().enumerate() {
        let [top, right, bottom, left] = face.top_right_bottom_left;
        let head: Vec<String> = face
            .encoding
            .iter()
            .take(4)
            .map(|v| format!("{v:.4}"))
            .collect();
        println!(
            "  face {}: left {left}, top {top}, right {right}, bottom {bottom}; encoding [{}, …] ({} values)",
            i + 1,
            head.join(", "),
            face.encoding.len()
        );
    }
}
