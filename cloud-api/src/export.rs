//! The results as CSV (`GET /api/v1/analyses/export`, and the Results page's link): the
//! listing's filters, streamed page by page in the listing's order (newest first), each page
//! a keyset page of [`PAGE_ROWS`] read after the previous one's cursor. Memory stays one page
//! whatever the size of the set; a slow client slows the reads down (the body is pulled).
//!
//! Text cells that a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) are
//! prefixed with `'`.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use wiko_wire::Analysis;

use crate::store::{ListFilter, Store, StoreError};
use crate::telemetry;

/// Rows read from the store at once.
pub const PAGE_ROWS: usize = 500;

/// The header row.
pub const COLUMNS: [&str; 22] = [
    "id",
    "defect_id",
    "timestamp",
    "facility",
    "line",
    "station",
    "product_sku",
    "part_id",
    "lot",
    "device_id",
    "status",
    "defect_detected",
    "defect_types",
    "defects",
    "score",
    "score_threshold",
    "confidence",
    "model_version",
    "analyzer",
    "feedback",
    "feedback_by",
    "feedback_comment",
];

/// Why an export stopped after it began (the status line is sent; the body ends early).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the results: {0}")]
    Store(#[from] StoreError),
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
}

/// What to export: the listing's filter, from after `cursor` (or the newest), at most `limit`
/// rows (or all).
#[derive(Debug, Clone, Default)]
pub struct Export {
    pub filter: ListFilter,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// A cell of text as a spreadsheet should show it, never as a formula.
fn text(value: &str) -> String {
    match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{value}"),
        _ => value.to_string(),
    }
}

fn number(value: Option<f32>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// One result as a row of [`COLUMNS`].
pub fn row(a: &Analysis) -> [String; COLUMNS.len()] {
    let mut kinds: Vec<&str> = Vec::new();
    for d in &a.defects {
        if !kinds.contains(&d.kind.as_str()) {
            kinds.push(d.kind.as_str());
        }
    }
    let feedback = a.feedback.as_ref();
    [
        a.id.to_string(),
        a.defect_id.clone(),
        a.timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        text(&a.facility),
        text(&a.line),
        text(&a.station),
        text(&a.product_sku),
        text(a.part_id.as_deref().unwrap_or("")),
        text(a.lot.as_deref().unwrap_or("")),
        text(a.device_id.as_deref().unwrap_or("")),
        a.status.as_str().to_string(),
        a.defect_detected.to_string(),
        kinds.join(";"),
        a.defects.len().to_string(),
        number(a.score),
        number(a.score_threshold),
        number(a.confidence),
        text(a.model_version.as_deref().unwrap_or("")),
        text(&a.analyzer),
        feedback
            .map(|f| f.verdict.as_str())
            .unwrap_or("")
            .to_string(),
        text(feedback.map(|f| f.by.as_str()).unwrap_or("")),
        text(feedback.and_then(|f| f.comment.as_deref()).unwrap_or("")),
    ]
}

/// `rows` as CSV, after the header row when `header`.
fn encode(rows: &[Analysis], header: bool) -> Result<Bytes, csv::Error> {
    let mut out = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 256 + 256));
    if header {
        out.write_record(COLUMNS)?;
    }
    for a in rows {
        out.write_record(row(a))?;
    }
    out.flush()?;
    let bytes = out
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))?;
    Ok(Bytes::from(bytes))
}

/// Where the export is.
enum Step {
    /// The next page begins after this cursor (`None`: the first page), with this many rows
    /// still allowed.
    Next {
        cursor: Option<String>,
        left: usize,
        first: bool,
    },
    Done,
}

/// The export as a stream of CSV chunks, one per page, the header row first (even when no
/// result matches).
pub fn csv_stream(
    store: Arc<dyn Store>,
    export: Export,
) -> impl Stream<Item = Result<Bytes, ExportError>> + Send + 'static {
    let Export {
        filter,
        cursor,
        limit,
    } = export;
    let start = Step::Next {
        cursor,
        left: limit.unwrap_or(usize::MAX),
        first: true,
    };
    futures::stream::try_unfold((start, store, filter), |(step, store, filter)| async move {
        let Step::Next {
            cursor,
            left,
            first,
        } = step
        else {
            return Ok(None);
        };
        let (rows, next) = if left == 0 {
            (Vec::new(), None)
        } else {
            let take = left.min(PAGE_ROWS);
            store.list(&filter, cursor.as_deref(), take).await?
        };
        metrics::counter!(telemetry::EXPORT_ROWS_TOTAL).increment(rows.len() as u64);
        let chunk = encode(&rows, first)?;
        let left = left - rows.len();
        let step = match next {
            Some(cursor) if left > 0 => Step::Next {
                cursor: Some(cursor),
                left,
                first: false,
            },
            _ => Step::Done,
        };
        Ok(Some((chunk, (step, store, filter))))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn formulas_are_shown_as_text_and_other_text_is_kept() {
        assert_eq!(text("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(text("-1"), "'-1");
        assert_eq!(text("@sum"), "'@sum");
        assert_eq!(text("WK-KN-200"), "WK-KN-200");
        assert_eq!(text(""), "");
    }

    #[test]
    fn a_header_row_is_written_once_and_quotes_are_escaped() {
        let empty = encode(&[], true).unwrap();
        assert_eq!(
            String::from_utf8(empty.to_vec()).unwrap().trim_end(),
            COLUMNS.join(",")
        );
        assert!(encode(&[], false).unwrap().is_empty());
    }
}
