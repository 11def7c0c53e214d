//! Device names (`cpu`, `cuda`, `cuda:N`) parsed once, so a typo is a config error, not a panic.

use candle_core::Device;

use crate::error::RunError;

/// A parsed device name (`cuda` is `cuda:0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceName {
    #[default]
    Cpu,
    Cuda(usize),
}

impl std::fmt::Display for DeviceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceName::Cpu => f.write_str("cpu"),
            DeviceName::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The machine, for results pages and run summaries: CPU model, logical cores available, OS
/// and architecture, and `device`.
pub fn hardware_description(device: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!(
        "{cpu}, {cores} logical cores available, {} ({}); device {device}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse_device_name(name: &str) -> Result<DeviceName, RunError> {
    let bad = || RunError::Invalid {
        key: "device".into(),
        message: format!("expected cpu, cuda or cuda:N, got {name:?}"),
    };
    match name {
        "cpu" => Ok(DeviceName::Cpu),
        "cuda" => Ok(DeviceName::Cuda(0)),
        _ => name
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .map(DeviceName::Cuda)
            .ok_or_else(bad),
    }
}

/// Opens the device (CUDA only when built with the `cuda` feature).
pub fn open_device(name: DeviceName) -> Result<Device, RunError> {
    match name {
        DeviceName::Cpu => Ok(Device::Cpu),
        DeviceName::Cuda(n) => Device::new_cuda(n).map_err(|e| RunError::Invalid {
            key: "device".into(),
            message: format!("cannot open {name}: {e} (is the binary built with --features cuda?)"),
        }),
    }
}
