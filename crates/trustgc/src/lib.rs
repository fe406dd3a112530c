//! # trustgc
//!
//! Generative classifiers as easy to use as a pretrained ResNet: the ImageNet IB-INN of
//! Mackowiak, Ardizzone, Köthe and Rother, "Generative Classifiers as a Basis for
//! Trustworthy Image Classification" (CVPR 2021), in Rust on burn.
//!
//! This crate loads weights and re-exports the model from [`trustgc_core`] and the
//! backend selection from [`trustgc_backend`].

pub mod error;
pub mod import;

pub use error::{KeyReport, LoadError, ShapeMismatch};
pub use trustgc_backend as backend;
pub use trustgc_core as core;
pub use trustgc_core::{Beta, GcConfig, GcOutput, GenerativeClassifier, Mode};
