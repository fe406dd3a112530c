#![doc = include_str!("../../../README.md")]
//!
//! This crate loads weights and re-exports the model from [`trustgc_core`] and the
//! backend selection from [`trustgc_backend`].

pub mod classifier;
pub mod error;
pub mod import;
pub mod native;
pub mod preprocess;

pub use classifier::{
    ClassScore, Classifier, ClassifyError, Likelihoods, ModelDirError, OodStats, Verdict,
};
pub use error::{KeyReport, LoadError, ShapeMismatch};
pub use trustgc_backend as backend;
pub use trustgc_core as core;
pub use trustgc_core::{Beta, GcConfig, GcOutput, GenerativeClassifier, Mode};
