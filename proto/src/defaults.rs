//! Scoring defaults: what a sweep that leaves a `Scoring` field empty gets, and what the
//! command lines of `worker score` and `coord run` start from.

use crate::v1::Scoring;

/// The FastChat template used when the tokenizer has no chat template of its own (the Tulu 2
/// format the sweep's reward models were trained with).
pub const CHAT_TEMPLATE: &str = "tulu";

/// Tokens kept per sequence, truncated from the left (RewardBench's `run_rm.py`).
pub const MAX_LENGTH: u32 = 2048;

impl Scoring {
    /// The sweep's FastChat template, or [`CHAT_TEMPLATE`] when it names none.
    pub fn chat_template_or_default(&self) -> &str {
        if self.chat_template.is_empty() {
            CHAT_TEMPLATE
        } else {
            &self.chat_template
        }
    }

    /// The sweep's max length, or [`MAX_LENGTH`] when it is 0 (unset).
    pub fn max_length_or_default(&self) -> usize {
        match self.max_length {
            0 => MAX_LENGTH as usize,
            n => n as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_fields_get_the_defaults() {
        let unset = Scoring::default();
        assert_eq!(unset.chat_template_or_default(), "tulu");
        assert_eq!(unset.max_length_or_default(), 2048);
        let set = Scoring {
            chat_template: "zephyr".into(),
            max_length: 512,
            ..Scoring::default()
        };
        assert_eq!(set.chat_template_or_default(), "zephyr");
        assert_eq!(set.max_length_or_default(), 512);
    }
}
