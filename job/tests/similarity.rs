//! Similarity and top-N against an independent f64 brute-force reference (ARCHITECTURE.md: Similarity): the
//! kernel on its own with random batch splits, and the whole timely dataflow over Parquet shards
//! with 1, 2 and 4 workers. Data mixes random values with a coarse grid (exact ties and duplicate
//! encodings) and extreme norms (the kernel's f64-only path).

use facematch_datasets::{DatasetWriter, FaceRecord, FaceSource, ShardBatch, Storage};
use facematch_job::kernel::codes::FaceCodes;
use facematch_job::kernel::{CodeLevel, Level, Scanner};
use facematch_job::resident::ResidentBatch;
use facematch_job::{JobSpec, Match, Method, Query, SourceFilter, run_job, validate_params};
use proptest::prelude::*;
use std::sync::Arc;

#[path = "../../tests/common/reference.rs"]
mod reference;
use reference::{RefFace, RefQuery};

/// The reference's answer for a job-level face set and query.
fn reference(faces: &[FaceRecord], q: &Query) -> Vec<(i64, f64)> {
    let faces: Vec<RefFace> = faces
        .iter()
        .map(|f| RefFace {
            id: f.face_id,
            source: f.source.code(),
            encoding: f.encoding.clone(),
        })
        .collect();
    let q = RefQuery {
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
    };
    reference::top_n(&faces, &q)
}

fn assert_matches(got: &[Match], want: &[(i64, f64)], what: &str) {
    let got: Vec<(i64, f64)> = got.iter().map(|m| (m.face_id, m.score)).collect();
    reference::assert_same(&got, want, what);
}

fn face(id: i64, source: FaceSource, encoding: Vec<f32>) -> FaceRecord {
    FaceRecord {
        face_id: id,
        source,
        encoding,
    }
}

/// An encoding of `dim` values: random, on a coarse grid (ties), or scaled to an extreme norm.
fn arb_encoding(dim: usize) -> impl Strategy<Value = Vec<f32>> {
    let random = prop::collection::vec(-1.0f32..1.0, dim);
    let grid = prop::collection::vec((-2i32..=2).prop_map(|v| v as f32 * 0.5), dim);
    let extreme = (
        prop::collection::vec(-1.0f32..1.0, dim),
        prop::sample::select(vec![1e-25f32, 1e-3, 1e3, 1e25]),
    )
        .prop_map(|(v, s)| v.into_iter().map(|x| x * s).collect());
    prop_oneof![4 => random, 4 => grid, 1 => extreme].prop_map(|mut v: Vec<f32>| {
        if v.iter().all(|x| *x == 0.0) {
            v[0] = 1.0; // zero vectors never reach the kernel (rejected at import)
        }
        v
    })
}

fn arb_faces(dim: usize) -> impl Strategy<Value = Vec<FaceRecord>> {
    prop::collection::vec((arb_encoding(dim), any::<bool>()), 0..160).prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            // Ids deliberately not in storage order, so the tie rule is not the scan order.
            .map(|(i, (enc, user))| {
                face(
                    ((i as i64 * 7919) % 1009) + 1,
                    if user {
                        FaceSource::User
                    } else {
                        FaceSource::Actor
                    },
                    enc,
                )
            })
            .collect()
    })
}

fn arb_query(dim: usize, history_id: i64) -> impl Strategy<Value = Query> {
    (
        arb_encoding(dim),
        prop::sample::select(vec![Method::Cosine, Method::Euclidean]),
        prop::sample::select(vec![
            SourceFilter::All,
            SourceFilter::Actor,
            SourceFilter::User,
        ]),
        1u32..25,
        prop::option::of(1i64..1010),
        prop::option::of(0.0f64..3.0),
    )
        .prop_map(
            move |(encoding, method, filter, max_results, exclude_self, max_distance)| Query {
                history_id,
                encoding,
                method,
                filter,
                max_results,
                exclude_self,
                max_distance,
            },
        )
}

fn arb_case() -> impl Strategy<Value = (usize, Vec<FaceRecord>, Vec<Query>, Vec<usize>)> {
    (1usize..40).prop_flat_map(|dim| {
        (
            Just(dim),
            arb_faces(dim),
            // Up to 19 queries: several query tiles at every level, and a partial last one.
            prop::collection::vec(0i64..1, 1..20).prop_flat_map(move |v| {
                (0..v.len() as i64)
                    .map(|h| arb_query(dim, h + 1))
                    .collect::<Vec<_>>()
            }),
            prop::collection::vec(1usize..70, 1..5),
        )
    })
}

/// Feeds `faces` to a scanner in batches of the given sizes (cycling).
fn scan_in_batches(
    faces: &[FaceRecord],
    queries: &[Query],
    dim: usize,
    sizes: &[usize],
) -> Vec<(i64, Vec<Match>)> {
    scan_in_batches_at(Level::detect(), faces, queries, dim, sizes)
}

/// [`scan_in_batches`] on a given kernel level.
fn scan_in_batches_at(
    level: Level,
    faces: &[FaceRecord],
    queries: &[Query],
    dim: usize,
    sizes: &[usize],
) -> Vec<(i64, Vec<Match>)> {
    scan_batches(Scanner::with_level(queries, dim, level), None, faces, sizes)
}

/// Feeds `faces` to `scanner` in batches of the given sizes (cycling), each coded in int8 and
/// scanned with its codes when `coded` (as a resident dataset is).
fn scan_batches(
    mut scanner: Scanner,
    coded: Option<usize>,
    faces: &[FaceRecord],
    sizes: &[usize],
) -> Vec<(i64, Vec<Match>)> {
    let mut rest = faces;
    let mut k = 0;
    while !rest.is_empty() {
        let (batch, tail) = rest.split_at(sizes[k % sizes.len()].min(rest.len()));
        let ids: Vec<i64> = batch.iter().map(|f| f.face_id).collect();
        let sources: Vec<u8> = batch.iter().map(|f| f.source.byte()).collect();
        let values: Vec<f32> = batch
            .iter()
            .flat_map(|f| f.encoding.iter().copied())
            .collect();
        match coded {
            // Every other batch as a resident dataset holds it (its faces placed in the codes'
            // order), the others with the codes' own order map.
            Some(dim) if k % 2 == 0 => {
                let batch = ShardBatch {
                    face_ids: ids,
                    sources,
                    encodings: values.into(),
                    first_row: 0,
                };
                let held = ResidentBatch::new(batch, dim);
                let codes = held.codes.as_ref().expect("a codable dimension");
                let batch = &held.batch;
                scanner.scan_coded(&batch.face_ids, &batch.sources, batch.values(), codes)
            }
            Some(dim) => {
                let codes = FaceCodes::new(&values, dim);
                scanner.scan_coded(&ids, &sources, &values, &codes)
            }
            None => scanner.scan(&ids, &sources, &values),
        }
        rest = tail;
        k += 1;
    }
    scanner.into_results()
}

/// Ids are unique within a dataset.
fn dedup_ids(mut faces: Vec<FaceRecord>) -> Vec<FaceRecord> {
    let mut seen = std::collections::HashSet::new();
    faces.retain(|f| seen.insert(f.face_id));
    faces
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn kernel_equals_the_f64_reference((dim, faces, queries, sizes) in arb_case()) {
        let faces = dedup_ids(faces);
        // Every dispatch level this CPU has (the CI machine has all three).
        for level in Level::ALL.into_iter().filter(|l| l.available()) {
            let results = scan_in_batches_at(level, &faces, &queries, dim, &sizes);
            prop_assert_eq!(results.len(), queries.len());
            for (q, (history, got)) in queries.iter().zip(&results) {
                prop_assert_eq!(*history, q.history_id);
                assert_matches(got, &reference(&faces, q), &format!("{level}: {q:?}"));
            }
        }
    }

    #[test]
    fn the_int8_path_equals_the_f64_reference((dim, faces, queries, sizes) in arb_case()) {
        let faces = dedup_ids(faces);
        // Every integer level this CPU has (the CI machine has all four).
        for level in CodeLevel::ALL.into_iter().filter(|l| l.available()) {
            let scanner = Scanner::new(&queries, dim).with_code_level(level);
            let results = scan_batches(scanner, Some(dim), &faces, &sizes);
            prop_assert_eq!(results.len(), queries.len());
            for (q, (history, got)) in queries.iter().zip(&results) {
                prop_assert_eq!(*history, q.history_id);
                assert_matches(got, &reference(&faces, q), &format!("int8 {level}: {q:?}"));
            }
        }
    }
}

fn query(method: Method, encoding: Vec<f32>, n: usize) -> Query {
    Query {
        history_id: 1,
        encoding,
        method,
        filter: SourceFilter::All,
        max_results: n as u32,
        exclude_self: None,
        max_distance: None,
    }
}

fn run_kernel(faces: &[FaceRecord], q: &Query) -> Vec<Match> {
    scan_in_batches(faces, std::slice::from_ref(q), q.encoding.len(), &[3])
        .remove(0)
        .1
}

#[test]
fn ties_go_to_the_smaller_face_id_even_at_the_nth_place() {
    // Five identical encodings stored in descending id order; N = 3 cuts through the tie.
    let faces: Vec<FaceRecord> = (0..5)
        .map(|i| face(50 - i, FaceSource::Actor, vec![1.0, 2.0, 3.0]))
        .chain([face(99, FaceSource::User, vec![3.0, 2.0, 1.0])])
        .collect();
    for method in [Method::Cosine, Method::Euclidean] {
        let got = run_kernel(&faces, &query(method, vec![1.0, 2.0, 3.0], 3));
        assert_eq!(
            got.iter().map(|m| m.face_id).collect::<Vec<_>>(),
            vec![46, 47, 48],
            "{method}"
        );
        assert!(got.iter().all(|m| m.score == got[0].score));
    }
}

#[test]
fn scores_follow_the_spec_formulas() {
    let faces = vec![
        face(1, FaceSource::Actor, vec![3.0, 4.0]),
        face(2, FaceSource::Actor, vec![-3.0, -4.0]),
    ];
    let cos = run_kernel(&faces, &query(Method::Cosine, vec![6.0, 8.0], 10));
    // cosine is not rescaled: the opposite vector scores −1
    assert_eq!(
        cos.iter().map(|m| (m.face_id, m.score)).collect::<Vec<_>>(),
        vec![(1, 1.0), (2, -1.0)]
    );
    let euc = run_kernel(&faces, &query(Method::Euclidean, vec![6.0, 8.0], 10));
    // distances 5 and 15 → 1/6 and 1/16
    assert_eq!(
        euc.iter().map(|m| (m.face_id, m.score)).collect::<Vec<_>>(),
        vec![(1, 1.0 / 6.0), (2, 1.0 / 16.0)]
    );
}

#[test]
fn filters_exclude_self_and_max_distance() {
    let faces = vec![
        face(1, FaceSource::Actor, vec![1.0, 0.0]),
        face(2, FaceSource::User, vec![0.9, 0.1]),
        face(3, FaceSource::Actor, vec![0.5, 0.5]),
        face(4, FaceSource::User, vec![0.0, 1.0]),
    ];
    let ids = |q: &Query| {
        run_kernel(&faces, q)
            .iter()
            .map(|m| m.face_id)
            .collect::<Vec<_>>()
    };
    let mut q = query(Method::Cosine, vec![1.0, 0.0], 10);
    q.exclude_self = Some(1);
    assert_eq!(ids(&q), vec![2, 3, 4], "the query face is excluded");
    q.exclude_self = None;
    assert_eq!(ids(&q), vec![1, 2, 3, 4], "included on request");
    q.filter = SourceFilter::Actor;
    assert_eq!(ids(&q), vec![1, 3]);
    q.filter = SourceFilter::User;
    assert_eq!(ids(&q), vec![2, 4]);
    q.filter = SourceFilter::All;
    // distances from (1,0): 0, 0.1414, 0.7071, 1.4142
    q.max_distance = Some(0.6);
    assert_eq!(ids(&q), vec![1, 2], "only faces within the distance");
    q.max_results = 1;
    assert_eq!(ids(&q), vec![1], "still at most N");
    q.max_distance = Some(0.0);
    assert_eq!(ids(&q), vec![1], "distance 0 keeps exact duplicates only");
}

#[test]
fn n_bounds_and_bad_parameters_are_rejected() {
    assert!(validate_params("cosine", "all", 1, None).is_ok());
    assert!(validate_params("euclidean", "actor", 1000, Some(0.6)).is_ok());
    for (method, filter, n, distance, expected) in [
        (
            "manhattan",
            "all",
            10,
            None,
            "unknown similarity method \"manhattan\"",
        ),
        ("Cosine ", "all", 10, None, "unknown similarity method"),
        (
            "cosine",
            "everyone",
            10,
            None,
            "unknown face source filter \"everyone\"",
        ),
        (
            "cosine",
            "all",
            0,
            None,
            "max_results 0 is out of range (1..=1000)",
        ),
        (
            "cosine",
            "all",
            1001,
            None,
            "max_results 1001 is out of range (1..=1000)",
        ),
        ("cosine", "all", -5, None, "max_results -5"),
        ("cosine", "all", 10, Some(-1.0), "max_distance -1"),
        ("cosine", "all", 10, Some(f64::NAN), "max_distance NaN"),
    ] {
        let err = validate_params(method, filter, n, distance).unwrap_err();
        assert!(
            err.contains(expected),
            "{method}/{filter}/{n}/{distance:?}: {err}"
        );
    }
}

/// Writes `faces` as a dataset with several shards and returns the job spec for `queries`.
fn dataset_spec(
    dir: &std::path::Path,
    faces: &[FaceRecord],
    dim: usize,
    shard_rows: usize,
    queries: Vec<Query>,
) -> JobSpec {
    let storage = Storage::open(dir.to_str().unwrap(), &Default::default()).unwrap();
    let mut writer =
        DatasetWriter::create(storage.clone(), "t", 1, dim, "test", shard_rows).unwrap();
    for f in faces {
        writer.push(f.clone()).unwrap();
    }
    JobSpec {
        root_uri: storage.root_uri().to_string(),
        s3: Default::default(),
        manifest: writer.finish().unwrap(),
        queries,
    }
}

fn clustered(count: u64, dim: usize) -> Vec<FaceRecord> {
    facematch_datasets::synth::SynthSpec {
        identities: count / 10,
        per_identity: 10,
        dim,
        seed: 11,
        first_id: 1,
        spread: 0.5,
    }
    .faces()
    .collect()
}

#[test]
fn dataflow_equals_the_reference_for_any_worker_count() {
    let dim = 24;
    let faces = clustered(3000, dim);
    let mut queries = Vec::new();
    for (h, (method, filter, n, distance)) in [
        (Method::Cosine, SourceFilter::All, 10, None),
        (Method::Euclidean, SourceFilter::Actor, 25, None),
        (Method::Cosine, SourceFilter::User, 1, None),
        (Method::Euclidean, SourceFilter::All, 1000, Some(0.9)),
        (Method::Cosine, SourceFilter::All, 7, Some(0.0)),
    ]
    .into_iter()
    .enumerate()
    {
        let source = &faces[h * 397];
        queries.push(Query {
            history_id: 100 + h as i64,
            encoding: source.encoding.clone(),
            method,
            filter,
            max_results: n,
            exclude_self: (h != 4).then_some(source.face_id),
            max_distance: distance,
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = Arc::new(dataset_spec(dir.path(), &faces, dim, 350, queries.clone()));
    assert_eq!(spec.manifest.shards.len(), 9);
    for workers in [1, 2, 4] {
        let out = run_job(spec.clone(), timely::Config::process(workers))
            .unwrap()
            .expect("worker 0 output");
        assert_eq!(out.faces_scanned, 3000, "{workers} workers");
        assert_eq!(out.results.len(), queries.len());
        for q in &queries {
            let want = reference(&faces, q);
            assert!(!want.is_empty());
            assert_matches(
                &out.results[&q.history_id],
                &want,
                &format!("history {} with {workers} workers", q.history_id),
            );
        }
    }
}

/// `count` queries for faces `0, stride, 2·stride…` of `faces`, each method, filter, N, self
/// exclusion and max distance among them.
fn mixed_queries(faces: &[FaceRecord], count: usize, stride: usize) -> Vec<Query> {
    (0..count)
        .map(|h| {
            let source = &faces[h * stride];
            Query {
                history_id: 1 + h as i64,
                encoding: source.encoding.clone(),
                method: [Method::Cosine, Method::Euclidean][h % 2],
                filter: [SourceFilter::All, SourceFilter::Actor, SourceFilter::User][h % 3],
                max_results: [1, 10, 100][h % 3],
                exclude_self: (h % 5 != 0).then_some(source.face_id),
                max_distance: (h % 7 == 0).then_some(0.8),
            }
        })
        .collect()
}

/// Each history's matches as (face, source, score bits): equal means byte-identical.
type ResultBits = Vec<(i64, Vec<(i64, u8, u64)>)>;

/// [`ResultBits`] of a job's output.
fn result_bits(out: &facematch_job::JobOutput) -> ResultBits {
    out.results
        .iter()
        .map(|(h, ms)| {
            (
                *h,
                ms.iter()
                    .map(|m| (m.face_id, m.source, m.score.to_bits()))
                    .collect(),
            )
        })
        .collect()
}

/// The dataset held in memory (`serve`, `watch`) answers as a streamed pass does, byte for
/// byte, for any worker count; a next version reuses the shards it shares; a job for another
/// version is refused.
#[test]
fn a_resident_dataset_answers_as_a_streamed_pass() {
    use facematch_job::dataflow::run_job_on;
    use facematch_job::resident::ResidentDataset;
    let dim = 24;
    let faces = clustered(3000, dim);
    let queries = mixed_queries(&faces, 40, 71);
    let dir = tempfile::tempdir().unwrap();
    let spec = dataset_spec(dir.path(), &faces, dim, 350, queries.clone());
    let resident =
        Arc::new(ResidentDataset::load(&spec.root_uri, &spec.s3, &spec.manifest, 2).unwrap());
    assert_eq!(resident.encoding_bytes(), 3000 * dim as u64 * 4);
    // Both the row path (a few queries) and the tile path (many).
    for take in [3, queries.len()] {
        let spec = Arc::new(JobSpec {
            queries: queries[..take].to_vec(),
            ..spec.clone()
        });
        let streamed = run_job(spec.clone(), timely::Config::process(1))
            .unwrap()
            .unwrap();
        for workers in [1, 2, 3] {
            let held = run_job_on(spec.clone(), resident.clone(), workers)
                .unwrap()
                .unwrap();
            assert_eq!(held.faces_scanned, 3000);
            assert_eq!(
                result_bits(&held),
                result_bits(&streamed),
                "{take} queries, {workers} workers"
            );
        }
    }
    // Another version under the same root: its own shard is read, the shared ones are reused.
    let mut next = spec.manifest.clone();
    next.version = 2;
    next.shards.truncate(4);
    let reused =
        ResidentDataset::load_after(Some(&resident), &spec.root_uri, &spec.s3, &next, 2).unwrap();
    assert!(reused.holds(&spec.root_uri, &next) && !reused.holds(&spec.root_uri, &spec.manifest));
    assert!(
        std::ptr::eq(reused.shard(0).as_ptr(), resident.shard(0).as_ptr()),
        "shard 0 was read again"
    );
    let other = Arc::new(JobSpec {
        manifest: next,
        ..spec.clone()
    });
    let refused = run_job_on(other, resident.clone(), 1)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("resident dataset is t@v1"), "{refused}");
}

/// A shard larger than a resident batch is held in batches of `RESIDENT_BATCH_FACES`, in order,
/// and answers as the streamed pass does, byte for byte, against the f64 reference too.
#[test]
fn a_resident_shard_held_in_several_batches_answers_the_same() {
    use facematch_job::dataflow::run_job_on;
    use facematch_job::resident::{RESIDENT_BATCH_FACES, ResidentDataset};
    let dim = 16;
    let faces = clustered(20_000, dim);
    let queries = mixed_queries(&faces, 20, 997);
    let dir = tempfile::tempdir().unwrap();
    // One shard, read and held as two batches.
    let spec = Arc::new(dataset_spec(
        dir.path(),
        &faces,
        dim,
        20_000,
        queries.clone(),
    ));
    let resident =
        Arc::new(ResidentDataset::load(&spec.root_uri, &spec.s3, &spec.manifest, 1).unwrap());
    let held: Vec<usize> = resident.shard(0).iter().map(|b| b.batch.len()).collect();
    assert_eq!(
        held,
        vec![RESIDENT_BATCH_FACES, 20_000 - RESIDENT_BATCH_FACES]
    );
    let streamed = run_job(spec.clone(), timely::Config::process(1))
        .unwrap()
        .unwrap();
    for workers in [1, 2] {
        let out = run_job_on(spec.clone(), resident.clone(), workers)
            .unwrap()
            .unwrap();
        assert_eq!(out.faces_scanned, 20_000);
        assert_eq!(
            result_bits(&out),
            result_bits(&streamed),
            "{workers} workers"
        );
        for q in &queries {
            let got = &out.results[&q.history_id];
            assert_matches(
                got,
                &reference(&faces, q),
                &format!("history {}", q.history_id),
            );
        }
    }
}

#[test]
fn dataflow_fails_naming_a_missing_or_corrupt_shard() {
    let dim = 8;
    let faces = clustered(500, dim);
    let dir = tempfile::tempdir().unwrap();
    let spec = dataset_spec(
        dir.path(),
        &faces,
        dim,
        100,
        vec![query(Method::Cosine, faces[0].encoding.clone(), 5)],
    );
    let missing = spec.manifest.shards[2].path.clone();
    std::fs::remove_file(dir.path().join(&missing)).unwrap();
    let corrupt = spec.manifest.shards[4].path.clone();
    std::fs::write(dir.path().join(&corrupt), b"not parquet").unwrap();
    for workers in [1, 3] {
        let err = run_job(Arc::new(spec.clone()), timely::Config::process(workers))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&missing), "{workers} workers: {err}");
        if workers == 3 {
            // With enough workers both shards are read by someone; each is named.
            assert!(err.contains(&corrupt), "{err}");
        }
    }
}

#[test]
fn negative_and_positive_zero_scores_tie() {
    // Cosine 0 comes out as +0.0 for one face and −0.0 for the other; they tie, so id order decides.
    let faces = vec![
        face(857, FaceSource::Actor, vec![0.0, 0.5]),
        face(704, FaceSource::Actor, vec![0.0, -0.5]),
    ];
    let got = run_kernel(&faces, &query(Method::Cosine, vec![-0.5, 0.0], 2));
    assert_eq!(
        got.iter().map(|m| m.face_id).collect::<Vec<_>>(),
        vec![704, 857]
    );
    assert!(got.iter().all(|m| m.score == 0.0));
}
