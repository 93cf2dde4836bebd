//! Importers: the old system's `dataset.dat`, CSV, JSONL and NumPy `.npy` (ARCHITECTURE.md: Datasets).
//!
//! Each importer reads a whole file into [`ImportedFace`]s or fails with the file and line at fault;
//! nothing is written until the whole input has been read and checked.

use crate::encoding::{FaceRecord, FaceSource, validate_encoding};
use crate::error::{DatasetError, Result};
use serde::Deserialize;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::str::FromStr;

/// One imported face and what else the input knew about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedFace {
    /// The face.
    pub record: FaceRecord,
    /// The image file named by the early `dataset.dat` variant (field 2), if any.
    pub image_uri: Option<String>,
}

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// The old `dataset.dat`: `"<id>","<A|U|image>","<v1> <v2> …"`.
    Dat,
    /// CSV with a header: `face_id,source,encoding` (encoding space-separated or a JSON list).
    Csv,
    /// One JSON object per line: `{"face_id":1,"source":"A","encoding":[…]}`.
    Jsonl,
    /// NumPy `.npy`, N×D float32/float64, with ids from a side file.
    Npy,
}

impl ImportFormat {
    /// Guesses the format from a file extension.
    pub fn from_path(path: &Path) -> Option<ImportFormat> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "dat" => Some(ImportFormat::Dat),
            "csv" => Some(ImportFormat::Csv),
            "jsonl" | "ndjson" => Some(ImportFormat::Jsonl),
            "npy" => Some(ImportFormat::Npy),
            _ => None,
        }
    }
}

impl FromStr for ImportFormat {
    type Err = DatasetError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "dat" => Ok(ImportFormat::Dat),
            "csv" => Ok(ImportFormat::Csv),
            "jsonl" => Ok(ImportFormat::Jsonl),
            "npy" => Ok(ImportFormat::Npy),
            other => Err(DatasetError::Invalid(format!(
                "unknown import format {other:?} (expected dat, csv, jsonl or npy)"
            ))),
        }
    }
}

/// Options for importers that lack some of the columns.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Source given to faces whose input does not say (the `.npy` importer, the early `.dat` variant).
    pub default_source: FaceSource,
    /// For `.npy`: a file of face ids (text, one per line, or an int `.npy`); without it ids start at `first_id`.
    pub ids_file: Option<std::path::PathBuf>,
    /// First id for `.npy` input without an ids file.
    pub first_id: i64,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            default_source: FaceSource::Actor,
            ids_file: None,
            first_id: 1,
        }
    }
}

/// Reads every face of `path`, checking that all share one dimension (taken from the first face).
pub fn import_file(
    path: &Path,
    format: ImportFormat,
    options: &ImportOptions,
) -> Result<Vec<ImportedFace>> {
    let name = path.display().to_string();
    let open = || {
        std::fs::File::open(path).map_err(|e| DatasetError::Input {
            file: name.clone(),
            line: 0,
            message: format!("cannot open: {e}"),
        })
    };
    let faces = match format {
        ImportFormat::Dat => read_dat(&name, open()?, options)?,
        ImportFormat::Csv => read_csv(&name, open()?)?,
        ImportFormat::Jsonl => read_jsonl(&name, open()?)?,
        ImportFormat::Npy => read_npy(&name, open()?, options)?,
    };
    check_consistent(&name, &faces)?;
    Ok(faces)
}

fn check_consistent(file: &str, faces: &[ImportedFace]) -> Result<()> {
    let Some(first) = faces.first() else {
        return Err(DatasetError::Input {
            file: file.to_string(),
            line: 0,
            message: "holds no faces".into(),
        });
    };
    let dim = first.record.encoding.len();
    let mut seen = std::collections::HashSet::with_capacity(faces.len());
    for (i, face) in faces.iter().enumerate() {
        let line = i as u64 + 1;
        validate_encoding(face.record.face_id, &face.record.encoding, dim)
            .map_err(|e| e.at(file, line))?;
        if !seen.insert(face.record.face_id) {
            return Err(DatasetError::Input {
                file: file.to_string(),
                line,
                message: format!("face id {} appears twice", face.record.face_id),
            });
        }
    }
    Ok(())
}

fn input_error(file: &str, line: u64, message: impl Into<String>) -> DatasetError {
    DatasetError::Input {
        file: file.to_string(),
        line,
        message: message.into(),
    }
}

fn parse_id(file: &str, line: u64, text: &str) -> Result<i64> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| input_error(file, line, format!("face id {text:?} is not an integer")))
}

/// Parses `v1 v2 …` (the old format) or `[v1, v2, …]`.
fn parse_vector(file: &str, line: u64, text: &str) -> Result<Vec<f32>> {
    let inner = text.trim();
    let inner = inner
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(inner);
    let values: Result<Vec<f32>> = inner
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .enumerate()
        .map(|(i, t)| {
            t.parse::<f32>().map_err(|_| {
                input_error(
                    file,
                    line,
                    format!("encoding value {} ({t:?}) is not a number", i + 1),
                )
            })
        })
        .collect();
    let values = values?;
    if values.is_empty() {
        return Err(input_error(file, line, "encoding is empty"));
    }
    Ok(values)
}

fn read_dat(file: &str, input: impl Read, options: &ImportOptions) -> Result<Vec<ImportedFace>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input);
    let mut out = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let line = i as u64 + 1;
        let row =
            row.map_err(|e| input_error(file, line, format!("not a dataset.dat line: {e}")))?;
        if row.len() != 3 {
            return Err(input_error(
                file,
                line,
                format!(
                    "expected 3 quoted fields \"id\",\"A|U|image\",\"v1 v2 ...\", found {}",
                    row.len()
                ),
            ));
        }
        let face_id = parse_id(file, line, &row[0])?;
        let (source, image_uri) = match &row[1] {
            "A" => (FaceSource::Actor, None),
            "U" => (FaceSource::User, None),
            "" => {
                return Err(input_error(
                    file,
                    line,
                    "field 2 (source or image file) is empty",
                ));
            }
            image => (options.default_source, Some(image.to_string())),
        };
        let encoding = parse_vector(file, line, &row[2])?;
        out.push(ImportedFace {
            record: FaceRecord {
                face_id,
                source,
                encoding,
            },
            image_uri,
        });
    }
    Ok(out)
}

fn read_csv(file: &str, input: impl Read) -> Result<Vec<ImportedFace>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| input_error(file, 1, format!("cannot read the header: {e}")))?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| {
                input_error(
                    file,
                    1,
                    format!("header has no column {name:?} (need face_id,source,encoding)"),
                )
            })
    };
    let (id_col, source_col, enc_col) =
        (column("face_id")?, column("source")?, column("encoding")?);
    let mut out = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let line = i as u64 + 2;
        let row = row.map_err(|e| input_error(file, line, format!("malformed CSV: {e}")))?;
        let get = |c: usize| {
            row.get(c)
                .ok_or_else(|| input_error(file, line, "missing a column"))
        };
        let face_id = parse_id(file, line, get(id_col)?)?;
        let source = FaceSource::from_str(get(source_col)?)
            .map_err(|e| input_error(file, line, e.to_string()))?;
        let encoding = parse_vector(file, line, get(enc_col)?)?;
        out.push(ImportedFace {
            record: FaceRecord {
                face_id,
                source,
                encoding,
            },
            image_uri: None,
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
struct JsonFace {
    face_id: i64,
    source: String,
    encoding: Vec<f32>,
    #[serde(default)]
    image_uri: Option<String>,
}

fn read_jsonl(file: &str, input: impl Read) -> Result<Vec<ImportedFace>> {
    let mut out = Vec::new();
    for (i, text) in BufReader::new(input).lines().enumerate() {
        let line = i as u64 + 1;
        let text = text.map_err(|e| input_error(file, line, format!("cannot read: {e}")))?;
        if text.trim().is_empty() {
            continue;
        }
        let face: JsonFace = serde_json::from_str(&text)
            .map_err(|e| input_error(file, line, format!("malformed JSON: {e}")))?;
        let source = FaceSource::from_str(&face.source)
            .map_err(|e| input_error(file, line, e.to_string()))?;
        out.push(ImportedFace {
            record: FaceRecord {
                face_id: face.face_id,
                source,
                encoding: face.encoding,
            },
            image_uri: face.image_uri,
        });
    }
    Ok(out)
}

fn read_npy(file: &str, input: impl Read, options: &ImportOptions) -> Result<Vec<ImportedFace>> {
    let npy = npyz::NpyFile::new(BufReader::new(input))
        .map_err(|e| input_error(file, 0, format!("not a .npy file: {e}")))?;
    let shape = npy.shape().to_vec();
    let [rows, dim] = shape[..] else {
        return Err(input_error(
            file,
            0,
            format!("expected a 2-d N×D array, found shape {shape:?}"),
        ));
    };
    let (rows, dim) = (rows as usize, dim as usize);
    let fortran = npy.order() == npyz::Order::Fortran;
    let values: Vec<f32> = match npy.dtype() {
        npyz::DType::Plain(ts)
            if ts.type_char() == npyz::TypeChar::Float && ts.size_field() == 4 =>
        {
            npy.into_vec::<f32>()
                .map_err(|e| input_error(file, 0, format!("cannot read float32 data: {e}")))?
        }
        npyz::DType::Plain(ts)
            if ts.type_char() == npyz::TypeChar::Float && ts.size_field() == 8 =>
        {
            npy.into_vec::<f64>()
                .map_err(|e| input_error(file, 0, format!("cannot read float64 data: {e}")))?
                .into_iter()
                .map(|v| v as f32)
                .collect()
        }
        other => {
            return Err(input_error(
                file,
                0,
                format!("dtype {other:?} is not float32 or float64"),
            ));
        }
    };
    let ids = match &options.ids_file {
        Some(path) => read_ids(path)?,
        None => (0..rows as i64).map(|i| options.first_id + i).collect(),
    };
    if ids.len() != rows {
        return Err(input_error(
            file,
            0,
            format!("has {rows} rows but the id list has {} ids", ids.len()),
        ));
    }
    let row = |r: usize| -> Vec<f32> {
        if fortran {
            (0..dim).map(|c| values[c * rows + r]).collect()
        } else {
            values[r * dim..(r + 1) * dim].to_vec()
        }
    };
    Ok(ids
        .into_iter()
        .enumerate()
        .map(|(r, face_id)| ImportedFace {
            record: FaceRecord {
                face_id,
                source: options.default_source,
                encoding: row(r),
            },
            image_uri: None,
        })
        .collect())
}

/// Face ids for a `.npy` import: an integer `.npy` vector, or text with one id per line.
fn read_ids(path: &Path) -> Result<Vec<i64>> {
    let file = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| input_error(&file, 0, format!("cannot open: {e}")))?;
    if bytes.starts_with(b"\x93NUMPY") {
        let npy = npyz::NpyFile::new(&bytes[..])
            .map_err(|e| input_error(&file, 0, format!("not a .npy file: {e}")))?;
        return match npy.dtype() {
            npyz::DType::Plain(ts)
                if ts.type_char() == npyz::TypeChar::Int && ts.size_field() == 8 =>
            {
                npy.into_vec::<i64>()
                    .map_err(|e| input_error(&file, 0, e.to_string()))
            }
            npyz::DType::Plain(ts)
                if ts.type_char() == npyz::TypeChar::Int && ts.size_field() == 4 =>
            {
                Ok(npy
                    .into_vec::<i32>()
                    .map_err(|e| input_error(&file, 0, e.to_string()))?
                    .into_iter()
                    .map(i64::from)
                    .collect())
            }
            other => Err(input_error(
                &file,
                0,
                format!("ids must be int32 or int64, found {other:?}"),
            )),
        };
    }
    let text =
        String::from_utf8(bytes).map_err(|_| input_error(&file, 0, "is neither .npy nor text"))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_id(&file, i as u64 + 1, l))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dat(text: &str) -> Result<Vec<ImportedFace>> {
        let faces = read_dat("t.dat", text.as_bytes(), &ImportOptions::default())?;
        check_consistent("t.dat", &faces)?;
        Ok(faces)
    }

    #[test]
    fn dat_both_variants() {
        let faces = dat(
            "\"1\",\"A\",\"0.5 1 -2\"\n\"120000\",\"U\",\"1 0 0\"\n\"7\",\"img_7.jpg\",\"0 0 1\"\n",
        )
        .unwrap();
        assert_eq!(faces.len(), 3);
        assert_eq!(faces[0].record.encoding, vec![0.5, 1.0, -2.0]);
        assert_eq!(faces[1].record.source, FaceSource::User);
        assert_eq!(faces[2].image_uri.as_deref(), Some("img_7.jpg"));
        assert_eq!(faces[2].record.source, FaceSource::Actor);
    }

    #[test]
    fn dat_errors_name_the_line() {
        let cases = [
            (
                "\"1\",\"A\",\"1 2\"\n\"2\",\"A\",\"1 x\"\n",
                "t.dat:2",
                "not a number",
            ),
            (
                "\"1\",\"A\",\"1 2\"\n\"2\",\"A\"\n",
                "t.dat:2",
                "expected 3",
            ),
            (
                "\"1\",\"A\",\"1 2\"\n\"2\",\"A\",\"1 2 3\"\n",
                "t.dat:2",
                "dimension 3",
            ),
            (
                "\"1\",\"A\",\"1 2\"\n\"2\",\"A\",\"NaN 2\"\n",
                "t.dat:2",
                "finite",
            ),
            ("\"1\",\"A\",\"0 0\"\n", "t.dat:1", "zero vector"),
            ("\"x\",\"A\",\"0 1\"\n", "t.dat:1", "not an integer"),
            (
                "\"1\",\"A\",\"0 1\"\n\"1\",\"A\",\"1 1\"\n",
                "t.dat:2",
                "twice",
            ),
        ];
        for (text, place, what) in cases {
            let err = dat(text).unwrap_err().to_string();
            assert!(
                err.starts_with(place) && err.contains(what),
                "{text:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn csv_and_jsonl() {
        let faces = read_csv(
            "t.csv",
            "face_id,source,encoding\n5,U,\"[1, 2]\"\n6,A,3 4\n".as_bytes(),
        )
        .unwrap();
        assert_eq!(faces[0].record.encoding, vec![1.0, 2.0]);
        assert_eq!(faces[1].record.source, FaceSource::Actor);
        let err = read_csv("t.csv", "face_id,source,encoding\n5,Q,1\n".as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("t.csv:2"), "{err}");
        let faces = read_jsonl(
            "t.jsonl",
            "{\"face_id\":9,\"source\":\"A\",\"encoding\":[1,2]}\n".as_bytes(),
        )
        .unwrap();
        assert_eq!(faces[0].record.face_id, 9);
        let err = read_jsonl("t.jsonl", "{\"face_id\":9}\n".as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("t.jsonl:1"), "{err}");
    }
}
