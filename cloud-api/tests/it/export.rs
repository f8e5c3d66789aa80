//! `GET /api/v1/analyses/export`: every result the listing's filters select, as one CSV
//! streamed page by page, in the listing's order; refused like the listing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use wiko_cloud::store::{Call, Image, Origin, Storage};

use crate::harness::*;
use crate::stats::judge;

/// More results than twenty of the export's pages.
const RESULTS: usize = 10_050;

/// Seeds `n` completed results, 16 at once, the `i`th captured `i` seconds ago: stations
/// alternate grinding/polish, every third is NG (a chip). One image for all (stored once).
async fn seed(storage: &Storage, n: usize) {
    let bytes = Bytes::from_static(b"export image");
    let image = Image {
        blake3: wiko_wire::frame::image_digest(&bytes),
        bytes,
        width: 64,
        height: 48,
    };
    let now = Utc::now();
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (storage, image, next) = (storage.clone(), image.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let origin = Origin::Call(Call {
                        facility: "yangjiang".into(),
                        line: "l1".into(),
                        station: ["grinding", "polish"][i % 2].into(),
                        product_sku: "WK-KN-200".into(),
                        part_id: Some(format!("P{i}")),
                        received_at: now - TimeDelta::seconds(i as i64),
                    });
                    let (_, id) = storage
                        .put_part(origin, image.clone(), Duration::from_secs(3600))
                        .await
                        .unwrap();
                    judge(&storage, id, i % 3 == 0).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// The export's rows under its header, which names the columns.
fn rows(body: &[u8]) -> (csv::StringRecord, Vec<csv::StringRecord>) {
    let mut reader = csv::Reader::from_reader(body);
    let header = reader.headers().unwrap().clone();
    let rows = reader.records().map(Result::unwrap).collect();
    (header, rows)
}

/// The ids of every result the listing gives for `filters`, page by page.
async fn listed(h: &Harness, filters: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let (s, page) = get_json(h, &format!("/api/v1/analyses?{filters}&limit=500{cursor}")).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        for a in page["items"].as_array().unwrap() {
            ids.push(a["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return ids,
        }
    }
}

#[tokio::test]
async fn every_filtered_result_streams_as_csv_in_the_listings_order() {
    let h = harness().await;
    seed(&h.state.intake.storage, RESULTS).await;

    let (s, body) = get_bytes(&h, "/api/v1/analyses/export").await;
    assert_eq!(s, StatusCode::OK);
    let (header, all) = rows(&body);
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(all.len(), RESULTS);
    let ids: Vec<String> = all.iter().map(|r| r[column("id")].to_string()).collect();
    assert_eq!(
        ids,
        listed(&h, "").await,
        "the listing's rows, in its order"
    );
    // The newest is the first seeded: P0, NG with one chip, its score against the threshold.
    let first = &all[0];
    assert_eq!(&first[column("part_id")], "P0");
    assert_eq!(&first[column("station")], "grinding");
    assert_eq!(&first[column("defect_detected")], "true");
    assert_eq!(&first[column("defect_types")], "chip");
    assert_eq!(&first[column("status")], "final");
    assert_eq!(&first[column("score")], "2");
    assert_eq!(&first[column("score_threshold")], "1");
    assert_eq!(&first[column("model_version")], "v1");
    let (_, one) = get_json(&h, &format!("/api/v1/analyses/{}", ids[0])).await;
    assert_eq!(first[column("defect_id")], one["defect_id"]);

    // The listing's filters apply: polish NG parts are every sixth, from P3.
    let filters = "station=polish&defect_detected=true";
    let (s, body) = get_bytes(&h, &format!("/api/v1/analyses/export?{filters}")).await;
    assert_eq!(s, StatusCode::OK);
    let (_, polish_ng) = rows(&body);
    assert_eq!(polish_ng.len(), (RESULTS - 3).div_ceil(6));
    assert!(
        polish_ng
            .iter()
            .all(|r| &r[column("station")] == "polish" && &r[column("defect_detected")] == "true")
    );
    let ids: Vec<String> = polish_ng
        .iter()
        .map(|r| r[column("id")].to_string())
        .collect();
    assert_eq!(ids, listed(&h, filters).await);

    // `limit` caps the rows; `cursor` starts after a listing's page.
    let (_, body) = get_bytes(&h, "/api/v1/analyses/export?limit=3").await;
    assert_eq!(rows(&body).1.len(), 3);
    let (_, page) = get_json(&h, "/api/v1/analyses?limit=2").await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, body) = get_bytes(
        &h,
        &format!("/api/v1/analyses/export?cursor={cursor}&limit=1"),
    )
    .await;
    assert_eq!(
        &rows(&body).1[0][column("id")],
        all[2][column("id")].to_string().as_str()
    );
}

#[tokio::test]
async fn an_export_is_refused_like_the_listing() {
    let h = harness().await;
    // Nothing stored: the header row alone.
    let (s, body) = get_bytes(&h, "/api/v1/analyses/export?sku=WK-KN-200").await;
    assert_eq!(s, StatusCode::OK);
    let (header, none) = rows(&body);
    assert!(none.is_empty());
    assert_eq!(&header[0], "id");
    let (s, e) = call(&h, "GET", "/api/v1/analyses/export", DEVICE).await;
    assert_eq!((s, code(&e)), (StatusCode::FORBIDDEN, "forbidden"));
    let (s, e) = get_json(&h, "/api/v1/analyses/export?cursor=garbage").await;
    assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, "invalid_cursor"));
    let (s, e) = get_json(&h, "/api/v1/analyses/export?defect_type=wobble").await;
    assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, "invalid_query"));
    let (s, e) = get_json(&h, "/api/v1/analyses/export?colour=red").await;
    assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, "invalid_query"));
}
