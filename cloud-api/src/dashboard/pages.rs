//! The handlers: a session (or the sign-in form), the data from the same functions the API's
//! handlers use, a view.

use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Multipart, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{AppendHeaders, Html, IntoResponse, Redirect, Response};
use chrono::Utc;
use maud::Markup;
use serde::Deserialize;
use serde_json::json;
use wiko_wire::{
    BulkFeedback, BulkVerdict, ErrorCode, FeedbackVerdict, NewFeedback, StatsBucket, StatsDimension,
};

use super::SignedIn;
use super::overview::{self, Figures, Range, window};
use super::session::{SIGNIN_COOKIE, Sessions, cookie_value};
use super::views::{self, Section, Viewer};
use crate::auth::Need;
use crate::http::AppState;
use crate::http::caller::{Context, too_many};
use crate::http::error::ApiError;
use crate::http::events::{self, EventsQuery};
use crate::http::results::{ListQuery, checked_filter, csv_response, not_found, parse_id};
use crate::http::stats::answer;
use crate::http::{fleet, golden, image};
use crate::stats::StatsRequest;
use crate::store::{FeedbackFilter, ListFilter};

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
    let range = Range::parse(&value("range"), &value("from"), &value("to")).unwrap_or(Range::Shift);
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
    let (since, until, bucket) = window(range, now, &s.plant);
    let request = |bucket, group_by| StatsRequest {
        since,
        until,
        bucket,
        utc_offset_minutes: s.plant.utc_offset_minutes,
        filter: filter.clone(),
        group_by,
        shift_starts: s.plant.shift_starts.clone(),
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
    let by_shift = answer(&s, &request(StatsBucket::All, vec![StatsDimension::Shift])).await?;
    let figures = Figures {
        by_station: &by_station,
        by_shift: &by_shift,
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
    // The filters without the page: what the next page and the export carry.
    let filters: Vec<(&str, &str)> = pairs
        .iter()
        .filter(|(k, _)| k != "cursor" && k != "limit")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let next = listing.next_cursor.as_ref().map(|cursor| {
        let mut next = filters.clone();
        next.extend(
            pairs
                .iter()
                .filter(|(k, _)| k == "limit")
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        next.push(("cursor", cursor));
        format!(
            "/results?{}",
            serde_urlencoded::to_string(&next).unwrap_or_default()
        )
    });
    let export = format!(
        "/results/export.csv?{}",
        serde_urlencoded::to_string(&filters).unwrap_or_default()
    );
    let back = format!(
        "/results?{}",
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    );
    let links = views::ResultLinks {
        next: next.as_deref(),
        export: &export,
        back: &back,
    };
    Ok(page(
        &signed,
        "Results",
        Section::Results,
        views::results(&value, &listing.items, &links, &signed.csrf),
    ))
}

/// Every result the page's filters select, as CSV (the API's export, for a session).
pub(super) async fn export(
    State(s): State<AppState>,
    _: SignedIn,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (_, query) = list_query(raw.as_deref())?;
    Ok(csv_response(&s, query.export()?))
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
    let published = s.intake.storage.records.published_for(analysis.id).await?;
    let sent = crate::alert::sent(published, &s.public_url);
    let no_heatmap = crate::heatmap::unavailable(&s.intake.storage, &s.heatmaps, &analysis).await;
    let title = format!("Part {}", analysis.part_id.as_deref().unwrap_or(&id));
    Ok(page(
        &signed,
        &title,
        Section::Results,
        views::detail(
            &analysis,
            &sent,
            no_heatmap.as_deref(),
            &signed.csrf,
            signed.principal.may(Need::Admin).is_ok(),
        ),
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

/// The part's anomaly heat map under the model version that judged it (the page's toggle).
pub(super) async fn heatmap(
    State(s): State<AppState>,
    _: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let i = &s.intake;
    let bytes =
        crate::heatmap::heatmap(&i.storage, &s.heatmaps, &i.budget, i.limits, parse_id(&id)?)
            .await?;
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
    let (_, detail) = crate::http::feedback::record(&s, p.name.clone(), id, new).await?;
    s.audit
        .record(&p.name, "feedback", via_dashboard(p, detail));
    Ok(Redirect::to(&format!("/results/{id}#feedback")).into_response())
}

/// One review of the parts selected on the results page, recorded as the API's bulk review
/// records it (each audited with the key); back to the same page, or what was refused.
pub(super) async fn bulk_feedback(
    State(s): State<AppState>,
    signed: SignedIn,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|e| ApiError::bad(ErrorCode::InvalidBody, e.to_string()))?;
    if !signed.csrf_ok(&s, &field(&pairs, "csrf")) {
        return Err(ApiError::CsrfRejected);
    }
    let p = &signed.principal;
    p.may(Need::Review).map_err(|e| ApiError::Forbidden(e.0))?;
    let verdict = BulkVerdict::parse(&field(&pairs, "verdict")).ok_or_else(|| {
        ApiError::bad(
            ErrorCode::InvalidBody,
            "verdict: confirmed, incorrect or inconclusive",
        )
    })?;
    let ids = pairs
        .iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| parse_id(v))
        .collect::<Result<Vec<_>, _>>()?;
    // Back to the page the form was on: its query, checked as the results page checks it.
    let back_query = field(&pairs, "back");
    let (back_pairs, _) = list_query(back_query.strip_prefix("/results?"))?;
    let back = format!(
        "/results?{}",
        serde_urlencoded::to_string(&back_pairs).unwrap_or_default()
    );
    let bulk = BulkFeedback {
        ids,
        verdict,
        comment: Some(field(&pairs, "comment")),
    };
    let (answer, details) = crate::http::feedback::record_many(&s, p.name.clone(), bulk).await?;
    for detail in details {
        s.audit
            .record(&p.name, "feedback", via_dashboard(p, detail));
    }
    if answer.refused.is_empty() {
        return Ok(Redirect::to(&back).into_response());
    }
    Ok(page(
        &signed,
        "Bulk review",
        Section::Results,
        views::bulk_reviewed(&answer, &back),
    ))
}

/// How each SKU's model fares against the reviews over a range, and the parts reviewed as
/// its mistakes: false OKs (escapes) and false NGs (each, for an admin, one click from the
/// golden set).
pub(super) async fn capability(
    State(s): State<AppState>,
    signed: SignedIn,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = filled(raw.as_deref())?;
    let range = views::ReviewRange::parse(&field(&pairs, "range"));
    let since = range
        .days()
        .map(|d| Utc::now() - chrono::TimeDelta::days(d));
    let sku = Some(field(&pairs, "sku")).filter(|v| !v.is_empty());
    let filter = checked_filter([None, None, None, sku.clone(), None], None, None)?;
    let store = s.intake.storage.records.as_ref();
    let skus: Vec<String> = golden::summaries(&s)
        .await?
        .into_iter()
        .map(|k| k.sku)
        .filter(|k| sku.as_ref().is_none_or(|only| only == k))
        .collect();
    let mut rows = Vec::with_capacity(skus.len());
    for k in skus {
        rows.push(crate::http::feedback::capabilities(&s, &k, None, since).await?);
    }
    let reviewed = |verdict| ListFilter {
        since,
        feedback: Some(FeedbackFilter::Is(verdict)),
        ..filter.clone()
    };
    let (false_ok, _) = store
        .list(&reviewed(FeedbackVerdict::FalseOk), None, MISTAKES_SHOWN)
        .await?;
    let (false_ng, _) = store
        .list(&reviewed(FeedbackVerdict::FalseNg), None, MISTAKES_SHOWN)
        .await?;
    let admin = signed.principal.may(Need::Admin).is_ok();
    let view = views::CapabilityView {
        range,
        sku: sku.as_deref().unwrap_or(""),
        rows: &rows,
        false_ok: &false_ok,
        false_ng: &false_ng,
        csrf: admin.then_some(signed.csrf.as_str()),
    };
    Ok(page(
        &signed,
        "Capability",
        Section::Capability,
        views::capability(&view),
    ))
}

/// The newest mistakes of each kind the capability page lists.
const MISTAKES_SHOWN: usize = 50;

/// A part reviewed good joins its SKU's golden set (an admin's click); on to the set's page,
/// which shows the new model version.
pub(super) async fn add_to_golden(
    State(s): State<AppState>,
    signed: SignedIn,
    Path(id): Path<String>,
    body: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, ApiError> {
    if !signed.csrf_ok(&s, &form(body)?.csrf) {
        return Err(ApiError::CsrfRejected);
    }
    let p = admin(&signed)?;
    let (calibration, detail) = golden::add_part(&s, parse_id(&id)?).await?;
    s.audit
        .record(&p.name, "golden_added", via_dashboard(p, detail));
    Ok(Redirect::to(&format!("/golden/{}", calibration.sku)).into_response())
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
    let admin = signed.principal.may(Need::Admin).is_ok();
    Ok(page(
        &signed,
        &title,
        Section::Golden,
        views::golden_set(&set, admin.then_some(signed.csrf.as_str())),
    ))
}

/// The golden page's upload (an admin's): good parts join the set as the API's upload adds
/// them. The form's first part is its CSRF token (a form sends its fields in order), checked
/// before any image is read; never in the URL, which logs and the history keep.
pub(super) async fn golden_upload(
    State(s): State<AppState>,
    signed: SignedIn,
    Path(sku): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut multipart = multipart?;
    let token = match multipart.next_field().await? {
        Some(field) if field.name() == Some("csrf") => small_text(field, CSRF_FIELD_MAX).await?,
        _ => String::new(),
    };
    if !signed.csrf_ok(&s, &token) {
        return Err(ApiError::CsrfRejected);
    }
    let p = admin(&signed)?;
    let (_, detail) = golden::upload_images(&s, &sku, multipart).await?;
    s.audit
        .record(&p.name, "golden_added", via_dashboard(p, detail));
    Ok(Redirect::to(&format!("/golden/{sku}")).into_response())
}

/// Most bytes of the upload form's CSRF field (a token is far shorter).
const CSRF_FIELD_MAX: usize = 256;

/// A small text field, read chunk by chunk: refused (400 `invalid_field`) past `max` bytes,
/// where `text()` would first buffer up to the body limit.
async fn small_text(
    mut field: axum::extract::multipart::Field<'_>,
    max: usize,
) -> Result<String, ApiError> {
    let name = field.name().unwrap_or_default().to_string();
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await? {
        if bytes.len() + chunk.len() > max {
            return Err(ApiError::bad(
                ErrorCode::InvalidField,
                format!("the field {name} is over {max} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| {
        ApiError::bad(
            ErrorCode::InvalidField,
            format!("the field {name} is not UTF-8"),
        )
    })
}

/// The golden page's remove button (an admin's).
pub(super) async fn golden_remove(
    State(s): State<AppState>,
    signed: SignedIn,
    Path((sku, digest)): Path<(String, String)>,
    body: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, ApiError> {
    if !signed.csrf_ok(&s, &form(body)?.csrf) {
        return Err(ApiError::CsrfRejected);
    }
    let p = admin(&signed)?;
    let (_, detail) = golden::remove_sample(&s, &sku, &digest).await?;
    s.audit
        .record(&p.name, "golden_removed", via_dashboard(p, detail));
    Ok(Redirect::to(&format!("/golden/{sku}")).into_response())
}

/// The signed-in key, when it is an admin's.
fn admin(signed: &SignedIn) -> Result<&crate::auth::Principal, ApiError> {
    let p = &signed.principal;
    p.may(Need::Admin).map_err(|e| ApiError::Forbidden(e.0))?;
    Ok(p)
}

/// An audit detail of the API's, marked as done from the dashboard with the key's prefix.
fn via_dashboard(p: &crate::auth::Principal, mut detail: serde_json::Value) -> serde_json::Value {
    if let Some(object) = detail.as_object_mut() {
        object.insert("key_prefix".into(), json!(p.prefix));
        object.insert("via".into(), json!("dashboard"));
    }
    detail
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
