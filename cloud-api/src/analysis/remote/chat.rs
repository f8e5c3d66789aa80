//! The chat completions exchange every remote analyzer speaks: the request (prompt, image as a
//! data URL, a strict JSON schema), the answer (checked defensively), and the retry hints of a
//! refusal to serve.

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use wiko_wire::{Defect, DefectType, VerdictErrorCode};

use super::RemoteError;
use super::views::View;

/// What the model is told about the part.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// What the part is.
    pub description: String,
    /// The types it may name (`other` is added).
    pub taxonomy: Vec<DefectType>,
    /// The gate's verdict, in words.
    pub gate: String,
    /// The gate's regions, in pixels of the frame.
    pub regions: Vec<[u32; 4]>,
}

const SYSTEM: &str = "You inspect photographs of manufactured kitchen knives for visual \
defects. Report only defects you can see. Answer with JSON that follows the given schema; \
boxes are in pixels of the image as given, x and y from its top left corner.";

/// The name of each image in the answer's boxes, in the order they are sent.
const IMAGE_NAMES: [&str; 2] = ["part", "close_up"];

/// An image of the request: what it shows and its JPEG bytes (empty while only planned).
#[derive(Debug, Clone)]
pub struct SentImage {
    pub view: View,
    pub jpeg: Vec<u8>,
}

/// The taxonomy as the schema's enum: the configured types, then `other`.
fn type_names(taxonomy: &[DefectType]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = taxonomy
        .iter()
        .filter(|t| **t != DefectType::Other)
        .map(|t| t.as_str())
        .collect();
    names.push(DefectType::Other.as_str());
    names
}

/// The answer's JSON schema, strict: every field required, nothing else allowed; one defect
/// maps onto one of the result's defects. With a close-up, each box names the image it is in.
pub fn schema(taxonomy: &[DefectType], close_up: bool) -> Value {
    let int = json!({"type": "integer"});
    let mut bbox = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["x", "y", "width", "height"],
        "properties": {"x": int, "y": int, "width": int, "height": int}
    });
    if close_up {
        bbox["required"] = json!(["image", "x", "y", "width", "height"]);
        bbox["properties"]["image"] = json!({"type": "string", "enum": IMAGE_NAMES});
    }
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["defect_detected", "summary", "defects"],
        "properties": {
            "defect_detected": {"type": "boolean"},
            "summary": {"type": "string"},
            "defects": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["type", "severity", "confidence", "bbox", "description"],
                    "properties": {
                        "type": {"type": "string", "enum": type_names(taxonomy)},
                        "severity": {"type": "string", "enum": ["low", "medium", "high"]},
                        "confidence": {"type": "number"},
                        "bbox": bbox,
                        "description": {"type": "string"}
                    }
                }
            }
        }
    })
}

/// The request body: the prompt, then the images (the whole part first), in their order.
/// `model` is left out where the URL names the deployment.
pub fn body(model: Option<&str>, prompt: &Prompt, images: &[SentImage], max_tokens: u32) -> Value {
    let part = images.first().map(|i| i.view);
    let in_part = |r: &[u32; 4]| part.map_or(*r, |v| v.from_frame(*r));
    let regions = if prompt.regions.is_empty() {
        String::new()
    } else {
        let boxes: Vec<String> = prompt.regions.iter().map(|r| boxed(in_part(r))).collect();
        format!(
            " It marked these regions as unlike good parts: {}.",
            boxes.join(", ")
        )
    };
    let size = |v: Option<View>| v.map_or((0, 0), |v| (v.width, v.height));
    let (w, h) = size(part);
    let (images_text, boxes_text) = match images.get(1) {
        None => (format!("The image is {w}x{h} pixels."), "box"),
        Some(close) => {
            let (cw, ch) = size(Some(close.view));
            (
                format!(
                    "The first image is the whole part, {w}x{h} pixels, at low detail; the \
                     second a close-up, {cw}x{ch} pixels, at high detail, of its region {} (in \
                     the first image's pixels).",
                    boxed(in_part(&close.view.within))
                ),
                "box in pixels of the image you see it best in (part: the first, close_up: \
                 the second)",
            )
        }
    };
    let text = format!(
        "The part: {}. Defect types: {}. {images_text} A golden-sample model {}.{} \
         Describe each defect you see (type, severity, confidence 0 to 1, {boxes_text}, one \
         sentence), and whether the part is defective.",
        prompt.description,
        type_names(&prompt.taxonomy).join(", "),
        prompt.gate,
        regions,
    );
    let mut content = vec![json!({"type": "text", "text": text})];
    for image in images {
        let data_url = format!(
            "data:image/jpeg;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(&image.jpeg)
        );
        content.push(json!({"type": "image_url",
            "image_url": {"url": data_url, "detail": image.view.detail.as_str()}}));
    }
    let mut body = json!({
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": content}
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "part_inspection",
                "strict": true,
                "schema": schema(&prompt.taxonomy, images.len() > 1)
            }
        }
    });
    if let (Some(model), Some(map)) = (model, body.as_object_mut()) {
        map.insert("model".into(), Value::from(model));
    }
    body
}

/// A box as the prompt writes it.
fn boxed([x, y, w, h]: [u32; 4]) -> String {
    format!("[x {x}, y {y}, width {w}, height {h}]")
}

/// The input tokens of a request as planned, before any image is encoded: its text (the body
/// without image data, about 4 characters a token, rounded up) and each image's tiles.
pub fn estimate_input_tokens(
    model: Option<&str>,
    prompt: &Prompt,
    views: &[View],
    max_tokens: u32,
) -> u64 {
    let planned: Vec<SentImage> = views
        .iter()
        .map(|&view| SentImage {
            view,
            jpeg: Vec::new(),
        })
        .collect();
    let text = body(model, prompt, &planned, max_tokens).to_string().len();
    text.div_ceil(4) as u64 + views.iter().map(View::tokens).sum::<u64>()
}

#[derive(Debug, Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<TokenUsage>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: Option<Message>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Message {
    content: Option<String>,
    refusal: Option<String>,
}

/// Tokens a call used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct TokenUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

#[derive(Debug, Deserialize)]
struct RawAnswer {
    defect_detected: bool,
    #[serde(default)]
    summary: String,
    defects: Vec<RawDefect>,
}

#[derive(Debug, Deserialize)]
struct RawDefect {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    confidence: f64,
    bbox: RawBox,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
struct RawBox {
    /// Which image the box is in (with a close-up): `part` or `close_up`.
    #[serde(default)]
    image: Option<String>,
    x: i64,
    y: i64,
    width: i64,
    height: i64,
}

/// The model's verdict, boxes in pixels of the frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub defect_detected: bool,
    pub summary: String,
    pub defects: Vec<Defect>,
}

/// A box may overshoot its image by this many pixels (rounding) before it is refused.
const BOX_SLACK: i64 = 2;

/// Reads a 200 answer to a request that sent `views`: the usage (counted even when the answer
/// is unusable) and the verdict or why there is none.
pub fn parse(
    body: &[u8],
    taxonomy: &[DefectType],
    views: &[View],
) -> (TokenUsage, Result<Answer, RemoteError>) {
    let completion: Completion = match serde_json::from_slice(body) {
        Ok(c) => c,
        Err(e) => {
            return (
                TokenUsage::default(),
                Err(RemoteError::Answer(
                    VerdictErrorCode::InvalidAnswer,
                    format!("the response is not a chat completion: {e}"),
                )),
            );
        }
    };
    let usage = completion.usage.unwrap_or_default();
    (usage, answer(completion, taxonomy, views))
}

fn answer(
    completion: Completion,
    taxonomy: &[DefectType],
    views: &[View],
) -> Result<Answer, RemoteError> {
    let fail = |code, message: String| Err(RemoteError::Answer(code, message));
    let Some(choice) = completion.choices.into_iter().next() else {
        return fail(
            VerdictErrorCode::InvalidAnswer,
            "no choice in the response".into(),
        );
    };
    let message = choice.message.unwrap_or(Message {
        content: None,
        refusal: None,
    });
    if let Some(refusal) = message.refusal.filter(|r| !r.is_empty()) {
        return fail(
            VerdictErrorCode::Refused,
            format!("the model refused: {refusal}"),
        );
    }
    match choice.finish_reason.as_deref() {
        Some("length") => {
            return fail(
                VerdictErrorCode::Truncated,
                "the answer was cut at max_tokens (finish_reason length)".into(),
            );
        }
        Some("content_filter") => {
            return fail(
                VerdictErrorCode::ContentFilter,
                "the content filter withheld the answer".into(),
            );
        }
        _ => {}
    }
    let Some(content) = message.content else {
        return fail(
            VerdictErrorCode::InvalidAnswer,
            "the answer is empty".into(),
        );
    };
    let raw: RawAnswer = serde_json::from_str(content.trim()).map_err(|e| {
        RemoteError::Answer(
            VerdictErrorCode::InvalidAnswer,
            format!("the answer is not the JSON asked for: {e}"),
        )
    })?;
    let mut defects = Vec::with_capacity(raw.defects.len());
    for d in raw.defects {
        let b = &d.bbox;
        let named = b.image.as_deref().unwrap_or(IMAGE_NAMES[0]);
        let Some(view) = IMAGE_NAMES
            .iter()
            .position(|n| *n == named)
            .and_then(|i| views.get(i))
        else {
            return fail(
                VerdictErrorCode::InvalidAnswer,
                format!("a box names an image that was not sent: {named:?}"),
            );
        };
        let inside = b.x >= 0
            && b.y >= 0
            && b.width >= 0
            && b.height >= 0
            && b.x.saturating_add(b.width) <= i64::from(view.width) + BOX_SLACK
            && b.y.saturating_add(b.height) <= i64::from(view.height) + BOX_SLACK;
        if !inside {
            return fail(
                VerdictErrorCode::InvalidAnswer,
                format!(
                    "a box lies outside the {}x{} image {named}: x {}, y {}, width {}, height {}",
                    view.width, view.height, b.x, b.y, b.width, b.height
                ),
            );
        }
        // Inside the image: each value fits in u32.
        let int = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        let kind = DefectType::parse(&d.kind)
            .filter(|t| taxonomy.is_empty() || taxonomy.contains(t))
            .unwrap_or(DefectType::Other);
        let severity = match d.severity.as_str() {
            s @ ("low" | "medium" | "high") => s.to_string(),
            _ => "medium".to_string(),
        };
        defects.push(Defect {
            kind,
            severity,
            confidence: if d.confidence.is_finite() {
                d.confidence.clamp(0.0, 1.0) as f32
            } else {
                0.0
            },
            bbox: view.to_frame([int(b.x), int(b.y), int(b.width), int(b.height)]),
            description: d.description,
        });
    }
    Ok(Answer {
        defect_detected: raw.defect_detected || !defects.is_empty(),
        summary: raw.summary,
        defects,
    })
}

/// Azure's (and OpenAI's) error body: `{"error": {"code", "message"}}`.
pub fn error_message(body: &[u8]) -> (Option<String>, String) {
    #[derive(Deserialize)]
    struct Body {
        error: ErrorDetail,
    }
    #[derive(Deserialize)]
    struct ErrorDetail {
        code: Option<Value>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(Body { error }) => (
            error.code.map(|c| match c {
                Value::String(s) => s,
                other => other.to_string(),
            }),
            error.message.unwrap_or_default(),
        ),
        Err(_) => (
            None,
            String::from_utf8_lossy(body).chars().take(200).collect(),
        ),
    }
}

/// The longest wait a service's hint is taken for: a longer one (or a nonsensical one) is
/// read as this, so that no clock arithmetic on it can overflow.
pub const MAX_RETRY_HINT: Duration = Duration::from_secs(3600);

/// How long a 429 or 503 asks the client to wait: `retry-after-ms`, `Retry-After` (seconds or
/// an HTTP date), or the longer of `x-ratelimit-reset-requests` / `-tokens`; at most
/// [`MAX_RETRY_HINT`].
pub fn retry_after(headers: &reqwest::header::HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    asked_wait(headers, now).map(|d| d.min(MAX_RETRY_HINT))
}

/// Seconds as a duration, [`MAX_RETRY_HINT`] past it; `None` for a negative or not finite one.
fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| {
        Duration::try_from_secs_f64(secs)
            .unwrap_or(MAX_RETRY_HINT)
            .min(MAX_RETRY_HINT)
    })
}

fn asked_wait(headers: &reqwest::header::HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(wait) = text("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| seconds(ms / 1000.0))
    {
        return Some(wait);
    }
    if let Some(v) = text("retry-after") {
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = DateTime::parse_from_rfc2822(v) {
            return Some((at.with_timezone(&Utc) - now).to_std().unwrap_or_default());
        }
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .into_iter()
        .filter_map(|name| text(name).and_then(reset_duration))
        .max()
}

/// `x-ratelimit-reset-*`: seconds (`"20"`, `"0.5"`), or a duration like `"1s"`, `"6m0s"`,
/// `"250ms"`.
fn reset_duration(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.parse::<f64>() {
        return seconds(secs);
    }
    let mut total = 0.0;
    let mut rest = v;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    seconds(total)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::analysis::remote::config::Detail;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn completion(content: &str, finish: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "choices": [{"index": 0, "finish_reason": finish,
                "message": {"role": "assistant", "content": content, "refusal": null}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160}
        }))
        .unwrap()
    }

    fn prompt() -> Prompt {
        Prompt {
            description: "a knife".into(),
            taxonomy: vec![DefectType::Rust],
            gate: "judged it defective".into(),
            regions: vec![[2, 4, 6, 8]],
        }
    }

    #[test]
    fn the_estimate_counts_the_text_and_the_tiles_not_the_image_data() {
        let view = View::whole((640, 480), 1024, Detail::High);
        let estimate = estimate_input_tokens(Some("m"), &prompt(), &[view], 100);
        let image = SentImage {
            view,
            jpeg: vec![0; 30_000],
        };
        let sent = body(Some("m"), &prompt(), &[image], 100).to_string().len();
        let text = sent - 40_000;
        assert_eq!(estimate, text.div_ceil(4) as u64 + 425);
        assert!((300..700).contains(&(estimate - 425)), "{estimate}");
    }

    #[test]
    fn the_schema_is_strict_all_the_way_down() {
        for close_up in [false, true] {
            let s = schema(&[DefectType::Scratch, DefectType::Rust], close_up);
            assert_eq!(s["additionalProperties"], false);
            let item = &s["properties"]["defects"]["items"];
            assert_eq!(item["additionalProperties"], false);
            assert_eq!(item["properties"]["bbox"]["additionalProperties"], false);
            assert_eq!(
                item["properties"]["type"]["enum"],
                json!(["scratch", "rust", "other"])
            );
            for object in [&s, item, &item["properties"]["bbox"]] {
                let props: Vec<&String> =
                    object["properties"].as_object().unwrap().keys().collect();
                let required: Vec<&str> = object["required"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                assert_eq!(props.len(), required.len());
                assert!(props.iter().all(|p| required.contains(&p.as_str())));
            }
            assert_eq!(
                item["properties"]["bbox"]["properties"]
                    .get("image")
                    .is_some(),
                close_up
            );
        }
    }

    #[test]
    fn boxes_are_scaled_to_the_original_and_unknown_types_become_other() {
        let content = r#"{"defect_detected": true, "summary": "a scratch",
            "defects": [{"type": "scratch", "severity": "high", "confidence": 1.5,
                "bbox": {"x": 10, "y": 20, "width": 30, "height": 40}, "description": "long"},
              {"type": "dragon_bite", "severity": "huge", "confidence": 0.5,
                "bbox": {"x": 0, "y": 0, "width": 5, "height": 5}, "description": "?"}]}"#;
        let (usage, answer) = parse(
            &completion(content, "stop"),
            &[DefectType::Scratch],
            &[View::whole((640, 480), 320, Detail::High)],
        );
        assert_eq!(usage.prompt_tokens, 120);
        let answer = answer.unwrap();
        assert_eq!(answer.defects[0].bbox, [20, 40, 60, 80]);
        assert_eq!(answer.defects[0].confidence, 1.0);
        assert_eq!(answer.defects[1].kind, DefectType::Other);
        assert_eq!(answer.defects[1].severity, "medium");
    }

    #[test]
    fn a_box_in_the_close_up_comes_back_in_the_frames_pixels() {
        let views = [
            View::whole((1920, 1080), 1024, Detail::Low),
            View::close_up([900, 500, 20, 20], (1920, 1080), 512),
        ];
        // The close-up shows [782, 382, 256, 256] of the frame at full resolution.
        let content = r#"{"defect_detected": true, "summary": "a pit",
            "defects": [{"type": "pit", "severity": "low", "confidence": 0.9,
                "bbox": {"image": "close_up", "x": 118, "y": 118, "width": 20, "height": 20},
                "description": "a pit"},
              {"type": "stain", "severity": "low", "confidence": 0.5,
                "bbox": {"image": "part", "x": 256, "y": 144, "width": 10, "height": 10},
                "description": "a stain"}]}"#;
        let answer = parse(&completion(content, "stop"), &[], &views).1.unwrap();
        assert_eq!(answer.defects[0].bbox, [900, 500, 20, 20]);
        assert_eq!(answer.defects[1].bbox, [960, 540, 38, 38]);
        // A close-up box outside the close-up, or a close-up that was not sent, is refused.
        let outside = content.replace("\"x\": 118", "\"x\": 250");
        assert!(parse(&completion(&outside, "stop"), &[], &views).1.is_err());
        assert!(
            parse(&completion(content, "stop"), &[], &views[..1])
                .1
                .is_err()
        );
    }

    #[test]
    fn the_prompt_names_each_image_and_the_regions_in_the_first_ones_pixels() {
        let views = [
            View::whole((1920, 1080), 1024, Detail::Low),
            View::close_up([900, 500, 20, 20], (1920, 1080), 512),
        ];
        let images: Vec<SentImage> = views
            .iter()
            .map(|&view| SentImage {
                view,
                jpeg: vec![1],
            })
            .collect();
        let mut p = prompt();
        p.regions = vec![[900, 500, 20, 20]];
        let body = body(None, &p, &images, 100);
        let content = &body["messages"][1]["content"];
        let text = content[0]["text"].as_str().unwrap();
        assert!(text.contains("[x 240, y 133, width 5, height 5]"), "{text}");
        assert!(text.contains("a close-up, 256x256 pixels"), "{text}");
        assert_eq!(content[1]["image_url"]["detail"], "low");
        assert_eq!(content[2]["image_url"]["detail"], "high");
    }

    #[test]
    fn each_unusable_answer_says_why() {
        let views = [View::whole((100, 100), 100, Detail::High)];
        let code = |body: Vec<u8>| match parse(&body, &[], &views).1 {
            Err(RemoteError::Answer(code, _)) => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code(completion("{", "stop")),
            VerdictErrorCode::InvalidAnswer
        );
        assert_eq!(
            code(completion("{}", "length")),
            VerdictErrorCode::Truncated
        );
        assert_eq!(
            code(completion("", "content_filter")),
            VerdictErrorCode::ContentFilter
        );
        let outside = r#"{"defect_detected": true, "summary": "",
            "defects": [{"type": "chip", "severity": "low", "confidence": 0.5,
              "bbox": {"x": 90, "y": 0, "width": 50, "height": 5}, "description": ""}]}"#;
        assert_eq!(
            code(completion(outside, "stop")),
            VerdictErrorCode::InvalidAnswer
        );
        let refusal = serde_json::to_vec(&json!({"choices": [{"finish_reason": "stop",
            "message": {"content": null, "refusal": "I can't help with that."}}]}))
        .unwrap();
        assert_eq!(code(refusal), VerdictErrorCode::Refused);
        assert_eq!(code(b"<html>".to_vec()), VerdictErrorCode::InvalidAnswer);
    }

    #[test]
    fn every_retry_hint_form_is_read() {
        let now = Utc::now();
        let with = |name: &'static str, value: &str| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_str(value).unwrap());
            retry_after(&h, now)
        };
        assert_eq!(
            with("retry-after-ms", "250"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(with("retry-after", "7"), Some(Duration::from_secs(7)));
        let date = (now + chrono::Duration::seconds(30))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let d = with("retry-after", &date).unwrap();
        assert!(
            d > Duration::from_secs(28) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(
            with("x-ratelimit-reset-requests", "1m30s"),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            with("x-ratelimit-reset-tokens", "250ms"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(with("retry-after", "soon"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn a_hint_of_any_size_is_at_most_an_hour_and_never_overflows() {
        let now = Utc::now();
        let with = |name: &'static str, value: &str| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_str(value).unwrap());
            retry_after(&h, now)
        };
        for (name, value) in [
            ("retry-after", "18446744073709551615"),
            ("retry-after", "10000000000000"),
            ("retry-after-ms", "1e300"),
            ("x-ratelimit-reset-tokens", "1e300"),
            ("x-ratelimit-reset-requests", "99999999999999999999h"),
        ] {
            assert_eq!(with(name, value), Some(MAX_RETRY_HINT), "{name}: {value}");
        }
        assert_eq!(with("retry-after-ms", "-5"), None);
        assert_eq!(with("retry-after-ms", "NaN"), None);
    }
}
