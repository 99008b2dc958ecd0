//! DeBERTa-v2/v3 (`DebertaV2ForSequenceClassification`, OpenAssistant's deberta-v3 reward models):
//! a bidirectional encoder with disentangled (content/position) self-attention, read at the first
//! token through a ContextPooler. Exactly transformers 4.57.6's
//! `models/deberta_v2/modeling_deberta_v2.py`; the line references below are to that file.
//!
//! A bidirectional encoder sees padding unless it is masked, so the mask is built from each row's
//! length (`Batch::lengths`). With right padding the outputs at real positions equal those of the
//! row alone: relative positions are differences of column indices, absolute positions
//! (`position_biased_input`) start at 0 either way, padded keys are masked and the convolution
//! reads padded embeddings that the embedding mask zeroed, as the row alone reads its zero padding.

use serde_json::Value;
use tch::{Device, Kind, Tensor};

use super::backbone::Backbone;
use super::config::{Biases, ConfigJson, DecoderConfig};
use super::heads::RewardHead;
use super::registry::HeadContext;
use super::Family;
use crate::batching::Batch;
use crate::error::LoadError;
use crate::weights::VarBuilder;

/// The activations transformers' `ACT2FN` names that DeBERTa configs use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact (erf) GELU
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`: the tanh approximation
    GeluTanh,
    Relu,
    Tanh,
    /// `silu`, `swish`
    Silu,
}

impl Activation {
    fn parse(field: &str, name: &str) -> Result<Self, LoadError> {
        Ok(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Self::GeluTanh,
            "relu" => Self::Relu,
            "tanh" => Self::Tanh,
            "silu" | "swish" => Self::Silu,
            other => {
                return Err(LoadError::Config {
                    field: field.to_string(),
                    reason: format!(
                        "activation {other:?} is not supported (supported: gelu, gelu_new, \
                         gelu_pytorch_tanh, relu, tanh, silu, swish)"
                    ),
                })
            }
        })
    }

    fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Self::Gelu => x.gelu("none"),
            Self::GeluTanh => x.gelu("tanh"),
            Self::Relu => x.relu(),
            Self::Tanh => x.tanh(),
            Self::Silu => x.silu(),
        }
    }
}

/// The convolution after the first layer (`conv_kernel_size` > 0, deberta-v2-xlarge).
#[derive(Clone, Debug, PartialEq)]
pub struct ConvSettings {
    pub kernel_size: i64,
    pub groups: i64,
    pub activation: Activation,
}

/// What DebertaV2Config adds to the shared shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// width of the word embeddings, projected to hidden_size when it differs (`embed_proj`)
    pub embedding_size: i64,
    /// absolute position embeddings added to the input (v3: false)
    pub position_biased_input: bool,
    pub type_vocab_size: i64,
    pub layer_norm_eps: f64,
    pub relative_attention: bool,
    /// `position_buckets` (0 when unset: relative distances are only clamped)
    pub position_buckets: i64,
    /// `max_relative_positions`, `max_position_embeddings` when below 1 (L168-170)
    pub max_relative_positions: i64,
    pub c2p: bool,
    pub p2c: bool,
    pub share_att_key: bool,
    /// `norm_rel_ebd` names `layer_norm`: the relative embeddings are normalised (L645)
    pub norm_rel_ebd: bool,
    pub conv: Option<ConvSettings>,
    pub hidden_act: Activation,
    pub pooler_hidden_size: i64,
    pub pooler_act: Activation,
}

impl Settings {
    /// Relative embeddings kept per direction (`pos_ebd_size`, L171-173).
    fn span(&self) -> i64 {
        if self.position_buckets > 0 {
            self.position_buckets
        } else {
            self.max_relative_positions
        }
    }
}

fn string_or(json: &Value, name: &str, default: &str) -> Result<String, LoadError> {
    match json.get(name) {
        None | Some(Value::Null) => Ok(default.to_string()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(LoadError::Config {
            field: name.to_string(),
            reason: format!("expected a string, found {other}"),
        }),
    }
}

/// `pos_att_type`: a list, or the older `"p2c|c2p"` string (configuration_deberta_v2.py
/// "Backwards compatibility"); entries other than c2p/p2c are ignored as transformers ignores them.
fn pos_att_type(json: &Value) -> Result<Vec<String>, LoadError> {
    let bad = |reason: String| LoadError::Config {
        field: "pos_att_type".to_string(),
        reason,
    };
    match json.get("pos_att_type") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .to_lowercase()
            .split('|')
            .map(|x| x.trim().to_string())
            .collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("expected strings, found {item}")))
            })
            .collect(),
        Some(other) => Err(bad(format!(
            "expected a list or a \"p2c|c2p\" string, found {other}"
        ))),
    }
}

/// config.json of a DebertaV2 model → the shared shape with its [`Settings`]; defaults are
/// DebertaV2Config's (configuration_deberta_v2.py).
pub fn config(json: &Value, architecture: &str) -> Result<DecoderConfig, LoadError> {
    let c = ConfigJson(json);
    let biases = Biases {
        qkv: true,
        output: true,
        mlp: true,
    };
    let mut config = c.decoder(Family::DebertaV2, architecture, biases)?;
    // DebertaV2Config's default (PretrainedConfig's would be 2048)
    config.max_position_embeddings = c.optional_int("max_position_embeddings")?.unwrap_or(512);
    if let Some(size) = c.optional_int("attention_head_size")? {
        config.head_dim = size;
    }
    let pos_att = pos_att_type(json)?;
    let relative_attention = c.bool_or("relative_attention", false)?;
    let max_relative_positions = match c.optional_int("max_relative_positions")? {
        Some(n) if n >= 1 => n,
        _ => config.max_position_embeddings,
    };
    let norm_rel_ebd = string_or(json, "norm_rel_ebd", "none")?
        .to_lowercase()
        .split('|')
        .any(|x| x.trim() == "layer_norm");
    let conv_kernel_size = c.optional_int("conv_kernel_size")?.unwrap_or(0);
    let conv = if conv_kernel_size > 0 {
        Some(ConvSettings {
            kernel_size: conv_kernel_size,
            groups: c.optional_int("conv_groups")?.unwrap_or(1),
            activation: Activation::parse("conv_act", &string_or(json, "conv_act", "tanh")?)?,
        })
    } else {
        None
    };
    let settings = Settings {
        embedding_size: c
            .optional_int("embedding_size")?
            .unwrap_or(config.hidden_size),
        position_biased_input: c.bool_or("position_biased_input", true)?,
        type_vocab_size: c.optional_int("type_vocab_size")?.unwrap_or(0),
        layer_norm_eps: c.float_or("layer_norm_eps", 1e-7)?,
        relative_attention,
        position_buckets: c.optional_int("position_buckets")?.unwrap_or(-1).max(0),
        max_relative_positions,
        c2p: pos_att.iter().any(|t| t == "c2p"),
        p2c: pos_att.iter().any(|t| t == "p2c"),
        share_att_key: c.bool_or("share_att_key", false)?,
        norm_rel_ebd,
        conv,
        hidden_act: Activation::parse("hidden_act", &string_or(json, "hidden_act", "gelu")?)?,
        pooler_hidden_size: c
            .optional_int("pooler_hidden_size")?
            .unwrap_or(config.hidden_size),
        pooler_act: Activation::parse(
            "pooler_hidden_act",
            &string_or(json, "pooler_hidden_act", "gelu")?,
        )?,
    };
    validate(&config, &settings)?;
    config.deberta = Some(settings);
    Ok(config)
}

fn validate(config: &DecoderConfig, s: &Settings) -> Result<(), LoadError> {
    let bad = |field: &str, reason: String| LoadError::Config {
        field: field.to_string(),
        reason,
    };
    for (field, value) in [
        ("embedding_size", s.embedding_size),
        ("max_position_embeddings", config.max_position_embeddings),
    ] {
        if value <= 0 || value > 1 << 20 {
            return Err(bad(field, format!("{value} is outside 1..={}", 1 << 20)));
        }
    }
    if !(0..=1 << 20).contains(&s.type_vocab_size) {
        return Err(bad(
            "type_vocab_size",
            format!("{} is negative or absurd", s.type_vocab_size),
        ));
    }
    if s.relative_attention && s.span() > 1 << 20 {
        return Err(bad("position_buckets", format!("{} is absurd", s.span())));
    }
    // ContextPooler's dense is [pooler_hidden_size, pooler_hidden_size] on a hidden state and
    // the classifier reads hidden_size (`output_dim`), so the two must agree
    if s.pooler_hidden_size != config.hidden_size {
        return Err(bad(
            "pooler_hidden_size",
            format!(
                "{} differs from hidden_size {}; transformers' ContextPooler would fail",
                s.pooler_hidden_size, config.hidden_size
            ),
        ));
    }
    if let Some(conv) = &s.conv {
        if conv.groups <= 0 || config.hidden_size % conv.groups != 0 || conv.kernel_size > 1 << 10 {
            return Err(bad(
                "conv_groups",
                format!(
                    "{} groups (kernel {}) do not divide hidden_size {}",
                    conv.groups, conv.kernel_size, config.hidden_size
                ),
            ));
        }
    }
    Ok(())
}

struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn load(w: &VarBuilder, out_dim: i64, in_dim: i64, bias: bool) -> Result<Self, LoadError> {
        Ok(Self {
            weight: w.take("weight", &[out_dim, in_dim])?,
            bias: if bias {
                Some(w.take("bias", &[out_dim])?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(w: &VarBuilder, dim: i64, eps: f64) -> Result<Self, LoadError> {
        Ok(Self {
            weight: w.take("weight", &[dim])?,
            bias: w.take("bias", &[dim])?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let dim = self.weight.size()[0];
        x.layer_norm([dim], Some(&self.weight), Some(&self.bias), self.eps, false)
    }
}

/// `Dense` then `LayerNorm(dense(x) + residual)` (DebertaV2SelfOutput and DebertaV2Output).
struct DenseNorm {
    dense: Linear,
    norm: LayerNorm,
}

impl DenseNorm {
    fn load(w: &VarBuilder, out_dim: i64, in_dim: i64, eps: f64) -> Result<Self, LoadError> {
        Ok(Self {
            dense: Linear::load(&w.pp("dense"), out_dim, in_dim, true)?,
            norm: LayerNorm::load(&w.pp("LayerNorm"), out_dim, eps)?,
        })
    }

    fn forward(&self, x: &Tensor, residual: &Tensor) -> Tensor {
        self.norm.forward(&(self.dense.forward(x) + residual))
    }
}

/// DisentangledSelfAttention (L141-369).
struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    pos_key: Option<Linear>,
    pos_query: Option<Linear>,
    heads: i64,
    head_dim: i64,
}

impl Attention {
    fn load(c: &DecoderConfig, s: &Settings, w: &VarBuilder) -> Result<Self, LoadError> {
        let all = c.num_heads * c.head_dim;
        let hidden = c.hidden_size;
        let separate = s.relative_attention && !s.share_att_key;
        Ok(Self {
            query: Linear::load(&w.pp("query_proj"), all, hidden, true)?,
            key: Linear::load(&w.pp("key_proj"), all, hidden, true)?,
            value: Linear::load(&w.pp("value_proj"), all, hidden, true)?,
            pos_key: if separate && s.c2p {
                Some(Linear::load(&w.pp("pos_key_proj"), all, hidden, true)?)
            } else {
                None
            },
            pos_query: if separate && s.p2c {
                Some(Linear::load(&w.pp("pos_query_proj"), all, hidden, true)?)
            } else {
                None
            },
            heads: c.num_heads,
            head_dim: c.head_dim,
        })
    }

    /// `transpose_for_scores`: [b, len, heads * d] -> [b * heads, len, d].
    fn split(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        x.view([size[0], size[1], self.heads, self.head_dim])
            .permute([0, 2, 1, 3])
            .contiguous()
            .view([-1, size[1], self.head_dim])
    }

    /// `scaled_size_sqrt`: sqrt(d * factor) in float32, then in the activations' dtype.
    fn scale(&self, factor: i64, kind: Kind, device: Device) -> Tensor {
        // filled on the device (no host copy per layer); the float32 value and its sqrt are
        // the same there
        Tensor::full(
            [],
            f64::from(self.head_dim as f32 * factor as f32),
            (Kind::Float, device),
        )
        .sqrt()
        .to_kind(kind)
    }

    /// Context [b, len, heads * d] of `x` [b, len, hidden]; `mask` [b, 1, len, len] (true =
    /// attend), `relative` the position table and `rel` the (normed) relative embeddings.
    fn forward(
        &self,
        s: &Settings,
        x: &Tensor,
        mask: &Tensor,
        relative: Option<&(Tensor, Tensor)>,
    ) -> Tensor {
        let size = x.size();
        let (batch, len) = (size[0], size[1]);
        let q = self.split(&self.query.forward(x));
        let k = self.split(&self.key.forward(x));
        let v = self.split(&self.value.forward(x));
        let factor = 1 + i64::from(s.c2p) + i64::from(s.p2c);
        let scale = self.scale(factor, q.kind(), q.device());
        // L249: the key is divided before the product
        let mut scores = q.bmm(&(k.transpose(-1, -2) / &scale));
        if let (true, Some((rel_pos, rel))) = (s.relative_attention, relative) {
            if let Some(bias) = self.bias(s, &q, &k, rel_pos, rel, &scale, batch) {
                scores += bias;
            }
        }
        let scores = scores.view([-1, self.heads, len, len]);
        let min = match scores.kind() {
            Kind::BFloat16 => -3.3895313892515355e38,
            Kind::Half => -65504.0,
            Kind::Double => f64::MIN,
            _ => f32::MIN as f64,
        };
        // L263: torch.finfo(dtype).min where masked, then softmax in the activations' dtype
        let probs = scores
            .masked_fill(&mask.logical_not(), min)
            .softmax(-1, None::<Kind>);
        probs
            .view([-1, len, len])
            .bmm(&v)
            .view([-1, self.heads, len, self.head_dim])
            .permute([0, 2, 1, 3])
            .contiguous()
            .view([batch, len, self.heads * self.head_dim])
    }

    /// `disentangled_attention_bias` (L282-369) for self-attention (query and key both the
    /// layer's input, so `build_rpos` returns the shared table).
    #[allow(clippy::too_many_arguments)]
    fn bias(
        &self,
        s: &Settings,
        q: &Tensor,
        k: &Tensor,
        rel_pos: &Tensor,
        rel: &Tensor,
        scale: &Tensor,
        batch: i64,
    ) -> Option<Tensor> {
        let span = s.span();
        let rel = rel.narrow(0, 0, 2 * span).unsqueeze(0);
        let project = |layer: &Linear| self.split(&layer.forward(&rel)).repeat([batch, 1, 1]);
        let (pos_key, pos_query) = if s.share_att_key {
            (
                s.c2p.then(|| project(&self.key)),
                s.p2c.then(|| project(&self.query)),
            )
        } else {
            (
                self.pos_key.as_ref().map(project),
                self.pos_query.as_ref().map(project),
            )
        };
        let len = q.size()[1];
        let expanded = |index: Tensor| index.expand([q.size()[0], len, len], false);
        let mut score: Option<Tensor> = None;
        if let Some(pos_key) = pos_key {
            let index = expanded((rel_pos + span).clamp(0, 2 * span - 1));
            let c2p = q.bmm(&pos_key.transpose(-1, -2)).gather(-1, &index, false) / scale;
            score = Some(c2p);
        }
        if let Some(pos_query) = pos_query {
            let index = expanded((-rel_pos + span).clamp(0, 2 * span - 1));
            let p2c = k
                .bmm(&pos_query.transpose(-1, -2))
                .gather(-1, &index, false)
                .transpose(-1, -2)
                / scale;
            score = Some(match score {
                Some(c2p) => c2p + p2c,
                None => p2c,
            });
        }
        score
    }
}

struct Layer {
    attention: Attention,
    attention_output: DenseNorm,
    intermediate: Linear,
    output: DenseNorm,
}

impl Layer {
    fn load(c: &DecoderConfig, s: &Settings, w: &VarBuilder) -> Result<Self, LoadError> {
        let eps = s.layer_norm_eps;
        let all = c.num_heads * c.head_dim;
        Ok(Self {
            attention: Attention::load(c, s, &w.pp("attention").pp("self"))?,
            attention_output: DenseNorm::load(
                &w.pp("attention").pp("output"),
                c.hidden_size,
                all,
                eps,
            )?,
            intermediate: Linear::load(
                &w.pp("intermediate").pp("dense"),
                c.intermediate_size,
                c.hidden_size,
                true,
            )?,
            output: DenseNorm::load(&w.pp("output"), c.hidden_size, c.intermediate_size, eps)?,
        })
    }
}

/// ConvLayer (L453-485).
struct Conv {
    weight: Tensor,
    bias: Tensor,
    norm: LayerNorm,
    settings: ConvSettings,
}

impl Conv {
    fn forward(&self, embedded: &Tensor, residual: &Tensor, input_mask: &Tensor) -> Tensor {
        let k = self.settings.kernel_size;
        let out = embedded
            .permute([0, 2, 1])
            .contiguous()
            .conv1d(
                &self.weight,
                Some(&self.bias),
                [1],
                [(k - 1) / 2],
                [1],
                self.settings.groups,
            )
            .permute([0, 2, 1])
            .contiguous();
        let padding = input_mask.logical_not().unsqueeze(-1);
        let out = self
            .settings
            .activation
            .apply(&out.masked_fill(&padding, 0.0));
        let output = self.norm.forward(&(residual + out));
        &output * input_mask.unsqueeze(2).to_kind(output.kind())
    }
}

/// DebertaV2Model: embeddings and encoder; the hidden states of the last layer.
pub struct DebertaV2 {
    word_embeddings: Tensor,
    position_embeddings: Option<Tensor>,
    token_type_embeddings: Option<Tensor>,
    embed_proj: Option<Tensor>,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    rel_embeddings: Option<Tensor>,
    rel_norm: Option<LayerNorm>,
    conv: Option<Conv>,
    settings: Settings,
}

impl DebertaV2 {
    /// The encoder from `w` (the checkpoint's `deberta` scope).
    pub fn load(config: &DecoderConfig, w: &VarBuilder) -> Result<Self, LoadError> {
        let c = config;
        let s = c.deberta.clone().ok_or_else(|| LoadError::Config {
            field: "architectures".to_string(),
            reason: format!("{} is not a DebertaV2 config", c.architecture),
        })?;
        let (hidden, eps, e) = (c.hidden_size, s.layer_norm_eps, s.embedding_size);
        let emb = w.pp("embeddings");
        let word_embeddings = emb
            .pp("word_embeddings")
            .take("weight", &[c.vocab_size, e])?;
        let position_embeddings = if s.position_biased_input {
            let shape = [c.max_position_embeddings, e];
            Some(emb.pp("position_embeddings").take("weight", &shape)?)
        } else {
            None
        };
        let token_type_embeddings = if s.type_vocab_size > 0 {
            let shape = [s.type_vocab_size, e];
            Some(emb.pp("token_type_embeddings").take("weight", &shape)?)
        } else {
            None
        };
        let embed_proj = if e != hidden {
            Some(emb.pp("embed_proj").take("weight", &[hidden, e])?)
        } else {
            None
        };
        let embed_norm = LayerNorm::load(&emb.pp("LayerNorm"), hidden, eps)?;
        let enc = w.pp("encoder");
        let layers = (0..c.num_layers)
            .map(|i| Layer::load(c, &s, &enc.pp("layer").pp(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let rel_embeddings = if s.relative_attention {
            let shape = [2 * s.span(), hidden];
            Some(enc.pp("rel_embeddings").take("weight", &shape)?)
        } else {
            None
        };
        let rel_norm = if s.norm_rel_ebd {
            Some(LayerNorm::load(&enc.pp("LayerNorm"), hidden, eps)?)
        } else {
            None
        };
        let conv = match &s.conv {
            Some(settings) => {
                let cw = enc.pp("conv");
                let shape = [hidden, hidden / settings.groups, settings.kernel_size];
                Some(Conv {
                    weight: cw.pp("conv").take("weight", &shape)?,
                    bias: cw.pp("conv").take("bias", &[hidden])?,
                    norm: LayerNorm::load(&cw.pp("LayerNorm"), hidden, eps)?,
                    settings: settings.clone(),
                })
            }
            None => None,
        };
        Ok(Self {
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            embed_proj,
            embed_norm,
            layers,
            rel_embeddings,
            rel_norm,
            conv,
            settings: s,
        })
    }

    /// DebertaV2Embeddings.forward (L515-558): token type 0 everywhere, positions 0..len.
    fn embed(&self, ids: &Tensor, input_mask: &Tensor) -> Tensor {
        let len = ids.size()[1];
        let mut x = Tensor::embedding(&self.word_embeddings, ids, -1, false, false);
        if let Some(positions) = &self.position_embeddings {
            x += positions.narrow(0, 0, len).unsqueeze(0);
        }
        if let Some(types) = &self.token_type_embeddings {
            x += types.get(0);
        }
        if let Some(proj) = &self.embed_proj {
            x = x.linear(proj, None::<Tensor>);
        }
        let x = self.embed_norm.forward(&x);
        &x * input_mask.unsqueeze(2).to_kind(x.kind())
    }

    /// Hidden states [rows, padded_len, hidden] of the last layer.
    pub fn forward(&self, batch: &Batch) -> Tensor {
        let device = batch.ids.device();
        let len = batch.padded_len as i64;
        let lengths: Vec<i64> = batch.lengths.iter().map(|&l| l as i64).collect();
        let lengths = crate::batching::upload(&Tensor::from_slice(&lengths), device).unsqueeze(1);
        let input_mask = Tensor::arange(len, (Kind::Int64, device))
            .unsqueeze(0)
            .lt_tensor(&lengths);
        // get_attention_mask (L651-658): a pair attends only where both ends are real
        let mask = input_mask
            .unsqueeze(1)
            .unsqueeze(2)
            .logical_and(&input_mask.unsqueeze(1).unsqueeze(3));
        let embedded = self.embed(&batch.ids, &input_mask);
        let relative = self.rel_embeddings.as_ref().map(|rel| {
            let rel = match &self.rel_norm {
                Some(norm) => norm.forward(rel),
                None => rel.shallow_clone(),
            };
            (
                crate::batching::upload(&relative_positions(len, &self.settings), device),
                rel,
            )
        });
        let s = &self.settings;
        let mut x = embedded.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let context = layer.attention.forward(s, &x, &mask, relative.as_ref());
            let attended = layer.attention_output.forward(&context, &x);
            let inner = s.hidden_act.apply(&layer.intermediate.forward(&attended));
            let mut out = layer.output.forward(&inner, &attended);
            if let (0, Some(conv)) = (i, &self.conv) {
                out = conv.forward(&embedded, &out, &input_mask);
            }
            x = out;
        }
        x
    }
}

/// `build_relative_position` (L74-102) for a sequence of `len`: query minus key column, put in
/// log buckets (`make_log_bucket_position`, L57-71, in float32 as there) when `position_buckets`
/// is set. [1, len, len], int64, on the CPU.
fn relative_positions(len: i64, s: &Settings) -> Tensor {
    let ids = Tensor::arange(len, (Kind::Int64, Device::Cpu));
    let relative = ids.unsqueeze(1) - ids.unsqueeze(0);
    let bucketed = if s.position_buckets > 0 && s.max_relative_positions > 0 {
        log_buckets(&relative, s.position_buckets, s.max_relative_positions)
    } else {
        relative
    };
    bucketed.unsqueeze(0)
}

fn log_buckets(relative: &Tensor, bucket_size: i64, max_position: i64) -> Tensor {
    let sign = relative.sign();
    let mid = bucket_size / 2;
    let inside = relative.lt(mid).logical_and(&relative.gt(-mid));
    let abs_pos = relative
        .abs()
        .where_self(&inside.logical_not(), &Tensor::from(mid - 1));
    // torch.log(torch.tensor((max_position - 1) / mid)): the Python float, as a float32 tensor
    let denominator = Tensor::from(((max_position - 1) as f64 / mid as f64) as f32).log();
    let log_pos =
        (abs_pos.to_kind(Kind::Float) / mid as f64).log() / denominator * (mid - 1) as f64;
    let log_pos = log_pos.ceil() + mid as f64;
    let near = abs_pos.le(mid);
    relative
        .to_kind(Kind::Float)
        .where_self(&near, &(log_pos * sign))
        .to_kind(Kind::Int64)
}

impl Backbone for DebertaV2 {
    fn forward(&self, batch: &Batch) -> Tensor {
        DebertaV2::forward(self, batch)
    }

    /// DeBERTa has no final norm after the last layer (each layer ends in its own LayerNorm).
    fn final_norm(&self, hidden: &Tensor) -> Tensor {
        hidden.shallow_clone()
    }

    fn embed_tokens(&self) -> &Tensor {
        &self.word_embeddings
    }

    fn causal(&self) -> bool {
        false
    }
}

/// ContextPooler (L1002-1017) and the classifier of DebertaV2ForSequenceClassification: the
/// first token's hidden state, `dense`, the pooler activation, then `classifier` (with bias).
pub struct PooledHead {
    dense: Linear,
    activation: Activation,
    classifier: Linear,
}

impl PooledHead {
    /// `pooler.dense` and `classifier` of the checkpoint's root scope `w`.
    pub fn load(config: &DecoderConfig, w: &VarBuilder) -> Result<Self, LoadError> {
        let s = config.deberta.as_ref().ok_or_else(|| LoadError::Config {
            field: "architectures".to_string(),
            reason: format!("{} is not a DebertaV2 config", config.architecture),
        })?;
        let pooled = s.pooler_hidden_size;
        Ok(Self {
            dense: Linear::load(&w.pp("pooler").pp("dense"), pooled, pooled, true)?,
            activation: s.pooler_act,
            classifier: Linear::load(
                &w.pp("classifier"),
                config.num_labels,
                config.hidden_size,
                true,
            )?,
        })
    }
}

/// The registry's head loader for DebertaV2ForSequenceClassification.
pub fn load_head(context: &HeadContext) -> Result<Box<dyn RewardHead>, LoadError> {
    Ok(Box::new(PooledHead::load(context.config, context.w)?))
}

impl RewardHead for PooledHead {
    fn forward(&self, hidden: &Tensor) -> Tensor {
        let pooled = self.activation.apply(&self.dense.forward(hidden));
        self.classifier.forward(&pooled).to_kind(Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(buckets: i64, max_relative: i64) -> Settings {
        let json = serde_json::json!({
            "architectures": ["DebertaV2ForSequenceClassification"],
            "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2,
            "relative_attention": true, "position_buckets": buckets,
            "max_relative_positions": max_relative, "pos_att_type": "p2c|c2p",
        });
        config(&json, "DebertaV2ForSequenceClassification")
            .unwrap()
            .deberta
            .unwrap()
    }

    #[test]
    fn log_buckets_match_transformers() {
        // transformers 4.57.6: build_relative_position(q, q, bucket_size=8, max_position=64)
        // for 21 and 700 positions (rows 20, 0 and 699)
        let s = settings(8, 64);
        let table = relative_positions(21, &s);
        let row = |t: &Tensor, i: i64| Vec::<i64>::try_from(&t.get(0).get(i)).unwrap();
        assert_eq!(
            row(&table, 20),
            [6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 5, 5, 5, 5, 5, 5, 4, 3, 2, 1, 0]
        );
        assert_eq!(
            row(&table, 0),
            [0, -1, -2, -3, -4, -5, -5, -5, -5, -5, -5, -6, -6, -6, -6, -6, -6, -6, -6, -6, -6]
        );
        let long = relative_positions(700, &s);
        assert_eq!(row(&long, 699)[..40], [10; 40]);
        assert_eq!(
            (long.min().int64_value(&[]), long.max().int64_value(&[])),
            (-10, 10)
        );
    }

    #[test]
    fn config_defaults_and_string_pos_att_type() {
        let s = settings(0, -1);
        assert!(s.c2p && s.p2c && !s.share_att_key && s.position_biased_input);
        // max_relative_positions < 1: max_position_embeddings (DebertaV2Config default 512)
        assert_eq!((s.max_relative_positions, s.span()), (512, 512));
        assert_eq!(s.hidden_act, Activation::Gelu);
        assert!(s.conv.is_none() && !s.norm_rel_ebd);
    }

    #[test]
    fn an_unknown_activation_is_named() {
        let json = serde_json::json!({
            "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "pooler_hidden_act": "mish",
        });
        let error = config(&json, "DebertaV2ForSequenceClassification")
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("pooler_hidden_act") && error.contains("mish"),
            "{error}"
        );
    }
}
