//! Mixtral's sparse mixture-of-experts MLP (`block_sparse_moe`), as transformers 4.57.6 computes
//! it in modeling_mixtral.py `MixtralSparseMoeBlock.forward`:
//!
//! - `router_logits = self.gate(hidden_states)` (a bias-free linear [experts, hidden], in the model
//!   dtype);
//! - `routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)`, then
//!   `torch.topk(routing_weights, self.top_k, dim=-1)`, then `routing_weights /=
//!   routing_weights.sum(dim=-1, keepdim=True)` in float32, then cast back to the input dtype;
//! - each expert `w2(silu(w1(x)) * w3(x))` (MixtralBlockSparseTop2MLP) runs on the tokens routed to
//!   it only, its output times the token's routing weight, added into a zero tensor of the input
//!   dtype with `index_add_` (experts in increasing order, as transformers' `expert_hit` loop).
//!
//! Each token gets exactly `top_k` contributions and each from a distinct expert, so visiting the
//! tokens of one expert in another order changes nothing; the additions into a token's row happen
//! in expert order, as in transformers, which keeps bf16 rounding the same too.

use tch::{Kind, Tensor};

use crate::error::LoadError;
use crate::weights::VarBuilder;

/// How many experts a layer has and how many each token is routed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoeOptions {
    /// `num_local_experts`
    pub num_experts: i64,
    /// `num_experts_per_tok`
    pub top_k: i64,
}

/// More experts than this is a broken config, refused before anything is allocated.
const MAX_EXPERTS: i64 = 1 << 12;

impl MoeOptions {
    pub fn new(num_experts: i64, top_k: i64) -> Result<Self, LoadError> {
        if num_experts <= 0 || num_experts > MAX_EXPERTS {
            return Err(LoadError::Config {
                field: "num_local_experts".to_string(),
                reason: format!("{num_experts} is outside 1..={MAX_EXPERTS}"),
            });
        }
        if top_k <= 0 || top_k > num_experts {
            return Err(LoadError::Config {
                field: "num_experts_per_tok".to_string(),
                reason: format!("{top_k} is outside 1..={num_experts} (num_local_experts)"),
            });
        }
        Ok(Self { num_experts, top_k })
    }
}

/// One expert's weights: `w1` (gate) and `w3` (up) [inter, hidden], `w2` (down) [hidden, inter].
struct Expert {
    w1: Tensor,
    w2: Tensor,
    w3: Tensor,
}

impl Expert {
    fn forward(&self, x: &Tensor) -> Tensor {
        let inner =
            x.linear::<&Tensor>(&self.w1, None).silu() * x.linear::<&Tensor>(&self.w3, None);
        inner.linear::<&Tensor>(&self.w2, None)
    }
}

pub struct SparseMoe {
    /// the router [experts, hidden]
    gate: Tensor,
    experts: Vec<Expert>,
    top_k: i64,
}

impl SparseMoe {
    /// `gate` and `experts.{i}.w{1,2,3}` of `w` (a layer's `block_sparse_moe`).
    pub fn load(
        options: MoeOptions,
        hidden: i64,
        inter: i64,
        w: &VarBuilder,
    ) -> Result<Self, LoadError> {
        let gate = w
            .pp("gate")
            .take("weight", &[options.num_experts, hidden])?;
        let experts = (0..options.num_experts)
            .map(|i| {
                let e = w.pp("experts").pp(i);
                Ok(Expert {
                    w1: e.pp("w1").take("weight", &[inter, hidden])?,
                    w2: e.pp("w2").take("weight", &[hidden, inter])?,
                    w3: e.pp("w3").take("weight", &[inter, hidden])?,
                })
            })
            .collect::<Result<Vec<_>, LoadError>>()?;
        Ok(Self {
            gate,
            experts,
            top_k: options.top_k,
        })
    }

    /// The block's output for `x` [.., hidden], same shape and dtype.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let shape = x.size();
        let hidden = shape[shape.len() - 1];
        let flat = x.reshape([-1, hidden]);
        let tokens = flat.size()[0];
        let router_logits = flat.linear::<&Tensor>(&self.gate, None);
        let probabilities = router_logits.softmax(1, Kind::Float);
        let (weights, selected) = probabilities.topk(self.top_k, -1, true, true);
        let weights = (&weights / weights.sum_dim_intlist(-1, true, Kind::Float)).to_kind(x.kind());
        // row-major [tokens * top_k]: entry t * top_k + slot routes token t to `selected` there
        let weights = weights.reshape([-1]);
        let selected = selected.reshape([-1]);
        let mut out = Tensor::zeros([tokens, hidden], (x.kind(), x.device()));
        for (index, expert) in self.experts.iter().enumerate() {
            let routed = selected.eq(index as i64).nonzero().squeeze_dim(1);
            if routed.size()[0] == 0 {
                continue; // transformers skips experts no token chose (`expert_hit`)
            }
            let rows = routed.floor_divide_scalar(self.top_k);
            let contribution = expert.forward(&flat.index_select(0, &rows))
                * weights.index_select(0, &routed).unsqueeze(1);
            out = out.index_add(0, &rows, &contribution);
        }
        out.reshape(shape.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn moe(experts: i64, top_k: i64, hidden: i64, inter: i64) -> SparseMoe {
        let r = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.5;
        SparseMoe {
            gate: r(&[experts, hidden]),
            experts: (0..experts)
                .map(|_| Expert {
                    w1: r(&[inter, hidden]),
                    w2: r(&[hidden, inter]),
                    w3: r(&[inter, hidden]),
                })
                .collect(),
            top_k,
        }
    }

    /// Every expert on every token, weighted by a dense matrix that is zero where a token was not
    /// routed: the definition the sparse form must equal.
    fn dense(m: &SparseMoe, x: &Tensor) -> Tensor {
        let p = x.linear::<&Tensor>(&m.gate, None).softmax(-1, Kind::Float);
        let (w, sel) = p.topk(m.top_k, -1, true, true);
        let w = &w / w.sum_dim_intlist(-1, true, Kind::Float);
        let full = Tensor::zeros_like(&p).scatter(-1, &sel, &w);
        let mut out = Tensor::zeros_like(x);
        for (i, e) in m.experts.iter().enumerate() {
            out += e.forward(x) * full.narrow(-1, i as i64, 1);
        }
        out
    }

    #[test]
    fn routed_experts_equal_all_experts_weighted_by_the_top_k() {
        tch::manual_seed(3);
        for (experts, top_k) in [(4, 2), (4, 1), (3, 3), (8, 2)] {
            let m = moe(experts, top_k, 8, 12);
            let x = Tensor::randn([2, 7, 8], (Kind::Float, Device::Cpu));
            let got = m.forward(&x);
            assert_eq!(got.size(), vec![2, 7, 8]);
            let want = dense(&m, &x.reshape([-1, 8])).reshape([2, 7, 8]);
            let diff = (&got - &want).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{experts} experts top {top_k}: {diff}");
        }
    }

    #[test]
    fn a_token_s_output_does_not_depend_on_the_other_tokens() {
        tch::manual_seed(4);
        let m = moe(4, 2, 8, 12);
        let x = Tensor::randn([5, 8], (Kind::Float, Device::Cpu));
        let all = m.forward(&x);
        for t in 0..5 {
            let one = m.forward(&x.narrow(0, t, 1));
            let diff = (&one - all.narrow(0, t, 1)).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "token {t}: {diff}");
        }
    }

    #[test]
    fn expert_counts_are_checked() {
        assert!(MoeOptions::new(4, 2).is_ok());
        for (n, k, field) in [
            (0, 1, "num_local_experts"),
            (4, 0, "num_experts_per_tok"),
            (4, 5, "num_experts_per_tok"),
        ] {
            let error = MoeOptions::new(n, k).unwrap_err().to_string();
            assert!(error.contains(field), "{error}");
        }
    }
}
