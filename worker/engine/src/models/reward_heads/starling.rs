//! The Starling reward models' `v_head = nn.Linear(hidden, 1, bias=False)` on the final hidden
//! states (rewardbench/models/starling.py), read at the token before the first `PAD_ID` of each
//! row, or at the last column when a row has none (`Pooled::BeforeFirstId`); StarlingPipeline
//! returns one float per row.
//!
//! * Starling-RM-34B: the file's own `LlamaForSequenceClassification` (not transformers' class of
//!   that name), the backbone under `transformer`, `PAD_ID = 0`.
//! * Starling-RM-7B-alpha: `GPTRewardModel`, the same head on a Llama-2-7b-chat body under
//!   `transformer`, `PAD_ID = 1` (see the registry entry), the head in float32.

use super::{HeadContext, Mlp, RewardHead};
use crate::error::LoadError;

pub fn load(ctx: &HeadContext) -> Result<Box<dyn RewardHead>, LoadError> {
    Ok(Box::new(Mlp::linear(ctx, &ctx.w.pp("v_head"), 1, false)?))
}
