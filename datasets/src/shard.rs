//! Parquet shards: columns `face_id` int64, `source` utf8 (`A`/`U`), `encoding` fixed-size list of float32.
//!
//! Writers produce row groups sized for streaming; readers verify the bytes against the manifest
//! (size and sha256) before decoding, then check schema, nulls and values batch by batch.

use crate::encoding::{FaceRecord, FaceSource};
use crate::error::{DatasetError, Result};
use crate::manifest::ShardInfo;
use crate::plain_pages::PlainEncodings;
use crate::storage::Storage;
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Rows per Parquet row group: 16k faces of 128 floats is 8 MiB, small enough to stream.
pub const ROW_GROUP_ROWS: usize = 16_384;
/// Rows per decoded batch handed to the kernel.
pub const BATCH_ROWS: usize = 8_192;

/// The Arrow schema of a shard with encodings of dimension `dim`.
pub fn shard_schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("face_id", DataType::Int64, false),
        Field::new("source", DataType::Utf8, false),
        Field::new(
            "encoding",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                dim as i32,
            ),
            false,
        ),
    ]))
}

/// Hex sha256 of some bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Encodes records (already validated, all of dimension `dim`) as one Parquet file.
pub fn encode_shard(records: &[FaceRecord], dim: usize) -> Result<Bytes> {
    let props = WriterProperties::builder()
        .set_max_row_group_size(ROW_GROUP_ROWS)
        // Float encodings neither compress nor dictionary-encode; skip the work.
        .set_column_dictionary_enabled(
            ColumnPath::from(vec!["encoding".into(), "list".into(), "item".into()]),
            false,
        )
        .set_column_dictionary_enabled(ColumnPath::from("face_id"), false)
        .set_column_statistics_enabled(
            ColumnPath::from(vec!["encoding".into(), "list".into(), "item".into()]),
            EnabledStatistics::None,
        )
        .build();
    encode_shard_with(records, dim, props)
}

/// [`encode_shard`] with other writer properties (page versions, encodings, compression), as
/// other tools write shards.
pub fn encode_shard_with(
    records: &[FaceRecord],
    dim: usize,
    props: WriterProperties,
) -> Result<Bytes> {
    let schema = shard_schema(dim);
    let to_err =
        |e: parquet::errors::ParquetError| DatasetError::Invalid(format!("writing Parquet: {e}"));
    let mut writer =
        ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props)).map_err(to_err)?;
    for chunk in records.chunks(ROW_GROUP_ROWS) {
        let batch = records_to_batch(chunk, dim, &schema)?;
        writer.write(&batch).map_err(to_err)?;
    }
    let data = writer.into_inner().map_err(to_err)?;
    Ok(Bytes::from(data))
}

fn records_to_batch(records: &[FaceRecord], dim: usize, schema: &SchemaRef) -> Result<RecordBatch> {
    let ids = Int64Array::from_iter_values(records.iter().map(|r| r.face_id));
    let sources = StringArray::from_iter_values(records.iter().map(|r| match r.source {
        FaceSource::Actor => "A",
        FaceSource::User => "U",
    }));
    let mut flat = Vec::with_capacity(records.len() * dim);
    for r in records {
        flat.extend_from_slice(&r.encoding);
    }
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let values: ArrayRef = Arc::new(Float32Array::from(flat));
    let encodings = FixedSizeListArray::try_new(item, dim as i32, values, None)
        .map_err(|e| DatasetError::Invalid(format!("building the encoding column: {e}")))?;
    RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(ids), Arc::new(sources), Arc::new(encodings)],
    )
    .map_err(|e| DatasetError::Invalid(format!("building a record batch: {e}")))
}

/// A decoded batch of a shard, columnar, ready for the kernel.
#[derive(Debug, Clone)]
pub struct ShardBatch {
    /// Face ids.
    pub face_ids: Vec<i64>,
    /// Source byte per face (`b'A'` or `b'U'`).
    pub sources: Vec<u8>,
    /// Row-major encodings, `face_ids.len() * dim` values.
    pub encodings: Float32Array,
    /// Index of the first row of this batch within its shard.
    pub first_row: u64,
}

impl ShardBatch {
    /// Number of faces.
    pub fn len(&self) -> usize {
        self.face_ids.len()
    }

    /// Whether the batch has no faces.
    pub fn is_empty(&self) -> bool {
        self.face_ids.is_empty()
    }

    /// The flat encoding values.
    pub fn values(&self) -> &[f32] {
        self.encodings.values()
    }
}

/// Checks `data` against its manifest entry: size, then sha256. `shard` names it in errors.
fn verify(shard: &str, data: &Bytes, info: &ShardInfo) -> Result<()> {
    let fail = |message: String| DatasetError::Shard {
        shard: shard.to_string(),
        message,
    };
    if data.len() as u64 != info.bytes {
        return Err(fail(format!(
            "size is {} bytes but the manifest says {} (truncated or replaced?)",
            data.len(),
            info.bytes
        )));
    }
    let digest = sha256_hex(data);
    if !digest.eq_ignore_ascii_case(&info.sha256) {
        return Err(fail(format!(
            "sha256 is {digest} but the manifest says {} (corrupt or replaced)",
            info.sha256
        )));
    }
    Ok(())
}

/// Streams verified batches out of one shard.
pub struct ShardReader {
    shard: String,
    dim: usize,
    next_row: u64,
    expected_rows: u64,
    reader: ParquetRecordBatchReader,
    /// The encoding column's fast path, when it is stored as facematch writes it; the Arrow
    /// reader then decodes only `face_id` and `source`.
    encodings: Option<PlainEncodings>,
}

impl ShardReader {
    /// Reads shard `info` of a `dim`-dimensional version from `storage` and opens it, verified
    /// against the manifest's size and sha256.
    pub fn fetch(storage: &Storage, info: &ShardInfo, dim: usize) -> Result<ShardReader> {
        ShardReader::fetch_in_batches(storage, info, dim, BATCH_ROWS)
    }

    /// [`ShardReader::fetch`], decoding `rows` faces per batch (the shard's last batch may hold
    /// fewer).
    pub fn fetch_in_batches(
        storage: &Storage,
        info: &ShardInfo,
        dim: usize,
        rows: usize,
    ) -> Result<ShardReader> {
        let shard = storage.uri_of(&info.path);
        let data = storage.get_immutable(&info.path)?;
        verify(&shard, &data, info)?;
        ShardReader::decode_in_batches(&shard, data, info.rows, dim, rows)
    }

    /// Verifies `data` against the manifest entry (size, sha256) and opens it for streaming.
    /// `shard` names the shard in errors (its URI).
    pub fn open(shard: &str, data: Bytes, info: &ShardInfo, dim: usize) -> Result<ShardReader> {
        verify(shard, &data, info)?;
        Self::open_unverified(shard, data, info.rows, dim)
    }

    /// Opens Parquet bytes without the manifest check (for files not yet in a manifest).
    pub fn open_unverified(
        shard: &str,
        data: Bytes,
        expected_rows: u64,
        dim: usize,
    ) -> Result<ShardReader> {
        Self::decode_in_batches(shard, data, expected_rows, dim, BATCH_ROWS)
    }

    /// Opens Parquet bytes (checked or not) to decode `batch_rows` faces per batch.
    fn decode_in_batches(
        shard: &str,
        data: Bytes,
        expected_rows: u64,
        dim: usize,
        batch_rows: usize,
    ) -> Result<ShardReader> {
        let fail = |message: String| DatasetError::Shard {
            shard: shard.to_string(),
            message,
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(data.clone())
            .map_err(|e| fail(format!("not a readable Parquet file: {e}")))?;
        check_schema(builder.schema(), dim).map_err(fail)?;
        let rows = builder.metadata().file_metadata().num_rows() as u64;
        if rows != expected_rows {
            return Err(fail(format!(
                "holds {rows} rows but the manifest says {expected_rows}"
            )));
        }
        let encodings = PlainEncodings::open(data, "encoding", dim).map_err(&fail)?;
        let builder = match encodings {
            Some(_) => {
                let schema = builder.schema().clone();
                let root = |name| schema.index_of(name).map_err(|e| fail(e.to_string()));
                let roots = [root("face_id")?, root("source")?];
                let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
                builder.with_projection(mask)
            }
            None => builder,
        };
        let reader = builder
            .with_batch_size(batch_rows)
            .build()
            .map_err(|e| fail(format!("cannot decode: {e}")))?;
        Ok(ShardReader {
            shard: shard.to_string(),
            dim,
            next_row: 0,
            expected_rows,
            reader,
            encodings,
        })
    }

    /// Whether the encoding column is read by the fast path (PLAIN pages decoded directly)
    /// rather than through Arrow's list reader.
    pub fn reads_plain_pages(&self) -> bool {
        self.encodings.is_some()
    }

    fn fail(&self, message: String) -> DatasetError {
        DatasetError::Shard {
            shard: self.shard.clone(),
            message,
        }
    }

    fn decode(&mut self, batch: RecordBatch) -> Result<ShardBatch> {
        let first_row = self.next_row;
        let ids = batch
            .column_by_name("face_id")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .ok_or_else(|| self.fail("column face_id is not int64".into()))?;
        let sources = batch
            .column_by_name("source")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| self.fail("column source is not a string".into()))?;
        for (name, nulls) in [
            ("face_id", ids.null_count()),
            ("source", sources.null_count()),
        ] {
            if nulls > 0 {
                return Err(self.fail(format!(
                    "column {name} has {nulls} null values near row {first_row}"
                )));
            }
        }
        let values = match self.encodings.as_mut() {
            Some(plain) => Float32Array::from(
                plain
                    .take(batch.num_rows())
                    .map_err(|e| self.fail(format!("encoding column: {e}")))?,
            ),
            None => self.arrow_encodings(&batch, first_row)?,
        };
        let mut source_bytes = Vec::with_capacity(sources.len());
        for (i, s) in sources.iter().enumerate() {
            match s {
                Some("A") => source_bytes.push(b'A'),
                Some("U") => source_bytes.push(b'U'),
                other => {
                    return Err(self.fail(format!(
                        "row {}: source is {other:?}, expected \"A\" or \"U\"",
                        first_row + i as u64
                    )));
                }
            }
        }
        let face_ids = ids.values().to_vec();
        for (i, row) in values.values().chunks_exact(self.dim).enumerate() {
            // Branch-free over the row (it vectorizes); the messages below only on a bad one.
            let (finite, nonzero) = row.iter().fold((true, false), |(finite, nonzero), v| {
                (finite & v.is_finite(), nonzero | (*v != 0.0))
            });
            if finite && nonzero {
                continue;
            }
            if row.iter().any(|v| !v.is_finite()) {
                return Err(self.fail(format!(
                    "row {} (face {}): encoding has a non-finite value",
                    first_row + i as u64,
                    face_ids[i]
                )));
            }
            if row.iter().all(|v| *v == 0.0) {
                return Err(self.fail(format!(
                    "row {} (face {}): encoding is the zero vector",
                    first_row + i as u64,
                    face_ids[i]
                )));
            }
        }
        Ok(ShardBatch {
            face_ids,
            sources: source_bytes,
            encodings: values,
            first_row,
        })
    }
}

impl ShardReader {
    /// The encodings of `batch` as Arrow decoded them (the general path).
    fn arrow_encodings(&self, batch: &RecordBatch, first_row: u64) -> Result<Float32Array> {
        let encodings = batch
            .column_by_name("encoding")
            .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
            .ok_or_else(|| self.fail("column encoding is not a fixed-size list".into()))?;
        if encodings.null_count() > 0 {
            return Err(self.fail(format!(
                "column encoding has {} null values near row {first_row}",
                encodings.null_count()
            )));
        }
        let values = encodings
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| self.fail("encoding values are not float32".into()))?;
        if values.null_count() > 0 {
            return Err(self.fail(format!("null encoding values near row {first_row}")));
        }
        let offset = encodings.offset() * self.dim;
        Ok(values.slice(offset, encodings.len() * self.dim))
    }
}

impl Iterator for ShardReader {
    type Item = Result<ShardBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.reader.next() {
            None if self.next_row != self.expected_rows => Some(Err(self.fail(format!(
                "ended after {} rows, expected {}",
                self.next_row, self.expected_rows
            )))),
            None => None,
            Some(Err(e)) => Some(Err(
                self.fail(format!("cannot decode near row {}: {e}", self.next_row))
            )),
            Some(Ok(batch)) => {
                let decoded = self.decode(batch);
                if let Ok(b) = &decoded {
                    self.next_row += b.len() as u64;
                }
                Some(decoded)
            }
        }
    }
}

fn check_schema(schema: &SchemaRef, dim: usize) -> std::result::Result<(), String> {
    let field = |name: &str| {
        schema
            .field_with_name(name)
            .map_err(|_| format!("has no column {name:?}"))
    };
    if field("face_id")?.data_type() != &DataType::Int64 {
        return Err("column face_id must be int64".into());
    }
    if field("source")?.data_type() != &DataType::Utf8 {
        return Err("column source must be a string".into());
    }
    match field("encoding")?.data_type() {
        DataType::FixedSizeList(item, len) if item.data_type() == &DataType::Float32 => {
            if *len as usize != dim {
                return Err(format!(
                    "encodings have dimension {len}, the dataset has {dim}"
                ));
            }
        }
        other => {
            return Err(format!(
                "column encoding must be a fixed-size list of float32, found {other}"
            ));
        }
    }
    Ok(())
}

/// Reads every record of a verified shard (for exports and tests; the job streams batches instead).
pub fn read_all(reader: ShardReader, dim: usize) -> Result<Vec<FaceRecord>> {
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        for (i, row) in batch.values().chunks_exact(dim).enumerate() {
            out.push(FaceRecord {
                face_id: batch.face_ids[i],
                source: FaceSource::from_byte(batch.sources[i]).expect("checked on decode"),
                encoding: row.to_vec(),
            });
        }
    }
    Ok(out)
}
