//! Agent ingest (`PUT /api/v1/frames/{id}`): idempotent on the frame id; bad input of every
//! kind gets a 4xx with a stable code, stores nothing, and the service keeps answering; an image
//! a power loss damaged is never served and the next upload writes it again.

use axum::http::StatusCode;
use uuid::Uuid;

use crate::harness::*;

#[tokio::test]
async fn ingest_is_idempotent_on_the_frame_id() {
    let h = harness().await;
    let image = jpeg();
    let id = Uuid::now_v7();
    let m = meta(id, &image);
    let (status, first) =
        put_frame(&h, &id.to_string(), Some(DEVICE), frame_body(&m, &image)).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["outcome"], "created");
    let (status, again) =
        put_frame(&h, &id.to_string(), Some(DEVICE), frame_body(&m, &image)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["outcome"], "duplicate");
    assert_eq!(again["analysis_id"], first["analysis_id"]);

    let mut other = image.clone();
    let n = other.len();
    other[n / 2] ^= 0x55;
    let (status, conflict) = put_frame(
        &h,
        &id.to_string(),
        Some(DEVICE),
        frame_body(&meta(id, &other), &other),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&conflict), "frame_conflict");
    assert_eq!(stored(&h).await, 1);
}

// See: issue #21 (an agent's retry says `alerted` once its alert was acknowledged meanwhile).
#[tokio::test]
async fn a_frame_uploaded_again_differing_only_in_alerted_is_a_duplicate() {
    let h = harness().await;
    let image = jpeg();
    let id = Uuid::now_v7();
    let mut m = meta(id, &image);
    m.edge = Some(wiko_wire::EdgeVerdict {
        defect_detected: true,
        score: 0.9,
        score_threshold: 0.5,
        model_version: "v1".into(),
        defects: Vec::new(),
        latency_ms: 12.0,
        alerted: false,
    });
    let (status, first) =
        put_frame(&h, &id.to_string(), Some(DEVICE), frame_body(&m, &image)).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let mut again = m.clone();
    again.edge.as_mut().unwrap().alerted = true;
    let (status, dup) = put_frame(
        &h,
        &id.to_string(),
        Some(DEVICE),
        frame_body(&again, &image),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{dup}");
    assert_eq!(dup["outcome"], "duplicate");
    assert_eq!(dup["analysis_id"], first["analysis_id"]);
    // Anything else of the verdict differing is still another frame.
    again.edge.as_mut().unwrap().score = 0.8;
    let (status, conflict) = put_frame(
        &h,
        &id.to_string(),
        Some(DEVICE),
        frame_body(&again, &image),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(code(&conflict), "frame_conflict");
    assert_eq!(stored(&h).await, 1);
}

#[tokio::test]
async fn a_frame_named_like_another_result_is_a_conflict_not_a_failure() {
    // An agent frame's result id is its frame id: one equal to a result the API made
    // (or another device's) is refused for good, so the agent dead-letters it.
    let h = harness().await;
    let (status, taken) = analyze(&h, jpeg()).await;
    assert!(status.is_success(), "{taken}");
    let id: Uuid = taken["id"].as_str().unwrap().parse().unwrap();
    let image = jpeg();
    let (status, conflict) = put_frame(
        &h,
        &id.to_string(),
        Some(DEVICE),
        frame_body(&meta(id, &image), &image),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(code(&conflict), "frame_conflict");
    assert_eq!(stored(&h).await, 1);
}

#[tokio::test]
async fn bad_input_gets_a_coded_4xx_and_stores_nothing() {
    let h = harness().await;
    let image = jpeg();
    let id = Uuid::now_v7();
    let good = frame_body(&meta(id, &image), &image);
    let uri = id.to_string();

    struct Case {
        what: &'static str,
        status: StatusCode,
        code: &'static str,
        id: String,
        key: Option<&'static str>,
        body: Vec<u8>,
    }
    let case = |what, status, code, key, body| Case {
        what,
        status,
        code,
        id: uri.clone(),
        key,
        body,
    };
    let mut cases = vec![
        case(
            "no key",
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            None,
            good.clone(),
        ),
        case(
            "wrong key",
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            Some("not-a-key"),
            good.clone(),
        ),
        case(
            "viewer key",
            StatusCode::FORBIDDEN,
            "forbidden",
            Some(VIEWER),
            good.clone(),
        ),
        case(
            "malformed metadata",
            StatusCode::BAD_REQUEST,
            "invalid_metadata",
            Some(DEVICE),
            multipart(&[
                ("meta", "application/json", b"{\"frame_id\": 3"),
                ("image", "image/jpeg", &image),
            ]),
        ),
        case(
            "station with a slash",
            StatusCode::BAD_REQUEST,
            "invalid_metadata",
            Some(DEVICE),
            {
                let mut m = meta(id, &image);
                m.station = "a/b".into();
                frame_body(&m, &image)
            },
        ),
        case(
            "meta twice",
            StatusCode::BAD_REQUEST,
            "invalid_multipart",
            Some(DEVICE),
            {
                let m = serde_json::to_vec(&meta(id, &image)).unwrap();
                multipart(&[
                    ("meta", "application/json", &m),
                    ("meta", "application/json", &m),
                    ("image", "image/jpeg", &image),
                ])
            },
        ),
        case(
            "facility `..`",
            StatusCode::BAD_REQUEST,
            "invalid_metadata",
            Some(DEVICE),
            {
                let mut m = meta(id, &image);
                m.facility = "..".into();
                frame_body(&m, &image)
            },
        ),
        case(
            "no image part",
            StatusCode::BAD_REQUEST,
            "missing_field",
            Some(DEVICE),
            multipart(&[(
                "meta",
                "application/json",
                &serde_json::to_vec(&meta(id, &image)).unwrap(),
            )]),
        ),
        case(
            "digest mismatch",
            StatusCode::BAD_REQUEST,
            "digest_mismatch",
            Some(DEVICE),
            frame_body(&meta(id, b"other"), &image),
        ),
        case(
            "not an image",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_image",
            Some(DEVICE),
            frame_body(&meta(id, b"hello world"), b"hello world"),
        ),
        case(
            "zero bytes",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_image",
            Some(DEVICE),
            frame_body(&meta(id, b""), b""),
        ),
        case(
            "truncated JPEG",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_image",
            Some(DEVICE),
            {
                let cut = &image[..image.len() / 2];
                frame_body(&meta(id, cut), cut)
            },
        ),
        case(
            "body over the limit",
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            Some(DEVICE),
            {
                let big = vec![0u8; MAX_BODY + 1];
                frame_body(&meta(id, &big), &big)
            },
        ),
    ];
    cases.push(Case {
        id: "frame-1".into(),
        ..case(
            "frame id not a UUID",
            StatusCode::BAD_REQUEST,
            "invalid_frame_id",
            Some(DEVICE),
            good.clone(),
        )
    });
    cases.push(Case {
        id: Uuid::now_v7().to_string(),
        ..case(
            "id differs from meta",
            StatusCode::BAD_REQUEST,
            "frame_id_mismatch",
            Some(DEVICE),
            good.clone(),
        )
    });
    for c in cases {
        let (got, body) = put_frame(&h, &c.id, c.key, c.body).await;
        assert_eq!(got, c.status, "{}: {body}", c.what);
        assert_eq!(code(&body), c.code, "{}", c.what);
        assert!(body["error"]["message"].is_string(), "{}", c.what);
    }
    let (got, body) = send_raw(
        &h,
        "PUT",
        &format!("/api/v1/frames/{uri}"),
        "text/plain",
        b"plain".to_vec(),
    )
    .await;
    assert_eq!(
        (got, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_multipart"),
        "not multipart"
    );
    assert_eq!(
        stored(&h).await,
        0,
        "nothing is stored by a refused request"
    );
    let (status, _) = put_frame(&h, &uri, Some(DEVICE), good).await;
    assert_eq!(status, StatusCode::CREATED, "the service still serves");
}

// See: issue #19
#[tokio::test]
async fn an_image_zeroed_by_a_power_loss_is_written_again_by_the_next_upload() {
    let h = harness().await;
    let image = jpeg();
    let id = Uuid::now_v7();
    let m = meta(id, &image);
    let body = || frame_body(&m, &image);
    let (status, first) = put_frame(&h, &id.to_string(), Some(DEVICE), body()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let segment = h.place.dir.path().join("segments/seg-00000001.log");
    if !segment.exists() {
        return; // S3 keeps no segment log
    }
    // The power loss: the record's header survived, its data did not.
    let mut log = std::fs::read(&segment).unwrap();
    let at = log
        .windows(image.len())
        .position(|w| w == image.as_slice())
        .unwrap();
    log[at..at + image.len()].fill(0);
    std::fs::write(&segment, &log).unwrap();

    let h = started_in(h.place.clone()).await;
    let uri = format!(
        "/api/v1/analyses/{}/image",
        first["analysis_id"].as_str().unwrap()
    );
    let (status, _) = get_bytes(&h, &uri).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a damaged image is absent, never served"
    );
    // The agent sends the frame again: the image is written again.
    let (status, again) = put_frame(&h, &id.to_string(), Some(DEVICE), body()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["outcome"], "duplicate");
    let (status, served) = get_bytes(&h, &uri).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served, image);
}
