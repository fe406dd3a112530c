//! Forward-pass speed of the generative classifier on the CPU backend (Flex).
//!
//! Run: `cargo bench -p trustgc --bench forward`. Weights are random (speed does not depend
//! on their values). Groups:
//! - `flow/mini` and `flow/imagenet`: the invertible network, per batch size;
//! - `head/imagenet`: the class distances of a batch, computed as trustgc does (low-rank,
//!   ~40 MFLOP per image) and as the reference does (materializing `mu_t · mu_m`,
//!   37.7 GFLOP and 590 MB per forward).

use std::hint::black_box;

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use trustgc::{GcConfig, GenerativeClassifier, Mode};

type B = Flex;

fn bench_flow(c: &mut Criterion, name: &str, config: &GcConfig, batches: &[usize]) {
    let device = Default::default();
    let model = GenerativeClassifier::<B>::new(config, &device).unwrap();
    let [channels, height, width] = config.input_shape;
    let mut group = c.benchmark_group(format!("flow/{name}"));
    group.sample_size(10);
    for &batch in batches {
        let x = Tensor::<B, 4>::random(
            [batch, channels, height, width],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, _| {
            b.iter(|| {
                let out = model.flow.forward(black_box(x.clone()), Mode::Eval);
                out.log_det.into_data()
            })
        });
    }
    group.finish();
}

fn flow(c: &mut Criterion) {
    bench_flow(c, "mini", &GcConfig::mini(), &[1, 4, 16]);
    bench_flow(c, "imagenet", &GcConfig::imagenet(), &[1]);
}

fn head(c: &mut Criterion) {
    let config = GcConfig::imagenet();
    let device = Default::default();
    let model = GenerativeClassifier::<B>::new(&config, &device).unwrap();
    let norms = model.head.class_norms();
    let mut group = c.benchmark_group("head/imagenet");
    group.sample_size(10);
    for batch in [1, 8] {
        let z_fc = Tensor::<B, 2>::random(
            [batch, config.n_loss_dims],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let z_conv = Tensor::<B, 2>::random(
            [batch, config.conv_dims()],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        group.bench_with_input(
            BenchmarkId::new("low_rank_cached_norms", batch),
            &batch,
            |b, _| {
                b.iter(|| {
                    model
                        .head
                        .distances_with_norms(
                            black_box(z_fc.clone()),
                            black_box(z_conv.clone()),
                            &norms,
                        )
                        .into_data()
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("low_rank", batch), &batch, |b, _| {
            b.iter(|| {
                model
                    .head
                    .distances(black_box(z_fc.clone()), black_box(z_conv.clone()))
                    .into_data()
            })
        });
        group.bench_with_input(
            BenchmarkId::new("materialized_like_reference", batch),
            &batch,
            |b, _| {
                b.iter(|| {
                    let mu_conv = model.head.materialize_mu_conv();
                    let z = black_box(z_conv.clone());
                    let dot = z.clone().matmul(mu_conv.clone().transpose());
                    let d = z
                        .square()
                        .sum_dim(1)
                        .add(mu_conv.square().sum_dim(1).transpose())
                        .sub(dot.mul_scalar(2.0));
                    d.into_data()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, flow, head);
criterion_main!(benches);
