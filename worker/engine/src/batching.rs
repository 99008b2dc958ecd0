//! The one loop every head runs in: plan -> pad -> forward -> scatter. Planning packs rows
//! longest first, as many per batch as fit a token budget counted with padding (rows × longest
//! row), so padding waste stays small and memory bounded; padding makes the one [`Batch`] type the
//! heads consume.
//!
//! A row holds one sequence, or several that share a prefix ([`Fork`]: a preference pair's chosen
//! and rejected texts, or a RewardBench 2 prompt's completions, share their prompt),
//! `first ++ second[shared..] ++ third[shared..] ...`, with each tail attending to the shared
//! prefix and itself but to no other tail, and its positions continuing from the prefix. Every
//! token then sees exactly the context it has alone.

use tch::{Device, Kind, Tensor};

#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// rows × padded length per forward pass
    pub max_batch_tokens: usize,
    pub max_batch_rows: usize,
}

impl BatchLimits {
    /// Measured defaults: on CPU small batches keep activations in cache (2048 tokens scored
    /// the bench's LLMBar rows ~2x faster than 16384); GPUs want large batches.
    pub fn for_device(device: Device) -> Self {
        Self {
            max_batch_tokens: if device.is_cuda() { 16384 } else { 2048 },
            max_batch_rows: 256,
        }
    }
}

/// How rows become batches: the budget, the id padding is filled with, the device they run on.
#[derive(Clone, Copy, Debug)]
pub struct BatchSettings {
    pub limits: BatchLimits,
    pub pad_id: u32,
    pub device: Device,
    /// batches assembled ahead on a second thread while the current one runs (0: each batch is
    /// assembled when its turn comes, on the calling thread); the scores are the same either way
    pub prefetch: usize,
}

/// How many batches [`run`] assembles ahead by default: one waiting while the next is built.
pub const PREFETCH_BATCHES: usize = 2;

/// A batch as planned: indices into the caller's rows, plus the padded length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub members: Vec<usize>,
    pub padded_len: usize,
}

/// Plans batches for rows of `lengths`. A row longer than the budget gets a batch of its own.
/// Every index appears exactly once.
pub fn plan(lengths: &[usize], max_batch_tokens: usize, max_batch_rows: usize) -> Vec<Plan> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // longest first; ties in input order so plans are deterministic
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut padded_len = 0;
    for index in order {
        let len = lengths[index].max(1);
        let rows = current.len() + 1;
        let fits = rows <= max_batch_rows.max(1) && rows * padded_len.max(len) <= max_batch_tokens;
        if !current.is_empty() && !fits {
            batches.push(Plan {
                members: std::mem::take(&mut current),
                padded_len,
            });
            padded_len = 0;
        }
        padded_len = padded_len.max(len);
        current.push(index);
    }
    if !current.is_empty() {
        batches.push(Plan {
            members: current,
            padded_len,
        });
    }
    batches
}

/// Sequences sharing a prefix in one row: the first whole, then each other's tail (its tokens
/// after the shared prefix), in order. A preference pair is a group of two; a RewardBench 2
/// prompt's completions are a group of N.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fork {
    /// how many leading tokens every sequence of the row shares (at most the shortest length)
    pub shared: usize,
    /// each sequence's full length, in row order
    pub lengths: Vec<usize>,
}

impl Fork {
    /// Where each sequence's own tokens start in the row: 0 for the first, then each tail right
    /// after the previous one.
    fn starts(&self) -> Vec<usize> {
        let mut starts = Vec::with_capacity(self.lengths.len());
        let mut next = 0;
        for (k, &len) in self.lengths.iter().enumerate() {
            starts.push(next);
            next += if k == 0 { len } else { len - self.shared };
        }
        starts
    }

    /// Tokens in the row: the first sequence plus every other's tail.
    pub fn tokens(&self) -> usize {
        let tails: usize = self.lengths.iter().skip(1).map(|l| l - self.shared).sum();
        self.lengths.first().copied().unwrap_or(0) + tails
    }

    /// Which sequence each of `padded_len` slots belongs to; padding counts as the last one's.
    fn segments(&self, padded_len: usize) -> Vec<i64> {
        let starts = self.starts();
        let mut segments = Vec::with_capacity(padded_len);
        let mut k = 0;
        for i in 0..padded_len {
            while k + 1 < starts.len() && i >= starts[k + 1] {
                k += 1;
            }
            segments.push(k as i64);
        }
        segments
    }

    /// Position ids for `padded_len` slots: each tail continues from the shared prefix.
    pub fn positions(&self, padded_len: usize) -> impl Iterator<Item = i64> {
        let starts = self.starts();
        let shared = self.shared;
        self.segments(padded_len)
            .into_iter()
            .enumerate()
            .map(move |(i, k)| {
                if k == 0 {
                    i as i64
                } else {
                    (i - starts[k as usize] + shared) as i64
                }
            })
    }

    /// Where position `position` of sequence `k` sits in the row.
    pub fn slot(&self, k: usize, position: usize) -> usize {
        if k == 0 || position < self.shared {
            position
        } else {
            self.starts()[k] + position - self.shared
        }
    }
}

/// A row of a batch: one sequence, or several sharing a prefix. A row type either always forks
/// or never does.
pub trait Row {
    /// tokens in the row
    fn tokens(&self) -> usize;
    /// the row's token ids, unpadded
    fn ids(&self) -> impl Iterator<Item = u32> + '_;
    /// sequences the row holds (progress counts sequences)
    fn sequences(&self) -> usize {
        1
    }
    /// the sequences of a forked row
    fn fork(&self) -> Option<Fork> {
        None
    }
}

impl Row for Vec<u32> {
    fn tokens(&self) -> usize {
        self.len()
    }

    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.iter().copied()
    }
}

/// How the tokens of a batch attend to each other.
pub enum Layout {
    /// one sequence per row, causal, positions 0..len
    Causal,
    /// explicit positions [batch, len] and a boolean mask [batch, 1, len, len] (true = attend)
    Masked { positions: Tensor, mask: Tensor },
}

/// A padded batch on the device: what the heads consume. Rows are right-padded: with causal
/// attention a real token never sees a later pad, so no padding mask is needed.
pub struct Batch {
    /// indices into the caller's rows, in the batch's row order
    pub members: Vec<usize>,
    pub padded_len: usize,
    /// tokens of each row before padding (an encoder masks the rest)
    pub lengths: Vec<usize>,
    /// token ids [rows, padded_len]
    pub ids: Tensor,
    pub layout: Layout,
}

impl Batch {
    /// The rows `plan` names, right-padded with `pad_id`, on `device`.
    pub fn pad<R: Row>(rows: &[R], plan: Plan, pad_id: u32, device: Device) -> Self {
        HostBatch::assemble(rows, plan, pad_id, device).upload(device)
    }

    pub fn rows(&self) -> i64 {
        self.members.len() as i64
    }
}

/// A batch assembled on the host, ready to go to its device: the padded ids and, for forked
/// rows, what the positions and mask are built from. On CUDA its tensors sit in pinned memory,
/// so [`HostBatch::upload`] copies them without blocking the host. Tensors are `Send`: a
/// producer thread assembles batches while the device runs earlier ones.
pub struct HostBatch {
    members: Vec<usize>,
    padded_len: usize,
    lengths: Vec<usize>,
    /// token ids [rows, padded_len]
    ids: Tensor,
    forks: Option<ForkInputs>,
}

/// Host inputs of the forked layout: positions [rows, len], segments [rows, len], shared [rows].
struct ForkInputs {
    positions: Tensor,
    segments: Tensor,
    shared: Tensor,
}

impl HostBatch {
    /// The rows `plan` names, right-padded with `pad_id`, staged for `device`.
    pub fn assemble<R: Row>(rows: &[R], plan: Plan, pad_id: u32, device: Device) -> Self {
        let (count, len) = (plan.members.len(), plan.padded_len);
        let mut ids = Vec::with_capacity(count * len);
        for &member in &plan.members {
            let row = &rows[member];
            ids.extend(row.ids().map(i64::from));
            ids.extend(std::iter::repeat_n(i64::from(pad_id), len - row.tokens()));
        }
        let ids = stage(
            &Tensor::from_slice(&ids).view([count as i64, len as i64]),
            device,
        );
        let forks: Option<Vec<Fork>> = plan.members.iter().map(|&m| rows[m].fork()).collect();
        // A batch whose forked rows each hold one sequence is plain causal attention (positions
        // 0..len, nothing to hide): it takes the unmasked path, whose fused SDPA kernels need no
        // [rows, len, len] mask and stay linear in memory. Rows longer than the classifier's
        // MAX_SHARED_ROW_TOKENS always hold one sequence, so long inputs never build the mask
        // when they are alone in their batch.
        let forks = forks
            .filter(|forks| forks.iter().any(|f| f.lengths.len() > 1))
            .map(|forks| ForkInputs::of(&forks, len, device));
        let lengths = plan.members.iter().map(|&m| rows[m].tokens()).collect();
        HostBatch {
            members: plan.members,
            padded_len: len,
            lengths,
            ids,
            forks,
        }
    }

    /// The batch on `device`: the copies are queued in stream order without a host
    /// synchronisation, and the mask is built there.
    pub fn upload(self, device: Device) -> Batch {
        let layout = match self.forks {
            Some(forks) => Layout::Masked {
                positions: to_device_async(&forks.positions, device),
                mask: fork_mask(
                    &to_device_async(&forks.segments, device),
                    &to_device_async(&forks.shared, device),
                ),
            },
            None => Layout::Causal,
        };
        Batch {
            members: self.members,
            padded_len: self.padded_len,
            lengths: self.lengths,
            ids: to_device_async(&self.ids, device),
            layout,
        }
    }
}

impl ForkInputs {
    fn of(forks: &[Fork], padded_len: usize, device: Device) -> Self {
        let (rows, len) = (forks.len() as i64, padded_len as i64);
        let positions: Vec<i64> = forks.iter().flat_map(|f| f.positions(padded_len)).collect();
        let segments: Vec<i64> = forks.iter().flat_map(|f| f.segments(padded_len)).collect();
        let shared: Vec<i64> = forks.iter().map(|f| f.shared as i64).collect();
        Self {
            positions: stage(&Tensor::from_slice(&positions).view([rows, len]), device),
            segments: stage(&Tensor::from_slice(&segments).view([rows, len]), device),
            shared: stage(&Tensor::from_slice(&shared), device),
        }
    }
}

/// `host` where a copy to `device` can start without blocking the host: pinned (page-locked)
/// memory for CUDA, as it is for the CPU.
fn stage(host: &Tensor, device: Device) -> Tensor {
    if device.is_cuda() {
        host.pin_memory(device)
    } else {
        host.shallow_clone()
    }
}

/// A staged host tensor on `device`, copied with `non_blocking`: from pinned memory the copy is
/// queued on the current stream and the host goes on (kernels queued after it see the data).
/// PyTorch's caching host allocator records the copy on the stream, so the pinned block is not
/// handed out again before the copy has read it, and dropping the host tensor is safe.
fn to_device_async(host: &Tensor, device: Device) -> Tensor {
    host.to_device_(device, host.kind(), device.is_cuda(), false)
}

/// A host tensor on `device` without a host synchronisation (pinned, then an asynchronous copy
/// on CUDA): for the small per-batch tensors the heads and models build (pooled slots, targets,
/// lengths).
pub fn upload(host: &Tensor, device: Device) -> Tensor {
    to_device_async(&stage(host, device), device)
}

/// The attention mask of forked rows from their segments [rows, len] (which sequence each slot
/// belongs to) and shared prefix lengths [rows]: causal, and a token past the shared prefix sees
/// only the prefix and its own sequence's earlier tokens (one sequence's tail never sees
/// another's).
fn fork_mask(segments: &Tensor, shared: &Tensor) -> Tensor {
    let size = segments.size();
    let (rows, padded_len) = (size[0], size[1]);
    let device = segments.device();
    let shared = shared.view([rows, 1, 1]);
    let i = Tensor::arange(padded_len, (Kind::Int64, device)).view([1, padded_len, 1]);
    let j = Tensor::arange(padded_len, (Kind::Int64, device)).view([1, 1, padded_len]);
    let causal = j.le_tensor(&i);
    let same_sequence = segments.unsqueeze(2).eq_tensor(&segments.unsqueeze(1));
    let visible = j.lt_tensor(&shared).logical_or(&same_sequence);
    causal.logical_and(&visible).unsqueeze(1)
}

/// A row libtorch ran out of memory on even in a batch of its own: the model and one row do not
/// fit the device together (retrying on the same device cannot help).
#[derive(Debug, thiserror::Error)]
#[error(
    "a row of {tokens} tokens does not fit on {device:?} even in a batch of its own \
     (lower --max-length, or use a device with more memory): {reason}"
)]
pub struct RowDoesNotFit {
    pub tokens: usize,
    pub device: Device,
    /// libtorch's message
    pub reason: String,
}

/// Whether libtorch's message `reason` says an allocation failed: CUDA's caching allocator
/// ("CUDA out of memory"), the CPU allocator ("DefaultCPUAllocator: not enough memory" /
/// "can't allocate memory"), or cuBLAS/cuDNN workspaces ("..._STATUS_ALLOC_FAILED").
pub fn is_out_of_memory(reason: &str) -> bool {
    [
        "out of memory",
        "not enough memory",
        "can't allocate memory",
        "ALLOC_FAILED",
    ]
    .iter()
    .any(|pattern| reason.contains(pattern))
}

/// The text of a caught panic (tch's panicking calls unwrap a `TchError`, so it holds libtorch's
/// message), cut before libtorch's C++ stack ("Exception raised from ...").
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let text = if let Some(text) = payload.downcast_ref::<String>() {
        text.as_str()
    } else if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else {
        "a panic without a message"
    };
    let text = text.split("Exception raised from").next().unwrap_or(text);
    // the unwrap's Debug form escapes the newline before the stack
    let text = text.trim_end();
    text.strip_suffix("\\n").unwrap_or(text).to_string()
}

/// Runs `rows` through a model: plans batches under the limits, pads each on the device, runs
/// `forward` on it and hands its outputs to `scatter`; `on_batch` is told how many sequences each
/// finished batch held. Gradients are off throughout.
///
/// With `settings.prefetch` > 0 a producer thread assembles the next batches on the host (padding,
/// fork positions, pinned buffers on CUDA) into a channel of that many while the device runs the
/// current one; uploads are asynchronous, so the only host synchronisation per batch is the
/// caller's read of its outputs. The batches and their order are the plan's either way, so the
/// scores do not depend on it.
///
/// A batch on which libtorch fails (tch's panicking calls, or a `TchError` returned by
/// `forward`) never panics the caller. When the failure is an out-of-memory error
/// ([`is_out_of_memory`]), the token budget is halved below that batch's size and the batch
/// and every later one are planned again under it (batches assembled ahead are dropped), so
/// scores are those of smaller batches (batch-invariant within float noise); a single row that
/// still fails is [`RowDoesNotFit`]. Any other libtorch failure is an error naming the batch.
/// Tensors of the failed batch are dropped while unwinding, so the device memory is free for
/// the retry.
pub fn run<R: Row + Sync, O>(
    rows: &[R],
    settings: BatchSettings,
    mut forward: impl FnMut(&Batch) -> anyhow::Result<O>,
    mut scatter: impl FnMut(&Batch, O),
    mut on_batch: impl FnMut(usize),
) -> anyhow::Result<()> {
    let _no_grad = tch::no_grad_guard();
    let BatchSettings {
        limits,
        pad_id,
        device,
        prefetch,
    } = settings;
    let lengths: Vec<usize> = rows.iter().map(Row::tokens).collect();
    let mut plans = plan(&lengths, limits.max_batch_tokens, limits.max_batch_rows);
    std::thread::scope(|scope| loop {
        // one pass over `plans`: to the end, or to the first batch that fails
        let mut batches = Assembler::start(scope, rows, &plans, pad_id, device, prefetch);
        let mut done = 0;
        let failure = loop {
            let Some(host) = batches.next() else {
                break None;
            };
            let attempt = host.and_then(|host| {
                // the closures only read `rows` and the batch: nothing they hold is left
                // half-updated by a panic, and `scatter` runs only for a batch that succeeded
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let batch = host.upload(device);
                    forward(&batch).map(|outputs| (batch, outputs))
                }))
                .map_err(|payload| panic_text(&*payload))
            });
            match attempt {
                Ok(Ok((batch, outputs))) => {
                    scatter(&batch, outputs);
                    on_batch(batch.members.iter().map(|&m| rows[m].sequences()).sum());
                    done += 1;
                }
                Ok(Err(error)) => match error.downcast_ref::<tch::TchError>() {
                    Some(tch_error) => break Some(tch_error.to_string()),
                    None => return Err(error),
                },
                Err(reason) => break Some(reason),
            }
        };
        // stops the producer: batches it assembled ahead are planned again below
        drop(batches);
        let Some(reason) = failure else {
            return Ok(());
        };
        let failed = &plans[done];
        let members = &failed.members;
        let size = members.len() * failed.padded_len;
        if !is_out_of_memory(&reason) {
            anyhow::bail!(
                "the forward pass failed on a batch of {} rows x {} tokens on {device:?}: {reason}",
                members.len(),
                failed.padded_len
            );
        }
        if members.len() == 1 {
            return Err(RowDoesNotFit {
                tokens: lengths[members[0]],
                device,
                reason,
            }
            .into());
        }
        let budget = (size / 2).max(1);
        tracing::warn!(
            rows = members.len(),
            tokens = size,
            budget,
            "out of memory on a batch: planning it and the rest again under half its size \
             (the panic message above, if any, was caught): {reason}"
        );
        let rest: Vec<usize> = plans.drain(done..).flat_map(|p| p.members).collect();
        let rest_lengths: Vec<usize> = rest.iter().map(|&i| lengths[i]).collect();
        plans = plan(&rest_lengths, budget, limits.max_batch_rows)
            .into_iter()
            .map(|p| Plan {
                members: p.members.iter().map(|&k| rest[k]).collect(),
                padded_len: p.padded_len,
            })
            .collect();
    })
}

/// Where [`run`] gets its batches, in plan order: assembled on the calling thread when asked
/// for, or ahead by a producer thread through a bounded channel. Each is the assembled batch or
/// the text of the panic that assembling it raised.
enum Assembler<'a, R> {
    Inline {
        rows: &'a [R],
        plans: std::vec::IntoIter<Plan>,
        pad_id: u32,
        device: Device,
    },
    Ahead(std::sync::mpsc::Receiver<Result<HostBatch, String>>),
}

impl<'a, R: Row + Sync> Assembler<'a, R> {
    fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        rows: &'a [R],
        plans: &[Plan],
        pad_id: u32,
        device: Device,
        prefetch: usize,
    ) -> Self
    where
        'a: 'scope,
    {
        let plans = plans.to_vec();
        if prefetch == 0 {
            return Self::Inline {
                rows,
                plans: plans.into_iter(),
                pad_id,
                device,
            };
        }
        let (sender, receiver) = std::sync::mpsc::sync_channel(prefetch);
        scope.spawn(move || {
            for plan in plans {
                let host = assemble(rows, plan, pad_id, device);
                let failed = host.is_err();
                // a closed channel: the consumer stopped (done, or planning again)
                if sender.send(host).is_err() || failed {
                    break;
                }
            }
        });
        Self::Ahead(receiver)
    }

    fn next(&mut self) -> Option<Result<HostBatch, String>> {
        match self {
            Self::Inline {
                rows,
                plans,
                pad_id,
                device,
            } => plans
                .next()
                .map(|plan| assemble(rows, plan, *pad_id, *device)),
            // closed once the producer has sent every batch
            Self::Ahead(receiver) => receiver.recv().ok(),
        }
    }
}

/// [`HostBatch::assemble`], with a libtorch failure (e.g. no pinned memory left) as its text.
fn assemble<R: Row>(
    rows: &[R],
    plan: Plan,
    pad_id: u32,
    device: Device,
) -> Result<HostBatch, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        HostBatch::assemble(rows, plan, pad_id, device)
    }))
    .map_err(|payload| panic_text(&*payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_of(forks: &[Fork], padded_len: usize) -> Tensor {
        let inputs = ForkInputs::of(forks, padded_len, Device::Cpu);
        fork_mask(&inputs.segments, &inputs.shared)
    }

    #[test]
    fn every_sequence_once_and_budget_respected() {
        let lengths = [5, 17, 3, 17, 1, 9, 40, 2];
        let batches = plan(&lengths, 40, 64);
        let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.members.clone()).collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for batch in &batches {
            let longest = batch.members.iter().map(|&i| lengths[i]).max().unwrap();
            assert_eq!(batch.padded_len, longest);
            assert!(batch.members.len() * longest <= 40 || batch.members.len() == 1);
        }
        // the 40-token sequence fills a batch alone; 17+17 share one
        assert_eq!(batches[0].members, vec![6]);
        assert_eq!(batches[1].members, vec![1, 3]);
    }

    #[test]
    fn oversized_sequence_gets_its_own_batch() {
        let batches = plan(&[100, 3, 3], 10, 64);
        assert_eq!(batches[0].members, vec![0]);
        assert_eq!(batches[1].members, vec![1, 2]);
    }

    #[test]
    fn row_limit_applies() {
        let batches = plan(&[1; 10], 1000, 4);
        assert_eq!(
            batches.iter().map(|b| b.members.len()).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
    }

    #[test]
    fn a_fork_continues_the_shared_prefix() {
        // a pair: [0 1 2 3] and [0 1 4]: row 0 1 2 3 | 4 (+ one pad)
        let fork = Fork {
            shared: 2,
            lengths: vec![4, 3],
        };
        assert_eq!(fork.tokens(), 5);
        assert_eq!(
            fork.positions(6).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 2, 3]
        );
        assert_eq!(fork.slot(1, 1), 1);
        assert_eq!(fork.slot(1, 2), 4);
        assert_eq!(fork.slot(0, 3), 3);
    }

    #[test]
    fn the_second_tail_does_not_see_the_first_tail() {
        let fork = Fork {
            shared: 2,
            lengths: vec![4, 3],
        };
        let mask = mask_of(&[fork], 5);
        let mask: Vec<Vec<bool>> = Vec::try_from(&mask.view([5, 5])).unwrap();
        assert_eq!(mask[3], vec![true, true, true, true, false]); // first: causal
        assert_eq!(mask[4], vec![true, true, false, false, true]); // second's tail: prefix + itself
    }

    #[test]
    fn a_group_of_four_keeps_every_tail_apart() {
        // prefix of 2, then tails of 2, 1, 0 and 3 tokens (the third is the prefix alone)
        let fork = Fork {
            shared: 2,
            lengths: vec![4, 3, 2, 5],
        };
        assert_eq!(fork.tokens(), 4 + 1 + 3);
        assert_eq!(fork.segments(9), vec![0, 0, 0, 0, 1, 3, 3, 3, 3]);
        assert_eq!(
            fork.positions(9).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 2, 2, 3, 4, 5]
        );
        assert_eq!(fork.slot(2, 1), 1); // all prefix: pooled in the shared part
        assert_eq!(fork.slot(3, 4), 7);
        let mask = mask_of(&[fork], 9);
        let mask: Vec<Vec<bool>> = Vec::try_from(&mask.view([9, 9])).unwrap();
        let t = true;
        let f = false;
        assert_eq!(mask[4], vec![t, t, f, f, t, f, f, f, f]);
        assert_eq!(mask[6], vec![t, t, f, f, f, t, t, f, f]);
        assert_eq!(mask[8], vec![t, t, f, f, f, t, t, t, t]); // the pad joins the last tail
    }

    #[test]
    fn padding_is_on_the_right_and_plain_rows_are_causal() {
        let rows = vec![vec![5, 6, 7], vec![8]];
        let batch = Batch::pad(&rows, plan(&[3, 1], 100, 8).remove(0), 0, Device::Cpu);
        assert_eq!(batch.members, vec![0, 1]);
        let ids: Vec<Vec<i64>> = Vec::try_from(&batch.ids).unwrap();
        assert_eq!(ids, vec![vec![5, 6, 7], vec![8, 0, 0]]);
        assert_eq!(batch.lengths, vec![3, 1]);
        assert!(matches!(batch.layout, Layout::Causal));
    }

    #[test]
    fn every_row_is_forwarded_once_and_scattered_back_in_order() {
        let rows: Vec<Vec<u32>> = (1..=7).map(|n| vec![n; n as usize]).collect();
        let settings = BatchSettings {
            limits: BatchLimits {
                max_batch_tokens: 8,
                max_batch_rows: 4,
            },
            pad_id: 0,
            device: Device::Cpu,
            prefetch: PREFETCH_BATCHES,
        };
        let mut firsts = vec![0; rows.len()];
        let mut sequences = 0;
        run(
            &rows,
            settings,
            |batch| Ok(Vec::<Vec<i64>>::try_from(&batch.ids)?),
            |batch, ids| {
                for (&member, row) in batch.members.iter().zip(ids) {
                    firsts[member] = row[0];
                }
            },
            |n| sequences += n,
        )
        .unwrap();
        assert_eq!(firsts, vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(sequences, 7);
    }

    /// A forward that makes libtorch really run out of memory (an allocation of 2^50 bytes per
    /// token fails in the CPU allocator at once, touching nothing) on batches of more than
    /// `max_tokens` tokens, and returns each row's first id otherwise. `calls` counts batches.
    fn forward_failing_above(
        max_tokens: usize,
        calls: &std::cell::Cell<usize>,
    ) -> impl FnMut(&Batch) -> anyhow::Result<Vec<i64>> + '_ {
        move |batch: &Batch| {
            calls.set(calls.get() + 1);
            let tokens = batch.members.len() * batch.padded_len;
            if tokens > max_tokens {
                // the panicking call, as the model code uses them
                let _ = Tensor::empty([tokens as i64, 1 << 48], (Kind::Float, Device::Cpu));
            }
            Ok(Vec::<i64>::try_from(&batch.ids.select(1, 0))?)
        }
    }

    fn settings(max_batch_tokens: usize) -> BatchSettings {
        BatchSettings {
            limits: BatchLimits {
                max_batch_tokens,
                max_batch_rows: 64,
            },
            pad_id: 0,
            device: Device::Cpu,
            prefetch: PREFETCH_BATCHES,
        }
    }

    /// A batch's members and padded ids.
    type Seen = (Vec<usize>, Vec<Vec<i64>>);

    /// Each batch as `forward` saw it, in order, and how many times `forward` ran.
    fn observed(
        rows: &[Vec<u32>],
        settings: BatchSettings,
        fail_above: usize,
    ) -> (Vec<Seen>, usize) {
        let calls = std::cell::Cell::new(0);
        let mut fail = forward_failing_above(fail_above, &calls);
        let mut seen = Vec::new();
        run(
            rows,
            settings,
            |batch| {
                fail(batch)?;
                Ok((
                    batch.members.clone(),
                    Vec::<Vec<i64>>::try_from(&batch.ids)?,
                ))
            },
            |_, out| seen.push(out),
            |_| {},
        )
        .unwrap();
        (seen, calls.get())
    }

    #[test]
    fn assembling_ahead_gives_the_same_batches_in_the_same_order() {
        // rows of assorted lengths, several batches, with and without an out-of-memory replan
        let rows: Vec<Vec<u32>> = (0..23u32)
            .map(|k| (0..(k * 7) % 11 + 1).map(|t| 100 * k + t).collect())
            .collect();
        for fail_above in [usize::MAX, 12] {
            let inline = observed(
                &rows,
                BatchSettings {
                    prefetch: 0,
                    ..settings(24)
                },
                fail_above,
            );
            for prefetch in [1, PREFETCH_BATCHES, 8] {
                let ahead = observed(
                    &rows,
                    BatchSettings {
                        prefetch,
                        ..settings(24)
                    },
                    fail_above,
                );
                assert_eq!(
                    ahead, inline,
                    "prefetch {prefetch}, failing above {fail_above}"
                );
            }
            let scored: usize = inline.0.iter().map(|(members, _)| members.len()).sum();
            assert_eq!(scored, rows.len());
        }
    }

    #[test]
    fn forked_batches_assembled_ahead_carry_their_mask_and_positions() {
        // a Row that forks: the pair [1 2 3] / [1 2 4] in one row
        struct Pair;
        impl Row for Pair {
            fn tokens(&self) -> usize {
                4
            }
            fn ids(&self) -> impl Iterator<Item = u32> + '_ {
                [1, 2, 3, 4].into_iter()
            }
            fn sequences(&self) -> usize {
                2
            }
            fn fork(&self) -> Option<Fork> {
                Some(Fork {
                    shared: 2,
                    lengths: vec![3, 3],
                })
            }
        }
        let mut layouts = Vec::new();
        run(
            &[Pair, Pair],
            BatchSettings {
                prefetch: 2,
                ..settings(64)
            },
            |batch| match &batch.layout {
                Layout::Masked { positions, mask } => Ok((
                    Vec::<Vec<i64>>::try_from(positions)?,
                    Vec::<Vec<bool>>::try_from(&mask.get(0).get(0))?,
                )),
                Layout::Causal => anyhow::bail!("a forked batch took the causal layout"),
            },
            |_, layout| layouts.push(layout),
            |_| {},
        )
        .unwrap();
        let (positions, mask) = &layouts[0];
        assert_eq!(positions, &vec![vec![0, 1, 2, 2]; 2]);
        assert_eq!(mask[3], vec![true, true, false, true]);
    }

    #[test]
    fn out_of_memory_halves_the_budget_and_scores_every_row() {
        // row k holds ids k+1 repeated; 8 rows of 4 tokens in one planned batch of 32 tokens
        let rows: Vec<Vec<u32>> = (1..=8).map(|k| vec![k; 4]).collect();
        let calls = std::cell::Cell::new(0);
        let mut firsts = vec![0; rows.len()];
        let mut batches = Vec::new();
        run(
            &rows,
            settings(64),
            forward_failing_above(8, &calls),
            |batch, ids| {
                for (&member, id) in batch.members.iter().zip(ids) {
                    firsts[member] = id;
                }
            },
            |n| batches.push(n),
        )
        .unwrap();
        assert_eq!(firsts, (1..=8).collect::<Vec<i64>>());
        // 32 tokens fail, then 16, then batches of 8 tokens (2 rows) go through
        assert_eq!(batches, vec![2, 2, 2, 2]);
        assert_eq!(calls.get(), 2 + 4);
    }

    #[test]
    fn a_row_that_fails_alone_is_reported_with_its_size() {
        let rows: Vec<Vec<u32>> = vec![vec![1; 3], vec![2; 12], vec![3; 2]];
        let calls = std::cell::Cell::new(0);
        let mut scored = 0;
        let error = run(
            &rows,
            settings(64),
            forward_failing_above(10, &calls),
            |_, _| {},
            |n| scored += n,
        )
        .unwrap_err();
        let unfit = error
            .downcast_ref::<RowDoesNotFit>()
            .unwrap_or_else(|| panic!("not RowDoesNotFit: {error:#}"));
        assert_eq!(unfit.tokens, 12);
        assert!(is_out_of_memory(&unfit.reason), "{}", unfit.reason);
        assert!(error.to_string().contains("12 tokens"), "{error}");
        // the longest row comes first: nothing was scored
        assert_eq!(scored, 0);
    }

    #[test]
    fn other_libtorch_failures_are_errors_not_retried() {
        let rows: Vec<Vec<u32>> = vec![vec![1; 3], vec![2; 3]];
        let calls = std::cell::Cell::new(0);
        let error = run(
            &rows,
            settings(64),
            |batch: &Batch| -> anyhow::Result<()> {
                calls.set(calls.get() + 1);
                // a shape error: libtorch refuses the view (a panic in tch)
                let _ = batch.ids.view([5]);
                Ok(())
            },
            |_, _| {},
            |_| {},
        )
        .unwrap_err()
        .to_string();
        assert_eq!(calls.get(), 1);
        assert!(error.contains("2 rows x 3 tokens"), "{error}");
        assert!(error.contains("shape"), "{error}");
        // a non-libtorch error of the forward passes through untouched
        let error = run(
            &rows,
            settings(64),
            |_: &Batch| -> anyhow::Result<()> { anyhow::bail!("bad input row") },
            |_, _| {},
            |_| {},
        )
        .unwrap_err();
        assert_eq!(error.to_string(), "bad input row");
    }

    #[test]
    fn out_of_memory_messages_are_recognised() {
        for text in [
            "CUDA out of memory. Tried to allocate 2.00 GiB",
            "DefaultCPUAllocator: not enough memory: you tried to allocate 1 bytes.",
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes",
            "CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)",
        ] {
            assert!(is_out_of_memory(text), "{text}");
        }
        assert!(!is_out_of_memory(
            "shape '[5]' is invalid for input of size 6"
        ));
    }
}
