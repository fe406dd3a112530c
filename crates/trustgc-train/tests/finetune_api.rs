//! The library API of fine-tuning: `finetune` and `resume` on a tiny photo model, with
//! every event reaching the caller's callback (also burn-train's, from its own thread).

use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use trustgc_core::input::InputSpec;
use trustgc_core::{GcConfig, GenerativeClassifier};
use trustgc_train::finetune::{FinetuneEvent, FinetuneOptions, finetune, resume};
use trustgc_train::progress::ProgressEvent;

#[path = "../../../tests-support/scratch.rs"]
mod support;
use support::Scratch;

type B = Autodiff<Flex>;

/// Three classes of generated photos (bright red, dark blue, striped), 8 each.
fn folder(root: PathBuf) -> PathBuf {
    for (c, class) in ["bright", "dark", "striped"].iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..8u32 {
            let image = image::RgbImage::from_fn(40 + i, 36 + 2 * i, |x, y| {
                let v = ((x * 7 + y * 3 + i) % 30) as u8;
                match c {
                    0 => image::Rgb([200 + v, 60, 40]),
                    1 => image::Rgb([20, 30 + v, 90]),
                    _ => {
                        let on = (x / 4) % 2 == 0;
                        image::Rgb(if on { [230, 230, 230] } else { [10, 10, v] })
                    }
                }
            });
            image.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
    root
}

/// A tiny photo model with two classes of other names.
fn tiny() -> GcConfig {
    GcConfig {
        input_shape: [3, 32, 32],
        n_classes: 2,
        n_loss_dims: 8,
        mu_low_rank_k: 4,
        base_width: 8,
        planes: vec![8],
        blocks: vec![1],
        strides: vec![2],
        entry_1x1_hidden: 8,
        class_names: vec!["cat".into(), "dog".into()],
        input: Some(InputSpec::ImageNet {
            resize: 36,
            crop: 32,
            mean: [0.5, 0.5, 0.5],
            std: [0.25, 0.25, 0.25],
        }),
        ..GcConfig::imagenet()
    }
}

#[test]
fn finetune_and_resume_report_every_step_to_the_callback() {
    let scratch = Scratch::new("ftapi", "api");
    let data = folder(scratch.join("data"));
    let device = Default::default();
    let config = tiny();
    let model = GenerativeClassifier::<B>::new(&config, &device).unwrap();

    // Means only: new classes, cached latents, one event per epoch.
    let out = scratch.join("mu");
    let mut events = Vec::new();
    let options = FinetuneOptions {
        mu_only: true,
        epochs: Some(3),
        validation: Some(6),
        ..FinetuneOptions::new(&data, &out)
    };
    let summary = finetune(&config, model, &options, &device, |e| events.push(e)).unwrap();
    assert_eq!(summary.classes, ["bright", "dark", "striped"]);
    assert!(summary.new_head);
    assert_eq!((summary.train_images, summary.held_out_images), (18, 6));
    let epochs = events
        .iter()
        .filter(|e| matches!(e, FinetuneEvent::Epoch { .. }))
        .count();
    assert_eq!(epochs, 3);
    assert!(matches!(
        events[0],
        FinetuneEvent::Start { new_head: true, .. }
    ));
    assert!(out.join("ood.json").is_file());
    assert!(summary.ood_false_alarm_rate.is_some());

    // Full fine-tuning from that folder: burn-train's progress reaches the callback.
    let (config, model) = trustgc::weights::model_dir::load_model_dir::<B>(&out, &device).unwrap();
    let full = scratch.join("full");
    let mut events = Vec::new();
    let options = FinetuneOptions {
        epochs: Some(1),
        batch_size: Some(6),
        validation: Some(6),
        ..FinetuneOptions::new(&data, &full)
    };
    let summary = finetune(&config, model, &options, &device, |e| events.push(e)).unwrap();
    assert!(!summary.new_head);
    let training: Vec<&ProgressEvent> = events
        .iter()
        .filter_map(|e| match e {
            FinetuneEvent::Training(p) => Some(p),
            _ => None,
        })
        .collect();
    assert!(matches!(
        training.first(),
        Some(ProgressEvent::Start { .. })
    ));
    assert_eq!(
        training
            .iter()
            .filter(|p| matches!(p, ProgressEvent::Train(_)))
            .count(),
        3,
        "18 training images in batches of 6"
    );
    assert!(
        training
            .iter()
            .any(|p| matches!(p, ProgressEvent::EpochEnd(_)))
    );
    for event in &events {
        assert!(!event.to_string().is_empty() || matches!(event, FinetuneEvent::Latents { .. }));
    }

    // Extended by one epoch through `resume`.
    let options = FinetuneOptions {
        epochs: Some(2),
        ..FinetuneOptions::new("", &full)
    };
    let summary = resume::<B>(&options, &device, |_| {}).unwrap();
    assert_eq!(summary.epochs_run, 1);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("train.json")).unwrap()).unwrap();
    assert_eq!(saved["epochs"], 2);
}
