//! The unit of a dataset: one face id, its source, and its encoding vector.

use crate::error::{DatasetError, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a face came from: an actor (the reference set) or a user upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FaceSource {
    /// `A`: an actor's face.
    Actor,
    /// `U`: a user's face.
    User,
}

impl FaceSource {
    /// The one-letter code stored in shards and in Postgres.
    pub fn code(self) -> char {
        match self {
            FaceSource::Actor => 'A',
            FaceSource::User => 'U',
        }
    }

    /// The code as a byte, as the kernel stores it.
    pub fn byte(self) -> u8 {
        self.code() as u8
    }

    /// Parses the byte form.
    pub fn from_byte(b: u8) -> Option<FaceSource> {
        match b {
            b'A' => Some(FaceSource::Actor),
            b'U' => Some(FaceSource::User),
            _ => None,
        }
    }
}

impl fmt::Display for FaceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

impl FromStr for FaceSource {
    type Err = DatasetError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "A" | "a" | "actor" => Ok(FaceSource::Actor),
            "U" | "u" | "user" => Ok(FaceSource::User),
            other => Err(DatasetError::Invalid(format!(
                "unknown face source {other:?} (expected A or U)"
            ))),
        }
    }
}

/// One face of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceRecord {
    /// Globally unique face id (the `faces.id` in Postgres).
    pub face_id: i64,
    /// Actor or user.
    pub source: FaceSource,
    /// The encoding, `dim` float32 values.
    pub encoding: Vec<f32>,
}

impl FaceRecord {
    /// Checks the record can be scored: right dimension, all finite, not the zero vector.
    pub fn validate(&self, dim: usize) -> Result<()> {
        validate_encoding(self.face_id, &self.encoding, dim)
    }
}

/// Checks an encoding: `dim` values, all finite, not all zero (cosine is undefined for zero).
pub fn validate_encoding(face_id: i64, encoding: &[f32], dim: usize) -> Result<()> {
    let fail = |message: String| Err(DatasetError::Encoding { face_id, message });
    if encoding.len() != dim {
        return fail(format!(
            "encoding has dimension {}, expected {dim}",
            encoding.len()
        ));
    }
    if let Some(i) = encoding.iter().position(|v| !v.is_finite()) {
        return fail(format!(
            "encoding component {i} is {} (must be finite)",
            encoding[i]
        ));
    }
    if encoding.iter().all(|v| *v == 0.0) {
        return fail("encoding is the zero vector (cosine similarity is undefined)".into());
    }
    Ok(())
}
