//! The remote analyzers against a local server speaking Azure's protocol (`azure_mock.rs`):
//! the cascade end to end through the API (only NG and uncertain parts sent, enriched under the
//! same id, one final result each, cost and budget), each service's paths and keys, each
//! failure mode, the retry hints and the rate limit.

use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine;
use serde_json::Value;
use wiko_cloud::analysis::remote::{Deferred, Remote};
use wiko_synth::SynthDefect;
use wiko_wire::{AnalysisStatus, Verdict, VerdictErrorCode};

use crate::azure_mock::{INPUT_TOKENS, Mock, OUTPUT_TOKENS, Reply, good_answer};
use crate::harness::*;
use crate::remote_rig::*;

/// Asks the remote analyzer about a rusty knife, as the cascade would; an answer, not put off.
async fn ask(remote: &Remote) -> Verdict {
    try_ask(remote).await.unwrap()
}

async fn try_ask(remote: &Remote) -> Result<Verdict, Deferred> {
    remote.judge(&ng_part(&rusty_knife())).await
}

#[tokio::test]
async fn the_cascade_sends_ng_parts_only_and_enriches_them_under_the_same_id() {
    let mock = Mock::start(KEY).await;
    let h = harness_with(&remote_table(
        &mock,
        "azure_openai",
        "uncertain_band = 0.0\ndaily_budget_usd = 0.005\nbreaker_failures = 2\nbreaker_open_secs = 2\n\
         [[remote.skus]]\nsku = \"WK-KN-200\"\ndescription = \"a 200 mm chef's knife\"\n\
         taxonomy = [\"rust\", \"scratch\", \"chip\"]\n",
    ))
    .await;
    calibrate(&h).await;
    let workers = h.state.remote_workers().unwrap();

    let (_, good) = analyze(&h, part_jpeg(None, 90_001)).await;
    assert_eq!(
        (&good["status"], &good["defect_detected"]),
        (&"final".into(), &false.into()),
        "{good}"
    );
    assert_eq!(good["verdicts"].as_array().unwrap().len(), 1);
    assert_eq!(good["verdicts"][0]["source"], "cloud");

    let ng_image = part_jpeg(Some(SynthDefect::Rust), 90_002);
    let (_, bad) = analyze(&h, ng_image.clone()).await;
    assert_eq!(
        (&bad["status"], &bad["defect_detected"]),
        (&"provisional".into(), &true.into()),
        "{bad}"
    );
    assert!(workers.work_once().await);
    assert!(!workers.work_once().await, "the good part was not sent");

    // The request, as Azure OpenAI's v1 API takes it.
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.path, "/openai/v1/chat/completions");
    assert_eq!(r.api_key.as_deref(), Some(KEY));
    assert_eq!(r.body["model"], "gpt4o-prod");
    let format = &r.body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["strict"], true);
    assert_eq!(
        format["json_schema"]["schema"]["additionalProperties"],
        false
    );
    assert_eq!(
        format["json_schema"]["schema"]["properties"]["defects"]["items"]["properties"]["type"]["enum"],
        serde_json::json!(["rust", "scratch", "chip", "other"])
    );
    let content = &r.body["messages"][1]["content"];
    assert!(
        content[0]["text"]
            .as_str()
            .unwrap()
            .contains("a 200 mm chef's knife")
    );
    assert_eq!(content[1]["image_url"]["detail"], "low");
    let (w, h_) = sent_size(&content[1]);
    assert_eq!(w.max(h_), 512, "re-encoded to max_side_px");

    // The same result, now final: the gate's verdict stands, the remote one is added.
    let done = result(&h, &bad["id"]).await;
    assert_eq!(
        (&done["status"], &done["defect_detected"]),
        (&"final".into(), &true.into()),
        "{done}"
    );
    assert_eq!(done["disagreement"], false);
    let v = &done["verdicts"][1];
    assert_eq!(
        (&v["source"], &v["analyzer"], &v["model"]),
        (
            &"remote".into(),
            &"azure_openai".into(),
            &"gpt4o-prod".into()
        )
    );
    assert_eq!(v["error"], Value::Null);
    assert_eq!(
        v["defects"][0]["description"],
        "an orange-brown rust spot on the blade"
    );
    assert_eq!(v["usage"]["input_tokens"], INPUT_TOKENS);
    assert!((v["usage"]["cost_usd"].as_f64().unwrap() - CALL_USD).abs() < 1e-9);

    // The service fails: the part still gets its one final result, with the error on the
    // remote verdict.
    mock.script([
        Reply::status(500, "InternalServerError"),
        Reply::status(503, "ServiceUnavailable"),
    ]);
    let (_, failing) = analyze(&h, ng_image.clone()).await;
    assert!(workers.work_once().await);
    let failed = result(&h, &failing["id"]).await;
    assert_eq!(failed["status"], "final");
    assert_eq!(failed["defect_detected"], true, "the gate's verdict stands");
    assert_eq!(
        failed["verdicts"][1]["error"]["code"], "unavailable",
        "{failed}"
    );
    assert_eq!(mock.seen().len(), 3, "two attempts");

    // A second failure in a row opens the circuit (breaker_failures = 2): the next part waits,
    // provisional, and no call is made.
    mock.script([
        Reply::status(500, "InternalServerError"),
        Reply::status(500, "InternalServerError"),
    ]);
    let (_, failing_again) = analyze(&h, ng_image.clone()).await;
    assert!(workers.work_once().await);
    assert_eq!(
        result(&h, &failing_again["id"]).await["verdicts"][1]["error"]["code"],
        "unavailable"
    );
    let (_, waiting) = analyze(&h, ng_image.clone()).await;
    assert!(!workers.work_once().await, "the circuit is open");
    assert_eq!(result(&h, &waiting["id"]).await["status"], "provisional");
    assert_eq!(mock.seen().len(), 5);
    tokio::time::sleep(Duration::from_millis(2100)).await; // breaker_open_secs = 2
    assert!(workers.work_once().await);
    assert_eq!(
        result(&h, &waiting["id"]).await["verdicts"][1]["error"],
        Value::Null,
        "enriched once closed"
    );

    // The daily budget (0.005 USD) is spent by two paid calls, then stops the calls.
    let (_, over) = analyze(&h, ng_image).await;
    assert!(workers.work_once().await);
    let over = result(&h, &over["id"]).await;
    assert_eq!(
        (&over["status"], &over["verdicts"][1]["error"]["code"]),
        (&"final".into(), &"budget_exhausted".into()),
        "{over}"
    );
    assert_eq!(mock.seen().len(), 6, "no call once the budget is spent");

    // Cost per day, facility and SKU.
    let (status, costs) = get_json(&h, "/api/v1/costs").await;
    assert_eq!(status, StatusCode::OK, "{costs}");
    let row = &costs["rows"][0];
    assert_eq!(
        (&row["analyzer"], &row["facility"], &row["product_sku"]),
        (
            &"azure_openai".into(),
            &"yangjiang".into(),
            &"WK-KN-200".into()
        )
    );
    assert_eq!((&row["parts"], &row["failures"]), (&5.into(), &3.into()));
    assert!(
        (costs["total_cost_usd"].as_f64().unwrap() - 2.0 * CALL_USD).abs() < 1e-9,
        "{costs}"
    );
    let (status, _) = get_json(&h, "/api/v1/costs?since=2026-13-01").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Every NG part: a provisional result event, then its final update; the good part one.
    assert_eq!(
        result_events(&h, &good["id"]).await,
        [AnalysisStatus::Final]
    );
    for id in [&bad["id"], &failing["id"]] {
        assert_eq!(
            result_events(&h, id).await,
            [AnalysisStatus::Provisional, AnalysisStatus::Final]
        );
    }

    // The key is never in a result, a listing or the costs.
    let (_, listing) = get_json(&h, "/api/v1/analyses").await;
    for body in [listing, costs, failed, over] {
        assert!(!body.to_string().contains(KEY));
    }
}

/// The size of a request's image (a `content` item with a JPEG data URL).
fn sent_size(item: &Value) -> (u32, u32) {
    let url = item["image_url"]["url"].as_str().unwrap();
    let b64 = url
        .strip_prefix("data:image/jpeg;base64,")
        .expect("a JPEG data URL");
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let image = image::load_from_memory(&jpeg).unwrap();
    (image.width(), image.height())
}

#[tokio::test]
async fn with_regions_a_close_up_goes_at_high_detail_and_its_boxes_come_back_in_the_frame() {
    let mock = Mock::start(KEY).await;
    let h = harness_with(&remote_table(
        &mock,
        "azure_openai",
        "image = \"regions\"\n",
    ))
    .await;
    calibrate(&h).await;
    let (_, bad) = analyze(&h, part_jpeg(Some(SynthDefect::Rust), 90_002)).await;
    assert_eq!(bad["status"], "provisional", "{bad}");
    let region: Vec<u32> = bad["defects"][0]["bbox"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let [x, y, w, h_] = [region[0], region[1], region[2], region[3]];
    assert!(w <= 85 && h_ <= 85, "a small region: {region:?}");
    // Its close-up: 256 px around the region's centre, inside the 640 × 480 frame, at the
    // camera's resolution.
    let start = |centre: u32, frame: u32| centre.saturating_sub(128).min(frame - 256);
    let (cx, cy) = (start(x + w / 2, 640), start(y + h_ / 2, 480));
    // The model boxes the gate's region where it sees it in the close-up.
    let answer = serde_json::json!({
        "defect_detected": true,
        "summary": "rust",
        "defects": [{
            "type": "rust", "severity": "medium", "confidence": 0.8,
            "bbox": {"image": "close_up", "x": x - cx, "y": y - cy, "width": w, "height": h_},
            "description": "an orange rust spot, seen close"
        }]
    });
    mock.script([Reply::Answer {
        content: answer.to_string(),
        finish: "stop",
    }]);
    assert!(h.state.remote_workers().unwrap().work_once().await);

    let seen = mock.seen();
    let content = &seen[0].body["messages"][1]["content"];
    assert_eq!(content[1]["image_url"]["detail"], "low");
    assert_eq!(
        sent_size(&content[1]),
        (512, 384),
        "the whole part, as low detail sees it"
    );
    assert_eq!(content[2]["image_url"]["detail"], "high");
    assert_eq!(sent_size(&content[2]), (256, 256), "one tile");
    let bbox = &seen[0].body["response_format"]["json_schema"]["schema"]["properties"]["defects"]["items"]
        ["properties"]["bbox"];
    assert_eq!(
        bbox["properties"]["image"]["enum"],
        serde_json::json!(["part", "close_up"])
    );

    let done = result(&h, &bad["id"]).await;
    assert_eq!(done["status"], "final", "{done}");
    assert_eq!(
        done["verdicts"][1]["defects"][0]["bbox"],
        serde_json::json!(region),
        "the close-up's box in the frame's pixels"
    );
    assert_eq!(
        done["defects"][0]["description"],
        "an orange rust spot, seen close"
    );
}

#[tokio::test]
async fn uncertain_parts_go_too_when_the_band_covers_them() {
    let mock = Mock::start(KEY).await;
    let h = harness_with(&remote_table(
        &mock,
        "openai_compatible",
        "uncertain_band = 1.0\n",
    ))
    .await;
    calibrate(&h).await;
    let (_, good) = analyze(&h, part_jpeg(None, 90_001)).await;
    assert_eq!(
        (&good["status"], &good["defect_detected"]),
        (&"provisional".into(), &false.into()),
        "{good}"
    );
    assert!(h.state.remote_workers().unwrap().work_once().await);
    let done = result(&h, &good["id"]).await;
    assert_eq!(done["status"], "final");
    assert_eq!(done["defect_detected"], false, "the gate decides");
    assert_eq!(
        done["disagreement"], true,
        "the mock sees rust on every part: {done}"
    );
}

#[tokio::test]
async fn confident_ng_parts_stay_local_when_configured() {
    let mock = Mock::start(KEY).await;
    let h = harness_with(&remote_table(
        &mock,
        "openai_compatible",
        "uncertain_band = 0.0\nconfident_ng_above = 1.5\n",
    ))
    .await;
    calibrate(&h).await;
    // The rusty knife: its score far above the threshold, its region typed.
    let (_, bad) = analyze(&h, part_jpeg(Some(SynthDefect::Rust), 90_002)).await;
    let score = bad["score"].as_f64().unwrap();
    let threshold = bad["score_threshold"].as_f64().unwrap();
    assert!(
        score >= 1.5 * threshold && bad["defects"][0]["type"] == "rust",
        "{bad}"
    );
    assert_eq!(
        (&bad["status"], &bad["defect_detected"]),
        (&"final".into(), &true.into()),
        "final at once with the gate's verdict: {bad}"
    );
    assert_eq!(bad["verdicts"].as_array().unwrap().len(), 1);
    assert!(
        !h.state.remote_workers().unwrap().work_once().await,
        "nothing to enrich"
    );
    assert!(mock.seen().is_empty(), "no call");
}

#[tokio::test]
async fn each_service_gets_its_own_path_and_key_header() {
    let mock = Mock::start(KEY).await;
    for (kind, extra) in [
        ("azure_openai", "api_version = \"2024-10-21\"\n"),
        ("azure_ai_inference", ""),
        ("openai_compatible", ""),
    ] {
        let verdict = ask(&remote(&remote_table(&mock, kind, extra))).await;
        assert_eq!(verdict.error, None, "{kind}");
        assert_eq!(verdict.analyzer, kind);
    }
    let seen = mock.seen();
    assert_eq!(
        seen[0].path,
        "/openai/deployments/gpt4o-prod/chat/completions"
    );
    assert_eq!(seen[0].query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(
        seen[0].body.get("model"),
        None,
        "the URL names the deployment"
    );
    assert_eq!(seen[0].api_key.as_deref(), Some(KEY));
    assert_eq!(seen[1].path, "/models/chat/completions");
    assert_eq!(
        seen[1].query.as_deref(),
        Some("api-version=2024-05-01-preview")
    );
    assert_eq!(seen[1].body["model"], "gpt4o-prod");
    assert_eq!(seen[2].path, "/v1/chat/completions");
    assert_eq!(
        seen[2].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(seen[2].api_key, None);

    // An Entra ID token from a file, and a wrong key: refused, and the key is not repeated.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{KEY}\n")).unwrap();
    let table = remote_table(&mock, "azure_openai", "").replace(
        &format!("api_key = \"{KEY}\""),
        &format!("bearer_token_file = \"{}\"", token.display()),
    );
    assert_eq!(ask(&remote(&table)).await.error, None);
    let wrong = remote_table(&mock, "azure_openai", "").replace(KEY, "wrong-key-0000000000");
    let error = ask(&remote(&wrong)).await.error.unwrap();
    assert_eq!(error.code, VerdictErrorCode::Rejected);
    assert!(
        error.message.contains("401") && !error.message.contains("wrong-key"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn every_failure_is_a_clear_error_on_the_verdict() {
    let mock = Mock::start(KEY).await;
    let remote = remote(&remote_table(&mock, "azure_openai", ""));
    let answer = |content: String, finish| Reply::Answer { content, finish };
    let outside = good_answer().to_string().replace("\"x\":10", "\"x\":5000");
    let cases = [
        (vec![Reply::Refusal], VerdictErrorCode::Refused),
        (
            vec![answer(good_answer().to_string(), "length")],
            VerdictErrorCode::Truncated,
        ),
        (
            vec![answer(String::new(), "content_filter")],
            VerdictErrorCode::ContentFilter,
        ),
        (
            vec![Reply::status(400, "content_filter")],
            VerdictErrorCode::ContentFilter,
        ),
        (
            vec![answer("{\"defect_detected\": tr".into(), "stop")],
            VerdictErrorCode::InvalidAnswer,
        ),
        (
            vec![answer(outside, "stop")],
            VerdictErrorCode::InvalidAnswer,
        ),
        (
            vec![Reply::status(500, "InternalServerError"); 2],
            VerdictErrorCode::Unavailable,
        ),
        (
            vec![Reply::Slow(Duration::from_secs(3)); 2],
            VerdictErrorCode::Timeout,
        ),
        (
            vec![Reply::too_many("retry-after-ms", "10"); 2],
            VerdictErrorCode::RateLimited,
        ),
    ];
    for (replies, code) in cases {
        mock.script(replies.clone());
        let verdict = ask(&remote).await;
        let error = verdict
            .error
            .unwrap_or_else(|| panic!("{replies:?} gave no error"));
        assert_eq!(error.code, code, "{replies:?}: {}", error.message);
        assert!(!error.message.is_empty());
        assert_eq!(verdict.defect_detected, None);
    }
    // Tokens the service counted are counted even when the answer is unusable.
    mock.script([answer(good_answer().to_string(), "length")]);
    let truncated = ask(&remote).await;
    assert_eq!(truncated.usage.unwrap().output_tokens, OUTPUT_TOKENS);

    // A 429 asking for longer than max_retry_wait_secs (2 s) is no verdict: the call is put
    // off for as long as asked, and so is every other call of this replica meanwhile.
    // See: issue #22
    mock.script([Reply::too_many("retry-after", "3600")]);
    let later = try_ask(&remote).await.unwrap_err();
    assert_eq!(later.retry_in, Duration::from_secs(3600));
    assert!(later.reason.contains("rate limited"), "{}", later.reason);
    assert!(remote.paused());
    let seen = mock.seen().len();
    assert!(try_ask(&remote).await.is_err());
    assert_eq!(mock.seen().len(), seen, "no call while paused");
}

#[tokio::test]
async fn a_429_pauses_every_request_for_as_long_as_it_asks() {
    let mock = Mock::start(KEY).await;
    let table =
        remote_table(&mock, "azure_openai", "").replace("max_attempts = 2", "max_attempts = 4");
    let remote = std::sync::Arc::new(remote(&table));
    for (header, value, wait) in [
        ("retry-after-ms", "300", Duration::from_millis(300)),
        ("retry-after", "1", Duration::from_secs(1)),
        (
            "x-ratelimit-reset-requests",
            "0.5s",
            Duration::from_millis(500),
        ),
    ] {
        let before = mock.seen().len();
        mock.script([Reply::too_many(header, value)]);
        // Three parts at once: one request gets the 429 and is retried after the wait.
        let asks: Vec<_> = (0..3)
            .map(|_| {
                let remote = remote.clone();
                tokio::spawn(async move { ask(&remote).await })
            })
            .collect();
        for a in asks {
            assert_eq!(
                a.await.unwrap().error,
                None,
                "{header}: retried until answered"
            );
        }
        let seen = &mock.seen()[before..];
        assert_eq!(
            seen.len(),
            4,
            "{header}: one 429, three answers, nothing lost or repeated"
        );
        assert!(
            seen[3].at - seen[0].at >= wait.mul_f64(0.9),
            "{header}: the retry waited"
        );
    }
}

#[tokio::test]
async fn requests_never_exceed_the_configured_rate() {
    let mock = Mock::start(KEY).await;
    // 600 per minute: one every 100 ms, no burst.
    let table = remote_table(&mock, "openai_compatible", "")
        .replace("requests_per_minute = 6000", "requests_per_minute = 600");
    let remote = std::sync::Arc::new(remote(&table));
    // One call first, not measured: the first connection's setup would delay only the first
    // arrival and shorten the gap after it.
    ask(&remote).await;
    let before = mock.seen().len();
    // Realistic 640 × 480 frames: each call's image is encoded after its reservation, and the
    // limiter is the last thing before it is sent, so the encoding does not bunch them.
    let asks: Vec<_> = (0..5)
        .map(|_| {
            let remote = remote.clone();
            tokio::spawn(async move { ask(&remote).await })
        })
        .collect();
    for a in asks {
        assert_eq!(a.await.unwrap().error, None);
    }
    let mut at: Vec<_> = mock.seen()[before..].iter().map(|s| s.at).collect();
    at.sort();
    assert_eq!(at.len(), 5);
    // Every request 100 ms after the one before, at least (less a little for the network).
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|&gap| gap >= Duration::from_millis(90)),
        "{gaps:?}"
    );
}
