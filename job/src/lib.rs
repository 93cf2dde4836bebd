//! The facematch batch job.
//!
//! One pass over a dataset version answers every claimed history at once: each timely worker
//! streams its own shards, scores every face against every query with the [`kernel`], keeps a
//! local top-N per history, and the [`dataflow`] exchanges those candidates by history id and
//! merges them into the final top-N. With the `photos` feature, the `build` dataflow encodes
//! photos the same way: chunks of photos spread over workers, each chunk's faces written as one
//! part. A [`Work`] is either job, as runners and worker processes carry it. The crate knows
//! nothing of Postgres or of where its workers run.

pub mod assign;
#[cfg(feature = "photos")]
pub mod build;
pub mod dataflow;
pub mod kernel;
pub mod query;
pub mod resident;
pub mod topn;
pub mod work;

pub use dataflow::{JobOutput, JobSpec, run_job};
pub use query::{Match, MaxResults, Method, Query, SourceFilter, validate_params};
/// The timely version the job is built on (runners configure it).
pub use timely;
pub use work::{Work, WorkOutput};
