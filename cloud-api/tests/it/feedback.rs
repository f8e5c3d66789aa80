//! Reviews: `POST /api/v1/analyses/{id}/feedback` by a viewer or admin, shown on the result,
//! filtered on, audited, and counted by `GET /api/v1/capability`.

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;
use wiko_wire::AnalysisStatus;

use crate::harness::*;
use crate::stats::{completed, outcome, part};

#[tokio::test]
async fn reviews_are_stored_shown_filtered_audited_and_counted() {
    let h = harness().await;
    let storage = h.state.intake.storage.clone();
    let now = Utc::now();
    // Two NG and three OK results, and one the analyzer could not judge.
    let mut ng = Vec::new();
    let mut ok = Vec::new();
    for n in 0..5 {
        let id = completed(&storage, n, n < 2).await;
        if n < 2 { ng.push(id) } else { ok.push(id) }
    }
    let failed = part(&storage, 9, "polish", "WK-KN-200", now).await;
    storage
        .records
        .complete(failed, outcome(AnalysisStatus::Failed, Vec::new()))
        .await
        .unwrap();
    let uri = |id: Uuid| format!("/api/v1/analyses/{id}/feedback");
    let (s, a) = post_json(&h, &uri(ng[0]), VIEWER, json!({"verdict": "confirmed"})).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(a["feedback"]["verdict"], "confirmed");
    assert_eq!(a["feedback"]["by"], "v");
    // A second review replaces the first as the latest.
    let (s, a) = post_json(
        &h,
        &uri(ng[1]),
        ADMIN,
        json!({"verdict": "confirmed", "comment": "first look"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(a["feedback"]["comment"], "first look");
    let (s, a) = post_json(
        &h,
        &uri(ng[1]),
        VIEWER,
        json!({"verdict": "false_ng", "comment": "  reflection, not a chip  "}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(a["feedback"]["comment"], "reflection, not a chip");
    post_json(&h, &uri(ok[0]), VIEWER, json!({"verdict": "confirmed"})).await;
    post_json(&h, &uri(ok[1]), VIEWER, json!({"verdict": "false_ok"})).await;
    post_json(&h, &uri(ok[2]), VIEWER, json!({"verdict": "inconclusive"})).await;
    let (_, shown) = get_json(&h, &format!("/api/v1/analyses/{}", ng[1])).await;
    assert_eq!(shown["feedback"]["verdict"], "false_ng");
    assert_eq!(shown["feedback"]["by"], "v");

    // Refusals: a device key, a verdict that does not fit, no verdict to review, bad bodies.
    let (s, _) = post_json(&h, &uri(ng[0]), DEVICE, json!({"verdict": "confirmed"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, e) = post_json(&h, &uri(ok[0]), VIEWER, json!({"verdict": "false_ng"})).await;
    assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, "invalid_body"));
    let (s, e) = post_json(&h, &uri(failed), VIEWER, json!({"verdict": "confirmed"})).await;
    assert_eq!((s, code(&e)), (StatusCode::CONFLICT, "not_judged"));
    let (s, e) = post_json(&h, &uri(ng[0]), VIEWER, json!({"verdict": "maybe"})).await;
    assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, "invalid_body"));
    let long = "x".repeat(wiko_wire::feedback::MAX_COMMENT_CHARS + 1);
    let (s, e) = post_json(
        &h,
        &uri(ng[0]),
        VIEWER,
        json!({"verdict": "confirmed", "comment": long}),
    )
    .await;
    assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, "invalid_body"));
    let (s, e) = post_json(
        &h,
        &uri(Uuid::now_v7()),
        VIEWER,
        json!({"verdict": "confirmed"}),
    )
    .await;
    assert_eq!((s, code(&e)), (StatusCode::NOT_FOUND, "not_found"));

    // The listing's filter.
    let count = |uri: &'static str| {
        let h = &h;
        async move {
            let (s, page) = get_json(h, uri).await;
            assert_eq!(s, StatusCode::OK, "{page}");
            page["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("/api/v1/analyses?feedback=false_ng").await, 1);
    assert_eq!(count("/api/v1/analyses?feedback=any").await, 5);
    assert_eq!(count("/api/v1/analyses?feedback=none").await, 1);
    assert_eq!(
        count("/api/v1/analyses?feedback=confirmed&defect_detected=false").await,
        1
    );
    let (s, e) = get_json(&h, "/api/v1/analyses?feedback=perhaps").await;
    assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, "invalid_query"));

    // Capability: TP 1, FP 1, TN 1, FN 1, inconclusive 1.
    let (s, c) = get_json(&h, "/api/v1/capability?sku=WK-KN-200&model_version=v1").await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let counts: Vec<_> = [
        "true_positives",
        "false_positives",
        "true_negatives",
        "false_negatives",
        "inconclusive",
    ]
    .iter()
    .map(|k| c[k].as_u64().unwrap())
    .collect();
    assert_eq!(counts, [1, 1, 1, 1, 1]);
    assert_eq!(c["precision"], 0.5);
    assert_eq!(c["recall"], 0.5);
    assert_eq!(c["false_reject_rate"], 0.5);
    let (_, none) = get_json(&h, "/api/v1/capability?sku=WK-KN-200&model_version=v9").await;
    assert_eq!(none["true_positives"], 0);
    assert!(none["precision"].is_null());
    let (s, _) = get_json(&h, "/api/v1/capability").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Audited with the reviewer's key name.
    let mut reviews = Vec::new();
    for _ in 0..50 {
        let log = storage.records.audit_log(100).await.unwrap();
        reviews = log.into_iter().filter(|e| e.action == "feedback").collect();
        if reviews.len() == 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(reviews.len(), 6);
    assert!(
        reviews
            .iter()
            .any(|e| e.actor == "a" && e.detail["comment"] == "first look")
    );
}

#[tokio::test]
async fn one_review_of_many_results_records_each_as_a_single_review_would() {
    let h = harness().await;
    let storage = h.state.intake.storage.clone();
    let ng = completed(&storage, 0, true).await;
    let ok = completed(&storage, 1, false).await;
    let pending = part(&storage, 2, "polish", "WK-KN-200", Utc::now()).await;
    let unknown = Uuid::now_v7();
    let (s, answer) = post_json(
        &h,
        "/api/v1/feedback",
        VIEWER,
        json!({"ids": [ng, ok, pending, unknown, ng], "verdict": "incorrect", "comment": "glare"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    // "Incorrect" is a false NG of the NG result, a false OK of the OK one; a repeat counts once.
    assert_eq!(
        answer["reviewed"],
        json!([{"id": ng, "verdict": "false_ng"}, {"id": ok, "verdict": "false_ok"}])
    );
    let refused: Vec<_> = answer["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), code(r).to_string()))
        .collect();
    assert_eq!(
        refused,
        [
            (pending.to_string(), "not_judged".to_string()),
            (unknown.to_string(), "not_found".to_string()),
        ]
    );
    let (_, shown) = get_json(&h, &format!("/api/v1/analyses/{ok}")).await;
    assert_eq!(shown["feedback"]["verdict"], "false_ok");
    assert_eq!(shown["feedback"]["comment"], "glare");
    assert_eq!(shown["feedback"]["by"], "v");
    let (_, c) = get_json(&h, "/api/v1/capability?sku=WK-KN-200").await;
    assert_eq!(
        (&c["false_positives"], &c["false_negatives"]),
        (&json!(1), &json!(1))
    );

    // Confirmed is a confirmation of either verdict.
    let (_, answer) = post_json(
        &h,
        "/api/v1/feedback",
        ADMIN,
        json!({"ids": [ng, ok], "verdict": "confirmed"}),
    )
    .await;
    assert_eq!(answer["reviewed"].as_array().unwrap().len(), 2, "{answer}");
    let (_, c) = get_json(&h, "/api/v1/capability?sku=WK-KN-200").await;
    assert_eq!(
        (&c["true_positives"], &c["true_negatives"]),
        (&json!(1), &json!(1))
    );

    // Refused whole: a device key, no result, too many, an unknown verdict, a long comment.
    let (s, _) = post_json(
        &h,
        "/api/v1/feedback",
        DEVICE,
        json!({"ids": [ng], "verdict": "confirmed"}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let too_many: Vec<Uuid> = (0..=wiko_wire::feedback::MAX_BULK_REVIEW)
        .map(|_| Uuid::now_v7())
        .collect();
    for body in [
        json!({"ids": [], "verdict": "confirmed"}),
        json!({"ids": too_many, "verdict": "confirmed"}),
        json!({"ids": [ng], "verdict": "false_ng"}),
        json!({"ids": [ng], "verdict": "confirmed", "comment": "x".repeat(1001)}),
    ] {
        let (s, e) = post_json(&h, "/api/v1/feedback", VIEWER, body).await;
        assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, "invalid_body"));
    }

    // Each review audited as a single one is: two, then two more.
    let mut reviews = Vec::new();
    for _ in 0..50 {
        let log = storage.records.audit_log(100).await.unwrap();
        reviews = log.into_iter().filter(|e| e.action == "feedback").collect();
        if reviews.len() == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(reviews.len(), 4);
    assert!(reviews.iter().any(|e| e.actor == "v"
        && e.detail["analysis_id"] == json!(ok)
        && e.detail["verdict"] == "false_ok"));
}

#[tokio::test]
async fn capability_is_split_by_the_model_version_that_judged_each_part() {
    let h = harness().await;
    let storage = h.state.intake.storage.clone();
    let now = Utc::now();
    // (version, NG, review): v1 one TP and one FP, v2 one TN, v10 one FN and one TP.
    let parts = [
        ("v1", true, "confirmed"),
        ("v1", true, "false_ng"),
        ("v2", false, "confirmed"),
        ("v10", false, "false_ok"),
        ("v10", true, "confirmed"),
    ];
    for (n, (version, ng, review)) in parts.into_iter().enumerate() {
        let id = part(&storage, 100 + n as u32, "polish", "WK-KN-200", now).await;
        let defects = if ng {
            vec![crate::stats::defect(wiko_wire::DefectType::Chip)]
        } else {
            Vec::new()
        };
        let mut judged = outcome(AnalysisStatus::Final, defects);
        judged.judgement.model_version = Some(version.into());
        storage.records.complete(id, judged).await.unwrap();
        let uri = format!("/api/v1/analyses/{id}/feedback");
        let (s, a) = post_json(&h, &uri, VIEWER, json!({ "verdict": review })).await;
        assert_eq!(s, StatusCode::OK, "{a}");
    }
    let four = |c: &serde_json::Value| {
        [
            "true_positives",
            "false_positives",
            "true_negatives",
            "false_negatives",
        ]
        .map(|k| c[k].as_u64().unwrap())
    };
    let (s, versions) = get_json(&h, "/api/v1/capability/versions?sku=WK-KN-200").await;
    assert_eq!(s, StatusCode::OK, "{versions}");
    let shown: Vec<(String, [u64; 4])> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["model_version"].as_str().unwrap().to_string(), four(c)))
        .collect();
    assert_eq!(
        shown,
        [
            ("v1".to_string(), [1, 1, 0, 0]),
            ("v2".into(), [0, 0, 1, 0]),
            ("v10".into(), [1, 0, 0, 1]),
        ],
        "in version order"
    );
    assert_eq!(versions[0]["precision"], 0.5);
    // The whole is the sum of its versions; one version asked, one row.
    let (_, all) = get_json(&h, "/api/v1/capability?sku=WK-KN-200").await;
    assert_eq!(four(&all), [2, 1, 1, 1]);
    assert!(all["model_version"].is_null());
    let (_, one) = get_json(
        &h,
        "/api/v1/capability/versions?sku=WK-KN-200&model_version=v10",
    )
    .await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(four(&one[0]), [1, 0, 0, 1]);
    // Parts captured before `since` are not counted; the key rules are the API's.
    let later = (now + chrono::TimeDelta::hours(1)).format("%Y-%m-%dT%H:%M:%SZ");
    let (_, none) = get_json(
        &h,
        &format!("/api/v1/capability/versions?sku=WK-KN-200&since={later}"),
    )
    .await;
    assert_eq!(none, json!([]));
    let (s, _) = call(
        &h,
        "GET",
        "/api/v1/capability/versions?sku=WK-KN-200",
        DEVICE,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, e) = get_json(&h, "/api/v1/capability/versions").await;
    assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, "invalid_query"));
}
