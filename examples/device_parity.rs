//! Golden parity on any device: the golden mini model (`../shared/golden/mini`) run on the
//! backend and device `--device` names, compared with the reference's outputs. It is how
//! the GPU backends are checked (`benches/gpu.sh`); on the CPU it repeats, in one
//! process, what the golden test suites check.
//!
//! ```text
//! cargo run --release -p trustgc-cli --example device_parity -- [--device cpu|wgpu|cuda:N]
//! cargo run --release -p trustgc-cli --features cuda --example device_parity -- --device cuda:0
//! ```
//!
//! Checked, each against a tolerance printed beside the measured error (relative error
//! ‖a − b‖/‖b‖ unless said otherwise):
//! - eval mode: `z_fc`, `z_conv`, `log_jac`, `logits`; the inverse `x_rec`, `log_jac_rev`;
//! - train mode (batch statistics, β = 1 objective, label smoothing 0.05): the loss and
//!   the gradient of every trainable tensor.
//!
//! Tolerances. On the CPU they are the golden tests' own (`crates/trustgc/tests/golden_*.rs`
//! explain each). A GPU sums in another order (tree reductions over thousands of threads,
//! tiled matrix products), and may run float32 matrix products on tensor cores at a lower
//! internal precision; it therefore gets 10x the CPU bounds for the forward quantities
//! (1e-4 for latents and logits, 1e-5 for the log-determinant, a sum of 3.8e4 terms of order
//! 4), 1e-3 max abs for the inverse (3.3x the CPU's 3e-4; its float32 floor is 2.1e-4, see
//! golden_mini.rs), and
//! 1e-2 for the gradients downstream of the float32 ReLU kink of node 7 (1e-1 upstream, as
//! on the CPU; golden_train.rs explains the kink). A GPU run that fails these is not
//! "close enough": it points at a kernel that computes something else.
//!
//! Exit status 0 when every quantity is within its bound, 1 otherwise, 2 when the device
//! cannot be used.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use trustgc::core::keymap::{Role, key_table};
use trustgc::core::params::parameter_gradients;
use trustgc::weights::reference::load_reference_safetensors;
use trustgc::weights::safetensors::read_safetensors;
use trustgc::weights::{Tensor as RawTensor, Values};
use trustgc::{Beta, GcConfig, Mode};
use trustgc_backend::{AutodiffTask, BackendTask, DeviceSpec, run_on, run_on_autodiff};

/// The bounds of one run (module docs).
#[derive(Clone, Copy)]
struct Bounds {
    latent: f64,
    log_det: f64,
    inverse_abs: f64,
    grad_downstream: f64,
    grad_upstream: f64,
    loss_abs: f64,
}

impl Bounds {
    fn for_device(spec: &DeviceSpec) -> Self {
        match spec {
            DeviceSpec::Cpu => Self {
                latent: 1e-5,
                log_det: 1e-6,
                inverse_abs: 3e-4,
                grad_downstream: 1e-3,
                grad_upstream: 1e-1,
                loss_abs: 2.5e-3,
            },
            _ => Self {
                latent: 1e-4,
                log_det: 1e-5,
                inverse_abs: 1e-3,
                grad_downstream: 1e-2,
                grad_upstream: 1e-1,
                loss_abs: 2.5e-2,
            },
        }
    }
}

/// The golden tensors and the mini model's files.
struct Golden {
    dir: PathBuf,
    tensors: HashMap<String, RawTensor>,
}

impl Golden {
    fn open() -> Result<Self, String> {
        let dir = std::env::var_os("TRUSTGC_GOLDEN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden")
            })
            .join("mini");
        let path = dir.join("golden.safetensors");
        let tensors = read_safetensors(&path)
            .map_err(|e| format!("the golden data ({}): {e}", path.display()))?;
        // The tensors made into model inputs, with their ranks; the compared ones are
        // checked where they are compared (a missing one fails its comparison).
        for (key, rank) in [("x", 4), ("z_fc", 2), ("z_conv", 2), ("y_soft", 2)] {
            match tensors.get(key) {
                Some(t) if t.shape.len() == rank => {}
                Some(t) => {
                    return Err(format!(
                        "the golden `{key}` has shape {:?}, expected rank {rank}",
                        t.shape
                    ));
                }
                None => return Err(format!("the golden data has no `{key}`")),
            }
        }
        Ok(Self { dir, tensors })
    }

    fn values(&self, key: &str) -> Vec<f64> {
        let Some(tensor) = self.tensors.get(key) else {
            // Compared as a length mismatch: an infinite error, reported as FAILED.
            eprintln!("error: the golden data has no `{key}`");
            return Vec::new();
        };
        match &tensor.values {
            Values::Float(v) => v.clone(),
            Values::Int(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    fn tensor<B: Backend, const D: usize>(&self, key: &str, device: &B::Device) -> Tensor<B, D> {
        let shape: [usize; D] = self.tensors[key]
            .shape
            .clone()
            .try_into()
            .expect("golden shape of the expected rank");
        let data: Vec<f32> = self.values(key).iter().map(|&v| v as f32).collect();
        Tensor::from_data(TensorData::new(data, shape), device)
    }
}

/// One compared quantity.
struct Check {
    name: String,
    error: f64,
    bound: f64,
    absolute: bool,
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("float data")
}

fn relative(a: &[f64], b: &[f64]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    if a.len() != b.len() || a.iter().any(|x| !x.is_finite()) {
        return f64::INFINITY;
    }
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            if x.is_finite() {
                (x - y).abs()
            } else {
                f64::INFINITY
            }
        })
        .fold(0.0, f64::max)
}

fn rel_check(name: &str, actual: &[f64], expected: &[f64], bound: f64) -> Check {
    Check {
        name: name.to_string(),
        error: relative(actual, expected),
        bound,
        absolute: false,
    }
}

fn abs_check(name: &str, actual: &[f64], expected: &[f64], bound: f64) -> Check {
    Check {
        name: name.to_string(),
        error: max_abs(actual, expected),
        bound,
        absolute: true,
    }
}

/// Eval mode and the inverse.
struct EvalTask<'a> {
    golden: &'a Golden,
    bounds: Bounds,
}

impl BackendTask for EvalTask<'_> {
    type Output = Result<Vec<Check>, String>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let (g, b) = (self.golden, self.bounds);
        let model = load_reference_safetensors::<B>(
            &g.dir.join("mini.safetensors"),
            &GcConfig::mini(),
            &device,
        )
        .map_err(|e| format!("loading the mini model: {e}"))?;
        let out = model.forward(g.tensor("x", &device), Mode::Eval);
        let mut checks = vec![
            rel_check("z_fc", &host(out.z_fc.clone()), &g.values("z_fc"), b.latent),
            rel_check(
                "z_conv",
                &host(out.z_conv.clone()),
                &g.values("z_conv"),
                b.latent,
            ),
            rel_check(
                "log_jac",
                &host(out.log_det.clone()),
                &g.values("log_jac"),
                b.log_det,
            ),
            rel_check("logits", &host(out.logits()), &g.values("logits"), b.latent),
        ];
        let (x_rec, log_det_rev) =
            model.inverse(g.tensor("z_fc", &device), g.tensor("z_conv", &device));
        checks.push(abs_check(
            "x_rec (max abs)",
            &host(x_rec),
            &g.values("x_rec"),
            b.inverse_abs,
        ));
        checks.push(rel_check(
            "log_jac_rev",
            &host(log_det_rev),
            &g.values("log_jac_rev"),
            b.log_det,
        ));
        Ok(checks)
    }
}

/// Train mode: the loss and every gradient.
struct TrainTask<'a> {
    golden: &'a Golden,
    bounds: Bounds,
}

impl AutodiffTask for TrainTask<'_> {
    type Output = Result<Vec<Check>, String>;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        let (g, b) = (self.golden, self.bounds);
        let device = &devices[0];
        let config = GcConfig::mini();
        let model =
            load_reference_safetensors::<B>(&g.dir.join("mini.safetensors"), &config, device)
                .map_err(|e| format!("loading the mini model: {e}"))?;
        let out = model.forward(g.tensor("x", device), Mode::Train);
        let losses = out.losses(g.tensor("y_soft", device));
        let loss = losses.objective(Beta::Finite(1.0));
        let mut checks = vec![abs_check(
            "train loss (max abs)",
            &host(loss.clone()),
            &g.values("train.loss"),
            b.loss_abs,
        )];
        let grads = loss.backward();
        let grads: HashMap<String, Vec<f64>> = parameter_gradients(&model, &grads)
            .into_iter()
            .map(|(path, data)| {
                let values = data.convert::<f64>().to_vec::<f64>().unwrap_or_default();
                (path, values)
            })
            .collect();
        let (mut worst_down, mut worst_up) = (("", 0.0f64), ("", 0.0f64));
        let mut compared = 0;
        let table = key_table(&config);
        for row in table.iter().filter(|row| row.role == Role::Trainable) {
            let key = format!("grad.{}", row.reference);
            let Some(grad) = grads.get(&row.ours) else {
                return Err(format!("no gradient for {} ({key})", row.ours));
            };
            let error = relative(grad, &g.values(&key));
            let downstream =
                row.reference.starts_with("inn.module_list.8.") || row.reference.starts_with("mu");
            let worst = if downstream {
                &mut worst_down
            } else {
                &mut worst_up
            };
            if error >= worst.1 || !error.is_finite() {
                *worst = (row.reference.as_str(), error);
            }
            compared += 1;
        }
        let expected = g.tensors.keys().filter(|k| k.starts_with("grad.")).count();
        if compared != expected {
            return Err(format!(
                "compared {compared} gradients, the golden data has {expected}"
            ));
        }
        checks.push(Check {
            name: format!("worst gradient, node 8 and head ({})", worst_down.0),
            error: worst_down.1,
            bound: b.grad_downstream,
            absolute: false,
        });
        checks.push(Check {
            name: format!("worst gradient, nodes 1-7 ({})", worst_up.0),
            error: worst_up.1,
            bound: b.grad_upstream,
            absolute: false,
        });
        Ok(checks)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device = match args.as_slice() {
        [] => DeviceSpec::Cpu,
        [flag, value] if flag == "--device" => match DeviceSpec::parse(value) {
            Ok(spec) => spec,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: device_parity [--device cpu|wgpu|wgpu:N|cuda:N]");
            return ExitCode::from(2);
        }
    };
    let golden = match Golden::open() {
        Ok(golden) => golden,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let bounds = Bounds::for_device(&device);
    let eval = run_on(
        &device,
        EvalTask {
            golden: &golden,
            bounds,
        },
    );
    let train = run_on_autodiff(
        std::slice::from_ref(&device),
        TrainTask {
            golden: &golden,
            bounds,
        },
    );
    let mut checks = Vec::new();
    for result in [eval, train] {
        match result {
            Ok(Ok(part)) => checks.extend(part),
            Ok(Err(e)) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    println!("golden mini model on {device}");
    println!("| quantity | error | bound | |");
    println!("| --- | ---: | ---: | --- |");
    let mut failed = 0;
    for check in &checks {
        let ok = check.error <= check.bound;
        failed += usize::from(!ok);
        let kind = if check.absolute { "abs" } else { "rel" };
        println!(
            "| {} | {:.2e} {kind} | {:.0e} | {} |",
            check.name,
            check.error,
            check.bound,
            if ok { "ok" } else { "FAILED" }
        );
    }
    if failed > 0 {
        eprintln!(
            "{failed} of {} quantities beyond their bounds",
            checks.len()
        );
        ExitCode::FAILURE
    } else {
        println!("all {} quantities within their bounds", checks.len());
        ExitCode::SUCCESS
    }
}
