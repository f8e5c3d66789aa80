//! Azure AI Foundry model endpoints (the Azure AI model inference API):
//! `POST {endpoint}/models/chat/completions?api-version=…`, the model named in the body, a key
//! in the `api-key` header or an Entra ID bearer token.

use super::config::RemoteSettings;
use super::{KeyStyle, Target};

/// The API version sent when none is configured.
const DEFAULT_API_VERSION: &str = "2024-05-01-preview";

pub(super) fn target(s: &RemoteSettings) -> Target {
    Target {
        url: format!(
            "{}/models/chat/completions?api-version={}",
            s.endpoint,
            s.api_version.as_deref().unwrap_or(DEFAULT_API_VERSION)
        ),
        model_in_body: true,
        key: KeyStyle::ApiKeyHeader,
    }
}
