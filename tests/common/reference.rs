//! The f64 brute-force reference every result is checked against (ARCHITECTURE.md: Similarity), written from
//! the formulas and nothing of facematch's own code, so a kernel or dataflow bug cannot hide in it.

/// A dataset face as the reference sees it.
#[derive(Debug, Clone)]
pub struct RefFace {
    pub id: i64,
    /// `'A'` or `'U'`.
    pub source: char,
    pub encoding: Vec<f32>,
}

/// A history as the reference sees it.
#[derive(Debug, Clone)]
pub struct RefQuery {
    /// `"cosine"` or `"euclidean"`.
    pub method: &'static str,
    /// `"all"`, `"actor"` or `"user"`.
    pub filter: &'static str,
    pub max_results: usize,
    pub exclude: Option<i64>,
    pub max_distance: Option<f64>,
    pub encoding: Vec<f32>,
}

/// The expected `(face id, score)` rows, best first: score descending, ties by id ascending.
pub fn top_n(faces: &[RefFace], q: &RefQuery) -> Vec<(i64, f64)> {
    let y: Vec<f64> = q.encoding.iter().map(|v| *v as f64).collect();
    let mut scored: Vec<(i64, f64)> = faces
        .iter()
        .filter(|f| match q.filter {
            "all" => true,
            "actor" => f.source == 'A',
            "user" => f.source == 'U',
            other => panic!("reference: unknown filter {other}"),
        })
        .filter(|f| q.exclude != Some(f.id))
        .filter_map(|f| {
            let x: Vec<f64> = f.encoding.iter().map(|v| *v as f64).collect();
            let dot: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
            let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
            let dist = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                .sqrt();
            if q.max_distance.is_some_and(|m| dist > m) {
                return None;
            }
            let score = match q.method {
                "cosine" => dot / (norm(&x) * norm(&y)),
                "euclidean" => 1.0 / (1.0 + dist),
                other => panic!("reference: unknown method {other}"),
            };
            Some((f.id, score))
        })
        .collect();
    // Numeric comparison, not total_cmp: −0.0 and +0.0 are the same score, so a tie.
    scored.sort_by(|a, b| {
        b.1.partial_cmp(&a.1)
            .expect("scores are never NaN")
            .then(a.0.cmp(&b.0))
    });
    scored.truncate(q.max_results);
    scored
}

/// Asserts `got` has the reference's faces in the reference's order, scores within 1e-9 relative.
pub fn assert_same(got: &[(i64, f64)], want: &[(i64, f64)], what: &str) {
    let ids = |rows: &[(i64, f64)]| rows.iter().map(|r| r.0).collect::<Vec<_>>();
    assert_eq!(
        ids(got),
        ids(want),
        "{what}: chosen faces or order differ from the f64 reference"
    );
    for ((id, s), (_, w)) in got.iter().zip(want) {
        assert!(
            (s - w).abs() <= 1e-9 * w.abs().max(1.0),
            "{what}: face {id} scored {s}, reference {w}"
        );
    }
}
