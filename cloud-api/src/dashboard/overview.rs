//! The Overview: which time range "this shift", "today" and "7 days" mean in the plant's time
//! (`[dashboard]` `utc_offset_minutes` and `shift_starts`), and the page drawn from the stats.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Timelike, Utc};
use maud::{Markup, html};
use wiko_wire::{Stats, StatsBucket, StatsCounts};

use super::charts::{self, Sample};
use crate::stats::shift_began;

/// The ranges the Overview offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    Shift,
    Today,
    Week,
    /// Whole plant days, `from` through `to` (the form's dates).
    Custom {
        from: NaiveDate,
        to: NaiveDate,
    },
}

/// The ranges the Overview's select names (a custom one takes its dates from the form).
const NAMED: [Range; 3] = [Range::Shift, Range::Today, Range::Week];

impl Range {
    pub fn as_str(self) -> &'static str {
        match self {
            Range::Shift => "shift",
            Range::Today => "today",
            Range::Week => "7d",
            Range::Custom { .. } => "custom",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Range::Shift => "This shift",
            Range::Today => "Today",
            Range::Week => "7 days",
            Range::Custom { .. } => "Custom dates",
        }
    }

    /// The range a query names: `range` one of the named ones, or `custom` with `from` and
    /// `to` (`YYYY-MM-DD`, plant days, `from` not after `to`). `None` for anything else.
    pub fn parse(name: &str, from: &str, to: &str) -> Option<Range> {
        if name == "custom" {
            // Years a plant's data can have (and no date arithmetic at chrono's limits).
            let day = |v: &str| {
                NaiveDate::parse_from_str(v, "%Y-%m-%d")
                    .ok()
                    .filter(|d| (1970..=9999).contains(&d.year()))
            };
            let (from, to) = (day(from)?, day(to)?);
            return (from <= to).then_some(Range::Custom { from, to });
        }
        NAMED.into_iter().find(|r| r.as_str() == name)
    }
}

/// The plant's clock: its offset from UTC and when its shifts start (local times, sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plant {
    pub utc_offset_minutes: i32,
    pub shift_starts: Vec<NaiveTime>,
}

/// The window of `range` at `now`: from its start until its end (now, for all but a custom
/// range of past days), and how it is bucketed (by day over more than two days).
pub fn window(
    range: Range,
    now: DateTime<Utc>,
    plant: &Plant,
) -> (DateTime<Utc>, DateTime<Utc>, StatsBucket) {
    let offset = Duration::minutes(i64::from(plant.utc_offset_minutes));
    let local = now.naive_utc() + offset;
    let midnight = local.date().and_time(NaiveTime::MIN);
    let mut until = now;
    let start_local = match range {
        Range::Today => midnight,
        Range::Week => midnight - Duration::days(6),
        Range::Custom { from, to } => {
            let end = (to + Duration::days(1)).and_time(NaiveTime::MIN) - offset;
            until = until.min(end.and_utc());
            from.and_time(NaiveTime::MIN)
        }
        Range::Shift => shift_began(local, &plant.shift_starts),
    };
    let since = (start_local - offset).and_utc();
    let bucket = if until - since > Duration::days(2) {
        StatsBucket::Day
    } else {
        StatsBucket::Hour
    };
    (since, until, bucket)
}

/// A bucket's label in plant time: its hour, or its day.
fn label(t: DateTime<Utc>, bucket: StatsBucket, plant: &Plant) -> String {
    let local = t.naive_utc() + Duration::minutes(i64::from(plant.utc_offset_minutes));
    match bucket {
        StatsBucket::Day => local.format("%m-%d").to_string(),
        _ => format!("{:02}:00", local.hour()),
    }
}

/// Every bucket of the range in order, those without parts included, so the charts show the
/// whole range.
fn series(trend: &Stats, plant: &Plant) -> Vec<Sample> {
    let step = match trend.bucket {
        StatsBucket::Day => Duration::days(1),
        _ => Duration::hours(1),
    };
    let mut out = Vec::new();
    let mut t = trend
        .rows
        .first()
        .map_or(trend.since, |r| r.bucket_start.min(trend.since));
    while t < trend.until && out.len() < 24 * 62 {
        let counts = trend
            .rows
            .iter()
            .find(|r| r.bucket_start == t)
            .map(|r| r.counts);
        out.push(Sample {
            label: label(t, trend.bucket, plant),
            judged: counts.map_or(0, |c| c.judged),
            ng: counts.map_or(0, |c| c.ng),
        });
        t += step;
    }
    out
}

fn yield_text(c: &StatsCounts) -> String {
    c.first_pass_yield
        .map_or("–".into(), |y| format!("{:.1}%", y * 100.0))
}

fn ng_rate(c: &StatsCounts) -> String {
    if c.judged == 0 {
        "–".into()
    } else {
        format!("{:.1}%", c.ng as f64 / c.judged as f64 * 100.0)
    }
}

/// What the Overview shows: the totals and per-station rows (`by_station`, one bucket), the
/// same per shift (`by_shift`), the series (`trend`, by hour or day) and the defects by type
/// (`by_defect`).
pub struct Figures<'a> {
    pub by_station: &'a Stats,
    pub by_shift: &'a Stats,
    pub trend: &'a Stats,
    pub by_defect: &'a Stats,
}

/// The Overview page's body.
pub fn view(
    range: Range,
    value: &dyn Fn(&str) -> String,
    figures: &Figures<'_>,
    plant: &Plant,
) -> Markup {
    let totals = &figures.by_station.totals;
    let samples = series(figures.trend, plant);
    let defects: Vec<(String, u64)> = figures
        .by_defect
        .rows
        .iter()
        .filter_map(|r| Some((r.defect_type?.as_str().to_string(), r.counts.defects)))
        .collect();
    html! {
        form.filters method="get" action="/overview" {
            label { span { "Range" }
                select #range name="range" {
                    @for r in NAMED {
                        option value=(r.as_str()) selected[r == range] { (r.label()) }
                    }
                    option value="custom" selected[matches!(range, Range::Custom { .. })] { "Custom dates" }
                }
            }
            label { span { "From (plant day)" } input type="date" name="from" value=(value("from")); }
            label { span { "To (plant day)" } input type="date" name="to" value=(value("to")); }
            @for (name, text) in [("facility", "Facility"), ("line", "Line"), ("station", "Station"), ("sku", "SKU")] {
                label { span { (text) } input type="text" name=(name) value=(value(name)); }
            }
            div.actions { button.primary type="submit" { "Apply" } a.button href="/overview" { "Clear" } }
        }
        p.muted.range {
            (range.label()) ": " (figures.by_station.since.format("%Y-%m-%d %H:%M")) " – "
            (figures.by_station.until.format("%Y-%m-%d %H:%M")) " UTC"
        }
        dl.stats.kpis {
            div { dt { "Parts" } dd.mono #kpi-parts { (totals.parts) } }
            div { dt { "Judged" } dd.mono #kpi-judged { (totals.judged) } }
            div.ng { dt { "NG" } dd.mono #kpi-ng { (totals.ng) } }
            div { dt { "NG rate" } dd.mono #kpi-ng-rate { (ng_rate(totals)) } }
            div.ok { dt { "First-pass yield" } dd.mono #kpi-fpy { (yield_text(totals)) } }
        }
        div.charts {
            section.panel { h2 { "NG rate by " (if figures.trend.bucket == StatsBucket::Day { "day" } else { "hour" }) } (charts::trend(&samples)) }
            section.panel { h2 { "p-chart: NG rate, 3σ limits" } (charts::p_chart(&samples)) }
            section.panel { h2 { "Defects by type (Pareto)" } (charts::pareto(&defects)) }
            section.panel {
                h2 { "By station" }
                table.grid #stations {
                    thead { tr { th { "Line" } th { "Station" } th.num { "Parts" } th.num { "NG" } th.num { "NG rate" } th.num { "First-pass yield" } } }
                    tbody {
                        @for r in &figures.by_station.rows {
                            @let station = r.station.as_deref().unwrap_or("");
                            tr data-station=(station) {
                                td { (r.line.as_deref().unwrap_or("")) }
                                td { (station) }
                                td.num.mono.parts { (r.counts.parts) }
                                td.num.mono.ng { (r.counts.ng) }
                                td.num.mono { (ng_rate(&r.counts)) }
                                td.num.mono.fpy { (yield_text(&r.counts)) }
                            }
                        }
                        @if figures.by_station.rows.is_empty() { tr { td.empty colspan="6" { "No parts in this range." } } }
                    }
                }
            }
            section.panel {
                h2 { "By shift" }
                table.grid #shifts {
                    thead { tr { th { "Shift (from)" } th.num { "Parts" } th.num { "NG" } th.num { "NG rate" } th.num { "First-pass yield" } } }
                    tbody {
                        @for r in &figures.by_shift.rows {
                            @let shift = r.shift.as_deref().unwrap_or("");
                            tr data-shift=(shift) {
                                td.mono { (shift) }
                                td.num.mono.parts { (r.counts.parts) }
                                td.num.mono.ng { (r.counts.ng) }
                                td.num.mono { (ng_rate(&r.counts)) }
                                td.num.mono.fpy { (yield_text(&r.counts)) }
                            }
                        }
                        @if figures.by_shift.rows.is_empty() { tr { td.empty colspan="5" { "No parts in this range." } } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn plant(offset: i32) -> Plant {
        Plant {
            utc_offset_minutes: offset,
            shift_starts: ["06:00", "14:00", "22:00"]
                .iter()
                .map(|s| NaiveTime::parse_from_str(s, "%H:%M").unwrap())
                .collect(),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_series_has_every_bucket_of_the_range() {
        let row = |h: &str, judged, ng| wiko_wire::StatsRow {
            bucket_start: at(h),
            facility: None,
            line: None,
            station: None,
            product_sku: None,
            device_id: None,
            defect_type: None,
            shift: None,
            counts: StatsCounts::new(judged, judged, ng, ng),
        };
        let trend = Stats {
            since: at("2026-12-06T06:00:00Z"),
            until: at("2026-12-06T10:00:00Z"),
            bucket: StatsBucket::Hour,
            group_by: Vec::new(),
            rows: vec![
                row("2026-12-06T07:00:00Z", 10, 1),
                row("2026-12-06T09:00:00Z", 5, 2),
            ],
            totals: StatsCounts::new(15, 15, 3, 3),
        };
        let s = series(&trend, &plant(0));
        let labels: Vec<&str> = s.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["06:00", "07:00", "08:00", "09:00"]);
        assert_eq!((s[1].judged, s[1].ng, s[2].judged), (10, 1, 0));
    }

    #[test]
    fn this_shift_today_and_seven_days_are_in_plant_time() {
        // 03:30 UTC is 11:30 in a plant at UTC+8: the 06:00 shift, 22:00 UTC the day before.
        let now = at("2026-12-06T03:30:00Z");
        let p = plant(480);
        assert_eq!(
            window(Range::Shift, now, &p),
            (at("2026-12-05T22:00:00Z"), now, StatsBucket::Hour)
        );
        assert_eq!(window(Range::Today, now, &p).0, at("2026-12-05T16:00:00Z"));
        assert_eq!(
            window(Range::Week, now, &p),
            (at("2026-11-29T16:00:00Z"), now, StatsBucket::Day)
        );
        // Custom plant days: from the first's midnight to the last's end (or now), by day
        // over more than two days.
        let custom = Range::parse("custom", "2026-11-01", "2026-11-03").unwrap();
        assert_eq!(
            window(custom, now, &p),
            (
                at("2026-10-31T16:00:00Z"),
                at("2026-11-03T16:00:00Z"),
                StatsBucket::Day
            )
        );
        let one_day = Range::parse("custom", "2026-12-06", "2026-12-06").unwrap();
        assert_eq!(
            window(one_day, now, &p),
            (at("2026-12-05T16:00:00Z"), now, StatsBucket::Hour)
        );
        assert_eq!(Range::parse("custom", "2026-11-03", "2026-11-01"), None);
        assert_eq!(Range::parse("custom", "", "2026-11-01"), None);
        // Years at chrono's limits would overflow the window's arithmetic.
        assert_eq!(Range::parse("custom", "2026-11-01", "+262142-12-31"), None);
        assert_eq!(Range::parse("custom", "-262143-01-01", "2026-11-01"), None);
        assert_eq!(Range::parse("7d", "", ""), Some(Range::Week));
        // 03:00 local, before the day's first shift: the night shift that began at 22:00.
        assert_eq!(
            window(Range::Shift, at("2026-12-06T03:00:00Z"), &plant(0)).0,
            at("2026-12-05T22:00:00Z")
        );
    }
}
