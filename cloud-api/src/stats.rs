//! Production statistics (`GET /api/v1/stats`): the store's hourly cells
//! ([`crate::store::Insight::stats`]) folded into the buckets and groups asked for, with the
//! range's totals. Plain functions over the store, tested without a server.

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use wiko_wire::{DefectType, Stats, StatsBucket, StatsCounts, StatsDimension, StatsRow};

use crate::store::{CellCounts, ListFilter, StatsCell, StatsQuery, StatsSource, Store, StoreError};

/// The longest range one request may count.
pub const MAX_RANGE: TimeDelta = TimeDelta::days(400);
/// The longest range counted by the hour (rows per group).
pub const MAX_HOURLY_RANGE: TimeDelta = TimeDelta::days(62);
/// Bounds of `utc_offset_minutes`.
pub const MAX_OFFSET_MINUTES: i32 = 14 * 60;

/// A statistics request, checked.
#[derive(Debug, Clone)]
pub struct StatsRequest {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub bucket: StatsBucket,
    /// Where days start for [`StatsBucket::Day`]: midnight at this offset from UTC.
    pub utc_offset_minutes: i32,
    pub filter: ListFilter,
    pub group_by: Vec<StatsDimension>,
    /// When the plant's shifts start, local time, sorted (for [`StatsDimension::Shift`]).
    pub shift_starts: Vec<NaiveTime>,
}

/// When the shift holding the local time `at` began: the day's last shift start not after it,
/// or, before the day's first, the day before's last (the day's midnight without shifts).
pub fn shift_began(at: NaiveDateTime, shift_starts: &[NaiveTime]) -> NaiveDateTime {
    match (
        shift_starts.iter().rev().find(|s| **s <= at.time()),
        shift_starts.last(),
    ) {
        (Some(start), _) => at.date().and_time(*start),
        (None, Some(last)) => (at.date() - TimeDelta::days(1)).and_time(*last),
        (None, None) => at.date().and_time(NaiveTime::MIN),
    }
}

/// Why a request cannot be answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatsRefused {
    #[error("until is not after since")]
    EmptyRange,
    #[error("the range is longer than {days} days{hint}")]
    TooLong { days: i64, hint: &'static str },
    #[error("utc_offset_minutes is outside ±{MAX_OFFSET_MINUTES}")]
    BadOffset,
}

fn whole_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

impl StatsRequest {
    /// The range in whole hours (`since` rounded down, `until` up), checked against the limits.
    pub fn hours(&self) -> Result<(DateTime<Utc>, DateTime<Utc>), StatsRefused> {
        if self.until <= self.since {
            return Err(StatsRefused::EmptyRange);
        }
        let since = whole_hour(self.since);
        let mut until = whole_hour(self.until);
        if until < self.until {
            until += TimeDelta::hours(1);
        }
        if until - since > MAX_RANGE {
            return Err(StatsRefused::TooLong {
                days: MAX_RANGE.num_days(),
                hint: "",
            });
        }
        if self.bucket == StatsBucket::Hour && until - since > MAX_HOURLY_RANGE {
            return Err(StatsRefused::TooLong {
                days: MAX_HOURLY_RANGE.num_days(),
                hint: " for hourly buckets: bucket by day",
            });
        }
        // Not `abs()`: i32::MIN has none (a query may say anything).
        if !(-MAX_OFFSET_MINUTES..=MAX_OFFSET_MINUTES).contains(&self.utc_offset_minutes) {
            return Err(StatsRefused::BadOffset);
        }
        Ok((since, until))
    }
}

/// Where a bucket holding `hour` starts.
fn bucket_start(
    hour: DateTime<Utc>,
    bucket: StatsBucket,
    offset: TimeDelta,
    since: DateTime<Utc>,
) -> DateTime<Utc> {
    match bucket {
        StatsBucket::Hour => hour,
        StatsBucket::Day => {
            let local = hour + offset;
            local.duration_trunc(TimeDelta::days(1)).unwrap_or(local) - offset
        }
        StatsBucket::All => since,
    }
}

fn add(sum: &mut CellCounts, c: &CellCounts) {
    sum.parts += c.parts;
    sum.judged += c.judged;
    sum.ng += c.ng;
    sum.defects += c.defects;
}

fn counts(c: CellCounts) -> StatsCounts {
    StatsCounts::new(c.parts, c.judged, c.ng, c.defects)
}

/// Folds hourly cells into buckets (rows ordered by bucket, then by the groups' values).
pub fn fold(request: &StatsRequest, since: DateTime<Utc>, cells: &[StatsCell]) -> Vec<StatsRow> {
    let offset = TimeDelta::minutes(i64::from(request.utc_offset_minutes));
    let mut buckets: BTreeMap<(DateTime<Utc>, Vec<String>), CellCounts> = BTreeMap::new();
    for cell in cells {
        let start = bucket_start(cell.hour, request.bucket, offset, since);
        // The store's values come in the order asked, without the shift (the hour's).
        let mut stored = cell.group.iter();
        let group = request
            .group_by
            .iter()
            .map(|d| match d {
                StatsDimension::Shift => {
                    let local = (cell.hour + offset).naive_utc();
                    let began = shift_began(local, &request.shift_starts);
                    began.format("%H:%M").to_string()
                }
                _ => stored.next().cloned().unwrap_or_default(),
            })
            .collect();
        add(buckets.entry((start, group)).or_default(), &cell.counts);
    }
    buckets
        .into_iter()
        .map(|((bucket_start, group), c)| {
            let mut row = StatsRow {
                bucket_start,
                facility: None,
                line: None,
                station: None,
                product_sku: None,
                device_id: None,
                defect_type: None,
                shift: None,
                counts: counts(c),
            };
            for (d, value) in request.group_by.iter().zip(group) {
                let value = Some(value.clone());
                match d {
                    StatsDimension::Facility => row.facility = value,
                    StatsDimension::Line => row.line = value,
                    StatsDimension::Station => row.station = value,
                    StatsDimension::Sku => row.product_sku = value,
                    StatsDimension::Device => row.device_id = value,
                    StatsDimension::DefectType => {
                        row.defect_type = value.as_deref().and_then(DefectType::parse);
                    }
                    StatsDimension::Shift => row.shift = value,
                }
            }
            row
        })
        .collect()
}

/// The statistics of `request`, from `source`. With rows per defect type, the totals are read
/// apart (a part with two defect types is one part).
pub async fn stats(
    store: &dyn Store,
    request: &StatsRequest,
    source: StatsSource,
) -> Result<Result<Stats, StatsRefused>, StoreError> {
    let (since, until) = match request.hours() {
        Ok(range) => range,
        Err(refused) => return Ok(Err(refused)),
    };
    // Whole UTC days are plant days only at offset 0; shifts are the hours'.
    let days = !request.group_by.contains(&StatsDimension::Shift)
        && match request.bucket {
            StatsBucket::All => true,
            StatsBucket::Day => request.utc_offset_minutes == 0,
            StatsBucket::Hour => false,
        };
    let query = StatsQuery {
        since,
        until,
        filter: request.filter.clone(),
        group_by: request.group_by.clone(),
        days,
    };
    let cells = store.stats(&query, source).await?;
    let per_type = request.group_by.contains(&StatsDimension::DefectType)
        && request.filter.defect_type.is_none();
    let total_cells = if per_type {
        let parts = StatsQuery {
            group_by: Vec::new(),
            ..query
        };
        store.stats(&parts, source).await?
    } else {
        cells.clone()
    };
    let mut totals = CellCounts::default();
    for c in &total_cells {
        add(&mut totals, &c.counts);
    }
    Ok(Ok(Stats {
        since,
        until,
        bucket: request.bucket,
        group_by: request.group_by.clone(),
        rows: fold(request, since, &cells),
        totals: counts(totals),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn request(bucket: StatsBucket, offset: i32) -> StatsRequest {
        StatsRequest {
            since: t("2026-12-01T05:30:00Z"),
            until: t("2026-12-03T00:00:01Z"),
            bucket,
            utc_offset_minutes: offset,
            filter: ListFilter::default(),
            group_by: vec![StatsDimension::Station],
            shift_starts: ["06:00", "14:00", "22:00"]
                .iter()
                .map(|s| NaiveTime::parse_from_str(s, "%H:%M").unwrap())
                .collect(),
        }
    }

    fn cell(hour: &str, station: &str, parts: u64, ng: u64) -> StatsCell {
        StatsCell {
            hour: t(hour),
            group: vec![station.into()],
            counts: CellCounts {
                parts,
                judged: parts,
                ng,
                defects: ng,
            },
        }
    }

    #[test]
    fn the_range_is_whole_hours_within_the_limits() {
        let r = request(StatsBucket::Day, 0);
        assert_eq!(
            r.hours().unwrap(),
            (t("2026-12-01T05:00:00Z"), t("2026-12-03T01:00:00Z"))
        );
        let mut long = request(StatsBucket::Hour, 0);
        long.since = long.until - TimeDelta::days(90);
        assert!(matches!(
            long.hours(),
            Err(StatsRefused::TooLong { days: 62, .. })
        ));
        long.bucket = StatsBucket::Day;
        assert!(long.hours().is_ok());
        let mut empty = request(StatsBucket::Day, 0);
        empty.until = empty.since;
        assert_eq!(empty.hours(), Err(StatsRefused::EmptyRange));
        assert_eq!(
            request(StatsBucket::Day, 15 * 60).hours(),
            Err(StatsRefused::BadOffset)
        );
        assert_eq!(
            request(StatsBucket::Day, i32::MIN).hours(),
            Err(StatsRefused::BadOffset)
        );
    }

    #[test]
    fn hours_fold_into_days_of_the_plant_and_groups_stay_apart() {
        let cells = [
            cell("2026-12-01T06:00:00Z", "polish", 10, 1),
            cell("2026-12-01T06:00:00Z", "grind", 5, 0),
            cell("2026-12-01T22:00:00Z", "polish", 10, 3),
            cell("2026-12-02T07:00:00Z", "polish", 20, 0),
        ];
        // UTC days: the first three cells on the 1st.
        let rows = fold(
            &request(StatsBucket::Day, 0),
            t("2026-12-01T05:00:00Z"),
            &cells,
        );
        let summary: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.bucket_start.to_rfc3339(),
                    r.station.clone().unwrap(),
                    r.counts.parts,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "2026-12-01T00:00:00+00:00".to_string(),
                    "grind".to_string(),
                    5
                ),
                ("2026-12-01T00:00:00+00:00".into(), "polish".into(), 20),
                ("2026-12-02T00:00:00+00:00".into(), "polish".into(), 20),
            ]
        );
        assert_eq!(rows[1].counts.first_pass_yield, Some(0.8));
        // At UTC+8 the 22:00 UTC hour is 06:00 of the 2nd.
        let rows = fold(
            &request(StatsBucket::Day, 480),
            t("2026-12-01T05:00:00Z"),
            &cells,
        );
        let polish: Vec<_> = rows
            .iter()
            .filter(|r| r.station.as_deref() == Some("polish"))
            .map(|r| (r.bucket_start.to_rfc3339(), r.counts.parts))
            .collect();
        assert_eq!(
            polish,
            [
                ("2026-11-30T16:00:00+00:00".to_string(), 10),
                ("2026-12-01T16:00:00+00:00".into(), 30)
            ]
        );
        let all = fold(
            &request(StatsBucket::All, 0),
            t("2026-12-01T05:00:00Z"),
            &cells,
        );
        assert_eq!(all.len(), 2);
        assert!(
            all.iter()
                .all(|r| r.bucket_start == t("2026-12-01T05:00:00Z"))
        );
    }

    #[test]
    fn hours_fold_into_the_plants_shifts_the_night_shift_across_midnight() {
        // UTC+8: 22:00 UTC is 06:00 local (early shift), 07:00 UTC is 15:00 (late), 16:00 UTC
        // is 00:00 local of the next day, still the night shift that began at 22:00.
        let cells = [
            cell("2026-12-01T22:00:00Z", "polish", 10, 1),
            cell("2026-12-02T07:00:00Z", "polish", 20, 2),
            cell("2026-12-02T07:00:00Z", "grind", 4, 0),
            cell("2026-12-02T14:00:00Z", "polish", 3, 3),
            cell("2026-12-02T16:00:00Z", "polish", 7, 0),
        ];
        let mut by_shift = request(StatsBucket::All, 480);
        by_shift.group_by = vec![StatsDimension::Shift, StatsDimension::Station];
        // The store's cells carry the station only: the shift is the hour's.
        let rows = fold(&by_shift, t("2026-12-01T05:00:00Z"), &cells);
        let summary: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.shift.clone().unwrap(),
                    r.station.clone().unwrap(),
                    r.counts.parts,
                    r.counts.ng,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("06:00".to_string(), "polish".to_string(), 10, 1),
                ("14:00".into(), "grind".into(), 4, 0),
                ("14:00".into(), "polish".into(), 20, 2),
                ("22:00".into(), "polish".into(), 10, 3),
            ]
        );
        // Before the first shift of the day: the day before's last one.
        let at = |s: &str| s.parse::<NaiveDateTime>().unwrap();
        let shifts = &by_shift.shift_starts;
        assert_eq!(
            shift_began(at("2026-12-02T05:59:00"), shifts),
            at("2026-12-01T22:00:00")
        );
        assert_eq!(
            shift_began(at("2026-12-02T14:00:00"), shifts),
            at("2026-12-02T14:00:00")
        );
        assert_eq!(
            shift_began(at("2026-12-02T05:00:00"), &[]),
            at("2026-12-02T00:00:00")
        );
    }
}
