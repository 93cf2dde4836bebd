//! What a history asks (ARCHITECTURE.md: Similarity): method, source filter, N, self-exclusion, distance bound;
//! and the validation that rejects anything else with a clear message.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// N, the number of results a history asks for: one type from the CLI through the job to the
/// tables (the database column is an `int`, and every N in range fits both).
pub type MaxResults = u32;
/// Allowed range of `max_results`.
pub const MAX_RESULTS: std::ops::RangeInclusive<MaxResults> = 1..=1000;
/// Default `max_results` (as in the old system).
pub const DEFAULT_MAX_RESULTS: MaxResults = 10;

/// Similarity measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    /// s = x·q / (‖x‖‖q‖), in [−1, 1].
    Cosine,
    /// s = 1 / (1 + ‖x − q‖), in (0, 1].
    Euclidean,
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cosine" => Ok(Method::Cosine),
            "euclidean" => Ok(Method::Euclidean),
            other => Err(format!(
                "unknown similarity method {other:?} (expected cosine or euclidean)"
            )),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Cosine => "cosine",
            Method::Euclidean => "euclidean",
        })
    }
}

/// Which faces a history considers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SourceFilter {
    /// Every face.
    All,
    /// Actors only (source `A`).
    Actor,
    /// Users only (source `U`).
    User,
}

impl SourceFilter {
    /// Whether a face of source byte `source` passes.
    #[inline]
    pub fn accepts(self, source: u8) -> bool {
        match self {
            SourceFilter::All => true,
            SourceFilter::Actor => source == b'A',
            SourceFilter::User => source == b'U',
        }
    }
}

impl FromStr for SourceFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(SourceFilter::All),
            "actor" => Ok(SourceFilter::Actor),
            "user" => Ok(SourceFilter::User),
            other => Err(format!(
                "unknown face source filter {other:?} (expected all, actor or user)"
            )),
        }
    }
}

impl fmt::Display for SourceFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceFilter::All => "all",
            SourceFilter::Actor => "actor",
            SourceFilter::User => "user",
        })
    }
}

/// Validates a history's parameters as stored (text and any integer), so that a history written
/// straight into the table is held to the same rules as one submitted through the CLI.
pub fn validate_params(
    method: &str,
    filter: &str,
    max_results: i64,
    max_distance: Option<f64>,
) -> Result<(Method, SourceFilter, MaxResults), String> {
    let method = Method::from_str(method)?;
    let filter = SourceFilter::from_str(filter)?;
    let in_range = MaxResults::try_from(max_results)
        .ok()
        .filter(|n| MAX_RESULTS.contains(n));
    let Some(max_results) = in_range else {
        return Err(format!(
            "max_results {max_results} is out of range ({}..={})",
            MAX_RESULTS.start(),
            MAX_RESULTS.end()
        ));
    };
    if let Some(d) = max_distance
        && !(d.is_finite() && d >= 0.0)
    {
        return Err(format!("max_distance {d} must be a finite number ≥ 0"));
    }
    Ok((method, filter, max_results))
}

/// One history as the job sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    /// The history id (results are keyed by it).
    pub history_id: i64,
    /// The query face's encoding.
    pub encoding: Vec<f32>,
    /// Similarity measure.
    pub method: Method,
    /// Source filter.
    pub filter: SourceFilter,
    /// N: at most this many results.
    pub max_results: MaxResults,
    /// Self-exclusion: the query face's id, never returned, unless the history lets the face
    /// match itself (`None`).
    pub exclude_self: Option<i64>,
    /// Only faces within this euclidean distance of the query.
    pub max_distance: Option<f64>,
}

/// One result row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Match {
    /// The matching face.
    pub face_id: i64,
    /// Its source byte (`b'A'` / `b'U'`).
    pub source: u8,
    /// Similarity, higher is better.
    pub score: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_params_with_clear_messages() {
        assert!(validate_params("cosine", "all", 10, None).is_ok());
        assert!(validate_params("euclidean", "user", 1000, Some(0.6)).is_ok());
        let err = |m, f, n, d| validate_params(m, f, n, d).unwrap_err();
        assert!(
            err("manhattan", "all", 10, None).contains("unknown similarity method \"manhattan\"")
        );
        assert!(
            err("cosine", "robots", 10, None).contains("unknown face source filter \"robots\"")
        );
        assert!(err("cosine", "all", 0, None).contains("max_results 0 is out of range"));
        assert!(err("cosine", "all", 1001, None).contains("out of range"));
        assert!(err("cosine", "all", -3, None).contains("max_results -3 is out of range"));
        assert!(err("cosine", "all", i64::MAX, None).contains("out of range"));
        assert!(err("cosine", "all", 5, Some(f64::NAN)).contains("max_distance"));
        assert!(err("cosine", "all", 5, Some(-1.0)).contains("max_distance"));
        // No silent fallback: case matters, nothing is "corrected".
        assert!(validate_params("Cosine", "all", 10, None).is_err());
    }
}
