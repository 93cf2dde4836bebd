//! One photo from bytes to faces: identity (sha256 of the bytes), safe decoding, detection and
//! encoding. Every command that reads photos (encode, faces add, dataset build) goes through here.

use crate::error::Result;
use crate::face::decode::{DecodeLimits, decode_image};
use crate::face::encoder::{DetectedFace, Encoder, FaceBox};
use crate::shard::sha256_hex;
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// The faces found in one photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodedPhoto {
    /// sha256 of the photo's bytes: its identity.
    pub sha256: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Every face found, as dlib reports them (possibly none).
    pub faces: Vec<DetectedFace>,
}

impl EncodedPhoto {
    /// Encodes every face of `image`, a decoded photo whose bytes hash to `sha256`.
    pub fn encode(encoder: &Encoder, sha256: String, image: &RgbImage) -> EncodedPhoto {
        EncodedPhoto {
            sha256,
            width: image.width(),
            height: image.height(),
            faces: encoder.encode(image),
        }
    }

    /// Keeps only the face with the largest box (the first one on equal areas).
    pub fn keep_largest(&mut self) {
        let (width, height) = (self.width, self.height);
        let boxes = self.faces.iter().map(|f| f.bbox.clipped(width, height));
        if let Some(i) = index_of_largest(boxes) {
            self.faces = vec![self.faces.swap_remove(i)];
        }
    }
}

/// Position of the largest box (the first one on equal areas), if there is any.
pub fn index_of_largest(boxes: impl IntoIterator<Item = FaceBox>) -> Option<usize> {
    boxes
        .into_iter()
        .enumerate()
        .max_by_key(|(i, b)| (b.area(), std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
}

/// Decodes `bytes` (named `name` in errors) within `limits` and encodes every face in it.
pub fn encode_photo(
    encoder: &Encoder,
    name: &str,
    bytes: &[u8],
    limits: DecodeLimits,
) -> Result<EncodedPhoto> {
    let image = decode_image(name, bytes, limits)?;
    Ok(EncodedPhoto::encode(encoder, sha256_hex(bytes), &image))
}
