//! The LLM price table shipped with flowrun (`codegen/data/llm_prices.json`).

use crate::model::Price;
use serde_json::Value;
use std::sync::OnceLock;

const TABLE: &str = include_str!("../data/llm_prices.json");

fn table() -> &'static Value {
    static T: OnceLock<Value> = OnceLock::new();
    T.get_or_init(|| {
        serde_json::from_str(TABLE).expect("codegen/data/llm_prices.json is valid JSON")
    })
}

/// The price of `model` at `provider`: an exact entry, else the longest entry the model name
/// starts with followed by `-` (a dated snapshot). `None` when unknown: no guessing.
pub(crate) fn lookup(provider: &str, model: &str) -> Option<Price> {
    let models = table().get(provider)?.as_object()?;
    let entry = models.get(model).or_else(|| {
        models
            .iter()
            .filter(|(name, _)| {
                model.len() > name.len()
                    && model.starts_with(name.as_str())
                    && model.as_bytes()[name.len()] == b'-'
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(_, v)| v)
    })?;
    let pair = entry.as_array()?;
    Some(Price {
        input_per_mtok: pair.first()?.as_f64()?,
        output_per_mtok: pair.get(1)?.as_f64()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_prefix_and_unknown() {
        assert_eq!(
            lookup("groq", "llama-3.1-8b-instant")
                .unwrap()
                .input_per_mtok,
            0.05
        );
        assert_eq!(
            lookup("anthropic", "claude-3-5-haiku-20241022")
                .unwrap()
                .output_per_mtok,
            4.0
        );
        // `gpt-4o-mini` must not be priced as `gpt-4o`.
        assert_eq!(
            lookup("openai", "gpt-4o-mini-2024-07-18")
                .unwrap()
                .input_per_mtok,
            0.15
        );
        assert!(lookup("groq", "no-such-model").is_none());
        assert!(lookup("openai_compatible", "anything").is_none());
    }
}
