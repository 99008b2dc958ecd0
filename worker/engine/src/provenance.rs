//! Where a scoring run's chat template and pad id come from, whatever the tokenizer folder holds.
//!
//! RewardBench decides both from the tokenizer it is given (run_rm.py): its own chat template
//! when it has one, else the FastChat `--chat_template`; its pad token, else EOS (set on the
//! tokenizer and on `model.config.pad_token_id`). A sweep that must reproduce runs scored with
//! another tokenizer states both outright. The 2024 counts sweeps of hybrid-preferences were
//! scored with the folder EasyLM's converter writes (the Llama-2 `tokenizer.model`, no chat
//! template, no pad token), hence FastChat `tulu` + EOS with pad = EOS; a hub tokenizer of the
//! same vocabulary (e.g. `allenai/tulu-2-13b`) may carry a template or a pad token of its own, so
//! their presets say `tokenizer_template = "ignore"` and `pad = "eos"`.

use std::fmt;
use std::str::FromStr;

use crate::tokenizer::RewardTokenizer;

/// Whether the tokenizer's own chat template is used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TemplateSource {
    /// the tokenizer's template when it has one, else the FastChat template (RewardBench)
    #[default]
    Use,
    /// always the FastChat template, as if the tokenizer had none (RewardBench then also
    /// appends EOS)
    Ignore,
}

impl FromStr for TemplateSource {
    type Err = String;

    /// `use` (or empty) and `ignore`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "" | "use" => Ok(Self::Use),
            "ignore" => Ok(Self::Ignore),
            other => Err(format!(
                "tokenizer template {other:?}: expected `use` (the tokenizer's own chat template \
                 when it has one) or `ignore` (always the FastChat template)"
            )),
        }
    }
}

impl fmt::Display for TemplateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Use => "use",
            Self::Ignore => "ignore",
        })
    }
}

/// Which id pads batches and, for classifiers, is `model.config.pad_token_id` (what transformers
/// pools by).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PadChoice {
    /// the tokenizer's pad token, else EOS; the model config's pad id when the tokenizer has a
    /// pad token and the config sets one (RewardBench)
    #[default]
    Tokenizer,
    /// the tokenizer's EOS, as RewardBench sets it when the tokenizer has no pad token
    Eos,
    /// this token id
    Id(u32),
}

impl FromStr for PadChoice {
    type Err = String;

    /// `tokenizer` (or empty), `eos`, or a token id.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "" | "tokenizer" => Ok(Self::Tokenizer),
            "eos" => Ok(Self::Eos),
            other => other.parse::<u32>().map(Self::Id).map_err(|_| {
                format!("pad {other:?}: expected `tokenizer`, `eos` or a token id (e.g. 2)")
            }),
        }
    }
}

impl fmt::Display for PadChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tokenizer => f.write_str("tokenizer"),
            Self::Eos => f.write_str("eos"),
            Self::Id(id) => write!(f, "{id}"),
        }
    }
}

/// The template and pad decisions of one scoring run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Provenance {
    pub template: TemplateSource,
    pub pad: PadChoice,
}

/// The pad ids a classifier run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pads {
    /// fills the padding of batches (masked, so it changes no score)
    pub batch: u32,
    /// `model.config.pad_token_id`: where transformers pools depends on it
    pub pooling: u32,
}

impl PadChoice {
    /// The pad ids for `tokenizer` and a model whose config says `config_pad`.
    pub fn resolve(
        self,
        tokenizer: &RewardTokenizer,
        config_pad: Option<i64>,
    ) -> Result<Pads, String> {
        match self {
            Self::Tokenizer => {
                // run_rm.py: with no pad token, tokenizer and model.config pad with EOS; with one,
                // model.config keeps its own pad id and is filled from the tokenizer only if unset
                let pooling = match config_pad {
                    Some(id) if tokenizer.has_pad_token() => {
                        u32::try_from(id).unwrap_or(tokenizer.pad_id())
                    }
                    _ => tokenizer.pad_id(),
                };
                Ok(Pads {
                    batch: tokenizer.pad_id(),
                    pooling,
                })
            }
            Self::Eos => {
                let eos = tokenizer.eos_id().ok_or_else(|| {
                    "pad = eos, but the tokenizer names no eos_token (pass a token id instead)"
                        .to_string()
                })?;
                Ok(Pads {
                    batch: eos,
                    pooling: eos,
                })
            }
            Self::Id(id) => {
                if !tokenizer.has_id(id) {
                    return Err(format!(
                        "pad = {id}, but the tokenizer's vocabulary has no token {id}"
                    ));
                }
                Ok(Pads {
                    batch: id,
                    pooling: id,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_choice() {
        for (text, source) in [
            ("use", TemplateSource::Use),
            ("ignore", TemplateSource::Ignore),
        ] {
            assert_eq!(text.parse::<TemplateSource>(), Ok(source));
            assert_eq!(source.to_string(), text);
        }
        assert_eq!("".parse::<TemplateSource>(), Ok(TemplateSource::Use));
        let err = "drop".parse::<TemplateSource>().unwrap_err();
        assert!(err.contains("\"drop\"") && err.contains("ignore"), "{err}");

        for (text, pad) in [
            ("tokenizer", PadChoice::Tokenizer),
            ("eos", PadChoice::Eos),
            ("0", PadChoice::Id(0)),
            ("128255", PadChoice::Id(128255)),
        ] {
            assert_eq!(text.parse::<PadChoice>(), Ok(pad));
            assert_eq!(pad.to_string(), text);
        }
        assert_eq!("".parse::<PadChoice>(), Ok(PadChoice::Tokenizer));
        for bad in ["-1", "unk", "2.0"] {
            let err = bad.parse::<PadChoice>().unwrap_err();
            assert!(err.contains(bad) && err.contains("token id"), "{err}");
        }
    }
}
