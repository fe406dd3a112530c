//! Where the forward pass of the ImageNet architecture spends its time, per layer type, on
//! the CPU backend (Flex). A measurement, not a test: it is ignored by default, asserts
//! nothing about time, and prints a table.
//!
//! Run (docs/performance.md quotes its output):
//!
//! ```text
//! PROFILE_BATCHES=1,8 PROFILE_REPS=3 \
//!   cargo test --release -p trustgc-core --test profile_layers -- --ignored --nocapture
//! ```
//!
//! Each flow step is first timed whole (`Invertible::forward`, the code that runs in
//! production). Its subnets are then run again piece by piece on the same input — every
//! convolution, and every BatchNorm with the ReLU after it — each piece timed alone; the
//! coupling's own work (split, `tanh`/`exp`, products, concatenation, act-norm, channel
//! permutation, log-dets) is the step's time minus its subnets'. Flex runs every operation
//! eagerly, so a wall-clock time around an operation is that operation's time. The
//! minimum over `PROFILE_REPS` repetitions is reported (the machine is shared; the
//! minimum is the least disturbed run). With `PROFILE_CONVS=1` it also lists every
//! convolution shape with its time and GFLOP/s.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::backend::Flex;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::relu;
use burn::tensor::{Distribution, Tensor};
use trustgc_core::layers::batch_norm::BatchNorm2d;
use trustgc_core::layers::coupling::split_channels;
use trustgc_core::layers::subnet::{Bottleneck, Conv1x1Net, EntryLowResNet, EntryStridedNet};
use trustgc_core::layers::{Invertible, Mode, conv};
use trustgc_core::{GcConfig, GenerativeClassifier};

type B = Flex;

/// Accumulated seconds per category for one repetition, and per convolution shape
/// (seconds, FLOPs).
#[derive(Default)]
struct Times(BTreeMap<String, f64>, BTreeMap<String, (f64, f64)>);

impl Times {
    fn add(&mut self, key: impl Into<String>, seconds: f64) {
        *self.0.entry(key.into()).or_default() += seconds;
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64())
}

fn conv_kind(conv: &Conv2d<B>) -> String {
    let [_, _, kh, _] = conv.weight.dims();
    let stride = conv.stride[0];
    if kh == 1 {
        "conv 1x1".into()
    } else if stride == 1 {
        format!("conv {kh}x{kh}")
    } else {
        format!("conv {kh}x{kh} stride {stride}")
    }
}

fn conv(times: &mut Times, layer: &Conv2d<B>, x: Tensor<B, 4>) -> (Tensor<B, 4>, f64) {
    let [_, cin, height, width] = x.dims();
    let (y, s) = timed(|| conv::forward(layer, x));
    times.add(conv_kind(layer), s);
    let [cout, _, k, _] = layer.weight.dims();
    let [_, _, out_h, out_w] = y.dims();
    let key = format!(
        "{} {cin}→{cout} at {height}x{width}",
        conv_kind(layer).trim_start_matches("conv ")
    );
    let flops = (2 * cin * cout * k * k * out_h * out_w * y.dims()[0]) as f64;
    let entry = times.1.entry(key).or_default();
    entry.0 += s;
    entry.1 += flops;
    (y, s)
}

fn bn_relu(times: &mut Times, bn: &BatchNorm2d<B>, x: Tensor<B, 4>) -> (Tensor<B, 4>, f64) {
    let (y, s) = timed(|| relu(bn.forward(x, Mode::Eval)));
    times.add("BatchNorm + ReLU", s);
    (y, s)
}

/// Runs `net` piece by piece; returns the summed time of its pieces.
fn bottleneck(times: &mut Times, net: &Bottleneck<B>, x: Tensor<B, 4>) -> (Tensor<B, 4>, f64) {
    let (x, a) = bn_relu(times, &net.bn_in, x);
    let (x, b) = conv(times, &net.conv_reduce, x);
    let (x, c) = bn_relu(times, &net.bn_reduce, x);
    let (x, d) = conv(times, &net.conv_spatial, x);
    let (x, e) = bn_relu(times, &net.bn_spatial, x);
    let (x, f) = conv(times, &net.conv_expand, x);
    let (x, g) = bn_relu(times, &net.bn_expand, x);
    let (x, h) = conv(times, &net.conv_out, x);
    (x, a + b + c + d + e + f + g + h)
}

fn entry_strided(
    times: &mut Times,
    net: &EntryStridedNet<B>,
    x: Tensor<B, 4>,
) -> (Tensor<B, 4>, f64) {
    let (x, a) = conv(times, &net.conv_in, x);
    let (x, b) = bn_relu(times, &net.bn_in, x);
    let (x, c) = conv(times, &net.conv_strided, x);
    let (x, d) = bn_relu(times, &net.bn_strided, x);
    let (x, e) = conv(times, &net.conv_out, x);
    (x, a + b + c + d + e)
}

fn entry_low_res(
    times: &mut Times,
    net: &EntryLowResNet<B>,
    x: Tensor<B, 4>,
) -> (Tensor<B, 4>, f64) {
    let (x, a) = conv(times, &net.conv_in, x);
    let (x, b) = bn_relu(times, &net.bn_in, x);
    let (x, c) = conv(times, &net.conv_out, x);
    (x, a + b + c)
}

fn conv1x1_net(times: &mut Times, net: &Conv1x1Net<B>, x: Tensor<B, 4>) -> (Tensor<B, 4>, f64) {
    let (x, a) = conv(times, &net.conv_in, x);
    let (x, b) = timed(|| relu(x));
    times.add("BatchNorm + ReLU", b);
    let (x, c) = conv(times, &net.conv_out, x);
    (x, a + b + c)
}

/// The input of the second subnet of a downsampling coupling (`y2`), recomputed with the
/// library's own pieces so that the second subnet sees a realistic input.
fn low_res_input(x: &Tensor<B, 4>, split: usize) -> Tensor<B, 4> {
    let [batch, channels, height, width] = x.dims();
    let c2 = channels - split;
    Tensor::random(
        [batch, 4 * c2, height / 2, width / 2],
        Distribution::Normal(0.0, 1.0),
        &x.device(),
    )
}

fn profile(model: &GenerativeClassifier<B>, x: Tensor<B, 4>) -> Times {
    let mut times = Times::default();
    let flow = &model.flow;
    let mut x = x;

    // Entry coupling.
    let ((y, _), step) = timed(|| flow.entry.forward(x.clone(), Mode::Eval));
    let split = flow.entry.split;
    let (_, s1) = entry_strided(
        &mut times,
        &flow.entry.subnet_strided,
        x.clone().narrow(1, 0, split),
    );
    let (_, s2) = entry_low_res(
        &mut times,
        &flow.entry.subnet_low_res,
        low_res_input(&x, split),
    );
    times.add("coupling tail", step - s1 - s2);
    times.add("total flow", step);
    x = y;

    // Haar.
    let ((y, _), step) = timed(|| flow.haar.forward(x.clone(), Mode::Eval));
    times.add("Haar", step);
    times.add("total flow", step);
    x = y;

    // The 1x1 coupling.
    let ((y, _), step) = timed(|| flow.entry_1x1.forward(x.clone(), Mode::Eval));
    let (c1, _) = split_channels(x.dims()[1]);
    let (_, s) = conv1x1_net(
        &mut times,
        &flow.entry_1x1.subnet,
        x.clone().narrow(1, 0, c1),
    );
    times.add("coupling tail", step - s);
    times.add("total flow", step);
    x = y;

    for stage in &flow.stages {
        if let Some(down) = &stage.down {
            let ((y, _), step) = timed(|| down.forward(x.clone(), Mode::Eval));
            let split = down.split;
            let (_, s1) = bottleneck(
                &mut times,
                &down.subnet_strided,
                x.clone().narrow(1, 0, split),
            );
            let (_, s2) = bottleneck(&mut times, &down.subnet_low_res, low_res_input(&x, split));
            times.add("coupling tail", step - s1 - s2);
            times.add("total flow", step);
            x = y;
        }
        for block in &stage.blocks {
            let ((y, _), step) = timed(|| block.forward(x.clone(), Mode::Eval));
            let (c1, _) = split_channels(x.dims()[1]);
            let (_, s) = bottleneck(&mut times, &block.subnet, x.clone().narrow(1, 0, c1));
            times.add("coupling tail", step - s);
            times.add("total flow", step);
            x = y;
        }
    }

    let ((t, _), step) = timed(|| flow.dct.forward(x, Mode::Eval));
    times.add("DCT + split + permutation", step);
    times.add("total flow", step);
    let n_loss = flow.plan.n_loss_dims;
    let total = t.dims()[1];
    let ((z_fc, _), step) = timed(|| {
        flow.permute
            .forward(t.clone().narrow(1, 0, n_loss), Mode::Eval)
    });
    times.add("DCT + split + permutation", step);
    times.add("total flow", step);
    let z_conv = t.narrow(1, n_loss, total - n_loss);
    let norms = model.head.class_norms();
    let (d, step) = timed(|| {
        model
            .head
            .distances_with_norms(z_fc, z_conv, &norms)
            .into_data()
    });
    drop(d);
    times.add("head (cached norms)", step);
    times
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().parse().expect("a list of integers"))
        .collect()
}

#[test]
#[ignore = "a measurement (minutes); run it by hand, see the module docs"]
fn profile_imagenet_forward_per_layer_type() {
    let device = Default::default();
    let config = GcConfig::imagenet();
    let model = GenerativeClassifier::<B>::new(&config, &device).unwrap();
    let [channels, height, width] = config.input_shape;
    let batches = env_list("PROFILE_BATCHES", "1,8");
    let reps = env_list("PROFILE_REPS", "3")[0].max(1);
    // Materialize the lazily initialized weights before timing anything.
    let warm = Tensor::<B, 4>::random(
        [1, channels, height, width],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let _ = model.forward(warm, Mode::Eval).log_det.into_data();

    for batch in batches {
        let x = Tensor::<B, 4>::random(
            [batch, channels, height, width],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let runs: Vec<Times> = (0..reps).map(|_| profile(&model, x.clone())).collect();
        println!("\nbatch {batch}: ms per image (min over {reps} runs; all runs in brackets)");
        println!("| layer type | ms/image | share of flow | runs |");
        println!("| --- | ---: | ---: | --- |");
        let flow_min = runs
            .iter()
            .map(|t| t.0["total flow"])
            .fold(f64::INFINITY, f64::min);
        for key in runs[0].0.keys() {
            let per_run: Vec<f64> = runs.iter().map(|t| t.0[key] * 1e3 / batch as f64).collect();
            let min = per_run.iter().copied().fold(f64::INFINITY, f64::min);
            let all: Vec<String> = per_run.iter().map(|v| format!("{v:.1}")).collect();
            println!(
                "| {key} | {min:.1} | {:.0} % | {} |",
                100.0 * min / (flow_min * 1e3 / batch as f64),
                all.join(", ")
            );
        }
        if std::env::var("PROFILE_CONVS").is_ok() {
            println!("\nbatch {batch}: convolutions by shape (min over runs)");
            println!("| convolution | ms/image | GFLOP/s |");
            println!("| --- | ---: | ---: |");
            for (key, &(_, flops)) in &runs[0].1 {
                let seconds = runs
                    .iter()
                    .map(|t| t.1[key].0)
                    .fold(f64::INFINITY, f64::min);
                println!(
                    "| {key} | {:.2} | {:.1} |",
                    seconds * 1e3 / batch as f64,
                    flops / seconds / 1e9
                );
            }
        }
    }
}
