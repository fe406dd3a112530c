//! Preprocessing against the reference: torchvision's eval transform on three photos
//! (`../shared/golden/images/preprocessed.safetensors`, torchvision 0.29.2 / Pillow 13.0),
//! and Pillow's conversions of less common image modes (`tests/data/preprocess/`,
//! produced by `make_fixtures.py` with Pillow 11.3).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use trustgc::core::input::InputSpec;
use trustgc::preprocess::{
    Image8, center_crop_offsets, crop, model_input, pil_resize_bilinear, read_image, resized_size,
    to_luma_pil, to_rgb_pil,
};

fn golden_images() -> std::collections::HashMap<String, trustgc::import::RawTensor> {
    trustgc::import::read_safetensors(&golden_path("images/preprocessed.safetensors")).unwrap()
}

fn bytes(t: &trustgc::import::RawTensor) -> Vec<u8> {
    match &t.values {
        trustgc::import::RawValues::Int(v) => v.iter().map(|&x| x as u8).collect(),
        trustgc::import::RawValues::Float(_) => panic!("expected u8"),
    }
}

fn floats(t: &trustgc::import::RawTensor) -> Vec<f64> {
    match &t.values {
        trustgc::import::RawValues::Float(v) => v.clone(),
        trustgc::import::RawValues::Int(_) => panic!("expected floats"),
    }
}

/// (fraction of equal values, largest difference)
fn agreement(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len());
    let equal = a.iter().zip(b).filter(|(x, y)| x == y).count();
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0);
    (equal as f64 / a.len() as f64, worst)
}

#[test]
fn imagenet_eval_transform_matches_torchvision() {
    let golden = golden_images();
    let spec = InputSpec::imagenet();
    let InputSpec::ImageNet { mean, std, .. } = &spec else {
        unreachable!()
    };
    let mut batch = Vec::new();
    for name in ["chelsea", "coffee", "astronaut"] {
        let path = golden_path(&format!("images/{name}.png"));
        let image = read_image(&path).unwrap();
        let rgb = to_rgb_pil(&image);
        assert_eq!(
            rgb.data,
            bytes(&golden[&format!("{name}.original_u8_hwc")]),
            "{name}: decoded pixels"
        );

        let (w, h) = resized_size(rgb.width, rgb.height, 256);
        let resized = pil_resize_bilinear(&rgb, w, h);
        assert_eq!(
            golden[&format!("{name}.resized256_u8_hwc")].shape,
            vec![h, w, 3]
        );
        let (equal, worst) = agreement(
            &resized.data,
            &bytes(&golden[&format!("{name}.resized256_u8_hwc")]),
        );
        println!(
            "{name}: Resize(256) equal on {:.4} % of values, max diff {worst}",
            100.0 * equal
        );
        // The bound: ≥ 99.9 % equal and never more than 1 apart.
        assert!(equal >= 0.999 && worst <= 1, "{name}: resize");

        let (left, top) = center_crop_offsets(w, h, 224);
        let cropped = crop(&resized, left, top, 224);
        let (equal, worst) = agreement(
            &cropped.data,
            &bytes(&golden[&format!("{name}.crop224_u8_hwc")]),
        );
        println!(
            "{name}: CenterCrop(224) equal on {:.4} % of values, max diff {worst}",
            100.0 * equal
        );
        assert!(equal >= 0.999 && worst <= 1, "{name}: crop");

        let x: Vec<f64> = model_input(&image, &spec, &path)
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        let expected = floats(&golden[name]);
        // Within one 8-bit level after normalization: 1/255/std.
        let n = 224 * 224;
        for c in 0..3 {
            let bound = 1.0 / 255.0 / f64::from(std[c]) + 1e-6;
            let err = max_abs_err(&x[c * n..(c + 1) * n], &expected[c * n..(c + 1) * n]);
            println!(
                "{name}: normalized channel {c} max abs err {err:.2e} (bound {bound:.2e}, mean {})",
                mean[c]
            );
            assert!(err <= bound, "{name} channel {c}");
        }
        batch.extend(x);
    }
    let err = max_abs_err(&batch, &floats(&golden["batch"]));
    assert!(err <= 1.0 / 255.0 / 0.224 + 1e-6, "batch max abs err {err}");
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/preprocess")
}

#[test]
fn image_modes_convert_as_pillow_does() {
    let text = std::fs::read_to_string(fixture_dir().join("expected.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    let list = |v: &serde_json::Value| -> Vec<u8> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u8)
            .collect()
    };
    let images = expected["images"].as_object().unwrap();
    assert_eq!(images.len(), 7);
    for (name, e) in images {
        let path = fixture_dir().join(format!("{name}.png"));
        let image = read_image(&path).unwrap();
        let rgb = to_rgb_pil(&image);
        assert_eq!(
            rgb.data,
            list(&e["rgb"]),
            "{name} ({}): convert('RGB')",
            e["mode"]
        );
        assert_eq!(
            to_luma_pil(&image).data,
            list(&e["l"]),
            "{name} ({}): convert('L')",
            e["mode"]
        );
        let size: Vec<usize> = e["resized_size"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(
            resized_size(rgb.width, rgb.height, 16),
            (size[0], size[1]),
            "{name}: size"
        );
        let resized = pil_resize_bilinear(&rgb, size[0], size[1]);
        assert_eq!(resized.data, list(&e["resized"]), "{name}: resize");
        let (left, top) = center_crop_offsets(size[0], size[1], 12);
        assert_eq!(
            crop(&resized, left, top, 12).data,
            list(&e["cropped"]),
            "{name}: crop"
        );
    }
}

fn expect_error(path: &Path) -> trustgc::preprocess::ImageError {
    read_image(path).expect_err("an error")
}

#[test]
fn bad_files_are_typed_errors_naming_the_path() {
    let dir = std::env::temp_dir().join(format!("trustgc-preprocess-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.png");
    let err = expect_error(&missing);
    assert!(
        matches!(err, trustgc::preprocess::ImageError::Io { .. })
            && err.to_string().contains("missing.png")
    );
    let empty = dir.join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let err = expect_error(&empty);
    assert!(
        matches!(err, trustgc::preprocess::ImageError::Decode { .. })
            && err.to_string().contains("empty.png"),
        "{err}"
    );
    let corrupt = dir.join("corrupt.png");
    let mut bytes = std::fs::read(fixture_dir().join("rgb.png")).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&corrupt, &bytes).unwrap();
    let err = expect_error(&corrupt);
    assert!(err.to_string().contains("corrupt.png"), "{err}");
    let text = dir.join("text.png");
    std::fs::write(&text, b"hello, I am not an image").unwrap();
    assert!(matches!(
        expect_error(&text),
        trustgc::preprocess::ImageError::Decode { .. }
    ));
    // Too small to crop after resizing is refused, not a panic.
    let tiny = Image8 {
        width: 1,
        height: 1,
        channels: 3,
        data: vec![1, 2, 3],
    };
    let image =
        image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(1, 1, tiny.data.clone()).unwrap());
    assert!(
        model_input(&image, &InputSpec::imagenet(), Path::new("x.png")).is_ok(),
        "1x1 upsamples to 256 then crops"
    );
}
