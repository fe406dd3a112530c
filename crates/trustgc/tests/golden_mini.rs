//! Parity with the reference implementation on the golden mini model (eval mode).
//!
//! Tolerances (relative error ‖a − b‖/‖b‖ unless said otherwise) come from the issue's
//! targets and golden/README.md's float32-vs-float64 gaps, which are the floor any
//! float32 implementation can reach: z 1.4e-6 absolute on values of order 1, log_jac
//! 0.012 on 1.5e5 (8e-8 relative), logits 1.2e-3 on ~1e4, inverse 2e-4 absolute.

mod common;

use burn::backend::Flex;
use burn::tensor::{DType, Tensor, TensorData};
use common::*;
use trustgc::core::params::cast_floats;
use trustgc::weights::reference::load_reference_safetensors;
use trustgc::{GenerativeClassifier, Mode};

type B = Flex;

fn mini_model() -> GenerativeClassifier<B> {
    load_reference_safetensors::<B>(
        &golden_path("mini/mini.safetensors"),
        &mini_config(),
        &Default::default(),
    )
    .expect("mini.safetensors loads")
}

fn row0(t: &Tensor<B, 2>) -> Vec<f64> {
    let n = t.dims()[1];
    host(t.clone().narrow(0, 0, 1).reshape([n]))
}

#[test]
fn every_node_matches_the_reference() {
    let device = Default::default();
    let model = mini_model();
    let x: Tensor<B, 4> = tensor("x", &device);
    let (out, trace) = model.flow.forward_traced(x, Mode::Eval);

    let mut checked = 0;
    for node in &trace {
        for (k, output) in node.outputs.iter().enumerate() {
            let key = format!("inter.node{:02}.out{k}", node.index);
            // Intermediate activations are float32 results of ~10 layers; 1e-5 is the
            // issue's latent target and 7x the float32/float64 gap of z.
            assert_rel(&key, &row0(output), &values(&key), 1e-5);
            checked += 1;
        }
        for (name, a) in &node.subnet_outputs {
            let key = format!("sub.node{:02}.{name}", node.index);
            assert_rel(&key, &row0(a), &values(&key), 1e-5);
            checked += 1;
        }
        let key = format!("jac.node{:02}", node.index);
        let expected = values(&key);
        let actual = host(node.log_det.clone());
        if expected.iter().all(|v| *v == 0.0) {
            // PermuteRandom and Split contribute exactly zero.
            assert_eq!(actual, expected, "{key}");
        } else {
            // Per-node log-dets are sums of up to 1e5 float32 terms; the target
            // for log-dets is 1e-6 relative.
            assert_rel(&key, &actual, &expected, 1e-6);
        }
        checked += 1;
    }
    // 11 nodes with a module: outputs (12), subnet outputs (10), log-dets (11).
    assert_eq!(checked, 33, "trace covers every golden node key");

    assert_rel("z_fc", &host(out.z_fc), &values("z_fc"), 1e-5);
    assert_rel("z_conv", &host(out.z_conv), &values("z_conv"), 1e-5);
    assert_rel("log_jac", &host(out.log_det), &values("log_jac"), 1e-6);
}

#[test]
fn head_outputs_and_losses_match_the_reference() {
    let device = Default::default();
    let model = mini_model();
    let out = model.forward(tensor("x", &device), Mode::Eval);

    assert_rel(
        "cluster_distances",
        &host(out.distances.clone()),
        &values("cluster_distances"),
        1e-5,
    );
    assert_rel("logits", &host(out.logits()), &values("logits"), 1e-5);
    // Posteriors depend on logit *differences*. The logits' float32 floor is 1.2e-3
    // absolute (golden/README.md), so two float32 implementations can differ by twice
    // that in a log-posterior: 2.5e-3 absolute, for log-posteriors, posteriors and cat_ce.
    let floor = 2.5e-3;
    let assert_abs = |name: &str, actual: &[f64], expected: &[f64]| {
        let err = max_abs_err(actual, expected);
        println!("{name:<48} max abs err {err:.3e} (tolerance {floor:.1e})");
        assert!(err <= floor, "{name}: max abs err {err:.3e}");
    };
    assert_abs(
        "log_posterior",
        &host(out.log_posterior(None)),
        &values("log_posterior"),
    );
    assert_abs(
        "posterior",
        &host(out.log_posterior(None).exp()),
        &values("posterior"),
    );

    let losses = out.losses(tensor("y_onehot", &device));
    // nll_joint and nll_class are dominated by log|det J|/D; the logit error above is
    // divided by D = 37 632 there, so the 1e-5 relative target holds.
    assert_rel(
        "nll_joint_per_sample",
        &host(losses.nll_joint.clone()),
        &values("nll_joint_per_sample"),
        1e-5,
    );
    assert_rel(
        "nll_class_per_sample",
        &host(losses.nll_class.clone()),
        &values("nll_class_per_sample"),
        1e-5,
    );
    assert_rel(
        "nll_joint_tr",
        &host(losses.nll_joint.clone().mean()),
        &values("nll_joint_tr"),
        1e-5,
    );
    assert_rel(
        "nll_class_tr",
        &host(losses.nll_class.clone().mean()),
        &values("nll_class_tr"),
        1e-5,
    );
    assert_abs(
        "cat_ce_per_sample",
        &host(losses.cat_ce.clone()),
        &values("cat_ce_per_sample"),
    );
    assert_abs(
        "cat_ce_tr",
        &host(losses.cat_ce.clone().mean()),
        &values("cat_ce_tr"),
    );
    // Accuracy is a count: exact.
    assert_eq!(host(losses.correct.mean()), values("acc_tr"));

    // The low-rank head never builds mu_conv; materialized for this check only.
    assert_rel(
        "mu_conv",
        &host(model.head.materialize_mu_conv()),
        &values("mu_conv"),
        1e-6,
    );
}

#[test]
fn inverse_matches_the_reference() {
    let device = Default::default();
    let model = mini_model();
    let (x_rec, log_det_rev) = model.inverse(tensor("z_fc", &device), tensor("z_conv", &device));
    let x_rec = host(x_rec);
    // The forward contracts by e^-4 per dimension on average (log_jac ≈ -1.46e5 over 37 632
    // dimensions), so a float32 inverse amplifies rounding: the reference's own float32
    // x_rec is 2.1e-4 (max abs) away from the exact inverse of the same z, and ours 2.3e-4.
    // Against the reference's float32 x_rec we therefore allow 3e-4 max abs (the issue's
    // 1e-4 target is below this float32 floor; the float64 test below meets it) and
    // 5e-5 relative (both implementations are 2e-5 from the exact inverse).
    let err = max_abs_err(&x_rec, &values("x_rec"));
    println!("x_rec (f32) max abs err {err:.3e}");
    assert!(err <= 3e-4, "x_rec max abs err {err:.3e}");
    assert_rel("x_rec (f32)", &x_rec, &values("x_rec"), 5e-5);
    assert_rel(
        "log_jac_rev",
        &host(log_det_rev),
        &values("log_jac_rev"),
        1e-6,
    );
}

fn host64<const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    assert_eq!(t.dtype(), DType::F64);
    t.into_data().to_vec::<f64>().unwrap()
}

fn tensor64<const D: usize>(key: &str) -> Tensor<B, D> {
    Tensor::from_data(
        TensorData::new(values(key), shape(key)),
        (&Default::default(), DType::F64),
    )
}

#[test]
fn float64_forward_and_inverse_match_the_reference_float64_run() {
    // The golden `f64.*` keys are the same model run in float64 by PyTorch. Cast to
    // float64, our implementation must agree to float64 rounding: only the order of
    // additions differs, so 1e-12 relative (1e-9 absolute for the amplifying inverse) is
    // generous.
    let model = cast_floats(mini_model(), DType::F64);
    let out = model.forward(tensor64("x"), Mode::Eval);
    assert_rel(
        "f64.z_fc",
        &host64(out.z_fc.clone()),
        &values("f64.z_fc"),
        1e-12,
    );
    assert_rel(
        "f64.z_conv",
        &host64(out.z_conv.clone()),
        &values("f64.z_conv"),
        1e-12,
    );
    assert_rel(
        "f64.log_jac",
        &host64(out.log_det.clone()),
        &values("f64.log_jac"),
        1e-12,
    );
    assert_rel(
        "f64.logits",
        &host64(out.logits()),
        &values("f64.logits"),
        1e-12,
    );
    let losses = out.losses(tensor64("y_onehot"));
    assert_rel(
        "f64.nll_joint_per_sample",
        &host64(losses.nll_joint),
        &values("f64.nll_joint_per_sample"),
        1e-12,
    );

    // f64.x_rec is the float64 inverse of f64.z. (It differs from x by 6e-5 because the
    // stored DCT matrices are float32-rounded, so inv_weight·weight ≠ I exactly; we use
    // the stored matrices too, so we reproduce that.)
    let (x_rec, _) = model.inverse(tensor64("f64.z_fc"), tensor64("f64.z_conv"));
    let err = max_abs_err(&host64(x_rec), &values("f64.x_rec"));
    println!("f64.x_rec max abs err {err:.3e}");
    assert!(err <= 1e-9, "f64.x_rec max abs err {err:.3e}");
}
