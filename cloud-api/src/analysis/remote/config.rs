//! `[remote]`: the remote vision model behind the golden gate, its limits, prices and budget,
//! and the prompt per SKU. Absent: no remote analysis, every result is final at once.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use wiko_daemon::config::{ConfigError, invalid, secret};
use wiko_wire::DefectType;

use super::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct RemoteConfig {
    /// Which service: `azure_openai` (Azure OpenAI, the v1 API or, with `api_version`, the
    /// deployments path), `azure_ai_inference` (Azure AI Foundry model endpoints) or
    /// `openai_compatible` (vLLM, Ollama, LM Studio: any chat completions server).
    pub kind: RemoteKind,
    /// Base URL: `https://NAME.openai.azure.com` (azure_openai),
    /// `https://NAME.services.ai.azure.com` (azure_ai_inference), `http://host:8000/v1`
    /// (openai_compatible: the URL before `/chat/completions`).
    pub endpoint: String,
    /// The model, or the deployment name on Azure OpenAI.
    pub model: String,
    /// azure_openai: use the older deployments path with this `api-version` (e.g.
    /// "2024-10-21") instead of the v1 API. azure_ai_inference: the `api-version` to send.
    /// Default: none (v1 API; azure_ai_inference sends "2024-05-01-preview").
    #[serde(default)]
    pub api_version: Option<String>,
    /// The key (`api-key` header on Azure, `Authorization: Bearer` on openai_compatible).
    #[serde(default)]
    pub api_key: Option<String>,
    /// A file holding the key; set api_key or api_key_file, not both.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// A file holding a Microsoft Entra ID access token, read at every call (whatever renews
    /// it may rewrite it), sent as `Authorization: Bearer`; instead of a key.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Which parts go to the remote model: `off`, `ng` (parts the gate judged NG),
    /// `ng_and_uncertain` (and those whose score lies within `uncertain_band` of the
    /// threshold), `all` (every judged part, the prototype's behaviour). Default:
    /// "ng_and_uncertain"
    #[serde(default)]
    pub mode: Mode,
    /// The uncertain band, as a share of the threshold: a part whose score lies within
    /// threshold × (1 ± band) is uncertain. Default: 0.2
    #[serde(default = "default_uncertain_band")]
    pub uncertain_band: f32,
    /// NG parts kept from the remote model: a part the gate judged NG with a score at least
    /// this many times the threshold, every region of which it typed (none `other`), is not
    /// sent (modes `ng` and `ng_and_uncertain`); its result is final at once with the gate's
    /// verdict, types and heuristic descriptions, and gets no remote description or second
    /// opinion (counted in `wiko_cloud_remote_kept_local_total`). Cheaper where many parts
    /// are NG. In mode `ng_and_uncertain` a part within the uncertain band is sent whatever
    /// this says (a factor under 1 + `uncertain_band` keeps only the NG parts above the band).
    /// 0, or 1 and above; 0: every NG part is sent. Default: 0
    #[serde(default)]
    pub confident_ng_above: f32,
    /// Remote workers of this replica (provisional results enriched at once). Default: 2
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Requests this replica has in flight at once, at most. Default: 4
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Requests this replica sends per minute, at most. Default: 60
    #[serde(default = "default_requests_per_minute")]
    pub requests_per_minute: u32,
    /// Tokens per minute the deployment allows (its TPM quota), shared by every replica on the
    /// store: each call reserves its estimate (prompt, image tiles and `max_tokens`) in the
    /// store before it is sent, and is corrected to the real usage after; a call that does
    /// not fit waits for the next window (up to `max_retry_wait_secs`) or its part is put
    /// back in the queue until then. 0: no shared token budget. Default: 0
    #[serde(default)]
    pub deployment_tokens_per_minute: u64,
    /// Requests per minute the deployment allows (its RPM quota), shared likewise by every
    /// replica. 0: no shared request budget. Default: 0
    #[serde(default)]
    pub deployment_requests_per_minute: u64,
    /// The window, in seconds, the deployment's budget is counted in; both per-minute limits
    /// are scaled to it (Azure also counts its quotas over windows shorter than a minute).
    /// 1 to 60. Default: 60
    #[serde(default = "default_deployment_window_secs")]
    pub deployment_window_secs: u64,
    /// Seconds one request may take. Default: 30
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Attempts per part on 429, 5xx, timeouts and connection errors (then the part's
    /// verdict says so). Default: 4
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Longest wait before a retry, in seconds: a 429 asking for longer, or a deployment
    /// budget that frees up later, puts the part back in the queue until then (it stays
    /// provisional and is enriched later); backoff without a hint is capped here. Default: 30
    #[serde(default = "default_max_retry_wait_secs")]
    pub max_retry_wait_secs: u64,
    /// Seconds after the part was taken in (its `created_at`) until which its remote call may
    /// still be put off: a call that would be put off beyond is given up, and the result
    /// becomes final with the gate's verdict and a remote verdict whose error says so
    /// (`rate_limited`: a 429 asked to wait that long; `budget_exhausted`: the deployment's
    /// window stayed full, no call made; `unavailable`: the image store could not read the
    /// part's image). A call put off because the store could not count the deployment's
    /// budget is never given up. 0 to 604800 (a
    /// week); 0: a call is never put off. Default: 3600
    #[serde(default = "default_max_deferral_secs")]
    pub max_deferral_secs: u64,
    /// `max_tokens` of each request: the answer's length (services count it against the
    /// rate limit, keep it small). Default: 800
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// The image is re-encoded (JPEG) with its longer side at most this many pixels (cost
    /// grows with the 512-px tiles it covers at high detail; at low detail it is sent at 512
    /// at most, all the model sees). Default: 1024
    #[serde(default = "default_max_side_px")]
    pub max_side_px: u32,
    /// Image detail asked for: `low` (85 tokens per image on gpt-4o), `high` or `auto`.
    /// Default: "low"
    #[serde(default)]
    pub detail: Detail,
    /// What is sent of a part: `frame` (the whole frame at `detail`) or `regions` (the whole
    /// frame at low detail, 85 tokens, and a close-up of the gate's strongest region at high
    /// detail, at most one 512-px tile, 255 tokens: the defect at the camera's resolution for
    /// less than a high-detail frame; the model sees the rest of the part at low detail only).
    /// A part the gate found no region on is sent as with `frame`. Default: "frame"
    #[serde(default)]
    pub image: ImageMode,
    /// Send the gate's regions as boxes in the prompt. Default: true
    #[serde(default = "default_true")]
    pub send_regions: bool,
    /// Price of 1,000,000 input tokens, in USD (for the cost per part). Default: 0
    #[serde(default)]
    pub input_usd_per_million_tokens: f64,
    /// Price of 1,000,000 output tokens, in USD. Default: 0
    #[serde(default)]
    pub output_usd_per_million_tokens: f64,
    /// USD the remote model may cost per UTC day (all replicas); once spent, parts get a
    /// `budget_exhausted` verdict without a call. 0: no daily budget. Default: 0
    #[serde(default)]
    pub daily_budget_usd: f64,
    /// USD per UTC calendar month, as above. 0: no monthly budget. Default: 0
    #[serde(default)]
    pub monthly_budget_usd: f64,
    /// Parts in a row whose call failed for the service's sake (unreachable, 5xx, timeout,
    /// 429 past the retries) that open the circuit: no call is made, and provisional results
    /// wait, for `breaker_open_secs`. 0: no breaker. Default: 5
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// Seconds the circuit stays open. Default: 30
    #[serde(default = "default_breaker_open_secs")]
    pub breaker_open_secs: u64,
    /// Seconds a remote worker holds a part before another worker (of any replica) may take
    /// it; keep it longer than `max_attempts` × (`timeout_secs` + 2 × `max_retry_wait_secs`),
    /// or a slow part may be asked about twice (stored once). Default: 300
    #[serde(default = "default_job_lease_secs")]
    pub job_lease_secs: u64,
    /// The prompt per SKU (a SKU not listed gets a generic knife description and every
    /// defect type).
    #[serde(default)]
    pub skus: Vec<SkuPromptConfig>,
}

/// `[[remote.skus]]`: what the remote model is told about a SKU.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct SkuPromptConfig {
    /// The SKU.
    pub sku: String,
    /// What the part is, for the model.
    #[serde(default)]
    pub description: Option<String>,
    /// The defect types the model may name (wire names, e.g. "scratch"); `other` is always
    /// added. Default: every type.
    #[serde(default)]
    pub taxonomy: Vec<String>,
    /// This SKU's `mode`. Default: the section's.
    #[serde(default)]
    pub mode: Option<Mode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RemoteKind {
    AzureOpenai,
    AzureAiInference,
    OpenaiCompatible,
}

impl RemoteKind {
    /// The analyzer's name on verdicts and cost rows.
    pub fn name(self) -> &'static str {
        match self {
            RemoteKind::AzureOpenai => "azure_openai",
            RemoteKind::AzureAiInference => "azure_ai_inference",
            RemoteKind::OpenaiCompatible => "openai_compatible",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Off,
    Ng,
    #[default]
    NgAndUncertain,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Detail {
    #[default]
    Low,
    High,
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ImageMode {
    #[default]
    Frame,
    Regions,
}

impl Detail {
    pub fn as_str(self) -> &'static str {
        match self {
            Detail::Low => "low",
            Detail::High => "high",
            Detail::Auto => "auto",
        }
    }
}

fn default_uncertain_band() -> f32 {
    0.2
}
fn default_workers() -> usize {
    2
}
fn default_max_concurrency() -> usize {
    4
}
fn default_requests_per_minute() -> u32 {
    60
}
fn default_deployment_window_secs() -> u64 {
    60
}
fn default_timeout_secs() -> u64 {
    30
}
fn default_max_attempts() -> u32 {
    4
}
fn default_max_retry_wait_secs() -> u64 {
    30
}
fn default_max_deferral_secs() -> u64 {
    3600
}
fn default_max_tokens() -> u32 {
    800
}
fn default_max_side_px() -> u32 {
    1024
}
fn default_true() -> bool {
    true
}
fn default_job_lease_secs() -> u64 {
    300
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_open_secs() -> u64 {
    30
}

/// The longest `max_deferral_secs`: a week.
const MAX_DEFERRAL_SECS: u64 = 7 * 24 * 3600;

/// How requests are authorised.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Key(Secret),
    /// An Entra ID token, read from this file at each call.
    BearerFile(PathBuf),
}

/// A validated `[remote]`.
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    pub kind: RemoteKind,
    pub endpoint: String,
    pub model: String,
    pub api_version: Option<String>,
    pub auth: Auth,
    pub mode: Mode,
    pub uncertain_band: f32,
    /// `None`: every NG part is sent.
    pub confident_ng_above: Option<f32>,
    pub workers: usize,
    pub max_concurrency: usize,
    pub requests_per_minute: u32,
    /// The deployment's budget shared by every replica; `None`: no limits set.
    pub deployment: Option<DeploymentBudget>,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub max_retry_wait: Duration,
    /// How long after the part was taken in its call may still be put off.
    pub max_deferral: Duration,
    pub max_tokens: u32,
    pub max_side_px: u32,
    pub detail: Detail,
    pub image: ImageMode,
    pub send_regions: bool,
    pub input_usd_per_token: f64,
    pub output_usd_per_token: f64,
    pub daily_budget_usd: Option<f64>,
    pub monthly_budget_usd: Option<f64>,
    pub job_lease: Duration,
    /// `None`: no breaker.
    pub breaker_failures: Option<u32>,
    pub breaker_open: Duration,
    pub skus: Vec<SkuPrompt>,
}

/// A deployment's token and request limits per window, shared by every replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeploymentBudget {
    pub window: Duration,
    /// Tokens per window (`u64::MAX`: no limit).
    pub tokens: u64,
    /// Requests per window (`u64::MAX`: no limit).
    pub requests: u64,
}

/// A SKU's prompt, its taxonomy parsed.
#[derive(Debug, Clone)]
pub struct SkuPrompt {
    pub sku: String,
    pub description: Option<String>,
    pub taxonomy: Vec<DefectType>,
    pub mode: Option<Mode>,
}

impl RemoteConfig {
    pub(crate) fn validate(self) -> Result<RemoteSettings, ConfigError> {
        let endpoint = self.endpoint.trim_end_matches('/').to_string();
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(invalid("remote.endpoint", "must be an http(s) URL"));
        }
        if self.model.trim().is_empty() {
            return Err(invalid("remote.model", "must not be empty"));
        }
        let key = secret("remote.api_key", self.api_key, self.api_key_file.as_deref())?;
        let auth = match (key, self.bearer_token_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "remote.bearer_token_file",
                    "set a key or a bearer token file, not both",
                ));
            }
            (Some(key), None) => Auth::Key(Secret(key)),
            (None, Some(path)) => Auth::BearerFile(path),
            (None, None) if self.kind == RemoteKind::OpenaiCompatible => Auth::None,
            (None, None) => {
                return Err(invalid(
                    "remote.api_key",
                    "Azure needs api_key, api_key_file or bearer_token_file",
                ));
            }
        };
        if !(0.0..=1.0).contains(&self.uncertain_band) {
            return Err(invalid("remote.uncertain_band", "must be 0 to 1"));
        }
        if !(self.confident_ng_above == 0.0
            || (self.confident_ng_above.is_finite() && self.confident_ng_above >= 1.0))
        {
            return Err(invalid(
                "remote.confident_ng_above",
                "must be 0, or 1 and above",
            ));
        }
        if self.workers > 64 {
            return Err(invalid("remote.workers", "must be 0 to 64"));
        }
        for (key, value) in [
            ("remote.max_concurrency", self.max_concurrency as u64),
            (
                "remote.requests_per_minute",
                u64::from(self.requests_per_minute),
            ),
            ("remote.timeout_secs", self.timeout_secs),
            ("remote.max_attempts", u64::from(self.max_attempts)),
            ("remote.max_tokens", u64::from(self.max_tokens)),
            ("remote.job_lease_secs", self.job_lease_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be above zero"));
            }
        }
        if self.max_deferral_secs > MAX_DEFERRAL_SECS {
            return Err(invalid(
                "remote.max_deferral_secs",
                format!("must be 0 to {MAX_DEFERRAL_SECS} (a week)"),
            ));
        }
        if self.max_side_px < 64 {
            return Err(invalid("remote.max_side_px", "must be at least 64"));
        }
        for (key, value) in [
            (
                "remote.input_usd_per_million_tokens",
                self.input_usd_per_million_tokens,
            ),
            (
                "remote.output_usd_per_million_tokens",
                self.output_usd_per_million_tokens,
            ),
            ("remote.daily_budget_usd", self.daily_budget_usd),
            ("remote.monthly_budget_usd", self.monthly_budget_usd),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(invalid(key, "must be 0 or more"));
            }
        }
        let skus = self
            .skus
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let taxonomy = s
                    .taxonomy
                    .iter()
                    .map(|name| {
                        DefectType::parse(name).ok_or_else(|| {
                            invalid(
                                format!("remote.skus[{i}].taxonomy"),
                                format!("{name:?} is not a defect type"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(SkuPrompt {
                    sku: s.sku,
                    description: s.description,
                    taxonomy,
                    mode: s.mode,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        if !(1..=60).contains(&self.deployment_window_secs) {
            return Err(invalid("remote.deployment_window_secs", "must be 1 to 60"));
        }
        let deployment = deployment_budget(
            self.deployment_tokens_per_minute,
            self.deployment_requests_per_minute,
            self.deployment_window_secs,
        );
        if let Some(budget) = deployment
            && budget.tokens < u64::from(self.max_tokens)
        {
            return Err(invalid(
                "remote.deployment_tokens_per_minute",
                format!(
                    "allows {} tokens per {} s window, fewer than one call's max_tokens ({})",
                    budget.tokens, self.deployment_window_secs, self.max_tokens
                ),
            ));
        }
        if let Some(budget) = deployment
            && budget.requests == 0
        {
            return Err(invalid(
                "remote.deployment_requests_per_minute",
                format!(
                    "allows no whole request per {} s window: raise it or the window",
                    self.deployment_window_secs
                ),
            ));
        }
        let positive = |v: f64| (v > 0.0).then_some(v);
        Ok(RemoteSettings {
            kind: self.kind,
            endpoint,
            model: self.model,
            api_version: self.api_version,
            auth,
            mode: self.mode,
            uncertain_band: self.uncertain_band,
            confident_ng_above: (self.confident_ng_above > 0.0).then_some(self.confident_ng_above),
            workers: self.workers,
            max_concurrency: self.max_concurrency,
            requests_per_minute: self.requests_per_minute,
            deployment,
            timeout: Duration::from_secs(self.timeout_secs),
            max_attempts: self.max_attempts,
            max_retry_wait: Duration::from_secs(self.max_retry_wait_secs),
            max_deferral: Duration::from_secs(self.max_deferral_secs),
            max_tokens: self.max_tokens,
            max_side_px: self.max_side_px,
            detail: self.detail,
            image: self.image,
            send_regions: self.send_regions,
            input_usd_per_token: self.input_usd_per_million_tokens / 1e6,
            output_usd_per_token: self.output_usd_per_million_tokens / 1e6,
            daily_budget_usd: positive(self.daily_budget_usd),
            monthly_budget_usd: positive(self.monthly_budget_usd),
            job_lease: Duration::from_secs(self.job_lease_secs),
            breaker_failures: (self.breaker_failures > 0).then_some(self.breaker_failures),
            breaker_open: Duration::from_secs(self.breaker_open_secs),
            skus,
        })
    }
}

/// Per-minute limits (0: none) scaled to a window of `window_secs`, rounded up; `None` when
/// neither is set.
fn deployment_budget(
    tokens_per_minute: u64,
    requests_per_minute: u64,
    window_secs: u64,
) -> Option<DeploymentBudget> {
    let per_window = |per_minute: u64| match per_minute {
        0 => u64::MAX,
        // Rounded down: the windows of a minute together never allow more than the minute.
        n => n.saturating_mul(window_secs) / 60,
    };
    (tokens_per_minute > 0 || requests_per_minute > 0).then(|| DeploymentBudget {
        window: Duration::from_secs(window_secs),
        tokens: per_window(tokens_per_minute),
        requests: per_window(requests_per_minute),
    })
}

impl RemoteSettings {
    /// The prompt settings of `sku`, if configured.
    pub fn sku(&self, sku: &str) -> Option<&SkuPrompt> {
        self.skus.iter().find(|s| s.sku == sku)
    }

    /// The mode that applies to `sku`.
    pub fn mode(&self, sku: &str) -> Mode {
        self.sku(sku).and_then(|s| s.mode).unwrap_or(self.mode)
    }
}
