//! Transfer learning end to end: the golden mini checkpoint is converted, fine-tuned on a
//! photo folder with 3 new classes (Fashion-MNIST garments rendered as RGB photos of
//! mixed sizes and modes), means only and then fully, evaluated on held-out photos, and
//! used to classify with a verdict; runs are extended, and bad data is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use trustgc::image::{self, DynamicImage, GrayImage, Rgb, RgbImage, Rgba, RgbaImage};
use trustgc_core::GcConfig;
use trustgc_core::input::InputSpec;
use trustgc_train::data::{IdxSplit, LabeledImages};

fn trustgc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trustgc"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn ok(run: &Output) -> String {
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        run.status.code(),
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

fn failed(run: &Output) -> String {
    assert!(!run.status.success(), "expected a failure");
    String::from_utf8_lossy(&run.stderr).into_owned()
}

fn golden(relative: &str) -> PathBuf {
    let dir = std::env::var_os("TRUSTGC_GOLDEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden")
        });
    let path = dir.join(relative);
    assert!(path.exists(), "golden file missing: {}", path.display());
    path
}

#[path = "../../../tests-support/scratch.rs"]
mod support;
use support::Scratch;

fn scratch(name: &str) -> Scratch {
    Scratch::new("ft", name)
}

fn subset() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../trustgc-train/tests/data/fashion-mnist-subset")
}

/// The new classes: (folder name, Fashion-MNIST label).
const CLASSES: [(&str, usize); 3] = [("bag", 8), ("sneaker", 7), ("trouser", 1)];

/// A 28x28 garment as a photo: scaled to a size that varies per image, tinted, and saved
/// as RGB, RGBA or grayscale PNG in turn.
fn photo(pixels: &[u8], i: usize) -> DynamicImage {
    let (w, h) = (70 + (i * 13) % 50, 64 + (i * 7) % 60);
    let gray = GrayImage::from_fn(28, 28, |x, y| image::Luma([pixels[(y * 28 + x) as usize]]));
    let big = image::imageops::resize(
        &gray,
        w as u32,
        h as u32,
        image::imageops::FilterType::Triangle,
    );
    let tint = [(i * 37) % 60, (i * 11) % 60, (i * 23) % 60];
    let rgb = RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let v = big.get_pixel(x, y).0[0] as usize;
        Rgb([0, 1, 2].map(|c| (v * (195 + tint[c]) / 255 + 20) as u8))
    });
    match i % 3 {
        0 => DynamicImage::ImageRgb8(rgb),
        1 => DynamicImage::ImageRgba8(RgbaImage::from_fn(w as u32, h as u32, |x, y| {
            let p = rgb.get_pixel(x, y).0;
            Rgba([p[0], p[1], p[2], 255])
        })),
        _ => DynamicImage::ImageLuma8(image::imageops::grayscale(&rgb)),
    }
}

/// `root/<class>/<i>.png` with `per_class` photos of each class from an IDX split.
fn photo_folder(root: &Path, split: IdxSplit, per_class: usize) {
    let images = LabeledImages::read_idx(&subset(), split, 10).unwrap();
    for (name, label) in CLASSES {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut written = 0;
        for i in (0..images.len()).filter(|&i| images.label(i) == label) {
            if written == per_class {
                break;
            }
            photo(images.image(i), written)
                .save(dir.join(format!("{written}.png")))
                .unwrap();
            written += 1;
        }
        assert_eq!(written, per_class, "the subset has too few {name} images");
    }
}

/// The golden mini checkpoint converted with an ImageNet-style input at 112 and 10
/// placeholder class names.
fn mini_model(dir: &Path) -> PathBuf {
    let mut config = GcConfig::mini();
    config.input = Some(InputSpec::ImageNet {
        resize: 128,
        crop: 112,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    });
    config.class_names = (0..10).map(|i| format!("mini class {i}")).collect();
    let config_path = dir.join("mini.json");
    std::fs::write(&config_path, config.to_json()).unwrap();
    let out = dir.join("mini");
    ok(&trustgc(&[
        "convert",
        golden("mini/mini.avg.pt").to_str().unwrap(),
        "--config",
        config_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    out
}

fn eval_accuracy(model: &Path, data: &Path) -> f64 {
    let stdout = ok(&trustgc(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    report["accuracy"].as_f64().unwrap()
}

fn class_names(model: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(model.join("config.json")).unwrap();
    GcConfig::from_json(&text).unwrap().class_names
}

#[test]
fn new_classes_mu_only_then_full_then_classify() {
    let dir = scratch("e2e");
    let (train, test) = (dir.join("train"), dir.join("test"));
    photo_folder(&train, IdxSplit::Train, 20);
    photo_folder(&test, IdxSplit::Test, 8);
    let mini = mini_model(&dir);
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // Means only, from the original checkpoint (converted on the fly): new classes,
    // cached latents, ood.json at the end.
    let mu = dir.join("mu");
    let run = trustgc(&[
        "finetune",
        "--from",
        golden("mini/mini.avg.pt").to_str().unwrap(),
        "--config",
        &s(&dir.join("mini.json")),
        "--data",
        &s(&train),
        "--out",
        &s(&mu),
        "--mu-only",
        "--epochs",
        "15",
        "--validation",
        "9",
        "--views",
        "3",
    ]);
    ok(&run);
    let leftovers: Vec<_> = std::fs::read_dir(&mu)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".converting"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("3 classes (bag, sneaker, trouser)"),
        "{stderr}"
    );
    assert!(stderr.contains("epoch 15/15"), "{stderr}");
    assert!(!stderr.contains("TrainingProgress"), "{stderr}");
    assert_eq!(class_names(&mu), ["bag", "sneaker", "trouser"]);
    for file in [
        "config.json",
        "model.safetensors",
        "ood.json",
        "checksums.sha256",
        "train.json",
    ] {
        assert!(mu.join(file).is_file(), "{file} missing");
    }
    // The flow is the converted model's, bit for bit.
    let flow_of = |dir: &Path| {
        let tensors =
            trustgc::weights::safetensors::read_safetensors(&dir.join("model.safetensors"))
                .unwrap();
        let mut flow: Vec<(String, String)> = tensors
            .into_iter()
            .filter(|(k, _)| !k.starts_with("head."))
            .map(|(k, v)| (k, format!("{:?}", v.values)))
            .collect();
        flow.sort();
        flow
    };
    assert_eq!(flow_of(&mu), flow_of(&mini));
    let accuracy = eval_accuracy(&mu, &test);
    assert!(accuracy > 0.7, "held-out accuracy {accuracy} (chance: 1/3)");

    // fit-ood refits the statistics on a photo folder of the model's classes, and refuses
    // other classes.
    let stdout = ok(&trustgc(&[
        "fit-ood",
        "--model",
        &s(&mu),
        "--data",
        &s(&test),
    ]));
    assert!(stdout.contains("fitted on 24 images"), "{stdout}");
    let stderr = failed(&trustgc(&[
        "fit-ood",
        "--model",
        &s(&mini),
        "--data",
        &s(&test),
    ]));
    assert!(stderr.contains("are not the model's classes"), "{stderr}");

    // A short full fine-tuning from the means-only run: same classes, the head continues
    // (with gradient checkpointing, which gives the same gradients).
    let full = dir.join("full");
    ok(&trustgc(&[
        "finetune",
        "--from",
        &s(&mu),
        "--data",
        &s(&train),
        "--out",
        &s(&full),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--validation",
        "9",
        "--checkpointing",
    ]));
    assert_eq!(class_names(&full), ["bag", "sneaker", "trouser"]);
    assert_ne!(
        flow_of(&full),
        flow_of(&mini),
        "full fine-tuning trains the flow"
    );
    let accuracy = eval_accuracy(&full, &test);
    assert!(
        accuracy > 0.6,
        "held-out accuracy {accuracy} after full fine-tuning"
    );

    // The folder is complete: classify gives a verdict.
    let stdout = ok(&trustgc(&[
        "classify",
        "--model",
        &s(&full),
        &s(&test.join("bag/0.png")),
        "--json",
    ]));
    let value: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(
        value["verdict"].is_object() || value["verdict"].is_string(),
        "{stdout}"
    );

    // A finished run is extended by more epochs; other changes are named.
    let stderr = failed(&trustgc(&["finetune", "--resume", "--out", &s(&full)]));
    assert!(stderr.contains("already finished all 1 epochs"), "{stderr}");
    let stderr = failed(&trustgc(&[
        "finetune",
        "--resume",
        "--out",
        &s(&full),
        "--epochs",
        "2",
        "--lr",
        "0.5",
    ]));
    assert!(
        stderr.contains("optimizer.lr is 0.0001 in train.json but 0.5 now"),
        "{stderr}"
    );
    ok(&trustgc(&[
        "finetune",
        "--resume",
        "--out",
        &s(&full),
        "--epochs",
        "2",
    ]));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("train.json")).unwrap()).unwrap();
    assert_eq!(saved["epochs"], 2);
    assert!(Path::new(saved["data"]["train"].as_str().unwrap()).is_absolute());
    assert!(full.join("ood.json").is_file());
    // A means-only run says how to go on instead.
    let stderr = failed(&trustgc(&[
        "finetune",
        "--resume",
        "--out",
        &s(&mu),
        "--epochs",
        "20",
    ]));
    assert!(stderr.contains("means-only run"), "{stderr}");
}

#[test]
fn bad_photo_folders_are_refused_with_their_problem() {
    let dir = scratch("bad");
    let mini = mini_model(&dir);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let finetune = |data: &Path, out: &str| {
        failed(&trustgc(&[
            "finetune",
            "--from",
            &s(&mini),
            "--data",
            &s(data),
            "--out",
            &s(&dir.join(out)),
            "--mu-only",
        ]))
    };

    // An empty class folder.
    let data = dir.join("empty-class");
    photo_folder(&data, IdxSplit::Train, 2);
    std::fs::create_dir_all(data.join("zebra")).unwrap();
    let stderr = finetune(&data, "run-empty");
    assert!(
        stderr.contains("zebra") && stderr.contains("no usable image"),
        "{stderr}"
    );

    // One class.
    let data = dir.join("one-class");
    photo_folder(&data, IdxSplit::Train, 2);
    std::fs::remove_dir_all(data.join("bag")).unwrap();
    std::fs::remove_dir_all(data.join("sneaker")).unwrap();
    let stderr = finetune(&data, "run-one");
    assert!(stderr.contains("at least two"), "{stderr}");

    // An unreadable image: fatal, naming it, unless skipped.
    let data = dir.join("broken");
    photo_folder(&data, IdxSplit::Train, 3);
    std::fs::write(data.join("bag/broken.png"), b"\x89PNG\r\n\x1a\nnope").unwrap();
    let stderr = finetune(&data, "run-broken");
    assert!(
        stderr.contains("broken.png") && stderr.contains("--skip-bad-images"),
        "{stderr}"
    );

    // No class folders at all.
    let stderr = finetune(&dir.join("empty-class/zebra"), "run-none");
    assert!(stderr.contains("no class folders"), "{stderr}");

    // A model without input representation cannot read photos.
    let bare_config = dir.join("bare.json");
    std::fs::write(&bare_config, GcConfig::mini().to_json()).unwrap();
    let bare = dir.join("bare");
    ok(&trustgc(&[
        "convert",
        golden("mini/mini.avg.pt").to_str().unwrap(),
        "--config",
        &s(&bare_config),
        "--out",
        &s(&bare),
    ]));
    let stderr = failed(&trustgc(&[
        "finetune",
        "--from",
        &s(&bare),
        "--data",
        &s(&dir.join("one-class")),
        "--out",
        &s(&dir.join("run-bare")),
    ]));
    assert!(stderr.contains("no input representation"), "{stderr}");
}
