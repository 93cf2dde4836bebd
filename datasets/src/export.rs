//! Exporters: CSV (`face_id,source,encoding`) and the old `dataset.dat`. Floats are written in their
//! shortest round-trip form, so export → import gives back the same float32 values.

use crate::encoding::FaceRecord;
use std::io::{self, Write};

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// CSV with header `face_id,source,encoding` (space-separated values).
    Csv,
    /// The old `"<id>","<A|U>","<v1> <v2> …"` format, no header.
    Dat,
}

impl std::str::FromStr for ExportFormat {
    type Err = crate::DatasetError;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "csv" => Ok(ExportFormat::Csv),
            "dat" => Ok(ExportFormat::Dat),
            other => Err(crate::DatasetError::Invalid(format!(
                "unknown export format {other:?} (expected csv or dat)"
            ))),
        }
    }
}

fn join(encoding: &[f32]) -> String {
    let mut text = String::with_capacity(encoding.len() * 12);
    for (i, v) in encoding.iter().enumerate() {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(&v.to_string());
    }
    text
}

/// Writes the header, if the format has one.
pub fn write_header(out: &mut impl Write, format: ExportFormat) -> io::Result<()> {
    match format {
        ExportFormat::Csv => writeln!(out, "face_id,source,encoding"),
        ExportFormat::Dat => Ok(()),
    }
}

/// Writes one face.
pub fn write_record(
    out: &mut impl Write,
    format: ExportFormat,
    record: &FaceRecord,
) -> io::Result<()> {
    let values = join(&record.encoding);
    match format {
        ExportFormat::Csv => writeln!(out, "{},{},{}", record.face_id, record.source, values),
        ExportFormat::Dat => writeln!(
            out,
            "\"{}\",\"{}\",\"{}\"",
            record.face_id, record.source, values
        ),
    }
}
