//! # trustgc-core
//!
//! The math of trustgc: the invertible layers of the IB-INN (affine couplings with
//! act-norm and fixed permutations, Haar downsampling, DCT pooling), the released
//! ImageNet generative classifier's flow, and its class-conditional Gaussian head, on
//! [burn](https://burn.dev). This crate does no I/O; loading checkpoints lives in
//! `trustgc`.
//!
//! Everything reproduces the reference implementation (ibinn_imagenet with FrEIA 0.2)
//! number for number, including two quirks of its log-determinant (see [`layers::dct`]).
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::{Distribution, Tensor};
//! use trustgc_core::{GcConfig, GenerativeClassifier, Mode};
//!
//! // A tiny model of the released family: 3x32x32 inputs, 4 classes.
//! let mut config = GcConfig::imagenet();
//! config.input_shape = [3, 32, 32];
//! config.n_classes = 4;
//! config.class_names = Vec::new(); // the 1000 ImageNet names no longer apply
//! config.n_loss_dims = 16;
//! config.mu_low_rank_k = 2;
//! config.base_width = 8;
//! config.planes = vec![8, 8];
//! config.blocks = vec![1, 1];
//! config.strides = vec![1, 2];
//! config.input = None; // tensors are given directly
//!
//! let device = Default::default();
//! let model = GenerativeClassifier::<Flex>::new(&config, &device).unwrap();
//! let x = Tensor::<Flex, 4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
//! let out = model.forward(x.clone(), Mode::Eval);
//! assert_eq!(out.logits().dims(), [2, 4]);
//!
//! // The flow is invertible.
//! let (x_back, _) = model.inverse(out.z_fc, out.z_conv);
//! let error = (x_back - x).abs().max().into_scalar();
//! assert!(error < 1e-3);
//! ```

pub mod config;
pub mod flops;
pub mod flow;
pub mod head;
pub mod input;
pub mod keymap;
pub mod layers;
pub mod model;
pub mod ops;
pub mod params;
pub mod plan;
pub mod rng;

pub use config::{ConfigError, GcConfig};
pub use head::{Beta, GaussianHead};
pub use layers::{Invertible, Mode};
pub use model::{GcOutput, GenerativeClassifier, InputShapeError};
pub use plan::FlowPlan;
