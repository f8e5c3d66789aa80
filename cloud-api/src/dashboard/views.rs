//! The pages' HTML. Every function returns markup and does no IO; numbers a test reads carry a
//! `data-` attribute or an id.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use wiko_wire::{
    Analysis, AnalysisStatus, BulkReviewed, BulkVerdict, Capability, Device, DeviceState,
    FeedbackVerdict, GoldenSet, SkuSummary,
};

use crate::alert::Sent;
use crate::auth::Principal;

/// The sections of the navigation bar.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Live,
    Results,
    Capability,
    Golden,
    Fleet,
}

impl Section {
    const ALL: [Section; 6] = [
        Section::Overview,
        Section::Live,
        Section::Results,
        Section::Capability,
        Section::Golden,
        Section::Fleet,
    ];

    fn href(self) -> &'static str {
        match self {
            Section::Overview => "/overview",
            Section::Live => "/live",
            Section::Results => "/results",
            Section::Capability => "/capability",
            Section::Golden => "/golden",
            Section::Fleet => "/fleet",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Section::Overview => "Overview",
            Section::Live => "Live",
            Section::Results => "Results",
            Section::Capability => "Capability",
            Section::Golden => "Golden sets",
            Section::Fleet => "Fleet",
        }
    }
}

/// Who is signed in, and the token their forms carry.
pub struct Viewer<'a> {
    pub principal: &'a Principal,
    pub csrf: &'a str,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Wiko" }
            link rel="stylesheet" href="/assets/style.css";
        }
    }
}

/// A page of the signed-in dashboard.
pub fn page(title: &str, section: Section, viewer: &Viewer<'_>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href="/" { span.mark { "W" } "Wiko " span.sub { "Defect Analyzer" } }
                    nav {
                        @for s in Section::ALL {
                            a href=(s.href()) class=[(s == section).then_some("active")] { (s.label()) }
                        }
                    }
                    div.who {
                        span.key data-scope=(viewer.principal.scope.as_str()) {
                            (viewer.principal.name) " · " (viewer.principal.scope.as_str())
                        }
                        form method="post" action="/signout" {
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
                script src="/assets/app.js" defer {}
            }
        }
    }
}

/// The sign-in form; `error` after a refused key.
pub fn signin(csrf: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body.signin {
                form.card method="post" action="/signin" {
                    div.brand { span.mark { "W" } "Wiko " span.sub { "Defect Analyzer" } }
                    p.muted { "Sign in with a viewer or admin API key." }
                    @if let Some(e) = error { p.error role="alert" { (e) } }
                    label for="key" { "API key" }
                    input #key type="password" name="key" autocomplete="current-password" required autofocus;
                    input type="hidden" name="csrf" value=(csrf);
                    button.primary type="submit" { "Sign in" }
                }
            }
        }
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn status_name(s: AnalysisStatus) -> &'static str {
    match s {
        AnalysisStatus::Pending => "pending",
        AnalysisStatus::NotCalibrated => "not calibrated",
        AnalysisStatus::Provisional => "provisional",
        AnalysisStatus::Final => "final",
        AnalysisStatus::Failed => "failed",
    }
}

/// NG, OK, or what the part is waiting for.
fn verdict(a: &Analysis) -> Markup {
    match a.status {
        AnalysisStatus::Pending | AnalysisStatus::NotCalibrated | AnalysisStatus::Failed => {
            html! { span.badge.wait { (status_name(a.status)) } }
        }
        _ if a.defect_detected => html! { span.badge.ng { "NG" } },
        _ => html! { span.badge.ok { "OK" } },
    }
}

/// A part's defect types, each once with how many, in the order first found.
fn defect_kinds(a: &Analysis) -> Vec<(String, usize)> {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for d in &a.defects {
        let name = d.kind.as_str().replace('_', " ");
        match kinds.iter_mut().find(|(k, _)| *k == name) {
            Some((_, n)) => *n += 1,
            None => kinds.push((name, 1)),
        }
    }
    kinds
}

fn score(a: &Analysis) -> String {
    match (a.score, a.score_threshold) {
        (Some(s), Some(t)) => format!("{s:.3} / {t:.3}"),
        (Some(s), None) => format!("{s:.3}"),
        _ => "–".into(),
    }
}

/// The filters the results page takes, as the list API names them.
pub const FILTERS: [(&str, &str); 5] = [
    ("facility", "Facility"),
    ("line", "Line"),
    ("station", "Station"),
    ("sku", "SKU"),
    ("device_id", "Device"),
];

/// Where the results page links to: its next page, its CSV export, and the query it was
/// asked with (where a bulk review returns).
pub struct ResultLinks<'a> {
    pub next: Option<&'a str>,
    pub export: &'a str,
    pub back: &'a str,
}

/// Whether a result has a verdict a person can review.
fn judged(a: &Analysis) -> bool {
    matches!(
        a.status,
        AnalysisStatus::Provisional | AnalysisStatus::Final
    )
}

/// The results: filters, a table of parts to select and review at once, the CSV export of the
/// filtered set, and the next page's link.
pub fn results(
    value: &dyn Fn(&str) -> String,
    items: &[Analysis],
    links: &ResultLinks<'_>,
    csrf: &str,
) -> Markup {
    let detected = value("defect_detected");
    let defect_type = value("defect_type");
    let reviewed = value("feedback");
    html! {
        form.filters method="get" action="/results" {
            @for (name, label) in FILTERS {
                label { span { (label) } input type="text" name=(name) value=(value(name)); }
            }
            label { span { "Verdict" }
                select name="defect_detected" {
                    option value="" selected[detected.is_empty()] { "Any" }
                    option value="true" selected[detected == "true"] { "NG" }
                    option value="false" selected[detected == "false"] { "OK" }
                }
            }
            label { span { "Defect" }
                select name="defect_type" {
                    option value="" { "Any" }
                    @for t in wiko_wire::DefectType::ALL {
                        option value=(t.as_str()) selected[defect_type == t.as_str()] { (t.as_str().replace('_', " ")) }
                    }
                }
            }
            label { span { "Review" }
                select name="feedback" {
                    option value="" selected[reviewed.is_empty()] { "Any" }
                    option value="none" selected[reviewed == "none"] { "Not reviewed" }
                    option value="any" selected[reviewed == "any"] { "Reviewed" }
                    @for v in FeedbackVerdict::ALL {
                        option value=(v.as_str()) selected[reviewed == v.as_str()] { (v.as_str().replace('_', " ")) }
                    }
                }
            }
            label { span { "From (UTC)" } input type="datetime-local" name="since" value=(value("since")); }
            label { span { "To (UTC)" } input type="datetime-local" name="until" value=(value("until")); }
            div.actions {
                button.primary type="submit" { "Apply" }
                a.button href="/results" { "Clear" }
                a.button #export-csv href=(links.export) download { "Export CSV" }
            }
        }
        form #bulk method="post" action="/results/feedback" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="back" value=(links.back);
            div.bulkbar {
                span.count { span #result-count { (items.len()) } " parts on this page" }
                span.muted { "Selected parts:" }
                input type="text" name="comment" placeholder="Comment (optional)" maxlength="1000";
                @for v in BulkVerdict::ALL {
                    button type="submit" name="verdict" value=(v.as_str()) class={ "bulk-" (v.as_str()) } {
                        (match v {
                            BulkVerdict::Confirmed => "Correct",
                            BulkVerdict::Incorrect => "Incorrect",
                            BulkVerdict::Inconclusive => "Inconclusive",
                        })
                    }
                }
            }
            (results_table(items))
        }
        @if let Some(next) = links.next { p.pager { a.button #next-page href=(next) { "Older parts →" } } }
    }
}

/// The results' rows, each judged one with a box to select it.
fn results_table(items: &[Analysis]) -> Markup {
    html! {
        table.grid #results {
            thead { tr {
                th.pick { input #select-all type="checkbox" aria-label="Select every judged part"; }
                th { "Image" } th { "Time (UTC)" } th { "Line / station" } th { "SKU" }
                th { "Part" } th { "Verdict" } th { "Defects" } th.num { "Score / threshold" } th { "Status" } th { "Review" }
            } }
            tbody {
                @for a in items {
                    tr data-id=(a.id) data-verdict=(if a.defect_detected { "ng" } else { "ok" }) {
                        td.pick { @if judged(a) { input type="checkbox" name="id" value=(a.id) aria-label="Select"; } }
                        td.thumb { a href={ "/results/" (a.id) } {
                            img src={ "/results/" (a.id) "/thumbnail" } alt="part" loading="lazy" width="96" height="54";
                        } }
                        td.mono { a href={ "/results/" (a.id) } { (time(a.timestamp)) } }
                        td { (a.facility) " · " (a.line) " / " (a.station) }
                        td { (a.product_sku) }
                        td.mono { (a.part_id.as_deref().unwrap_or("–")) }
                        td { (verdict(a)) }
                        td { @for (kind, n) in defect_kinds(a) {
                            span.tag { (kind) @if n > 1 { " ×" (n) } }
                        } }
                        td.num.mono { (score(a)) }
                        td { (status_name(a.status)) }
                        td.review data-feedback=(a.feedback.as_ref().map_or("", |f| f.verdict.as_str())) {
                            @if let Some(f) = &a.feedback { span.tag.review { (f.verdict.as_str().replace('_', " ")) } }
                        }
                    }
                }
                @if items.is_empty() { tr { td.empty colspan="11" { "No parts match these filters." } } }
            }
        }
    }
}

/// What a bulk review recorded and refused, when it refused any.
pub fn bulk_reviewed(answer: &BulkReviewed, back: &str) -> Markup {
    html! {
        p #bulk-summary { (answer.reviewed.len()) " part(s) reviewed, " (answer.refused.len()) " refused:" }
        table.grid #refused {
            thead { tr { th { "Part" } th { "Why" } } }
            tbody {
                @for r in &answer.refused {
                    tr data-id=(r.id) {
                        td.mono { a href={ "/results/" (r.id) } { (r.id) } }
                        td { (r.error.message) }
                    }
                }
            }
        }
        p.pager { a.button href=(back) { "← Back to the results" } }
    }
}

/// One part: the image with its defects boxed (and the heat map's toggle, or why there is no
/// heat map: `no_heatmap`), the verdict and where it came from, the MQTT messages the cloud
/// sent for it; `admin` may add a part reviewed good to its golden set.
pub fn detail(
    a: &Analysis,
    sent: &[Sent],
    no_heatmap: Option<&str>,
    csrf: &str,
    admin: bool,
) -> Markup {
    let (w, h) = (a.image_width.max(1), a.image_height.max(1));
    let stroke = (w.max(h) / 250).max(2);
    let font = (w.max(h) / 45).max(12);
    // The model version that scored it is stored and loads: it can draw the map again.
    let mappable = no_heatmap.is_none();
    html! {
        div.detail {
            figure.part {
                div.overlay {
                    img src={ "/results/" (a.id) "/image" } alt="the part";
                    @if mappable {
                        // Drawn on the first toggle (`app.js` sets its `src`).
                        img.heat.hidden #heat data-src={ "/results/" (a.id) "/heatmap" } alt="anomaly heat map";
                    }
                    svg viewBox={ "0 0 " (w) " " (h) } preserveAspectRatio="none" #boxes {
                        @for (i, d) in a.defects.iter().enumerate() {
                            @let [x, y, bw, bh] = d.bbox;
                            g.defect data-type=(d.kind.as_str()) {
                                title { (i + 1) ": " (d.kind.as_str().replace('_', " ")) " " (format!("{:.0}%", d.confidence * 100.0)) }
                                rect x=(x) y=(y) width=(bw) height=(bh) stroke-width=(stroke) {}
                                text x=(x) y=(y.saturating_sub(stroke * 2).max(font)) font-size=(font) { (i + 1) }
                            }
                        }
                    }
                }
                figcaption.muted {
                    label.toggle { input #toggle-boxes type="checkbox" checked; " Defect boxes" }
                    @match no_heatmap {
                        None => { " · " label.toggle { input #toggle-heat type="checkbox"; " Heat map (model " (a.model_version.as_deref().unwrap_or("")) ")" } }
                        Some(why) => { " · " span #no-heatmap title=(why) { "No heat map: " (why) } }
                    }
                    " · " (a.image_width) " × " (a.image_height) " px · " (a.defects.len()) " defect(s)"
                }
            }
            aside.facts {
                div.verdict-line { (verdict(a)) span.status { (status_name(a.status)) } }
                (score_bar(a))
                table.kv {
                    tr { th { "Time (UTC)" } td.mono { (time(a.timestamp)) } }
                    tr { th { "Facility" } td { (a.facility) } }
                    tr { th { "Line / station" } td { (a.line) " / " (a.station) } }
                    tr { th { "SKU" } td #sku { (a.product_sku) } }
                    tr { th { "Part / lot" } td { (a.part_id.as_deref().unwrap_or("–")) " / " (a.lot.as_deref().unwrap_or("–")) } }
                    tr { th { "Device" } td { (a.device_id.as_deref().unwrap_or("–")) } }
                    tr { th { "Analyzer" } td #analyzer { (a.analyzer) " " (a.analyzer_version) } }
                    tr { th { "Model version" } td #model-version { (a.model_version.as_deref().unwrap_or("–")) } }
                    tr { th { "Latency" } td { (a.latency_ms.map_or("–".into(), |l| format!("{l:.0} ms"))) } }
                    tr { th { "Recommendation" } td { (a.recommendation) } }
                    tr { th { "Defect id" } td.mono { (a.defect_id) } }
                }
                (feedback(a, csrf))
                @if admin && crate::http::golden::reviewed_good(a) { (golden_button(a, csrf)) }
            }
        }
        h2 { "Defects" }
        table.grid #defects {
            thead { tr { th { "#" } th { "Type" } th { "Severity" } th.num { "Confidence" } th { "Box (x, y, w, h)" } th { "Description" } } }
            tbody {
                @for (i, d) in a.defects.iter().enumerate() {
                    tr {
                        td.mono { (i + 1) }
                        td { span.tag { (d.kind.as_str().replace('_', " ")) } }
                        td { (d.severity) }
                        td.num.mono { (format!("{:.0}%", d.confidence * 100.0)) }
                        td.mono { (format!("{}, {}, {}, {}", d.bbox[0], d.bbox[1], d.bbox[2], d.bbox[3])) }
                        td { (d.description) }
                    }
                }
                @if a.defects.is_empty() { tr { td.empty colspan="6" { "No defect found." } } }
            }
        }
        @if !a.verdicts.is_empty() {
            h2 { "Verdicts" }
            table.grid {
                thead { tr { th { "Where" } th { "Analyzer" } th { "Model" } th { "Verdict" } th.num { "Score" } th { "Summary" } } }
                tbody {
                    @for v in &a.verdicts {
                        tr {
                            td { (format!("{:?}", v.source).to_lowercase()) }
                            td { (v.analyzer) }
                            td { (v.model.as_deref().unwrap_or("–")) }
                            td { (match v.defect_detected { Some(true) => "NG", Some(false) => "OK", None => "–" }) }
                            td.num.mono { (v.score.map_or("–".into(), |s| format!("{s:.3}"))) }
                            td { (v.summary.as_deref().or(v.error.as_ref().map(|e| e.message.as_str())).unwrap_or("")) }
                        }
                    }
                }
            }
        }
        h2 { "MQTT messages" }
        p.muted { "What the cloud published for this part and the broker acknowledged (an alert the agent sent itself is not among them)." }
        table.grid #mqtt-messages {
            thead { tr { th { "Acknowledged (UTC)" } th { "Topic" } th { "Payload" } } }
            tbody {
                @for m in sent {
                    tr {
                        td.mono { (time(m.at)) }
                        td.mono.topic { (m.topic) }
                        td { details { summary { (m.payload.len()) " bytes" } pre.payload { (m.payload) } } }
                    }
                }
                @if sent.is_empty() { tr { td.empty colspan="3" { "None yet." } } }
            }
        }
    }
}

/// The one click that adds a part reviewed good to its SKU's golden set (a refit).
fn golden_button(a: &Analysis, csrf: &str) -> Markup {
    html! {
        form.inline method="post" action={ "/results/" (a.id) "/golden" } {
            input type="hidden" name="csrf" value=(csrf);
            button.add-golden type="submit" data-id=(a.id) { "Add to golden set" }
        }
    }
}

/// The ranges the capability page counts reviews over.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ReviewRange {
    Week,
    Month,
    All,
}

impl ReviewRange {
    const ALL: [ReviewRange; 3] = [ReviewRange::Week, ReviewRange::Month, ReviewRange::All];

    /// The range a query names; 7 days when it names none.
    pub fn parse(name: &str) -> ReviewRange {
        ReviewRange::ALL
            .into_iter()
            .find(|r| r.name() == name)
            .unwrap_or(ReviewRange::Week)
    }

    fn name(self) -> &'static str {
        match self {
            ReviewRange::Week => "7d",
            ReviewRange::Month => "30d",
            ReviewRange::All => "all",
        }
    }

    fn label(self) -> &'static str {
        match self {
            ReviewRange::Week => "7 days",
            ReviewRange::Month => "30 days",
            ReviewRange::All => "All time",
        }
    }

    /// Parts captured in the last this many days; `None`: all.
    pub fn days(self) -> Option<i64> {
        match self {
            ReviewRange::Week => Some(7),
            ReviewRange::Month => Some(30),
            ReviewRange::All => None,
        }
    }
}

/// What the capability page shows.
pub struct CapabilityView<'a> {
    pub range: ReviewRange,
    /// One SKU, or empty for every SKU.
    pub sku: &'a str,
    /// Per SKU: over every version, and per version that judged the reviewed parts.
    pub rows: &'a [(Capability, Vec<Capability>)],
    pub false_ok: &'a [Analysis],
    pub false_ng: &'a [Analysis],
    /// The form token, for an admin (who may add false NGs to their golden sets).
    pub csrf: Option<&'a str>,
}

fn percent(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{:.1}%", v * 100.0))
}

/// Each SKU's TP/FP/TN/FN from the reviews with precision, recall and false-reject rate, then
/// the false OKs and false NGs.
pub fn capability(v: &CapabilityView<'_>) -> Markup {
    html! {
        form.filters method="get" action="/capability" {
            label { span { "SKU" } input type="text" name="sku" value=(v.sku); }
            label { span { "Captured in" }
                select name="range" {
                    @for r in ReviewRange::ALL {
                        option value=(r.name()) selected[r == v.range] { (r.label()) }
                    }
                }
            }
            div.actions { button.primary type="submit" { "Apply" } }
        }
        p.muted { "Each reviewed part counts once, by its latest review; inconclusive reviews count in none of the four." }
        table.grid #capability {
            thead { tr {
                th { "SKU" } th { "Model version" } th.num { "TP" } th.num { "FP" } th.num { "TN" } th.num { "FN" } th.num { "Inconclusive" }
                th.num { "Precision" } th.num { "Recall" } th.num { "False-reject rate" }
            } }
            tbody {
                @for (all, versions) in v.rows {
                    (capability_row(all, false))
                    @for c in versions {
                        (capability_row(c, true))
                    }
                }
                @if v.rows.is_empty() { tr { td.empty colspan="10" { "No SKU has a golden set yet." } } }
            }
        }
        h2 { "False OK: passed, reviewed defective (" span #false-ok-count { (v.false_ok.len()) } ")" }
        (mistakes("false-ok", v.false_ok, None))
        h2 { "False NG: rejected, reviewed good (" span #false-ng-count { (v.false_ng.len()) } ")" }
        (mistakes("false-ng", v.false_ng, v.csrf))
    }
}

/// A SKU's counts over every version, or one version's beneath them (`data-version` the API's
/// `model_version`, empty where it is null: parts judged by no model version).
fn capability_row(c: &Capability, per_version: bool) -> Markup {
    let version = per_version.then(|| c.model_version.as_deref().unwrap_or_default());
    html! {
        tr.per-version[per_version] data-sku=(c.product_sku) data-version=[version] {
            td { @if !per_version { a href={ "/golden/" (c.product_sku) } { (c.product_sku) } } }
            td.mono { (match version { None => "all", Some("") => "–", Some(v) => v }) }
            td.num.mono.tp { (c.true_positives) }
            td.num.mono.fp { (c.false_positives) }
            td.num.mono.tn { (c.true_negatives) }
            td.num.mono.fn { (c.false_negatives) }
            td.num.mono { (c.inconclusive) }
            td.num.mono.precision { (percent(c.precision)) }
            td.num.mono.recall { (percent(c.recall)) }
            td.num.mono { (percent(c.false_reject_rate)) }
        }
    }
}

/// Reviewed mistakes, newest first; with a form token, each with its golden-set button.
fn mistakes(id: &str, items: &[Analysis], csrf: Option<&str>) -> Markup {
    html! {
        table.grid id=(id) {
            thead { tr {
                th { "Image" } th { "Time (UTC)" } th { "Line / station" } th { "SKU" } th { "Part" }
                th { "Defects" } th { "Reviewed by" } th { "Comment" } @if csrf.is_some() { th {} }
            } }
            tbody {
                @for a in items {
                    tr data-id=(a.id) {
                        td.thumb { a href={ "/results/" (a.id) } { img src={ "/results/" (a.id) "/thumbnail" } alt="part" loading="lazy" width="96" height="54"; } }
                        td.mono { a href={ "/results/" (a.id) } { (time(a.timestamp)) } }
                        td { (a.facility) " · " (a.line) " / " (a.station) }
                        td { (a.product_sku) }
                        td.mono { (a.part_id.as_deref().unwrap_or("–")) }
                        td { @for (kind, n) in defect_kinds(a) { span.tag { (kind) @if n > 1 { " ×" (n) } } } }
                        td { (a.feedback.as_ref().map_or("", |f| f.by.as_str())) }
                        td { (a.feedback.as_ref().and_then(|f| f.comment.as_deref()).unwrap_or("")) }
                        @if let Some(token) = csrf { td { (golden_button(a, token)) } }
                    }
                }
                @if items.is_empty() { tr { td.empty colspan="9" { "None in this range." } } }
            }
        }
    }
}

/// The latest review and the form to review the verdict (judged parts only).
fn feedback(a: &Analysis, csrf: &str) -> Markup {
    let judged = judged(a);
    html! {
        section.review #feedback {
            h2 { "Review" }
            @if let Some(f) = &a.feedback {
                p.latest #latest-feedback data-verdict=(f.verdict.as_str()) {
                    span.tag.review { (f.verdict.as_str().replace('_', " ")) }
                    " by " b { (f.by) } " · " (time(f.at))
                    @if let Some(c) = &f.comment { br; q { (c) } }
                }
            } @else {
                p.muted { "Not reviewed yet." }
            }
            @if judged {
                form method="post" action={ "/results/" (a.id) "/feedback" } {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="text" name="comment" placeholder="Comment (optional)" maxlength="1000";
                    div.verdicts {
                        @for v in FeedbackVerdict::ALL {
                            @if v.fits(a.defect_detected) {
                                button type="submit" name="verdict" value=(v.as_str()) class={ "review-" (v.as_str()) } {
                                    (match v {
                                        FeedbackVerdict::Confirmed => "Confirm",
                                        FeedbackVerdict::FalseNg => "False NG",
                                        FeedbackVerdict::FalseOk => "False OK",
                                        FeedbackVerdict::Inconclusive => "Inconclusive",
                                    })
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The live NG parts: the newest first; the script prepends each new one as it is committed.
pub fn live(items: &[Analysis]) -> Markup {
    html! {
        p.muted #live-status { "Connecting to the live feed…" }
        table.grid #live {
            thead { tr { th { "Image" } th { "Time (UTC)" } th { "Line / station" } th { "SKU" } th { "Part" } th { "Verdict" } th { "Defects" } } }
            tbody {
                @for a in items {
                    tr data-id=(a.id) {
                        td.thumb { a href={ "/results/" (a.id) } { img src={ "/results/" (a.id) "/thumbnail" } alt="part" width="96" height="54"; } }
                        td.mono { a href={ "/results/" (a.id) } { (time(a.timestamp)) } }
                        td { (a.facility) " · " (a.line) " / " (a.station) }
                        td { (a.product_sku) }
                        td.mono { (a.part_id.as_deref().unwrap_or("–")) }
                        td { (verdict(a)) }
                        td { @for (kind, n) in defect_kinds(a) { span.tag { (kind) @if n > 1 { " ×" (n) } } } }
                    }
                }
            }
        }
    }
}

/// The score against the threshold, as a bar.
fn score_bar(a: &Analysis) -> Markup {
    let (Some(score), Some(threshold)) = (a.score, a.score_threshold) else {
        return html! { p.muted { "No score." } };
    };
    let top = (score.max(threshold) * 1.25).max(f32::EPSILON);
    let at = |v: f32| (v / top * 300.0).clamp(0.0, 300.0);
    let over = score > threshold;
    html! {
        div.scorebar #score data-score=(score) data-threshold=(threshold) {
            svg viewBox="0 0 300 28" width="100%" height="28" preserveAspectRatio="none" {
                rect.track x="0" y="6" width="300" height="14" {}
                rect class=(if over { "fill ng" } else { "fill ok" }) x="0" y="6" width=(format!("{:.1}", at(score))) height="14" {}
                line.threshold x1=(format!("{:.1}", at(threshold))) x2=(format!("{:.1}", at(threshold))) y1="1" y2="27" {}
            }
            div.legend { span { "score " b.mono { (format!("{score:.3}")) } } span { "threshold " b.mono { (format!("{threshold:.3}")) } } }
        }
    }
}

/// Every SKU with a golden set.
pub fn golden_index(skus: &[SkuSummary]) -> Markup {
    html! {
        table.grid #skus {
            thead { tr { th { "SKU" } th.num { "Golden images" } th { "Active model" } th { "Method" } th.num { "Threshold" } th.num { "False-reject target" } th.num { "Trained on" } } }
            tbody {
                @for s in skus {
                    tr data-sku=(s.sku) {
                        td { a href={ "/golden/" (s.sku) } { (s.sku) } }
                        td.num.mono.samples { (s.samples) }
                        @if let Some(m) = &s.model {
                            td.version { (m.version) }
                            td { (m.method) }
                            td.num.mono { (format!("{:.3}", m.threshold)) }
                            td.num.mono { (format!("{:.1}%", m.false_reject_rate * 100.0)) }
                            td.num.mono { (m.trained_on) }
                        } @else {
                            td.version { "none yet" } td {} td {} td {} td {}
                        }
                    }
                }
                @if skus.is_empty() { tr { td.empty colspan="7" { "No golden sets yet: upload good parts with POST /api/v1/skus/{sku}/golden." } } }
            }
        }
    }
}

/// One SKU's golden set and its active model; with a form token (an admin's), the forms to
/// upload good parts and to remove an image.
pub fn golden_set(set: &GoldenSet, csrf: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = &set.model {
            dl.stats #model {
                div { dt { "Active model" } dd.version { (m.version) } }
                div { dt { "Method" } dd { (m.method) } }
                div { dt { "Threshold" } dd.mono { (format!("{:.3}", m.threshold)) } }
                div { dt { "False-reject target" } dd.mono { (format!("{:.1}%", m.false_reject_rate * 100.0)) } }
                div { dt { "Trained on" } dd.mono { (m.trained_on) " images" } }
            }
        } @else {
            p.muted { "No model yet: a model is fitted once the set holds five images." }
        }
        h2 { span #sample-count { (set.samples.len()) } " golden images" }
        @if let Some(token) = csrf {
            form.upload #golden-upload method="post" enctype="multipart/form-data" action={ "/golden/" (set.sku) } {
                // First: the handler reads the token before any image.
                input type="hidden" name="csrf" value=(token);
                label { span { "Good parts to add" } input type="file" name="image" accept="image/*" multiple required; }
                button.primary type="submit" { "Upload" }
            }
        }
        div.gallery {
            @for g in &set.samples {
                figure data-digest=(g.digest) {
                    img src={ "/golden/" (set.sku) "/" (g.digest) } alt="golden sample" loading="lazy";
                    figcaption.mono {
                        (g.digest.get(..12).unwrap_or(&g.digest)) " · " (time(g.added_at))
                        @if let Some(token) = csrf {
                            form.inline method="post" action={ "/golden/" (set.sku) "/" (g.digest) "/remove" } {
                                input type="hidden" name="csrf" value=(token);
                                button.link.remove type="submit" { "Remove" }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn state_badge(state: DeviceState) -> Markup {
    let class = match state {
        DeviceState::Ok => "badge ok",
        DeviceState::Behind | DeviceState::Degraded => "badge warn",
        DeviceState::CameraFailed | DeviceState::Silent => "badge ng",
    };
    html! { span class=(class) { (state.as_str().replace('_', " ")) } }
}

fn age(seconds: Option<f64>) -> String {
    match seconds {
        None => "never".into(),
        Some(s) if s < 120.0 => format!("{s:.0} s ago"),
        Some(s) if s < 7200.0 => format!("{:.0} min ago", s / 60.0),
        Some(s) => format!("{:.1} h ago", s / 3600.0),
    }
}

/// The fleet: every device, its state and last signs of life.
pub fn fleet(devices: &[Device], now: DateTime<Utc>) -> Markup {
    html! {
        dl.stats {
            @for state in DeviceState::ALL {
                div data-state=(state.as_str()) {
                    dt { (state.as_str().replace('_', " ")) }
                    dd.mono { (devices.iter().filter(|d| d.state == state).count()) }
                }
            }
        }
        table.grid #devices {
            thead { tr {
                th { "Device" } th { "Facility · line / station" } th { "State" } th { "Heartbeat" }
                th { "Last frame" } th { "Version" } th.num { "Unsynced" } th.num { "Dead letters" } th { "Cameras" }
            } }
            tbody {
                @for d in devices {
                    @let hb = d.heartbeat.as_ref();
                    tr data-device=(d.device_id) {
                        td.mono { (d.device_id) }
                        td { (d.facility) " · " (d.line) " / " (d.station) }
                        td { (state_badge(d.state)) }
                        td { (age(d.heartbeat_age_seconds)) }
                        td { (age(d.last_frame_at.map(|t| (now - t).num_milliseconds() as f64 / 1000.0))) }
                        td.mono { (hb.map_or("–", |h| h.version.as_str())) }
                        td.num.mono { (hb.map_or("–".into(), |h| h.buffer.frames.to_string())) }
                        td.num.mono { (hb.map_or(0, |h| h.dead_letters.len())) }
                        td { @for c in hb.map(|h| h.cameras.as_slice()).unwrap_or_default() { span.tag { (c.name) } } }
                    }
                }
                @if devices.is_empty() { tr { td.empty colspan="9" { "No device has sent a frame or heartbeat yet." } } }
            }
        }
    }
}
