//! The subnetworks that compute a coupling's log-scales and shifts.
//!
//! A subnet maps the conditioning half `x1` of a coupling to `[log-scale pre-activation,
//! shift]` stacked along channels. Four kinds appear in the released model (REFERENCE.md
//! §3); their PyTorch `nn.Sequential` indices are listed next to each field so the key
//! table in [`crate::keymap`] can be read against them.
//!
//! Initialization follows the reference (`_weights_init`): Kaiming-normal convolution
//! weights (fan-in, gain √2), zero biases, BatchNorm γ = 1 and b = 0.

use burn::module::{Initializer, Module};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;

use super::batch_norm::{BatchNorm2d, BatchNorm2dConfig};
use super::{BatchNorms, Mode};

/// A network that computes coupling coefficients from the conditioning half.
pub trait Subnet<B: Backend>: Module<B> {
    /// Runs the subnet.
    ///
    /// # Shapes
    /// - `x`: `[batch, in_channels, height, width]`
    /// - output: `[batch, out_channels, height / stride, width / stride]`
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4>;
}

/// BatchNorm hyper-parameters shared by every subnet of a model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormSettings {
    /// PyTorch `momentum` of the running statistics.
    pub momentum: f64,
    /// PyTorch `eps`.
    pub epsilon: f64,
}

impl NormSettings {
    fn init<B: Backend>(&self, channels: usize, device: &B::Device) -> BatchNorm2d<B> {
        BatchNorm2dConfig::new(channels)
            .with_momentum(self.momentum)
            .with_epsilon(self.epsilon)
            .init(device)
    }
}

/// A convolution initialized as the reference does: Kaiming-normal weight, zero bias.
pub(crate) fn conv<B: Backend>(
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    bias: bool,
    device: &B::Device,
) -> Conv2d<B> {
    let padding = kernel / 2;
    let mut conv = Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .with_bias(bias)
        .with_initializer(Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: false,
        })
        .init(device);
    if bias {
        conv.bias = Some(Initializer::Zeros.init([channels[1]], device));
    }
    conv
}

/// The ResNet bottleneck used by every coupling after the entry flow
/// (`_bottleneck_residual_block`): pre-activation BN-ReLU, 1x1 reduce, 3x3 (strided in the
/// high-resolution stream of a downsampling block), 1x1 expand to 4·width, 1x1 out.
/// `width = planes · base_width / 64`.
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    /// `0`: BatchNorm over the input channels.
    pub bn_in: BatchNorm2d<B>,
    /// `2`: 1x1 convolution to `width`, no bias.
    pub conv_reduce: Conv2d<B>,
    /// `3`: BatchNorm.
    pub bn_reduce: BatchNorm2d<B>,
    /// `5`: 3x3 convolution, stride 1 or 2, padding 1, no bias.
    pub conv_spatial: Conv2d<B>,
    /// `6`: BatchNorm.
    pub bn_spatial: BatchNorm2d<B>,
    /// `8`: 1x1 convolution to `4·width`, no bias.
    pub conv_expand: Conv2d<B>,
    /// `9`: BatchNorm.
    pub bn_expand: BatchNorm2d<B>,
    /// `11`: 1x1 convolution to the output channels, with bias.
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Bottleneck<B> {
    /// Builds a bottleneck `in_channels → out_channels` with the given inner width.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        width: usize,
        stride: usize,
        norm: NormSettings,
        device: &B::Device,
    ) -> Self {
        Self {
            bn_in: norm.init(in_channels, device),
            conv_reduce: conv([in_channels, width], 1, 1, false, device),
            bn_reduce: norm.init(width, device),
            conv_spatial: conv([width, width], 3, stride, false, device),
            bn_spatial: norm.init(width, device),
            conv_expand: conv([width, 4 * width], 1, 1, false, device),
            bn_expand: norm.init(4 * width, device),
            conv_out: conv([4 * width, out_channels], 1, 1, true, device),
        }
    }
}

impl<B: Backend> Subnet<B> for Bottleneck<B> {
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        let x = relu(self.bn_in.forward(x, mode));
        let x = relu(self.bn_reduce.forward(self.conv_reduce.forward(x), mode));
        let x = relu(self.bn_spatial.forward(self.conv_spatial.forward(x), mode));
        let x = relu(self.bn_expand.forward(self.conv_expand.forward(x), mode));
        self.conv_out.forward(x)
    }
}

/// The high-resolution (strided) subnet of the entry downsampling coupling
/// (`_entry_flow_block_strided`).
#[derive(Module, Debug)]
pub struct EntryStridedNet<B: Backend> {
    /// `0`: 3x3 convolution to `base_width`, no bias.
    pub conv_in: Conv2d<B>,
    /// `1`: BatchNorm.
    pub bn_in: BatchNorm2d<B>,
    /// `3`: 3x3 convolution with stride 2, no bias.
    pub conv_strided: Conv2d<B>,
    /// `4`: BatchNorm.
    pub bn_strided: BatchNorm2d<B>,
    /// `6`: 1x1 convolution to the output channels, with bias.
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> EntryStridedNet<B> {
    /// Builds the strided entry subnet `in_channels → out_channels` with `hidden` channels.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        hidden: usize,
        norm: NormSettings,
        device: &B::Device,
    ) -> Self {
        Self {
            conv_in: conv([in_channels, hidden], 3, 1, false, device),
            bn_in: norm.init(hidden, device),
            conv_strided: conv([hidden, hidden], 3, 2, false, device),
            bn_strided: norm.init(hidden, device),
            conv_out: conv([hidden, out_channels], 1, 1, true, device),
        }
    }
}

impl<B: Backend> Subnet<B> for EntryStridedNet<B> {
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        let x = relu(self.bn_in.forward(self.conv_in.forward(x), mode));
        let x = relu(self.bn_strided.forward(self.conv_strided.forward(x), mode));
        self.conv_out.forward(x)
    }
}

/// The low-resolution subnet of the entry downsampling coupling
/// (`_entry_flow_block_strided_beta`).
#[derive(Module, Debug)]
pub struct EntryLowResNet<B: Backend> {
    /// `0`: 3x3 convolution to `base_width`, no bias.
    pub conv_in: Conv2d<B>,
    /// `1`: BatchNorm.
    pub bn_in: BatchNorm2d<B>,
    /// `3`: 1x1 convolution to the output channels, no bias.
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> EntryLowResNet<B> {
    /// Builds the low-resolution entry subnet `in_channels → out_channels`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        hidden: usize,
        norm: NormSettings,
        device: &B::Device,
    ) -> Self {
        Self {
            conv_in: conv([in_channels, hidden], 3, 1, false, device),
            bn_in: norm.init(hidden, device),
            conv_out: conv([hidden, out_channels], 1, 1, false, device),
        }
    }
}

impl<B: Backend> Subnet<B> for EntryLowResNet<B> {
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        let x = relu(self.bn_in.forward(self.conv_in.forward(x), mode));
        self.conv_out.forward(x)
    }
}

/// The two-layer 1x1 subnet of the coupling after the Haar transform (`_conv_1x1`).
#[derive(Module, Debug)]
pub struct Conv1x1Net<B: Backend> {
    /// `0`: 1x1 convolution to `hidden`, with bias.
    pub conv_in: Conv2d<B>,
    /// `2`: 1x1 convolution to the output channels, with bias.
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Conv1x1Net<B> {
    /// Builds the 1x1 subnet `in_channels → hidden → out_channels`.
    pub fn new(in_channels: usize, out_channels: usize, hidden: usize, device: &B::Device) -> Self {
        Self {
            conv_in: conv([in_channels, hidden], 1, 1, true, device),
            conv_out: conv([hidden, out_channels], 1, 1, true, device),
        }
    }
}

impl<B: Backend> Subnet<B> for Conv1x1Net<B> {
    fn forward(&self, x: Tensor<B, 4>, _mode: Mode) -> Tensor<B, 4> {
        self.conv_out.forward(relu(self.conv_in.forward(x)))
    }
}

impl<B: Backend> BatchNorms<B> for Bottleneck<B> {
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm2d<B>)) {
        f(&mut self.bn_in);
        f(&mut self.bn_reduce);
        f(&mut self.bn_spatial);
        f(&mut self.bn_expand);
    }
}

impl<B: Backend> BatchNorms<B> for EntryStridedNet<B> {
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm2d<B>)) {
        f(&mut self.bn_in);
        f(&mut self.bn_strided);
    }
}

impl<B: Backend> BatchNorms<B> for EntryLowResNet<B> {
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm2d<B>)) {
        f(&mut self.bn_in);
    }
}

impl<B: Backend> BatchNorms<B> for Conv1x1Net<B> {
    fn for_each_batch_norm(&mut self, _f: &mut dyn FnMut(&mut BatchNorm2d<B>)) {}
}
