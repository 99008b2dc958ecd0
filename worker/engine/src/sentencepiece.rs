//! A SentencePiece `tokenizer.model` turned into the fast tokenizer transformers builds from it.
//!
//! transformers 4.51.0 (the version rewardbench 0.1.4 pins) loads a Llama tokenizer folder that
//! has no tokenizer.json by converting the slow tokenizer: `convert_slow_tokenizer.LlamaConverter`
//! (a `SpmConverter`) builds a `tokenizers` BPE model from the SentencePiece pieces, and
//! `PreTrainedTokenizerFast.__init__` then adds the special tokens of tokenizer_config.json. This
//! module does the same steps with the `tokenizers` crate; the post-processor (BOS/EOS) is left
//! to [`crate::tokenizer::RewardTokenizer`], as `LlamaTokenizerFast.update_post_processor` sets it.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;
use serde_json::Value;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, Tokenizer};

/// The parts of sentencepiece's `ModelProto` the conversion reads (field numbers from
/// sentencepiece's src/sentencepiece_model.proto; proto2, so absent fields take the defaults
/// applied in the accessors below). Unknown fields are skipped.
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    /// `repeated SentencePiece pieces = 1;`
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<SentencePiece>,
    /// `optional TrainerSpec trainer_spec = 2;`
    #[prost(message, optional, tag = "2")]
    pub trainer_spec: Option<TrainerSpec>,
}

/// `ModelProto.SentencePiece`
#[derive(Clone, PartialEq, Message)]
pub struct SentencePiece {
    /// `optional string piece = 1;`
    #[prost(string, optional, tag = "1")]
    pub piece: Option<String>,
    /// `optional float score = 2;`
    #[prost(float, optional, tag = "2")]
    pub score: Option<f32>,
    /// `optional Type type = 3 [default = NORMAL];` (NORMAL 1, UNKNOWN 2, CONTROL 3,
    /// USER_DEFINED 4, UNUSED 5, BYTE 6)
    #[prost(int32, optional, tag = "3")]
    pub r#type: Option<i32>,
}

/// `TrainerSpec`
#[derive(Clone, PartialEq, Message)]
pub struct TrainerSpec {
    /// `optional ModelType model_type = 3 [default = UNIGRAM];` (UNIGRAM 1, BPE 2, WORD 3, CHAR 4)
    #[prost(int32, optional, tag = "3")]
    pub model_type: Option<i32>,
    /// `optional string unk_piece = 45 [default = "<unk>"];`
    #[prost(string, optional, tag = "45")]
    pub unk_piece: Option<String>,
}

const TYPE_NORMAL: i32 = 1;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const MODEL_UNIGRAM: i32 = 1;
const MODEL_BPE: i32 = 2;

impl SentencePiece {
    fn text(&self) -> &str {
        self.piece.as_deref().unwrap_or("")
    }

    fn kind(&self) -> i32 {
        self.r#type.unwrap_or(TYPE_NORMAL)
    }
}

impl ModelProto {
    pub fn model_type(&self) -> i32 {
        self.trainer_spec
            .as_ref()
            .and_then(|t| t.model_type)
            .unwrap_or(MODEL_UNIGRAM)
    }

    fn unk_piece(&self) -> &str {
        self.trainer_spec
            .as_ref()
            .and_then(|t| t.unk_piece.as_deref())
            .unwrap_or("<unk>")
    }
}

fn model_type_name(model_type: i32) -> String {
    match model_type {
        1 => "UNIGRAM".to_string(),
        2 => "BPE".to_string(),
        3 => "WORD".to_string(),
        4 => "CHAR".to_string(),
        other => format!("unknown model_type {other}"),
    }
}

/// The flags of `LlamaTokenizerFast` that shape the conversion.
#[derive(Clone, Debug)]
pub struct LlamaOptions {
    /// tokenizer_config `legacy` (LlamaTokenizerFast: `None` means true)
    pub legacy: bool,
    /// tokenizer_config `add_prefix_space` (the slow LlamaTokenizer's default is true)
    pub add_prefix_space: bool,
    /// content of tokenizer_config `added_tokens_decoder` entries 0, 1 and 2: LlamaConverter.vocab
    /// names those ids by `convert_ids_to_tokens`, which prefers them to the pieces
    pub first_three: [Option<String>; 3],
}

/// Reads and parses a `tokenizer.model`.
pub fn read_model(path: &Path) -> Result<ModelProto, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    ModelProto::decode(bytes.as_slice())
        .map_err(|e| format!("not a SentencePiece model (protobuf ModelProto): {e}"))
}

/// `LlamaConverter(...).converted()`: the BPE model with byte fallback, its normalizer,
/// pre-tokenizer and decoder, and the control/user-defined pieces as added tokens.
pub fn llama_tokenizer(proto: &ModelProto, options: &LlamaOptions) -> Result<Tokenizer, String> {
    let model_type = proto.model_type();
    if model_type != MODEL_BPE {
        return Err(format!(
            "SentencePiece model type {} is not supported (herd converts BPE models, as \
             transformers' LlamaConverter does for Llama tokenizers; add a tokenizer.json)",
            model_type_name(model_type)
        ));
    }
    if proto.pieces.len() < 3 {
        return Err(format!(
            "the SentencePiece model has {} pieces (a Llama model has at least <unk>, <s>, </s>)",
            proto.pieces.len()
        ));
    }
    // LlamaConverter.vocab: ids 0..2 with score 0, then every other piece with its score
    let vocab_scores: Vec<(String, f64)> = proto
        .pieces
        .iter()
        .enumerate()
        .map(|(id, piece)| match options.first_three.get(id) {
            Some(name) => (
                name.clone().unwrap_or_else(|| piece.text().to_string()),
                0.0,
            ),
            None => (
                piece.text().to_string(),
                f64::from(piece.score.unwrap_or(0.0)),
            ),
        })
        .collect();
    let merges = generate_merges(proto, &vocab_scores);
    // SpmConverter.tokenizer: `{word: i for i, (word, score) in enumerate(vocab_scores)}`
    let mut bpe_vocab = Vocab::new();
    for (id, (word, _)) in vocab_scores.iter().enumerate() {
        bpe_vocab.insert(word.clone(), id as u32);
    }
    let bpe = BPE::builder()
        .vocab_and_merges(bpe_vocab, merges)
        .unk_token(proto.unk_piece().to_string())
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| format!("building the BPE model: {e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);
    // control pieces are special added tokens, user-defined ones plain added tokens, both
    // unnormalized, in id order (SpmConverter.tokenizer)
    let added: Vec<AddedToken> = proto
        .pieces
        .iter()
        .filter(|p| matches!(p.kind(), TYPE_CONTROL | TYPE_USER_DEFINED))
        .map(|p| AddedToken::from(p.text(), p.kind() == TYPE_CONTROL).normalized(false))
        .collect();
    tokenizer
        .add_tokens(added)
        .map_err(|e| format!("adding the control pieces: {e}"))?;

    let replacement = '▁';
    if options.legacy {
        // LlamaConverter.normalizer (legacy): Prepend("▁") when add_prefix_space, Replace(" ", "▁")
        let mut steps: Vec<NormalizerWrapper> = Vec::new();
        if options.add_prefix_space {
            steps.push(Prepend::new(replacement.to_string()).into());
        }
        steps.push(
            Replace::new(" ", replacement.to_string())
                .map_err(|e| format!("normalizer: {e}"))?
                .into(),
        );
        tokenizer
            .with_normalizer(Some(NormalizerSequence::new(steps)))
            .map_err(|e| format!("normalizer: {e}"))?;
    } else {
        // LlamaConverter.pre_tokenizer (non-legacy): Metaspace without splitting, prepending
        // "▁" to the first section only (_get_prepend_scheme: "first", or "never")
        let scheme = if options.add_prefix_space {
            PrependScheme::First
        } else {
            PrependScheme::Never
        };
        tokenizer.with_pre_tokenizer(Some(Metaspace::new(replacement, scheme, false)));
    }
    // LlamaConverter.decoder
    let mut decoders: Vec<DecoderWrapper> = vec![
        tokenizers::decoders::DecoderWrapper::Replace(
            Replace::new(replacement.to_string(), " ").map_err(|e| format!("decoder: {e}"))?,
        ),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if options.add_prefix_space {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}

/// A special token of tokenizer_config.json / special_tokens_map.json: a string, or an
/// AddedToken object with its flags.
#[derive(Clone, Debug)]
pub enum SpecialToken {
    Text(String),
    Added(AddedToken),
}

impl SpecialToken {
    fn content(&self) -> &str {
        match self {
            Self::Text(text) => text,
            Self::Added(token) => &token.content,
        }
    }
}

/// `AddedToken(**entry)` of an `added_tokens_decoder` entry or a special token object:
/// `content` is required; the flags default as tokenizers' AddedToken does (`normalized` to
/// `not special`).
pub fn added_token(entry: &Value, force_special: bool) -> Result<AddedToken, String> {
    let content = entry
        .get("content")
        .and_then(Value::as_str)
        .ok_or("an added token needs a string \"content\"")?;
    let flag = |name: &str| -> Result<Option<bool>, String> {
        match entry.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(format!(
                "added token {content:?}: {name} must be true or false, not {other}"
            )),
        }
    };
    let special = force_special || flag("special")?.unwrap_or(false);
    Ok(AddedToken::from(content, special)
        .single_word(flag("single_word")?.unwrap_or(false))
        .lstrip(flag("lstrip")?.unwrap_or(false))
        .rstrip(flag("rstrip")?.unwrap_or(false))
        .normalized(flag("normalized")?.unwrap_or(!special)))
}

/// The end of `PreTrainedTokenizerFast.__init__` (transformers 4.51.0,
/// tokenization_utils_fast.py) on the converted backend: first the `added_tokens_decoder`
/// entries (in id order) the backend does not hold with the same flags, then every special token
/// whose content is not among the added tokens yet. A special token given as a string is added
/// as `AddedToken(token, special=True)`; one given as an AddedToken is always passed on (a Python
/// AddedToken never equals the strings it is checked against), so its flags replace the
/// backend's.
pub fn add_config_tokens(
    tokenizer: &mut Tokenizer,
    added_tokens_decoder: &[(u64, AddedToken)],
    special_tokens: &[SpecialToken],
) -> Result<(), String> {
    let existing: Vec<AddedToken> = tokenizer.get_added_tokens_decoder().into_values().collect();
    let mut decoder: Vec<&(u64, AddedToken)> = added_tokens_decoder.iter().collect();
    decoder.sort_by_key(|(id, _)| *id);
    let mut to_add: Vec<AddedToken> = decoder
        .into_iter()
        .filter(|(_, token)| !existing.contains(token))
        .map(|(_, token)| token.clone())
        .collect();
    let mut encoder: Vec<String> = existing.iter().map(|t| t.content.clone()).collect();
    encoder.extend(to_add.iter().map(|t| t.content.clone()));
    let mut seen: Vec<&str> = Vec::new();
    for special in special_tokens {
        // all_special_tokens_extended: each token once, in attribute order
        if seen.contains(&special.content()) {
            continue;
        }
        seen.push(special.content());
        match special {
            SpecialToken::Text(text) => {
                if !encoder.iter().any(|e| e == text) && !to_add.iter().any(|t| &t.content == text)
                {
                    to_add.push(AddedToken::from(text.as_str(), true));
                }
            }
            SpecialToken::Added(token) => {
                if !to_add.contains(token) {
                    to_add.push(token.clone().special(true));
                }
            }
        }
    }
    // is_special: the token's own flag, or its content is one of the special tokens
    let special_contents: Vec<String> = special_tokens
        .iter()
        .map(|t| t.content().to_string())
        .collect();
    let to_add: Vec<AddedToken> = to_add
        .into_iter()
        .map(|t| {
            let special = t.special || special_contents.contains(&t.content);
            // tokenizers 0.21 (the reference environment's) keeps a re-added content's earlier
            // entry beside the new one, so an unnormalized entry still matches the raw text
            // first; this crate replaces the entry, so the earlier `normalized = false` is kept
            let normalized = t.normalized
                && existing
                    .iter()
                    .filter(|old| old.content == t.content)
                    .all(|old| old.normalized);
            t.special(special).normalized(normalized)
        })
        .collect();
    tokenizer
        .add_tokens(to_add)
        .map_err(|e| format!("adding the special tokens: {e}"))?;
    Ok(())
}

/// transformers `generate_merges(vocab, vocab_scores)` with `SentencePieceExtractor`'s vocab
/// (`{sp.id_to_piece(i): i}`): every split of every piece into two pieces of the vocabulary,
/// ordered within a piece by the ids of its halves, then (stably) by score, left length and
/// right length, all descending. Lengths count characters, as Python's `len` does.
fn generate_merges(proto: &ModelProto, vocab_scores: &[(String, f64)]) -> Vec<(String, String)> {
    let mut sp_vocab: HashMap<&str, usize> = HashMap::with_capacity(proto.pieces.len());
    for (id, piece) in proto.pieces.iter().enumerate() {
        sp_vocab.insert(piece.text(), id);
    }
    // `dict(vocab_scores)`: first position of a word, last score
    let mut order: Vec<(&str, f64)> = Vec::with_capacity(vocab_scores.len());
    let mut position: HashMap<&str, usize> = HashMap::with_capacity(vocab_scores.len());
    for (word, score) in vocab_scores {
        match position.get(word.as_str()) {
            Some(&at) => order[at].1 = *score,
            None => {
                position.insert(word, order.len());
                order.push((word, *score));
            }
        }
    }
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    for (word, score) in order {
        let mut local: Vec<(&str, &str, usize, usize)> = Vec::new();
        for (index, _) in word.char_indices().skip(1) {
            let (left, right) = word.split_at(index);
            if let (Some(&l), Some(&r)) = (sp_vocab.get(left), sp_vocab.get(right)) {
                local.push((left, right, l, r));
            }
        }
        local.sort_by_key(|&(_, _, l, r)| (l, r));
        merges.extend(local.into_iter().map(|(l, r, _, _)| (l, r, score)));
    }
    let key = |m: &(&str, &str, f64)| (m.2, m.0.chars().count(), m.1.chars().count());
    // Python's sort(reverse=True) keeps equal elements in their original order, as a stable
    // sort with the comparison reversed does
    merges.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.partial_cmp(&ka).unwrap_or(std::cmp::Ordering::Equal)
    });
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(text: &str, score: f32, kind: i32) -> SentencePiece {
        SentencePiece {
            piece: Some(text.to_string()),
            score: Some(score),
            r#type: Some(kind),
        }
    }

    fn model(pieces: Vec<SentencePiece>, model_type: i32) -> ModelProto {
        ModelProto {
            pieces,
            trainer_spec: Some(TrainerSpec {
                model_type: Some(model_type),
                unk_piece: None,
            }),
        }
    }

    fn options(legacy: bool) -> LlamaOptions {
        LlamaOptions {
            legacy,
            add_prefix_space: true,
            first_three: [None, None, None],
        }
    }

    fn tiny() -> ModelProto {
        model(
            vec![
                piece("<unk>", 0.0, 2),
                piece("<s>", 0.0, 3),
                piece("</s>", 0.0, 3),
                piece("▁", -1.0, 1),
                piece("a", -2.0, 1),
                piece("b", -3.0, 1),
                piece("ab", -4.0, 1),
                piece("▁ab", -5.0, 1),
                piece("▁a", -6.0, 1),
            ],
            MODEL_BPE,
        )
    }

    #[test]
    fn merges_follow_score_then_lengths() {
        let proto = tiny();
        let scores: Vec<(String, f64)> = proto
            .pieces
            .iter()
            .map(|p| (p.text().to_string(), f64::from(p.score.unwrap())))
            .collect();
        let merges = generate_merges(&proto, &scores);
        // "ab" (-4) first; "▁ab" (-5) splits as ▁+ab and ▁a+b: equal scores, so the longer
        // left piece comes first; "▁a" (-6) last
        assert_eq!(
            merges,
            vec![
                ("a".to_string(), "b".to_string()),
                ("▁a".to_string(), "b".to_string()),
                ("▁".to_string(), "ab".to_string()),
                ("▁".to_string(), "a".to_string()),
            ]
        );
    }

    #[test]
    fn legacy_and_non_legacy_differ_only_where_transformers_does() {
        let proto = tiny();
        let legacy = llama_tokenizer(&proto, &options(true)).unwrap();
        let modern = llama_tokenizer(&proto, &options(false)).unwrap();
        let ids = |t: &Tokenizer, text: &str| t.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(ids(&legacy, "ab"), vec![7]);
        assert_eq!(ids(&modern, "ab"), vec![7]);
        // legacy prepends ▁ after a special token too; non-legacy only at the start
        assert_eq!(ids(&legacy, "<s>ab"), vec![1, 7]);
        assert_eq!(ids(&modern, "<s>ab"), vec![1, 6]);
    }

    #[test]
    fn byte_fallback_for_unknown_characters() {
        let mut pieces = tiny().pieces;
        pieces.extend((0..=255u8).map(|b| piece(&format!("<0x{b:02X}>"), 0.0, 6)));
        let tokenizer = llama_tokenizer(&model(pieces, MODEL_BPE), &options(true)).unwrap();
        let ids = tokenizer.encode("aé", false).unwrap().get_ids().to_vec();
        // ▁a, then é as its two UTF-8 bytes 0xC3 0xA9 (byte pieces start at id 9)
        assert_eq!(ids, vec![8, 9 + 0xC3, 9 + 0xA9]);
    }

    #[test]
    fn other_model_types_are_refused_by_name() {
        let err = llama_tokenizer(&model(tiny().pieces, MODEL_UNIGRAM), &options(true))
            .err()
            .unwrap();
        assert!(err.contains("UNIGRAM"), "{err}");
    }

    #[test]
    fn garbage_is_not_a_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.model");
        std::fs::write(&path, b"\xff\xff\xff\xff not protobuf").unwrap();
        let err = read_model(&path).unwrap_err();
        assert!(err.contains("not a SentencePiece model"), "{err}");
    }
}
