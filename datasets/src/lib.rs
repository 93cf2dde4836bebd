//! Face-encoding datasets for facematch.
//!
//! A dataset version is immutable: `<root>/<name>/v<version>/manifest.json` plus Parquet shard files
//! (ARCHITECTURE.md: Datasets, Invariants). This crate owns the record type, the
//! on-storage format, the storage back-ends (local folders and S3), the ways faces get in and out
//! (synthetic generator, importers, exporters) and, with the `photos` feature, the face encoder
//! (dlib) in [`face`]. It knows nothing of Postgres, histories or timely.

pub mod encoding;
pub mod error;
pub mod export;
#[cfg(feature = "photos")]
pub mod face;
pub mod import;
pub mod manifest;
mod plain_pages;
pub mod shard;
pub mod storage;
pub mod synth;
pub mod writer;

pub use encoding::{FaceRecord, FaceSource};
pub use error::{DatasetError, Result};
pub use manifest::{DatasetRef, Manifest, ShardInfo};
pub use shard::{ShardBatch, ShardReader};
pub use storage::{S3Options, Storage};
pub use writer::DatasetWriter;
