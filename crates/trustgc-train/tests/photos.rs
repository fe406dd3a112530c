//! The image-folder pipeline: scanning class folders, unreadable files, training a tiny
//! photo model, 1-crop and 10-crop evaluation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use trustgc_core::GcConfig;
use trustgc_core::input::InputSpec;
use trustgc_train::config::{BetaSpec, DataConfig, OptimizerConfig, TrainConfig};
use trustgc_train::data::{DataError, Samples};
use trustgc_train::eval::{evaluate, ten_crop_accuracy};
use trustgc_train::fit::run;
use trustgc_train::photos::{PhotoSamples, PhotoSpec};
use trustgc_train::schedule::LrSchedule;

fn spec() -> PhotoSpec {
    PhotoSpec {
        resize: 36,
        crop: 32,
        mean: [0.5, 0.5, 0.5],
        std: [0.25, 0.25, 0.25],
    }
}

#[path = "../../../tests-support/scratch.rs"]
mod support;
use support::Scratch;

/// Two classes of generated photos (bright, dark), with one broken file.
fn folder(root: PathBuf) -> PathBuf {
    for (class, base) in [("bright", 200u8), ("dark", 40u8)] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..6u32 {
            let (w, h) = (40 + 3 * i, 37 + 2 * i);
            let image = image::RgbImage::from_fn(w, h, |x, y| {
                let v = base.wrapping_add(((x * 7 + y * 3 + i) % 30) as u8);
                image::Rgb([v, v / 2, 255 - v])
            });
            image.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::write(
        root.join("dark").join("broken.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    std::fs::write(
        root.join("dark").join("notes.txt"),
        b"not an image, not even by name",
    )
    .unwrap();
    root
}

#[test]
fn unreadable_photos_are_reported_or_fatal() {
    let scratch = Scratch::new("photos", "scan");
    let root = folder(scratch.join("data"));
    let photos = PhotoSamples::open(&root, spec(), true).unwrap();
    assert_eq!(
        photos.classes,
        vec!["bright".to_string(), "dark".to_string()]
    );
    assert_eq!(
        photos.len(),
        12,
        "the broken file is left out, the .txt ignored"
    );
    assert_eq!((photos.label(0), photos.label(11)), (0, 1));
    match PhotoSamples::open(&root, spec(), false) {
        Err(DataError::BadImage { path, .. }) => assert!(path.ends_with("dark/broken.png")),
        other => panic!("expected BadImage, got {other:?}"),
    }
    let empty = root.join("bright");
    assert!(matches!(
        PhotoSamples::open(&empty, spec(), true),
        Err(DataError::NoClasses { .. })
    ));
    assert!(matches!(
        PhotoSamples::open(Path::new("/definitely/not/here"), spec(), true),
        Err(DataError::Io { .. })
    ));
}

#[test]
fn a_tiny_photo_model_trains_and_evaluates() {
    let scratch = Scratch::new("photos", "train");
    let root = folder(scratch.join("data"));
    let mut config = TrainConfig::fashion_mnist(PathBuf::new());
    config.model = GcConfig {
        input_shape: [3, 32, 32],
        n_classes: 2,
        n_loss_dims: 8,
        mu_low_rank_k: 1,
        base_width: 8,
        planes: vec![8],
        blocks: vec![1],
        strides: vec![2],
        entry_1x1_hidden: 8,
        class_names: vec!["bright".into(), "dark".into()],
        input: Some(InputSpec::ImageNet {
            resize: 36,
            crop: 32,
            mean: [0.5, 0.5, 0.5],
            std: [0.25, 0.25, 0.25],
        }),
        ..GcConfig::imagenet()
    };
    config.data = DataConfig::ImageFolder {
        train: root.clone(),
        valid: Some(root.clone()),
        validation: 0,
        limit: None,
        skip_bad_images: true,
    };
    config.beta = BetaSpec::Finite(1.0);
    config.epochs = 2;
    config.batch_size = 4;
    config.optimizer = OptimizerConfig::Adam {
        lr: 1e-3,
        weight_decay: 0.0,
    };
    config.schedule = LrSchedule::Constant;
    config.bn_average_batches = 2;
    let out = scratch.join("run");
    run::<Autodiff<Flex>>(&config, &out, false, None, &Default::default()).unwrap();

    let device = Default::default();
    let model = trustgc::weights::safetensors::load_safetensors::<Flex>(
        &out.join("model.safetensors"),
        &config.model,
        &device,
    )
    .unwrap();
    let photos = Arc::new(PhotoSamples::open(&root, spec(), true).unwrap());
    let report = evaluate(
        &model,
        photos.clone(),
        config.mean_log_std(),
        5,
        0,
        &device,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(report.images, 12);
    assert!(report.bits_per_dim.is_finite() && (0.0..=1.0).contains(&report.accuracy));
    let ten = ten_crop_accuracy(&model, &photos, &device, |_, _| {}).unwrap();
    assert!((0.0..=1.0).contains(&ten));
    println!(
        "1-crop {:.3}, 10-crop {ten:.3}, {:.3} bits/dim",
        report.accuracy, report.bits_per_dim
    );
}
