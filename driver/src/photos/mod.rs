//! From photos to registered faces (feature `photos`): [`build`] makes a dataset version from a
//! folder or S3 prefix of photos through the build dataflow, [`add`] registers the faces of a few
//! photos (`faces add`, `search --image`), and [`encode`] only reports what a photo holds.
//!
//! A photo's identity is the sha256 of its bytes: a photo already known is never encoded again.
//! The dlib pipeline itself is `facematch_datasets::face`; this room decides what to do with its
//! faces (ARCHITECTURE.md: Face pipeline).

pub mod add;
pub mod build;
pub mod encode;
pub mod register;

use anyhow::{Context, Result, bail};
use facematch_datasets::{S3Options, Storage};

/// The embedder label of datasets built from photos.
pub const EMBEDDER: &str = "dlib_face_recognition_resnet_model_v1";
/// The dimension of dlib's encodings.
pub const DIM: usize = 128;
/// File extensions taken as photos.
pub const PHOTO_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "gif", "bmp"];

/// The extension of a photo's name, lower-cased, if it is one of [`PHOTO_EXTENSIONS`].
pub fn photo_extension(name: &str) -> Option<String> {
    name.rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .filter(|ext| PHOTO_EXTENSIONS.contains(&ext.as_str()))
}

/// Reads a photo from a path or an `s3://bucket/key` URI.
pub fn read_photo(image: &str, s3: &S3Options) -> Result<Vec<u8>> {
    if let Some(rest) = image.strip_prefix("s3://") {
        let (root, key) = match rest.rsplit_once('/') {
            Some((root, key)) if !key.is_empty() && !root.is_empty() => (root, key),
            _ => bail!("image {image}: expected s3://bucket/key"),
        };
        return Ok(Storage::open(&format!("s3://{root}"), s3)?
            .get(key)?
            .to_vec());
    }
    let path = image.strip_prefix("file://").unwrap_or(image);
    std::fs::read(path).with_context(|| format!("image {image}: cannot read"))
}
