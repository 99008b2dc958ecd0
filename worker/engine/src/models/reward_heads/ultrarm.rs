//! UltraRM (`LlamaRewardModel`, rewardbench/models/openbmb.py): `regression_head =
//! nn.Linear(hidden, 1, bias=False)` read at `attention_mask.cumsum(1).argmax(1)`, the last token
//! the mask keeps (`Pooled::LastToken`); the pipeline returns the `[batch, 1]` gather.

use super::{HeadContext, Mlp, RewardHead};
use crate::error::LoadError;

pub fn load(ctx: &HeadContext) -> Result<Box<dyn RewardHead>, LoadError> {
    Ok(Box::new(Mlp::linear(
        ctx,
        &ctx.w.pp("regression_head"),
        1,
        false,
    )?))
}
