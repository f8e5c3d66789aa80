//! Remote vision analyzers: Azure OpenAI ([`azure_openai`]), Azure AI Foundry model endpoints
//! ([`azure_ai_inference`]) and any OpenAI-compatible server ([`openai_compatible`]). They
//! differ only in the URL and how the key is sent; the exchange ([`chat`]) is the same chat
//! completions call: the part's image as JPEG data URLs ([`views`]: the whole frame scaled to
//! `max_side_px`, or with `image = "regions"` the frame at low detail and a close-up of the
//! gate's strongest region at high detail), the SKU's description and taxonomy and the gate's
//! regions in the prompt, and a strict JSON schema for the answer (boxes mapped back to the
//! frame's pixels from whichever image they are in).
//!
//! [`Remote::judge`] never fails: every failure (timeout, 429 after the retries, 5xx, a
//! refusal, `finish_reason` `length` or `content_filter`, an answer that is not the JSON
//! asked for or has boxes outside the image) is a [`Verdict`] whose `error` says what happened.
//! Requests are bounded per replica: `max_concurrency` in flight and `requests_per_minute`;
//! a 429 pauses every request of the replica for as long as it asks (`retry-after-ms`,
//! `Retry-After`, `x-ratelimit-reset-*`), other retries back off with jitter up to
//! `max_retry_wait_secs`. With `deployment_tokens_per_minute` or
//! `deployment_requests_per_minute`, every attempt first reserves its estimated tokens (text,
//! image tiles and `max_tokens`) and one request in the deployment's current window, counted
//! in the store, so that the replicas sharing it never reserve more in one window than the
//! window's share (windows are fixed: around a boundary, two windows' shares may go out within
//! one window's length); the estimate is corrected to the answer's real usage, and an attempt
//! that makes no call (its image not read or prepared, a 429's pause first) gives back its
//! tokens and its request: a call never made takes nothing from the budget. The estimate
//! comes from the frame's recorded size: the image is read ([`ImageSource`]), decoded and
//! encoded only once the attempt has its reservation, so a call put off costs no blob read
//! and no image work. The decoding's memory (the process's [`Budget`]) is held only while the
//! image is decoded and encoded, not while the call waits for its reservation, the rate
//! limiter or the answer: a queue of waiting parts pins no memory.
//!
//! A call that would have to wait longer than `max_retry_wait_secs` (a 429 asking for more,
//! a budget that frees up in a later window) is not made: [`Remote::judge`] returns
//! [`Deferred`] and the cascade puts the part back in the queue until then.

mod azure_ai_inference;
mod azure_openai;
pub mod chat;
pub mod config;
mod openai_compatible;
pub mod views;

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use reqwest::StatusCode;
use tokio::sync::Semaphore;
use wiko_inspect::DecodeLimits;
use wiko_wire::{
    Defect, DefectType, Usage, Verdict, VerdictError, VerdictErrorCode, VerdictSource,
};

use super::budget::{self, Budget};
use crate::store::{Store, StoreError, WindowClaim};
use crate::telemetry;
use chat::{Prompt, SentImage, TokenUsage};
use config::{Auth, DeploymentBudget, RemoteKind, RemoteSettings};
use views::{Planner, View};

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone)]
pub struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("the HTTP client cannot be built: {0}")]
    Client(String),
    #[error("the image cannot be prepared: {0}")]
    Image(String),
    #[error("{1}")]
    Answer(VerdictErrorCode, String),
    #[error("{}", .0.reason)]
    Later(Deferred),
}

/// A call not made: the service, or the deployment's budget, asks to wait longer than
/// `max_retry_wait_secs`. The part is to be asked about again after `retry_in`.
#[derive(Debug, Clone, PartialEq)]
pub struct Deferred {
    pub retry_in: Duration,
    pub reason: String,
    pub cause: Cause,
}

/// Why a call is put off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A 429 asked to wait.
    RateLimited,
    /// The deployment's shared budget is used up until a later window.
    Budget,
    /// The store cannot count the deployment's budget. Nothing is known about the service
    /// nor the budget, so such a call is never given up.
    Store,
    /// The image store cannot read the part's image now. Given up (`unavailable`) past
    /// `max_deferral_secs` like the others: an image that never comes back leaves no part
    /// provisional for ever.
    Image,
}

impl Cause {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::RateLimited => "rate_limited",
            Cause::Budget => "budget",
            Cause::Store => "store",
            Cause::Image => "image",
        }
    }

    /// The verdict's error when a call put off this long is given up; `None`: it never is.
    pub fn give_up_code(self) -> Option<VerdictErrorCode> {
        match self {
            Cause::RateLimited => Some(VerdictErrorCode::RateLimited),
            Cause::Budget => Some(VerdictErrorCode::BudgetExhausted),
            Cause::Store => None,
            Cause::Image => Some(VerdictErrorCode::Unavailable),
        }
    }

    /// Whether the store put the call off (its wait backs off from 1 s up to the job's
    /// lease, whatever `max_retry_wait_secs`).
    pub fn from_store(self) -> bool {
        matches!(self, Cause::Store | Cause::Image)
    }
}

/// The deployment's budget, counted in the store every replica shares.
struct Shared {
    records: Arc<dyn Store>,
    /// The endpoint and model.
    deployment: String,
    budget: DeploymentBudget,
}

/// Tokens reserved for an attempt, and in which window.
#[derive(Debug, Clone, Copy)]
struct Reserved {
    slot: i64,
    tokens: u64,
}

/// Where a request goes and how its key is sent.
pub(crate) struct Target {
    url: String,
    /// The v1 and inference APIs name the model in the body; the deployments path in the URL.
    model_in_body: bool,
    key: KeyStyle,
}

pub(crate) enum KeyStyle {
    /// Azure's `api-key` header.
    ApiKeyHeader,
    /// `Authorization: Bearer`.
    Bearer,
}

/// Where a part's image (as uploaded) is read from: only once its call has its place in the
/// deployment's budget, so that a call put off reads nothing.
#[async_trait]
pub trait ImageSource: Send + Sync {
    async fn read(&self) -> Result<Bytes, StoreError>;
}

/// An image already in memory.
#[async_trait]
impl ImageSource for Bytes {
    async fn read(&self) -> Result<Bytes, StoreError> {
        Ok(self.clone())
    }
}

/// One part as the remote analyzer sees it.
#[derive(Clone)]
pub struct Part<'a> {
    pub sku: &'a str,
    /// The image as uploaded, read when a call is made.
    pub image: &'a dyn ImageSource,
    /// The frame's size as recorded (the calls are planned from it before any decoding).
    pub width: u32,
    pub height: u32,
    /// The gate's verdict and its regions (strongest first, pixels of the upright frame).
    pub gate_ng: bool,
    pub score: Option<f32>,
    pub threshold: Option<f32>,
    pub regions: &'a [Defect],
}

/// A request to be made: its prompt and views planned from the part's recorded size, its body
/// built (the image read, decoded and each view encoded) only when a call is made.
struct Request<'a> {
    model: Option<&'a str>,
    prompt: Prompt,
    max_tokens: u32,
    planner: Planner,
    /// The frame's size as recorded.
    frame: (u32, u32),
    image: &'a dyn ImageSource,
    built: Option<(serde_json::Value, Vec<View>)>,
}

impl Request<'_> {
    /// The tokens a call costs at most, from the frame's size as recorded: the prompt, the
    /// planned views' tiles and `max_tokens`.
    fn estimate(&self) -> u64 {
        chat::estimate_input_tokens(
            self.model,
            &self.prompt,
            &self.planner.views(self.frame),
            self.max_tokens,
        ) + u64::from(self.max_tokens)
    }
}

/// A remote analyzer: one service, its limits, shared by the replica's remote workers.
pub struct Remote {
    settings: RemoteSettings,
    target: Target,
    http: reqwest::Client,
    rate: DefaultDirectRateLimiter,
    slots: Semaphore,
    /// No request leaves before this (a 429 asked every request to wait).
    paused_until: Mutex<Option<tokio::time::Instant>>,
    /// The circuit breaker.
    breaker: Mutex<Breaker>,
    /// The deployment's budget shared with the other replicas, if limited.
    shared: Option<Shared>,
    /// What decoding a part's image may allocate.
    limits: DecodeLimits,
    /// The memory budget a part's decoding and encoding is counted in.
    memory: Budget,
}

/// Parts in a row the service failed, and until when no call is made.
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

impl Remote {
    pub fn new(settings: RemoteSettings) -> Result<Remote, RemoteError> {
        let target = match settings.kind {
            RemoteKind::AzureOpenai => azure_openai::target(&settings),
            RemoteKind::AzureAiInference => azure_ai_inference::target(&settings),
            RemoteKind::OpenaiCompatible => openai_compatible::target(&settings),
        };
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| RemoteError::Client(e.to_string()))?;
        let per_minute = NonZeroU32::new(settings.requests_per_minute).unwrap_or(NonZeroU32::MIN);
        // No burst: requests are spread evenly over the minute.
        let quota = Quota::per_minute(per_minute).allow_burst(NonZeroU32::MIN);
        Ok(Remote {
            rate: RateLimiter::direct(quota),
            slots: Semaphore::new(settings.max_concurrency),
            paused_until: Mutex::new(None),
            breaker: Mutex::new(Breaker::default()),
            shared: None,
            limits: DecodeLimits::default(),
            memory: Budget::new(budget::default_bytes()),
            settings,
            target,
            http,
        })
    }

    /// Counts the deployment's budget (`deployment_*` settings) in `records`, shared by
    /// every replica on it; without this call, or without those settings, it is not limited.
    pub fn sharing(mut self, records: Arc<dyn Store>) -> Remote {
        self.shared = self.settings.deployment.map(|budget| Shared {
            records,
            deployment: format!("{} {}", self.settings.endpoint, self.settings.model),
            budget,
        });
        self
    }

    /// Decodes the parts' images within `limits` (the ingest's; by default
    /// [`DecodeLimits::default`]), their memory counted in `memory` (the process's; by default
    /// a budget of this analyzer's own, [`budget::default_bytes`]).
    pub fn decoding(mut self, limits: DecodeLimits, memory: Budget) -> Remote {
        self.limits = limits;
        self.memory = memory;
        self
    }

    pub fn settings(&self) -> &RemoteSettings {
        &self.settings
    }

    /// The analyzer's name on verdicts and cost rows.
    pub fn name(&self) -> &'static str {
        self.settings.kind.name()
    }

    /// Whether the circuit is open: the service failed `breaker_failures` parts in a row
    /// less than `breaker_open_secs` ago. Provisional results wait meanwhile.
    pub fn circuit_open(&self) -> bool {
        let breaker = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        breaker.open_until.is_some_and(|t| Instant::now() < t)
    }

    /// Whether a 429 asked every request of this replica to wait, and that wait is not over.
    pub fn paused(&self) -> bool {
        let paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        paused.is_some_and(|t| t > tokio::time::Instant::now())
    }

    /// Counts a part's outcome in the breaker.
    fn record(&self, error: Option<VerdictErrorCode>) {
        let Some(threshold) = self.settings.breaker_failures else {
            return;
        };
        let service_failed = matches!(
            error,
            Some(
                VerdictErrorCode::Unavailable
                    | VerdictErrorCode::Timeout
                    | VerdictErrorCode::RateLimited
            )
        );
        let mut breaker = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        if !service_failed {
            *breaker = Breaker::default();
            return;
        }
        breaker.failures += 1;
        if breaker.failures >= threshold {
            tracing::warn!(
                failures = breaker.failures,
                open_secs = self.settings.breaker_open.as_secs(),
                "the remote analyzer keeps failing: no calls for a while, provisional results wait"
            );
            breaker.failures = 0;
            breaker.open_until = Some(Instant::now() + self.settings.breaker_open);
        }
    }

    /// A verdict without a call (the budget is spent, the image is unusable).
    pub fn failed(&self, code: VerdictErrorCode, message: String) -> Verdict {
        self.verdict(
            None,
            Duration::ZERO,
            TokenUsage::default(),
            Some((code, message)),
        )
    }

    /// The verdict of an enrichment given up (its call put off past `max_deferral_secs`):
    /// counted in `wiko_cloud_remote_calls_total` under the outcome `given_up`, not as a call
    /// answered `code`.
    pub fn given_up(&self, code: VerdictErrorCode, message: String) -> Verdict {
        self.verdict_counted(
            "given_up",
            None,
            Duration::ZERO,
            TokenUsage::default(),
            Some((code, message)),
        )
    }

    /// Asks the remote model about a part; every failure is in the verdict, but a wait longer
    /// than `max_retry_wait_secs` (or a store that fails), which is [`Deferred`]. The image is
    /// read, decoded and encoded only once the call has its place in the deployment's budget:
    /// a call put off costs no blob read and no image work.
    pub async fn judge(&self, part: &Part<'_>) -> Result<Verdict, Deferred> {
        let started = Instant::now();
        let s = &self.settings;
        let prompt_settings = s.sku(part.sku);
        let taxonomy: Vec<DefectType> = match prompt_settings {
            Some(p) if !p.taxonomy.is_empty() => p.taxonomy.clone(),
            _ => DefectType::ALL.to_vec(),
        };
        let description = prompt_settings
            .and_then(|p| p.description.clone())
            .unwrap_or_else(|| {
                format!(
                    "a kitchen knife (SKU {}), photographed from above",
                    part.sku
                )
            });
        let gate = match (part.score, part.threshold) {
            (Some(score), Some(threshold)) => format!(
                "judged it {} (anomaly score {score:.3}, threshold {threshold:.3})",
                if part.gate_ng { "defective" } else { "good" }
            ),
            _ => "gave no verdict".to_string(),
        };
        let regions = if s.send_regions {
            part.regions.iter().map(|d| d.bbox).collect()
        } else {
            Vec::new()
        };
        let mut call = Request {
            model: self.target.model_in_body.then_some(s.model.as_str()),
            prompt: Prompt {
                description,
                taxonomy: taxonomy.clone(),
                gate,
                regions,
            },
            max_tokens: s.max_tokens,
            planner: Planner {
                mode: s.image,
                detail: s.detail,
                max_side: s.max_side_px,
                top_region: part.regions.first().map(|d| d.bbox),
            },
            frame: (part.width, part.height),
            image: part.image,
            built: None,
        };
        let estimate = call.estimate();
        let (usage, answer) = match self.send(&mut call, estimate).await {
            Ok((bytes, reserved, views)) => {
                let parsed = chat::parse(&bytes, &taxonomy, &views);
                if let Some(reserved) = reserved {
                    self.settle(reserved, parsed.0).await;
                }
                parsed
            }
            Err(RemoteError::Later(deferred)) => return Err(deferred),
            // No call was made: neither the breaker nor the call metrics hear of it.
            Err(e @ RemoteError::Image(_)) => {
                return Ok(self.failed(VerdictErrorCode::ImageUnusable, e.to_string()));
            }
            Err(e) => (TokenUsage::default(), Err(e)),
        };
        let latency = started.elapsed();
        self.record(answer.as_ref().err().map(|e| match e {
            RemoteError::Answer(code, _) => *code,
            _ => VerdictErrorCode::InvalidAnswer,
        }));
        metrics::histogram!(telemetry::REMOTE_SECONDS, "analyzer" => self.name())
            .record(latency.as_secs_f64());
        Ok(match answer {
            Ok(answer) => self.verdict(Some(answer), latency, usage, None),
            Err(RemoteError::Answer(code, message)) => {
                self.verdict(None, latency, usage, Some((code, message)))
            }
            Err(other) => self.verdict(
                None,
                latency,
                usage,
                Some((VerdictErrorCode::InvalidAnswer, other.to_string())),
            ),
        })
    }

    fn verdict(
        &self,
        answer: Option<chat::Answer>,
        latency: Duration,
        tokens: TokenUsage,
        error: Option<(VerdictErrorCode, String)>,
    ) -> Verdict {
        let outcome = error.as_ref().map_or("ok", |(code, _)| code_name(*code));
        self.verdict_counted(outcome, answer, latency, tokens, error)
    }

    /// The verdict, counted in the metrics with `outcome`.
    fn verdict_counted(
        &self,
        outcome: &'static str,
        answer: Option<chat::Answer>,
        latency: Duration,
        tokens: TokenUsage,
        error: Option<(VerdictErrorCode, String)>,
    ) -> Verdict {
        let cost_usd = tokens.prompt_tokens as f64 * self.settings.input_usd_per_token
            + tokens.completion_tokens as f64 * self.settings.output_usd_per_token;
        let name = self.name();
        metrics::counter!(telemetry::REMOTE_CALLS_TOTAL, "analyzer" => name, "outcome" => outcome)
            .increment(1);
        metrics::counter!(telemetry::REMOTE_TOKENS_TOTAL, "analyzer" => name, "kind" => "input")
            .increment(tokens.prompt_tokens);
        metrics::counter!(telemetry::REMOTE_TOKENS_TOTAL, "analyzer" => name, "kind" => "output")
            .increment(tokens.completion_tokens);
        metrics::counter!(telemetry::REMOTE_COST_MICRO_USD_TOTAL, "analyzer" => name)
            .increment((cost_usd * 1e6).round() as u64);
        Verdict {
            source: VerdictSource::Remote,
            analyzer: name.to_string(),
            model: Some(self.settings.model.clone()),
            defect_detected: answer.as_ref().map(|a| a.defect_detected),
            score: None,
            summary: answer.as_ref().map(|a| a.summary.clone()),
            defects: answer.map(|a| a.defects).unwrap_or_default(),
            latency_ms: Some(latency.as_secs_f64() * 1000.0),
            usage: Some(Usage {
                input_tokens: tokens.prompt_tokens,
                output_tokens: tokens.completion_tokens,
                cost_usd,
            }),
            error: error.map(|(code, message)| VerdictError { code, message }),
            alerted: false,
        }
    }

    /// Sends the request within the limits, retrying what may pass later; the body of the
    /// 200 answer, what its attempt reserved of the deployment's budget, and the views the
    /// request sent. Each attempt reserves `estimate` tokens; the body is built once the
    /// first attempt has its reservation, and each attempt leaves when the rate limiter (and
    /// a 429's pause) lets it.
    async fn send(
        &self,
        call: &mut Request<'_>,
        estimate: u64,
    ) -> Result<(Vec<u8>, Option<Reserved>, Vec<View>), RemoteError> {
        let s = &self.settings;
        let mut last = RemoteError::Answer(VerdictErrorCode::Unavailable, "no attempt".into());
        for attempt in 1..=s.max_attempts {
            self.wait_out_pause().await?;
            // The slot first: a call counted in a window goes out in it, not after waiting for
            // a slot into the next.
            let permit = self.slots.acquire().await;
            let reserved = self.reserve(estimate).await?;
            let (body, views) = match self.build(call).await {
                Ok(built) => built,
                Err(e) => {
                    if let Some(reserved) = reserved {
                        self.release(reserved).await;
                    }
                    return Err(e);
                }
            };
            let views = views.clone();
            let mut request = self.http.post(&self.target.url).json(body);
            request = match (&s.auth, &self.target.key) {
                (Auth::None, _) => request,
                (Auth::Key(key), KeyStyle::ApiKeyHeader) => request.header("api-key", &key.0),
                (Auth::Key(key), KeyStyle::Bearer) => request.bearer_auth(&key.0),
                (Auth::BearerFile(path), _) => match tokio::fs::read_to_string(path).await {
                    Ok(token) => request.bearer_auth(token.trim()),
                    Err(e) => {
                        if let Some(reserved) = reserved {
                            self.release(reserved).await;
                        }
                        return Err(RemoteError::Answer(
                            VerdictErrorCode::Rejected,
                            format!("the bearer token file cannot be read: {e}"),
                        ));
                    }
                },
            };
            // The limiter last, once the body is built (a retry reuses it): calls leave spaced
            // by requests_per_minute, however long the reservation or the encoding took.
            self.rate.until_ready().await;
            if let Err(e) = self.wait_out_pause().await {
                if let Some(reserved) = reserved {
                    self.release(reserved).await;
                }
                return Err(e);
            }
            let response = request.send().await;
            drop(permit);
            let hinted = match response {
                Ok(r) if r.status() == StatusCode::OK => {
                    return r
                        .bytes()
                        .await
                        .map(|b| (b.to_vec(), reserved, views))
                        .map_err(|e| {
                            RemoteError::Answer(
                                VerdictErrorCode::Unavailable,
                                format!("the response was cut off: {e}"),
                            )
                        });
                }
                Ok(r) => {
                    let status = r.status();
                    let hint = chat::retry_after(r.headers(), chrono::Utc::now());
                    let bytes = r.bytes().await.unwrap_or_default();
                    let (code, message) = chat::error_message(&bytes);
                    let said = format!(
                        "{status}{}: {message}",
                        code.as_deref().map(|c| format!(" {c}")).unwrap_or_default()
                    );
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        last = RemoteError::Answer(
                            VerdictErrorCode::RateLimited,
                            format!("rate limited after {attempt} attempts: {said}"),
                        );
                        let wait = hint.unwrap_or_else(|| self.backoff(attempt));
                        self.pause(wait);
                        if wait > s.max_retry_wait {
                            return Err(RemoteError::Later(Deferred {
                                retry_in: wait,
                                reason: format!(
                                    "rate limited: asked to wait {:.1} s, more than max_retry_wait_secs ({said})",
                                    wait.as_secs_f64()
                                ),
                                cause: Cause::RateLimited,
                            }));
                        }
                        Some(wait)
                    } else if status.is_server_error() {
                        last = RemoteError::Answer(
                            VerdictErrorCode::Unavailable,
                            format!("the service failed after {attempt} attempts: {said}"),
                        );
                        hint.filter(|h| *h <= s.max_retry_wait)
                    } else {
                        let kind = if code.as_deref() == Some("content_filter") {
                            VerdictErrorCode::ContentFilter
                        } else {
                            VerdictErrorCode::Rejected
                        };
                        return Err(RemoteError::Answer(
                            kind,
                            format!("request refused: {said}"),
                        ));
                    }
                }
                Err(e) if e.is_timeout() => {
                    last = RemoteError::Answer(
                        VerdictErrorCode::Timeout,
                        format!(
                            "no answer within {} s, {attempt} attempts",
                            s.timeout.as_secs()
                        ),
                    );
                    None
                }
                Err(e) => {
                    last = RemoteError::Answer(
                        VerdictErrorCode::Unavailable,
                        format!(
                            "the service cannot be reached ({attempt} attempts): {}",
                            e.without_url()
                        ),
                    );
                    None
                }
            };
            if attempt < s.max_attempts {
                tokio::time::sleep(hinted.unwrap_or_else(|| self.backoff(attempt))).await;
            }
        }
        Err(last)
    }

    /// The call's body and the views it sends, built on its first attempt: the image read,
    /// then decoded (upright: its EXIF orientation applied, as the gate saw it, so that the
    /// gate's regions and the answer's boxes mean the same pixels) and each view encoded on
    /// the blocking pool, with the decoding's memory reserved for that work only. The views
    /// are planned again from the image's upright size. An image the store cannot read now
    /// puts the call off (cause `image`); one it no longer has fails the part.
    async fn build<'c>(
        &self,
        call: &'c mut Request<'_>,
    ) -> Result<(&'c serde_json::Value, &'c Vec<View>), RemoteError> {
        let built = match call.built.take() {
            Some(built) => built,
            None => {
                let bytes = call.image.read().await.map_err(|e| match e {
                    StoreError::NotFound => {
                        RemoteError::Image("the part's image is not in the image store".into())
                    }
                    e => RemoteError::Later(Deferred {
                        retry_in: self.store_backoff(1),
                        reason: format!("the part's image cannot be read: {e}"),
                        cause: Cause::Image,
                    }),
                })?;
                let memory = self
                    .memory
                    .reserve(Budget::judging(call.frame.0, call.frame.1))
                    .await
                    .map_err(|e| RemoteError::Image(e.to_string()))?;
                let (planner, limits) = (call.planner, self.limits);
                let images = memory
                    .run(move || {
                        let upright = wiko_inspect::decode::decode_rgb(&bytes, limits)
                            .map_err(|e| RemoteError::Image(e.to_string()))?;
                        let views = planner.views(upright.dimensions());
                        let jpegs = views::encode(&upright, &views)?;
                        Ok::<_, RemoteError>(
                            views
                                .into_iter()
                                .zip(jpegs)
                                .map(|(view, jpeg)| SentImage { view, jpeg })
                                .collect::<Vec<_>>(),
                        )
                    })
                    .await
                    .map_err(|e| RemoteError::Image(format!("the encoder task: {e}")))??;
                let body = chat::body(call.model, &call.prompt, &images, call.max_tokens);
                (body, images.into_iter().map(|i| i.view).collect())
            }
        };
        let (body, views) = call.built.insert(built);
        Ok((body, views))
    }

    /// Waits until a 429's pause is over (deferred if that is further than
    /// `max_retry_wait_secs`).
    async fn wait_out_pause(&self) -> Result<(), RemoteError> {
        loop {
            let until = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            let now = tokio::time::Instant::now();
            match until {
                Some(t) if t > now => {
                    if t - now > self.settings.max_retry_wait {
                        return Err(RemoteError::Later(Deferred {
                            retry_in: t - now,
                            reason: "rate limited: the service asked every request to wait".into(),
                            cause: Cause::RateLimited,
                        }));
                    }
                    tokio::time::sleep_until(t).await;
                }
                _ => return Ok(()),
            }
        }
    }

    /// Reserves an attempt's `tokens` and one request in the deployment's current window,
    /// waiting for a later one up to `max_retry_wait_secs` (deferred past that); `None`
    /// without a shared budget.
    async fn reserve(&self, tokens: u64) -> Result<Option<Reserved>, RemoteError> {
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let window = shared.budget.window;
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(1);
        let started = Instant::now();
        loop {
            let now = Utc::now().timestamp_millis();
            let slot = now.div_euclid(window_ms);
            let claim = WindowClaim {
                deployment: shared.deployment.clone(),
                slot,
                tokens,
                max_tokens: shared.budget.tokens,
                max_requests: shared.budget.requests,
            };
            let fits = shared.records.reserve_remote(&claim).await.map_err(|e| {
                RemoteError::Later(Deferred {
                    retry_in: self.store_backoff(1),
                    reason: format!("the deployment's budget cannot be counted: {e}"),
                    cause: Cause::Store,
                })
            })?;
            if fits {
                metrics::histogram!(telemetry::REMOTE_BUDGET_WAIT_SECONDS, "analyzer" => self.name())
                    .record(started.elapsed().as_secs_f64());
                return Ok(Some(Reserved {
                    slot,
                    tokens: tokens.min(shared.budget.tokens),
                }));
            }
            // The next window, plus a little jitter: replicas do not all ask at its start.
            let next =
                Duration::from_millis(u64::try_from((slot + 1) * window_ms - now).unwrap_or(1))
                    + window.mul_f64(rand::rng().random_range(0.0..0.05));
            if started.elapsed() + next > self.settings.max_retry_wait {
                return Err(RemoteError::Later(Deferred {
                    retry_in: next,
                    reason: format!(
                        "the deployment's token or request budget for this {} s window is used up",
                        window.as_secs()
                    ),
                    cause: Cause::Budget,
                }));
            }
            tokio::time::sleep(next).await;
        }
    }

    /// Gives a reservation back, its tokens and its request: no call was made (the image
    /// could not be read or prepared, the bearer token file read, or a 429's pause came
    /// first), and a call never made takes nothing from the deployment's budget.
    async fn release(&self, reserved: Reserved) {
        let Some(shared) = &self.shared else {
            return;
        };
        let tokens = -i64::try_from(reserved.tokens).unwrap_or(i64::MAX);
        if let Err(e) = shared
            .records
            .settle_remote(&shared.deployment, reserved.slot, tokens, -1)
            .await
        {
            tracing::warn!(error = %e, "the deployment's budget keeps a call not made");
        }
    }

    /// Corrects a reservation to the tokens the service says the call used (kept as
    /// estimated when it says nothing).
    async fn settle(&self, reserved: Reserved, usage: TokenUsage) {
        let (Some(shared), used) = (&self.shared, usage.prompt_tokens + usage.completion_tokens)
        else {
            return;
        };
        if used == 0 {
            return;
        }
        let delta = i64::try_from(used).unwrap_or(i64::MAX)
            - i64::try_from(reserved.tokens).unwrap_or(i64::MAX);
        if let Err(e) = shared
            .records
            .settle_remote(&shared.deployment, reserved.slot, delta, 0)
            .await
        {
            tracing::warn!(error = %e, "the deployment's budget keeps the call's estimate");
        }
    }

    /// Holds every request of this replica for `wait`.
    fn pause(&self, wait: Duration) {
        let now = tokio::time::Instant::now();
        let until = now
            .checked_add(wait.min(chat::MAX_RETRY_HINT))
            .unwrap_or(now);
        let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if paused.is_none_or(|t| t < until) {
            *paused = Some(until);
        }
    }

    /// Jittered exponential backoff: between half and all of 0.5 s × 2^(attempt-1), capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let full = Duration::from_millis(500)
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
            .min(self.settings.max_retry_wait);
        full.mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// How long a call the store put off (cause `store` or `image`) waits before its part is taken
    /// again, after `attempt` tries: between half and all of 1 s × 2^(attempt-1), never less
    /// than 1 s nor more than the job's lease. Not bound by `max_retry_wait_secs` (which may
    /// be 0): a store that keeps failing never makes a worker spin.
    pub fn store_backoff(&self, attempt: u32) -> Duration {
        let cap = self.settings.job_lease.max(STORE_BACKOFF_FLOOR);
        Duration::from_secs(1)
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
            .min(cap)
            .mul_f64(rand::rng().random_range(0.5..=1.0))
            .clamp(STORE_BACKOFF_FLOOR, cap)
    }
}

/// The shortest wait of a call the store put off.
const STORE_BACKOFF_FLOOR: Duration = Duration::from_secs(1);

/// The metric label of an error code.
fn code_name(code: VerdictErrorCode) -> &'static str {
    match code {
        VerdictErrorCode::Timeout => "timeout",
        VerdictErrorCode::RateLimited => "rate_limited",
        VerdictErrorCode::Unavailable => "unavailable",
        VerdictErrorCode::Rejected => "rejected",
        VerdictErrorCode::Refused => "refused",
        VerdictErrorCode::Truncated => "truncated",
        VerdictErrorCode::ContentFilter => "content_filter",
        VerdictErrorCode::InvalidAnswer => "invalid_answer",
        VerdictErrorCode::ImageUnusable => "image_unusable",
        VerdictErrorCode::BudgetExhausted => "budget_exhausted",
    }
}
