//! GPU memory of the worker's CUDA device as nvidia-smi reports it: the total goes into the
//! registration, the amount in use into heartbeats (the coordinator's per-worker gauge) and the
//! worker's own /metrics. nvidia-smi rather than NVML bindings: it ships with every driver and
//! needs no library at build or load time, and one query every few seconds costs nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::heartbeat::Shared;

/// How often the sampler asks nvidia-smi (heartbeats read the last answer).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuMemory {
    pub used_bytes: u64,
    pub total_bytes: u64,
}

/// The memory of CUDA device `cuda` (None off CUDA, or when nvidia-smi is missing or answers
/// nonsense).
pub fn query(cuda: Option<usize>) -> Option<GpuMemory> {
    let index = cuda?;
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    query_with(
        Path::new("nvidia-smi"),
        &nvidia_smi_id(index, visible.as_deref()),
    )
}

/// nvidia-smi's `--id` for CUDA ordinal `ordinal`: nvidia-smi ignores CUDA_VISIBLE_DEVICES, so
/// under it the ordinal names that list's entry (an index or a GPU UUID, both valid `--id`s).
pub fn nvidia_smi_id(ordinal: usize, cuda_visible_devices: Option<&str>) -> String {
    cuda_visible_devices
        .and_then(|list| list.split(',').map(str::trim).nth(ordinal))
        .filter(|id| !id.is_empty())
        .map_or_else(|| ordinal.to_string(), str::to_string)
}

/// [`query`] through a given nvidia-smi (tests pass a stand-in script).
pub fn query_with(nvidia_smi: &Path, id: &str) -> Option<GpuMemory> {
    let output = std::process::Command::new(nvidia_smi)
        .args([
            "--query-gpu=memory.used,memory.total",
            "--format=csv,noheader,nounits",
            &format!("--id={id}"),
        ])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    parse(&String::from_utf8_lossy(&output.stdout))
}

/// One `used, total` line in MiB (nvidia-smi's csv,noheader,nounits answer).
pub fn parse(text: &str) -> Option<GpuMemory> {
    let (used, total) = text.lines().next()?.split_once(',')?;
    let mib = |field: &str| field.trim().parse::<u64>().ok().map(|m| m << 20);
    let (used_bytes, total_bytes) = (mib(used)?, mib(total)?);
    (used_bytes <= total_bytes).then_some(GpuMemory {
        used_bytes,
        total_bytes,
    })
}

/// Keeps the GPU memory in use current for heartbeats: asks every [`SAMPLE_EVERY`] on the
/// blocking pool until the returned task is aborted. Nothing runs off CUDA.
pub fn spawn_sampler(cuda: Option<usize>, shared: Arc<Shared>) -> Option<JoinHandle<()>> {
    cuda?;
    Some(tokio::spawn(async move {
        loop {
            if let Ok(Some(memory)) = tokio::task::spawn_blocking(move || query(cuda)).await {
                shared.set_gpu_memory_used(memory.used_bytes);
            }
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_used_and_total_in_mib() {
        assert_eq!(
            parse("1234, 81559\n"),
            Some(GpuMemory {
                used_bytes: 1234 << 20,
                total_bytes: 81559 << 20
            })
        );
        // only the first line counts (one --id was asked)
        assert_eq!(parse("0, 16\n7, 8\n").unwrap().total_bytes, 16 << 20);
    }

    #[test]
    fn nonsense_is_none() {
        for text in [
            "",
            "[N/A], 81559",
            "12",
            "-1, 10",
            "90, 10",
            "No devices were found",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn cuda_ordinals_map_through_cuda_visible_devices() {
        assert_eq!(nvidia_smi_id(0, None), "0");
        assert_eq!(nvidia_smi_id(1, None), "1");
        assert_eq!(nvidia_smi_id(0, Some("3,5")), "3");
        assert_eq!(nvidia_smi_id(1, Some("3, 5")), "5");
        assert_eq!(nvidia_smi_id(0, Some("GPU-8f1c2d")), "GPU-8f1c2d");
        // empty or shorter than the ordinal: the ordinal itself
        assert_eq!(nvidia_smi_id(0, Some("")), "0");
        assert_eq!(nvidia_smi_id(2, Some("3,5")), "2");
    }

    #[test]
    fn cpu_is_never_queried() {
        assert_eq!(query(None), None);
    }

    #[cfg(unix)]
    #[test]
    fn asks_nvidia_smi_for_the_device_and_reads_its_answer() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("nvidia-smi");
        // answers only the exact query for device 3
        std::fs::write(
            &script,
            "#!/bin/sh\n[ \"$*\" = \"--query-gpu=memory.used,memory.total --format=csv,noheader,nounits --id=3\" ] || exit 9\necho '512, 40960'\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            query_with(&script, "3"),
            Some(GpuMemory {
                used_bytes: 512 << 20,
                total_bytes: 40960 << 20
            })
        );
        // a failing nvidia-smi (wrong device) is None, not a parse of its output
        assert_eq!(query_with(&script, "0"), None);
        assert_eq!(query_with(&dir.path().join("missing"), "0"), None);
    }
}
