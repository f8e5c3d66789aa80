//! `--remote-fake`: an OpenAI-compatible chat completions server standing in for a remote
//! vision model, so the demo shows NG and uncertain parts enriched without Azure. It answers
//! in 1 to 3 s, agrees with the gate, and describes the gate's first region (parsed from the
//! prompt); it never looks at the image.

use std::time::Duration;

use axum::Json;
use axum::routing::post;
use rand::Rng;
use serde_json::{Value, json};

/// What every fake description starts with.
pub const DESCRIBED_BY: &str = "fake remote model:";

/// Starts the server on a free port; its endpoint (the URL before `/chat/completions`).
pub async fn start() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let endpoint = format!("http://{}/v1", listener.local_addr()?);
    let app = axum::Router::new().route("/v1/chat/completions", post(complete));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(endpoint)
}

async fn complete(Json(request): Json<Value>) -> Json<Value> {
    let wait = Duration::from_millis(rand::rng().random_range(1000..=3000));
    tokio::time::sleep(wait).await;
    let prompt = request["messages"][1]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    let ng = prompt.contains("judged it defective");
    let defects = match first_region(prompt) {
        Some([x, y, width, height]) if ng => vec![json!({
            "type": "other", "severity": "medium", "confidence": 0.7,
            "bbox": {"x": x, "y": y, "width": width, "height": height},
            "description": format!("{DESCRIBED_BY} a mark of {width}x{height} px where the gate saw one")
        })],
        _ => Vec::new(),
    };
    let answer = json!({
        "defect_detected": ng,
        "summary": if ng { "a defect where the gate saw one" } else { "no defect seen" },
        "defects": defects,
    });
    Json(json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": "fake-vision",
        "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": answer.to_string(), "refusal": null}}],
        "usage": {"prompt_tokens": 485, "completion_tokens": 80, "total_tokens": 565}
    }))
}

/// The first `[x N, y N, width N, height N]` of the prompt.
fn first_region(prompt: &str) -> Option<[u32; 4]> {
    let start = prompt.find("[x ")?;
    let inner = &prompt[start + 1..start + prompt[start..].find(']')?];
    let mut values = inner
        .split(", ")
        .filter_map(|part| part.rsplit(' ').next()?.parse().ok());
    Some([
        values.next()?,
        values.next()?,
        values.next()?,
        values.next()?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_region_is_read_from_the_prompt() {
        let prompt = "It marked these regions: [x 357, y 221, width 65, height 26], [x 1, y 2, width 3, height 4].";
        assert_eq!(first_region(prompt), Some([357, 221, 65, 26]));
        assert_eq!(first_region("no regions"), None);
    }
}
