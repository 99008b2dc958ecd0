//! Starling-RM-34B (`LlamaForSequenceClassification` of rewardbench/models/starling.py, not
//! transformers' class of that name): the backbone under `transformer`, `v_head =
//! nn.Linear(hidden, 1, bias=False)` on `hidden_states[-1]` (after the final norm), read at the
//! token before the first id `PAD_ID = 0` of each row, or at the last column when a row has none
//! (`Pooled::BeforeFirstId(0)`); StarlingPipeline returns one float per row.

use super::{HeadContext, Mlp, RewardHead};
use crate::error::LoadError;

pub fn load(ctx: &HeadContext) -> Result<Box<dyn RewardHead>, LoadError> {
    Ok(Box::new(Mlp::linear(ctx, &ctx.w.pp("v_head"), 1, false)?))
}
