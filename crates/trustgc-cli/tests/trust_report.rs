//! `trustgc attack` and `trustgc trust-report` end to end on the committed Fashion-MNIST
//! test images (the shipped model): the report writes every file its `report.json`
//! lists, attacks stay within their budget, and bad sets are clear errors.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[path = "../../../tests-support/scratch.rs"]
mod support;
use support::Scratch;

fn subset() -> PathBuf {
    root().join("crates/trustgc-train/tests/data/fashion-mnist-subset")
}

#[path = "../../../tests-support/noise_idx.rs"]
mod noise;
use noise::noise_idx;

fn trustgc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trustgc"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_trust_report_writes_every_file_it_lists() {
    let dir = Scratch::new("trust-report", "report");
    let noise = dir.join("noise-images-idx3-ubyte");
    noise_idx(&noise, 20);
    let out_dir = dir.join("report");
    let out = trustgc(&[
        "trust-report",
        "--data",
        subset().to_str().unwrap(),
        "--limit",
        "30",
        "--attack-limit",
        "10",
        "--eps",
        "2,8",
        "--steps",
        "3",
        "--adaptive-steps",
        "3",
        "--ood",
        &format!("noise={}", noise.display()),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("report.json")).unwrap()).unwrap();
    let files: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for expected in [
        "report.json",
        "report.md",
        "reliability.png",
        "roc-noise.png",
        "corruptions.png",
        "attacks.png",
    ] {
        assert!(
            files.contains(&expected),
            "{expected} not listed: {files:?}"
        );
    }
    for file in &files {
        let bytes = std::fs::read(out_dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!bytes.is_empty(), "{file} is empty");
        if file.ends_with(".png") {
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{file} is not a PNG");
        }
    }
    // Nothing else was written.
    let written = std::fs::read_dir(&out_dir).unwrap().count();
    assert_eq!(written, files.len());
    assert_eq!(report["images"], 30);
    assert_eq!(report["attacked_images"], 10);
    // FGSM and PGD at two budgets, and the adaptive attack at both.
    let attacks = report["attacks"]["attacks"].as_array().unwrap();
    assert_eq!(attacks.len(), 6);
    // One clean row and 6 corruptions × 5 severities.
    let corruptions = report["corruptions"].as_array().unwrap();
    assert_eq!(corruptions.len(), 31);
    assert_eq!(corruptions[0]["severity"], 0);
    assert_eq!(
        corruptions[0]["summary"]["accuracy"],
        report["clean_accuracy"]
    );
    // Noise is flagged.
    assert!(report["ood"][0]["flag_rate"].as_f64().unwrap() > 0.9);
    let markdown = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(markdown.contains("## Adversarial attacks"), "{markdown}");
    assert!(markdown.contains("(corruptions.png)"));
}

#[test]
fn attacks_stay_within_their_budget_and_lower_accuracy() {
    let out = trustgc(&[
        "attack",
        "--data",
        subset().to_str().unwrap(),
        "--limit",
        "24",
        "--eps",
        "1,8",
        "--steps",
        "5",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["images"], 24);
    let clean = report["clean"]["accuracy"].as_f64().unwrap();
    let attacks = report["attacks"].as_array().unwrap();
    assert_eq!(attacks.len(), 4);
    for a in attacks {
        let levels = a["settings"]["epsilon"].as_f64().unwrap() * 255.0;
        let moved = a["mean_linf_levels"].as_f64().unwrap();
        assert!(moved <= levels + 1e-9 && moved > 0.0, "{a}");
        assert!(a["summary"]["accuracy"].as_f64().unwrap() <= clean, "{a}");
    }
    let pgd8 = &attacks[3];
    assert_eq!(pgd8["settings"]["kind"], "pgd");
    assert!(pgd8["summary"]["accuracy"].as_f64().unwrap() < clean);
}

#[test]
fn sets_without_images_or_with_one_class_are_clear_errors() {
    let dir = Scratch::new("trust-report", "bad-sets");
    // An IDX set whose labels are all 3.
    let one_class = dir.join("one-class");
    std::fs::create_dir_all(&one_class).unwrap();
    noise_idx(&one_class.join("t10k-images-idx3-ubyte"), 5);
    let mut labels = Vec::new();
    labels.extend(2049u32.to_be_bytes());
    labels.extend(5u32.to_be_bytes());
    labels.extend([3u8; 5]);
    std::fs::write(one_class.join("t10k-labels-idx1-ubyte"), labels).unwrap();
    let out = trustgc(&[
        "attack",
        "--data",
        one_class.to_str().unwrap(),
        "--eps",
        "2",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least two classes"), "{stderr}");
    // No images at all.
    let out = trustgc(&[
        "attack",
        "--data",
        subset().to_str().unwrap(),
        "--limit",
        "0",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no images"), "{stderr}");
    // An empty folder.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = trustgc(&[
        "trust-report",
        "--data",
        empty.to_str().unwrap(),
        "--out",
        dir.join("report").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no test IDX files"), "{stderr}");
    // A budget that is not a number of levels.
    let out = trustgc(&[
        "attack",
        "--data",
        subset().to_str().unwrap(),
        "--eps",
        "nan",
    ]);
    assert!(!out.status.success());
    assert!(!dir.join("report").exists());
}

#[test]
fn class_folders_are_taken_class_by_class_in_turn() {
    // Two images per class folder; the first 2 images of the set must be of two classes
    // (round robin), not both of the first folder (which would be a one-class error).
    let dir = Scratch::new("trust-report", "folders");
    let classes = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ];
    for (c, _) in classes.iter().enumerate() {
        let folder = dir.join(format!("class-{c}"));
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..2u8 {
            let image = trustgc::image::GrayImage::from_fn(28, 28, |x, y| {
                trustgc::image::Luma([((x * 9 + y * 3) as u8).wrapping_mul(c as u8 + 1 + i)])
            });
            image.save(folder.join(format!("{i}.png"))).unwrap();
        }
    }
    // A hidden folder is not a class.
    std::fs::create_dir_all(dir.join(".hidden")).unwrap();
    let out = trustgc(&[
        "attack",
        "--data",
        dir.to_str().unwrap(),
        "--limit",
        "2",
        "--eps",
        "1",
        "--steps",
        "2",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["images"], 2);
}
