//! Beaver (`LlamaForScore`, rewardbench/models/beaver.py, from safe-rlhf): `score_head =
//! nn.Linear(hidden, score_dim, bias=config.bias)` (`score_dim` default 1, `bias` default false),
//! `end_scores` read at the last token the attention mask keeps, cast to float32 after the head.
//! BeaverPipeline returns `end_scores` ([batch, score_dim]); BeaverCostPipeline returns
//! `-end_scores` (the registry's cost entries negate). safe-rlhf's normalizer only applies with
//! `do_normalize`, which herd refuses rather than ignores.

use super::{int_or, HeadContext, Mlp, RewardHead};
use crate::error::LoadError;
use crate::models::config::ConfigJson;

pub fn load(ctx: &HeadContext) -> Result<Box<dyn RewardHead>, LoadError> {
    let json = ConfigJson(ctx.json);
    if json.bool_or("do_normalize", false)? {
        return Err(LoadError::Config {
            field: "do_normalize".to_string(),
            reason: "true: safe-rlhf's score normalizer is not supported (only do_normalize false)"
                .to_string(),
        });
    }
    let score_dim = score_dim(ctx)?;
    let bias = json.bool_or("bias", false)?;
    Ok(Box::new(Mlp::linear(
        ctx,
        &ctx.w.pp("score_head"),
        score_dim,
        bias,
    )?))
}

/// `config.score_dim` (safe-rlhf's default 1): the width of the head's output.
pub fn score_dim(ctx: &HeadContext) -> Result<i64, LoadError> {
    int_or(ctx, "score_dim", 1)
}
