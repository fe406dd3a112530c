//! Arbitrary bytes into the safetensors weight loader: every input must give a model or a
//! typed `LoadError`, never a panic, an abort, a hang or an out-of-memory.
//!
//! The bytes go to `read_safetensors_bytes` (every tensor decoded, whatever its names) and
//! to `load_safetensors_bytes` (trustgc's own format, the `model.safetensors` of a model
//! folder: keys and shapes checked from the header, values decoded and checked, the model
//! built) with two configs on the Flex backend: the shipped Fashion-MNIST model's and the
//! golden mini model's. A file with the reference's key names (the golden
//! `mini.safetensors`) also goes through `model_from_reference_tensors`, the translation
//! every reference loader runs. A Fashion-MNIST model that loads is run once on one image.
//! The corpus holds both models in both namings, and cut and header-only variants (see
//! `fuzz/seed.sh`).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use trustgc::burn::backend::Flex;
use trustgc::burn::tensor::Tensor;
use trustgc::weights::reference::model_from_reference_tensors;
use trustgc::weights::safetensors::{load_safetensors_bytes, read_safetensors_bytes};
use trustgc::{GcConfig, Mode};

/// The shipped Fashion-MNIST model's config (4x16x16 inputs, 10 classes).
static FASHION: LazyLock<GcConfig> = LazyLock::new(|| {
    GcConfig::from_json(include_str!("../../weights/fashion-mnist/config.json"))
        .expect("the shipped config parses")
});

/// The golden mini model (3x112x112 inputs, the released code paths at small sizes).
static MINI: LazyLock<GcConfig> = LazyLock::new(GcConfig::mini);

fuzz_target!(|data: &[u8]| {
    let device = Default::default();

    if let Ok(tensors) = read_safetensors_bytes(data) {
        // Only a file with the mini model's reference keys gets past the key check.
        let _ = model_from_reference_tensors::<Flex>(&MINI, &tensors, &device);
    }

    let _ = load_safetensors_bytes::<Flex>(data, &MINI, &device);

    if let Ok(model) = load_safetensors_bytes::<Flex>(data, &FASHION, &device) {
        // A loaded model runs (its values may be anything finite, its outputs need not be).
        let [c, h, w] = FASHION.input_shape;
        let x = Tensor::<Flex, 4>::zeros([1, c, h, w], &device);
        let out = model
            .try_forward(x, Mode::Eval)
            .expect("the config's input shape");
        let logits = out.logits().into_data();
        assert_eq!(logits.shape.as_slice(), [1, FASHION.n_classes]);
    }
});
