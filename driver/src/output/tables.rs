//! What people read in a terminal: history result tables, run summaries, dataset listings.

use super::short_uri;
use crate::batch::RunSummary;
use crate::store::datasets::DatasetRow;
use crate::store::histories::HistoryView;
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};

/// A history and its results as a table.
pub fn history(h: &HistoryView) -> String {
    let mut out = format!(
        "History {} — face {} — {} / filter {} / top {}{}{} — {}\n",
        h.id,
        h.in_face_id,
        h.similarity_method,
        h.face_source_filter,
        h.max_results,
        if h.exclude_self {
            ""
        } else {
            " / self included"
        },
        h.max_distance
            .map(|d| format!(" / distance ≤ {d}"))
            .unwrap_or_default(),
        h.status
    );
    if let Some(params) = &h.run_params {
        out.push_str(&format!("  run: {params}\n"));
    }
    if let Some(error) = &h.output {
        out.push_str(&format!("  error: {error}\n"));
    }
    if h.status == "FINISHED" && h.items.is_empty() {
        out.push_str("  (no face matched)\n");
    }
    if !h.items.is_empty() {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        // Synthetic and imported faces have no name or image; the column appears when some do.
        let labelled = h.items.iter().any(|i| i.label.is_some());
        let mut header = vec!["rank", "face id", "source", "score", "match %"];
        if labelled {
            header.push("who / image");
        }
        table.set_header(header);
        for item in &h.items {
            let mut row = vec![
                Cell::new(item.rank).set_alignment(CellAlignment::Right),
                Cell::new(item.face_id).set_alignment(CellAlignment::Right),
                Cell::new(item.source.as_deref().unwrap_or("?")),
                Cell::new(format!("{:.6}", item.score)).set_alignment(CellAlignment::Right),
                // The old system showed score × 100 with two decimals.
                Cell::new(format!("{:.2}", item.score * 100.0)).set_alignment(CellAlignment::Right),
            ];
            if labelled {
                row.push(Cell::new(short_uri(item.label.as_deref().unwrap_or(""))));
            }
            table.add_row(row);
        }
        out.push_str(&table.to_string());
        out.push('\n');
    }
    out
}

/// A run summary in one paragraph.
pub fn run_summary(s: &RunSummary) -> String {
    if s.run_id.is_none() || s.claimed == 0 {
        return format!(
            "Nothing to run: no PENDING histories (dataset {}).\n",
            s.dataset
        );
    }
    let secs = (s.scan_ms as f64 / 1000.0).max(1e-9);
    let mut out = format!(
        "Run {} on {} over {}: {} histories claimed, {} FINISHED, {} ERROR.\n  scanned {} faces, {} pairs in {:.2} s ({:.1} M pairs/s); claim {} ms, write {} ms\n",
        s.run_id.unwrap_or_default(),
        s.runner,
        s.dataset,
        s.claimed,
        s.finished,
        s.errored,
        s.faces_scanned,
        s.pairs_scored,
        secs,
        s.pairs_scored as f64 / secs / 1e6,
        s.claim_ms,
        s.write_ms
    );
    if s.requeued > 0 {
        out.push_str(&format!(
            "  requeued {} histories of runs that stopped responding\n",
            s.requeued
        ));
    }
    if s.requeued_after_failure > 0 {
        out.push_str(&format!(
            "  {} histories went back to PENDING for the next run (none has partial results)\n",
            s.requeued_after_failure
        ));
    }
    if let Some(error) = &s.error {
        out.push_str(&format!("  error: {error}\n"));
    }
    for warning in &s.warnings {
        out.push_str(&format!("  warning: {warning}\n"));
    }
    out
}

/// Dataset versions as a table.
pub fn datasets(rows: &[DatasetRow]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(vec![
        "dataset", "current", "faces", "dim", "shards", "embedder", "manifest", "created",
    ]);
    for d in rows {
        table.add_row(vec![
            d.label(),
            if d.is_current {
                "*".into()
            } else {
                String::new()
            },
            d.face_count.to_string(),
            d.dim.to_string(),
            d.shard_count.to_string(),
            d.embedder.clone(),
            d.manifest_uri.clone(),
            d.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        ]);
    }
    format!("{table}\n")
}

/// A dataset version as `--json` prints it.
pub fn dataset_json(d: &DatasetRow) -> serde_json::Value {
    serde_json::json!({
        "id": d.id, "name": d.name, "version": d.version, "label": d.label(), "current": d.is_current,
        "faces": d.face_count, "dim": d.dim, "shards": d.shard_count, "embedder": d.embedder,
        "root_uri": d.root_uri, "manifest_uri": d.manifest_uri, "created_at": d.created_at,
    })
}
