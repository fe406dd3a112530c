//! [`FlopCount`]: an analytic count of the floating-point operations of a model, from its
//! [`GcConfig`] alone (no tensors are built).
//!
//! # What is counted
//! Every multiply-add of a convolution or a matrix product counts as 2 FLOPs (the
//! convention of PyTorch's `FlopCounterMode` and of most papers):
//! - a convolution with `cin` input and `cout` output channels, a `k x k` kernel and an
//!   `h' x w'` output: `2 · cin · cout · k² · h' · w'` per image (groups are not used);
//! - a product `[m, n] · [n, p]`: `2 · m · n · p`.
//!
//! The flow: the subnets' convolutions of every coupling block, and the DCT pooling
//! (two `[C·N·N, N] · [N, N]` products per image: `4 · C · N³`). The head (per image):
//! `z_fc · mu_fcᵀ` (`2 · L · K`) and `z_conv · mu_convᵀ`, which a low-rank head computes as
//! `(z_conv · mu_mᵀ) · mu_tᵀ` (`2 · (D − L) · k + 2 · k · K`), a full one as
//! `2 · (D − L) · K`. The class norms `‖μ_y‖²` do not depend on the batch: a low-rank
//! head forms them from the Gram matrix `mu_m · mu_mᵀ` (`2 · k² · (D − L) + 2 · K · k²`),
//! which training recomputes on every forward pass and inference caches
//! ([`FlopCount::class_norms`]).
//!
//! # What is not counted
//! Element-wise work: biases, BatchNorm, ReLU, the couplings' `tanh`, `exp`, products and
//! sums, act-norm, log-dets, the squared norms of the latents, the Haar transform (sums
//! and differences of pixels), softmax. Data movement: splits, concatenations, the 2x2
//! pixel-unshuffle of the downsampling couplings and the fixed channel permutations.
//!
//! The reference applies the permutations as 1x1 convolutions with a permutation matrix,
//! the unshuffle and Haar transforms as grouped stride-2 convolutions with one-hot or
//! ±1 kernels, and materializes `mu_conv = mu_t · mu_m` on every forward pass; a FLOP
//! counter run on it therefore reports more (for the ImageNet model 18.3 GFLOP in the
//! network, 4.45 of them the permutation convolutions, plus 37.7 GFLOP for `mu_conv`).
//! trustgc does these as gathers, reshapes and additions, and never builds `mu_conv`.
//!
//! # Training
//! [`FlopCount::training_step`] counts the backward pass as twice the forward's
//! convolutions and products (the gradient with respect to the input and to the weight,
//! each as costly as the forward product), so a step is 3x the forward: the common
//! estimate. It slightly over-counts: autodiff skips the input gradient of the first
//! convolution and of the fixed DCT. The optimizer's update is element-wise.
//!
//! ```
//! use trustgc_core::GcConfig;
//! use trustgc_core::flops::FlopCount;
//!
//! let count = FlopCount::of(&GcConfig::imagenet())?;
//! let gflop = count.inference(1) as f64 / 1e9;
//! assert!(gflop > 13.0 && gflop < 14.0, "{gflop}");
//! # Ok::<(), trustgc_core::ConfigError>(())
//! ```

use crate::config::{ConfigError, GcConfig};
use crate::layers::subnet::{BottleneckConfig, Conv1x1NetConfig, EntryNetConfig};
use crate::plan::BlockLayers;

/// The FLOPs of one node of the flow, per image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFlops {
    /// The node's index in the reference graph (`inn.module_list.N`), as
    /// [`BlockSpec::node`](crate::plan::BlockSpec::node).
    pub node: usize,
    /// The reference's node name.
    pub name: String,
    /// FLOPs per image.
    pub flops: u64,
}

/// The analytic FLOP count of a model; see the [module docs](self) for what is counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlopCount {
    /// The flow's nodes that compute (coupling blocks, Haar with 0, the DCT), in execution
    /// order, per image.
    pub nodes: Vec<NodeFlops>,
    /// The flow per image: the sum of [`nodes`](Self::nodes).
    pub flow: u64,
    /// The head's distances per image, with the class norms given.
    pub head: u64,
    /// The class norms `‖μ_y‖²`, once per forward pass whatever the batch size (0 for a
    /// full `mu_conv`, whose norms are sums of squares).
    pub class_norms: u64,
}

/// `a · b` with overflow as a config error.
fn mul(values: &[u64]) -> Result<u64, ConfigError> {
    values
        .iter()
        .try_fold(1u64, |acc, &v| acc.checked_mul(v))
        .ok_or(ConfigError::Overflow { what: "FLOP count" })
}

fn sum(values: &[u64]) -> Result<u64, ConfigError> {
    values
        .iter()
        .try_fold(0u64, |acc, &v| acc.checked_add(v))
        .ok_or(ConfigError::Overflow { what: "FLOP count" })
}

/// The output side of a convolution with padding `kernel / 2`.
fn conv_side(side: usize, kernel: usize, stride: usize) -> usize {
    let padding = kernel / 2;
    (side + 2 * padding - kernel) / stride + 1
}

/// `2 · cin · cout · k² · side_out²` of a convolution on a `side x side` input.
fn conv(
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    side: usize,
) -> Result<u64, ConfigError> {
    let out = conv_side(side, kernel, stride) as u64;
    mul(&[
        2,
        cin as u64,
        cout as u64,
        (kernel * kernel) as u64,
        out,
        out,
    ])
}

/// A bottleneck subnet on a `side x side` input.
fn bottleneck(config: &BottleneckConfig, side: usize) -> Result<u64, ConfigError> {
    let (cin, cout, width) = (config.in_channels, config.out_channels, config.width);
    let out = conv_side(side, 3, config.stride);
    sum(&[
        conv(cin, width, 1, 1, side)?,
        conv(width, width, 3, config.stride, side)?,
        conv(width, 4 * width, 1, 1, out)?,
        conv(4 * width, cout, 1, 1, out)?,
    ])
}

/// The strided entry subnet (`s_hi`) on a `side x side` input.
fn entry_strided(config: &EntryNetConfig, side: usize) -> Result<u64, ConfigError> {
    let (cin, cout, hidden) = (config.in_channels, config.out_channels, config.hidden);
    let out = conv_side(side, 3, 2);
    sum(&[
        conv(cin, hidden, 3, 1, side)?,
        conv(hidden, hidden, 3, 2, side)?,
        conv(hidden, cout, 1, 1, out)?,
    ])
}

/// The low-resolution entry subnet (`s_lo`) on a `side x side` input.
fn entry_low_res(config: &EntryNetConfig, side: usize) -> Result<u64, ConfigError> {
    let (cin, cout, hidden) = (config.in_channels, config.out_channels, config.hidden);
    sum(&[
        conv(cin, hidden, 3, 1, side)?,
        conv(hidden, cout, 1, 1, side)?,
    ])
}

/// The 1x1 subnet after Haar on a `side x side` input.
fn conv_1x1_net(config: &Conv1x1NetConfig, side: usize) -> Result<u64, ConfigError> {
    let (cin, cout, hidden) = (config.in_channels, config.out_channels, config.hidden);
    sum(&[
        conv(cin, hidden, 1, 1, side)?,
        conv(hidden, cout, 1, 1, side)?,
    ])
}

impl FlopCount {
    /// Counts the FLOPs of a model of `config` (validated first).
    ///
    /// # Errors
    /// [`ConfigError`] when the config is invalid, [`ConfigError::Overflow`] when a count
    /// does not fit in 64 bits.
    pub fn of(config: &GcConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let plan = config.plan();
        let mut nodes = Vec::with_capacity(plan.blocks.len() + 1);
        for block in &plan.blocks {
            let side = block.side;
            let flops = match &block.layers {
                BlockLayers::EntryDown { strided, low_res } => sum(&[
                    entry_strided(strided, side)?,
                    entry_low_res(low_res, side / 2)?,
                ])?,
                BlockLayers::Haar => 0,
                BlockLayers::Entry1x1 { subnet } => conv_1x1_net(subnet, side)?,
                BlockLayers::Down {
                    strided, low_res, ..
                } => sum(&[bottleneck(strided, side)?, bottleneck(low_res, side / 2)?])?,
                BlockLayers::Slow { subnet, .. } => bottleneck(subnet, side)?,
            };
            nodes.push(NodeFlops {
                node: block.node,
                name: block.name.clone(),
                flops,
            });
        }
        let (channels, n) = (plan.final_channels as u64, plan.final_side as u64);
        nodes.push(NodeFlops {
            node: plan.dct_node,
            name: "DCT".into(),
            flops: mul(&[4, channels, n, n, n])?,
        });
        let flow = sum(&nodes.iter().map(|n| n.flops).collect::<Vec<_>>())?;

        let classes = config.n_classes as u64;
        let loss = config.n_loss_dims as u64;
        let conv_dims = config.conv_dims() as u64;
        let k = config.mu_low_rank_k as u64;
        let fc = mul(&[2, loss, classes])?;
        let (conv, class_norms) = if k > 0 {
            (
                sum(&[mul(&[2, conv_dims, k])?, mul(&[2, k, classes])?])?,
                sum(&[mul(&[2, k, k, conv_dims])?, mul(&[2, classes, k, k])?])?,
            )
        } else {
            (mul(&[2, conv_dims, classes])?, 0)
        };
        Ok(Self {
            nodes,
            flow,
            head: sum(&[fc, conv])?,
            class_norms,
        })
    }

    /// Inference on `batch` images with cached class norms (what `trustgc::Classifier`
    /// does): `batch · (flow + head)`.
    pub fn inference(&self, batch: usize) -> u64 {
        (batch as u64).saturating_mul(self.flow.saturating_add(self.head))
    }

    /// One forward pass on `batch` images that computes the class norms (training):
    /// [`inference`](Self::inference) plus [`class_norms`](Self::class_norms).
    pub fn forward(&self, batch: usize) -> u64 {
        self.inference(batch).saturating_add(self.class_norms)
    }

    /// One training step on `batch` images: 3x [`forward`](Self::forward) (see the
    /// [module docs](self)).
    pub fn training_step(&self, batch: usize) -> u64 {
        self.forward(batch).saturating_mul(3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small model whose count is worked out by hand below: 2x8x8 inputs, one
    /// stride-2 stage of one block, 3 classes, a rank-2 head.
    fn small() -> GcConfig {
        let mut config = GcConfig::mini();
        config.input_shape = [2, 16, 16];
        config.n_classes = 3;
        config.n_loss_dims = 4;
        config.mu_low_rank_k = 2;
        config.base_width = 4;
        config.planes = vec![64];
        config.blocks = vec![1];
        config.strides = vec![2];
        config.entry_1x1_hidden = 5;
        config
    }

    #[test]
    fn a_small_config_counts_as_worked_out_by_hand() {
        let count = FlopCount::of(&small()).unwrap();
        // Node 1, entry downsampling coupling on 2x16x16: c1 = c2 = 1, hidden 4.
        //   s_hi: 3x3 1→4 at 16² = 2·1·4·9·256 = 18432; 3x3 stride 2 4→4, out 8²:
        //         2·4·4·9·64 = 18432; 1x1 4→8 at 8² = 2·4·8·64 = 4096.
        //   s_lo on 4x8x8: 3x3 4→4 at 8² = 2·4·4·9·64 = 18432; 1x1 4→8 = 4096.
        let entry = 18432 + 18432 + 4096 + 18432 + 4096;
        // Node 2, Haar: no products. Node 3, 1x1 subnet on 32x4x4 (c1 = c2 = 16), hidden 5:
        //   2·16·5·16 + 2·5·32·16 = 2560 + 5120.
        let entry_1x1 = 2560 + 5120;
        // Node 4, downsampling coupling on 32x4x4, bottleneck width 64·4/64 = 4:
        //   s_hi (16→128, stride 2): 1x1 16→4 at 4² = 2·16·4·16 = 2048; 3x3 s2 4→4 out 2²
        //        = 2·4·4·9·4 = 1152; 1x1 4→16 at 2² = 512; 1x1 16→128 at 2² = 16384.
        //   s_lo (64→128) on 2²: 1x1 64→4 = 2048; 3x3 4→4 = 1152; 1x1 4→16 = 512;
        //        1x1 16→128 = 16384.
        let down = 2048 + 1152 + 512 + 16384 + 2048 + 1152 + 512 + 16384;
        // Node 6, DCT of 128x2x2: 4·128·2³ = 4096.
        let dct = 4096;
        assert_eq!(
            count
                .nodes
                .iter()
                .map(|n| (n.node, n.flops))
                .collect::<Vec<_>>(),
            vec![(1, entry), (2, 0), (3, entry_1x1), (4, down), (6, dct)]
        );
        assert_eq!(count.flow, entry + entry_1x1 + down + dct);
        // Head: L = 4, D − L = 508, K = 3, k = 2: 2·4·3 + 2·508·2 + 2·2·3 = 24 + 2032 + 12.
        assert_eq!(count.head, 24 + 2032 + 12);
        // Class norms: Gram 2·2·2·508 = 4064, mu_t·G 2·3·2·2 = 24.
        assert_eq!(count.class_norms, 4064 + 24);
        assert_eq!(count.inference(3), 3 * (count.flow + count.head));
        assert_eq!(count.forward(3), count.inference(3) + 4088);
        assert_eq!(count.training_step(3), 3 * count.forward(3));
    }

    #[test]
    fn a_full_mu_conv_has_no_class_norm_products() {
        let mut config = small();
        config.mu_low_rank_k = 0;
        let count = FlopCount::of(&config).unwrap();
        assert_eq!(count.head, 2 * 4 * 3 + 2 * 508 * 3);
        assert_eq!(count.class_norms, 0);
    }

    #[test]
    fn an_invalid_config_is_an_error() {
        let mut config = small();
        config.n_classes = 0;
        assert!(FlopCount::of(&config).is_err());
    }
}
