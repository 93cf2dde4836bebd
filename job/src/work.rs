//! What a cluster runs: one [`Work`] — a search pass or a photo build — and its [`WorkOutput`].
//! Runners and worker processes move these without caring which one they hold, so a build
//! goes through the same runners, rendezvous and pools as a search (ARCHITECTURE.md: Where it
//! runs).

use crate::{JobOutput, JobSpec};
use serde::{Deserialize, Serialize};

/// One job for a cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Work {
    /// One pass of the batch job over a dataset version ([`crate::dataflow`]).
    Search(JobSpec),
    /// Encoding photos into parts ([`crate::build`]).
    #[cfg(feature = "photos")]
    Build(crate::build::BuildSpec),
}

/// What process 0 returns for a [`Work`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkOutput {
    /// The results of a search pass.
    Search(JobOutput),
    /// What a build's workers did.
    #[cfg(feature = "photos")]
    Build(crate::build::BuildOutput),
}

impl Work {
    /// `search` or `build`.
    pub fn kind(&self) -> &'static str {
        match self {
            Work::Search(_) => "search",
            #[cfg(feature = "photos")]
            Work::Build(_) => "build",
        }
    }
}

impl WorkOutput {
    /// `search` or `build`.
    pub fn kind(&self) -> &'static str {
        match self {
            WorkOutput::Search(_) => "search",
            #[cfg(feature = "photos")]
            WorkOutput::Build(_) => "build",
        }
    }
}
