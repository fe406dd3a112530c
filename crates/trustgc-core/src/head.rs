//! The class-conditional Gaussian head: one unit-covariance Gaussian per class on the
//! latent, the reference's class means and its losses.
//!
//! # Notation
//! `z = (z_fc, z_conv)` is the latent, `D` its dimension. Class `y` has mean
//! `μ_y = (mu_fc[y], mu_conv[y])` with `mu_conv = mu_t · mu_m` (rank `k`) or a full matrix.
//! The squared distance is `d_y = ‖z_fc − mu_fc[y]‖² + ‖z_conv − mu_conv[y]‖²`, computed by
//! expansion `−2 z·μ + ‖z‖² + ‖μ‖²` per part, as the reference does.
//!
//! The reference materializes `mu_conv` `[classes, conv_dims]` on every forward
//! (37.7 GFLOP and 590 MB for ImageNet). Here `z_conv·mu_conv[y] = ((z_conv mu_mᵀ) mu_tᵀ)_y`
//! and `‖mu_conv[y]‖² = (mu_t G mu_tᵀ)_yy` with the `k x k` Gram matrix `G = mu_m mu_mᵀ`, so
//! nothing of size `classes x conv_dims` is ever built; [`ClassNorms`] caches the norms
//! for inference.
//!
//! Derived quantities (per sample):
//! - `logits = −½ d` (the reference's `logits_tr`);
//! - `log p(y|x) = log_softmax(logits + log prior)` (uniform prior unless given);
//! - `log p(x|y) = −½ d_y + log|det J| − (D/2) ln 2π` (nats, input space);
//! - `nll_joint = (−logsumexp_y(−½ d_y) − log|det J|) / D` (no 2π, no class prior: the
//!   reference's `nll_joint_tr`);
//! - `nll_class = (½ Σ_y t_y d_y − log|det J|) / D` for targets `t`;
//! - `cat_ce = −Σ_y t_y log_softmax(−½ d)_y`.

use burn::config::Config;
use burn::module::{Initializer, Module, Param, ParamId};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::config::GcConfig;
use crate::ops::sum_rows;

/// Class means of the latent.
#[derive(Module, Debug)]
pub struct GaussianHead<B: Backend> {
    /// Means of the loss dimensions, `[classes, n_loss_dims]` (the reference's `mu`,
    /// stored there as `[1, classes, n_loss_dims]`).
    pub mu_fc: Param<Tensor<B, 2>>,
    /// Low-rank factor `[classes, k]` of the conv means (`mu_t`), when `k > 0`.
    pub mu_t: Option<Param<Tensor<B, 2>>>,
    /// Low-rank factor `[k, conv_dims]` of the conv means (`mu_m`), when `k > 0`.
    pub mu_m: Option<Param<Tensor<B, 2>>>,
    /// Full conv means `[classes, conv_dims]` (`mu_conv`), when `k = 0`.
    pub mu_conv: Option<Param<Tensor<B, 2>>>,
}

/// `‖μ_y‖²` per class, split by latent part; precompute once for inference with
/// [`GaussianHead::class_norms`].
#[derive(Debug, Clone)]
pub struct ClassNorms<B: Backend> {
    /// `‖mu_fc[y]‖²`, `[classes]`.
    pub fc: Tensor<B, 1>,
    /// `‖mu_conv[y]‖²`, `[classes]`.
    pub conv: Tensor<B, 1>,
}

/// The reference's `mu_init`: scale of the initial one-hot pattern of `mu_fc`.
pub const MU_INIT: f64 = 3.5;
/// The reference's `mu_conv_init`: standard deviation of the initial `mu_t`, `mu_m`.
pub const MU_CONV_INIT: f64 = 0.01;

/// Configuration of a [`GaussianHead`].
#[derive(Config, Debug)]
pub struct GaussianHeadConfig {
    /// Number of classes `K`.
    pub n_classes: usize,
    /// Loss dimensions `L` (`z_fc`).
    pub n_loss_dims: usize,
    /// Dimensions of `z_conv`, `D − L`.
    pub conv_dims: usize,
    /// Rank `k` of `mu_conv = mu_t · mu_m`; 0 keeps a full `mu_conv`.
    pub mu_low_rank_k: usize,
    /// Scale of the initial one-hot pattern of `mu_fc` (the reference's `mu_init`).
    #[config(default = "MU_INIT")]
    pub mu_init: f64,
    /// Standard deviation of the initial conv means (the reference's `mu_conv_init`).
    #[config(default = "MU_CONV_INIT")]
    pub mu_conv_init: f64,
}

impl GaussianHeadConfig {
    /// The head of a model of `config`, with the reference's initial scales.
    pub fn of(config: &GcConfig) -> Self {
        Self::new(
            config.n_classes,
            config.n_loss_dims,
            config.conv_dims(),
            config.mu_low_rank_k,
        )
    }

    /// Builds the head as the reference initializes it: `mu_fc` repeats
    /// `mu_init / sqrt(2·(L / K)) · I_K` along the loss dimensions; the conv means are
    /// small Gaussian noise.
    pub fn init<B: Backend>(&self, device: &B::Device) -> GaussianHead<B> {
        let (classes, loss) = (self.n_classes, self.n_loss_dims);
        let repeats = loss / classes;
        let mut mu_fc = vec![0.0f32; classes * loss];
        if repeats > 0 {
            let scale = (self.mu_init / (2.0 * repeats as f64).sqrt()) as f32;
            for r in 0..repeats {
                for c in 0..classes {
                    mu_fc[c * loss + r * classes + c] = scale;
                }
            }
        }
        let mu_fc = Tensor::<B, 2>::from_data(TensorData::new(mu_fc, [classes, loss]), device);
        let normal = Initializer::Normal {
            mean: 0.0,
            std: self.mu_conv_init,
        };
        let (k, conv) = (self.mu_low_rank_k, self.conv_dims);
        let (mu_t, mu_m, mu_conv) = if k > 0 {
            (
                Some(normal.init([classes, k], device)),
                Some(normal.init([k, conv], device)),
                None,
            )
        } else {
            (None, None, Some(normal.init([classes, conv], device)))
        };
        GaussianHead {
            mu_fc: Param::initialized(ParamId::new(), mu_fc.require_grad()),
            mu_t,
            mu_m,
            mu_conv,
        }
    }
}

impl<B: Backend> GaussianHead<B> {
    /// `‖μ_y‖²` of both parts, without building `mu_conv` when it is low-rank.
    pub fn class_norms(&self) -> ClassNorms<B> {
        let fc = sum_rows(self.mu_fc.val().square()).squeeze_dim(1);
        let conv = match (&self.mu_t, &self.mu_m, &self.mu_conv) {
            (Some(mu_t), Some(mu_m), _) => {
                let (mu_t, mu_m) = (mu_t.val(), mu_m.val());
                let [classes, k] = mu_t.dims();
                if classes < k {
                    // Fewer classes than the rank (a fine-tuned head): the `classes` rows
                    // of `mu_conv` cost `classes·k·conv` multiply-adds, the Gram matrix
                    // `k·k·conv`.
                    sum_rows(mu_t.matmul(mu_m).square()).squeeze_dim(1)
                } else {
                    let gram = mu_m.clone().matmul(mu_m.transpose());
                    mu_t.clone()
                        .matmul(gram)
                        .mul(mu_t)
                        .sum_dim(1)
                        .squeeze_dim(1)
                }
            }
            (_, _, Some(mu_conv)) => sum_rows(mu_conv.val().square()).squeeze_dim(1),
            _ => unreachable!("a head has either mu_t and mu_m or mu_conv"),
        };
        ClassNorms { fc, conv }
    }

    /// `z_conv · mu_conv[y]` for all classes, `[batch, classes]`.
    fn conv_dot(&self, z_conv: Tensor<B, 2>) -> Tensor<B, 2> {
        match (&self.mu_t, &self.mu_m, &self.mu_conv) {
            (Some(mu_t), Some(mu_m), _) => {
                let (mu_t, mu_m) = (mu_t.val(), mu_m.val());
                let [batch, conv] = z_conv.dims();
                let [classes, k] = mu_t.dims();
                // Multiply-adds of `(z mu_mᵀ) mu_tᵀ` and of `z (mu_t mu_m)ᵀ`: the cheaper
                // one is taken (the second only pays off for few classes and large
                // batches, as when training a fine-tuned head on cached latents).
                let low_rank = batch * conv * k + batch * k * classes;
                let rows = classes * k * conv + batch * conv * classes;
                if rows < low_rank {
                    z_conv.matmul(mu_t.matmul(mu_m).transpose())
                } else {
                    z_conv.matmul(mu_m.transpose()).matmul(mu_t.transpose())
                }
            }
            (_, _, Some(mu_conv)) => z_conv.matmul(mu_conv.val().transpose()),
            _ => unreachable!("a head has either mu_t and mu_m or mu_conv"),
        }
    }

    /// Squared distances `d` of each sample to each class mean.
    ///
    /// # Shapes
    /// - `z_fc`: `[batch, L]`, `z_conv`: `[batch, D − L]`
    /// - output: `[batch, classes]`
    pub fn distances(&self, z_fc: Tensor<B, 2>, z_conv: Tensor<B, 2>) -> Tensor<B, 2> {
        self.distances_with_norms(z_fc, z_conv, &self.class_norms())
    }

    /// [`distances`](Self::distances) with precomputed class norms (inference).
    pub fn distances_with_norms(
        &self,
        z_fc: Tensor<B, 2>,
        z_conv: Tensor<B, 2>,
        norms: &ClassNorms<B>,
    ) -> Tensor<B, 2> {
        let fc = z_fc
            .clone()
            .matmul(self.mu_fc.val().transpose())
            .mul_scalar(-2.0)
            .add(sum_rows(z_fc.square()))
            .add(norms.fc.clone().unsqueeze_dim(0));
        let conv = self
            .conv_dot(z_conv.clone())
            .mul_scalar(-2.0)
            .add(sum_rows(z_conv.square()))
            .add(norms.conv.clone().unsqueeze_dim(0));
        fc.add(conv)
    }

    /// `mu_conv = mu_t · mu_m` materialized, `[classes, conv_dims]`: what the reference
    /// computes on every forward. For inspection and tests only: it is the 590 MB tensor
    /// the rest of this crate avoids.
    pub fn materialize_mu_conv(&self) -> Tensor<B, 2> {
        match (&self.mu_t, &self.mu_m, &self.mu_conv) {
            (Some(mu_t), Some(mu_m), _) => mu_t.val().matmul(mu_m.val()),
            (_, _, Some(mu_conv)) => mu_conv.val(),
            _ => unreachable!("a head has either mu_t and mu_m or mu_conv"),
        }
    }
}

/// `logsumexp` over dim 1 of `[batch, n]`, shape `[batch]` (max-shifted).
pub fn logsumexp<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 1> {
    let max = x.clone().max_dim(1).detach();
    x.sub(max.clone())
        .exp()
        .sum_dim(1)
        .log()
        .add(max)
        .squeeze_dim(1)
}

/// The training objective's weight on the class term, the IB-INN's β.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Beta {
    /// Finite β ≥ 0; β = 0 is the pure generative objective.
    Finite(f64),
    /// β = ∞: pure cross-entropy (a discriminative classifier).
    Infinity,
}

impl Beta {
    /// `(weight of nll_joint, weight of cat_ce)`: `(1/(1+β), β/(1+β))`, which is `(1, 0)`
    /// for β = 0, and `(0, 1)` for β = ∞.
    pub fn weights(self) -> (f64, f64) {
        match self {
            Beta::Infinity => (0.0, 1.0),
            Beta::Finite(beta) => (1.0 / (1.0 + beta), beta / (1.0 + beta)),
        }
    }
}

/// Label-smoothed targets: `onehot · (1 − ε) + ε / classes` (the reference uses ε = 0.05).
pub fn smoothed_targets<B: Backend>(
    labels: &[usize],
    classes: usize,
    smoothing: f64,
    device: &B::Device,
) -> Tensor<B, 2> {
    let low = smoothing / classes as f64;
    let high = 1.0 - smoothing + low;
    let mut data = vec![low as f32; labels.len() * classes];
    for (i, &label) in labels.iter().enumerate() {
        data[i * classes + label] = high as f32;
    }
    Tensor::from_data(TensorData::new(data, [labels.len(), classes]), device)
}

/// Per-sample losses of a batch (the reference's `*_tr` before the batch mean).
#[derive(Debug, Clone)]
pub struct Losses<B: Backend> {
    /// `nll_joint` per sample, `[batch]` (nats per dimension).
    pub nll_joint: Tensor<B, 1>,
    /// `nll_class` per sample, `[batch]` (nats per dimension).
    pub nll_class: Tensor<B, 1>,
    /// `cat_ce` per sample, `[batch]` (nats).
    pub cat_ce: Tensor<B, 1>,
    /// 1 where `argmax targets = argmax logits`, else 0, `[batch]`.
    pub correct: Tensor<B, 1>,
}

impl<B: Backend> Losses<B> {
    /// The IB training objective on the batch means:
    /// `w_nll · mean(nll_joint) + w_ce · mean(cat_ce)` with weights from [`Beta::weights`].
    pub fn objective(&self, beta: Beta) -> Tensor<B, 1> {
        let (w_nll, w_ce) = beta.weights();
        match beta {
            Beta::Infinity => self.cat_ce.clone().mean(),
            Beta::Finite(0.0) => self.nll_joint.clone().mean(),
            _ => self
                .nll_joint
                .clone()
                .mean()
                .mul_scalar(w_nll)
                .add(self.cat_ce.clone().mean().mul_scalar(w_ce)),
        }
    }
}

/// Computes [`Losses`] from distances, log-dets and (soft) targets.
///
/// # Shapes
/// - `distances`: `[batch, classes]`, `log_det`: `[batch]`, `targets`: `[batch, classes]`
pub fn losses<B: Backend>(
    distances: Tensor<B, 2>,
    log_det: Tensor<B, 1>,
    targets: Tensor<B, 2>,
    total_dims: usize,
) -> Losses<B> {
    let d = total_dims as f64;
    let logits = distances.clone().mul_scalar(-0.5);
    let nll_joint = logsumexp(logits.clone())
        .neg()
        .sub(log_det.clone())
        .div_scalar(d);
    let nll_class = distances
        .mul(targets.clone())
        .sum_dim(1)
        .squeeze_dim(1)
        .mul_scalar(0.5)
        .sub(log_det)
        .div_scalar(d);
    let cat_ce = log_softmax(logits.clone(), 1)
        .mul(targets.clone())
        .sum_dim(1)
        .squeeze_dim(1)
        .neg();
    let correct = targets
        .argmax(1)
        .equal(logits.argmax(1))
        .float()
        .squeeze_dim(1);
    Losses {
        nll_joint,
        nll_class,
        cat_ce,
        correct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn beta_weights_cover_zero_finite_and_infinity() {
        assert_eq!(Beta::Finite(0.0).weights(), (1.0, 0.0));
        assert_eq!(Beta::Finite(1.0).weights(), (0.5, 0.5));
        assert_eq!(Beta::Finite(8.0).weights(), (1.0 / 9.0, 8.0 / 9.0));
        assert_eq!(Beta::Infinity.weights(), (0.0, 1.0));
    }

    #[test]
    fn objective_picks_the_terms_beta_asks_for() {
        let device = Default::default();
        let distances = Tensor::<Flex, 2>::from_floats([[1.0, 4.0, 9.0], [2.0, 0.5, 3.0]], &device);
        let log_det = Tensor::<Flex, 1>::from_floats([-3.0, -1.0], &device);
        let targets = smoothed_targets::<Flex>(&[0, 1], 3, 0.05, &device);
        let l = losses(distances, log_det, targets, 12);
        let value = |t: Tensor<Flex, 1>| t.into_scalar();
        let nll = value(l.nll_joint.clone().mean());
        let ce = value(l.cat_ce.clone().mean());
        assert_eq!(value(l.objective(Beta::Finite(0.0))), nll);
        assert_eq!(value(l.objective(Beta::Infinity)), ce);
        let mixed = value(l.objective(Beta::Finite(3.0)));
        assert!((mixed - (0.25 * nll + 0.75 * ce)).abs() < 1e-6);
        // Both samples are closest to their labels' means.
        assert_eq!(value(l.correct.mean()), 1.0);
    }

    #[test]
    fn smoothed_targets_sum_to_one() {
        let t = smoothed_targets::<Flex>(&[2, 0], 4, 0.05, &Default::default());
        let v = t.into_data().to_vec::<f32>().unwrap();
        assert!((v[2] - (0.95 + 0.0125)).abs() < 1e-7 && (v[0] - 0.0125).abs() < 1e-7);
        assert!((v[..4].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    /// Distances of a low-rank head by each of its computation paths (few classes or many,
    /// one sample or a large batch) against `‖z − μ_y‖²` computed directly.
    #[test]
    fn low_rank_distances_agree_on_every_path() {
        let device = Default::default();
        for (classes, k, batch) in [(3, 8, 1), (3, 8, 64), (12, 4, 1), (12, 4, 64)] {
            let head = GaussianHeadConfig::new(classes, 6, 40, k)
                .with_mu_conv_init(0.5)
                .init::<Flex>(&device);
            let dist = burn::tensor::Distribution::Normal(0.0, 1.0);
            let z_fc = Tensor::<Flex, 2>::random([batch, 6], dist, &device);
            let z_conv = Tensor::<Flex, 2>::random([batch, 40], dist, &device);
            let got = head.distances(z_fc.clone(), z_conv.clone());
            let mu_conv = head.materialize_mu_conv();
            let mut want = Vec::new();
            for i in 0..batch {
                let zf = z_fc.clone().slice([i..i + 1, 0..6]);
                let zc = z_conv.clone().slice([i..i + 1, 0..40]);
                for y in 0..classes {
                    let df = zf.clone().sub(head.mu_fc.val().slice([y..y + 1, 0..6]));
                    let dc = zc.clone().sub(mu_conv.clone().slice([y..y + 1, 0..40]));
                    want.push(df.square().sum().into_scalar() + dc.square().sum().into_scalar());
                }
            }
            let got = got.into_data().to_vec::<f32>().unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                    "K {classes}, k {k}, batch {batch}: {g} vs {w}"
                );
            }
        }
    }
}
