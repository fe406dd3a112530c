//! Arbitrary bytes into the image decoder and the preprocessing: every input must give a
//! decoded image or a typed `ImageError`, never a panic, an abort, a hang or an
//! out-of-memory. A decoded image then goes through two input representations, the
//! ImageNet eval transform (resize 256, center crop 224, normalize) and the Fashion-MNIST
//! grayscale one (28x28, padded to 32x32, 2x2 space-to-depth): each gives values of the
//! expected length, all finite, or a typed `InputError`. The corpus holds small PNGs and
//! JPEGs of several kinds (see `fuzz/seed.sh`).
//!
//! A few hundred bytes can declare an image at the size limits (178,956,970 pixels), which
//! decodes legitimately in seconds, and in minutes in an unoptimized (`--dev`) build. With
//! `TRUSTGC_FUZZ_MAX_PIXELS=N` set, inputs whose PNG or JPEG header declares more than `N`
//! pixels are skipped (the CI's short `--dev` run sets it); the long runs leave it unset.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use trustgc::preprocess::{InputError, decode_image, grayscale_pixels, model_input};
use trustgc_core::input::{GrayscaleInput, InputSpec};

/// `TRUSTGC_FUZZ_MAX_PIXELS`, when set.
static MAX_PIXELS: LazyLock<Option<u64>> = LazyLock::new(|| {
    let value = std::env::var("TRUSTGC_FUZZ_MAX_PIXELS").ok()?;
    Some(value.parse().expect("TRUSTGC_FUZZ_MAX_PIXELS is a number"))
});

fuzz_target!(|data: &[u8]| {
    if let (Some(max), Some(pixels)) = (*MAX_PIXELS, declared_pixels(data))
        && pixels > max
    {
        return;
    }
    let Ok(image) = decode_image(data, Path::new("fuzz-input")) else {
        return;
    };
    // decode_image refuses empty images.
    assert!(image.width() > 0 && image.height() > 0);

    let imagenet = InputSpec::imagenet();
    check(&imagenet, model_input(&image, &imagenet));

    let fashion = GrayscaleInput::fashion_mnist();
    match grayscale_pixels(&image, &fashion) {
        Ok(pixels) => {
            assert_eq!((pixels.width, pixels.height, pixels.channels), (28, 28, 1));
            assert_eq!(pixels.data.len(), 28 * 28);
        }
        Err(InputError::TooSmall { .. }) => {}
        Err(e) => panic!("grayscale_pixels: unexpected {e:?}"),
    }
    check(
        &InputSpec::Grayscale(fashion.clone()),
        model_input(&image, &InputSpec::Grayscale(fashion)),
    );
});

/// `values` has the model's input length and is finite, or the image is too small for the
/// representation (a thin image: its resized longer side cannot hold the crop).
fn check(spec: &InputSpec, values: Result<Vec<f32>, InputError>) {
    match values {
        Ok(values) => {
            let [c, h, w] = spec.model_shape();
            assert_eq!(values.len(), c * h * w, "{spec:?}");
            assert!(values.iter().all(|v| v.is_finite()), "{spec:?}");
        }
        Err(InputError::TooSmall { .. }) => {}
        Err(e) => panic!("model_input({spec:?}): unexpected {e:?}"),
    }
}

/// The pixels a PNG's header chunk or a JPEG's first frame header declares.
fn declared_pixels(data: &[u8]) -> Option<u64> {
    let be16 = |at: usize| {
        Some(u64::from(u16::from_be_bytes(
            data.get(at..at + 2)?.try_into().ok()?,
        )))
    };
    let be32 = |at: usize| {
        Some(u64::from(u32::from_be_bytes(
            data.get(at..at + 4)?.try_into().ok()?,
        )))
    };
    if data.starts_with(b"\x89PNG") {
        return Some(be32(16)? * be32(20)?);
    }
    if !data.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    // Marker segments up to the first frame header (SOF0-SOF15 but DHT, JPG and DAC).
    let mut at = 2;
    loop {
        while *data.get(at)? != 0xFF {
            at += 1;
        }
        while *data.get(at)? == 0xFF {
            at += 1;
        }
        let code = data[at];
        at += 1;
        match code {
            0xC0..=0xCF if ![0xC4, 0xC8, 0xCC].contains(&code) => {
                return Some(be16(at + 3)? * be16(at + 5)?);
            }
            0xD0..=0xD9 | 0x01 | 0x00 => {}
            _ => at += usize::try_from(be16(at)?).ok()?,
        }
    }
}
