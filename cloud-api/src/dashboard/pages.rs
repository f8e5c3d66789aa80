//! The handlers: a session (or the sign-in form), the data from the same functions the API's
//! handlers use, a view.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, Html, IntoResponse, Redirect, Response};
use chrono::Utc;
use maud::Markup;
use serde::Deserialize;
use serde_json::json;
use wiko_wire::{ErrorCode, FeedbackVerdict, NewFeedback, StatsBucket, StatsDimension};

use super::SignedIn;
use super::overview::{self, Figures, Range, window};
use super::session::{SIGNIN_COOKIE, Sessions, cookie_value};
use super::views::{self, Section, Viewer};
use crate::auth::Need;
use crate::http::AppState;
use crate::http::caller::{Context, too_many};
use crate::http::error::ApiError;
use crate::http::events::{self, EventsQuery};
use crate::http::results::{ListQuery, checked_filter, not_found, parse_id};
use crate::http::stats::answer;
use crate::http::{fleet, golden, image};
use crate::stats::StatsRequest;

fn html(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

fn page(signed: &SignedIn, title: &str, section: Section, body: Markup) -> Response {
    let viewer = Viewer {
        principal: &signed.principal,
        csrf: &signed.csrf,
    };
    html(views::page(title, section, &viewer, body))
}

/// A form's body, refused whole (with a stable code) when it does not parse.
fn form<T>(form: Result<Form<T>, FormRejection>) -> Result<T, ApiError> {
    form.map(|Form(f)| f)
        .map_err(|e| ApiError::bad(ErrorCode::InvalidBody, e.body_text()))
}

pub(super) async fn home(_: SignedIn) -> Redirect {
    Redirect::to("/overview")
}

/// The sign-in form, with a fresh nonce cookie its CSRF token is bound to.
fn signin_page(sessions: &Sessions, status: StatusCode, error: Option<&str>) -> Response {
    let nonce = Sessions::signin_nonce();
    (
        status,
        AppendHeaders([(header::SET_COOKIE, sessions.signin_cookie(&nonce))]),
        html(views::signin(&sessions.csrf_token(&nonce), error)),
    )
        .into_response()
}

pub(super) async fn signin_form(State(s): State<AppState>) -> Response {
    signin_page(&s.sessions, StatusCode::OK, None)
}

#[derive(Deserialize)]
pub(super) struct SignInForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    csrf: String,
}

/// Checks the key as the API does (rate limits, lockout, audit of refusals) and opens a
/// session for a viewer or admin key.
pub(super) async fn signin(
    State(s): State<AppState>,
    context: Context,
    headers: HeaderMap,
    body: Result<Form<SignInForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let f = form(body)?;
    let nonce = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| cookie_value(h, SIGNIN_COOKIE))
        .unwrap_or_default();
    if nonce.is_empty() || !s.sessions.csrf_ok(nonce, &f.csrf) {
        return Err(ApiError::CsrfRejected);
    }
    if let Some(address) = context.address() {
        s.limits
            .check_address(address.ip())
            .map_err(|wait| too_many(wait, "address"))?;
    }
    let presented = Some(f.key.trim()).filter(|k| !k.is_empty());
    let store = s.intake.storage.records.as_ref();
    let principal = match s.keyring.authenticate_or_reload(presented, store).await {
        Ok(p) if p.may(Need::Read).is_ok() => p,
        outcome => {
            if let Some(address) = context.address() {
                s.limits.failed(address.ip());
            }
            let (actor, reason) = match &outcome {
                Ok(p) => (p.name.as_str(), "scope"),
                Err(refusal) => ("-", refusal.as_str()),
            };
            let prefix = presented.and_then(crate::auth::prefix_of);
            context.refused(&s.audit, actor, reason, prefix);
            let message = match outcome {
                Ok(_) => "A device key cannot sign in: use a viewer or admin key.",
                Err(_) => "This key is not accepted.",
            };
            return Ok(signin_page(
                &s.sessions,
                StatusCode::UNAUTHORIZED,
                Some(message),
            ));
        }
    };
    metrics::counter!(crate::telemetry::DASHBOARD_SIGNINS_TOTAL, "scope" => principal.scope.as_str())
        .increment(1);
    tracing::info!(key = %principal.name, scope = principal.scope.as_str(), "dashboard sign-in");
    s.audit.record(
        &principal.name,
        "dashboard_signin",
        json!({
            "key_prefix": principal.prefix,
            "address": context.address().map(|a| a.ip().to_string()),
        }),
    );
    let cookie = s.sessions.issue(&principal.reference(), Utc::now());
    Ok((
        AppendHeaders([
            (header::SET_COOKIE, s.sessions.session_cookie(&cookie)),
            (header::SET_COOKIE, s.sessions.clear_signin_cookie()),
        ]),
        Redirect::to("/"),
    )
        .into_response())
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn signout(
    State(s): State<AppState>,
    signed: SignedIn,
    body: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, ApiError> {
    if !signed.csrf_ok(&s, &form(body)?.csrf) {
        return Err(ApiError::CsrfRejected);
    }
    Ok((
        AppendHeaders([(header::SET_COOKIE, s.sessions.clear_session_cookie())]),
        Redirect::to("/signin"),
    )
        .into_response())
}

/// The results page's query: the list API's parameters, with the empty fields of the filter
/// form left out and a `datetime-local` value (no zone) read as UTC.
fn list_query(raw: Option<&str>) -> Result<(Vec<(String, String)>, ListQuery), ApiError> {
    let bad =
        |e: serde_urlencoded::de::Error| ApiError::bad(ErrorCode::InvalidQuery, e.to_string());
    let pairs = filled(raw)?;
    let parsed: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| {
            let zoneless = (k == "since" || k == "until") && v.len() == 16;
            (
                k.clone(),
                if zoneless {
                    format!("{v}:00Z")
                } else {
                    v.clone()
                },
            )
        })
        .collect();
    let encoded = serde_urlencoded::to_string(&parsed)
        .map_err(|e| ApiError::bad(ErrorCode::InvalidQuery, e.to_string()))?;
    let query = serde_urlencoded::from_str(&encoded).map_err(bad)?;
    Ok((pairs, query))
}

/// A page's query as its form sends it: the fields filled in.
fn filled(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::bad(ErrorCode::InvalidQuery, e.to_string()))?;
    pairs.retain(|(_, v)| !v.trim().is_empty());
    Ok(pairs)
}

/// The value of a query field, empty when absent.
fn field(pairs: &[(String, String)], name: &str) -> String {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// Parts, NG and yield for a range in plant time, with the trend, p-chart, Pareto and the
/// per-station table: three requests to the hourly aggregates.
pub(super) async fn overview(
    State(s): State<AppState>,
    signed: SignedIn,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = filled(raw.as_deref())?;
    let value = |name: &str| field(&pairs, name);
    let range = Range::parse(&value("range")).unwrap_or(Range::Shift);
    let place = |name: &str| Some(value(name)).filter(|v| !v.is_empty());
    let filter = checked_filter(
        [
            place("facility"),
            place("line"),
            place("station"),
            place("sku"),
            None,
        ],
        None,
        None,
    )?;
    let now = Utc::now();
    let (since, bucket) = window(range, now, &s.plant);
    let request = |bucket, group_by| StatsRequest {
        since,
        until: now,
        bucket,
        utc_offset_minutes: s.plant.utc_offset_minutes,
        filter: filter.clone(),
        group_by,
    };
    let by_station = answer(
        &s,
        &request(
            StatsBucket::All,
            vec![StatsDimension::Line, StatsDimension::Station],
        ),
    )
    .await?;
    let trend = answer(&s, &request(bucket, Vec::new())).await?;
    let by_defect = answer(
        &s,
        &request(StatsBucket::All, vec![StatsDimension::DefectType]),
    )
    .await?;
    let figures = Figures {
        by_station: &by_station,
        trend: &trend,
        by_defect: &by_defect,
    };
    Ok(page(
        &signed,
        "Overview",
        Section::Overview,
        overview::view(range, &value, &figures, &s.plant),
    ))
}

/// The newest NG parts; the page's script listens to `/live/events` for the next ones.
pub(super) async fn live(
    State(s): State<AppState>,
    signed: SignedIn,
) -> Result<Response, ApiError> {
    let (_, query) = list_query(Some("defect_detected=true&limit=20"))?;
    let newest = query.page(s.intake.storage.records.as_ref()).await?;
    Ok(page(
        &signed,
        "Live NG parts",
        Section::Live,
        views::live(&newest.items),
    ))
}

/// The API's live feed (`GET /api/v1/events`), for a session: an `EventSource` cannot send a key.
pub(super) async fn live_events(
    State(s): State<AppState>,
    _: SignedIn,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad(ErrorCode::InvalidQuery, e.body_text()))?;
    Ok(events::stream(&s, &headers, q).await?.into_response())
}

pub(super) async fn results(
    State(s): State<AppState>,
    signed: SignedIn,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (pairs, query) = list_query(raw.as_deref())?;
    let listing = query.page(s.intake.storage.records.as_ref()).await?;
    let value = |name: &str| field(&pairs, name);
    let next = listing.next_cursor.as_ref().map(|cursor| {
        let mut next: Vec<(&str, &str)> = pairs
            .iter()
            .filter(|(k, _)| k != "cursor")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        next.push(("cursor", cursor));
        format!(
            "/results?{}",
            serde_urlencoded::to_string(&next).unwrap_or_default()
        )
    });
    Ok(page(
        &signed,
        "Results",
        Section::Results,
        views::results(&value, &listing.items, next.as_deref()),
    ))
}

pub(super) async fn detail(
    State(s): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let analysis = s
        .intake
        .storage
        .records
        .get(parse_id(&id)?)
        .await
        .map_err(not_found)?;
    let title = format!("Part {}", analysis.part_id.as_deref().unwrap_or(&id));
    Ok(page(
        &signed,
        &title,
        Section::Results,
        views::detail(&analysis, &signed.csrf),
    ))
}

pub(super) async fn part_image(
    State(s): State<AppState>,
    _: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let bytes = s
        .intake
        .storage
        .part_image(parse_id(&id)?)
        .await
        .map_err(not_found)?;
    Ok(image::stored(bytes))
}

pub(super) async fn thumbnail(
    State(s): State<AppState>,
    _: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let i = &s.intake;
    let bytes =
        crate::thumbnail::thumbnail(&i.storage, &i.budget, i.limits, parse_id(&id)?).await?;
    Ok(image::stored(bytes))
}

#[derive(Deserialize)]
pub(super) struct FeedbackForm {
    #[serde(default)]
    csrf: String,
    verdict: FeedbackVerdict,
    #[serde(default)]
    comment: Option<String>,
}

/// A review from the part's page, recorded as the API records it (audited with the key).
pub(super) async fn feedback(
    State(s): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
    body: Result<Form<FeedbackForm>, FormRejection>,
) -> Result<Response, ApiError> {
    let f = form(body)?;
    if !signed.csrf_ok(&s, &f.csrf) {
        return Err(ApiError::CsrfRejected);
    }
    let p = &signed.principal;
    p.may(Need::Review).map_err(|e| ApiError::Forbidden(e.0))?;
    let id = parse_id(&id)?;
    let new = NewFeedback {
        verdict: f.verdict,
        comment: f.comment,
    };
    let (_, mut detail) = crate::http::feedback::record(&s, p.name.clone(), id, new).await?;
    if let Some(object) = detail.as_object_mut() {
        object.insert("key_prefix".into(), json!(p.prefix));
        object.insert("via".into(), json!("dashboard"));
    }
    s.audit.record(&p.name, "feedback", detail);
    Ok(Redirect::to(&format!("/results/{id}#feedback")).into_response())
}

pub(super) async fn golden_index(
    State(s): State<AppState>,
    signed: SignedIn,
) -> Result<Response, ApiError> {
    let skus = golden::summaries(&s).await?;
    Ok(page(
        &signed,
        "Golden sets",
        Section::Golden,
        views::golden_index(&skus),
    ))
}

pub(super) async fn golden_set(
    State(s): State<AppState>,
    signed: SignedIn,
    Path(sku): Path<String>,
) -> Result<Response, ApiError> {
    let set = golden::golden_set(&s, sku).await?;
    let title = format!("Golden set {}", set.sku);
    Ok(page(
        &signed,
        &title,
        Section::Golden,
        views::golden_set(&set),
    ))
}

pub(super) async fn golden_image(
    State(s): State<AppState>,
    _: SignedIn,
    Path((sku, digest)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    golden::sample_bytes(&s, &sku, &digest).await
}

pub(super) async fn fleet(
    State(s): State<AppState>,
    signed: SignedIn,
) -> Result<Response, ApiError> {
    let devices = fleet::every_device(&s).await?;
    Ok(page(
        &signed,
        "Fleet",
        Section::Fleet,
        views::fleet(&devices, Utc::now()),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn empty_filters_are_left_out_and_form_times_are_utc() {
        let (pairs, query) = list_query(Some(
            "facility=&line=l1&since=2026-12-06T08%3A00&defect_detected=true",
        ))
        .unwrap();
        assert_eq!(
            pairs,
            vec![
                ("line".to_string(), "l1".to_string()),
                ("since".to_string(), "2026-12-06T08:00".to_string()),
                ("defect_detected".to_string(), "true".to_string()),
            ]
        );
        let shown = format!("{query:?}");
        assert!(shown.contains("2026-12-06T08:00:00Z"), "{shown}");
        assert!(
            list_query(Some("colour=red")).is_err(),
            "unknown filters are refused"
        );
    }
}
