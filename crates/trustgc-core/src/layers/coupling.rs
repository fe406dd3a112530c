//! The two affine coupling blocks of the IB-INN ("all-in-one" blocks).
//!
//! # Notation
//! For an input `x` with `C` channels: `c1 = C − C/2`, `c2 = C/2`, `x1 = x[:, :c1]`,
//! `x2 = x[:, c1:]`. A subnet `s` maps the conditioning half to `a = [a_s, a_t]`.
//! `log_scale = clamp · tanh(κ · a_s)` bounds the log-scale to `(−clamp, clamp)`.
//!
//! **Slow coupling** (`AIO_SlowCouplingBlock`, κ = 0.1):
//! `y2 = x2 · exp(log_scale) + 0.1 · a_t` with `a = s(x1)`; `u = [x1, y2]`.
//!
//! **Downsampling coupling** (`AIO_DownsampleCouplingBlock`, κ = 0.2, unscaled shift):
//! `down` is a per-channel 2x2 pixel-unshuffle (output channel `4c + 2r + s` takes pixel
//! `(2i + r, 2j + s)` of channel `c`). `y2 = down(x2) · exp(ls1) + a1_t` with
//! `a1 = s_hi(x1)` (stride 2); then `y1 = down(x1) · exp(ls2) + a2_t` with
//! `a2 = s_lo(y2)`; `u = [y1, y2]` has `4C` channels at half the resolution.
//!
//! Both blocks end with the same output stage (the reference's `permute`):
//! `v = u · scale + offset`, `scale = 0.1 · softplus_{β=0.5}(act_norm)` per channel, and a
//! fixed channel permutation `y[:, i] = v[:, permutation[i]]` (the reference applies it as a
//! 1x1 convolution with a permutation matrix `w`; a gather gives the same numbers).
//!
//! `log_det = Σ log_scale (over channels and pixels) + H'·W'·Σ_c log(scale_c + 1e-12)`
//! per sample, `H'·W'` the output resolution. The inverse returns `−log_det` computed from
//! its own intermediate values, as the reference does.

use burn::config::Config;
use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::batch_norm::BatchNorm2d;
use super::subnet::Subnet;
use super::{BatchNorms, Invertible, Mode, Traced, flatten_batch};
use crate::ops::{
    DepthOrder, channel_affine, channel_affine_inverse, contiguous, depth_to_space, space_to_depth,
    split_channels_contiguous, sum_per_sample,
};

/// The channel split of every coupling: `(c1, c2) = (C − C/2, C/2)`, the conditioning
/// half first.
pub fn split_channels(channels: usize) -> (usize, usize) {
    (channels - channels / 2, channels / 2)
}

/// Added to the act-norm scale inside the log, as the reference does.
const LOG_EPS: f64 = 1e-12;

/// `0.1 · softplus_{β=0.5}(raw)` with PyTorch's threshold (linear above `β·raw > 20`).
pub fn act_norm_scale<B: Backend>(raw: Tensor<B, 1>) -> Tensor<B, 1> {
    let beta_x = raw.clone().mul_scalar(0.5);
    let above = beta_x.clone().greater_elem(20.0);
    // Clamp before exp so that the masked-out branch stays finite (and its gradient zero).
    let soft = beta_x.clamp_max(20.0).exp().log1p().mul_scalar(2.0);
    soft.mask_where(above, raw).mul_scalar(0.1)
}

/// The inverse of [`act_norm_scale`] for scales below the threshold: the raw parameter
/// that gives `scale` (used to initialize `act_norm` from the configured value).
pub fn act_norm_raw_for_scale(scale: f64) -> f64 {
    // scale = 0.1 · 2 · ln(1 + e^(raw/2))  ⇒  raw = 2 · ln(e^(5·scale) − 1)
    2.0 * ((5.0 * scale).exp() - 1.0).ln()
}

/// A fixed permutation as an integer parameter (saved with the model, never trained).
pub(crate) fn index_param<B: Backend>(
    indices: &[usize],
    device: &B::Device,
) -> Param<Tensor<B, 1, Int>> {
    let data: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    let tensor = Tensor::<B, 1, Int>::from_data(
        TensorData::new(data, [indices.len()]).convert::<B::IntElem>(),
        device,
    );
    Param::initialized(ParamId::new(), tensor)
}

/// The act-norm + permutation stage shared by both coupling kinds.
fn output_forward<B: Backend>(
    u: Tensor<B, 4>,
    act_norm: &Param<Tensor<B, 1>>,
    act_offset: &Param<Tensor<B, 1>>,
    permutation: &Param<Tensor<B, 1, Int>>,
) -> (Tensor<B, 4>, Tensor<B, 1>) {
    let [_, _, height, width] = u.dims();
    let scale = act_norm_scale(act_norm.val());
    let log_det = scale
        .clone()
        .add_scalar(LOG_EPS)
        .log()
        .sum()
        .mul_scalar((height * width) as f64);
    let v = channel_affine(u, scale, act_offset.val());
    (v.select(1, permutation.val()), log_det)
}

/// Inverse of [`output_forward`]; the log-det is the negated act-norm term.
fn output_inverse<B: Backend>(
    y: Tensor<B, 4>,
    act_norm: &Param<Tensor<B, 1>>,
    act_offset: &Param<Tensor<B, 1>>,
    inverse_permutation: &Param<Tensor<B, 1, Int>>,
) -> (Tensor<B, 4>, Tensor<B, 1>) {
    let [_, _, height, width] = y.dims();
    let scale = act_norm_scale(act_norm.val());
    let log_det = scale
        .clone()
        .add_scalar(LOG_EPS)
        .log()
        .sum()
        .mul_scalar(-((height * width) as f64));
    let v = y.select(1, inverse_permutation.val());
    (channel_affine_inverse(v, scale, act_offset.val()), log_det)
}

/// `(x[:, :split], x[:, split:])` along channels, as views (for the subnet and the
/// concatenation, which copy them once; element-wise work takes
/// [`split_channels_contiguous`]).
fn split_at_channel<B: Backend>(x: Tensor<B, 4>, split: usize) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let channels = x.dims()[1];
    (
        x.clone().narrow(1, 0, split),
        x.narrow(1, split, channels - split),
    )
}

/// `clamp · tanh(κ · a_s)`.
fn soft_clamp<B: Backend>(a_s: Tensor<B, 4>, kappa: f64, clamp: f64) -> Tensor<B, 4> {
    a_s.mul_scalar(kappa).tanh().mul_scalar(clamp)
}

/// Per-channel 2x2 pixel-unshuffle: `[B, C, H, W] → [B, 4C, H/2, W/2]`, output channel
/// `4c + 2r + s` holding pixel `(2i + r, 2j + s)` of channel `c` (the reference's one-hot
/// `reshape_kernels` applied as a stride-2 grouped convolution).
pub fn pixel_unshuffle<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    space_to_depth(x, DepthOrder::ChannelMajor)
}

/// Inverse of [`pixel_unshuffle`]: `[B, 4C, H, W] → [B, C, 2H, 2W]`.
pub fn pixel_shuffle<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    depth_to_space(x, DepthOrder::ChannelMajor)
}

/// The one-hot 2x2 kernels `[4c, 1, 2, 2]` the reference stores as `reshape_kernels.K`.
pub fn unshuffle_kernels(channels: usize) -> Vec<f32> {
    let mut data = vec![0.0f32; channels * 16];
    for c in 0..channels {
        for k in 0..4 {
            // kernel (4c + k) has its single 1 at row k / 2, column k % 2
            data[(4 * c + k) * 4 + k] = 1.0;
        }
    }
    data
}

fn fixed_param<B: Backend, const D: usize>(
    data: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    let tensor = Tensor::<B, D>::from_data(TensorData::new(data, shape), device);
    Param::initialized(ParamId::new(), tensor).set_require_grad(false)
}

/// Configuration of a [`SlowCoupling`]: the channels, the clamp, the act-norm start and
/// the fixed output permutation. The subnet is built separately (from its own config)
/// and handed to [`init`](Self::init).
#[derive(Config, Debug)]
pub struct SlowCouplingConfig {
    /// Channels `C` of the input (and output).
    pub channels: usize,
    /// The fixed channel permutation of the output stage, a permutation of `0..C`:
    /// `y[:, i] = v[:, permutation[i]]`.
    pub permutation: Vec<usize>,
    /// Bound of the log-scales (the reference's `clamp`).
    #[config(default = 0.7)]
    pub clamp: f64,
    /// The act-norm scale every channel starts with (the reference's `act_norm`).
    #[config(default = 0.7)]
    pub act_norm: f64,
}

/// Configuration of a [`DownCoupling`] (`[B, C, H, W] → [B, 4C, H/2, W/2]`); the two
/// subnets are built separately and handed to [`init`](Self::init).
#[derive(Config, Debug)]
pub struct DownCouplingConfig {
    /// Channels `C` of the input (the output has `4C`).
    pub channels: usize,
    /// The fixed channel permutation of the output stage, a permutation of `0..4C`.
    pub permutation: Vec<usize>,
    /// Bound of the log-scales (the reference's `clamp`).
    #[config(default = 0.7)]
    pub clamp: f64,
    /// The act-norm scale every channel starts with (the reference's `act_norm`).
    #[config(default = 0.7)]
    pub act_norm: f64,
}

/// The parameters of a fresh output stage.
struct OutputParams<B: Backend> {
    act_norm: Param<Tensor<B, 1>>,
    act_offset: Param<Tensor<B, 1>>,
    permutation: Param<Tensor<B, 1, Int>>,
    inverse_permutation: Param<Tensor<B, 1, Int>>,
}

fn output_params<B: Backend>(
    channels: usize,
    act_norm: f64,
    permutation: &[usize],
    device: &B::Device,
) -> OutputParams<B> {
    use burn::module::Initializer;
    assert_eq!(
        permutation.len(),
        channels,
        "the output permutation of a coupling over {channels} channels must have {channels} entries"
    );
    let raw = act_norm_raw_for_scale(act_norm);
    let inverse = crate::rng::invert_permutation(permutation);
    OutputParams {
        act_norm: Initializer::Constant { value: raw }.init([channels], device),
        act_offset: Initializer::Zeros.init([channels], device),
        permutation: index_param(permutation, device),
        inverse_permutation: index_param(&inverse, device),
    }
}

/// A layer's output with its per-sample log-det.
pub type WithLogDet<B> = (Tensor<B, 4>, Tensor<B, 1>);

impl SlowCouplingConfig {
    /// Wraps `subnet` (`c1 → 2·c2` channels, see [`split_channels`]) into a coupling.
    ///
    /// # Panics
    /// When the permutation does not have `channels` entries (a bug of the caller).
    pub fn init<B: Backend, Net: Subnet<B>>(
        &self,
        subnet: Net,
        device: &B::Device,
    ) -> SlowCoupling<B, Net> {
        let p = output_params(self.channels, self.act_norm, &self.permutation, device);
        SlowCoupling {
            subnet,
            act_norm: p.act_norm,
            act_offset: p.act_offset,
            permutation: p.permutation,
            inverse_permutation: p.inverse_permutation,
            clamp: self.clamp,
            split: split_channels(self.channels).0,
        }
    }
}

impl DownCouplingConfig {
    /// Builds the coupling from its strided subnet `s_hi` (`c1 → 8·c2`, stride 2) and its
    /// low-resolution subnet `s_lo` (`4·c2 → 8·c1`).
    ///
    /// # Panics
    /// When the permutation does not have `4·channels` entries (a bug of the caller).
    pub fn init<B: Backend, NetHi: Subnet<B>, NetLo: Subnet<B>>(
        &self,
        subnet_strided: NetHi,
        subnet_low_res: NetLo,
        device: &B::Device,
    ) -> DownCoupling<B, NetHi, NetLo> {
        let (c1, c2) = split_channels(self.channels);
        let p = output_params(4 * self.channels, self.act_norm, &self.permutation, device);
        DownCoupling {
            subnet_strided,
            subnet_low_res,
            act_norm: p.act_norm,
            act_offset: p.act_offset,
            permutation: p.permutation,
            inverse_permutation: p.inverse_permutation,
            unshuffle_kernels_1: fixed_param(unshuffle_kernels(c1), [4 * c1, 1, 2, 2], device),
            unshuffle_kernels_2: fixed_param(unshuffle_kernels(c2), [4 * c2, 1, 2, 2], device),
            clamp: self.clamp,
            split: c1,
        }
    }
}

/// The slow (single-stream) affine coupling block.
#[derive(Module, Debug)]
pub struct SlowCoupling<B: Backend, Net: Module<B>> {
    /// The subnet `s: x1 → [a_s, a_t]` (`c1 → 2·c2` channels).
    pub subnet: Net,
    /// Raw act-norm parameter per output channel (`scale = 0.1·softplus_{0.5}(raw)`).
    pub act_norm: Param<Tensor<B, 1>>,
    /// Act-norm offset per output channel.
    pub act_offset: Param<Tensor<B, 1>>,
    /// Output channel permutation (the reference's `w` as indices).
    pub permutation: Param<Tensor<B, 1, Int>>,
    /// Its inverse (the reference's `w_inv`).
    pub inverse_permutation: Param<Tensor<B, 1, Int>>,
    /// Bound of the log-scales.
    pub clamp: f64,
    /// `c1`, the channels of the conditioning half.
    pub split: usize,
}

impl<B: Backend, Net: Subnet<B>> SlowCoupling<B, Net> {
    /// The forward pass with the raw subnet output `a` (`[batch, 2·c2, H, W]`).
    fn forward_with_subnet(
        &self,
        x: Tensor<B, 4>,
        mode: Mode,
    ) -> (Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 4>) {
        let (x1, x2) = split_at_channel(x, self.split);
        let c2 = x2.dims()[1];
        let a = self.subnet.forward(x1.clone(), mode);
        let (a_s, a_t) = split_channels_contiguous(a.clone(), c2);
        let log_scale = soft_clamp(a_s, 0.1, self.clamp);
        let shift = a_t.mul_scalar(0.1);
        // exp(log_scale) · x2 is x2 · exp(log_scale), with the fresh buffer on the left so
        // that the product is formed in place.
        let y2 = log_scale.clone().exp().mul(contiguous(x2)).add(shift);
        let u = Tensor::cat(vec![x1, y2], 1);
        let (y, output_log_det) =
            output_forward(u, &self.act_norm, &self.act_offset, &self.permutation);
        let log_det = sum_per_sample(log_scale).add(output_log_det);
        (y, log_det, a)
    }
}

impl<B: Backend, Net: Subnet<B>> Invertible<B, 4, 4> for SlowCoupling<B, Net> {
    /// Applies the block.
    ///
    /// # Shapes
    /// - `x`: `[batch, C, H, W]`
    /// - output: `[batch, C, H, W]`, log-det `[batch]`
    ///
    /// # Returns
    /// `(y, log_det)`.
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> WithLogDet<B> {
        let (y, log_det, _) = self.forward_with_subnet(x, mode);
        (y, log_det)
    }

    /// Inverts the block.
    ///
    /// # Shapes
    /// - `y`: `[batch, C, H, W]`
    /// - output: `[batch, C, H, W]`, log-det `[batch]`
    ///
    /// # Returns
    /// `(x, log_det_inv)` with `log_det_inv = −log_det`.
    fn inverse(&self, y: Tensor<B, 4>, mode: Mode) -> WithLogDet<B> {
        let (u, output_log_det) = output_inverse(
            y,
            &self.act_norm,
            &self.act_offset,
            &self.inverse_permutation,
        );
        let (x1, y2) = split_at_channel(u, self.split);
        let c2 = y2.dims()[1];
        let a = self.subnet.forward(x1.clone(), mode);
        let (a_s, a_t) = split_channels_contiguous(a, c2);
        let log_scale = soft_clamp(a_s, 0.1, self.clamp);
        let shift = a_t.mul_scalar(0.1);
        let x2 = contiguous(y2).sub(shift).mul(log_scale.clone().neg().exp());
        let x = Tensor::cat(vec![x1, x2], 1);
        (x, sum_per_sample(log_scale).neg().add(output_log_det))
    }

    /// [`forward`](Invertible::forward) with the raw subnet output `s`.
    fn forward_traced(&self, x: Tensor<B, 4>, mode: Mode) -> Traced<B, 4> {
        let (y, log_det, a) = self.forward_with_subnet(x, mode);
        (y, log_det, vec![("s", flatten_batch(&a))])
    }
}

/// The downsampling affine coupling block: `[B, C, H, W] → [B, 4C, H/2, W/2]`.
#[derive(Module, Debug)]
pub struct DownCoupling<B: Backend, NetHi: Module<B>, NetLo: Module<B>> {
    /// `s_hi: x1 → [a_s, a_t]`, `c1 → 8·c2` channels, stride 2.
    pub subnet_strided: NetHi,
    /// `s_lo: y2 → [a_s, a_t]`, `4·c2 → 8·c1` channels, stride 1.
    pub subnet_low_res: NetLo,
    /// Raw act-norm parameter per output channel (`4C` of them).
    pub act_norm: Param<Tensor<B, 1>>,
    /// Act-norm offset per output channel.
    pub act_offset: Param<Tensor<B, 1>>,
    /// Output channel permutation (the reference's `w` as indices).
    pub permutation: Param<Tensor<B, 1, Int>>,
    /// Its inverse (the reference's `w_inv`).
    pub inverse_permutation: Param<Tensor<B, 1, Int>>,
    /// The reference's one-hot unshuffle kernels for the `x1` stream, `[4·c1, 1, 2, 2]`
    /// (fixed; the computation moves the pixels with [`space_to_depth`] instead).
    pub unshuffle_kernels_1: Param<Tensor<B, 4>>,
    /// The same for the `x2` stream, `[4·c2, 1, 2, 2]`.
    pub unshuffle_kernels_2: Param<Tensor<B, 4>>,
    /// Bound of the log-scales.
    pub clamp: f64,
    /// `c1`, the channels of the first half of the input.
    pub split: usize,
}

impl<B: Backend, NetHi: Subnet<B>, NetLo: Subnet<B>> DownCoupling<B, NetHi, NetLo> {
    /// The forward pass with the raw subnet outputs `[a1, a2]` of `s_hi` and `s_lo`.
    fn forward_with_subnets(
        &self,
        x: Tensor<B, 4>,
        mode: Mode,
    ) -> (Tensor<B, 4>, Tensor<B, 1>, [Tensor<B, 4>; 2]) {
        let (x1, x2) = split_at_channel(x, self.split);
        let (c1, c2) = (x1.dims()[1], x2.dims()[1]);

        let a1 = self.subnet_strided.forward(x1.clone(), mode);
        let (a1_s, a1_t) = split_channels_contiguous(a1.clone(), 4 * c2);
        let log_scale1 = soft_clamp(a1_s, 0.2, self.clamp);
        let y2 = pixel_unshuffle(x2).mul(log_scale1.clone().exp()).add(a1_t);

        let a2 = self.subnet_low_res.forward(y2.clone(), mode);
        let (a2_s, a2_t) = split_channels_contiguous(a2.clone(), 4 * c1);
        let log_scale2 = soft_clamp(a2_s, 0.2, self.clamp);
        let y1 = pixel_unshuffle(x1).mul(log_scale2.clone().exp()).add(a2_t);

        let u = Tensor::cat(vec![y1, y2], 1);
        let (y, output_log_det) =
            output_forward(u, &self.act_norm, &self.act_offset, &self.permutation);
        let log_det = sum_per_sample(log_scale2)
            .add(sum_per_sample(log_scale1))
            .add(output_log_det);
        (y, log_det, [a1, a2])
    }
}

impl<B: Backend, NetHi: Subnet<B>, NetLo: Subnet<B>> Invertible<B, 4, 4>
    for DownCoupling<B, NetHi, NetLo>
{
    /// Applies the block.
    ///
    /// # Shapes
    /// - `x`: `[batch, C, H, W]` with even `H` and `W`
    /// - output: `[batch, 4C, H/2, W/2]`, log-det `[batch]`
    ///
    /// # Returns
    /// `(y, log_det)`.
    fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> WithLogDet<B> {
        let (y, log_det, _) = self.forward_with_subnets(x, mode);
        (y, log_det)
    }

    /// Inverts the block.
    ///
    /// # Shapes
    /// - `y`: `[batch, 4C, H/2, W/2]`
    /// - output: `[batch, C, H, W]`, log-det `[batch]`
    ///
    /// # Returns
    /// `(x, log_det_inv)` with `log_det_inv = −log_det`.
    fn inverse(&self, y: Tensor<B, 4>, mode: Mode) -> WithLogDet<B> {
        let channels = y.dims()[1] / 4;
        let (c1, c2) = (self.split, channels - self.split);
        let (u, output_log_det) = output_inverse(
            y,
            &self.act_norm,
            &self.act_offset,
            &self.inverse_permutation,
        );
        let (y1, y2) = split_channels_contiguous(u, 4 * c1);

        let a2 = self.subnet_low_res.forward(y2.clone(), mode);
        let (a2_s, a2_t) = split_channels_contiguous(a2, 4 * c1);
        let log_scale2 = soft_clamp(a2_s, 0.2, self.clamp);
        let x1 = pixel_shuffle(y1.sub(a2_t).mul(log_scale2.clone().neg().exp()));

        let a1 = self.subnet_strided.forward(x1.clone(), mode);
        let (a1_s, a1_t) = split_channels_contiguous(a1, 4 * c2);
        let log_scale1 = soft_clamp(a1_s, 0.2, self.clamp);
        let x2 = pixel_shuffle(y2.sub(a1_t).mul(log_scale1.clone().neg().exp()));

        let log_det = sum_per_sample(log_scale2)
            .add(sum_per_sample(log_scale1))
            .neg()
            .add(output_log_det);
        (Tensor::cat(vec![x1, x2], 1), log_det)
    }

    /// [`forward`](Invertible::forward) with the raw subnet outputs `s_hi`, `s_lo`.
    fn forward_traced(&self, x: Tensor<B, 4>, mode: Mode) -> Traced<B, 4> {
        let (y, log_det, [a1, a2]) = self.forward_with_subnets(x, mode);
        let subnets = vec![("s_hi", flatten_batch(&a1)), ("s_lo", flatten_batch(&a2))];
        (y, log_det, subnets)
    }
}

impl<B: Backend, Net: Module<B> + BatchNorms<B>> BatchNorms<B> for SlowCoupling<B, Net> {
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm2d<B>)) {
        self.subnet.for_each_batch_norm(f);
    }
}

impl<B: Backend, NetHi: Module<B> + BatchNorms<B>, NetLo: Module<B> + BatchNorms<B>> BatchNorms<B>
    for DownCoupling<B, NetHi, NetLo>
{
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm2d<B>)) {
        self.subnet_strided.for_each_batch_norm(f);
        self.subnet_low_res.for_each_batch_norm(f);
    }
}
