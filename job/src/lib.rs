//! The facematch batch job.
//!
//! One pass over a dataset version answers every claimed history at once: each timely worker
//! streams its own shards, scores every face against every query with the [`kernel`], keeps a
//! local top-N per history, and the [`dataflow`] exchanges those candidates by history id and
//! merges them into the final top-N. With the `photos` feature, the `build` dataflow turns photos
//! into a new dataset version the same way: photos spread over workers, faces encoded, shards
//! written in parallel. The crate knows nothing of Postgres or of where its workers run.

pub mod assign;
#[cfg(feature = "photos")]
pub mod build;
pub mod dataflow;
pub mod kernel;
pub mod query;
pub mod topn;

pub use dataflow::{JobOutput, JobSpec, run_job};
pub use query::{Match, MaxResults, Method, Query, SourceFilter, validate_params};
/// The timely version the job is built on (runners configure it).
pub use timely;
