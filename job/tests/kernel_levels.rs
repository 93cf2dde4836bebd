//! The kernel forced through every dispatch level (portable, AVX2, AVX-512; and for coded
//! batches every integer level: portable, AVX2, AVX-512 VNNI, AMX) against the independent f64
//! reference, on data built to break a float32 shortcut: near-ties at the N-th
//! place, exact ties, duplicates of the query, huge and tiny norms side by side, dimensions that
//! are not a multiple of any vector width, many query tiles and block boundaries. Also checks that
//! the float32 pruning really prunes (few pairs re-scored in f64).

use facematch_job::kernel::codes::FaceCodes;
use facematch_job::kernel::{CodeLevel, Level, Scanner};
use facematch_job::{Match, Method, Query, SourceFilter};

#[path = "../../tests/common/reference.rs"]
mod reference;
use reference::{RefFace, RefQuery};

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vector(&mut self, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| self.next()).collect()
    }
}

struct Case {
    dim: usize,
    ids: Vec<i64>,
    sources: Vec<u8>,
    faces: Vec<Vec<f32>>,
    queries: Vec<Query>,
}

impl Case {
    fn query(&self, i: usize, method: Method, encoding: Vec<f32>, n: usize) -> Query {
        Query {
            history_id: i as i64 + 1,
            encoding,
            method,
            filter: SourceFilter::All,
            max_results: n as u32,
            exclude_self: None,
            max_distance: None,
        }
    }

    fn check(&self, what: &str) {
        let levels: Vec<Level> = Level::ALL.into_iter().filter(|l| l.available()).collect();
        assert!(levels.contains(&Level::Portable));
        assert!(levels.contains(&Level::detect()));
        let values: Vec<f32> = self.faces.iter().flatten().copied().collect();
        let reference_faces: Vec<RefFace> = self
            .ids
            .iter()
            .zip(&self.sources)
            .zip(&self.faces)
            .map(|((id, s), e)| RefFace {
                id: *id,
                source: *s as char,
                encoding: e.clone(),
            })
            .collect();
        let paths = levels.into_iter().map(Path::Float).chain(
            CodeLevel::ALL
                .into_iter()
                .filter(|l| l.available())
                .map(Path::Coded),
        );
        for path in paths {
            let mut scanner = path.scanner(&self.queries, self.dim);
            // One call across several blocks, then the rest in odd-sized pieces.
            let split = self.ids.len() * 2 / 3;
            let mut pieces = vec![(0, split)];
            for chunk in (split..self.ids.len()).collect::<Vec<_>>().chunks(37) {
                pieces.push((chunk[0], chunk[chunk.len() - 1] + 1));
            }
            for (a, b) in pieces {
                path.scan(
                    &mut scanner,
                    self.dim,
                    &self.ids[a..b],
                    &self.sources[a..b],
                    &values[a * self.dim..b * self.dim],
                );
            }
            let results = scanner.into_results();
            for (q, (history, got)) in self.queries.iter().zip(&results) {
                assert_eq!(*history, q.history_id);
                let want = reference::top_n(&reference_faces, &reference_query(q));
                let got: Vec<(i64, f64)> =
                    got.iter().map(|m: &Match| (m.face_id, m.score)).collect();
                reference::assert_same(&got, &want, &format!("{what} at {path:?}, {q:?}"));
            }
        }
    }
}

/// How a case is scanned: float32 pruning at a level, or int8 codes at an integer level.
#[derive(Debug, Clone, Copy)]
enum Path {
    Float(Level),
    Coded(CodeLevel),
}

impl Path {
    fn scanner(self, queries: &[Query], dim: usize) -> Scanner {
        match self {
            Path::Float(level) => {
                let scanner = Scanner::with_level(queries, dim, level);
                assert_eq!(scanner.level(), level);
                scanner
            }
            Path::Coded(level) => {
                let scanner =
                    Scanner::with_level(queries, dim, Level::Portable).with_code_level(level);
                assert_eq!(scanner.code_level(), level);
                scanner
            }
        }
    }

    fn scan(self, scanner: &mut Scanner, dim: usize, ids: &[i64], sources: &[u8], values: &[f32]) {
        match self {
            Path::Float(_) => scanner.scan(ids, sources, values),
            Path::Coded(_) => {
                let codes = FaceCodes::new(values, dim);
                scanner.scan_coded(ids, sources, values, &codes)
            }
        }
    }
}

fn reference_query(q: &Query) -> RefQuery {
    RefQuery {
        method: match q.method {
            Method::Cosine => "cosine",
            Method::Euclidean => "euclidean",
        },
        filter: match q.filter {
            SourceFilter::All => "all",
            SourceFilter::Actor => "actor",
            SourceFilter::User => "user",
        },
        max_results: q.max_results as usize,
        exclude: q.exclude_self,
        max_distance: q.max_distance,
        encoding: q.encoding.clone(),
    }
}

fn random_case(dim: usize, faces: usize, queries: usize, seed: u64) -> Case {
    let mut rng = Rng(seed);
    let mut case = Case {
        dim,
        ids: (0..faces as i64)
            .map(|i| (i * 7919) % 100_003 + 1)
            .collect(),
        sources: (0..faces)
            .map(|i| if i % 5 == 0 { b'U' } else { b'A' })
            .collect(),
        faces: (0..faces).map(|_| rng.vector(dim)).collect(),
        queries: vec![],
    };
    case.queries = (0..queries)
        .map(|i| {
            let method = if i % 2 == 0 {
                Method::Cosine
            } else {
                Method::Euclidean
            };
            case.query(i, method, rng.vector(dim), 1 + i % 12)
        })
        .collect();
    case
}

#[test]
fn dimensions_off_every_vector_width_and_many_query_tiles() {
    for (dim, seed) in [
        (1, 1),
        (7, 2),
        (13, 3),
        (127, 4),
        (128, 5),
        (129, 6),
        (131, 7),
    ] {
        let mut case = random_case(dim, 700, 23, seed);
        // Filters, self-exclusion and distance limits, spread over the tiles.
        for (i, q) in case.queries.iter_mut().enumerate() {
            q.filter = [SourceFilter::All, SourceFilter::Actor, SourceFilter::User][i % 3];
            if i % 4 == 1 {
                q.exclude_self = Some(case.ids[i * 13]);
            }
            if i % 5 == 2 {
                q.max_distance = Some(0.5 * (dim as f64).sqrt());
            }
        }
        case.check(&format!("D={dim}"));
    }
}

/// More queries than the kernel scans in one chunk (1024): every chunk, including a last one
/// that ends inside a query tile, passes over every block.
#[test]
fn more_queries_than_one_chunk() {
    random_case(19, 300, 2500, 8).check("2500 queries");
}

#[test]
fn near_ties_at_the_nth_place_are_decided_in_f64() {
    let dim = 128;
    let mut rng = Rng(99);
    let base = rng.vector(dim);
    let mut case = Case {
        dim,
        ids: vec![],
        sources: vec![],
        faces: vec![],
        queries: vec![],
    };
    // 400 faces a hair apart: perturbations at float32's last bits of one coordinate, so their
    // float32 scores coincide while their f64 scores differ (and some are exactly equal).
    for i in 0..400 {
        let mut x = base.clone();
        let k = i % dim;
        x[k] = f32::from_bits(x[k].to_bits().wrapping_add((i / dim) as u32 % 4));
        case.ids.push(1000 - i as i64);
        case.sources.push(b'A');
        case.faces.push(x);
    }
    // Plus random faces far away, and queries at and next to the cluster.
    for i in 0..300 {
        case.ids.push(5000 + i);
        case.sources.push(b'A');
        case.faces.push(rng.vector(dim));
    }
    let mut near = base.clone();
    near[3] += 1e-3;
    case.queries = vec![
        case.query(0, Method::Cosine, base.clone(), 10),
        case.query(1, Method::Euclidean, base.clone(), 10),
        case.query(2, Method::Cosine, near.clone(), 7),
        case.query(3, Method::Euclidean, near, 25),
    ];
    case.check("near ties");
}

#[test]
fn huge_and_tiny_norms_side_by_side() {
    let mut case = random_case(33, 500, 9, 17);
    let scales = [1e-36f32, 1e-20, 1e-6, 1.0, 1e6, 1e18, 3e19, 1e30];
    for (i, f) in case.faces.iter_mut().enumerate() {
        let s = scales[i % scales.len()];
        f.iter_mut().for_each(|v| *v *= s);
    }
    for (i, q) in case.queries.iter_mut().enumerate() {
        let s = scales[(i * 3) % scales.len()];
        q.encoding.iter_mut().for_each(|v| *v *= s);
    }
    case.check("extreme norms");
}

#[test]
fn exact_ties_and_duplicates_go_to_the_smaller_id() {
    let mut case = random_case(24, 300, 6, 23);
    // Every third face repeats face 0 (the query): 100 exact ties at the top.
    let first = case.faces[0].clone();
    for f in case.faces.iter_mut().step_by(3) {
        f.clone_from(&first);
    }
    for q in case.queries.iter_mut() {
        q.encoding.clone_from(&first);
    }
    case.check("ties");
}

#[test]
fn float32_pruning_rescores_few_pairs() {
    let case = random_case(128, 20_000, 16, 5);
    let values: Vec<f32> = case.faces.iter().flatten().copied().collect();
    for level in Level::ALL.into_iter().filter(|l| l.available()) {
        let mut scanner = Scanner::with_level(&case.queries, case.dim, level);
        scanner.scan(&case.ids, &case.sources, &values);
        let (scored, rescored) = (scanner.scored_pairs(), scanner.rescored());
        assert_eq!(scored, 20_000 * 16);
        // The first N faces of each query are always re-scored; past that only near-ties.
        assert!(
            (rescored as f64) < 0.01 * scored as f64,
            "{level}: {rescored} of {scored} pairs re-scored"
        );
    }
}

#[test]
fn int8_pruning_rescores_few_pairs() {
    let case = random_case(128, 20_000, 40, 5);
    let values: Vec<f32> = case.faces.iter().flatten().copied().collect();
    let codes = FaceCodes::new(&values, case.dim);
    for level in CodeLevel::ALL.into_iter().filter(|l| l.available()) {
        let mut scanner =
            Scanner::with_level(&case.queries, case.dim, Level::Portable).with_code_level(level);
        scanner.scan_coded(&case.ids, &case.sources, &values, &codes);
        let (scored, rescored) = (scanner.scored_pairs(), scanner.rescored());
        assert_eq!(scored, 20_000 * 40);
        assert!(
            (rescored as f64) < 0.01 * scored as f64,
            "{level}: {rescored} of {scored} pairs re-scored"
        );
    }
}
