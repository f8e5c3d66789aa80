//! Reviews of results and what they say of the models:
//! - `POST /api/v1/analyses/{id}/feedback` (a viewer or admin key: reviewers are people signed
//!   in with either): `confirmed`, `false_ng`, `false_ok` or `inconclusive`, with an optional
//!   comment; stored with the key's name, audited (`feedback`); the result shows its latest.
//! - `POST /api/v1/feedback`: one review of up to `MAX_BULK_REVIEW` results (`confirmed`,
//!   `incorrect`: a false NG of an NG result, a false OK of an OK one, `inconclusive`), each
//!   recorded and audited as a single review is; the ones that cannot be reviewed are named
//!   with their error.
//! - `GET /api/v1/capability?sku=&model_version=&since=`: TP/FP/TN/FN from the reviews,
//!   precision, recall, false-reject rate; `GET /api/v1/capability/versions` the same per
//!   model version that judged the parts.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use wiko_wire::feedback::{MAX_BULK_REVIEW, MAX_COMMENT_CHARS};
use wiko_wire::frame::validate_id;
use wiko_wire::{
    Analysis, BulkFeedback, BulkRefusal, BulkReviewed, BulkReviewedResult, Capability, ErrorCode,
    ErrorDetail, Feedback, NewFeedback,
};

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use super::results::{not_found, parse_id};
use crate::auth::Need;
use crate::store::Reviewed;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/analyses/{id}/feedback", post(review))
        .route("/api/v1/feedback", post(review_many))
        .route("/api/v1/capability", get(capability))
        .route("/api/v1/capability/versions", get(capability_versions))
}

/// A comment as stored: trimmed, `None` when empty; refused over [`MAX_COMMENT_CHARS`].
fn comment(raw: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(text) = raw.map(|c| c.trim().to_string()).filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > MAX_COMMENT_CHARS {
        return Err(ApiError::bad(
            ErrorCode::InvalidBody,
            format!("the comment is longer than {MAX_COMMENT_CHARS} characters"),
        ));
    }
    Ok(Some(text))
}

#[utoipa::path(post, path = "/api/v1/analyses/{id}/feedback", tag = "results",
    params(("id" = uuid::Uuid, Path, description = "The analysis id")),
    request_body = wiko_wire::NewFeedback,
    responses(
        (status = 200, description = "The result with this review as its latest", body = wiko_wire::Analysis),
        (status = 404, description = "No such analysis", body = wiko_wire::ErrorBody),
        (status = 409, description = "The result has no verdict to review (`not_judged`)", body = wiko_wire::ErrorBody),
    ))]
pub(super) async fn review(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<NewFeedback>, JsonRejection>,
) -> Result<Json<Analysis>, ApiError> {
    let reviewer = caller.may(Need::Review)?.name.clone();
    let id = parse_id(&id)?;
    let Json(new) = body.map_err(|e| ApiError::bad(ErrorCode::InvalidBody, e.body_text()))?;
    let (analysis, detail) = record(&s, reviewer, id, new).await?;
    caller.audit("feedback", detail);
    Ok(Json(analysis))
}

/// Stores a reviewer's feedback on a judged result: the result with it, and what to audit (the
/// dashboard's feedback form records the same way).
pub(crate) async fn record(
    s: &AppState,
    reviewer: String,
    id: uuid::Uuid,
    new: NewFeedback,
) -> Result<(Analysis, serde_json::Value), ApiError> {
    let feedback = Feedback {
        verdict: new.verdict,
        comment: comment(new.comment)?,
        by: reviewer,
        at: Utc::now(),
    };
    let detail = json!({
        "analysis_id": id,
        "verdict": feedback.verdict.as_str(),
        "comment": feedback.comment,
    });
    match s
        .store()
        .review(id, feedback.clone())
        .await
        .map_err(not_found)?
    {
        Reviewed::Recorded(analysis) => {
            metrics::counter!(crate::telemetry::FEEDBACK_TOTAL, "verdict" => feedback.verdict.as_str())
                .increment(1);
            Ok((*analysis, detail))
        }
        Reviewed::NotJudged(status) => Err(ApiError::NotJudged(format!(
            "the analysis has no verdict to review (status {})",
            status.as_str()
        ))),
        Reviewed::Mismatch { defect_detected } => Err(ApiError::bad(
            ErrorCode::InvalidBody,
            format!(
                "{} does not fit a result judged {}",
                feedback.verdict.as_str(),
                if defect_detected { "NG" } else { "OK" }
            ),
        )),
    }
}

#[utoipa::path(post, path = "/api/v1/feedback", tag = "results",
    request_body = wiko_wire::BulkFeedback,
    responses(
        (status = 200, description = "Each named result, reviewed or refused with its error", body = wiko_wire::BulkReviewed),
    ))]
pub(super) async fn review_many(
    State(s): State<AppState>,
    caller: Caller,
    body: Result<Json<BulkFeedback>, JsonRejection>,
) -> Result<Json<BulkReviewed>, ApiError> {
    let reviewer = caller.may(Need::Review)?.name.clone();
    let Json(bulk) = body.map_err(|e| ApiError::bad(ErrorCode::InvalidBody, e.body_text()))?;
    let (answer, details) = record_many(&s, reviewer, bulk).await?;
    for detail in details {
        caller.audit("feedback", detail);
    }
    Ok(Json(answer))
}

/// Records one review of many results, each as [`record`] does: the answer, and what to audit
/// for each recorded review (the dashboard's bulk form records the same way). Refused whole
/// only when the request itself is wrong (no result, too many, a comment too long).
pub(crate) async fn record_many(
    s: &AppState,
    reviewer: String,
    bulk: BulkFeedback,
) -> Result<(BulkReviewed, Vec<serde_json::Value>), ApiError> {
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<uuid::Uuid> = bulk.ids.into_iter().filter(|id| seen.insert(*id)).collect();
    if ids.is_empty() || ids.len() > MAX_BULK_REVIEW {
        return Err(ApiError::bad(
            ErrorCode::InvalidBody,
            format!("name 1 to {MAX_BULK_REVIEW} results"),
        ));
    }
    let comment = comment(bulk.comment)?;
    let judged: std::collections::HashMap<uuid::Uuid, bool> = s
        .store()
        .get_many(&ids)
        .await?
        .into_iter()
        .map(|a| (a.id, a.defect_detected))
        .collect();
    let mut answer = BulkReviewed {
        reviewed: Vec::new(),
        refused: Vec::new(),
    };
    let mut details = Vec::new();
    for id in ids {
        let outcome = match judged.get(&id) {
            None => Err(ApiError::NotFound("analysis")),
            Some(&defect_detected) => {
                let verdict = bulk.verdict.for_result(defect_detected);
                let new = NewFeedback {
                    verdict,
                    comment: comment.clone(),
                };
                record(s, reviewer.clone(), id, new)
                    .await
                    .map(|(_, detail)| (verdict, detail))
            }
        };
        match outcome {
            Ok((verdict, detail)) => {
                answer.reviewed.push(BulkReviewedResult { id, verdict });
                details.push(detail);
            }
            Err(e) => {
                if let ApiError::Internal(detail) = &e {
                    tracing::error!(%detail, analysis = %id, "a bulk review failed");
                }
                answer.refused.push(BulkRefusal {
                    id,
                    error: ErrorDetail {
                        code: e.code().as_str().to_string(),
                        message: e.to_string(),
                    },
                });
            }
        }
    }
    Ok((answer, details))
}

/// Which SKU, model version and reviews.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct CapabilityQuery {
    #[serde(alias = "product_sku")]
    sku: String,
    /// One model version (`v3`); default every version.
    model_version: Option<String>,
    /// Results captured from then on; default all.
    since: Option<DateTime<Utc>>,
}

/// The capability of `sku`'s model (of one version, or all) from the reviews of parts captured
/// from `since` on: over all the versions asked, and per version that judged them (the API's
/// two routes and the dashboard's page).
pub(crate) async fn capabilities(
    s: &AppState,
    sku: &str,
    model_version: Option<&str>,
    since: Option<DateTime<Utc>>,
) -> Result<(Capability, Vec<Capability>), ApiError> {
    let per_version = s.store().capability(sku, model_version, since).await?;
    let mut total = [0u64; 5];
    for (_, counts) in &per_version {
        for (t, n) in total.iter_mut().zip(counts) {
            *t += n;
        }
    }
    let versions = per_version
        .into_iter()
        .map(|(version, counts)| Capability::new(sku.to_string(), version, counts))
        .collect();
    let all = Capability::new(sku.to_string(), model_version.map(str::to_string), total);
    Ok((all, versions))
}

/// A capability query, checked.
fn checked(
    query: Result<Query<CapabilityQuery>, QueryRejection>,
) -> Result<CapabilityQuery, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad(ErrorCode::InvalidQuery, e.body_text()))?;
    validate_id("sku", &q.sku)
        .map_err(|e| ApiError::bad(ErrorCode::InvalidQuery, e.to_string()))?;
    if let Some(v) = &q.model_version {
        validate_id("model_version", v)
            .map_err(|e| ApiError::bad(ErrorCode::InvalidQuery, e.to_string()))?;
    }
    Ok(q)
}

#[utoipa::path(get, path = "/api/v1/capability", tag = "results", params(CapabilityQuery),
    responses((status = 200, description = "The model's counts and rates from the reviews", body = wiko_wire::Capability)))]
pub(super) async fn capability(
    State(s): State<AppState>,
    caller: Caller,
    query: Result<Query<CapabilityQuery>, QueryRejection>,
) -> Result<Json<Capability>, ApiError> {
    caller.may(Need::Read)?;
    let q = checked(query)?;
    let (all, _) = capabilities(&s, &q.sku, q.model_version.as_deref(), q.since).await?;
    Ok(Json(all))
}

#[utoipa::path(get, path = "/api/v1/capability/versions", tag = "results", params(CapabilityQuery),
    responses((status = 200, description = "The counts and rates per model version that judged the reviewed parts, oldest version first", body = Vec<wiko_wire::Capability>)))]
pub(super) async fn capability_versions(
    State(s): State<AppState>,
    caller: Caller,
    query: Result<Query<CapabilityQuery>, QueryRejection>,
) -> Result<Json<Vec<Capability>>, ApiError> {
    caller.may(Need::Read)?;
    let q = checked(query)?;
    let (_, versions) = capabilities(&s, &q.sku, q.model_version.as_deref(), q.since).await?;
    Ok(Json(versions))
}
