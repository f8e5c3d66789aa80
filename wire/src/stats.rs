//! Production statistics (`GET /api/v1/stats`): parts, NG and first-pass yield over a time
//! range, grouped by any of facility, line, station, SKU, device, defect type and the plant's
//! shift, bucketed by hour or day. Served from hourly aggregates kept with each result, so the answer costs the
//! same whether the store holds a thousand results or a million.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::DefectType;

/// What rows may be grouped by (`group_by=station,defect_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StatsDimension {
    Facility,
    Line,
    Station,
    /// The product SKU (`sku` or `product_sku`).
    #[serde(alias = "product_sku")]
    Sku,
    Device,
    /// One row per defect type found: `parts` and `ng` count the parts with at least one
    /// defect of the type, `defects` the defects of the type (a Pareto).
    DefectType,
    /// The plant's shift each hour falls in, named by its local start (`HH:MM`): shifts from
    /// the server's `[dashboard] shift_starts`, local time at `utc_offset_minutes`. Counted by
    /// the hour: an hour belongs to the shift in which it begins.
    Shift,
}

impl StatsDimension {
    pub const ALL: [StatsDimension; 7] = [
        StatsDimension::Facility,
        StatsDimension::Line,
        StatsDimension::Station,
        StatsDimension::Sku,
        StatsDimension::Device,
        StatsDimension::DefectType,
        StatsDimension::Shift,
    ];

    /// The name in `group_by`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatsDimension::Facility => "facility",
            StatsDimension::Line => "line",
            StatsDimension::Station => "station",
            StatsDimension::Sku => "sku",
            StatsDimension::Device => "device",
            StatsDimension::DefectType => "defect_type",
            StatsDimension::Shift => "shift",
        }
    }

    /// Parses a name of `group_by` (`product_sku` is `sku`); `None` for anything else.
    pub fn parse(name: &str) -> Option<StatsDimension> {
        if name == "product_sku" {
            return Some(StatsDimension::Sku);
        }
        StatsDimension::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

/// How rows are cut in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StatsBucket {
    Hour,
    /// Days starting at midnight of `utc_offset_minutes` (UTC by default).
    Day,
    /// One bucket for the whole range (`bucket_start` is `since`).
    #[default]
    All,
}

/// Counts of a group of parts.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsCounts {
    /// Parts with a completed analysis (judged or not).
    pub parts: u64,
    /// Of which an analyzer gave a verdict (`provisional` or `final`); the rest are `failed` or
    /// `not_calibrated`.
    pub judged: u64,
    /// Of which judged NG (`defect_detected`).
    pub ng: u64,
    /// Defects found on them.
    pub defects: u64,
    /// `(judged - ng) / judged`, the share judged OK at the first inspection; `None` without a
    /// judged part.
    pub first_pass_yield: Option<f64>,
}

impl StatsCounts {
    /// Counts with their yield computed.
    pub fn new(parts: u64, judged: u64, ng: u64, defects: u64) -> StatsCounts {
        let first_pass_yield =
            (judged > 0).then(|| judged.saturating_sub(ng) as f64 / judged as f64);
        StatsCounts {
            parts,
            judged,
            ng,
            defects,
            first_pass_yield,
        }
    }
}

/// One bucket of one group. A dimension not grouped by is absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsRow {
    /// Start of the bucket (UTC).
    pub bucket_start: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_sku: Option<String>,
    /// Grouped by device: the device, or `""` for parts sent by `POST /api/v1/analyze`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defect_type: Option<DefectType>,
    /// Grouped by shift: the shift's local start, `HH:MM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<String>,
    #[serde(flatten)]
    pub counts: StatsCounts,
}

/// `GET /api/v1/stats`: rows ordered by bucket, then by the groups' values; and the totals of
/// the filtered range (parts counted once, whatever the grouping).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stats {
    /// The range counted: whole hours (`since` rounded down, `until` up), capture times.
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub bucket: StatsBucket,
    pub group_by: Vec<StatsDimension>,
    pub rows: Vec<StatsRow>,
    pub totals: StatsCounts,
}
