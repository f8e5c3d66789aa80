//! Any server speaking OpenAI's chat completions (vLLM, Ollama, LM Studio on premises):
//! `POST {endpoint}/chat/completions`, no key or a bearer key.

use super::config::RemoteSettings;
use super::{KeyStyle, Target};

pub(super) fn target(s: &RemoteSettings) -> Target {
    Target {
        url: format!("{}/chat/completions", s.endpoint),
        model_in_body: true,
        key: KeyStyle::Bearer,
    }
}
