//! Scheduling policy: lease timeouts, retries with exponential backoff, straggler duplicates, and
//! the memory rule.
//!
//! The order in which tasks are handed out is implemented in SQL by [`crate::state::Store::lease`]:
//! 0. memory: a worker is offered only tasks whose checkpoint fits it, `param_bytes` at most
//!    [`max_param_bytes`] of its registered capabilities (its device's memory less
//!    [`Policy::memory_headroom_bytes`], in the precision it loads weights in). A checkpoint of
//!    unknown size fits every worker, and a worker that registered no memory is offered every
//!    checkpoint. Before rules 1-2, a worker is offered the *big* tasks that fit it: those whose
//!    checkpoint does not fit the smallest live worker (held checkpoints first, then oldest sweep,
//!    lowest task id). The few workers that can hold a big model take it before work any worker
//!    could do, so a big task is never overtaken forever by small ones. A checkpoint no live
//!    worker can hold stays pending and `coord status` says why ([`unschedulable_reason`]);
//! 1. pending tasks whose backoff has passed, of a checkpoint the worker holds (its cache, or the
//!    checkpoint of its last lease), oldest sweep first, then lowest task id;
//! 2. any other eligible pending task, oldest sweep first, then lowest task id;
//! 3. stragglers: when nothing is pending in a sweep but tasks are still leased, an idle worker
//!    gets a duplicate lease (a new epoch) of the task whose live lease is oldest, at most
//!    `max_leases_per_task` live leases per task; the first Complete wins;
//! 4. otherwise "ask again later", or "shut down" when every sweep is finished and the server
//!    was started with `exit_when_done`.

use std::time::Duration;

use herd_rpc::v1::Capabilities;

/// [`Policy::memory_headroom_bytes`] by default: activations at the default token budget (about
/// 3 GB for a 13B model at 16,384 tokens), the CUDA context and the allocator's slack.
pub const DEFAULT_MEMORY_HEADROOM_BYTES: u64 = 4 << 30;

/// The knobs of the scheduler (`coord serve` flags; the defaults are the flags' defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub lease_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub max_attempts: u32,
    /// wait before a failed task is eligible again; doubled per attempt
    pub retry_backoff_ms: u64,
    pub stragglers: bool,
    pub max_leases_per_task: u32,
    /// device memory kept free beside the parameters (see [`max_param_bytes`])
    pub memory_headroom_bytes: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            lease_timeout_ms: 30_000,
            heartbeat_interval_ms: 5_000,
            max_attempts: 3,
            retry_backoff_ms: 2_000,
            stragglers: true,
            max_leases_per_task: 2,
            memory_headroom_bytes: DEFAULT_MEMORY_HEADROOM_BYTES,
        }
    }
}

impl Policy {
    /// Backoff after the `attempts`-th failed attempt (1-based): `retry_backoff_ms * 2^(attempts-1)`.
    pub fn backoff_ms(&self, attempts: u32) -> u64 {
        let doublings = attempts.saturating_sub(1).min(30);
        self.retry_backoff_ms.saturating_mul(1u64 << doublings)
    }

    /// How often the reaper looks for expired leases.
    pub fn reap_interval(&self) -> Duration {
        Duration::from_millis((self.lease_timeout_ms / 4).clamp(20, 5_000))
    }

    /// What an idle worker is told to wait before asking again.
    pub fn retry_after_ms(&self) -> u32 {
        self.heartbeat_interval_ms.clamp(1, u32::MAX as u64) as u32
    }
}

/// The largest checkpoint, as its 16-bit `param_bytes`, a worker with `caps` holds: the memory
/// of its device group (`gpu_memory_bytes` times `scorer_devices` on cuda, each device keeping
/// `headroom`; `host_memory_bytes` less `headroom` on cpu) scaled from 2 bytes per parameter to
/// the worker's `bytes_per_parameter` (0: 2 on cuda, 4 on cpu, what `--dtype auto` picks).
/// `None`: the worker registered no memory (it is offered everything). A scorer splits a model by
/// layers over its group's GPUs only (`worker --devices-per-scorer`), so a worker registered with
/// one device per scorer holds what one GPU holds.
pub fn max_param_bytes(caps: &Capabilities, headroom: u64) -> Option<u64> {
    let cuda = caps.device == "cuda";
    let devices = if cuda {
        u64::from(caps.scorer_devices.max(1))
    } else {
        1
    };
    let memory = if cuda {
        caps.gpu_memory_bytes.saturating_mul(devices)
    } else {
        caps.host_memory_bytes
    };
    if memory == 0 {
        return None;
    }
    let per_parameter = match caps.bytes_per_parameter {
        0 if cuda => 2,
        0 => 4,
        n => n,
    };
    let room = u128::from(memory.saturating_sub(headroom.saturating_mul(devices)));
    Some(u64::try_from(room * 2 / u128::from(per_parameter)).unwrap_or(u64::MAX))
}

/// Whether a checkpoint of `param_bytes` (0: unknown) fits a worker whose
/// [`max_param_bytes`] is `max`.
pub fn fits(param_bytes: u64, max: Option<u64>) -> bool {
    param_bytes == 0 || max.is_none_or(|max| param_bytes <= max)
}

/// Why a checkpoint of `param_bytes` cannot be leased to any of the live workers whose
/// [`max_param_bytes`] are `live`, or `None` when one of them can hold it (or none is live: a
/// worker may yet come).
pub fn unschedulable_reason(param_bytes: u64, live: &[Option<u64>]) -> Option<String> {
    if live.is_empty() || live.iter().any(|max| fits(param_bytes, *max)) {
        return None;
    }
    let largest = live.iter().flatten().max().copied().unwrap_or(0);
    Some(format!(
        "its parameters need {} in 16-bit precision and the largest of the {} live worker(s) \
         holds {} (one device's memory less the headroom): it waits for a worker with more memory",
        gib(param_bytes),
        live.len(),
        gib(largest)
    ))
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(device: &str, gpu: u64, host: u64, per_parameter: u32) -> Capabilities {
        Capabilities {
            device: device.into(),
            gpu_memory_bytes: gpu,
            host_memory_bytes: host,
            bytes_per_parameter: per_parameter,
            ..Capabilities::default()
        }
    }

    #[test]
    fn room_is_one_device_less_headroom_in_the_worker_precision() {
        const GIB: u64 = 1 << 30;
        // an 80 GiB GPU in bf16 holds 76 GiB of 16-bit parameters
        assert_eq!(
            max_param_bytes(&caps("cuda", 80 * GIB, 512 * GIB, 2), 4 * GIB),
            Some(76 * GIB)
        );
        // the same GPU scoring in fp32 holds half as many parameters
        assert_eq!(
            max_param_bytes(&caps("cuda", 80 * GIB, 0, 4), 4 * GIB),
            Some(38 * GIB)
        );
        // a CPU worker: host memory, fp32 unless it said otherwise
        assert_eq!(
            max_param_bytes(&caps("cpu", 0, 64 * GIB, 0), 4 * GIB),
            Some(30 * GIB)
        );
        assert_eq!(
            max_param_bytes(&caps("cuda", 24 * GIB, 0, 0), 4 * GIB),
            Some(20 * GIB)
        );
        // memory not said: no limit; less memory than headroom: nothing but unknown sizes
        assert_eq!(max_param_bytes(&caps("cuda", 0, 64 * GIB, 2), GIB), None);
        assert_eq!(max_param_bytes(&caps("cuda", GIB, 0, 2), 4 * GIB), Some(0));
        assert!(fits(0, Some(0)));
        assert!(!fits(1, Some(0)));
        assert!(fits(u64::MAX, None));
    }

    #[test]
    fn a_scorer_over_several_gpus_holds_their_memory_each_less_headroom() {
        const GIB: u64 = 1 << 30;
        let group = |device: &str, n: u32| Capabilities {
            scorer_devices: n,
            ..caps(device, 80 * GIB, 64 * GIB, 2)
        };
        // two 80 GiB GPUs split a 70B model (140 GiB in bf16) between them
        assert_eq!(max_param_bytes(&group("cuda", 2), 4 * GIB), Some(152 * GIB));
        assert_eq!(max_param_bytes(&group("cuda", 8), 4 * GIB), Some(608 * GIB));
        // 0 (a worker from before the field) and 1: one GPU
        assert_eq!(max_param_bytes(&group("cuda", 0), 4 * GIB), Some(76 * GIB));
        assert_eq!(max_param_bytes(&group("cuda", 1), 4 * GIB), Some(76 * GIB));
        // CPU "devices" share the host's memory
        assert_eq!(max_param_bytes(&group("cpu", 2), 4 * GIB), Some(60 * GIB));
    }

    #[test]
    fn a_checkpoint_no_live_worker_holds_is_explained() {
        const GIB: u64 = 1 << 30;
        let live = [Some(20 * GIB), Some(76 * GIB)];
        assert_eq!(unschedulable_reason(26 * GIB, &live), None);
        let reason = unschedulable_reason(140 * GIB, &live).unwrap();
        assert!(reason.contains("140.0 GiB"), "{reason}");
        assert!(reason.contains("76.0 GiB"), "{reason}");
        assert!(reason.contains("2 live worker(s)"), "{reason}");
        // a worker that did not say its memory might hold it; no live worker: one may come
        assert_eq!(unschedulable_reason(140 * GIB, &[Some(GIB), None]), None);
        assert_eq!(unschedulable_reason(140 * GIB, &[]), None);
        // unknown size
        assert_eq!(unschedulable_reason(0, &live[..1]), None);
    }

    #[test]
    fn backoff_doubles_per_attempt() {
        let policy = Policy {
            retry_backoff_ms: 100,
            ..Policy::default()
        };
        assert_eq!(policy.backoff_ms(1), 100);
        assert_eq!(policy.backoff_ms(2), 200);
        assert_eq!(policy.backoff_ms(3), 400);
        assert_eq!(policy.backoff_ms(200), 100 << 30);
    }
}
