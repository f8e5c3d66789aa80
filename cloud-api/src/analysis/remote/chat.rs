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
use super::config::Detail;

/// What the model is told about the part.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// What the part is.
    pub description: String,
    /// The types it may name (`other` is added).
    pub taxonomy: Vec<DefectType>,
    /// The gate's verdict, in words.
    pub gate: String,
    /// The gate's regions, in pixels of the image as sent.
    pub regions: Vec<[u32; 4]>,
}

const SYSTEM: &str = "You inspect photographs of manufactured kitchen knives for visual \
defects. Report only defects you can see. Answer with JSON that follows the given schema; \
boxes are in pixels of the image as given, x and y from its top left corner.";

/// The image as sent: JPEG bytes and their size.
#[derive(Debug, Clone)]
pub struct SentImage {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Decodes `bytes`, scales it so its longer side is at most `max_side`, and encodes it as
/// JPEG (CPU work: run it on the blocking pool).
pub fn reencode(bytes: &[u8], max_side: u32) -> Result<SentImage, RemoteError> {
    let unusable = |e: image::ImageError| RemoteError::Image(e.to_string());
    let mut img = image::load_from_memory(bytes).map_err(unusable)?;
    let longest = img.width().max(img.height());
    if longest > max_side {
        let scale = f64::from(max_side) / f64::from(longest);
        let w = ((f64::from(img.width()) * scale).round() as u32).max(1);
        let h = ((f64::from(img.height()) * scale).round() as u32).max(1);
        img = img.resize_exact(w, h, image::imageops::FilterType::Triangle);
    }
    let rgb = img.to_rgb8();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
        .encode_image(&rgb)
        .map_err(unusable)?;
    Ok(SentImage {
        jpeg,
        width: rgb.width(),
        height: rgb.height(),
    })
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
/// maps onto one of the result's defects.
pub fn schema(taxonomy: &[DefectType]) -> Value {
    let int = json!({"type": "integer"});
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
                        "bbox": {
                            "type": "object",
                            "additionalProperties": false,
                            "required": ["x", "y", "width", "height"],
                            "properties": {"x": int, "y": int, "width": int, "height": int}
                        },
                        "description": {"type": "string"}
                    }
                }
            }
        }
    })
}

/// The request body. `model` is left out where the URL names the deployment.
pub fn body(
    model: Option<&str>,
    prompt: &Prompt,
    image: &SentImage,
    detail: Detail,
    max_tokens: u32,
) -> Value {
    let regions = if prompt.regions.is_empty() {
        String::new()
    } else {
        let boxes: Vec<String> = prompt
            .regions
            .iter()
            .map(|[x, y, w, h]| format!("[x {x}, y {y}, width {w}, height {h}]"))
            .collect();
        format!(
            " It marked these regions as unlike good parts: {}.",
            boxes.join(", ")
        )
    };
    let text = format!(
        "The part: {}. Defect types: {}. The image is {}x{} pixels. A golden-sample model {}.{} \
         Describe each defect you see (type, severity, confidence 0 to 1, box, one sentence), \
         and whether the part is defective.",
        prompt.description,
        type_names(&prompt.taxonomy).join(", "),
        image.width,
        image.height,
        prompt.gate,
        regions,
    );
    let data_url = format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&image.jpeg)
    );
    let mut body = json!({
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": data_url, "detail": detail.as_str()}}
            ]}
        ],
        "max_tokens": max_tokens,
        "temperature": 0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "part_inspection",
                "strict": true,
                "schema": schema(&prompt.taxonomy)
            }
        }
    });
    if let (Some(model), Some(map)) = (model, body.as_object_mut()) {
        map.insert("model".into(), Value::from(model));
    }
    body
}

/// Tokens an image costs gpt-4o-class models: 85 at low detail; at high (and `auto`, counted
/// as high) 85 plus 170 per 512-px tile of the image fitted into 2048×2048, its short side
/// then scaled down to 768.
pub fn image_tokens(width: u32, height: u32, detail: Detail) -> u64 {
    if detail == Detail::Low {
        return 85;
    }
    let (mut w, mut h) = (f64::from(width.max(1)), f64::from(height.max(1)));
    let fit = (2048.0 / w.max(h)).min(1.0);
    (w, h) = (w * fit, h * fit);
    let short = (768.0 / w.min(h)).min(1.0);
    (w, h) = (w * short, h * short);
    let tiles = (w / 512.0).ceil() * (h / 512.0).ceil();
    85 + 170 * tiles as u64
}

/// The input tokens of a request, estimated before it is sent: its text (everything but the
/// image's data, about 4 characters a token, rounded up) and the image's tiles.
pub fn estimate_input_tokens(body: &Value, image: &SentImage, detail: Detail) -> u64 {
    let data = image.jpeg.len().div_ceil(3) * 4;
    let text = body.to_string().len().saturating_sub(data);
    text.div_ceil(4) as u64 + image_tokens(image.width, image.height, detail)
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
    x: i64,
    y: i64,
    width: i64,
    height: i64,
}

/// The model's verdict, boxes in pixels of the original image.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub defect_detected: bool,
    pub summary: String,
    pub defects: Vec<Defect>,
}

/// A box may overshoot the image by this many pixels (rounding) before it is refused.
const BOX_SLACK: i64 = 2;

/// Reads a 200 answer: the usage (counted even when the answer is unusable) and the verdict
/// or why there is none.
pub fn parse(
    body: &[u8],
    taxonomy: &[DefectType],
    sent: (u32, u32),
    original: (u32, u32),
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
    (usage, answer(completion, taxonomy, sent, original))
}

fn answer(
    completion: Completion,
    taxonomy: &[DefectType],
    (sent_w, sent_h): (u32, u32),
    (orig_w, orig_h): (u32, u32),
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
    let sx = f64::from(orig_w) / f64::from(sent_w.max(1));
    let sy = f64::from(orig_h) / f64::from(sent_h.max(1));
    let mut defects = Vec::with_capacity(raw.defects.len());
    for d in raw.defects {
        let b = &d.bbox;
        let inside = b.x >= 0
            && b.y >= 0
            && b.width >= 0
            && b.height >= 0
            && b.x.saturating_add(b.width) <= i64::from(sent_w) + BOX_SLACK
            && b.y.saturating_add(b.height) <= i64::from(sent_h) + BOX_SLACK;
        if !inside {
            return fail(
                VerdictErrorCode::InvalidAnswer,
                format!(
                    "a box lies outside the {sent_w}x{sent_h} image: x {}, y {}, width {}, height {}",
                    b.x, b.y, b.width, b.height
                ),
            );
        }
        let scale = |v: i64, s: f64, limit: u32| ((v as f64 * s).round() as u32).min(limit);
        let x = scale(b.x, sx, orig_w);
        let y = scale(b.y, sy, orig_h);
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
            bbox: [
                x,
                y,
                scale(b.width, sx, orig_w - x),
                scale(b.height, sy, orig_h - y),
            ],
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
    use reqwest::header::{HeaderMap, HeaderValue};

    fn completion(content: &str, finish: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "choices": [{"index": 0, "finish_reason": finish,
                "message": {"role": "assistant", "content": content, "refusal": null}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160}
        }))
        .unwrap()
    }

    #[test]
    fn image_tokens_follow_the_tile_formula() {
        assert_eq!(image_tokens(1920, 1080, Detail::Low), 85);
        assert_eq!(image_tokens(640, 480, Detail::High), 85 + 170 * 2);
        assert_eq!(image_tokens(1024, 576, Detail::High), 85 + 170 * 4);
        assert_eq!(image_tokens(1920, 1080, Detail::Auto), 85 + 170 * 6);
    }

    #[test]
    fn the_estimate_counts_the_text_and_the_tiles_not_the_image_data() {
        let image = SentImage {
            jpeg: vec![0; 30_000],
            width: 640,
            height: 480,
        };
        let prompt = Prompt {
            description: "a knife".into(),
            taxonomy: vec![DefectType::Rust],
            gate: "judged it defective".into(),
            regions: vec![[1, 2, 3, 4]],
        };
        let body = body(Some("m"), &prompt, &image, Detail::High, 100);
        let estimate = estimate_input_tokens(&body, &image, Detail::High);
        let text = body.to_string().len() - 40_000;
        assert_eq!(estimate, text.div_ceil(4) as u64 + 425);
        assert!((300..700).contains(&(estimate - 425)), "{estimate}");
    }

    #[test]
    fn the_schema_is_strict_all_the_way_down() {
        let s = schema(&[DefectType::Scratch, DefectType::Rust]);
        assert_eq!(s["additionalProperties"], false);
        let item = &s["properties"]["defects"]["items"];
        assert_eq!(item["additionalProperties"], false);
        assert_eq!(item["properties"]["bbox"]["additionalProperties"], false);
        assert_eq!(
            item["properties"]["type"]["enum"],
            json!(["scratch", "rust", "other"])
        );
        for object in [&s, item, &item["properties"]["bbox"]] {
            let props: Vec<&String> = object["properties"].as_object().unwrap().keys().collect();
            let required: Vec<&str> = object["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(props.len(), required.len());
            assert!(props.iter().all(|p| required.contains(&p.as_str())));
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
            (320, 240),
            (640, 480),
        );
        assert_eq!(usage.prompt_tokens, 120);
        let answer = answer.unwrap();
        assert_eq!(answer.defects[0].bbox, [20, 40, 60, 80]);
        assert_eq!(answer.defects[0].confidence, 1.0);
        assert_eq!(answer.defects[1].kind, DefectType::Other);
        assert_eq!(answer.defects[1].severity, "medium");
    }

    #[test]
    fn each_unusable_answer_says_why() {
        let code = |body: Vec<u8>| match parse(&body, &[], (100, 100), (100, 100)).1 {
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
