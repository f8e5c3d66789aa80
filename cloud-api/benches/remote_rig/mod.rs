//! What the remote benches share (`remote.rs`, `remote_tokens.rs`), besides `cloud_rig`: a fake
//! OpenAI-compatible model and the cloud's `[remote]` table sending parts to it.

use std::future::Future;

use axum::Json;
use axum::routing::post;
use serde_json::{Value, json};

/// What the fake model answers to one request: the answer's JSON (the message's content) and
/// the tokens it reports as used (prompt, completion).
pub struct Reply {
    pub answer: Value,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// An OpenAI-compatible chat completions server on a free port answering each request (its
/// JSON body) with what `reply` makes of it; its endpoint (the URL before
/// `/chat/completions`).
pub async fn fake_remote<F, Fut>(reply: F) -> String
where
    F: Fn(Value) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}/v1", listener.local_addr().expect("address"));
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |Json(request): Json<Value>| {
            let reply = reply.clone();
            async move {
                let r = reply(request).await;
                Json(json!({
                    "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": r.answer.to_string(), "refusal": null}}],
                    "usage": {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                        "total_tokens": r.prompt_tokens + r.completion_tokens}
                }))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    endpoint
}

/// The cloud's `[remote]` table sending parts to the fake model at `endpoint`, with `keys`
/// added.
pub fn remote_table(endpoint: &str, keys: &str) -> String {
    format!(
        "[remote]\nkind = \"openai_compatible\"\nendpoint = \"{endpoint}\"\nmodel = \"fake\"\n{keys}"
    )
}
