//! # trustgc-train
//!
//! Training and fine-tuning of trustgc's generative classifiers with burn-train, following
//! the reference recipe ([docs/training.md](https://github.com/trustgc/trustgc/blob/main/docs/training.md)).

pub mod config;
pub mod csv;
pub mod data;
pub mod eval;
pub mod fit;
pub mod idx;
pub mod photos;
pub mod recorder;
pub mod resumed;
pub mod schedule;
pub mod step;
