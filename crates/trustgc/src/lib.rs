//! Generative classifiers as easy to use as a pretrained ResNet, in Rust on
//! [burn](https://burn.dev) 0.21.
//!
//! A generative classifier models `p(image | class)` with an invertible network (a
//! normalizing flow) and one Gaussian per class in its latent space. It classifies by
//! likelihood, so it can also say that an input agrees with *no* class. This crate brings
//! the ImageNet IB-INN of Mackowiak, Ardizzone, Köthe and Rother, ["Generative Classifiers
//! as a Basis for Trustworthy Image Classification"](https://arxiv.org/abs/2007.15036)
//! (CVPR 2021), to Rust, and ships a small model of the same family trained on
//! Fashion-MNIST (`Shipped::FashionMnist`, 90.93 % test accuracy).
//!
//! # Add it
//!
//! ```toml
//! [dependencies]
//! trustgc = { git = "https://github.com/trustgc/trustgc" }  # or a path to crates/trustgc
//! ```
//!
//! (Not on crates.io yet: the embedded model's files live outside the crate's folder,
//! which `cargo publish` does not package.)
//!
//! trustgc re-exports the burn it is built on as [`trustgc::burn`](burn): use that path
//! (`trustgc::burn::backend::Flex`) rather than adding `burn` yourself, or pin the same
//! version (`burn = "=0.21.0"`), or two burns will not fit together.
//!
//! # Use it
//!
//! ```
//! use trustgc::burn::backend::Flex;
//! use trustgc::image::{DynamicImage, GrayImage};
//! use trustgc::{Classifier, Shipped, Verdict};
//!
//! let device = Default::default();
//! // The model shipped inside the crate; `Classifier::from_dir` opens a model folder,
//! // `Classifier::pretrained` a released ImageNet model.
//! let classifier = Classifier::<Flex>::shipped(Shipped::FashionMnist, &device)?;
//! // Any decoded image (`trustgc::preprocess::read_image` reads a file).
//! let image = DynamicImage::ImageLuma8(GrayImage::from_fn(28, 28, |x, y| [((x + y) * 4) as u8].into()));
//! let result = classifier.likelihoods(&image)?;
//! for score in result.top_k(3) {
//!     println!("{}: p(y|x) = {:.3}, log p(x|y) = {:.1} nats", score.name, score.posterior, score.log_likelihood);
//! }
//! if let Some(Verdict::OutOfDistribution { .. }) = result.verdict {
//!     println!("this image looks like nothing the model was trained on");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Classifier::likelihoods`] gives, per class, `log p(x|y)` (nats, input space,
//! constants included), the log posterior, `log p(x)`, bits per dimension, the
//! reference's logits and a [`Verdict`]; the [`classifier`] module states the formulas.
//! [`Classifier::preprocess`] shows the tensor the model sees, and
//! [`Classifier::likelihoods_tensor`] takes such tensors directly.
//!
//! # Where things are
//!
//! - [`Classifier`] ([`classifier`]): inference on images or tensors; [`ood`]: the
//!   typicality statistics behind the verdicts; [`scores`]: every out-of-distribution
//!   score of an input; [`metrics`]: AUROC/AUPR/FPR@95 and calibration (ECE, NLL,
//!   Brier); [`preprocess`]: images → model inputs, as the reference's Python code does
//!   it.
//! - [`weights`]: every weight format: trustgc's `model.safetensors`, model folders, the
//!   authors' `.pt` checkpoints (read without running pickled code), conversion.
//! - [`hub`]: the released ImageNet models by name ([`Pretrained`]) and their download.
//! - `Shipped` (feature `shipped`, on by default): models embedded in the crate.
//! - [`core`] (trustgc-core): the network itself, [`GenerativeClassifier`] and
//!   [`GcConfig`]; [`backend`] (trustgc-backend): backend features and the device chooser.
//!
//! Longer documents live in the repository:
//! [parity with the reference](https://github.com/trustgc/trustgc/blob/main/docs/parity.md),
//! [layers](https://github.com/trustgc/trustgc/blob/main/docs/layers.md),
//! [weights](https://github.com/trustgc/trustgc/blob/main/docs/weights.md),
//! [the hub](https://github.com/trustgc/trustgc/blob/main/docs/hub.md),
//! [OoD detection, measured](https://github.com/trustgc/trustgc/blob/main/docs/ood.md),
//! [security](https://github.com/trustgc/trustgc/blob/main/docs/security.md),
//! [training](https://github.com/trustgc/trustgc/blob/main/docs/training.md), and
//! [the shipped model's card](https://github.com/trustgc/trustgc/blob/main/weights/fashion-mnist/README.md).

pub mod calibration;
pub mod classifier;
pub mod explain;
pub mod hub;
pub mod metrics;
pub mod ood;
pub mod preprocess;
pub mod robustness;
pub mod scores;
#[cfg(feature = "shipped")]
mod shipped;
pub mod weights;

pub use burn;
pub use classifier::{ClassScore, Classifier, ClassifyError, Likelihoods};
#[cfg(feature = "pretrained")]
pub use hub::{HubError, HubOptions, PretrainedExt, fetch_model_dir};
pub use hub::{ParsePretrainedError, Pretrained};
pub use image;
pub use ood::{OodCheckError, OodStats, Verdict};
#[cfg(feature = "shipped")]
pub use shipped::{ParseShippedError, Shipped};
pub use trustgc_backend as backend;
pub use trustgc_core as core;
pub use trustgc_core::{Beta, GcConfig, GcOutput, Mode};
pub use weights::model_dir::ModelDirError;
pub use weights::{KeyReport, LoadError, SaveError, ShapeMismatch};

/// The network: a normalizing flow and a Gaussian per class (from [`trustgc_core`]).
/// [`Classifier`] wraps it with the class names, the prior and the verdicts; use it
/// bare for latents, log-determinants, sampling and training.
///
/// ```
/// use trustgc::burn::backend::Flex;
/// use trustgc::burn::tensor::{Distribution, Tensor};
/// use trustgc::{GenerativeClassifier, Mode, Shipped};
///
/// let device = Default::default();
/// let model: GenerativeClassifier<Flex> = Shipped::FashionMnist.model(&device)?;
/// let x = Tensor::<Flex, 4>::random([2, 4, 16, 16], Distribution::Normal(0.0, 1.0), &device);
/// let out = model.forward(x.clone(), Mode::Eval);
/// assert_eq!(out.class_log_likelihoods().dims(), [2, 10]);
/// // The flow is invertible: the latents give the input back.
/// let (back, _) = model.inverse(out.z_fc, out.z_conv);
/// let error: f32 = (back - x).abs().max().into_scalar();
/// assert!(error < 1e-3, "{error}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub use trustgc_core::GenerativeClassifier;
