//! `facematch encode`: the faces in photos — boxes and 128-d encodings — as the old FRS API
//! returned them, without touching the database.

use anyhow::Context;
use facematch_datasets::face::{DecodeLimits, DetectedFace, Encoder, encode_photo};
use serde::Serialize;
use std::path::Path;

/// One face of one photo, as reported.
#[derive(Debug, Serialize)]
pub struct FaceOut {
    /// `[top, right, bottom, left]` clipped to the image (face_recognition's order).
    pub top_right_bottom_left: [i64; 4],
    /// The 128-d encoding.
    pub encoding: Vec<f32>,
    /// The detector that found it: `hog` or `cnn`.
    pub detector: &'static str,
}

/// One photo's result.
#[derive(Debug, Serialize)]
pub struct ImageOut {
    /// The photo as given.
    pub image: String,
    /// sha256 of its bytes.
    pub sha256: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Its faces, in detection order.
    pub faces: Vec<FaceOut>,
    /// Why it could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Encodes one photo; a photo that cannot be read or decoded is reported in its entry.
pub fn encode_file(encoder: &Encoder, path: &Path) -> ImageOut {
    let name = path.display().to_string();
    let result = std::fs::read(path)
        .with_context(|| format!("image {name}: cannot read"))
        .and_then(|bytes| {
            Ok(encode_photo(
                encoder,
                &name,
                &bytes,
                DecodeLimits::default(),
            )?)
        });
    match result {
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
        Err(e) => ImageOut {
            image: name,
            sha256: String::new(),
            width: 0,
            height: 0,
            faces: Vec::new(),
            error: Some(format!("{e:#}")),
        },
    }
}

fn face_out(face: &DetectedFace, width: u32, height: u32) -> FaceOut {
    FaceOut {
        top_right_bottom_left: face.bbox.css_clipped(width, height),
        encoding: face.encoding.clone(),
        detector: face.detector.as_str(),
    }
}
