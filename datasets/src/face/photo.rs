//! One photo from bytes to faces: identity (sha256 of the bytes), safe decoding, detection and
//! encoding. Every command that reads photos (encode, faces add, dataset build) goes through here.

use crate::error::Result;
use crate::face::decode::{DecodeLimits, decode_image};
use crate::face::encoder::{DetectedFace, Encoder};
use crate::shard::sha256_hex;
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
    /// Keeps only the face with the largest box (the first one on equal areas).
    pub fn keep_largest(&mut self) {
        let (width, height) = (self.width, self.height);
        let largest = self
            .faces
            .iter()
            .enumerate()
            .max_by_key(|(i, f)| (f.bbox.clipped(width, height).area(), std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        if let Some(i) = largest {
            self.faces = vec![self.faces.swap_remove(i)];
        }
    }
}

/// Decodes `bytes` (named `name` in errors) within `limits` and encodes every face in it.
pub fn encode_photo(
    encoder: &Encoder,
    name: &str,
    bytes: &[u8],
    limits: DecodeLimits,
) -> Result<EncodedPhoto> {
    let sha256 = sha256_hex(bytes);
    let image = decode_image(name, bytes, limits)?;
    let faces = encoder.encode(&image);
    Ok(EncodedPhoto {
        sha256,
        width: image.width(),
        height: image.height(),
        faces,
    })
}
