//! Numerical helpers shared by the layers.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

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
