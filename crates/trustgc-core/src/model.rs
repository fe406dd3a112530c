//! [`GenerativeClassifier`]: the flow and its Gaussian head.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;

use crate::config::{ConfigError, GcConfig};
use crate::flow::{Flow, FlowOutput};
use crate::head::{ClassNorms, GaussianHead, GaussianHeadConfig, Losses, losses};
use crate::layers::{BatchNorms, Mode};

/// A generative classifier: an invertible network `x ↦ z` and class-conditional
/// Gaussians `N(μ_y, I)` on `z`.
///
/// Built from a [`GcConfig`] (fresh weights) or loaded by the `trustgc` crate (the released
/// checkpoints, model folders, the shipped model). For images, class names and verdicts
/// use `trustgc::Classifier`, which wraps this type.
///
/// ```
/// use burn::backend::Flex;
/// use burn::tensor::{Distribution, Tensor};
/// use trustgc_core::{GcConfig, GenerativeClassifier, Mode};
///
/// let mut config = GcConfig::mini(); // 3x112x112 inputs, 10 classes
/// config.input_shape = [3, 32, 32];
/// config.n_loss_dims = 64;
/// let device = Default::default();
/// let model = GenerativeClassifier::<Flex>::new(&config, &device)?;
///
/// let x = Tensor::<Flex, 4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
/// let out = model.try_forward(x.clone(), Mode::Eval)?;
/// assert_eq!(out.class_log_likelihoods().dims(), [2, 10]); // log p(x|y), nats
/// assert_eq!(out.log_posterior(None).dims(), [2, 10]); // log p(y|x)
///
/// // The network is invertible: the latents give the input back.
/// let (x_back, _) = model.inverse(out.z_fc, out.z_conv);
/// assert!((x_back - x).abs().max().into_scalar() < 1e-3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Module, Debug)]
pub struct GenerativeClassifier<B: Backend> {
    /// The invertible network.
    pub flow: Flow<B>,
    /// The class means.
    pub head: GaussianHead<B>,
    /// `D`, the latent dimension.
    pub total_dims: usize,
    /// The input shape `[channels, height, width]` the model takes.
    pub input_shape: [usize; 3],
}

/// An input the model cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the model takes inputs of shape [batch, {}, {}, {}], got {found:?}", expected[0], expected[1], expected[2])]
pub struct InputShapeError {
    /// `[channels, height, width]` the model takes.
    pub expected: [usize; 3],
    /// The shape given.
    pub found: Vec<usize>,
}

/// Everything a forward pass gives for a batch.
#[derive(Debug, Clone)]
pub struct GcOutput<B: Backend> {
    /// `[batch, L]`.
    pub z_fc: Tensor<B, 2>,
    /// `[batch, D − L]`.
    pub z_conv: Tensor<B, 2>,
    /// `log |det ∂z/∂x|`, `[batch]` (reference convention, see the DCT quirk).
    pub log_det: Tensor<B, 1>,
    /// Squared distances to the class means, `[batch, classes]`.
    pub distances: Tensor<B, 2>,
    /// `D`.
    pub total_dims: usize,
}

impl<B: Backend> GcOutput<B> {
    /// The reference's `logits_tr`: `−½ d`, `[batch, classes]`.
    pub fn logits(&self) -> Tensor<B, 2> {
        self.distances.clone().mul_scalar(-0.5)
    }

    /// `log p(y | x)` with a uniform prior, or with `log_prior` `[classes]` added to the
    /// logits first. `[batch, classes]`.
    pub fn log_posterior(&self, log_prior: Option<Tensor<B, 1>>) -> Tensor<B, 2> {
        let logits = self.logits();
        let logits = match log_prior {
            Some(prior) => logits.add(prior.unsqueeze_dim(0)),
            None => logits,
        };
        log_softmax(logits, 1)
    }

    /// `log p(x | y) = −½ d_y + log|det J| − (D/2) ln 2π` in nats, in the network's input
    /// space, `[batch, classes]`.
    pub fn class_log_likelihoods(&self) -> Tensor<B, 2> {
        let constant = 0.5 * self.total_dims as f64 * (2.0 * std::f64::consts::PI).ln();
        self.logits()
            .add(self.log_det.clone().unsqueeze_dim(1))
            .sub_scalar(constant)
    }

    /// The reference's per-sample losses for `targets` `[batch, classes]` (one-hot or
    /// smoothed).
    pub fn losses(&self, targets: Tensor<B, 2>) -> Losses<B> {
        losses(
            self.distances.clone(),
            self.log_det.clone(),
            targets,
            self.total_dims,
        )
    }
}

impl<B: Backend> GenerativeClassifier<B> {
    /// Builds a freshly initialized model of `config` (reference initialization).
    ///
    /// # Errors
    /// [`ConfigError`] naming the field when the config cannot work; nothing is allocated
    /// then.
    pub fn new(config: &GcConfig, device: &B::Device) -> Result<Self, ConfigError> {
        Ok(Self {
            flow: Flow::new(config, device)?,
            head: GaussianHeadConfig::of(config).init(device),
            total_dims: config.total_dims(),
            input_shape: config.input_shape,
        })
    }

    /// Checks that `dims` is `[batch ≥ 1, channels, height, width]` as the model takes.
    pub fn check_input(&self, dims: &[usize]) -> Result<(), InputShapeError> {
        if dims.len() == 4 && dims[0] > 0 && dims[1..] == self.input_shape {
            Ok(())
        } else {
            Err(InputShapeError {
                expected: self.input_shape,
                found: dims.to_vec(),
            })
        }
    }

    /// [`forward`](Self::forward) after [`check_input`](Self::check_input): a wrongly
    /// shaped input is an error instead of a panic inside the backend.
    pub fn try_forward(&self, x: Tensor<B, 4>, mode: Mode) -> Result<GcOutput<B>, InputShapeError> {
        self.check_input(&x.dims())?;
        Ok(self.forward(x, mode))
    }

    /// Runs the model.
    ///
    /// # Shapes
    /// - `x`: `[batch, C, H, W]`, normalized as the model expects; another shape panics in
    ///   the backend (use [`try_forward`](Self::try_forward) for a typed error)
    ///
    /// # Returns
    /// Latents, log-dets and class distances; see [`GcOutput`] for what follows from them.
    pub fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> GcOutput<B> {
        let FlowOutput {
            z_fc,
            z_conv,
            log_det,
        } = self.flow.forward(x, mode);
        let distances = self.head.distances(z_fc.clone(), z_conv.clone());
        self.output(z_fc, z_conv, log_det, distances)
    }

    /// [`forward`](Self::forward) in eval mode with precomputed class norms (inference:
    /// skips the `k x k x conv_dims` Gram product of a low-rank head).
    pub fn forward_with_norms(&self, x: Tensor<B, 4>, norms: &ClassNorms<B>) -> GcOutput<B> {
        let FlowOutput {
            z_fc,
            z_conv,
            log_det,
        } = self.flow.forward(x, Mode::Eval);
        let distances = self
            .head
            .distances_with_norms(z_fc.clone(), z_conv.clone(), norms);
        self.output(z_fc, z_conv, log_det, distances)
    }

    fn output(
        &self,
        z_fc: Tensor<B, 2>,
        z_conv: Tensor<B, 2>,
        log_det: Tensor<B, 1>,
        distances: Tensor<B, 2>,
    ) -> GcOutput<B> {
        GcOutput {
            z_fc,
            z_conv,
            log_det,
            distances,
            total_dims: self.total_dims,
        }
    }

    /// Re-estimates every BatchNorm's running statistics as the plain average of the batch
    /// statistics over `batches` (what produced the reference's `.avg` checkpoints):
    /// PyTorch's `reset_running_stats()`, `momentum = None` and a train-mode forward per
    /// batch. Parameters are untouched; the momentum is restored afterwards.
    ///
    /// # Returns
    /// The number of batches averaged.
    pub fn average_batch_norm_statistics<I>(&mut self, batches: I) -> usize
    where
        I: IntoIterator<Item = Tensor<B, 4>>,
    {
        let mut momenta = Vec::new();
        self.flow.for_each_batch_norm(&mut |bn| {
            momenta.push(bn.momentum);
            bn.momentum = None;
            bn.reset_running_stats();
        });
        let mut count = 0;
        for x in batches {
            // Only the statistics matter; the outputs are dropped.
            let _ = self.flow.forward(x, Mode::Train);
            count += 1;
        }
        let mut momenta = momenta.into_iter();
        self.flow
            .for_each_batch_norm(&mut |bn| bn.momentum = momenta.next().flatten());
        count
    }

    /// Maps latents back to inputs (eval mode).
    ///
    /// # Shapes
    /// - `z_fc`: `[batch, L]`, `z_conv`: `[batch, D − L]`
    ///
    /// # Returns
    /// `(x [batch, C, H, W], log_det_inv [batch])`.
    pub fn inverse(
        &self,
        z_fc: Tensor<B, 2>,
        z_conv: Tensor<B, 2>,
    ) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let inverse = self.flow.inverse(z_fc, z_conv, Mode::Eval);
        (inverse.x, inverse.log_det)
    }
}
