//! `GET /api/v1/events` (viewer): the live feed as Server-Sent Events (`wiko_wire::events`):
//! NG results as they are committed on any replica (every result with `all=true`), optionally
//! of one facility, line, station or SKU; `Last-Event-ID` replays what a client missed
//! (`crate::live`).

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use wiko_wire::events::{LAGGED_EVENT, RESULT_EVENT};
use wiko_wire::{Analysis, ErrorCode};

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use super::results::checked_filter;
use crate::auth::Need;
use crate::live::missed;
use crate::store::{ListFilter, LiveResult};
use crate::telemetry;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/events", get(events))
}

/// Which results to hear of.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Every result, not only NG ones.
    all: Option<bool>,
    facility: Option<String>,
    line: Option<String>,
    station: Option<String>,
    #[serde(alias = "product_sku")]
    sku: Option<String>,
}

/// Whether a client asked to hear of this result.
fn wanted(filter: &ListFilter, all: bool, a: &Analysis) -> bool {
    let same = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    (all || a.defect_detected)
        && same(&filter.facility, &a.facility)
        && same(&filter.line, &a.line)
        && same(&filter.station, &a.station)
        && same(&filter.product_sku, &a.product_sku)
}

fn result_event(r: &LiveResult) -> Event {
    Event::default()
        .event(RESULT_EVENT)
        .id(r.seq.to_string())
        .json_data(&r.analysis)
        .unwrap_or_else(|_| Event::default().comment("unserialisable result"))
}

/// Counts a connected client while it lives.
struct Connected;

impl Connected {
    fn new() -> Connected {
        metrics::gauge!(telemetry::LIVE_CLIENTS).increment(1.0);
        Connected
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        metrics::gauge!(telemetry::LIVE_CLIENTS).decrement(1.0);
    }
}

#[utoipa::path(get, path = "/api/v1/events", tag = "results", params(EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "The last event id seen: what was missed since comes first")),
    responses((status = 200, description = "`text/event-stream`: `result` events (id, the analysis as JSON), `lagged` when events were missed", content_type = "text/event-stream", body = String)))]
pub(super) async fn events(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.may(Need::Read)?;
    let Query(q) = query.map_err(|e| ApiError::bad(ErrorCode::InvalidQuery, e.body_text()))?;
    stream(&s, &headers, q).await
}

/// The live feed a query asks for, after what `Last-Event-ID` names (the dashboard's Live page
/// listens to the same).
pub(crate) async fn stream(
    s: &AppState,
    headers: &HeaderMap,
    q: EventsQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>> + use<>>, ApiError> {
    let filter = checked_filter([q.facility, q.line, q.station, q.sku, None], None, None)?;
    let all = q.all.unwrap_or(false);
    let last_seen = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::bad(ErrorCode::InvalidQuery, "Last-Event-ID is not a number")
                })?,
        ),
    };
    // Subscribe before reading what was missed: nothing committed in between is lost (what
    // arrives twice is sent once).
    let live = s.live.subscribe();
    let mut first: VecDeque<Event> = VecDeque::new();
    let mut replayed = HashSet::new();
    if let Some(after) = last_seen {
        match missed(s.store(), after, all).await? {
            Some(results) => {
                for r in results.iter().filter(|r| wanted(&filter, all, &r.analysis)) {
                    replayed.insert(r.seq);
                    first.push_back(result_event(r));
                }
            }
            None => first.push_back(Event::default().event(LAGGED_EVENT).data("")),
        }
    }
    let state = (live, first, replayed, Connected::new());
    let stream = futures::stream::unfold(state, move |(mut live, mut first, replayed, c)| {
        let filter = filter.clone();
        async move {
            if let Some(event) = first.pop_front() {
                return Some((Ok(event), (live, first, replayed, c)));
            }
            loop {
                match live.recv().await {
                    Ok(r) if !replayed.contains(&r.seq) && wanted(&filter, all, &r.analysis) => {
                        let event = result_event(&r);
                        return Some((Ok(event), (live, first, replayed, c)));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        let event = Event::default().event(LAGGED_EVENT).data(n.to_string());
                        return Some((Ok(event), (live, first, replayed, c)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
