//! INF-ORM (`INFORMForSequenceClassification`, rewardbench/models/inform.py): a Llama whose
//! `score` is `nn.Sequential(Linear(hidden, hidden), ReLU(), Linear(hidden, 1))`, both with bias.
//! Its forward pools by transformers 4.43's rule (`argmax(input_ids == pad_token_id) - 1`) under
//! any transformers version: the registry entry's `Pooled::FirstPadMinusOne`.

use super::{HeadContext, Mlp, RewardHead};
use crate::error::LoadError;

pub fn load(ctx: &HeadContext) -> Result<Box<dyn RewardHead>, LoadError> {
    let hidden = ctx.config.hidden_size;
    Ok(Box::new(Mlp::sequential(
        ctx,
        &ctx.w.pp("score"),
        &[hidden, hidden, 1],
        true,
    )?))
}
