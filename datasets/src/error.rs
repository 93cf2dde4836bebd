//! Errors of dataset reading and writing. Every variant says *where* (file, line, shard, row).

use thiserror::Error;

/// Result alias of this crate.
pub type Result<T, E = DatasetError> = std::result::Result<T, E>;

/// What went wrong with a dataset, and where.
#[derive(Debug, Error)]
pub enum DatasetError {
    /// A line/row of an import file is malformed.
    #[error("{file}:{line}: {message}")]
    Input {
        /// The file being read.
        file: String,
        /// 1-based line (or row) number.
        line: u64,
        /// What was wrong.
        message: String,
    },
    /// A shard failed verification or could not be decoded.
    #[error("shard {shard}: {message}")]
    Shard {
        /// The shard's path or URI.
        shard: String,
        /// What was wrong.
        message: String,
    },
    /// The manifest is missing, unreadable or inconsistent.
    #[error("manifest {uri}: {message}")]
    Manifest {
        /// Where the manifest lives.
        uri: String,
        /// What was wrong.
        message: String,
    },
    /// Storage (local file system or S3) failed.
    #[error("storage {uri}: {message}")]
    Storage {
        /// The object or file.
        uri: String,
        /// The underlying failure.
        message: String,
    },
    /// Storage did not answer, after retries with backoff: 5xx, throttling, timeouts, dropped
    /// connections, bodies cut short. The machinery's failure, not the data's: a run requeues.
    #[error("storage {uri} unavailable after retries: {message}")]
    Unavailable {
        /// The object or file.
        uri: String,
        /// The last failure.
        message: String,
    },
    /// A face encoding is not acceptable (wrong dimension, NaN, zero vector).
    #[error("face {face_id}: {message}")]
    Encoding {
        /// The offending face.
        face_id: i64,
        /// What was wrong.
        message: String,
    },
    /// An image cannot be used: not an image, truncated, too large, no face, …
    #[error("image {image}: {message}")]
    Image {
        /// The image's path or URI.
        image: String,
        /// What was wrong.
        message: String,
    },
    /// The face models are missing or unreadable.
    #[error("models: {0}")]
    Models(String),
    /// Any other invalid request (bad argument).
    #[error("{0}")]
    Invalid(String),
}

impl DatasetError {
    /// Whether this is a passing failure of the infrastructure (storage unavailable), which a
    /// later attempt may not meet, rather than one of the data or the request.
    pub fn is_transient(&self) -> bool {
        matches!(self, DatasetError::Unavailable { .. })
    }

    /// Attaches a location (file and line) to an encoding error raised while importing.
    pub fn at(self, file: &str, line: u64) -> DatasetError {
        match self {
            DatasetError::Encoding { face_id, message } => DatasetError::Input {
                file: file.to_string(),
                line,
                message: format!("face {face_id}: {message}"),
            },
            other => other,
        }
    }
}
