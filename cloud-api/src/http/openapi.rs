//! The API described by OpenAPI 3.1, at `GET /api/v1/openapi.json`: every route from its
//! handler's `#[utoipa::path]`, every body from its `wiko-wire` type. The errors every API route
//! may answer (a bad request, a missing or refused key, a timeout, a body over the limit, a
//! rate limit, an unavailable store, an internal error) are added to each operation here, once.

use axum::Router;
use axum::routing::get;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};
use wiko_wire::{ErrorBody, FrameMeta};

use super::AppState;
use super::{
    analyze, costs, events, feedback, fleet, golden, health, ingest, keys, results, stats,
};

/// `PUT /api/v1/frames/{frame_id}`'s multipart body.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes a request body; the handler reads the parts one by one.
pub(super) struct FrameUpload {
    /// The frame's metadata, as JSON.
    meta: FrameMeta,
    /// The image (JPEG, PNG, TIFF or BMP).
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
}

/// `POST /api/v1/analyze`'s multipart body (the prototype's form).
#[derive(ToSchema)]
#[allow(dead_code)] // Describes a request body; the handler reads the parts one by one.
pub(super) struct AnalyzeForm {
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    product_sku: String,
    facility: String,
    /// Default `default`.
    line: Option<String>,
    /// Default `default`.
    station: Option<String>,
    part_id: Option<String>,
}

/// `POST /api/v1/skus/{sku}/golden`'s multipart body: one or more `image` parts.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes a request body; the handler reads the parts one by one.
pub(super) struct GoldenUpload {
    #[schema(value_type = Vec<String>, format = Binary)]
    image: Vec<Vec<u8>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Wiko Defect Analyzer API",
        description = "Ingest, analysis results, golden sets, keys and the fleet. Every error is \
                       `{\"error\":{\"code\":…,\"message\":…}}` with a stable code.",
    ),
    paths(
        health::health,
        health::ready,
        health::metrics_text,
        ingest::put_frame,
        analyze::analyze,
        results::list,
        results::export,
        results::one,
        results::image,
        results::thumbnail,
        feedback::review,
        feedback::review_many,
        feedback::capability,
        feedback::capability_versions,
        stats::get_stats,
        events::events,
        costs::costs,
        golden::skus,
        golden::upload,
        golden::add_result,
        golden::list,
        golden::sample_image,
        golden::remove,
        golden::model,
        golden::model_file,
        keys::create,
        keys::list,
        keys::revoke,
        fleet::heartbeat,
        fleet::devices,
        fleet::device,
        fleet::requeue,
    ),
    security(("api_key" = [])),
    modifiers(&Common),
)]
struct ApiDoc;

/// What every operation shares: the key scheme and the common error answers.
struct Common;

fn error(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                    .build(),
            )
            .build(),
    )
}

impl Modify for Common {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                wiko_wire::API_KEY_HEADER,
                "A device, viewer or admin key",
            ))),
        );
        let (name, schema) = (ErrorBody::name(), ErrorBody::schema());
        components.schemas.insert(name.to_string(), schema);
        for (path, item) in doc.paths.paths.iter_mut() {
            let public = !path.starts_with("/api/") && path != "/metrics";
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let answers = &mut op.responses.responses;
                let mut add = |code: &str, description: &str| {
                    answers
                        .entry(code.to_string())
                        .or_insert_with(|| error(description));
                };
                add("408", "The request took too long (`request_timeout`)");
                add(
                    "500",
                    "Internal error (`internal`); the cause is in the server's log",
                );
                if public {
                    continue;
                }
                add("400", "A malformed request; the code names what is wrong");
                add("401", "No key, or a key not in force (`unauthorized`)");
                add("403", "The key may not do this (`forbidden`)");
                add(
                    "413",
                    "The body is over the size limit (`payload_too_large`)",
                );
                add(
                    "429",
                    "Over a rate limit (`too_many_requests`); see `Retry-After`",
                );
                add(
                    "503",
                    "The store is unreachable (`unavailable`); see `Retry-After`",
                );
            }
        }
    }
}

/// The document, built once.
fn document() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_default())
}

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/openapi.json", get(openapi))
}

async fn openapi() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_route_of_the_router_is_described_with_its_errors() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for (path, method) in [
            ("/api/v1/frames/{frame_id}", "put"),
            ("/api/v1/analyze", "post"),
            ("/api/v1/analyses", "get"),
            ("/api/v1/analyses/export", "get"),
            ("/api/v1/analyses/{id}", "get"),
            ("/api/v1/analyses/{id}/image", "get"),
            ("/api/v1/analyses/{id}/thumbnail", "get"),
            ("/api/v1/analyses/{id}/feedback", "post"),
            ("/api/v1/feedback", "post"),
            ("/api/v1/capability", "get"),
            ("/api/v1/capability/versions", "get"),
            ("/api/v1/stats", "get"),
            ("/api/v1/events", "get"),
            ("/api/v1/skus", "get"),
            ("/api/v1/skus/{sku}/golden", "post"),
            ("/api/v1/analyses/{id}/golden", "post"),
            ("/api/v1/skus/{sku}/golden", "get"),
            ("/api/v1/skus/{sku}/golden/{digest}", "get"),
            ("/api/v1/skus/{sku}/golden/{digest}", "delete"),
            ("/api/v1/skus/{sku}/model", "get"),
            ("/api/v1/skus/{sku}/model/file", "get"),
            ("/api/v1/keys", "post"),
            ("/api/v1/keys", "get"),
            ("/api/v1/keys/{prefix}", "delete"),
            ("/health", "get"),
            ("/ready", "get"),
            ("/metrics", "get"),
        ] {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} is not described");
            for code in ["408", "500"] {
                assert!(
                    op["responses"][code].is_object(),
                    "{method} {path}: no {code}"
                );
            }
        }
        assert!(doc["paths"]["/api/v1/frames/{frame_id}"]["put"]["responses"]["401"].is_object());
        assert!(doc["components"]["schemas"]["Analysis"].is_object());
        assert!(doc["components"]["schemas"]["EdgeVerdict"].is_object());
        assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    }
}
