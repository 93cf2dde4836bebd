//! The dataset format end to end on a local folder: Parquet round trip through the writer, the
//! manifest and the verifying reader, and every way a stored or imported dataset can be bad —
//! each must be an error that names the shard or the file and line.

use bytes::Bytes;
use facematch_datasets::import::{ImportFormat, ImportOptions, import_file};
use facematch_datasets::shard::{encode_shard, encode_shard_with, read_all};
use facematch_datasets::synth::SynthSpec;
use facematch_datasets::{DatasetWriter, FaceRecord, FaceSource, Manifest, ShardReader, Storage};
use parquet::file::properties::{WriterProperties, WriterVersion};

fn synth(count: u64, dim: usize) -> Vec<FaceRecord> {
    SynthSpec {
        identities: count.div_ceil(4),
        per_identity: 4,
        dim,
        seed: 3,
        first_id: 10,
        spread: 0.5,
    }
    .faces()
    .take(count as usize)
    .collect()
}

/// Writes `faces` as `t@v1` in a fresh folder with shards of `shard_rows`.
fn write(
    faces: &[FaceRecord],
    dim: usize,
    shard_rows: usize,
) -> (tempfile::TempDir, Storage, Manifest) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    let mut writer =
        DatasetWriter::create(storage.clone(), "t", 1, dim, "test", shard_rows).unwrap();
    for f in faces {
        writer.push(f.clone()).unwrap();
    }
    let manifest = writer.finish().unwrap();
    (dir, storage, manifest)
}

fn read_dataset(
    storage: &Storage,
    manifest: &Manifest,
) -> facematch_datasets::Result<Vec<FaceRecord>> {
    let mut all = Vec::new();
    for shard in &manifest.shards {
        let reader = ShardReader::fetch(storage, shard, manifest.dim)?;
        all.extend(read_all(reader, manifest.dim)?);
    }
    Ok(all)
}

#[test]
fn parquet_round_trip_is_exact() {
    let faces = synth(1000, 13);
    let (_dir, storage, manifest) = write(&faces, 13, 300);
    assert_eq!(manifest.count, 1000);
    assert_eq!(manifest.shards.len(), 4);
    assert_eq!(manifest.shards.iter().map(|s| s.rows).sum::<u64>(), 1000);
    // The manifest read back from storage is the one written.
    let stored = Manifest::parse("m", &storage.get(&Manifest::key("t", 1)).unwrap()).unwrap();
    assert_eq!(stored.shards, manifest.shards);
    // Every id, source and bit of every encoding survives.
    let back = read_dataset(&storage, &manifest).unwrap();
    assert_eq!(back, faces);
    assert!(back.iter().any(|f| f.source == FaceSource::User));
}

/// A shard can be read in batches of any size: consecutive rows, the last batch shorter, every
/// face as written.
#[test]
fn a_shard_reads_in_batches_of_the_size_asked() {
    let faces = synth(300, 13);
    let (_dir, storage, manifest) = write(&faces, 13, 300);
    let shard = &manifest.shards[0];
    let batches: Vec<_> = ShardReader::fetch_in_batches(&storage, shard, 13, 128)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let layout: Vec<(u64, usize)> = batches.iter().map(|b| (b.first_row, b.len())).collect();
    assert_eq!(layout, vec![(0, 128), (128, 128), (256, 44)]);
    let ids: Vec<i64> = batches.iter().flat_map(|b| b.face_ids.clone()).collect();
    let values: Vec<f32> = batches.iter().flat_map(|b| b.values().to_vec()).collect();
    assert_eq!(ids, faces.iter().map(|f| f.face_id).collect::<Vec<_>>());
    assert_eq!(
        values,
        faces
            .iter()
            .flat_map(|f| f.encoding.clone())
            .collect::<Vec<_>>()
    );
}

/// Shards as other writers lay them out read back the same: data pages v1 and v2, pages so
/// small that rows span them, odd and tiny dimensions (the fast path checks every level), and a
/// dictionary-encoded encoding column (not the fast path's shape: Arrow reads it).
#[test]
fn every_page_layout_reads_back_the_same() {
    let small_pages = |version| {
        WriterProperties::builder()
            .set_writer_version(version)
            .set_dictionary_enabled(false)
            .set_data_page_size_limit(300)
            .set_write_batch_size(7)
            .set_max_row_group_size(40)
    };
    let layouts: Vec<(&str, WriterProperties, bool)> = vec![
        (
            "v1 pages",
            small_pages(WriterVersion::PARQUET_1_0).build(),
            true,
        ),
        (
            "v2 pages",
            small_pages(WriterVersion::PARQUET_2_0).build(),
            true,
        ),
        (
            "dictionary",
            WriterProperties::builder()
                .set_dictionary_enabled(true)
                .build(),
            false,
        ),
    ];
    for dim in [1, 13, 128] {
        let faces = synth(203, dim);
        for (name, props, plain) in &layouts {
            let data = encode_shard_with(&faces, dim, props.clone()).unwrap();
            let reader = ShardReader::open_unverified("s.parquet", data, 203, dim).unwrap();
            assert_eq!(reader.reads_plain_pages(), *plain, "{name}, dim {dim}");
            let back = read_all(reader, dim).unwrap();
            assert!(back == faces, "{name}, dim {dim}: read back differs");
        }
    }
}

#[test]
fn versions_are_immutable() {
    let faces = synth(10, 4);
    let (_dir, storage, _) = write(&faces, 4, 100);
    let err = DatasetWriter::create(storage, "t", 1, 4, "test", 100)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
}

fn first_shard_error(mutate: impl FnOnce(&Storage, &str)) -> String {
    let faces = synth(200, 8);
    let (_dir, storage, manifest) = write(&faces, 8, 100);
    let shard = manifest.shards[1].path.clone();
    mutate(&storage, &shard);
    let err = read_dataset(&storage, &manifest).unwrap_err().to_string();
    assert!(
        err.contains(&shard),
        "error does not name the shard {shard}: {err}"
    );
    err
}

#[test]
fn checksum_mismatch_names_the_shard() {
    let err = first_shard_error(|storage, shard| {
        let mut data = storage.get(shard).unwrap().to_vec();
        let middle = data.len() / 2;
        data[middle] ^= 0x40; // same size, different content
        storage.put(shard, Bytes::from(data)).unwrap();
    });
    assert!(err.contains("sha256"), "{err}");
}

#[test]
fn truncated_shard_names_the_shard() {
    let err = first_shard_error(|storage, shard| {
        let data = storage.get(shard).unwrap();
        storage.put(shard, data.slice(..data.len() - 100)).unwrap();
    });
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn missing_shard_names_the_shard() {
    first_shard_error(|storage, shard| storage.delete(shard).unwrap());
}

#[test]
fn wrong_dimension_in_a_shard_is_an_error() {
    let faces = synth(50, 8);
    let (_dir, storage, manifest) = write(&faces, 8, 100);
    let shard = &manifest.shards[0];
    let data = storage.get(&shard.path).unwrap();
    let err = ShardReader::open("s0.parquet", data, shard, 16)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("s0.parquet") && err.contains("16"), "{err}");
}

/// A shard written by another tool with a value the writer would refuse; the reader must refuse it too.
fn shard_with(encoding: Vec<f32>) -> String {
    let mut faces = synth(30, 4);
    faces[17].encoding = encoding;
    let data = encode_shard(&faces, 4).unwrap();
    let reader = ShardReader::open_unverified("bad.parquet", data, 30, 4).unwrap();
    read_all(reader, 4).unwrap_err().to_string()
}

#[test]
fn nan_in_a_shard_names_shard_and_row() {
    let err = shard_with(vec![0.1, f32::NAN, 0.2, 0.3]);
    assert!(
        err.contains("bad.parquet") && err.contains("17") && err.contains("finite"),
        "{err}"
    );
}

#[test]
fn zero_vector_in_a_shard_names_shard_and_row() {
    let err = shard_with(vec![0.0; 4]);
    assert!(
        err.contains("bad.parquet") && err.contains("17") && err.contains("zero"),
        "{err}"
    );
}

#[test]
fn the_writer_refuses_bad_encodings() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    let mut writer = DatasetWriter::create(storage, "t", 1, 3, "test", 10).unwrap();
    let bad = [
        vec![1.0, 2.0],
        vec![f32::INFINITY, 0.0, 1.0],
        vec![0.0, 0.0, 0.0],
    ];
    for (i, encoding) in bad.into_iter().enumerate() {
        let record = FaceRecord {
            face_id: i as i64,
            source: FaceSource::Actor,
            encoding,
        };
        let err = writer.push(record).unwrap_err().to_string();
        assert!(err.contains(&format!("face {i}")), "{err}");
    }
}

fn import_text(name: &str, text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let format = ImportFormat::from_path(&path).unwrap();
    let err = import_file(&path, format, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains(name), "error does not name the file: {err}");
    err
}

#[test]
fn malformed_dat_lines_name_file_and_line() {
    let good = "\"1\",\"A\",\"0.5 0.25 1\"\n";
    let cases = [
        ("\"2\",\"A\",\"0.5 oops 1\"", "not a number"),
        ("\"2\",\"A\"", "expected 3"),
        ("\"\",\"A\",\"0.5 0.5 0.5\"", "integer"),
        ("\"2\",\"A\",\"0.5 0.5\"", "dimension 2"),
        ("\"2\",\"A\",\"nan 0.5 1\"", "finite"),
        ("\"2\",\"A\",\"0 0 0\"", "zero"),
        ("\"1\",\"A\",\"1 1 1\"", "twice"),
    ];
    for (line, what) in cases {
        let err = import_text("old.dat", &format!("{good}{line}\n"));
        assert!(
            err.contains("old.dat:2") && err.contains(what),
            "{line:?} gave {err:?}"
        );
    }
}

#[test]
fn malformed_csv_and_jsonl_name_file_and_line() {
    let err = import_text("faces.csv", "face_id,source,encoding\n1,A,1 2\n2,A,1 x\n");
    assert!(err.contains("faces.csv:3"), "{err}");
    let err = import_text(
        "faces.jsonl",
        "{\"face_id\":1,\"source\":\"A\",\"encoding\":[1,2]}\n{\"face_id\":2,\"source\":\"A\",\"encoding\":[0,0]}\n",
    );
    assert!(
        err.contains("faces.jsonl:2") && err.contains("zero"),
        "{err}"
    );
}

#[test]
fn import_reads_any_dimension_and_both_dat_variants() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dataset.dat");
    let mut text = String::new();
    for id in 1..=5 {
        let values: Vec<String> = (0..150)
            .map(|k| format!("{}", (id * 150 + k) as f32 / 1000.0))
            .collect();
        let field = if id == 3 {
            "face_3.jpg".to_string()
        } else {
            "U".to_string()
        };
        text.push_str(&format!("\"{id}\",\"{field}\",\"{}\"\n", values.join(" ")));
    }
    std::fs::write(&path, text).unwrap();
    let faces = import_file(&path, ImportFormat::Dat, &ImportOptions::default()).unwrap();
    assert_eq!(faces.len(), 5);
    assert!(faces.iter().all(|f| f.record.encoding.len() == 150));
    assert_eq!(faces[2].image_uri.as_deref(), Some("face_3.jpg"));
    assert_eq!(faces[0].record.source, FaceSource::User);
}
