//! `GET /api/v1/events`: NG results reach connected clients as they are committed, on every
//! replica, and a client reconnecting with `Last-Event-ID` gets what it missed.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::harness::*;
use crate::stats::completed;

/// A connected client: the response body, and what was read of it.
struct Client {
    body: Body,
    text: String,
}

/// One SSE event: (event, id, data).
type SseEvent = (String, Option<String>, Value);

impl Client {
    async fn connect(h: &Harness, uri: &str, last_event_id: Option<&str>) -> Client {
        let mut req = Request::builder().uri(uri).header("x-api-key", VIEWER);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let response = wiko_cloud::app(h.state.clone())
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Client {
            body: response.into_body(),
            text: String::new(),
        }
    }

    /// The next event (comments skipped), within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::new(), None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if event.is_empty() {
                    continue; // a keep-alive comment
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some((event, id, data));
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??;
            if let Ok(bytes) = frame.unwrap().into_data() {
                self.text.push_str(std::str::from_utf8(&bytes).unwrap());
            }
        }
    }
}

const WAIT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn an_ng_result_reaches_a_connected_client_and_a_reconnect_replays_what_it_missed() {
    let h = harness().await;
    let storage = h.state.intake.storage.clone();
    let mut client = Client::connect(&h, "/api/v1/events", None).await;
    let ok = completed(&storage, 1, false).await;
    let ng = completed(&storage, 2, true).await;
    let (event, id, data) = client.next(WAIT).await.expect("the NG result arrives");
    assert_eq!(event, "result");
    assert_eq!(data["id"], ng.to_string(), "the OK result {ok} is not sent");
    assert_eq!(data["defects"][0]["type"], "chip");
    let seen = id.unwrap();
    drop(client);
    // Missed while away, in order; the OK one only to a client asking for all.
    let missed = [
        completed(&storage, 3, true).await,
        completed(&storage, 4, true).await,
    ];
    completed(&storage, 5, false).await;
    let mut client = Client::connect(&h, "/api/v1/events", Some(&seen)).await;
    for id in missed {
        let (_, _, data) = client.next(WAIT).await.unwrap();
        assert_eq!(data["id"], id.to_string());
    }
    // Then the live ones, once each.
    let live = completed(&storage, 6, true).await;
    let (_, _, data) = client.next(WAIT).await.unwrap();
    assert_eq!(data["id"], live.to_string());
    assert!(client.next(Duration::from_millis(500)).await.is_none());
    let mut everything =
        Client::connect(&h, "/api/v1/events?all=true&station=polish", Some(&seen)).await;
    let mut ids = Vec::new();
    while let Some((_, _, data)) = everything.next(Duration::from_millis(500)).await {
        ids.push(data["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 4, "3, 4, 5 and 6: {ids:?}");
    // Filters and keys are checked.
    let req = Request::builder()
        .uri("/api/v1/events")
        .header("x-api-key", DEVICE)
        .body(Body::empty())
        .unwrap();
    assert_eq!(request(&h, req).await.0, StatusCode::FORBIDDEN);
    let (s, e) = get_json(&h, "/api/v1/events?colour=red").await;
    assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, "invalid_query"));
}

#[tokio::test]
async fn a_result_completed_by_one_replica_reaches_the_clients_of_another() {
    let first = harness().await;
    let second = started_in(first.place.clone()).await;
    let mut client = Client::connect(&second, "/api/v1/events", None).await;
    let ng = completed(&first.state.intake.storage, 1, true).await;
    let (_, _, data) = client
        .next(WAIT)
        .await
        .expect("the other replica's result arrives");
    assert_eq!(data["id"], ng.to_string());
}
