//! Where the embedded engine runs: `local.device` resolved once, at start-up,
//! before the model loads.
//!
//! `cuda` is honoured or refused, never downgraded: a build without the
//! `cuda` feature, or a machine whose GPU does not answer, stops `sluice
//! serve` with a message that says which of the two it is. Sensitive prompts
//! then go nowhere rather than to a slower CPU nobody planned for. Only
//! `auto` may settle on the CPU, and it logs what it chose and why.

use mistralrs::Device;

use crate::config::LocalDevice;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "local.device is cuda, but this sluice was built without the cuda feature; \
         use a CUDA build (scripts/build-cuda) or set local.device: cpu or auto"
    )]
    NotBuilt,
    #[error(
        "local.device is cuda, but no usable GPU was found ({0}); check the NVIDIA driver \
         and that GPU 0 is visible (nvidia-smi), or set local.device: cpu or auto"
    )]
    NoGpu(String),
}

impl DeviceError {
    /// Why `auto` chose the CPU, for the log.
    fn reason(&self) -> String {
        match self {
            DeviceError::NotBuilt => "this build has no CUDA (built without the cuda feature)".into(),
            DeviceError::NoGpu(e) => format!("no usable GPU: {e}"),
        }
    }
}

/// The device `setting` asks for, or why it cannot be had.
pub fn resolve(setting: LocalDevice) -> Result<Device, DeviceError> {
    match setting {
        LocalDevice::Cpu => {
            tracing::info!("local.device cpu: the embedded engine runs on the CPU");
            Ok(Device::Cpu)
        }
        LocalDevice::Cuda => {
            let (device, name) = gpu()?;
            tracing::info!(gpu = %name, "local.device cuda: the embedded engine runs on GPU 0");
            Ok(device)
        }
        LocalDevice::Auto => match gpu() {
            Ok((device, name)) => {
                tracing::info!(gpu = %name, "local.device auto: the embedded engine runs on GPU 0");
                Ok(device)
            }
            Err(e) => {
                tracing::info!(reason = %e.reason(), "local.device auto: the embedded engine runs on the CPU");
                Ok(Device::Cpu)
            }
        },
    }
}

/// GPU 0 and its name. Opening it creates the CUDA context, so a missing or
/// broken driver shows here rather than halfway through loading the model.
#[cfg(feature = "cuda")]
fn gpu() -> Result<(Device, String), DeviceError> {
    let device = Device::new_cuda(0).map_err(|e| DeviceError::NoGpu(first_line(&e.to_string())))?;
    let name = match &device {
        Device::Cuda(d) => d.cuda_stream().context().name().unwrap_or_else(|e| format!("GPU 0 ({e})")),
        _ => "GPU 0".into(),
    };
    Ok((device, name))
}

#[cfg(not(feature = "cuda"))]
fn gpu() -> Result<(Device, String), DeviceError> {
    Err(DeviceError::NotBuilt)
}

/// Driver errors can carry backtraces; the message keeps the first line.
#[cfg(feature = "cuda")]
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or("").trim().chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_the_cpu() {
        assert!(resolve(LocalDevice::Cpu).unwrap().is_cpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_the_feature_cuda_is_refused_and_auto_is_the_cpu() {
        let err = resolve(LocalDevice::Cuda).unwrap_err();
        assert_eq!(err, DeviceError::NotBuilt);
        assert!(err.to_string().contains("built without the cuda feature"), "{err}");
        assert!(resolve(LocalDevice::Auto).unwrap().is_cpu());
    }

    #[test]
    fn the_two_refusals_say_which_they_are() {
        let no_gpu = DeviceError::NoGpu("CUDA_ERROR_NO_DEVICE".into()).to_string();
        assert!(no_gpu.contains("no usable GPU was found (CUDA_ERROR_NO_DEVICE)"), "{no_gpu}");
        assert!(!no_gpu.contains("built without"), "{no_gpu}");
        let not_built = DeviceError::NotBuilt.to_string();
        assert!(!not_built.contains("no usable GPU"), "{not_built}");
        for message in [no_gpu, not_built] {
            assert!(message.contains("local.device: cpu or auto"), "{message}");
        }
    }
}
