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

/// The `llm` nodes of `wf` whose calls have no price (no `price`, and their model is not in
/// the table): under a cost limit they would count nothing, and the limit would not hold.
pub fn unpriced_llm_nodes(wf: &crate::model::Workflow) -> Vec<(&str, &str)> {
    wf.nodes
        .iter()
        .filter_map(|node| match &node.kind {
            crate::model::NodeKind::Llm(n)
                if n.price.is_none() && lookup(&n.provider, &n.model).is_none() =>
            {
                Some((node.id.as_str(), n.model.as_str()))
            }
            _ => None,
        })
        .collect()
}

/// What a cost limit needs of an unpriced `llm` node's model, in words.
pub fn unpriced_message(model: &str) -> String {
    format!(
        "model '{model}' has no price in flowrun's table, so its calls would count nothing toward the cost limit (max_cost_usd): give the node `price: {{input_per_mtok: …, output_per_mtok: …}}` (0 for a free local model)"
    )
}

/// Every model listed for `provider`, as the table has it (`model: [input, output,
/// cache_read?, cache_write?]`), for agent nodes: the model an agent CLI uses is known only when
/// it runs, so its node gets the whole section and looks the model up then.
pub(crate) fn models(provider: &str) -> Option<&'static serde_json::Map<String, Value>> {
    table().get(provider)?.as_object()
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
        // Cache prices after the first two numbers leave `lookup` as it was.
        assert_eq!(
            lookup("anthropic", "claude-sonnet-4-5-20250929")
                .unwrap()
                .input_per_mtok,
            3.0
        );
        assert!(lookup("openai_compatible", "anything").is_none());
    }

    #[test]
    fn every_agent_provider_has_a_section_of_number_lists() {
        for cli in crate::model::AGENT_CLIS {
            let models = models(cli.provider).unwrap_or_else(|| panic!("{}", cli.provider));
            assert!(!models.is_empty());
            for (name, entry) in models {
                let nums = entry.as_array().unwrap();
                assert!(
                    (2..=4).contains(&nums.len()) && nums.iter().all(|n| n.as_f64().is_some()),
                    "{}: {name}: {entry}",
                    cli.provider
                );
            }
        }
    }
}
