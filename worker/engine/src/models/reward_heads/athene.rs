//! Nexusflow/Athene-RM-8B and Athene-RM-70B. RewardBench 0.1.4 has no code for them; the model
//! cards (huggingface.co/Nexusflow/Athene-RM-8B README.md, the same code in Athene-RM-70B's) hold
//! `AtheneForSequenceClassification`: a `LlamaModel` under `model`, `v_head = nn.Linear(hidden,
//! 1, bias=False)` on `hidden_states[-1]` (after the final norm), the reward read at the last
//! occurrence of `CLS_ID = 128003` in each row, `{"scores": [batch]}`; and
//! `AtheneRewardPipeline.preprocess`: `apply_chat_template(messages, tokenize=False) +
//! tokenizer.cls_token`, tokenized with the default special tokens (so the tokenizer's BOS comes
//! before the one the Llama-3 template writes), max_length 4096, one float per conversation.
//!
//! herd appends the tokenizer's cls_token id after the encoded text (the same ids: a special
//! token is split out before the text is tokenized) and reads the reward there, the last token
//! (`Appends::ClsToken`). The card's class reads id 128003 whatever the tokenizer says, so a
//! tokenizer whose cls_token is another id is refused when the vocabulary holds 128003 (the card
//! would find no CLS); a smaller vocabulary (herd's tiny test models) cannot hold 128003, and
//! there the cls_token is the id read.

use super::{HeadContext, Mlp, RewardHead};
use crate::error::LoadError;
use crate::tokenizer::RewardTokenizer;

/// The RewardBench-style names the registry serves.
pub const ATHENE_8B: &str = "Nexusflow/Athene-RM-8B";
pub const ATHENE_70B: &str = "Nexusflow/Athene-RM-70B";
/// The class the hub's config.json `architectures` names (the training code's; the card loads
/// the checkpoint as `AtheneForSequenceClassification`).
pub const ARCHITECTURE: &str = "CustomAutoModelForSequenceClassification";
/// `AtheneForSequenceClassification.CLS_ID`: `<|reserved_special_token_1|>` of the Llama-3
/// tokenizer.
pub const CLS_ID: u32 = 128_003;

pub fn load(ctx: &HeadContext) -> Result<Box<dyn RewardHead>, LoadError> {
    Ok(Box::new(Mlp::linear(ctx, &ctx.w.pp("v_head"), 1, false)?))
}

/// The id the pipeline appends and the reward is read at: the tokenizer's cls_token, which must
/// be [`CLS_ID`] when the model's vocabulary (`vocab_size`) holds that id.
pub fn cls_token(tokenizer: &RewardTokenizer, vocab_size: i64) -> Result<u32, String> {
    let Some((token, id)) = tokenizer.cls() else {
        return Err(
            "the tokenizer names no cls_token; Athene's pipeline appends it to every \
             conversation and reads the reward there"
                .to_string(),
        );
    };
    if vocab_size > i64::from(CLS_ID) && id != CLS_ID {
        return Err(format!(
            "the tokenizer's cls_token {token:?} is id {id}, but the model reads its reward at \
             id {CLS_ID} (AtheneForSequenceClassification.CLS_ID)"
        ));
    }
    if i64::from(id) >= vocab_size {
        return Err(format!(
            "the tokenizer's cls_token {token:?} is id {id}, outside the model's vocabulary \
             (vocab_size {vocab_size})"
        ));
    }
    Ok(id)
}
