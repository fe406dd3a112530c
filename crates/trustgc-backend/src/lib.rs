//! # trustgc-backend
//!
//! Which burn backend trustgc runs on, chosen by Cargo feature, and which device, chosen
//! at run time.
//!
//! | feature | backend | devices |
//! |---|---|---|
//! | `flex` (default) | [`burn::backend::Flex`], CPU | `cpu` |
//! | `wgpu` | `burn::backend::Wgpu` (Vulkan, Metal, DX12) | `wgpu`, `wgpu:N` (discrete GPU N) |
//! | `cuda` | `burn::backend::Cuda` | `cuda`, `cuda:N` |
//!
//! [`DeviceSpec::parse`] reads a device string; [`DeviceSpec::from_env`] reads
//! `BURN_DEVICE` (default `cpu`). [`run_on`] runs a backend-generic task on the chosen
//! device, so that applications stay generic over the backend:
//!
//! ```
//! use burn::tensor::{Tensor, backend::Backend};
//! use trustgc_backend::{BackendTask, DeviceSpec, run_on};
//!
//! struct SumOfOnes;
//! impl BackendTask for SumOfOnes {
//!     type Output = f32;
//!     fn run<B: Backend>(self, device: B::Device) -> f32 {
//!         Tensor::<B, 1>::ones([4], &device).sum().into_scalar().elem()
//!     }
//! }
//! # use burn::tensor::ElementConversion;
//!
//! let spec = DeviceSpec::parse("cpu").unwrap();
//! assert_eq!(run_on(&spec, SumOfOnes).unwrap(), 4.0);
//! ```

use std::fmt;

use burn::tensor::backend::Backend;
use thiserror::Error;

/// The CPU backend.
#[cfg(feature = "flex")]
pub type Cpu = burn::backend::Flex;

/// The CPU backend with autodiff.
#[cfg(all(feature = "flex", feature = "autodiff"))]
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;

/// The CPU backend with autodiff and gradient checkpointing (see
/// [`run_on_autodiff_checkpointed`]).
#[cfg(all(feature = "flex", feature = "autodiff"))]
pub type CpuAutodiffCheckpointed = burn::backend::Autodiff<
    Cpu,
    burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing,
>;

/// The wgpu backend.
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu;

/// The CUDA backend.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;

/// A device, as a user names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU (Flex backend).
    Cpu,
    /// A wgpu device: `None` for the default adapter, `Some(n)` for discrete GPU `n`.
    Wgpu(Option<usize>),
    /// CUDA device `n`.
    Cuda(usize),
}

/// Why a device could not be chosen or started.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DeviceError {
    /// The string names no device.
    #[error("unknown device `{given}`: use `cpu`, `wgpu`, `wgpu:N` or `cuda:N`")]
    Unknown {
        /// What was given.
        given: String,
    },
    /// The device's backend was not compiled in.
    #[error(
        "device `{device}` needs trustgc built with the `{feature}` feature (e.g. `cargo build --features {feature}`)"
    )]
    NotCompiled {
        /// The device.
        device: DeviceSpec,
        /// The Cargo feature that enables it.
        feature: &'static str,
    },
    /// Several devices of different backends were given for one run.
    #[error("devices `{given}` mix backends; give devices of one backend, e.g. `cuda:0,cuda:1`")]
    Mixed {
        /// What was given.
        given: String,
    },
    /// The backend failed to start on this machine (no driver, no GPU).
    #[error("device `{device}` is not available on this machine: {reason}")]
    Unavailable {
        /// The device.
        device: DeviceSpec,
        /// What the backend reported.
        reason: String,
    },
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Wgpu(None) => write!(f, "wgpu"),
            DeviceSpec::Wgpu(Some(n)) => write!(f, "wgpu:{n}"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Parses `cpu`, `wgpu`, `wgpu:N`, `cuda` (= `cuda:0`) or `cuda:N` (case-insensitive).
    pub fn parse(text: &str) -> Result<Self, DeviceError> {
        let unknown = || DeviceError::Unknown {
            given: text.to_string(),
        };
        let lower = text.trim().to_ascii_lowercase();
        let (name, index) = match lower.split_once(':') {
            Some((name, index)) => (name, Some(index.parse::<usize>().map_err(|_| unknown())?)),
            None => (lower.as_str(), None),
        };
        match (name, index) {
            ("cpu", None) => Ok(DeviceSpec::Cpu),
            ("wgpu", index) => Ok(DeviceSpec::Wgpu(index)),
            ("cuda", index) => Ok(DeviceSpec::Cuda(index.unwrap_or(0))),
            _ => Err(unknown()),
        }
    }

    /// The device named by `BURN_DEVICE`, or the CPU when it is unset or empty.
    pub fn from_env() -> Result<Self, DeviceError> {
        match std::env::var("BURN_DEVICE") {
            Ok(value) if !value.trim().is_empty() => Self::parse(&value),
            _ => Ok(DeviceSpec::Cpu),
        }
    }
}

/// A computation that can run on any backend.
pub trait BackendTask {
    /// What it returns.
    type Output;
    /// Runs on backend `B` and `device`.
    fn run<B: Backend>(self, device: B::Device) -> Self::Output;
}

/// Runs `task` on the backend and device `spec` names.
///
/// # Errors
/// [`DeviceError::NotCompiled`] when the backend's feature is off,
/// [`DeviceError::Unavailable`] when it cannot start here (e.g. no CUDA driver).
pub fn run_on<T: BackendTask>(spec: &DeviceSpec, task: T) -> Result<T::Output, DeviceError> {
    match *spec {
        DeviceSpec::Cpu => {
            #[cfg(feature = "flex")]
            {
                Ok(task.run::<Cpu>(Default::default()))
            }
            #[cfg(not(feature = "flex"))]
            {
                let _ = task;
                Err(DeviceError::NotCompiled {
                    device: *spec,
                    feature: "flex",
                })
            }
        }
        DeviceSpec::Wgpu(index) => {
            #[cfg(feature = "wgpu")]
            {
                use burn::backend::wgpu::WgpuDevice;
                let device = match index {
                    None => WgpuDevice::DefaultDevice,
                    Some(n) => WgpuDevice::DiscreteGpu(n),
                };
                probe::<Wgpu>(spec, &device)?;
                Ok(task.run::<Wgpu>(device))
            }
            #[cfg(not(feature = "wgpu"))]
            {
                let _ = (task, index);
                Err(DeviceError::NotCompiled {
                    device: *spec,
                    feature: "wgpu",
                })
            }
        }
        DeviceSpec::Cuda(index) => {
            #[cfg(feature = "cuda")]
            {
                let device = burn::backend::cuda::CudaDevice::new(index);
                probe::<Cuda>(spec, &device)?;
                Ok(task.run::<Cuda>(device))
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = (task, index);
                Err(DeviceError::NotCompiled {
                    device: *spec,
                    feature: "cuda",
                })
            }
        }
    }
}

/// A computation that needs gradients (training), on any backend with autodiff, on one
/// or more devices of that backend (the first is the main one).
#[cfg(feature = "autodiff")]
pub trait AutodiffTask {
    /// What it returns.
    type Output;
    /// Runs on the autodiff backend `B` and `devices` (never empty).
    fn run<B: burn::tensor::backend::AutodiffBackend>(
        self,
        devices: Vec<B::Device>,
    ) -> Self::Output;
}

/// Runs `task` on the autodiff wrapper of the backend `specs` name; all must name devices
/// of the same backend (e.g. `cuda:0,cuda:1`).
///
/// # Errors
/// As [`run_on`]; [`DeviceError::Mixed`] for devices of different backends.
#[cfg(feature = "autodiff")]
pub fn run_on_autodiff<T: AutodiffTask>(
    specs: &[DeviceSpec],
    task: T,
) -> Result<T::Output, DeviceError> {
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    run_on_autodiff_with::<NoCheckpointing, T>(specs, task)
}

/// [`run_on_autodiff`] with burn's gradient checkpointing
/// (`Autodiff<B, BalancedCheckpointing>`): the outputs of operations burn marks as memory
/// bound (element-wise operations, activations, reshapes, slices) are not kept for the
/// backward pass but recomputed from their inputs when it needs them; those of compute
/// bound operations (convolutions, matrix products, reductions) are kept. It trades
/// recomputation for a smaller activation memory; gradients are the same.
///
/// # Errors
/// As [`run_on_autodiff`].
#[cfg(feature = "autodiff")]
pub fn run_on_autodiff_checkpointed<T: AutodiffTask>(
    specs: &[DeviceSpec],
    task: T,
) -> Result<T::Output, DeviceError> {
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    run_on_autodiff_with::<BalancedCheckpointing, T>(specs, task)
}

/// [`run_on_autodiff`] with the checkpointing strategy `C`.
#[cfg(feature = "autodiff")]
fn run_on_autodiff_with<C, T>(specs: &[DeviceSpec], task: T) -> Result<T::Output, DeviceError>
where
    C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy,
    T: AutodiffTask,
{
    use burn::backend::Autodiff;
    let Some(first) = specs.first() else {
        return Err(DeviceError::Unknown {
            given: String::new(),
        });
    };
    if specs
        .iter()
        .any(|s| std::mem::discriminant(s) != std::mem::discriminant(first))
    {
        return Err(DeviceError::Mixed {
            given: specs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
        });
    }
    match *first {
        DeviceSpec::Cpu => {
            #[cfg(feature = "flex")]
            {
                Ok(
                    task.run::<Autodiff<Cpu, C>>(
                        specs.iter().map(|_| Default::default()).collect(),
                    ),
                )
            }
            #[cfg(not(feature = "flex"))]
            {
                let _ = task;
                Err(DeviceError::NotCompiled {
                    device: *first,
                    feature: "flex",
                })
            }
        }
        DeviceSpec::Wgpu(_) => {
            #[cfg(feature = "wgpu")]
            {
                use burn::backend::wgpu::WgpuDevice;
                let mut devices = Vec::new();
                for spec in specs {
                    let DeviceSpec::Wgpu(index) = *spec else {
                        unreachable!()
                    };
                    let device = match index {
                        None => WgpuDevice::DefaultDevice,
                        Some(n) => WgpuDevice::DiscreteGpu(n),
                    };
                    probe::<Wgpu>(spec, &device)?;
                    devices.push(device);
                }
                Ok(task.run::<Autodiff<Wgpu, C>>(devices))
            }
            #[cfg(not(feature = "wgpu"))]
            {
                let _ = task;
                Err(DeviceError::NotCompiled {
                    device: *first,
                    feature: "wgpu",
                })
            }
        }
        DeviceSpec::Cuda(_) => {
            #[cfg(feature = "cuda")]
            {
                let mut devices = Vec::new();
                for spec in specs {
                    let DeviceSpec::Cuda(index) = *spec else {
                        unreachable!()
                    };
                    let device = burn::backend::cuda::CudaDevice::new(index);
                    probe::<Cuda>(spec, &device)?;
                    devices.push(device);
                }
                Ok(task.run::<Autodiff<Cuda, C>>(devices))
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = task;
                Err(DeviceError::NotCompiled {
                    device: *first,
                    feature: "cuda",
                })
            }
        }
    }
}

/// Starts the backend with a one-element computation; a panic in the backend (a missing
/// driver library, no adapter) becomes [`DeviceError::Unavailable`].
#[allow(dead_code)]
fn probe<B: Backend>(spec: &DeviceSpec, device: &B::Device) -> Result<(), DeviceError> {
    let device = device.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        burn::tensor::Tensor::<B, 1>::ones([1], &device).into_data()
    }));
    result
        .map(|_| ())
        .map_err(|payload| DeviceError::Unavailable {
            device: *spec,
            reason: payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the backend panicked while starting".into()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!(DeviceSpec::parse("cpu"), Ok(DeviceSpec::Cpu));
        assert_eq!(DeviceSpec::parse(" CPU "), Ok(DeviceSpec::Cpu));
        assert_eq!(DeviceSpec::parse("wgpu"), Ok(DeviceSpec::Wgpu(None)));
        assert_eq!(DeviceSpec::parse("wgpu:1"), Ok(DeviceSpec::Wgpu(Some(1))));
        assert_eq!(DeviceSpec::parse("cuda"), Ok(DeviceSpec::Cuda(0)));
        assert_eq!(DeviceSpec::parse("cuda:3"), Ok(DeviceSpec::Cuda(3)));
        for bad in ["", "gpu", "cuda:x", "cpu:1", "cuda:-1", "tpu:0"] {
            assert!(
                matches!(DeviceSpec::parse(bad), Err(DeviceError::Unknown { .. })),
                "{bad}"
            );
        }
        for spec in [
            DeviceSpec::Cpu,
            DeviceSpec::Wgpu(None),
            DeviceSpec::Wgpu(Some(2)),
            DeviceSpec::Cuda(1),
        ] {
            assert_eq!(DeviceSpec::parse(&spec.to_string()), Ok(spec));
        }
    }

    #[cfg(feature = "autodiff")]
    #[test]
    fn devices_of_different_backends_are_refused() {
        struct Nothing;
        impl AutodiffTask for Nothing {
            type Output = usize;
            fn run<B: burn::tensor::backend::AutodiffBackend>(
                self,
                devices: Vec<B::Device>,
            ) -> usize {
                devices.len()
            }
        }
        let err = run_on_autodiff(&[DeviceSpec::Cpu, DeviceSpec::Cuda(0)], Nothing).unwrap_err();
        assert!(matches!(err, DeviceError::Mixed { .. }));
        #[cfg(feature = "flex")]
        assert_eq!(run_on_autodiff(&[DeviceSpec::Cpu], Nothing).unwrap(), 1);
    }

    #[cfg(all(feature = "autodiff", feature = "flex"))]
    #[test]
    fn checkpointing_gives_the_same_gradients() {
        use burn::tensor::{Tensor, TensorData};
        /// d/dx of Σ relu(x·w)·exp(x) + (x·w)² for a fixed x, w: a chain of memory-bound
        /// operations (recomputed when checkpointed) around a matrix product.
        struct Gradient;
        impl AutodiffTask for Gradient {
            type Output = Vec<f32>;
            fn run<B: burn::tensor::backend::AutodiffBackend>(
                self,
                devices: Vec<B::Device>,
            ) -> Vec<f32> {
                let device = &devices[0];
                let values: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) / 3.0).collect();
                let x = Tensor::<B, 2>::from_data(TensorData::new(values.clone(), [3, 4]), device)
                    .require_grad();
                let w =
                    Tensor::<B, 2>::from_data(TensorData::new(values, [4, 3]), device).transpose();
                let y = x.clone().mul(w);
                let z = burn::tensor::activation::relu(y.clone())
                    .mul(x.clone().exp())
                    .add(y.clone().matmul(y.transpose()).sum().unsqueeze());
                let grads = z.sum().backward();
                x.grad(&grads)
                    .unwrap()
                    .into_data()
                    .convert::<f32>()
                    .into_vec()
                    .unwrap()
            }
        }
        let plain = run_on_autodiff(&[DeviceSpec::Cpu], Gradient).unwrap();
        let checkpointed = run_on_autodiff_checkpointed(&[DeviceSpec::Cpu], Gradient).unwrap();
        assert_eq!(plain.len(), 12);
        assert!(plain.iter().any(|g| *g != 0.0));
        assert_eq!(plain, checkpointed);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_backend_that_is_not_compiled_is_a_typed_error() {
        struct Nothing;
        impl BackendTask for Nothing {
            type Output = ();
            fn run<B: Backend>(self, _device: B::Device) {}
        }
        let err = run_on(&DeviceSpec::Cuda(0), Nothing).unwrap_err();
        assert_eq!(
            err,
            DeviceError::NotCompiled {
                device: DeviceSpec::Cuda(0),
                feature: "cuda"
            }
        );
        assert!(err.to_string().contains("--features cuda"));
    }
}
