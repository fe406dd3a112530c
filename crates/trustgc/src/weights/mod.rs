//! Weights in and out: every format trustgc reads or writes, in one place.
//!
//! | module | what |
//! |---|---|
//! | [`safetensors`] | trustgc's own format (`model.safetensors`): read, write atomically, load |
//! | [`reference`](mod@reference) | the reference's key names: the authors' `.pt` checkpoints and safetensors files with the same keys |
//! | [`model_dir`] | model folders: `config.json` + `model.safetensors` + optional `ood.json` |
//! | [`convert`] | a `.pt` checkpoint → a model folder with a model card |
//!
//! Every reader returns the same host tensor, [`Tensor`] (shape, dtype and values with
//! floats widened to `f64`, from [`trustgc_checkpoint`]), and every loader reports keys
//! that do not fit in one [`KeyReport`] built by [`KeyReport::compare`] against the key
//! table of the config, before anything is allocated for the model. Every loader then
//! runs the same checks on the values (fixed tensors are what the architecture defines,
//! BatchNorm statistics are not negative, nothing is NaN or infinite) and builds the model
//! in one place.
//!
//! Why trustgc does not use burn-store's `SafetensorsStore` and `PytorchStore` is written
//! down in the repository's `docs/weights.md`: in short, the reference import needs
//! transforms and checks a key-renaming store does not do (permutation matrices become
//! index vectors, fixed tensors are compared with their closed forms, NaN is refused, one
//! report lists every wrong key), and `.pt` files are read by a reader that never runs
//! pickled code and bounds every size.
//!
//! ```
//! use trustgc::burn::backend::Flex;
//! use trustgc::weights::safetensors::{load_safetensors_bytes, to_safetensors_bytes};
//! use trustgc::Shipped;
//!
//! let device = Default::default();
//! let config = Shipped::FashionMnist.config()?;
//! let model = Shipped::FashionMnist.model::<Flex>(&device)?;
//! // Save to bytes and load them back: the same parameters.
//! let bytes = to_safetensors_bytes(&model)?;
//! let again = load_safetensors_bytes::<Flex>(&bytes, &config, &device)?;
//! assert_eq!(to_safetensors_bytes(&again)?, bytes);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod convert;
mod error;
pub mod model_dir;
pub mod reference;
pub mod safetensors;
mod validate;

pub use error::{FixedTensorProblem, KeyReport, LoadError, SaveError, ShapeMismatch, Shaped};
pub use trustgc_checkpoint::{DType, Tensor, Values};
