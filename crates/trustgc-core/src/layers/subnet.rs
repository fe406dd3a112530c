//! The subnetworks that compute a coupling's log-scales and shifts.
//!
//! A subnet maps the conditioning half `x1` of a coupling to `[log-scale pre-activation,
//! shift]` stacked along channels. Four kinds appear in the released model. Each is built
//! from its `…Config`, whose `layout()` lists the layers with their PyTorch
//! `nn.Sequential` index: the one description of a subnet's checkpoint keys, from which
//! [`crate::keymap`] derives its table (a test checks it against the built module).
//!
//! Initialization follows the reference (`_weights_init`): Kaiming-normal convolution
//! weights (fan-in, gain √2), zero biases, BatchNorm γ = 1 and b = 0.

use burn::config::Config;
use burn::module::{Initializer, Module};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;

use super::batch_norm::{BatchNorm2d, BatchNorm2dConfig};
use super::{BatchNorms, Mode, conv};

/// A network that computes coupling coefficients from the conditioning half.
pub trait Subnet<B: Backend>: Module<B> {
    /// Runs the subnet.
    ///
    /// # Shapes
    /// - `x`: `[batch, in_channels, height, width]`
    /// - output: `[batch, out_channels, height / stride, width / stride]`
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4>;
}

/// One layer of a subnet with parameters, as the reference's `nn.Sequential` holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubnetLayer {
    /// BatchNorm over `channels` (`weight`, `bias`, running statistics).
    Norm(usize),
    /// Convolution with a `[cout, cin, kernel, kernel]` weight and an optional bias.
    Conv {
        /// Input channels.
        cin: usize,
        /// Output channels.
        cout: usize,
        /// Kernel side.
        kernel: usize,
        /// Whether it has a bias.
        bias: bool,
    },
}

/// A subnet's layers with parameters: `(PyTorch Sequential index, our field, layer)`, in
/// the reference's state-dict order. ReLUs have no parameters and no entry.
pub type SubnetLayout = Vec<(&'static str, &'static str, SubnetLayer)>;

fn norm<B: Backend>(
    channels: usize,
    momentum: f64,
    epsilon: f64,
    device: &B::Device,
) -> BatchNorm2d<B> {
    BatchNorm2dConfig::new(channels)
        .with_momentum(momentum)
        .with_epsilon(epsilon)
        .init(device)
}

const fn conv_layer(cin: usize, cout: usize, kernel: usize, bias: bool) -> SubnetLayer {
    SubnetLayer::Conv {
        cin,
        cout,
        kernel,
        bias,
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

/// Configuration of a [`Bottleneck`].
#[derive(Config, Debug)]
pub struct BottleneckConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Inner width (`planes · base_width / 64`).
    pub width: usize,
    /// Stride of the 3x3 convolution (2 in the strided stream of a downsampling block).
    #[config(default = 1)]
    pub stride: usize,
    /// BatchNorm momentum (PyTorch convention).
    #[config(default = 0.05)]
    pub momentum: f64,
    /// BatchNorm ε.
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

impl BottleneckConfig {
    /// Builds the subnet with the reference's initialization.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Bottleneck<B> {
        let (cin, cout, width) = (self.in_channels, self.out_channels, self.width);
        let (m, e) = (self.momentum, self.epsilon);
        Bottleneck {
            bn_in: norm(cin, m, e, device),
            conv_reduce: conv([cin, width], 1, 1, false, device),
            bn_reduce: norm(width, m, e, device),
            conv_spatial: conv([width, width], 3, self.stride, false, device),
            bn_spatial: norm(width, m, e, device),
            conv_expand: conv([width, 4 * width], 1, 1, false, device),
            bn_expand: norm(4 * width, m, e, device),
            conv_out: conv([4 * width, cout], 1, 1, true, device),
        }
    }

    /// The layers with their reference indices.
    pub fn layout(&self) -> SubnetLayout {
        let (cin, cout, width) = (self.in_channels, self.out_channels, self.width);
        vec![
            ("0", "bn_in", SubnetLayer::Norm(cin)),
            ("2", "conv_reduce", conv_layer(cin, width, 1, false)),
            ("3", "bn_reduce", SubnetLayer::Norm(width)),
            ("5", "conv_spatial", conv_layer(width, width, 3, false)),
            ("6", "bn_spatial", SubnetLayer::Norm(width)),
            ("8", "conv_expand", conv_layer(width, 4 * width, 1, false)),
            ("9", "bn_expand", SubnetLayer::Norm(4 * width)),
            ("11", "conv_out", conv_layer(4 * width, cout, 1, true)),
        ]
    }
}

impl<B: Backend> Subnet<B> for Bottleneck<B> {
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        let x = relu(self.bn_in.forward(x, mode));
        let x = relu(
            self.bn_reduce
                .forward(conv::forward(&self.conv_reduce, x), mode),
        );
        let x = relu(
            self.bn_spatial
                .forward(conv::forward(&self.conv_spatial, x), mode),
        );
        let x = relu(
            self.bn_expand
                .forward(conv::forward(&self.conv_expand, x), mode),
        );
        conv::forward(&self.conv_out, x)
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

/// Configuration of the two entry subnets, [`EntryStridedNet`] and [`EntryLowResNet`]
/// (they take the same settings).
#[derive(Config, Debug)]
pub struct EntryNetConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Hidden channels (the model's `base_width`).
    pub hidden: usize,
    /// BatchNorm momentum (PyTorch convention).
    #[config(default = 0.05)]
    pub momentum: f64,
    /// BatchNorm ε.
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

impl EntryNetConfig {
    /// Builds the strided subnet (`s_hi`) with the reference's initialization.
    pub fn init_strided<B: Backend>(&self, device: &B::Device) -> EntryStridedNet<B> {
        let (cin, cout, hidden) = (self.in_channels, self.out_channels, self.hidden);
        EntryStridedNet {
            conv_in: conv([cin, hidden], 3, 1, false, device),
            bn_in: self.norm(hidden, device),
            conv_strided: conv([hidden, hidden], 3, 2, false, device),
            bn_strided: self.norm(hidden, device),
            conv_out: conv([hidden, cout], 1, 1, true, device),
        }
    }

    /// Builds the low-resolution subnet (`s_lo`) with the reference's initialization.
    pub fn init_low_res<B: Backend>(&self, device: &B::Device) -> EntryLowResNet<B> {
        let hidden = self.hidden;
        EntryLowResNet {
            conv_in: conv([self.in_channels, hidden], 3, 1, false, device),
            bn_in: self.norm(hidden, device),
            conv_out: conv([hidden, self.out_channels], 1, 1, false, device),
        }
    }

    fn norm<B: Backend>(&self, channels: usize, device: &B::Device) -> BatchNorm2d<B> {
        norm(channels, self.momentum, self.epsilon, device)
    }

    /// The layers of the strided subnet with their reference indices.
    pub fn strided_layout(&self) -> SubnetLayout {
        let (cin, cout, hidden) = (self.in_channels, self.out_channels, self.hidden);
        vec![
            ("0", "conv_in", conv_layer(cin, hidden, 3, false)),
            ("1", "bn_in", SubnetLayer::Norm(hidden)),
            ("3", "conv_strided", conv_layer(hidden, hidden, 3, false)),
            ("4", "bn_strided", SubnetLayer::Norm(hidden)),
            ("6", "conv_out", conv_layer(hidden, cout, 1, true)),
        ]
    }

    /// The layers of the low-resolution subnet with their reference indices.
    pub fn low_res_layout(&self) -> SubnetLayout {
        let hidden = self.hidden;
        vec![
            (
                "0",
                "conv_in",
                conv_layer(self.in_channels, hidden, 3, false),
            ),
            ("1", "bn_in", SubnetLayer::Norm(hidden)),
            (
                "3",
                "conv_out",
                conv_layer(hidden, self.out_channels, 1, false),
            ),
        ]
    }
}

impl<B: Backend> Subnet<B> for EntryStridedNet<B> {
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        let x = relu(self.bn_in.forward(conv::forward(&self.conv_in, x), mode));
        let x = relu(
            self.bn_strided
                .forward(conv::forward(&self.conv_strided, x), mode),
        );
        conv::forward(&self.conv_out, x)
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

impl<B: Backend> Subnet<B> for EntryLowResNet<B> {
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        let x = relu(self.bn_in.forward(conv::forward(&self.conv_in, x), mode));
        conv::forward(&self.conv_out, x)
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

/// Configuration of a [`Conv1x1Net`].
#[derive(Config, Debug)]
pub struct Conv1x1NetConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Hidden channels (`entry_1x1_hidden`).
    pub hidden: usize,
}

impl Conv1x1NetConfig {
    /// Builds the subnet with the reference's initialization.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Conv1x1Net<B> {
        Conv1x1Net {
            conv_in: conv([self.in_channels, self.hidden], 1, 1, true, device),
            conv_out: conv([self.hidden, self.out_channels], 1, 1, true, device),
        }
    }

    /// The layers with their reference indices.
    pub fn layout(&self) -> SubnetLayout {
        let (cin, cout, hidden) = (self.in_channels, self.out_channels, self.hidden);
        vec![
            ("0", "conv_in", conv_layer(cin, hidden, 1, true)),
            ("2", "conv_out", conv_layer(hidden, cout, 1, true)),
        ]
    }
}

impl<B: Backend> Subnet<B> for Conv1x1Net<B> {
    fn forward(&self, x: Tensor<B, 4>, _mode: Mode) -> Tensor<B, 4> {
        conv::forward(&self.conv_out, relu(conv::forward(&self.conv_in, x)))
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
