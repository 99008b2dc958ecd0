//! libtorch settings read from the environment that the worker chooses before the first torch
//! call.
//!
//! On Hopper and Blackwell GPUs with cuDNN newer than 9.15, torch 2.11 puts cuDNN attention first
//! in SDPA's backend order (aten/src/ATen/native/transformers/cuda/sdp_utils.cpp,
//! `check_prefer_cudnn_attention`), once per process, unless `TORCH_CUDNN_SDPA_DEPRIORITIZED` is
//! set. cuDNN builds an execution plan for every new (batch, length) shape and caches it per
//! thread (aten/src/ATen/native/cudnn/MHA.cpp); herd pads each batch to its own longest row, so
//! nearly every batch is a new shape and pays the plan build. Deprioritised, causal batches go to
//! flash attention and masked (shared-prefix) batches to the memory-efficient kernel, neither of
//! which builds plans. The worker therefore sets the variable to 1 unless it is set already, or
//! `HERD_CUDNN_ATTENTION=1` asks for torch's own order (bench/gpu/run compares the two).

/// The variable torch reads once, at its first SDPA dispatch on CUDA.
pub const DEPRIORITIZE_CUDNN: &str = "TORCH_CUDNN_SDPA_DEPRIORITIZED";
/// Set to 1 to leave torch's attention backend order as it is (cuDNN first where torch prefers it).
pub const KEEP_CUDNN: &str = "HERD_CUDNN_ATTENTION";

/// The variable to set, if any, given how the environment reads (`lookup`): none when the user
/// set `TORCH_CUDNN_SDPA_DEPRIORITIZED` themselves (any value, theirs wins) or asked for cuDNN
/// with `HERD_CUDNN_ATTENTION=1`.
pub fn attention_setting(
    lookup: impl Fn(&str) -> Option<String>,
) -> Option<(&'static str, &'static str)> {
    let keep_cudnn = lookup(KEEP_CUDNN).is_some_and(|v| v.trim() == "1");
    (lookup(DEPRIORITIZE_CUDNN).is_none() && !keep_cudnn).then_some((DEPRIORITIZE_CUDNN, "1"))
}

/// Applies [`attention_setting`] to this process. Call first in `main`, before any other thread
/// starts (setting a variable races with threads reading the environment) and before libtorch
/// runs anything.
pub fn apply() {
    if let Some((name, value)) = attention_setting(|name| std::env::var(name).ok()) {
        std::env::set_var(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> Option<(&'static str, &'static str)> {
        attention_setting(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn cudnn_attention_is_deprioritised_unless_the_user_chose() {
        assert_eq!(with(&[]), Some((DEPRIORITIZE_CUDNN, "1")));
        // the user's own value is left alone, whatever it is
        assert_eq!(with(&[(DEPRIORITIZE_CUDNN, "0")]), None);
        assert_eq!(with(&[(DEPRIORITIZE_CUDNN, "1")]), None);
        // HERD_CUDNN_ATTENTION=1 keeps torch's order; other values do not
        assert_eq!(with(&[(KEEP_CUDNN, "1")]), None);
        assert_eq!(with(&[(KEEP_CUDNN, "0")]), Some((DEPRIORITIZE_CUDNN, "1")));
    }
}
