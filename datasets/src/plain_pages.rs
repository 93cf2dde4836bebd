//! The fast read path of the encoding column: its PLAIN pages decoded straight into `f32`s.
//!
//! Arrow's generic list reader materialises a repetition and a definition level per float and
//! walks them one by one to rebuild the fixed-size lists: for 128-d encodings that cost more than
//! scoring the faces against a thousand queries. A shard's encoding column (a required list of
//! required floats, PLAIN values, RLE levels, which is what facematch writes) needs none of it:
//! the levels only have to be checked against the one shape they can have (a 0 opening each row
//! of `dim` values, no nulls), run by run, and the values copied. Columns stored any other way
//! (dictionaries, other encodings, nullable lists) are not taken here: [`PlainEncodings::open`]
//! declines them and the caller reads them through Arrow.

use bytes::Bytes;
use parquet::basic::Encoding;
use parquet::column::page::{Page, PageReader};
use parquet::file::reader::{FileReader, SerializedFileReader};

/// Streams the values of a shard's encoding column, page by page, across row groups.
pub struct PlainEncodings {
    file: SerializedFileReader<Bytes>,
    column: usize,
    dim: usize,
    /// The next row group to open, and the page reader of the current one.
    next_group: usize,
    pages: Option<Box<dyn PageReader>>,
    /// Levels seen in the current row group (the position of the next one).
    levels: u64,
    /// Rows the current row group holds.
    group_rows: u64,
    /// Values of the current page not handed out yet (little-endian f32s).
    values: Bytes,
}

impl PlainEncodings {
    /// Opens the column `name` of the Parquet file `data` for the fast path, or `Ok(None)` when it
    /// is not stored as PLAIN floats in a required list of required items.
    pub fn open(data: Bytes, name: &str, dim: usize) -> Result<Option<PlainEncodings>, String> {
        let file = SerializedFileReader::new(data).map_err(|e| format!("not readable: {e}"))?;
        let schema = file.metadata().file_metadata().schema_descr_ptr();
        let Some(column) = (0..schema.num_columns()).find(|&i| {
            let path = schema.column(i).path().parts().to_vec();
            path.first().map(String::as_str) == Some(name)
        }) else {
            return Ok(None);
        };
        let descr = schema.column(column);
        if descr.max_def_level() != 1
            || descr.max_rep_level() != 1
            || descr.physical_type() != parquet::basic::Type::FLOAT
            || dim == 0
        {
            return Ok(None);
        }
        let plain = file.metadata().row_groups().iter().all(|group| {
            let chunk = group.column(column);
            chunk.dictionary_page_offset().is_none()
                && chunk
                    .encodings()
                    .all(|e| matches!(e, Encoding::PLAIN | Encoding::RLE))
        });
        if !plain {
            return Ok(None);
        }
        Ok(Some(PlainEncodings {
            file,
            column,
            dim,
            next_group: 0,
            pages: None,
            levels: 0,
            group_rows: 0,
            values: Bytes::new(),
        }))
    }

    /// The next `rows` encodings, row-major.
    pub fn take(&mut self, rows: usize) -> Result<Vec<f32>, String> {
        let wanted = rows * self.dim;
        let mut out = Vec::with_capacity(wanted);
        while out.len() < wanted {
            if self.values.is_empty() {
                self.next_page()?;
                continue;
            }
            let n = (wanted - out.len()).min(self.values.len() / 4);
            let bytes = self.values.split_to(n * 4);
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        Ok(out)
    }

    /// Loads the next data page's values, checking its levels; moves to the next row group when
    /// the current one is done.
    fn next_page(&mut self) -> Result<(), String> {
        let group = self.next_group;
        let page = match self.pages.as_mut().and_then(|p| p.next()) {
            Some(page) => page.map_err(|e| format!("row group {}: {e}", group - 1))?,
            None => {
                self.finish_group()?;
                let count = self.file.num_row_groups();
                if group >= count {
                    return Err("the encoding column ended before the other columns".into());
                }
                let reader = self.file.get_row_group(group).map_err(|e| e.to_string())?;
                self.group_rows = reader.metadata().num_rows() as u64;
                self.pages = Some(
                    reader
                        .get_column_page_reader(self.column)
                        .map_err(|e| format!("row group {group}: {e}"))?,
                );
                self.next_group += 1;
                self.levels = 0;
                return Ok(());
            }
        };
        let at = || format!("row group {}, level {}", group - 1, self.levels);
        let (rep, def, values, count) = match page {
            Page::DataPage {
                buf,
                num_values,
                encoding: Encoding::PLAIN,
                def_level_encoding: Encoding::RLE,
                rep_level_encoding: Encoding::RLE,
                ..
            } => {
                let (rep, rest) = prefixed(&buf).ok_or_else(|| format!("{}: truncated", at()))?;
                let (def, rest) = prefixed(rest).ok_or_else(|| format!("{}: truncated", at()))?;
                let values = buf.slice_ref(rest);
                (
                    buf.slice_ref(rep),
                    buf.slice_ref(def),
                    values,
                    num_values as usize,
                )
            }
            Page::DataPageV2 {
                buf,
                num_values,
                encoding: Encoding::PLAIN,
                num_nulls: 0,
                def_levels_byte_len,
                rep_levels_byte_len,
                ..
            } => {
                let (r, d) = (rep_levels_byte_len as usize, def_levels_byte_len as usize);
                if buf.len() < r + d {
                    return Err(format!("{}: truncated", at()));
                }
                let values = buf.slice(r + d..);
                (
                    buf.slice(..r),
                    buf.slice(r..r + d),
                    values,
                    num_values as usize,
                )
            }
            Page::DictionaryPage { .. } => {
                return Err(format!("{}: unexpected dictionary page", at()));
            }
            _ => return Err(format!("{}: a page that is not PLAIN floats", at())),
        };
        let rows = Shape::Rows {
            first: self.levels,
            dim: self.dim as u64,
        };
        check_levels(&rep, count, rows).map_err(|e| format!("{}: repetition levels: {e}", at()))?;
        check_levels(&def, count, Shape::AllOnes)
            .map_err(|e| format!("{}: definition levels: {e} (a null?)", at()))?;
        if values.len() != count * 4 {
            return Err(format!(
                "{}: {} bytes of values for {count} floats",
                at(),
                values.len()
            ));
        }
        self.levels += count as u64;
        self.values = values;
        Ok(())
    }

    /// Checks that the row group just read held whole rows, as many as its metadata says.
    fn finish_group(&self) -> Result<(), String> {
        if self.pages.is_some() && self.levels != self.group_rows * self.dim as u64 {
            return Err(format!(
                "row group {}: {} values for {} rows of {}",
                self.next_group - 1,
                self.levels,
                self.group_rows,
                self.dim
            ));
        }
        Ok(())
    }
}

/// Splits a Data Page V1 level section (a 4-byte little-endian length, then the levels).
fn prefixed(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let rest = &buf[4..];
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// What a page's levels must be.
#[derive(Clone, Copy)]
enum Shape {
    /// Repetition levels: 0 at each row start (every `dim`-th level counting from the row
    /// group's first), 1 elsewhere; `first` is the page's first level within its row group.
    Rows { first: u64, dim: u64 },
    /// Definition levels: all 1 (no null list, no null value).
    AllOnes,
}

impl Shape {
    fn expected(self, level: usize) -> u8 {
        match self {
            Shape::Rows { first, dim } => u8::from(!(first + level as u64).is_multiple_of(dim)),
            Shape::AllOnes => 1,
        }
    }

    /// Whether every level of `start..start + len` expects `value`, in constant time.
    fn run_matches(self, value: u8, start: usize, len: usize) -> bool {
        match (self, value) {
            (Shape::AllOnes, v) => v == 1,
            // 1s: no row start inside the run.
            (Shape::Rows { first, dim }, 1) => {
                let offset = (first + start as u64) % dim;
                offset != 0 && offset + len as u64 <= dim
            }
            // 0s: every level a row start.
            (Shape::Rows { first, dim }, 0) => {
                (first + start as u64).is_multiple_of(dim) && (len == 1 || dim == 1)
            }
            _ => false,
        }
    }
}

/// Checks `count` levels of bit width 1 in the RLE / bit-packed hybrid encoding against `shape`:
/// a run of repeats as a whole, bit-packed levels one by one (there are few: the writer packs
/// only the groups around a row start).
fn check_levels(data: &[u8], count: usize, shape: Shape) -> Result<(), String> {
    let mut at = 0usize; // byte offset
    let mut i = 0usize; // level index
    while i < count {
        let header = varint(data, &mut at).ok_or("truncated run header")?;
        if header & 1 == 0 {
            // A run of one value repeated (bit-packed runs have the low bit set).
            let len = ((header >> 1) as usize).min(count - i);
            let value = *data.get(at).ok_or("truncated run")?;
            at += 1;
            if len == 0 || !shape.run_matches(value, i, len) {
                return Err(format!(
                    "a run of {len} × {value} at level {i} does not fit"
                ));
            }
            i += len;
        } else {
            let groups = (header >> 1) as usize;
            let bytes = data
                .get(at..at + groups)
                .ok_or("truncated bit-packed run")?;
            if groups == 0 {
                return Err(format!("an empty bit-packed run at level {i}"));
            }
            at += groups;
            for (k, byte) in bytes.iter().enumerate() {
                for bit in 0..8 {
                    let level = i + k * 8 + bit;
                    if level < count && (byte >> bit) & 1 != shape.expected(level) {
                        return Err(format!("level {level} is not {}", shape.expected(level)));
                    }
                }
            }
            i += groups * 8;
        }
    }
    Ok(())
}

/// An unsigned LEB128 varint.
fn varint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *data.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROWS_OF_3: Shape = Shape::Rows { first: 0, dim: 3 };

    #[test]
    fn bit_packed_levels_are_checked_level_by_level() {
        // Header 3: one bit-packed group of 8; levels LSB first: 0,1,1,0,1,1 (+ padding).
        assert_eq!(check_levels(&[3, 0b0011_0110], 6, ROWS_OF_3), Ok(()));
        // Rows of 2 and 4 values: 0,1,0,1,1,1.
        let err = check_levels(&[3, 0b0011_1010], 6, ROWS_OF_3).unwrap_err();
        assert!(err.contains("level 2"), "{err}");
    }

    #[test]
    fn runs_must_fit_the_rows() {
        // RLE runs (header = len << 1): 0, 1×2, 0, 1×2.
        assert_eq!(
            check_levels(&[2, 0, 4, 1, 2, 0, 4, 1], 6, ROWS_OF_3),
            Ok(())
        );
        // 0, 1×3: the first row has 4 values.
        assert!(check_levels(&[2, 0, 6, 1, 2, 0, 2, 1], 6, ROWS_OF_3).is_err());
        // 0×2: an empty row.
        assert!(check_levels(&[4, 0, 4, 1], 4, ROWS_OF_3).is_err());
        // Definition levels: all 1, or a null somewhere.
        assert_eq!(check_levels(&[12, 1], 6, Shape::AllOnes), Ok(()));
        assert!(check_levels(&[10, 1, 2, 0], 6, Shape::AllOnes).is_err());
        // Too few bytes for the levels announced.
        assert!(check_levels(&[12], 6, Shape::AllOnes).is_err());
        assert!(check_levels(&[2, 0, 4, 1], 6, ROWS_OF_3).is_err());
    }

    #[test]
    fn a_page_can_start_inside_a_row() {
        // The page starts at level 2 of the row group: 1, then a new row 0,1,1.
        let shape = Shape::Rows { first: 2, dim: 3 };
        assert_eq!(check_levels(&[2, 1, 2, 0, 4, 1], 4, shape), Ok(()));
        assert!(check_levels(&[2, 0, 6, 1], 4, shape).is_err());
    }
}
