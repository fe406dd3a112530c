#![doc = include_str!("../../../README.md")]
//!
//! This crate loads weights and re-exports the model from [`trustgc_core`] and the
//! backend selection from [`trustgc_backend`].

pub mod classifier;
pub mod convert;
pub mod error;
#[cfg(feature = "pretrained")]
pub mod hub;
pub mod import;
pub mod native;
pub mod preprocess;

pub use classifier::{
    ClassScore, Classifier, ClassifyError, Likelihoods, ModelDirError, OodStats, Verdict,
};
pub use error::{KeyReport, LoadError, ShapeMismatch};
#[cfg(feature = "pretrained")]
pub use hub::{HubError, HubOptions, Pretrained, PretrainedExt, fetch_model_dir};
pub use image;
pub use trustgc_backend as backend;
pub use trustgc_core as core;
pub use trustgc_core::{Beta, GcConfig, GcOutput, GenerativeClassifier, Mode};
