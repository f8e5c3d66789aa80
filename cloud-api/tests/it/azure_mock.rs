//! A local server that speaks Azure OpenAI's protocol (and Azure AI Foundry's and plain
//! OpenAI-compatible servers'): the v1 path, the deployments path with `api-version`, the model
//! inference path, the `api-key` header or a bearer token, chat completions answers with
//! `usage`, error bodies `{"error": {"code", "message"}}`, 429 with retry hints. Scripted per
//! request; it records what it receives. Azure itself is simulated by this server.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Tokens every answer reports.
pub const INPUT_TOKENS: u64 = 1000;
pub const OUTPUT_TOKENS: u64 = 100;

/// What the server answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A chat completion with this content and finish reason.
    Answer {
        content: String,
        finish: &'static str,
    },
    /// The model refuses.
    Refusal,
    /// An error status with headers and Azure's error body.
    Error {
        status: u16,
        headers: Vec<(&'static str, String)>,
        code: &'static str,
    },
    /// Waits, then answers well.
    Slow(Duration),
}

impl Reply {
    pub fn good() -> Reply {
        Reply::Answer {
            content: good_answer().to_string(),
            finish: "stop",
        }
    }

    pub fn status(status: u16, code: &'static str) -> Reply {
        Reply::Error {
            status,
            headers: Vec::new(),
            code,
        }
    }

    pub fn too_many(header: &'static str, value: &str) -> Reply {
        Reply::Error {
            status: 429,
            headers: vec![(header, value.to_string())],
            code: "429",
        }
    }
}

/// A well-formed answer: one rust spot, inside any image of 64×64 pixels or more.
pub fn good_answer() -> Value {
    json!({
        "defect_detected": true,
        "summary": "rust on the blade",
        "defects": [{
            "type": "rust", "severity": "medium", "confidence": 0.8,
            "bbox": {"x": 10, "y": 10, "width": 30, "height": 20},
            "description": "an orange-brown rust spot on the blade"
        }]
    })
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub query: Option<String>,
    pub api_key: Option<String>,
    pub authorization: Option<String>,
    pub body: Value,
    pub at: Instant,
    /// When it arrived, by the wall clock (the deployment budget's windows are in it).
    pub wall: chrono::DateTime<chrono::Utc>,
}

struct Script {
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
    /// The key (or bearer token) the server accepts.
    key: String,
}

pub struct Mock {
    pub url: String,
    script: Arc<Script>,
}

impl Mock {
    /// Starts the server on 127.0.0.1:0; it accepts `key` as `api-key` or bearer token.
    pub async fn start(key: &str) -> Mock {
        let script = Arc::new(Script {
            replies: Mutex::new(VecDeque::new()),
            seen: Mutex::new(Vec::new()),
            key: key.to_string(),
        });
        let app = Router::new().fallback(handle).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Mock { url, script }
    }

    /// Queues replies for the next requests (then every request is answered well).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.replies.lock().unwrap().extend(replies);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().unwrap().clone()
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn handle(
    State(script): State<Arc<Script>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().map(str::to_string);
    let has_version = query.as_deref().is_some_and(|q| q.contains("api-version="));
    let known = path == "/openai/v1/chat/completions"
        || path == "/v1/chat/completions"
        || (path.starts_with("/openai/deployments/")
            && path.ends_with("/chat/completions")
            && has_version)
        || (path == "/models/chat/completions" && has_version);
    if !known {
        return error(StatusCode::NOT_FOUND, "404", "Resource not found");
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (api_key, authorization) = (header("api-key"), header("authorization"));
    let authorised = api_key.as_deref() == Some(script.key.as_str())
        || authorization.as_deref() == Some(format!("Bearer {}", script.key).as_str());
    if !authorised {
        return error(
            StatusCode::UNAUTHORIZED,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint.",
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "not JSON");
    };
    script.seen.lock().unwrap().push(Seen {
        path,
        query,
        api_key,
        authorization,
        body,
        at: Instant::now(),
        wall: chrono::Utc::now(),
    });
    let reply = script
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(Reply::good);
    match reply {
        Reply::Answer { content, finish } => completion(Some(content), None, finish),
        Reply::Refusal => completion(None, Some("I'm sorry, I can't help with that."), "stop"),
        Reply::Slow(wait) => {
            tokio::time::sleep(wait).await;
            completion(Some(good_answer().to_string()), None, "stop")
        }
        Reply::Error {
            status,
            headers,
            code,
        } => {
            let mut response = error(
                StatusCode::from_u16(status).unwrap(),
                code,
                "scripted failure",
            );
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
    }
}

fn completion(content: Option<String>, refusal: Option<&str>, finish: &str) -> Response {
    axum::Json(json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_765_000_000,
        "model": "gpt-4o-2024-08-06",
        "choices": [{
            "index": 0,
            "finish_reason": finish,
            "message": {"role": "assistant", "content": content, "refusal": refusal}
        }],
        "usage": {
            "prompt_tokens": INPUT_TOKENS,
            "completion_tokens": OUTPUT_TOKENS,
            "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS
        }
    }))
    .into_response()
}
