//! The latent test's Gaussian: class-conditional, with one shared covariance, fitted to
//! the latents of real in-distribution images ([`LatentGaussian`]).
//!
//! A generative classifier *assumes* its latent is `N(μ_y, I)` in the class dimensions
//! and `N(0, I)` in the others. A trained flow does not reach that: the latents of real
//! images have their own means and a covariance far from `I`. Out-of-distribution
//! inputs that the model's own density cannot tell apart (a digit, a letter: simple
//! images get a high `log p(x)` from any flow) still land where real images do not, in
//! directions of the latent that real images do not use. Refitting the Gaussian on real
//! latents and measuring the Mahalanobis distance under it is Lee et al. (2018)'s
//! detector, applied to the flow's own latent.
//!
//! The covariance is kept as its `rank` leading principal directions plus one isotropic
//! variance for the rest (probabilistic PCA): it is estimated well from thousands of
//! images where a full `D × D` one would be mostly noise, and it stays small to store.

use serde::{Deserialize, Serialize};
use trustgc_core::rng::SplitMix64;

/// The largest latent ([`LatentGaussian::fit`] forms its `D × D` covariance).
pub const MAX_LATENT_DIMS: usize = 4096;

/// A class-conditional Gaussian of the latent `z = [z_fc, z_conv]` (the flow's output in
/// [`GcOutput`](crate::GcOutput)'s order), with one covariance for all classes.
///
/// The mean of class `y` is `[class_means[y], shared_mean]`: class-specific in the
/// `class_dims` dimensions that carry the class (`z_fc`), shared in the others, as in
/// the model itself. The covariance is `V diag(variances) Vᵀ + residual_variance (I −
/// V Vᵀ)`, `V` the orthonormal `components`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatentGaussian {
    /// Dimensions with a mean per class (the model's `n_loss_dims`).
    pub class_dims: usize,
    /// `[classes][class_dims]`.
    pub class_means: Vec<Vec<f32>>,
    /// `[D − class_dims]`.
    pub shared_mean: Vec<f32>,
    /// `[rank][D]`, orthonormal: the leading principal directions of the residuals.
    pub components: Vec<Vec<f32>>,
    /// `[rank]`, the residuals' variance along each component, largest first.
    pub variances: Vec<f64>,
    /// The residuals' mean variance in the other `D − rank` directions.
    pub residual_variance: f64,
    /// Images the Gaussian was fitted on.
    pub images: usize,
}

/// Why a [`LatentGaussian`] cannot be fitted or used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LatentError {
    /// No latents to fit on.
    #[error("no latents to fit the Gaussian on")]
    Empty,
    /// Too few images for the rank: the trailing variances would be zero and every input
    /// off the fitting sample would look infinitely far.
    #[error(
        "{images} fitting images for rank {rank} and {classes} classes: needs more than rank + classes"
    )]
    TooFewImages {
        /// Images given.
        images: usize,
        /// The rank asked for.
        rank: usize,
        /// Classes.
        classes: usize,
    },
    /// Latents of different lengths.
    #[error("latent {index} has {found} values, expected {expected}")]
    Length {
        /// Which latent.
        index: usize,
        /// Its length.
        found: usize,
        /// The first latent's (or the Gaussian's) length.
        expected: usize,
    },
    /// Not one label per latent, or a label outside the classes.
    #[error("{latents} latents, {labels} labels; labels must be < {classes}")]
    Labels {
        /// Latents given.
        latents: usize,
        /// Labels given.
        labels: usize,
        /// Classes.
        classes: usize,
    },
    /// A class with fewer than two latents has no usable mean.
    #[error("class {class} has {count} fitting images; the latent Gaussian needs at least 2")]
    FewImages {
        /// The class.
        class: usize,
        /// Its images.
        count: usize,
    },
    /// NaN or infinity in a latent.
    #[error("latent {index} holds a non-finite value")]
    NonFinite {
        /// Which latent.
        index: usize,
    },
    /// The latent is too large for the covariance, or the rank does not fit it.
    #[error(
        "a latent of {dims} dimensions with {class_dims} class dimensions and rank {rank}: needs class_dims <= dims <= {MAX_LATENT_DIMS} and 1 <= rank < dims"
    )]
    Dims {
        /// `D`.
        dims: usize,
        /// Class dimensions.
        class_dims: usize,
        /// The rank asked for.
        rank: usize,
    },
    /// Stored values that are inconsistent: shapes, non-finite or non-positive variances.
    #[error("the latent Gaussian is malformed: {what}")]
    Malformed {
        /// What is wrong.
        what: String,
    },
}

impl LatentGaussian {
    /// `D`, the latent's length (saturating: a hostile `class_dims` cannot overflow it;
    /// [`LatentGaussian::check`] refuses such a Gaussian).
    pub fn dims(&self) -> usize {
        self.class_dims.saturating_add(self.shared_mean.len())
    }

    /// Fits the Gaussian to `latents` (each of length `D`) of in-distribution images
    /// with their `labels`, keeping `rank` principal directions.
    ///
    /// # Errors
    /// [`LatentError`] for latents of unequal lengths, labels that do not match, a class
    /// with fewer than two images, non-finite values, or `D`/`rank` out of range.
    pub fn fit(
        latents: &[Vec<f32>],
        labels: &[usize],
        classes: usize,
        class_dims: usize,
        rank: usize,
    ) -> Result<Self, LatentError> {
        if latents.is_empty() {
            return Err(LatentError::Empty);
        }
        let d = latents.first().map_or(0, Vec::len);
        if latents.len() != labels.len() || labels.iter().any(|&l| l >= classes) {
            return Err(LatentError::Labels {
                latents: latents.len(),
                labels: labels.len(),
                classes,
            });
        }
        if d == 0 || class_dims > d || d > MAX_LATENT_DIMS || rank == 0 || rank >= d {
            return Err(LatentError::Dims {
                dims: d,
                class_dims,
                rank,
            });
        }
        if latents.len() <= rank + classes {
            return Err(LatentError::TooFewImages {
                images: latents.len(),
                rank,
                classes,
            });
        }
        for (index, z) in latents.iter().enumerate() {
            if z.len() != d {
                return Err(LatentError::Length {
                    index,
                    found: z.len(),
                    expected: d,
                });
            }
            if z.iter().any(|v| !v.is_finite()) {
                return Err(LatentError::NonFinite { index });
            }
        }
        // Means: per class in the class dimensions, over all images in the others.
        let mut counts = vec![0usize; classes];
        let mut class_sums = vec![vec![0f64; class_dims]; classes];
        let mut shared_sum = vec![0f64; d - class_dims];
        for (z, &y) in latents.iter().zip(labels) {
            counts[y] += 1;
            for (s, &v) in class_sums[y].iter_mut().zip(&z[..class_dims]) {
                *s += f64::from(v);
            }
            for (s, &v) in shared_sum.iter_mut().zip(&z[class_dims..]) {
                *s += f64::from(v);
            }
        }
        if let Some((class, &count)) = counts.iter().enumerate().find(|(_, c)| **c < 2) {
            return Err(LatentError::FewImages { class, count });
        }
        let class_means: Vec<Vec<f64>> = class_sums
            .iter()
            .zip(&counts)
            .map(|(s, &c)| s.iter().map(|v| v / c as f64).collect())
            .collect();
        let n = latents.len() as f64;
        let shared_mean: Vec<f64> = shared_sum.iter().map(|v| v / n).collect();
        // The residuals' covariance, D × D, accumulated in f64 (upper triangle).
        let mut cov = vec![0f64; d * d];
        let mut r = vec![0f64; d];
        for (z, &y) in latents.iter().zip(labels) {
            for i in 0..d {
                let mean = if i < class_dims {
                    class_means[y][i]
                } else {
                    shared_mean[i - class_dims]
                };
                r[i] = f64::from(z[i]) - mean;
            }
            for i in 0..d {
                let ri = r[i];
                let row = &mut cov[i * d..(i + 1) * d];
                for (c, &rj) in row[i..].iter_mut().zip(&r[i..]) {
                    *c += ri * rj;
                }
            }
        }
        // Degrees of freedom of the class means' residuals (the shared dimensions have
        // n − 1; the difference is below 0.1 % at thousands of images).
        let dof = (n - classes as f64).max(1.0);
        for i in 0..d {
            for j in i..d {
                let v = cov[i * d + j] / dof;
                cov[i * d + j] = v;
                cov[j * d + i] = v;
            }
        }
        let trace: f64 = (0..d).map(|i| cov[i * d + i]).sum();
        let (values, vectors) = leading_eigen(&cov, d, rank);
        let floor = 1e-9 * (trace / d as f64).max(f64::MIN_POSITIVE);
        let variances: Vec<f64> = values.iter().map(|v| v.max(floor)).collect();
        let residual_variance =
            ((trace - values.iter().sum::<f64>()) / (d - rank) as f64).max(floor);
        Ok(Self {
            class_dims,
            class_means: class_means
                .iter()
                .map(|m| m.iter().map(|&v| v as f32).collect())
                .collect(),
            shared_mean: shared_mean.iter().map(|&v| v as f32).collect(),
            components: vectors
                .iter()
                .map(|v| v.iter().map(|&x| x as f32).collect())
                .collect(),
            variances,
            residual_variance,
            images: latents.len(),
        })
    }

    /// Checks shapes and values against a model of `classes` classes, `dims` latent
    /// dimensions and `class_dims` class dimensions.
    ///
    /// # Errors
    /// [`LatentError::Malformed`] naming the first inconsistency.
    pub fn check(&self, classes: usize, dims: usize, class_dims: usize) -> Result<(), LatentError> {
        let bad = |what: String| Err(LatentError::Malformed { what });
        if self.class_dims != class_dims
            || self.shared_mean.len() != dims.saturating_sub(class_dims)
        {
            return bad(format!(
                "it is for {} dimensions ({} class dimensions); the model has {dims} ({class_dims})",
                self.dims(),
                self.class_dims
            ));
        }
        if self.class_means.len() != classes
            || self.class_means.iter().any(|m| m.len() != class_dims)
        {
            return bad(format!(
                "{} class means for {classes} classes of {class_dims} dimensions",
                self.class_means.len()
            ));
        }
        let rank = self.components.len();
        if rank == 0 || rank >= dims || self.variances.len() != rank {
            return bad(format!(
                "{rank} components and {} variances for {dims} dimensions",
                self.variances.len()
            ));
        }
        if let Some(i) = self.components.iter().position(|c| {
            c.len() != dims || {
                let norm: f64 = c.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
                (norm - 1.0).abs() >= 1e-3 || norm.is_nan()
            }
        }) {
            return bad(format!(
                "component {i} is not a unit vector of {dims} values"
            ));
        }
        // Orthogonal, or the statistic counts a direction twice (rank² · D / 2
        // products, once per load).
        for i in 0..rank {
            for j in i + 1..rank {
                let cos: f64 = self.components[i]
                    .iter()
                    .zip(&self.components[j])
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum();
                if cos.is_nan() || cos.abs() >= 1e-3 {
                    return bad(format!(
                        "components {i} and {j} are not orthogonal (cosine {cos})"
                    ));
                }
            }
        }
        let finite = self
            .class_means
            .iter()
            .flatten()
            .chain(&self.shared_mean)
            .all(|v| v.is_finite());
        if !finite {
            return bad("a mean holds a non-finite value".into());
        }
        let all = || {
            self.variances
                .iter()
                .chain(std::iter::once(&self.residual_variance))
        };
        let largest = all().copied().fold(0.0, f64::max);
        // A variance too small for its inverse (or 10⁻¹² of the largest) would make every
        // input infinitely far: a silently disabled verdict.
        if !all().all(|v| v.is_finite() && (1.0 / v).is_normal() && *v >= 1e-12 * largest) {
            return bad(
                "a variance is not a positive finite number within 10^12 of the largest".into(),
            );
        }
        Ok(())
    }

    /// The test's statistic for one latent: `min_y (z − m_y)ᵀ Σ⁻¹ (z − m_y) / D`, the
    /// squared Mahalanobis distance per dimension to the nearest class (about 1 for a
    /// sample of the fitted Gaussian). NaN when `z` has the wrong length or holds NaN, or
    /// when the Gaussian's shapes are inconsistent ([`LatentGaussian::check`] refuses
    /// those). For many latents, [`LatentGaussian::statistics`] computes the parts that
    /// do not depend on `z` once.
    pub fn statistic(&self, z: &[f32]) -> f64 {
        match self.projections() {
            Some(prepared) => prepared.statistic(self, z),
            None => f64::NAN,
        }
    }

    /// [`LatentGaussian::statistic`] of each latent.
    pub fn statistics(&self, latents: &[Vec<f32>]) -> Vec<f64> {
        match self.projections() {
            Some(prepared) => latents
                .iter()
                .map(|z| prepared.statistic(self, z))
                .collect(),
            None => vec![f64::NAN; latents.len()],
        }
    }

    /// The parts of the statistic that do not depend on the input; `None` when the shapes
    /// are inconsistent. A classifier computes them once, when its statistics are attached.
    pub(crate) fn projections(&self) -> Option<LatentProjections> {
        let d = self.dims();
        let l = self.class_dims;
        let consistent = l <= d
            && self.components.len() == self.variances.len()
            && self.components.iter().all(|c| c.len() == d)
            && self.class_means.iter().all(|m| m.len() == l);
        if !consistent {
            return None;
        }
        // v_j·m_y for every class and component.
        let mean_proj = self
            .class_means
            .iter()
            .map(|mean| {
                self.components
                    .iter()
                    .map(|v| {
                        v.iter()
                            .zip(mean.iter().chain(&self.shared_mean))
                            .map(|(&a, &m)| f64::from(a) * f64::from(m))
                            .sum()
                    })
                    .collect()
            })
            .collect();
        Some(LatentProjections { mean_proj })
    }
}

/// [`LatentGaussian::statistic`]'s constants: `v_j·m_y` per class `y` and component `j`,
/// for the Gaussian they were computed from.
#[derive(Clone, Debug)]
pub(crate) struct LatentProjections {
    mean_proj: Vec<Vec<f64>>,
}

impl LatentProjections {
    /// The statistic of `z` under `gaussian`, the Gaussian these projections are of.
    pub(crate) fn statistic(&self, gaussian: &LatentGaussian, z: &[f32]) -> f64 {
        let d = gaussian.dims();
        if z.len() != d {
            return f64::NAN;
        }
        let l = gaussian.class_dims;
        let zf: Vec<f64> = z.iter().map(|&v| f64::from(v)).collect();
        let shared_sq: f64 = zf[l..]
            .iter()
            .zip(&gaussian.shared_mean)
            .map(|(a, &m)| (a - f64::from(m)).powi(2))
            .sum();
        let proj_z: Vec<f64> = gaussian.components.iter().map(|v| dot(v, &zf)).collect();
        let mut best = f64::INFINITY;
        for (mean, mean_proj) in gaussian.class_means.iter().zip(&self.mean_proj) {
            let class_sq: f64 = zf[..l]
                .iter()
                .zip(mean)
                .map(|(a, &m)| (a - f64::from(m)).powi(2))
                .sum();
            let total = class_sq + shared_sq;
            let mut along = 0.0;
            let mut quad = 0.0;
            for ((p_z, p_m), variance) in proj_z.iter().zip(mean_proj).zip(&gaussian.variances) {
                let p = p_z - p_m;
                along += p * p;
                quad += p * p / variance;
            }
            quad += (total - along).max(0.0) / gaussian.residual_variance;
            if quad.is_nan() {
                return f64::NAN;
            }
            best = best.min(quad);
        }
        best / d as f64
    }
}

fn dot(v: &[f32], z: &[f64]) -> f64 {
    v.iter().zip(z).map(|(&a, b)| f64::from(a) * b).sum()
}

/// The `k` largest eigenvalues and their unit eigenvectors of the symmetric `d × d`
/// matrix `a` (row-major), largest first: subspace iteration from a fixed start, then
/// Rayleigh–Ritz with Jacobi rotations on the `k × k` projection.
fn leading_eigen(a: &[f64], d: usize, k: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    // A block of 2k vectors converges faster for the first k; it cannot exceed d.
    let block = (2 * k).min(d);
    let mut rng = SplitMix64(0x9E37_79B9_7F4A_7C15);
    let mut q: Vec<Vec<f64>> = (0..block)
        .map(|_| (0..d).map(|_| rng.uniform() - 0.5).collect())
        .collect();
    orthonormalize(&mut q);
    let multiply = |q: &[Vec<f64>]| -> Vec<Vec<f64>> {
        q.iter()
            .map(|v| {
                (0..d)
                    .map(|i| {
                        a[i * d..(i + 1) * d]
                            .iter()
                            .zip(v)
                            .map(|(x, y)| x * y)
                            .sum()
                    })
                    .collect()
            })
            .collect()
    };
    for _ in 0..60 {
        q = multiply(&q);
        orthonormalize(&mut q);
    }
    // Rayleigh–Ritz: B = Qᵀ A Q, diagonalized.
    let aq = multiply(&q);
    let mut b = vec![0f64; block * block];
    for i in 0..block {
        for j in 0..block {
            b[i * block + j] = q[i].iter().zip(&aq[j]).map(|(x, y)| x * y).sum();
        }
    }
    let (values, w) = jacobi_eigen(b, block);
    let mut order: Vec<usize> = (0..block).collect();
    order.sort_by(|&x, &y| values[y].total_cmp(&values[x]));
    let vectors = order[..k]
        .iter()
        .map(|&c| {
            let mut v = vec![0f64; d];
            for (r, qr) in q.iter().enumerate() {
                let weight = w[r * block + c];
                for (vi, qi) in v.iter_mut().zip(qr) {
                    *vi += weight * qi;
                }
            }
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect();
    (order[..k].iter().map(|&c| values[c]).collect(), vectors)
}

/// Modified Gram–Schmidt, in place (at most `d` vectors of length `d`); a vector that
/// (nearly) vanishes is replaced by the first coordinate axis that is not (nearly) in the
/// span of the ones before it.
fn orthonormalize(q: &mut [Vec<f64>]) {
    let d = q.first().map_or(0, Vec::len);
    for i in 0..q.len() {
        let original = q[i].iter().map(|x| x * x).sum::<f64>().sqrt();
        let (done, rest) = q.split_at_mut(i);
        let mut v = std::mem::take(&mut rest[0]);
        let mut axis = 0;
        loop {
            for u in done.iter() {
                let p: f64 = u.iter().zip(&v).map(|(a, b)| a * b).sum();
                for (x, y) in v.iter_mut().zip(u) {
                    *x -= p * y;
                }
            }
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let reference = if axis == 0 { original } else { 1.0 };
            if norm > 1e-10 * reference.max(f64::MIN_POSITIVE) || axis >= d {
                v.iter_mut().for_each(|x| *x /= norm);
                break;
            }
            v = (0..d).map(|t| f64::from(u8::from(t == axis))).collect();
            axis += 1;
        }
        rest[0] = v;
    }
}

/// Eigen-decomposition of a symmetric `n × n` matrix by cyclic Jacobi rotations:
/// (eigenvalues, eigenvectors as the columns of a row-major `n × n` matrix).
fn jacobi_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _ in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let scale: f64 = (0..n).map(|i| a[i * n + i] * a[i * n + i]).sum();
        if off <= 1e-30 * scale.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for r in p + 1..n {
                let apr = a[p * n + r];
                if apr.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[r * n + r] - a[p * n + p]) / (2.0 * apr);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akr = a[k * n + r];
                    a[k * n + p] = c * akp - s * akr;
                    a[k * n + r] = s * akp + c * akr;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let ark = a[r * n + k];
                    a[p * n + k] = c * apk - s * ark;
                    a[r * n + k] = s * apk + c * ark;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkr = v[k * n + r];
                    v[k * n + p] = c * vkp - s * vkr;
                    v[k * n + r] = s * vkp + c * vkr;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_diagonalizes_a_known_matrix() {
        // [[2, 1], [1, 2]]: eigenvalues 3 and 1.
        let (values, vectors) = jacobi_eigen(vec![2.0, 1.0, 1.0, 2.0], 2);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        assert!((sorted[0] - 1.0).abs() < 1e-12 && (sorted[1] - 3.0).abs() < 1e-12);
        let big = if values[0] > values[1] { 0 } else { 1 };
        let (x, y) = (vectors[big], vectors[2 + big]);
        assert!(
            (x.abs() - y.abs()).abs() < 1e-12,
            "eigenvector of 3 is (1, 1)/√2"
        );
    }

    #[test]
    fn leading_eigen_finds_a_planted_spectrum() {
        // A diagonal matrix in a rotated basis: eigenvalues 10, 5, 1, 1, 1, 1.
        let d = 6;
        let values = [10.0, 5.0, 1.0, 1.0, 1.0, 1.0];
        let mut rng = Normals(3);
        let mut basis: Vec<Vec<f64>> = (0..d)
            .map(|_| (0..d).map(|_| rng.normal()).collect())
            .collect();
        orthonormalize(&mut basis);
        let mut a = vec![0f64; d * d];
        for (value, u) in values.iter().zip(&basis) {
            for i in 0..d {
                for j in 0..d {
                    a[i * d + j] += value * u[i] * u[j];
                }
            }
        }
        let (found, vectors) = leading_eigen(&a, d, 2);
        assert!(
            (found[0] - 10.0).abs() < 1e-9 && (found[1] - 5.0).abs() < 1e-9,
            "{found:?}"
        );
        for (v, u) in vectors.iter().zip(&basis) {
            let cos: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            assert!(
                (cos.abs() - 1.0).abs() < 1e-9,
                "direction off: |cos| = {}",
                cos.abs()
            );
        }
    }

    // SplitMix64 normals (Box–Muller).
    use trustgc_core::rng::SplitMix64 as Normals;

    /// `D = 12` latents of 3 classes: class means in the first 4 dimensions, standard
    /// deviation 3 along dimension 5, 0.5 along dimensions 6 and 7, 1 elsewhere.
    fn sample(rng: &mut Normals, class: usize) -> Vec<f32> {
        (0..12)
            .map(|i| {
                let scale = match i {
                    5 => 3.0,
                    6 | 7 => 0.5,
                    _ => 1.0,
                };
                let mean = if i < 4 && i % 3 == class { 4.0 } else { 0.0 };
                (mean + scale * rng.normal()) as f32
            })
            .collect()
    }

    fn fitted() -> LatentGaussian {
        let mut rng = Normals(7);
        let labels: Vec<usize> = (0..6000).map(|i| i % 3).collect();
        let latents: Vec<Vec<f32>> = labels.iter().map(|&y| sample(&mut rng, y)).collect();
        LatentGaussian::fit(&latents, &labels, 3, 4, 3).unwrap()
    }

    #[test]
    fn a_fitted_gaussian_finds_the_spread_and_measures_in_mahalanobis_units() {
        let gaussian = fitted();
        gaussian.check(3, 12, 4).unwrap();
        // The spectrum: 9 along dimension 5 first, then two directions of 1 (any in the
        // isotropic rest); the rest's mean variance is pulled down by the two of 0.25.
        assert!(
            (gaussian.variances[0] - 9.0).abs() < 0.5,
            "{:?}",
            gaussian.variances
        );
        assert!(gaussian.components[0][5].abs() > 0.99);
        let rest = (7.0 * 1.0 + 2.0 * 0.25) / 9.0;
        assert!(
            (gaussian.residual_variance - rest).abs() < 0.1,
            "{} vs {rest}",
            gaussian.residual_variance
        );
        assert!((gaussian.class_means[1][1] - 4.0).abs() < 0.1);
        // Fresh samples of the model: the statistic (per dimension) averages about 1
        // (a little less: it is the distance to the nearest of three classes).
        let mut rng = Normals(99);
        let fresh: Vec<f64> = (0..3000)
            .map(|i| gaussian.statistic(&sample(&mut rng, i % 3)))
            .collect();
        let mean = fresh.iter().sum::<f64>() / fresh.len() as f64;
        assert!((0.85..1.15).contains(&mean), "mean statistic {mean}");
        // Mahalanobis, not Euclidean: a step of 3 along the wide dimension 5 is one
        // standard deviation; the same step along an ordinary dimension (8, in the
        // isotropic rest) is about three.
        let mut base = vec![0f32; 12];
        base[0] = 4.0;
        let mut wide = base.clone();
        wide[5] = 3.0;
        let mut ordinary = base.clone();
        ordinary[8] = 3.0;
        let at_mean = gaussian.statistic(&base);
        let (w, o) = (
            gaussian.statistic(&wide) - at_mean,
            gaussian.statistic(&ordinary) - at_mean,
        );
        assert!(
            (w * 12.0 - 1.0).abs() < 0.15,
            "wide step: {} squared sds",
            w * 12.0
        );
        assert!(o > 8.0 * w, "ordinary {o} vs wide {w}");
        // Wrong length or NaN: NaN, which the verdict counts as a failed test.
        assert!(gaussian.statistic(&base[..11]).is_nan());
        let mut nan = base.clone();
        nan[3] = f32::NAN;
        assert!(gaussian.statistic(&nan).is_nan());
        // Stored as JSON inside ood.json.
        let back: LatentGaussian =
            serde_json::from_str(&serde_json::to_string(&gaussian).unwrap()).unwrap();
        assert_eq!(back, gaussian);
    }

    #[test]
    fn bad_fitting_data_and_malformed_gaussians_are_refused() {
        let z = |v: f32| {
            (0..6)
                .map(|i| v * (i as f32 + 1.0).sin())
                .collect::<Vec<f32>>()
        };
        let latents: Vec<Vec<f32>> = (0..8).map(|i| z(i as f32)).collect();
        let labels = [0, 1, 0, 1, 0, 1, 0, 1];
        assert!(LatentGaussian::fit(&latents, &labels, 2, 2, 2).is_ok());
        assert_eq!(
            LatentGaussian::fit(&[], &[], 2, 2, 2),
            Err(LatentError::Empty)
        );
        assert!(matches!(
            LatentGaussian::fit(&latents, &labels[..7], 2, 2, 2),
            Err(LatentError::Labels { .. })
        ));
        assert!(matches!(
            LatentGaussian::fit(&latents, &[0, 0, 1, 2, 0, 0, 1, 1], 2, 2, 2),
            Err(LatentError::Labels { .. })
        ));
        assert_eq!(
            LatentGaussian::fit(&latents, &[0, 0, 0, 1, 0, 0, 0, 0], 2, 2, 2),
            Err(LatentError::FewImages { class: 1, count: 1 })
        );
        assert_eq!(
            LatentGaussian::fit(&latents[..4], &labels[..4], 2, 2, 2),
            Err(LatentError::TooFewImages {
                images: 4,
                rank: 2,
                classes: 2
            })
        );
        assert!(matches!(
            LatentGaussian::fit(&latents, &labels, 2, 2, 6),
            Err(LatentError::Dims { rank: 6, .. })
        ));
        assert!(matches!(
            LatentGaussian::fit(&latents, &labels, 2, 7, 2),
            Err(LatentError::Dims { .. })
        ));
        let mut short = latents.clone();
        short[2].pop();
        assert_eq!(
            LatentGaussian::fit(&short, &labels, 2, 2, 2),
            Err(LatentError::Length {
                index: 2,
                found: 5,
                expected: 6
            })
        );
        let mut nan = latents.clone();
        nan[3][1] = f32::NAN;
        assert_eq!(
            LatentGaussian::fit(&nan, &labels, 2, 2, 2),
            Err(LatentError::NonFinite { index: 3 })
        );
        let good = fitted();
        // The batch form agrees with the one-latent form.
        let mut rng = Normals(5);
        let probes: Vec<Vec<f32>> = (0..4).map(|i| sample(&mut rng, i % 3)).collect();
        let one: Vec<f64> = probes.iter().map(|z| good.statistic(z)).collect();
        assert_eq!(good.statistics(&probes), one);
        assert!(good.check(4, 12, 4).is_err(), "another class count");
        assert!(good.check(3, 13, 4).is_err(), "another latent size");
        assert!(good.check(3, 12, 5).is_err(), "other class dimensions");
        let mut bad = good.clone();
        bad.components[1][0] += 0.5;
        let error = bad.check(3, 12, 4).unwrap_err();
        assert!(error.to_string().contains("component 1"), "{error}");
        let mut bad = good.clone();
        bad.components[2] = bad.components[1].clone();
        let error = bad.check(3, 12, 4).unwrap_err();
        assert!(error.to_string().contains("not orthogonal"), "{error}");
        for variance in [0.0, 1e-320, 1e-30, f64::NAN] {
            let mut bad = good.clone();
            bad.residual_variance = variance;
            assert!(bad.check(3, 12, 4).is_err(), "residual variance {variance}");
        }
        // A hostile class_dims neither overflows nor passes; an unchecked Gaussian with
        // inconsistent shapes gives NaN, not a panic.
        let mut bad = good.clone();
        bad.class_dims = usize::MAX;
        assert!(bad.check(3, 12, 4).is_err());
        assert!(bad.statistic(&[0.0; 12]).is_nan());
        let mut bad = good.clone();
        bad.variances.truncate(1);
        assert!(bad.statistic(&[0.0; 12]).is_nan());
        let mut bad = good.clone();
        bad.variances.pop();
        assert!(bad.check(3, 12, 4).is_err());
        let mut bad = good;
        bad.shared_mean[0] = f32::INFINITY;
        assert!(bad.check(3, 12, 4).is_err());
    }
}
