//! GRM (`GRewardModel`, rewardbench/models/grm.py): the causal LM's body under `model` and a
//! `ValueHead` `v_head` on `hidden_states[-1]` (after the final norm), read at the last token the
//! attention mask keeps (left padding: the last column; right: `mask.sum() - 1`). The head is
//! `summary = nn.Linear(hidden, 1)` when config.json says `vhead_layer_type: "linear"`, else
//! `vhead_num_layers` (default 1) of `Linear(., vhead_num_neurons) + ReLU` (default 1024
//! neurons) and a final `Linear(vhead_num_neurons, 1)`, every layer with bias. Dropout is off
//! in eval mode. GRMPipeline returns one float per row.

use super::{int_or, HeadContext, Mlp, RewardHead};
use crate::error::LoadError;

pub fn load(ctx: &HeadContext) -> Result<Box<dyn RewardHead>, LoadError> {
    let summary = ctx.w.pp("v_head").pp("summary");
    let layer_type = ctx
        .json
        .get("vhead_layer_type")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("mlp");
    if layer_type == "linear" {
        return Ok(Box::new(Mlp::linear(ctx, &summary, 1, true)?));
    }
    let neurons = int_or(ctx, "vhead_num_neurons", 1024)?;
    let layers = int_or(ctx, "vhead_num_layers", 1)?;
    if !(1..=64).contains(&layers) || !(1..=1 << 20).contains(&neurons) {
        return Err(LoadError::Config {
            field: "vhead_num_layers".to_string(),
            reason: format!("{layers} layers of {neurons} neurons is outside 1..=64 x 1..=2^20"),
        });
    }
    let mut dims = vec![ctx.config.hidden_size];
    dims.extend(std::iter::repeat_n(neurons, layers as usize));
    dims.push(1);
    Ok(Box::new(Mlp::sequential(ctx, &summary, &dims, true)?))
}
