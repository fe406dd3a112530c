//! Properties every invertible step must have, checked through the [`Invertible`] trait by
//! one generic harness ([`check_step`]), on a seeded grid of shapes and random parameters
//! and on every step of whole flows, in float64 (Flex):
//!
//! 1. round trip: `inverse(forward(x)) = x`;
//! 2. `log_det + log_det_inv = 0` for [`LogDetConvention::Negated`] steps;
//!    `log_det_inv = log_det` for the DCT, which keeps the reference's quirk
//!    ([`LogDetConvention::Same`]; its exact log-det is checked in
//!    `dct_keeps_the_reference_log_det_quirk`);
//! 3. `log_det` equals the brute-force `log |det J|` from central finite differences
//!    (for `Negated` steps).
//!
//! BatchNorm runs in eval mode with random running statistics, so samples are
//! independent and one batch can carry all the finite-difference probes.

use std::collections::HashMap;

use burn::backend::Flex;
use burn::module::Module;
use burn::tensor::{DType, Tensor, TensorData};
use trustgc_core::flow::StepRef;
use trustgc_core::layers::coupling::{DownCouplingConfig, SlowCouplingConfig, split_channels};
use trustgc_core::layers::dct::{DctPoolingConfig, dct_inverse_weight, dct_weight};
use trustgc_core::layers::haar::HaarDownsamplingConfig;
use trustgc_core::layers::subnet::{BottleneckConfig, Conv1x1NetConfig, EntryNetConfig};
use trustgc_core::layers::{FeaturePermutationConfig, Invertible, LogDetConvention, Mode};
use trustgc_core::params::{ParamKind, cast_floats, parameter_shapes, replace_parameters};
use trustgc_core::rng::{Mt19937, legacy_permutation};
use trustgc_core::{GcConfig, GenerativeClassifier};

type B = Flex;

struct Gaussian(Mt19937);

impl Gaussian {
    fn new(seed: u32) -> Self {
        Self(Mt19937::new(seed))
    }
    fn uniform(&mut self) -> f64 {
        (f64::from(self.0.next_u32()) + 0.5) / 4_294_967_296.0
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    fn vec(&mut self, n: usize, mean: f64, std: f64) -> Vec<f64> {
        (0..n).map(|_| mean + std * self.normal()).collect()
    }
}

/// Random trainable parameters and BatchNorm statistics; fixed tensors untouched; all
/// floats cast to float64.
fn randomize<M: Module<B>>(module: M, rng: &mut Gaussian) -> M {
    let device = Default::default();
    let mut values = HashMap::new();
    for p in parameter_shapes::<B, _>(&module) {
        let name = p.path.rsplit('.').next().unwrap();
        // The DCT matrices are stored in float32; give them their float64 closed form
        // so that float64 round trips are exact.
        match p.path.as_str() {
            "weight" | "flow.dct.weight" => {
                values.insert(p.path, TensorData::new(dct_weight(p.shape[0]), p.shape));
                continue;
            }
            "inverse_weight" | "flow.dct.inverse_weight" => {
                values.insert(
                    p.path,
                    TensorData::new(dct_inverse_weight(p.shape[0]), p.shape),
                );
                continue;
            }
            _ => {}
        }
        if p.kind != ParamKind::Float || p.path.contains("kernels") || name == "num_batches_tracked"
        {
            continue;
        }
        let n: usize = p.shape.iter().product();
        let v = match name {
            "running_var" => (0..n).map(|_| 0.5 + 1.5 * rng.uniform()).collect(),
            // raw act-norm parameters around 7 give scales around 0.7
            "act_norm" => rng.vec(n, 7.0, 1.5),
            _ => rng.vec(n, 0.0, 0.4),
        };
        values.insert(p.path, TensorData::new(v, p.shape));
    }
    let module = replace_parameters(module, &mut values, &device);
    cast_floats(module, DType::F64)
}

fn input<const D: usize>(rng: &mut Gaussian, shape: [usize; D]) -> Tensor<B, D> {
    let n = shape.iter().product();
    Tensor::from_data(
        TensorData::new(rng.vec(n, 0.0, 1.0), shape),
        (&Default::default(), DType::F64),
    )
}

fn to_vec<const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().to_vec::<f64>().unwrap()
}

fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// log |det A| by LU with partial pivoting.
fn log_abs_det(mut a: Vec<f64>, n: usize) -> f64 {
    let mut log_det = 0.0;
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))
            .unwrap();
        if pivot != col {
            for k in 0..n {
                a.swap(col * n + k, pivot * n + k);
            }
        }
        let p = a[col * n + col];
        assert!(p != 0.0, "singular Jacobian");
        log_det += p.abs().ln();
        for row in col + 1..n {
            let factor = a[row * n + col] / p;
            for k in col..n {
                a[row * n + k] -= factor * a[col * n + k];
            }
        }
    }
    log_det
}

/// Brute-force log |det ∂f/∂x| at a single sample `x` `[1, …]`, by central differences
/// (all 2n probes in one batch).
fn brute_force_log_det<const D: usize>(
    f: impl Fn(Tensor<B, D>) -> Vec<f64>,
    x: &Tensor<B, D>,
) -> f64 {
    let dims = x.dims();
    let n: usize = dims[1..].iter().product();
    let base = to_vec(x.clone());
    let h = 1e-5;
    let mut probes = Vec::with_capacity(2 * n * n);
    for i in 0..n {
        for sign in [1.0, -1.0] {
            let mut p = base.clone();
            p[i] += sign * h;
            probes.extend(p);
        }
    }
    let mut shape = dims.to_vec();
    shape[0] = 2 * n;
    let batch = Tensor::<B, D>::from_data(
        TensorData::new(probes, shape),
        (&Default::default(), DType::F64),
    );
    let out = f(batch);
    let m = out.len() / (2 * n);
    assert_eq!(m, n, "the layer must map n values to n values");
    // J[r][i] = ∂f_r/∂x_i
    let mut jacobian = vec![0.0; n * n];
    for i in 0..n {
        let (plus, minus) = (
            &out[2 * i * n..(2 * i + 1) * n],
            &out[(2 * i + 1) * n..(2 * i + 2) * n],
        );
        for r in 0..n {
            jacobian[r * n + i] = (plus[r] - minus[r]) / (2.0 * h);
        }
    }
    log_abs_det(jacobian, n)
}

/// Checks the properties of any [`Invertible`] step (eval mode) at `x` `[2, …]` and
/// returns the brute-force log-det of the first sample.
fn check_step<const I: usize, const O: usize, S>(name: &str, step: &S, x: Tensor<B, I>) -> f64
where
    S: Invertible<B, I, O> + ?Sized,
{
    let (y, log_det) = step.forward(x.clone(), Mode::Eval);
    let (x_back, log_det_inv) = step.inverse(y, Mode::Eval);
    let round_trip = max_abs(&to_vec(x_back), &to_vec(x.clone()));
    let (log_det, log_det_inv) = (to_vec(log_det), to_vec(log_det_inv));
    let brute = brute_force_log_det(
        |b| to_vec(step.forward(b, Mode::Eval).0),
        &x.clone().narrow(0, 0, 1),
    );
    let convention = step.log_det_convention();
    let mismatch = log_det
        .iter()
        .zip(&log_det_inv)
        .map(|(a, b)| match convention {
            LogDetConvention::Negated => (a + b).abs(),
            LogDetConvention::Same => (a - b).abs(),
        })
        .fold(0.0, f64::max);
    println!(
        "{name:<44} round trip {round_trip:.1e}  log_det vs inverse ({convention:?}) {mismatch:.1e}  log_det {:.6} brute {brute:.6}",
        log_det[0]
    );
    // float64 round trip through a few exp/tanh layers: 1e-9 absolute.
    assert!(
        round_trip < 1e-9,
        "{name}: round trip error {round_trip:.3e}"
    );
    assert!(
        mismatch < 1e-9 * (1.0 + log_det[0].abs()),
        "{name}: log_det and log_det_inv differ from the {convention:?} convention by {mismatch:.3e}"
    );
    if convention == LogDetConvention::Negated {
        // Central differences with h = 1e-5 have O(h²) = 1e-10 truncation error per entry.
        assert!(
            (log_det[0] - brute).abs() < 1e-6 * (1.0 + brute.abs()),
            "{name}: log_det {} vs brute force {brute}",
            log_det[0]
        );
    }
    brute
}

fn slow_config(channels: usize, seed: u32) -> SlowCouplingConfig {
    SlowCouplingConfig::new(channels, legacy_permutation(seed, channels))
}

fn down_config(channels: usize, seed: u32) -> DownCouplingConfig {
    DownCouplingConfig::new(channels, legacy_permutation(seed, 4 * channels))
}

#[test]
fn slow_coupling_properties() {
    let device = Default::default();
    let mut seed = 0;
    for channels in [2, 3, 5] {
        for (height, width) in [(2, 2), (3, 2)] {
            for hidden in [4, 6] {
                seed += 1;
                let mut rng = Gaussian::new(seed);
                let (c1, c2) = split_channels(channels);
                let subnet = Conv1x1NetConfig::new(c1, 2 * c2, hidden).init::<B>(&device);
                let block = slow_config(channels, seed).init(subnet, &device);
                let block = randomize(block, &mut rng);
                let x = input(&mut rng, [2, channels, height, width]);
                check_step(
                    &format!("slow/1x1 C={channels} {height}x{width} hidden={hidden}"),
                    &block,
                    x,
                );
                let subnet = BottleneckConfig::new(c1, 2 * c2, hidden).init::<B>(&device);
                let block = slow_config(channels, seed + 100).init(subnet, &device);
                let block = randomize(block, &mut rng);
                let x = input(&mut rng, [2, channels, height, width]);
                check_step(
                    &format!("slow/bottleneck C={channels} {height}x{width} width={hidden}"),
                    &block,
                    x,
                );
            }
        }
    }
}

#[test]
fn down_coupling_properties() {
    let device = Default::default();
    let mut seed = 1000;
    for channels in [2, 3, 4] {
        for (height, width) in [(2, 2), (4, 2)] {
            seed += 1;
            let mut rng = Gaussian::new(seed);
            let (c1, c2) = split_channels(channels);
            let entry = down_config(channels, seed).init(
                EntryNetConfig::new(c1, 8 * c2, 5).init_strided::<B>(&device),
                EntryNetConfig::new(4 * c2, 8 * c1, 5).init_low_res::<B>(&device),
                &device,
            );
            let entry = randomize(entry, &mut rng);
            let x = input(&mut rng, [2, channels, height, width]);
            check_step(
                &format!("down/entry C={channels} {height}x{width}"),
                &entry,
                x,
            );
            let down = down_config(channels, seed).init(
                BottleneckConfig::new(c1, 8 * c2, 3)
                    .with_stride(2)
                    .init::<B>(&device),
                BottleneckConfig::new(4 * c2, 8 * c1, 3).init::<B>(&device),
                &device,
            );
            let down = randomize(down, &mut rng);
            let x = input(&mut rng, [2, channels, height, width]);
            check_step(
                &format!("down/bottleneck C={channels} {height}x{width}"),
                &down,
                x,
            );
        }
    }
}

#[test]
fn haar_properties() {
    let device = Default::default();
    for (i, (channels, height, width, rebalance)) in [
        (1, 2, 2, 0.5),
        (2, 4, 2, 0.5),
        (3, 2, 4, 1.0),
        (2, 2, 2, 0.25),
    ]
    .into_iter()
    .enumerate()
    {
        let mut rng = Gaussian::new(2000 + i as u32);
        let haar = cast_floats(
            HaarDownsamplingConfig::new(channels)
                .with_rebalance(rebalance)
                .init::<B>(&device),
            DType::F64,
        );
        let x = input(&mut rng, [2, channels, height, width]);
        check_step(
            &format!("haar C={channels} {height}x{width} rebalance={rebalance}"),
            &haar,
            x,
        );
    }
}

#[test]
fn haar_orders_by_wavelet_like_the_reference() {
    // One channel per wavelet; out channel k·C + c holds wavelet k of channel c, times 0.25.
    let device = Default::default();
    let haar = HaarDownsamplingConfig::new(2).init::<B>(&device);
    // channel 0 = [[1,2],[3,4]], channel 1 = [[5,6],[7,8]]
    let x = Tensor::<B, 4>::from_data(
        TensorData::new((1..=8).map(|v| v as f32).collect::<Vec<_>>(), [1, 2, 2, 2]),
        &device,
    );
    let y: Vec<f32> = haar.forward(x, Mode::Eval).0.into_data().to_vec().unwrap();
    let expected = [10.0, 26.0, -2.0, -2.0, -4.0, -4.0, 0.0, 0.0].map(|v: f32| v * 0.25);
    assert_eq!(y, expected);
}

#[test]
fn dct_keeps_the_reference_log_det_quirk() {
    let device = Default::default();
    for (i, (channels, n, rebalance)) in [(2, 3, 0.5), (1, 4, 0.5), (3, 2, 1.0), (2, 7, 0.5)]
        .into_iter()
        .enumerate()
    {
        let mut rng = Gaussian::new(3000 + i as u32);
        let dct = DctPoolingConfig::new(channels, n)
            .with_rebalance(rebalance)
            .init::<B>(&device);
        let dct = randomize(dct, &mut rng);
        let x = input(&mut rng, [2, channels, n, n]);
        let brute = check_step(&format!("dct C={channels} N={n}"), &dct, x.clone());
        let (t, log_det) = dct.forward(x.clone(), Mode::Eval);
        let (x_back, log_det_inv) = dct.inverse(t, Mode::Eval);
        let round_trip = max_abs(&to_vec(x_back), &to_vec(x.clone()));
        assert!(round_trip < 1e-10, "dct round trip {round_trip:.3e}");
        let reported = (n * n * channels) as f64 * f64::ln(rebalance);
        // The quirk: the same constant, with the same sign, in both directions.
        assert_eq!(to_vec(log_det), vec![reported; 2]);
        assert_eq!(to_vec(log_det_inv), vec![reported; 2]);
        // The exact value: N²C·ln(rebalance/(2(N+1))) + 2N·C·ln|det W|.
        let w = dct_weight(n);
        let exact = (n * n * channels) as f64 * (rebalance / (2.0 * (n as f64 + 1.0))).ln()
            + 2.0 * (n * channels) as f64 * log_abs_det(w, n);
        println!(
            "dct C={channels} N={n}: reported {reported:.6}, exact {exact:.6}, brute force {brute:.6}"
        );
        assert!(
            (brute - exact).abs() < 1e-6 * (1.0 + exact.abs()),
            "dct brute {brute} vs exact {exact}"
        );
    }
}

#[test]
fn feature_permutation_inverts() {
    let device = Default::default();
    let perm = FeaturePermutationConfig::new(legacy_permutation(0, 6)).init::<B>(&device);
    let x = Tensor::<B, 2>::from_data(
        TensorData::new((0..12).map(|v| v as f32).collect::<Vec<_>>(), [2, 6]),
        &device,
    );
    let (y, log_det) = perm.forward(x.clone(), Mode::Eval);
    assert_eq!(to_vec(log_det.cast(DType::F64)), vec![0.0; 2]);
    let y: Vec<f32> = y.into_data().to_vec().unwrap();
    let p = legacy_permutation(0, 6);
    for i in 0..6 {
        assert_eq!(y[i], p[i] as f32);
    }
    let (back, _) = perm.inverse(perm.forward(x.clone(), Mode::Eval).0, Mode::Eval);
    assert_eq!(back.into_data(), x.into_data());
    let mut rng = Gaussian::new(3100);
    let x = input(&mut rng, [2, 6]);
    check_step("feature permutation n=6", &perm, x);
}

/// A whole flow small enough for a brute-force Jacobian: 2x4x4 inputs (32 dimensions).
fn tiny_config(strides: Vec<usize>) -> GcConfig {
    GcConfig {
        input_shape: [2, 8, 8],
        n_classes: 3,
        n_loss_dims: 6,
        mu_low_rank_k: 2,
        base_width: 8,
        planes: vec![8; strides.len()],
        blocks: vec![2; strides.len()],
        strides,
        clamp: 0.7,
        act_norm: 0.7,
        entry_1x1_hidden: 8,
        haar_rebalance: 0.5,
        dct_rebalance: 0.5,
        permute_seed: 0,
        bn_momentum: 0.05,
        bn_eps: 1e-5,
        class_names: Vec::new(),
        input: None,
    }
}

#[test]
fn whole_flow_properties() {
    let device = Default::default();
    for (i, strides) in [vec![1], vec![2], vec![1, 2]].into_iter().enumerate() {
        let mut config = tiny_config(strides.clone());
        if strides.len() == 2 {
            config.input_shape = [2, 16, 16];
        }
        let mut rng = Gaussian::new(4000 + i as u32);
        let model = randomize(
            GenerativeClassifier::<B>::new(&config, &device).unwrap(),
            &mut rng,
        );
        let [c, h, w] = config.input_shape;
        let x = input(&mut rng, [2, c, h, w]);
        let out = model.flow.forward(x.clone(), Mode::Eval);
        let inverse = model
            .flow
            .inverse(out.z_fc.clone(), out.z_conv.clone(), Mode::Eval);
        let (x_back, log_det_inv) = (inverse.x, inverse.log_det);
        let round_trip = max_abs(&to_vec(x_back), &to_vec(x.clone()));
        let n = config.dct_size();
        let dct_reported = (n * n * config.final_channels()) as f64 * 0.5f64.ln();
        let log_det = to_vec(out.log_det);
        let sum: Vec<f64> = log_det
            .iter()
            .zip(to_vec(log_det_inv))
            .map(|(a, b)| a + b)
            .collect();
        println!(
            "flow strides {strides:?}: round trip {round_trip:.1e}, log_det + inv = {sum:?} (2 x DCT term {:.4})",
            2.0 * dct_reported
        );
        assert!(round_trip < 1e-9, "flow round trip {round_trip:.3e}");
        // Every node's log-dets cancel except the DCT's, which adds up (the quirk).
        for s in &sum {
            assert!(
                (s - 2.0 * dct_reported).abs() < 1e-8,
                "log_det + log_det_inv = {s}"
            );
        }
        if c * h * w <= 128 {
            let flat = |b: Tensor<B, 4>| {
                let o = model.flow.forward(b, Mode::Eval);
                to_vec(Tensor::cat(vec![o.z_fc, o.z_conv], 1))
            };
            let brute = brute_force_log_det(flat, &x.narrow(0, 0, 1));
            // z_fc is a permutation of DCT outputs and z_conv the rest, so the brute force is
            // the exact log-det; the reported one uses the DCT quirk instead.
            let w = dct_weight(n);
            let channels = config.final_channels();
            let dct_exact = (n * n * channels) as f64 * (0.5 / (2.0 * (n as f64 + 1.0))).ln()
                + 2.0 * (n * channels) as f64 * log_abs_det(w, n);
            let corrected = log_det[0] - dct_reported + dct_exact;
            println!(
                "  brute force {brute:.6}, reported {:.6}, reported with exact DCT term {corrected:.6}",
                log_det[0]
            );
            assert!(
                (brute - corrected).abs() < 1e-6 * (1.0 + brute.abs()),
                "flow log_det mismatch"
            );
        }
    }
}

/// The harness on every step of whole flows: each block at the input shape its plan gives,
/// then the DCT and the permutation.
#[test]
fn every_step_of_a_flow_passes_the_harness() {
    let device = Default::default();
    for (i, strides) in [vec![1], vec![2]].into_iter().enumerate() {
        let config = tiny_config(strides.clone());
        let mut rng = Gaussian::new(5000 + i as u32);
        let model = randomize(
            GenerativeClassifier::<B>::new(&config, &device).unwrap(),
            &mut rng,
        );
        let flow = &model.flow;
        let steps = flow.steps();
        assert_eq!(steps.len(), flow.plan.blocks.len());
        let mut log_det_sum = 0.0;
        let x = input(&mut rng, [1, 2, 8, 8]);
        for (StepRef { node, step }, spec) in steps.into_iter().zip(&flow.plan.blocks) {
            assert_eq!(node, spec.node);
            let [c, h, w] = spec.input_shape();
            let x = input(&mut rng, [2, c, h, w]);
            check_step(
                &format!("strides {strides:?} node {node} {}", spec.name),
                step,
                x,
            );
            let (y, _) = step.forward(input(&mut rng, [1, c, h, w]), Mode::Eval);
            assert_eq!(y.dims()[1..], spec.output_shape());
        }
        let (n, channels) = (flow.plan.final_side, flow.plan.final_channels);
        let x_dct = input(&mut rng, [2, channels, n, n]);
        check_step(&format!("strides {strides:?} DCT"), &flow.dct, x_dct);
        let x_perm = input(&mut rng, [2, config.n_loss_dims]);
        check_step(
            &format!("strides {strides:?} permutation"),
            &flow.permute,
            x_perm,
        );
        // The flow's own log-det is the sum over the steps of the traced contributions.
        let (out, trace) = flow.forward_traced(x, Mode::Eval);
        for node in &trace {
            log_det_sum += to_vec(node.log_det.clone())[0];
        }
        let total = to_vec(out.log_det)[0];
        assert!(
            (total - log_det_sum).abs() < 1e-9 * (1.0 + total.abs()),
            "flow log_det {total} vs sum of node log-dets {log_det_sum}"
        );
    }
}
