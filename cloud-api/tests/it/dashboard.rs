//! The dashboard at `/`: nothing but the sign-in page and its stylesheet without a session;
//! sign-in with a viewer or admin key (not a device key) gives an `HttpOnly`, `SameSite=Strict`
//! cookie; forms without their CSRF token are refused with `csrf_rejected`; a revoked key ends
//! its sessions; the pages show the stored parts, golden sets and devices.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;
use wiko_synth::SynthDefect;

use crate::harness::*;

/// One answer: status, headers, body text.
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Answer {
    fn location(&self) -> Option<&str> {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
    }

    /// The `Set-Cookie` lines.
    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// The value `name` is set to (`name=value; …`).
    fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().iter().find_map(|c| {
            let (pair, _) = c.split_once(';')?;
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| v.to_string())
        })
    }

    /// The value of the form's hidden `csrf` field.
    fn csrf(&self) -> String {
        let at = self.text.find("name=\"csrf\" value=\"").unwrap() + 19;
        self.text[at..].split('"').next().unwrap().to_string()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

async fn call(h: &Harness, method: &str, uri: &str, cookie: &str, form: Option<&str>) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    if !cookie.is_empty() {
        req = req.header(header::COOKIE, cookie);
    }
    let body = match form {
        Some(f) => {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(f.to_string())
        }
        None => Body::empty(),
    };
    let response = wiko_cloud::app(h.state.clone())
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    Answer {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

/// Signs in with `key`: the session cookie (`wiko_session=…`) and the sign-in answer.
async fn sign_in(h: &Harness, key: &str) -> (Option<String>, Answer) {
    let page = call(h, "GET", "/signin", "", None).await;
    assert_eq!(page.status, StatusCode::OK);
    let nonce = page.cookie("wiko_signin").unwrap();
    let answer = call(
        h,
        "POST",
        "/signin",
        &format!("wiko_signin={nonce}"),
        Some(&form(&[("key", key), ("csrf", &page.csrf())])),
    )
    .await;
    let session = answer
        .cookie("wiko_session")
        .map(|v| format!("wiko_session={v}"));
    (session, answer)
}

#[tokio::test]
async fn nothing_but_the_sign_in_page_is_served_without_a_session() {
    let h = harness().await;
    for uri in [
        "/",
        "/results",
        "/fleet",
        "/golden",
        "/assets/app.js",
        "/overview",
        "/live",
        "/live/events",
        "/results/0190a5a4-0000-7000-8000-000000000000/image",
    ] {
        let a = call(&h, "GET", uri, "", None).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{uri}");
        assert_eq!(a.location(), Some("/signin"), "{uri}");
    }
    let forged = call(
        &h,
        "GET",
        "/results",
        "wiko_session=djF8Y29uZmlnOnY.AAAA",
        None,
    )
    .await;
    assert_eq!(forged.location(), Some("/signin"));
    let style = call(&h, "GET", "/assets/style.css", "", None).await;
    assert_eq!(style.status, StatusCode::OK);
    assert_eq!(
        style.headers[header::CACHE_CONTROL],
        "private, max-age=3600"
    );
    let signin = call(&h, "GET", "/signin", "", None).await;
    assert!(signin.text.contains("<form"), "{}", signin.text);
    assert!(
        signin.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    // The API's key rules are unchanged: no key, no results.
    let (status, _) = request(
        &h,
        Request::builder()
            .uri("/api/v1/analyses")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_viewer_key_signs_in_a_device_key_does_not_and_forms_need_their_token() {
    let h = harness().await;
    let (session, answer) = sign_in(&h, VIEWER).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.location(), Some("/"));
    let set = answer
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("wiko_session="))
        .unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "not configured: {set}");
    let session = session.unwrap();
    let page = call(&h, "GET", "/results", &session, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("v · viewer"), "the key's name and scope");

    let (none, refused) = sign_in(&h, DEVICE).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(none.is_none());
    assert!(refused.text.contains("device key cannot sign in"));
    let (none, refused) = sign_in(&h, "not-a-key-at-all-000").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(none.is_none());

    // The sign-in form's token is bound to its nonce cookie.
    let no_token = call(
        &h,
        "POST",
        "/signin",
        "wiko_signin=00112233445566778899aabbccddeeff",
        Some(&form(&[("key", VIEWER)])),
    )
    .await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    assert_eq!(no_token.json()["error"]["code"], "csrf_rejected");

    // Signing out needs the session's token; another session's is refused.
    let (other, _) = sign_in(&h, ADMIN).await;
    let other_token = call(&h, "GET", "/results", &other.unwrap(), None)
        .await
        .csrf();
    for body in ["", &form(&[("csrf", &other_token)])] {
        let a = call(&h, "POST", "/signout", &session, Some(body)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(a.json()["error"]["code"], "csrf_rejected");
    }
    let out = call(
        &h,
        "POST",
        "/signout",
        &session,
        Some(&form(&[("csrf", &page.csrf())])),
    )
    .await;
    assert_eq!(out.location(), Some("/signin"));
    assert!(out.set_cookies()[0].starts_with("wiko_session=; "));
}

#[tokio::test]
async fn a_revoked_key_ends_its_sessions() {
    let h = harness().await;
    let (status, created) = post_json(
        &h,
        "/api/v1/keys",
        ADMIN,
        json!({"name": "shift-lead", "scope": "viewer"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap();
    let prefix = created["info"]["prefix"].as_str().unwrap();
    let (session, _) = sign_in(&h, key).await;
    let session = session.unwrap();
    assert_eq!(
        call(&h, "GET", "/fleet", &session, None).await.status,
        StatusCode::OK
    );
    let (status, _) =
        crate::harness::call(&h, "DELETE", &format!("/api/v1/keys/{prefix}"), ADMIN).await;
    assert_eq!(status, StatusCode::OK);
    // What every replica's keyring does within a second.
    h.state
        .keyring
        .reload(h.state.intake.storage.records.as_ref())
        .await
        .unwrap();
    let after = call(&h, "GET", "/fleet", &session, None).await;
    assert_eq!(after.location(), Some("/signin"));
}

#[tokio::test]
async fn the_pages_show_the_stored_parts_golden_sets_and_devices() {
    let h = harness().await;
    let golden: Vec<Vec<u8>> = (0..6).map(|seed| part_jpeg(None, 50_000 + seed)).collect();
    let (status, body) = upload_golden(&h, "/api/v1/skus/WK-KN-200/golden", &golden).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, ng) = analyze(&h, part_jpeg(Some(SynthDefect::Rust), 90_002)).await;
    assert_eq!(ng["defect_detected"], true, "{ng}");
    let (_, ok) = analyze(&h, part_jpeg(None, 50_001)).await;
    assert_eq!(ok["defect_detected"], false, "{ok}");
    let ng_id = ng["id"].as_str().unwrap();
    let (session, _) = sign_in(&h, VIEWER).await;
    let session = session.unwrap();

    let all = call(&h, "GET", "/results", &session, None).await;
    assert!(
        all.text.contains("<span id=\"result-count\">2</span>"),
        "{}",
        all.text
    );
    assert!(
        all.text
            .contains(&format!("data-id=\"{ng_id}\" data-verdict=\"ng\""))
    );
    // The filter form's empty fields are left out; a datetime-local value is UTC.
    let only_ng = call(
        &h,
        "GET",
        "/results?facility=&defect_detected=true&since=2000-01-01T00%3A00&limit=1",
        &session,
        None,
    )
    .await;
    assert_eq!(only_ng.status, StatusCode::OK, "{}", only_ng.text);
    assert!(only_ng.text.contains("<span id=\"result-count\">1</span>"));
    assert!(!only_ng.text.contains(ok["id"].as_str().unwrap()));
    let paged = call(&h, "GET", "/results?limit=1", &session, None).await;
    assert!(
        paged.text.contains("id=\"next-page\""),
        "a cursor to the next page"
    );
    let bad = call(&h, "GET", "/results?colour=red", &session, None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["error"]["code"], "invalid_query");

    let detail = call(&h, "GET", &format!("/results/{ng_id}"), &session, None).await;
    assert_eq!(detail.status, StatusCode::OK);
    let boxes = ng["defects"].as_array().unwrap().len();
    assert!(boxes > 0);
    assert_eq!(detail.text.matches("<g class=\"defect\"").count(), boxes);
    assert!(detail.text.contains(&format!(
        "<td id=\"model-version\">{}</td>",
        ng["model_version"].as_str().unwrap()
    )));
    let image = call(
        &h,
        "GET",
        &format!("/results/{ng_id}/image"),
        &session,
        None,
    )
    .await;
    assert_eq!(image.status, StatusCode::OK);
    assert_eq!(image.headers[header::CONTENT_TYPE], "image/jpeg");

    let skus = call(&h, "GET", "/golden", &session, None).await;
    assert!(
        skus.text.contains("<td class=\"num mono samples\">6</td>"),
        "{}",
        skus.text
    );
    let set = call(&h, "GET", "/golden/WK-KN-200", &session, None).await;
    assert!(set.text.contains("<span id=\"sample-count\">6</span>"));
    assert!(set.text.contains("<dd class=\"version\">v1</dd>"));

    // The Overview counts this shift's parts from the hourly aggregates.
    let overview = call(&h, "GET", "/overview?range=shift&facility=", &session, None).await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.text);
    assert!(
        overview.text.contains("id=\"kpi-parts\">2<"),
        "{}",
        overview.text
    );
    assert!(overview.text.contains("id=\"kpi-ng\">1<"));
    assert!(overview.text.contains("id=\"p-chart\""));
    let live = call(&h, "GET", "/live", &session, None).await;
    assert!(live.text.contains(&format!("data-id=\"{ng_id}\"")));
    assert!(
        !live.text.contains(ok["id"].as_str().unwrap()),
        "NG parts only"
    );

    // A review from the part's page, with the page's token; none without it.
    let uri = format!("/results/{ng_id}/feedback");
    let token = detail.csrf();
    let refused = call(
        &h,
        "POST",
        &uri,
        &session,
        Some(&form(&[("verdict", "confirmed")])),
    )
    .await;
    assert_eq!(refused.json()["error"]["code"], "csrf_rejected");
    let body = form(&[
        ("csrf", &token),
        ("verdict", "confirmed"),
        ("comment", "seen"),
    ]);
    let reviewed = call(&h, "POST", &uri, &session, Some(&body)).await;
    assert_eq!(reviewed.status, StatusCode::SEE_OTHER, "{}", reviewed.text);
    let detail = call(&h, "GET", &format!("/results/{ng_id}"), &session, None).await;
    assert!(
        detail.text.contains("data-verdict=\"confirmed\""),
        "{}",
        detail.text
    );
    let (_, capability) = get_json(&h, "/api/v1/capability?sku=WK-KN-200").await;
    assert_eq!(capability["true_positives"], 1, "{capability}");

    let fleet = call(&h, "GET", "/fleet", &session, None).await;
    assert_eq!(fleet.status, StatusCode::OK);
    assert!(fleet.text.contains("id=\"devices\""));
}

#[tokio::test]
async fn the_results_page_exports_its_filtered_set_and_reviews_the_selected_parts() {
    let h = harness().await;
    let storage = h.state.intake.storage.clone();
    let ng: Vec<_> = [
        crate::stats::completed(&storage, 0, true).await,
        crate::stats::completed(&storage, 1, true).await,
    ]
    .into();
    let ok = crate::stats::completed(&storage, 2, false).await;
    let pending = crate::stats::part(&storage, 3, "polish", "WK-KN-200", chrono::Utc::now()).await;
    let (session, _) = sign_in(&h, VIEWER).await;
    let session = session.unwrap();

    // The export link carries the page's filters, not its page.
    let page = call(
        &h,
        "GET",
        "/results?defect_detected=true&limit=1",
        &session,
        None,
    )
    .await;
    assert!(
        page.text
            .contains("id=\"export-csv\" href=\"/results/export.csv?defect_detected=true\""),
        "{}",
        page.text
    );
    let csv = call(
        &h,
        "GET",
        "/results/export.csv?defect_detected=true",
        &session,
        None,
    )
    .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        csv.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(lines.len(), 3, "{}", csv.text);
    assert!(lines[0].starts_with("id,defect_id,timestamp"));
    assert!(ng.iter().all(|id| csv.text.contains(&id.to_string())));
    let signed_out = call(&h, "GET", "/results/export.csv", "", None).await;
    assert_eq!(signed_out.location(), Some("/signin"));

    // One review of the selected parts, with the page's token; back to the same page.
    let all = call(&h, "GET", "/results", &session, None).await;
    assert!(
        all.text.contains("name=\"id\" type=\"checkbox\"")
            || all.text.contains("type=\"checkbox\" name=\"id\"")
    );
    assert!(
        !all.text
            .contains(&format!("name=\"id\" value=\"{pending}\"")),
        "a part without a verdict cannot be selected"
    );
    let token = all.csrf();
    let (ng0, ok_id) = (ng[0].to_string(), ok.to_string());
    let selected = [
        ("id", ng0.as_str()),
        ("id", ok_id.as_str()),
        ("verdict", "incorrect"),
        ("comment", ""),
        ("back", "/results?defect_detected=true"),
    ];
    let refused = call(
        &h,
        "POST",
        "/results/feedback",
        &session,
        Some(&form(&selected)),
    )
    .await;
    assert_eq!(refused.json()["error"]["code"], "csrf_rejected");
    let mut with_token = selected.to_vec();
    with_token.push(("csrf", &token));
    let reviewed = call(
        &h,
        "POST",
        "/results/feedback",
        &session,
        Some(&form(&with_token)),
    )
    .await;
    assert_eq!(reviewed.status, StatusCode::SEE_OTHER, "{}", reviewed.text);
    assert_eq!(reviewed.location(), Some("/results?defect_detected=true"));
    let all = call(&h, "GET", "/results", &session, None).await;
    assert_eq!(all.text.matches("data-feedback=\"false_ng\"").count(), 1);
    assert_eq!(all.text.matches("data-feedback=\"false_ok\"").count(), 1);
    let (_, c) = get_json(&h, "/api/v1/capability?sku=WK-KN-200").await;
    assert_eq!(
        (&c["false_positives"], &c["false_negatives"]),
        (&json!(1), &json!(1))
    );

    // What cannot be reviewed is named on a page of its own.
    let pending_id = pending.to_string();
    let mixed = form(&[
        ("csrf", token.as_str()),
        ("id", ng[1].to_string().as_str()),
        ("id", pending_id.as_str()),
        ("verdict", "confirmed"),
    ]);
    let answer = call(&h, "POST", "/results/feedback", &session, Some(&mixed)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert!(
        answer.text.contains("1 part(s) reviewed, 1 refused"),
        "{}",
        answer.text
    );
    assert!(answer.text.contains(&format!("data-id=\"{pending}\"")));
}

#[tokio::test]
async fn a_false_ng_joins_its_golden_set_in_one_click_and_an_admin_edits_the_set_from_its_page() {
    let h = harness().await;
    let golden: Vec<Vec<u8>> = (0..6).map(|seed| part_jpeg(None, 50_000 + seed)).collect();
    let (status, body) = upload_golden(&h, "/api/v1/skus/WK-KN-200/golden", &golden).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ng_image = part_jpeg(Some(SynthDefect::Rust), 90_002);
    let (_, ng) = analyze(&h, ng_image.clone()).await;
    assert_eq!(ng["defect_detected"], true, "{ng}");
    let ng_id = ng["id"].as_str().unwrap().to_string();

    // The API: an admin's, and only for a part reviewed good.
    let add = format!("/api/v1/analyses/{ng_id}/golden");
    let (s, e) = post_json(&h, &add, VIEWER, json!({})).await;
    assert_eq!((s, code(&e)), (StatusCode::FORBIDDEN, "forbidden"));
    let (s, e) = post_json(&h, &add, ADMIN, json!({})).await;
    assert_eq!((s, code(&e)), (StatusCode::CONFLICT, "not_reviewed_good"));

    let (session, _) = sign_in(&h, ADMIN).await;
    let session = session.unwrap();
    let detail = call(&h, "GET", &format!("/results/{ng_id}"), &session, None).await;
    assert!(!detail.text.contains("add-golden"), "not reviewed yet");
    let token = detail.csrf();
    let reviewed = call(
        &h,
        "POST",
        &format!("/results/{ng_id}/feedback"),
        &session,
        Some(&form(&[("csrf", &token), ("verdict", "false_ng")])),
    )
    .await;
    assert_eq!(reviewed.status, StatusCode::SEE_OTHER);
    let detail = call(&h, "GET", &format!("/results/{ng_id}"), &session, None).await;
    assert!(
        detail.text.contains("class=\"add-golden\""),
        "{}",
        detail.text
    );

    // The capability page counts it a false positive and lists it as a false NG.
    let capability = call(&h, "GET", "/capability?range=all", &session, None).await;
    assert_eq!(capability.status, StatusCode::OK, "{}", capability.text);
    assert!(
        capability.text.contains("<td class=\"num mono fp\">1</td>"),
        "{}",
        capability.text
    );
    assert!(
        capability
            .text
            .contains("<span id=\"false-ng-count\">1</span>")
    );
    assert!(
        capability
            .text
            .contains("<span id=\"false-ok-count\">0</span>")
    );
    let other = call(&h, "GET", "/capability?sku=WK-XX-1", &session, None).await;
    assert!(other.text.contains("<span id=\"false-ng-count\">0</span>"));

    // One click: the image joins the set, a new model version is fitted.
    let added = call(
        &h,
        "POST",
        &format!("/results/{ng_id}/golden"),
        &session,
        Some(&form(&[("csrf", &token)])),
    )
    .await;
    assert_eq!(
        added.location(),
        Some("/golden/WK-KN-200"),
        "{}",
        added.text
    );
    let set = call(&h, "GET", "/golden/WK-KN-200", &session, None).await;
    assert!(set.text.contains("<span id=\"sample-count\">7</span>"));
    assert!(
        set.text.contains("<dd class=\"version\">v2</dd>"),
        "{}",
        set.text
    );
    assert!(set.text.contains("id=\"golden-upload\""));

    // Remove it again, and upload a good part, from the set's page.
    let digest = wiko_wire::frame::image_digest(&ng_image);
    let removed = call(
        &h,
        "POST",
        &format!("/golden/WK-KN-200/{digest}/remove"),
        &session,
        Some(&form(&[("csrf", &token)])),
    )
    .await;
    assert_eq!(
        removed.location(),
        Some("/golden/WK-KN-200"),
        "{}",
        removed.text
    );
    // The token is the form's first part (never in the URL, which logs keep).
    let upload = |uri: &str, csrf: Option<&str>| {
        let image = part_jpeg(None, 50_010);
        let mut parts: Vec<(&str, &str, &[u8])> = Vec::new();
        if let Some(token) = csrf {
            parts.push(("csrf", "text/plain", token.as_bytes()));
        }
        parts.push(("image", "image/jpeg", &image));
        let body = multipart(&parts);
        Request::post(uri)
            .header(header::COOKIE, session.as_str())
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(Body::from(body))
            .unwrap()
    };
    for (uri, csrf) in [
        ("/golden/WK-KN-200", Some("forged")),
        ("/golden/WK-KN-200", None),
        (&*format!("/golden/WK-KN-200?csrf={token}"), None),
    ] {
        let (status, body) = request(&h, upload(uri, csrf)).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::FORBIDDEN, "csrf_rejected"),
            "{uri} {csrf:?}"
        );
    }
    // A token field is read up to 256 bytes, not buffered up to the body limit.
    let long = "x".repeat(257);
    let (status, body) = request(&h, upload("/golden/WK-KN-200", Some(&long))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_field")
    );
    let uploaded = wiko_cloud::app(h.state.clone())
        .oneshot(upload("/golden/WK-KN-200", Some(&token)))
        .await
        .unwrap();
    assert_eq!(uploaded.status(), StatusCode::SEE_OTHER);
    let set = call(&h, "GET", "/golden/WK-KN-200", &session, None).await;
    assert!(set.text.contains("<span id=\"sample-count\">7</span>"));
    assert!(
        set.text.contains("<dd class=\"version\">v4</dd>"),
        "{}",
        set.text
    );
    assert!(
        !set.text.contains(&digest),
        "the false NG is out of the set"
    );

    // A viewer sees the set but none of its forms, and cannot add.
    let (viewer, _) = sign_in(&h, VIEWER).await;
    let viewer = viewer.unwrap();
    let set = call(&h, "GET", "/golden/WK-KN-200", &viewer, None).await;
    assert!(!set.text.contains("golden-upload") && !set.text.contains("/remove"));
    let detail = call(&h, "GET", &format!("/results/{ng_id}"), &viewer, None).await;
    assert!(!detail.text.contains("add-golden"));
    let refused = call(
        &h,
        "POST",
        &format!("/results/{ng_id}/golden"),
        &viewer,
        Some(&form(&[("csrf", &detail.csrf())])),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // The Overview over custom plant days: today holds the part.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let overview = call(
        &h,
        "GET",
        &format!("/overview?range=custom&from={today}&to={today}"),
        &session,
        None,
    )
    .await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.text);
    assert!(
        overview.text.contains("id=\"kpi-parts\">1<"),
        "{}",
        overview.text
    );
    assert!(overview.text.contains("<option value=\"custom\" selected>"));
}

/// `uri`'s status and body bytes, with `cookie`.
async fn bytes_with(h: &Harness, uri: &str, cookie: &str) -> (StatusCode, Vec<u8>) {
    let req = Request::get(uri)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap();
    request_bytes(h, req).await
}

#[tokio::test]
async fn a_parts_page_toggles_its_heat_map_under_the_model_that_judged_it() {
    let h = harness().await;
    let golden: Vec<Vec<u8>> = (0..6).map(|seed| part_jpeg(None, 50_000 + seed)).collect();
    let (status, body) = upload_golden(&h, "/api/v1/skus/WK-KN-200/golden", &golden).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, ng) = analyze(&h, part_jpeg(Some(SynthDefect::Rust), 90_002)).await;
    assert_eq!(ng["defect_detected"], true, "{ng}");
    let id = ng["id"].as_str().unwrap();
    let (session, _) = sign_in(&h, VIEWER).await;
    let session = session.unwrap();

    let detail = call(&h, "GET", &format!("/results/{id}"), &session, None).await;
    assert!(
        detail.text.contains("id=\"toggle-heat\""),
        "{}",
        detail.text
    );
    assert!(
        detail
            .text
            .contains(&format!("data-src=\"/results/{id}/heatmap\""))
    );
    // Not drawn until toggled: the page holds no `src` for it.
    assert!(
        !detail
            .text
            .contains(&format!(" src=\"/results/{id}/heatmap\""))
    );

    let (status, jpeg) = bytes_with(&h, &format!("/results/{id}/heatmap"), &session).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        image::guess_format(&jpeg).unwrap(),
        image::ImageFormat::Jpeg
    );
    let heat = image::load_from_memory(&jpeg).unwrap().to_rgb8();
    assert_eq!(
        (u64::from(heat.width()), u64::from(heat.height())),
        (
            ng["image_width"].as_u64().unwrap(),
            ng["image_height"].as_u64().unwrap()
        )
    );
    // Red where the defect is: more inside its box than over the whole image.
    let redness = |x0: u32, y0: u32, w: u32, h: u32| {
        let mut sum = 0.0;
        for y in y0..(y0 + h).min(heat.height()) {
            for x in x0..(x0 + w).min(heat.width()) {
                let p = heat.get_pixel(x, y);
                sum += f64::from(p[0]) - f64::from(p[1]);
            }
        }
        sum / f64::from(w * h)
    };
    let b: Vec<u32> = ng["defects"][0]["bbox"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let (inside, overall) = (
        redness(b[0], b[1], b[2], b[3]),
        redness(0, 0, heat.width(), heat.height()),
    );
    assert!(inside > overall + 20.0, "{inside} vs {overall}");

    // A part no model scored has none; without a session, the sign-in page.
    let storage = h.state.intake.storage.clone();
    let unjudged = crate::stats::part(&storage, 7, "polish", "WK-XX-1", chrono::Utc::now()).await;
    let mut uncalibrated = crate::stats::outcome(wiko_wire::AnalysisStatus::NotCalibrated, vec![]);
    (
        uncalibrated.judgement.score,
        uncalibrated.judgement.model_version,
    ) = (None, None);
    storage
        .records
        .complete(unjudged, uncalibrated)
        .await
        .unwrap();
    let refused = call(
        &h,
        "GET",
        &format!("/results/{unjudged}/heatmap"),
        &session,
        None,
    )
    .await;
    assert_eq!(
        (refused.status, refused.json()["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_judged")),
        "{}",
        refused.text
    );
    let page = call(&h, "GET", &format!("/results/{unjudged}"), &session, None).await;
    assert!(!page.text.contains("toggle-heat"));
    let anonymous = call(&h, "GET", &format!("/results/{id}/heatmap"), "", None).await;
    assert_eq!(anonymous.location(), Some("/signin"));
}

/// The value of `name{labels}` in Prometheus text (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn heat_maps_are_counted_as_drawn_or_refused_busy() {
    let h = harness().await;
    let golden: Vec<Vec<u8>> = (0..6).map(|seed| part_jpeg(None, 51_000 + seed)).collect();
    let (status, body) = upload_golden(&h, "/api/v1/skus/WK-KN-200/golden", &golden).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, ng) = analyze(&h, part_jpeg(Some(SynthDefect::Scratch), 91_003)).await;
    let id = ng["id"].as_str().unwrap().to_string();
    let (session, _) = sign_in(&h, VIEWER).await;
    let session = session.unwrap();
    // This test's metrics only: every request below is polled on this thread (the drawing
    // runs on the blocking pool, the counting after it here).
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let uri = format!("/results/{id}/heatmap");
    // Four at once: two places, so two drawn and two refused (each takes its place, or is
    // refused, before any of them awaits).
    let answers = futures::future::join_all((0..4).map(|_| bytes_with(&h, &uri, &session))).await;
    let mut statuses: Vec<u16> = answers.iter().map(|(s, _)| s.as_u16()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 503, 503]);
    let text = metrics.render();
    let drawn = "wiko_cloud_heatmaps_total{outcome=\"drawn\"}";
    let busy = "wiko_cloud_heatmaps_total{outcome=\"busy\"}";
    assert_eq!(
        (sample(&text, drawn), sample(&text, busy)),
        (2.0, 2.0),
        "{text}"
    );
    // The places are free again: one more is drawn.
    assert_eq!(bytes_with(&h, &uri, &session).await.0, StatusCode::OK);
    let text = metrics.render();
    assert_eq!(
        (sample(&text, drawn), sample(&text, busy)),
        (3.0, 2.0),
        "{text}"
    );
}

/// The toggle is offered only for a model version that is stored and loads; otherwise the
/// page says why (what the heat map would answer).
// See: issue #23
#[tokio::test]
async fn a_parts_page_says_why_there_is_no_heat_map_when_its_model_is_gone_or_broken() {
    let h = harness().await;
    let storage = h.state.intake.storage.clone();
    let (session, _) = sign_in(&h, VIEWER).await;
    let session = session.unwrap();
    let judged_by = |version: &'static str| {
        let storage = storage.clone();
        async move {
            let id =
                crate::stats::part(&storage, 3, "polish", "WK-KN-150", chrono::Utc::now()).await;
            let mut outcome = crate::stats::outcome(wiko_wire::AnalysisStatus::Final, Vec::new());
            outcome.judgement.model_version = Some(version.into());
            storage.records.complete(id, outcome).await.unwrap();
            id
        }
    };
    // Judged by a version no longer stored.
    let gone = judged_by("v7").await;
    let page = call(&h, "GET", &format!("/results/{gone}"), &session, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.text.contains("toggle-heat"), "{}", page.text);
    assert!(!page.text.contains("/heatmap"), "{}", page.text);
    assert!(
        page.text
            .contains("No heat map: model v7 of WK-KN-150 is not stored"),
        "{}",
        page.text
    );
    // Judged by a stored version whose file no longer loads.
    storage
        .records
        .save_model(wiko_cloud::store::StoredModel {
            sku: "WK-KN-150".into(),
            version: "v8".into(),
            body: b"not a model file".to_vec(),
        })
        .await
        .unwrap();
    let broken = judged_by("v8").await;
    let page = call(&h, "GET", &format!("/results/{broken}"), &session, None).await;
    assert!(!page.text.contains("toggle-heat"), "{}", page.text);
    assert!(
        page.text.contains("No heat map: model v8 does not load"),
        "{}",
        page.text
    );
    if std::env::var("WIKOTEST_BACKEND").as_deref() == Ok("postgres") {
        return; // the rest breaks the embedded store's file
    }
    // The stored versions can no longer be read: v8's answer was kept (a stored version never
    // changes), v7 is asked again and the page shows the heat map as unavailable, not a 500.
    let db = rusqlite::Connection::open(h.place.dir.path().join("wiko.db")).unwrap();
    db.execute_batch("DROP TABLE model_versions").unwrap();
    let again = judged_by("v8").await;
    let page = call(&h, "GET", &format!("/results/{again}"), &session, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.text.contains("No heat map: model v8 does not load"),
        "{}",
        page.text
    );
    let page = call(&h, "GET", &format!("/results/{gone}"), &session, None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(!page.text.contains("toggle-heat"), "{}", page.text);
    assert!(
        page.text
            .contains("No heat map: the model store could not be read, retry later"),
        "{}",
        page.text
    );
}

#[tokio::test]
async fn a_parts_kept_mqtt_messages_are_forgotten_oldest_first_a_batch_at_a_time() {
    let h = harness().await;
    let storage = h.state.intake.storage.clone();
    let store = storage.records.clone();
    // Each part's result event acknowledged in turn (what `alert::Publisher` does).
    let mut parts = Vec::new();
    for n in 1..=4 {
        let id = crate::stats::completed(&storage, n, n % 2 == 0).await;
        let events: Vec<i64> = store
            .outbox(100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        store.outbox_done(events).await.unwrap();
        parts.push(id);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let before_last = store.published_for(parts[3]).await.unwrap()[0].at;
    let kept = |id| {
        let store = store.clone();
        async move { store.published_for(id).await.unwrap().len() }
    };
    // Older than the last one's: at most two a statement, the oldest first.
    assert_eq!(
        store.prune_published_events(before_last, 2).await.unwrap(),
        2
    );
    assert_eq!((kept(parts[0]).await, kept(parts[1]).await), (0, 0));
    assert_eq!(kept(parts[2]).await, 1);
    assert_eq!(
        store.prune_published_events(before_last, 2).await.unwrap(),
        1
    );
    assert_eq!(
        store.prune_published_events(before_last, 2).await.unwrap(),
        0
    );
    assert_eq!(kept(parts[2]).await, 0);
    assert_eq!(kept(parts[3]).await, 1, "published since: kept");
}

#[tokio::test]
async fn a_parts_page_lists_the_mqtt_messages_the_broker_acknowledged_for_it() {
    let h = harness().await;
    let storage = h.state.intake.storage.clone();
    let store = storage.records.clone();
    let ng = crate::stats::completed(&storage, 1, true).await;
    let ok = crate::stats::completed(&storage, 2, false).await;
    let (session, _) = sign_in(&h, VIEWER).await;
    let session = session.unwrap();
    let page = |id: uuid::Uuid| {
        let (h, session) = (&h, session.clone());
        async move {
            call(h, "GET", &format!("/results/{id}"), &session, None)
                .await
                .text
        }
    };
    let before = page(ng).await;
    assert!(before.contains("id=\"mqtt-messages\""), "{before}");
    assert!(before.contains("None yet."), "queued, not acknowledged yet");

    // The publisher's PUBACK of every message of the events (what `alert::Publisher` does).
    let events: Vec<i64> = store
        .outbox(100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(events.len(), 2);
    store.outbox_done(events.clone()).await.unwrap();
    store.outbox_done(events).await.unwrap();
    // Kept after the outbox forgot them (`mqtt.replay_secs`).
    store
        .prune_published(chrono::Utc::now() + chrono::TimeDelta::seconds(1))
        .await
        .unwrap();
    assert!(store.outbox(100).await.unwrap().is_empty());

    let topic =
        |kind: &str| format!("<td class=\"mono topic\">wiko/yangjiang/l1/polish/{kind}</td>");
    let ng_page = page(ng).await;
    assert_eq!(ng_page.matches(&topic("result")).count(), 1, "{ng_page}");
    assert_eq!(
        ng_page.matches(&topic("alert")).count(),
        1,
        "an NG part is alerted"
    );
    assert!(ng_page.contains(&format!("&quot;result_id&quot;:&quot;{ng}&quot;")));
    let ok_page = page(ok).await;
    assert_eq!(ok_page.matches(&topic("result")).count(), 1, "{ok_page}");
    assert_eq!(ok_page.matches(&topic("alert")).count(), 0);
    assert!(!ok_page.contains("None yet."));
}
