//! Azure OpenAI: the v1 API (`POST {endpoint}/openai/v1/chat/completions`, the deployment
//! named as `model`) or, with `api_version`, the older deployments path
//! (`{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=…`). A key goes in
//! the `api-key` header, an Entra ID token as a bearer token.

use super::config::RemoteSettings;
use super::{KeyStyle, Target};

pub(super) fn target(s: &RemoteSettings) -> Target {
    match &s.api_version {
        None => Target {
            url: format!("{}/openai/v1/chat/completions", s.endpoint),
            model_in_body: true,
            key: KeyStyle::ApiKeyHeader,
        },
        Some(version) => Target {
            url: format!(
                "{}/openai/deployments/{}/chat/completions?api-version={}",
                s.endpoint, s.model, version
            ),
            model_in_body: false,
            key: KeyStyle::ApiKeyHeader,
        },
    }
}
