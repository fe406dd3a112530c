//! Numerical helpers shared by the layers.
//!
//! # Layouts that keep the CPU backend on its fast paths
//! burn's CPU backend (Flex, burn-flex 0.21) runs an element-wise operation with SIMD only
//! when its operands are contiguous, or when the right-hand side is broadcast as a row
//! (`[1, n]`) or as a column (`[rows, 1]`) of a contiguous left-hand side. Anything else —
//! a `[1, C, 1, 1]` per-channel vector against `[B, C, H, W]` with `B > 1`, or a channel
//! range `x[:, a..b]` of a batch — is walked element by element through a generic strided
//! iterator, 20 to 70 times slower. docs/performance.md has the measurements. The helpers
//! below state the same computations in the layouts that stay fast:
//! [`channel_affine`] works on `[B·C, H·W]` channel planes with `[B·C, 1]` columns,
//! [`contiguous`] copies a view once instead of letting every later operation walk it,
//! and [`channel_sums`] forms per-channel statistics without transposing the batch.
//! They are backend-generic. The affine maps and copies compute exactly what the plain
//! formulation computes; the channel sums add the same terms in another order (blocked
//! per image), so they agree to float rounding.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::rng::invert_permutation;

/// Block length of [`sum_rows`]: each level adds at most this many terms in sequence.
const BLOCK: usize = 128;

/// Row sums of `[rows, n]` as `[rows, 1]`, added in blocks of 128 and then recursively over
/// the block sums.
///
/// A plain sequential float32 sum of `n` terms has a relative error growing like `√n·ε`
/// (1e-5 for the 36 864 conv dimensions of the mini model); summing in blocks keeps it
/// near `(√128 + √(n/128))·ε`, as PyTorch's cascade sums do, which is what parity with
/// the reference's distances needs.
pub fn sum_rows<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let [rows, n] = x.dims();
    if n <= BLOCK {
        return x.sum_dim(1);
    }
    let blocks = n.div_ceil(BLOCK);
    let x = if blocks * BLOCK != n {
        let padding = Tensor::zeros([rows, blocks * BLOCK - n], (&x.device(), x.dtype()));
        Tensor::cat(vec![x, padding], 1)
    } else {
        x
    };
    sum_rows(
        x.reshape([rows, blocks, BLOCK])
            .sum_dim(2)
            .reshape([rows, blocks]),
    )
}

/// Sum over all but the first dimension, `[batch]`, with [`sum_rows`]' accuracy.
pub fn sum_per_sample<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, 1> {
    let batch = x.dims()[0];
    let n = x.shape().num_elements() / batch.max(1);
    sum_rows(x.reshape([batch, n])).reshape([batch])
}

/// `[batch, channels, height, width]` as `[batch · channels, height · width]`: one row per
/// channel plane.
fn channel_planes<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    let [batch, channels, height, width] = x.dims();
    x.reshape([batch * channels, height * width])
}

/// A per-channel vector `[channels]` as a column `[batch · channels, 1]` that lines up with
/// the rows of [`channel_planes`].
fn plane_column<B: Backend>(v: Tensor<B, 1>, batch: usize) -> Tensor<B, 2> {
    let channels = v.dims()[0];
    let column = v.reshape([1, channels]);
    let column = if batch > 1 {
        column.repeat_dim(0, batch)
    } else {
        column
    };
    column.reshape([batch * channels, 1])
}

/// `x · scale + shift` per channel: `y[b, c, h, w] = x[b, c, h, w] · scale[c] + shift[c]`.
///
/// The same two roundings as `x * scale.reshape([1, C, 1, 1]) + shift.reshape(…)`, in the
/// layout of the module docs (the CPU backend's SIMD path at every batch size).
///
/// # Shapes
/// - `x`: `[batch, channels, height, width]`; `scale`, `shift`: `[channels]`
/// - output: as `x`
pub fn channel_affine<B: Backend>(
    x: Tensor<B, 4>,
    scale: Tensor<B, 1>,
    shift: Tensor<B, 1>,
) -> Tensor<B, 4> {
    let dims = x.dims();
    channel_planes(x)
        .mul(plane_column(scale, dims[0]))
        .add(plane_column(shift, dims[0]))
        .reshape(dims)
}

/// `(x − center) · scale + shift` per channel (the train-mode BatchNorm's centred form),
/// laid out as [`channel_affine`].
///
/// # Shapes
/// - `x`: `[batch, channels, height, width]`; `center`, `scale`, `shift`: `[channels]`
/// - output: as `x`
pub fn centered_channel_affine<B: Backend>(
    x: Tensor<B, 4>,
    center: Tensor<B, 1>,
    scale: Tensor<B, 1>,
    shift: Tensor<B, 1>,
) -> Tensor<B, 4> {
    let dims = x.dims();
    channel_planes(x)
        .sub(plane_column(center, dims[0]))
        .mul(plane_column(scale, dims[0]))
        .add(plane_column(shift, dims[0]))
        .reshape(dims)
}

/// Per-channel sums over batch, height and width, `[channels]`: each channel plane summed
/// with [`sum_rows`]' blocked accuracy, then the `batch` plane sums added.
///
/// # Shapes
/// - `x`: `[batch, channels, height, width]`
/// - output: `[channels]`
pub fn channel_sums<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 1> {
    let [batch, channels, _, _] = x.dims();
    sum_rows(channel_planes(x))
        .reshape([batch, channels])
        .sum_dim(0)
        .reshape([channels])
}

/// `(x − shift) / scale` per channel, the inverse of [`channel_affine`], laid out as it.
///
/// # Shapes
/// - `x`: `[batch, channels, height, width]`; `scale`, `shift`: `[channels]`
/// - output: as `x`
pub fn channel_affine_inverse<B: Backend>(
    x: Tensor<B, 4>,
    scale: Tensor<B, 1>,
    shift: Tensor<B, 1>,
) -> Tensor<B, 4> {
    let dims = x.dims();
    channel_planes(x)
        .sub(plane_column(shift, dims[0]))
        .div(plane_column(scale, dims[0]))
        .reshape(dims)
}

/// [`channel_sums`] of `(x − center)²`, `center` per channel: the sum of squared
/// deviations behind a batch variance.
///
/// # Shapes
/// - `x`: `[batch, channels, height, width]`; `center`: `[channels]`
/// - output: `[channels]`
pub fn channel_squared_deviations<B: Backend>(
    x: Tensor<B, 4>,
    center: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let [batch, channels, _, _] = x.dims();
    let deviations = channel_planes(x).sub(plane_column(center, batch)).square();
    sum_rows(deviations)
        .reshape([batch, channels])
        .sum_dim(0)
        .reshape([channels])
}

/// The same values in a contiguous buffer of their own, for a view (a channel range of a
/// batch, a column range of each row) that later element-wise operations would otherwise
/// walk element by element.
///
/// It is a reshape to `[batch · channels, height · width]` and back: a reshape that the
/// view's strides cannot express makes the CPU backend (and the CubeCL ones) copy the view
/// once, with a fast block copy; a tensor that is already contiguous is not copied.
/// Semantically the identity on every backend, gradients included.
pub fn contiguous<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let dims = x.dims();
    channel_planes(x).reshape(dims)
}

/// `x + bias` per channel, laid out as [`channel_affine`].
///
/// # Shapes
/// - `x`: `[batch, channels, height, width]`; `bias`: `[channels]`
/// - output: as `x`
pub fn channel_bias<B: Backend>(x: Tensor<B, 4>, bias: Tensor<B, 1>) -> Tensor<B, 4> {
    let dims = x.dims();
    channel_planes(x)
        .add(plane_column(bias, dims[0]))
        .reshape(dims)
}

/// `(x[:, :split], x[:, split:])` along channels, each in its own contiguous buffer (see
/// [`contiguous`]).
pub fn split_channels_contiguous<B: Backend>(
    x: Tensor<B, 4>,
    split: usize,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let channels = x.dims()[1];
    (
        contiguous(x.clone().narrow(1, 0, split)),
        contiguous(x.narrow(1, split, channels - split)),
    )
}

/// An index tensor on `device`.
pub(crate) fn index_tensor<B: Backend>(indices: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let data: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(
        TensorData::new(data, [indices.len()]).convert::<B::IntElem>(),
        device,
    )
}

/// Which of the two output orders of [`space_to_depth`] to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepthOrder {
    /// Output channel `4c + 2r + s` (the couplings' unshuffle).
    ChannelMajor,
    /// Output channel `(2r + s)·C + c` (Haar's order by wavelet, before the transform).
    PositionMajor,
}

/// 2x2 space-to-depth: `[B, C, H, W] → [B, 4C, H/2, W/2]`, pixel `(2i + r, 2j + s)` of
/// channel `c` going to the output channel `order` names, at `(i, j)`. Even `H`, `W`.
///
/// Two gathers along contiguous dimensions (columns `2j + s → s·W/2 + j`, then rows),
/// which the CPU backend runs as block copies; the equivalent six-dimensional permutation
/// is walked element by element there (see the module docs). Exact (a data movement).
pub fn space_to_depth<B: Backend>(x: Tensor<B, 4>, order: DepthOrder) -> Tensor<B, 4> {
    let [batch, channels, height, width] = x.dims();
    let device = x.device();
    let (h2, w2) = (height / 2, width / 2);
    let columns = index_tensor::<B>(&space_to_depth_columns(width), &device);
    let rows = index_tensor::<B>(&space_to_depth_rows(channels, height, order), &device);
    x.reshape([batch * channels * height, width])
        .select(1, columns)
        .reshape([batch, channels * height * 2, w2])
        .select(1, rows)
        .reshape([batch, 4 * channels, h2, w2])
}

/// The inverse of [`space_to_depth`] with the same `order`: `[B, 4C, H, W] → [B, C, 2H, 2W]`.
pub fn depth_to_space<B: Backend>(x: Tensor<B, 4>, order: DepthOrder) -> Tensor<B, 4> {
    let [batch, channels4, h2, w2] = x.dims();
    let channels = channels4 / 4;
    let (height, width) = (2 * h2, 2 * w2);
    let device = x.device();
    let rows = invert_permutation(&space_to_depth_rows(channels, height, order));
    let columns = invert_permutation(&space_to_depth_columns(width));
    x.reshape([batch, 4 * channels * h2, w2])
        .select(1, index_tensor::<B>(&rows, &device))
        .reshape([batch * channels * height, width])
        .select(1, index_tensor::<B>(&columns, &device))
        .reshape([batch, channels, height, width])
}

/// Output column `s·(W/2) + j` of the first gather takes input column `2j + s`.
fn space_to_depth_columns(width: usize) -> Vec<usize> {
    let w2 = width / 2;
    (0..2)
        .flat_map(|s| (0..w2).map(move |j| 2 * j + s))
        .collect()
}

/// Rows of one image after the column gather, viewed as `[C·H·2, W/2]`: row
/// `(c·H + h)·2 + s` holds pixels `(h, 2j + s)` of channel `c`. Output row
/// `(channel·H/2 + i)` of the second gather, for the output channel of `(c, r, s)`, takes
/// row `(c·H + 2i + r)·2 + s`.
fn space_to_depth_rows(channels: usize, height: usize, order: DepthOrder) -> Vec<usize> {
    let h2 = height / 2;
    let mut rows = vec![0; 2 * channels * height];
    for c in 0..channels {
        for r in 0..2 {
            for s in 0..2 {
                let out_channel = match order {
                    DepthOrder::ChannelMajor => 4 * c + 2 * r + s,
                    DepthOrder::PositionMajor => (2 * r + s) * channels + c,
                };
                for i in 0..h2 {
                    rows[out_channel * h2 + i] = (c * height + 2 * i + r) * 2 + s;
                }
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Tolerance};

    type B = Flex;

    fn random(shape: [usize; 4]) -> Tensor<B, 4> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    /// The six-dimensional permutation that [`space_to_depth`] replaces.
    fn space_to_depth_by_permute(x: Tensor<B, 4>, order: DepthOrder) -> Tensor<B, 4> {
        let [batch, channels, height, width] = x.dims();
        let blocks = x.reshape([batch, channels, height / 2, 2, width / 2, 2]);
        let axes = match order {
            DepthOrder::ChannelMajor => [0, 1, 3, 5, 2, 4],
            DepthOrder::PositionMajor => [0, 3, 5, 1, 2, 4],
        };
        blocks
            .permute(axes)
            .reshape([batch, 4 * channels, height / 2, width / 2])
    }

    #[test]
    fn space_to_depth_is_the_block_permutation_and_depth_to_space_undoes_it() {
        for shape in [[1, 1, 2, 2], [2, 3, 4, 6], [3, 5, 8, 2], [2, 12, 6, 10]] {
            for order in [DepthOrder::ChannelMajor, DepthOrder::PositionMajor] {
                let x = random(shape);
                let y = space_to_depth(x.clone(), order);
                // A data movement: equal, not close.
                y.clone().into_data().assert_eq(
                    &space_to_depth_by_permute(x.clone(), order).into_data(),
                    true,
                );
                depth_to_space(y, order)
                    .into_data()
                    .assert_eq(&x.into_data(), true);
            }
        }
    }

    #[test]
    fn space_to_depth_of_a_channel_range_view() {
        let x = random([3, 6, 4, 4]);
        let view = x.clone().narrow(1, 2, 3);
        let copy = Tensor::<B, 4>::from_data(view.clone().into_data(), &Default::default());
        space_to_depth(view, DepthOrder::ChannelMajor)
            .into_data()
            .assert_eq(
                &space_to_depth(copy, DepthOrder::ChannelMajor).into_data(),
                true,
            );
    }

    #[test]
    fn channel_affine_is_the_broadcast_formulation_bit_for_bit() {
        let device = Default::default();
        for batch in [1, 3] {
            let x = random([batch, 4, 3, 5]);
            let scale = Tensor::<B, 1>::random([4], Distribution::Normal(0.0, 1.0), &device);
            let shift = Tensor::<B, 1>::random([4], Distribution::Normal(0.0, 1.0), &device);
            let column = |v: &Tensor<B, 1>| v.clone().reshape([1, 4, 1, 1]);
            let expected = x.clone().mul(column(&scale)).add(column(&shift));
            channel_affine(x.clone(), scale.clone(), shift.clone())
                .into_data()
                .assert_eq(&expected.into_data(), true);
            let expected = x.clone().sub(column(&shift)).div(column(&scale));
            channel_affine_inverse(x.clone(), scale.clone(), shift.clone())
                .into_data()
                .assert_eq(&expected.into_data(), true);
            let center = shift.clone().mul_scalar(0.5);
            let expected = x
                .clone()
                .sub(column(&center))
                .mul(column(&scale))
                .add(column(&shift));
            centered_channel_affine(x.clone(), center, scale.clone(), shift.clone())
                .into_data()
                .assert_eq(&expected.into_data(), true);
            // A channel-range view goes through the same arithmetic.
            let wide = random([batch, 7, 3, 5]);
            let view = wide.narrow(1, 2, 4);
            let expected = view.clone().mul(column(&scale)).add(column(&shift));
            channel_affine(view, scale, shift)
                .into_data()
                .assert_eq(&expected.into_data(), true);
        }
    }

    #[test]
    fn channel_sums_add_over_batch_and_pixels() {
        let x = random([3, 4, 20, 30]);
        let center = Tensor::<B, 1>::from_floats([0.5, -1.0, 0.0, 2.0], &Default::default());
        let by_channel = x.clone().swap_dims(0, 1).reshape([4, 3 * 600]);
        // A sum of 1,800 values of both signs can be near 0 (cancellation), so its error is
        // bounded relative to the sum of magnitudes, not to the sum: float32 summation in
        // another order differs by about √n·ε·Σ|x| (≈ 2e-6 here); a lost or doubled
        // element would differ by its own size (≈ 0.5).
        let values: Vec<f32> = by_channel.clone().into_data().into_vec().unwrap();
        let sums: Vec<f32> = channel_sums(x.clone()).into_data().into_vec().unwrap();
        for (c, sum) in sums.iter().enumerate() {
            let row = &values[c * 1800..(c + 1) * 1800];
            let exact: f64 = row.iter().map(|&v| f64::from(v)).sum();
            let magnitude: f64 = row.iter().map(|&v| f64::from(v).abs()).sum();
            let error = (f64::from(*sum) - exact).abs();
            assert!(
                error <= 1e-7 * magnitude,
                "channel {c}: sum {sum} vs {exact}, error {error:.3e} > 1e-7 x {magnitude:.1}"
            );
        }
        let expected = by_channel
            .sub(center.clone().reshape([4, 1]))
            .square()
            .sum_dim(1)
            .reshape([4]);
        channel_squared_deviations(x, center)
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::relative(1e-5));
    }

    #[test]
    fn contiguous_keeps_the_values_of_a_view() {
        let x = random([2, 6, 3, 4]);
        let view = x.narrow(1, 3, 3);
        contiguous(view.clone())
            .into_data()
            .assert_eq(&view.into_data(), true);
    }
}
