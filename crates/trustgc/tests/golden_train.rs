//! Parity of the train-mode pass with the reference: batch-statistics BatchNorm, the
//! β = 1 objective with label smoothing, every parameter's gradient, and the BatchNorm
//! running statistics after the pass.
//!
//! The gradients are compared twice. In float64 every gradient must match the
//! reference's to the 1e-3. In float32 the parameters upstream of node 7 are
//! looser: the golden batch puts one ReLU input of node 7's subnet (`bn_expand`, sample 0,
//! channel 55, pixel (3, 8)) at −1.39e-6 in exact arithmetic. Float32 rounding of the 6
//! layers before it is a few 1e-6, so whether that unit is on or off is a coin toss for
//! any float32 implementation (PyTorch's landed off, ours lands on), and its flip moves
//! the gradients of nodes 1-7 by up to 6e-2 relative while leaving node 8 and the head
//! untouched. `the_float32_kink_is_real` checks that this unit is where we say.

mod common;

use std::collections::HashMap;

use burn::backend::{Autodiff, Flex};
use burn::tensor::activation::relu;
use burn::tensor::{DType, Tensor, TensorData};
use common::*;
use trustgc::core::keymap::{Role, key_table};
use trustgc::core::layers::Invertible;
use trustgc::core::params::{cast_floats, parameter_gradients, parameter_values};
use trustgc::weights::reference::load_reference_safetensors;
use trustgc::{Beta, GenerativeClassifier, Mode};

type B = Autodiff<Flex>;

fn data_to_f64(data: TensorData) -> Vec<f64> {
    data.convert::<f64>().to_vec::<f64>().unwrap()
}

fn mini(dtype: DType) -> GenerativeClassifier<B> {
    let model = load_reference_safetensors::<B>(
        &golden_path("mini/mini.safetensors"),
        &mini_config(),
        &Default::default(),
    )
    .expect("mini.safetensors loads");
    cast_floats(model, dtype)
}

struct TrainPass {
    model: GenerativeClassifier<B>,
    grads: HashMap<String, Vec<f64>>,
}

/// One train-mode forward and backward of the β = 1 objective on the golden batch,
/// checking the forward quantities on the way.
fn train_pass(dtype: DType) -> TrainPass {
    let device = Default::default();
    let model = mini(dtype);
    let x: Tensor<B, 4> = tensor("x", &device);
    let out = model.forward(x.cast(dtype), Mode::Train);
    // Train-mode activations use batch statistics: same float32 targets as eval mode.
    assert_rel(
        "train.z_fc",
        &host(out.z_fc.clone()),
        &values("train.z_fc"),
        1e-5,
    );
    assert_rel(
        "train.z_conv",
        &host(out.z_conv.clone()),
        &values("train.z_conv"),
        1e-5,
    );
    assert_rel(
        "train.log_jac",
        &host(out.log_det.clone()),
        &values("train.log_jac"),
        1e-6,
    );
    assert_rel(
        "train.logits",
        &host(out.logits()),
        &values("train.logits"),
        1e-5,
    );

    let targets: Tensor<B, 2> = tensor("y_soft", &device);
    let losses = out.losses(targets.cast(dtype));
    let loss = losses.objective(Beta::Finite(1.0));
    assert_rel(
        "train.nll_joint_tr",
        &host(losses.nll_joint.clone().mean()),
        &values("train.nll_joint_tr"),
        1e-5,
    );
    assert_rel(
        "train.nll_class_tr",
        &host(losses.nll_class.clone().mean()),
        &values("train.nll_class_tr"),
        1e-5,
    );
    // cat_ce and the loss carry the logits' float32 floor (see golden_mini.rs): 2.5e-3 abs.
    for (name, ours) in [
        ("train.cat_ce_tr", losses.cat_ce.clone().mean()),
        ("train.loss", loss.clone()),
    ] {
        let err = max_abs_err(&host(ours), &values(name));
        println!("{name:<48} max abs err {err:.3e} (tolerance 2.5e-3)");
        assert!(err <= 2.5e-3, "{name} abs err {err:.3e}");
    }
    assert_eq!(host(losses.correct.clone().mean()), values("train.acc_tr"));

    let grads = loss.backward();
    let grads = parameter_gradients(&model, &grads)
        .into_iter()
        .map(|(path, data)| (path, data_to_f64(data)))
        .collect();
    TrainPass { model, grads }
}

/// Compares every golden gradient; `tolerance(reference key)` gives the bound.
fn compare_gradients(pass: &TrainPass, tolerance: impl Fn(&str) -> f64) {
    let table = key_table(&mini_config());
    let mut compared = 0;
    for row in table.iter().filter(|row| row.role == Role::Trainable) {
        let key = format!("grad.{}", row.reference);
        let grad = pass
            .grads
            .get(&row.ours)
            .unwrap_or_else(|| panic!("no gradient for {} ({})", row.ours, row.reference));
        assert_rel(&key, grad, &values(&key), tolerance(&row.reference));
        compared += 1;
    }
    let golden_grads = golden().keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(compared, golden_grads, "every golden gradient is compared");
    // Fixed tensors (permutations, Haar, DCT, unshuffle kernels) get no gradient.
    for row in table
        .iter()
        .filter(|row| matches!(row.role, Role::Fixed(_)))
    {
        assert!(
            !pass.grads.contains_key(&row.ours),
            "fixed tensor {} has a gradient",
            row.ours
        );
    }
}

/// BatchNorm running statistics after the single train-mode pass (momentum 0.05,
/// unbiased variance).
fn compare_batch_norm_statistics(model: &GenerativeClassifier<B>) {
    let table = key_table(&mini_config());
    let state: HashMap<String, Vec<f64>> = parameter_values(model)
        .into_iter()
        .map(|(path, data)| (path, data_to_f64(data)))
        .collect();
    let mut checked = 0;
    for row in table
        .iter()
        .filter(|row| matches!(row.role, Role::Buffer | Role::Counter))
    {
        let key = format!("train.bn_after.{}", row.reference);
        if row.role == Role::Counter {
            assert_eq!(state[&row.ours], values(&key), "{key}");
        } else {
            // Means and variances of up to 12 544 float32 values, blended with the old
            // statistics: 1e-6 relative.
            assert_rel(&key, &state[&row.ours], &values(&key), 1e-6);
        }
        checked += 1;
    }
    let golden_bn = golden()
        .keys()
        .filter(|k| k.starts_with("train.bn_after."))
        .count();
    assert_eq!(
        checked, golden_bn,
        "every golden BatchNorm statistic is compared"
    );
}

#[test]
fn train_mode_pass_matches_the_reference_in_float64() {
    let pass = train_pass(DType::F64);
    // The target for every gradient. (The golden gradients are float32; the
    // observed differences are ~1e-5.)
    compare_gradients(&pass, |_| 1e-3);
    compare_batch_norm_statistics(&pass.model);
}

#[test]
fn train_mode_pass_matches_the_reference_in_float32() {
    let pass = train_pass(DType::F32);
    compare_gradients(&pass, |key| {
        let downstream_of_kink = key.starts_with("inn.module_list.8.") || key.starts_with("mu");
        // Node 8 and the head: the 1e-3. Upstream of the kink: 1e-1 (observed
        // up to 6e-2), see the module docs.
        if downstream_of_kink { 1e-3 } else { 1e-1 }
    });
    compare_batch_norm_statistics(&pass.model);
}

#[test]
fn the_float32_kink_is_real() {
    // Run nodes 1-6 in train mode in float64, then node 7's subnet up to bn_expand: the
    // unit named in the module docs sits within 2e-6 of the ReLU's kink.
    let device = Default::default();
    let model = mini(DType::F64);
    let f = &model.flow;
    let m = Mode::Train;
    let x: Tensor<B, 4> = tensor("x", &device);
    let (x, _) = f.entry.forward(x.cast(DType::F64), m);
    let (x, _) = f.haar.forward(x, m);
    let (x, _) = f.entry_1x1.forward(x, m);
    let (x, _) = f.stages[0].blocks[0].forward(x, m);
    let (x, _) = f.stages[1].down.as_ref().unwrap().forward(x, m);
    let (x, _) = f.stages[1].blocks[0].forward(x, m);
    let s = &f.stages[2].blocks[0].subnet;
    let h = relu(s.bn_in.forward(x.narrow(1, 0, 96), m));
    let h = relu(s.bn_reduce.forward(s.conv_reduce.forward(h), m));
    let h = relu(s.bn_spatial.forward(s.conv_spatial.forward(h), m));
    let pre = s.bn_expand.forward(s.conv_expand.forward(h), m);
    let unit: f64 = data_to_f64(
        pre.narrow(0, 0, 1)
            .narrow(1, 55, 1)
            .narrow(2, 3, 1)
            .narrow(3, 8, 1)
            .into_data(),
    )[0];
    println!("node 7 bn_expand[0, 55, 3, 8] = {unit:.3e}");
    assert!(
        unit < 0.0 && unit > -2e-6,
        "the kink unit moved: {unit:.3e}"
    );
}
