//! # trustgc-train
//!
//! Training and fine-tuning of trustgc's generative classifiers with burn-train, following
//! the reference recipe ([docs/training.md](https://github.com/trustgc/trustgc/blob/main/docs/training.md)).

pub mod config;
pub mod csv;
pub mod data;
pub mod eval;
pub mod finetune;
pub mod fit;
pub mod idx;
pub mod photos;
pub mod progress;
pub mod recorder;
pub mod resumed;
pub mod schedule;
pub mod step;

/// Compiles the README's Rust examples as doctests (without rendering them here). They
/// live in this crate because the fine-tuning example needs it; the others need only
/// `trustgc` (with its default features, a dev-dependency here).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
