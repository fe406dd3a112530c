//! How the subnets' convolutions are computed.
//!
//! The subnets hold burn's [`Conv2d`] modules (their parameters are the checkpoint's);
//! [`forward`] computes `conv.forward(x)` and, for two kinds of convolution where burn's
//! CPU backend (Flex, burn-flex 0.21) is far from the machine's speed, states the same
//! product in a form it runs well. Both are plain tensor operations, so they work on
//! every backend and under autodiff; they sum the same products in another order, so
//! results agree with `conv.forward` to float rounding (docs/performance.md has the
//! measurements and the golden tests' margins).
//!
//! - **3x3 stride-1 convolutions of at most [`SMALL_INPUT_CHANNELS`] input channels, at
//!   inference** (the weight requires no gradient; the entry subnets' first layers: 2 or 4
//!   channels at up to 224x224). Flex's
//!   im2col path spends its time converting layouts and scattering results for a
//!   reduction of only `9·C_in ≤ 36` terms (5 GFLOP/s on 2 → 64 channels at 224x224).
//!   Here the input is zero-padded to `(H + 3) x (W + 2)` and flattened: the input of
//!   kernel tap `(kh, kw)` for every output pixel is then the flat input shifted by
//!   `kh·(W + 2) + kw`, a contiguous range. The nine ranges stacked are the im2col matrix
//!   `[9·C_in, H·(W + 2)]` built with block copies; one matrix product with the weight
//!   `[C_out, 9·C_in]` gives the output on the padded grid, whose two extra columns per
//!   row are dropped. Large images go one at a time (their matrices are already large).
//!   Training keeps burn's convolution here: the golden train-mode test's float32
//!   gradients sit next to ReLU kinks (see `crates/trustgc/tests/golden_train.rs`), and
//!   this reordering of the entry layer's 18-term sums moves one of them from 2.5e-4 to
//!   1.3e-3 relative error, past its 1e-3 bound.
//! - **1x1 convolutions while training** (the weight requires a gradient): matrix
//!   products, whose backward passes are two more products. burn's default convolution
//!   backward instead transposes the batch into the channels (a copy Flex walks element
//!   by element) and convolves with an `H x W` kernel, 2 to 4x slower. On planes of at
//!   least [`MATMUL_MIN_PIXELS`] pixels the product is batched, `[C_out, C_in] ·
//!   [C_in, H·W]` per image; on smaller planes (7x7, and Fashion-MNIST's 4x4) the
//!   per-image products are too small, and the batch is moved next to the pixels with row
//!   gathers for one product `[C_out, C_in] · [C_in, batch·H·W]`.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::ops::{channel_bias, contiguous, index_tensor};

/// The most input channels for which a 3x3 convolution takes the shifted-window form.
pub const SMALL_INPUT_CHANNELS: usize = 4;

/// The fewest pixels per plane for which a training-time 1x1 convolution is a batched
/// matrix product; below, it is one product with the batch moved next to the pixels.
pub const MATMUL_MIN_PIXELS: usize = 64;

/// Images per matrix product of the shifted-window form: enough to make the product large
/// on small images, one at a time on large ones.
const WINDOW_PIXELS_PER_CHUNK: usize = 16_384;

/// `conv.forward(x)`, computed as the module docs say.
///
/// # Shapes
/// - `x`: `[batch, in_channels, height, width]`
/// - output: `[batch, out_channels, height', width']` as `conv.forward(x)`
pub fn forward<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [_, in_channels, height, width] = x.dims();
    let plain = conv.groups == 1 && conv.dilation == [1, 1] && conv.stride == [1, 1];
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => Some([top, left, bottom, right]),
        PaddingConfig2d::Valid => Some([0; 4]),
        PaddingConfig2d::Same => None,
    };
    let weight = conv.weight.val();
    let training = weight.is_require_grad();
    let bias = conv.bias.as_ref().map(|b| b.val());
    match (plain, conv.kernel_size, padding) {
        (true, [3, 3], Some([1, 1, 1, 1])) if !training && in_channels <= SMALL_INPUT_CHANNELS => {
            shifted_window_conv3x3(x, weight, bias)
        }
        (true, [1, 1], Some([0, 0, 0, 0])) if training => {
            if height * width >= MATMUL_MIN_PIXELS {
                matmul_conv1x1(x, weight, bias)
            } else {
                channel_major_conv1x1(x, weight, bias)
            }
        }
        _ => conv.forward(x),
    }
}

/// A 1x1 convolution as one product `[C_out, C_in] · [C_in, batch·H·W]`, the batch moved
/// next to the pixels and back by row gathers (block copies).
fn channel_major_conv1x1<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 4> {
    let [batch, in_channels, height, width] = x.dims();
    let out_channels = weight.dims()[0];
    let device = x.device();
    let pixels = height * width;
    let x = x
        .reshape([batch * in_channels, pixels])
        .select(0, transpose_rows::<B>(batch, in_channels, &device))
        .reshape([in_channels, batch * pixels]);
    let y = weight
        .reshape([out_channels, in_channels])
        .matmul(x)
        .reshape([out_channels * batch, pixels])
        .select(0, transpose_rows::<B>(out_channels, batch, &device))
        .reshape([batch, out_channels, height, width]);
    with_bias(y, bias)
}

/// Row order that turns the rows `(i, j)` of an `[outer · inner, n]` matrix into rows
/// `(j, i)`: output row `j·outer + i` takes input row `i·inner + j`.
fn transpose_rows<B: Backend>(outer: usize, inner: usize, device: &B::Device) -> Tensor<B, 1, Int> {
    let rows: Vec<usize> = (0..inner)
        .flat_map(|j| (0..outer).map(move |i| i * inner + j))
        .collect();
    index_tensor(&rows, device)
}

/// A 1x1 convolution as `[1, C_out, C_in] · [batch, C_in, H·W]`.
fn matmul_conv1x1<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 4> {
    let [batch, in_channels, height, width] = x.dims();
    let out_channels = weight.dims()[0];
    let y = weight
        .reshape([1, out_channels, in_channels])
        .matmul(x.reshape([batch, in_channels, height * width]))
        .reshape([batch, out_channels, height, width]);
    with_bias(y, bias)
}

/// A 3x3 convolution with stride 1 and padding 1 through the shifted-window im2col matrix
/// (module docs), a chunk of images per matrix product.
fn shifted_window_conv3x3<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 4> {
    let [batch, _, height, width] = x.dims();
    let chunk = (WINDOW_PIXELS_PER_CHUNK / (height * width)).clamp(1, batch);
    let y = if chunk >= batch {
        shifted_window_product(x, weight)
    } else {
        let parts = (0..batch)
            .step_by(chunk)
            .map(|start| {
                let images = x.clone().narrow(0, start, chunk.min(batch - start));
                shifted_window_product(images, weight.clone())
            })
            .collect();
        Tensor::cat(parts, 0)
    };
    with_bias(y, bias)
}

/// The bias-free shifted-window product for one chunk of images.
fn shifted_window_product<B: Backend>(x: Tensor<B, 4>, weight: Tensor<B, 4>) -> Tensor<B, 4> {
    let [batch, in_channels, height, width] = x.dims();
    let out_channels = weight.dims()[0];
    let grid_width = width + 2;
    // One zero row above, two below (the last taps read up to two values past the last
    // padded row), one zero column each side.
    let flat =
        pad_zeros(x, [1, 2, 1, 1]).reshape([batch * in_channels, 1, (height + 3) * grid_width]);
    let outputs = height * grid_width;
    let taps = (0..3)
        .flat_map(|kh| (0..3).map(move |kw| kh * grid_width + kw))
        .map(|offset| flat.clone().narrow(2, offset, outputs))
        .collect();
    // [batch · C_in, 9, outputs]: row (c, kh, kw) of each image, the weight's own order.
    let columns = Tensor::cat(taps, 1).reshape([batch, in_channels * 9, outputs]);
    let y = weight
        .reshape([1, out_channels, in_channels * 9])
        .matmul(columns)
        .reshape([batch * out_channels * height, grid_width])
        .narrow(1, 0, width)
        .reshape([batch, out_channels, height, width]);
    contiguous(y)
}

/// `x` with `[top, bottom, left, right]` zeros around each plane.
fn pad_zeros<B: Backend>(x: Tensor<B, 4>, [top, bottom, left, right]: [usize; 4]) -> Tensor<B, 4> {
    let [batch, channels, height, width] = x.dims();
    let (device, dtype) = (x.device(), x.dtype());
    let zeros = |rows: usize, columns: usize| {
        Tensor::<B, 4>::zeros([batch, channels, rows, columns], (&device, dtype))
    };
    let widened = Tensor::cat(vec![zeros(height, left), x, zeros(height, right)], 3);
    let padded_width = width + left + right;
    Tensor::cat(
        vec![
            zeros(top, padded_width),
            widened,
            zeros(bottom, padded_width),
        ],
        2,
    )
}

fn with_bias<B: Backend>(y: Tensor<B, 4>, bias: Option<Tensor<B, 1>>) -> Tensor<B, 4> {
    match bias {
        Some(bias) => channel_bias(y, bias),
        None => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::Param;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Distribution, Tolerance};

    type B = Flex;

    fn random<Bk: Backend, const D: usize>(
        shape: [usize; D],
        device: &Bk::Device,
    ) -> Tensor<Bk, D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    fn conv<Bk: Backend>(cin: usize, cout: usize, kernel: usize, bias: bool) -> Conv2d<Bk> {
        let p = kernel / 2;
        let device = Default::default();
        let mut conv = Conv2dConfig::new([cin, cout], [kernel, kernel])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_bias(bias)
            .init::<Bk>(&device);
        if bias {
            conv.bias = Some(Param::from_tensor(random([cout], &device)));
        }
        conv
    }

    #[test]
    fn shifted_windows_match_burns_convolution() {
        let device = Default::default();
        // One chunk, several chunks with a short last one, a bias, 1 to 4 channels.
        for (batch, cin, cout, side, bias) in [
            (3, 2, 5, 6, false),
            (2, 4, 3, 7, true),
            (5, 1, 4, 64, true),
            (3, 3, 2, 130, false),
        ] {
            let layer = conv::<B>(cin, cout, 3, bias);
            let x = random::<B, 4>([batch, cin, side, side], &device);
            let expected = layer.forward(x.clone());
            // Float sums in another order: a few ulps of values of order 1.
            forward(&layer, x)
                .into_data()
                .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::absolute(1e-5));
        }
    }

    #[test]
    fn training_1x1_products_and_gradients_match_burns_convolution() {
        // 72 pixels per plane (batched products) and 12 (the batch next to the pixels).
        for (height, width) in [(8, 9), (3, 4)] {
            check_training_1x1(height, width);
        }
    }

    fn check_training_1x1(height: usize, width: usize) {
        type A = Autodiff<Flex>;
        let device = Default::default();
        let layer = conv::<A>(6, 5, 1, true);
        let x = random::<A, 4>([3, 6, height, width], &device).require_grad();
        let upstream = random::<A, 4>([3, 5, height, width], &device);
        let ours = forward(&layer, x.clone());
        let reference = layer.forward(x.clone());
        ours.clone()
            .into_data()
            .assert_approx_eq::<f32>(&reference.clone().into_data(), Tolerance::absolute(1e-5));
        let grads_ours = ours.mul(upstream.clone()).sum().backward();
        let grads_ref = reference.mul(upstream).sum().backward();
        let tolerance = Tolerance::absolute(1e-4);
        x.grad(&grads_ours)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(&x.grad(&grads_ref).unwrap().into_data(), tolerance);
        layer
            .weight
            .grad(&grads_ours)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(
                &layer.weight.grad(&grads_ref).unwrap().into_data(),
                tolerance,
            );
    }

    #[test]
    fn other_convolutions_are_burns() {
        let device = Default::default();
        let layer = conv::<B>(8, 4, 3, false);
        let x = random::<B, 4>([2, 8, 5, 5], &device);
        forward(&layer, x.clone())
            .into_data()
            .assert_eq(&layer.forward(x).into_data(), true);
    }
}
