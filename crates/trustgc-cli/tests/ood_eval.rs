//! `trustgc ood-eval` end to end on the committed 200 Fashion-MNIST test images against
//! noise (an IDX file) and a folder holding an MNIST digit.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[path = "../../../tests-support/scratch.rs"]
mod support;
use support::Scratch;

fn scratch(name: &str) -> Scratch {
    Scratch::new("ood-eval", name)
}

#[path = "../../../tests-support/noise_idx.rs"]
mod noise;
use noise::noise_idx;

#[test]
fn ood_eval_reports_every_score_for_every_set() {
    let dir = scratch("sets");
    let noise = dir.join("noise-images-idx3-ubyte");
    noise_idx(&noise, 50);
    let digits = dir.join("digits");
    std::fs::create_dir_all(digits.join("nested")).unwrap();
    std::fs::copy(
        root().join("examples/images/digit-7.png"),
        digits.join("nested/digit-7.png"),
    )
    .unwrap();
    std::fs::write(digits.join("notes.txt"), "not an image").unwrap();
    let data = root().join("crates/trustgc-train/tests/data/fashion-mnist-subset");
    let out = Command::new(env!("CARGO_BIN_EXE_trustgc"))
        .args([
            "ood-eval",
            "--in",
            data.to_str().unwrap(),
            "--ood",
            &format!("noise={}", noise.display()),
            "--ood",
            &format!("digits={}", digits.display()),
            "--bootstrap",
            "50",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sets = report["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 3);
    assert_eq!(sets[0]["name"], "in");
    assert_eq!(sets[0]["images"], 200);
    assert_eq!(sets[1]["images"], 50);
    assert_eq!(sets[2]["images"], 1, "the text file is not an image");
    // Noise is far from clothing: every generative score but the one-sided complexity
    // score ranks all of it below all 200 test images.
    let noise = &sets[1]["detection"];
    for score in ["log_px", "max_log_pxy", "typicality"] {
        assert_eq!(noise[score]["auroc"], 1.0, "{score}: {}", noise[score]);
        // Perfect separation in every resample: the interval collapses to the point.
        let ci = &noise[score]["ci"]["auroc"];
        assert_eq!(ci["low"], 1.0, "{ci}");
        assert_eq!(ci["high"], 1.0, "{ci}");
        assert_eq!(noise[score]["fpr_at_95_tpr"], 0.0, "{score}");
    }
    assert!(noise["complexity"]["auroc"].as_f64().unwrap() < 0.5);
    for score in [
        "neg_min_distance",
        "complexity",
        "max_posterior",
        "energy",
        "max_logit",
    ] {
        // Every metric is reported with an ordered interval. (A percentile interval need
        // not contain its point estimate: complexity's AUPR-in here lies just below its
        // interval, since resampling duplicates scores into ties. The AUROC's does here.)
        let r = &noise[score];
        for key in ["auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr"] {
            let v = r[key].as_f64().unwrap_or(f64::NAN);
            let ci = &r["ci"][key];
            let (low, high) = (ci["low"].as_f64().unwrap(), ci["high"].as_f64().unwrap());
            assert!(
                v.is_finite() && low <= high,
                "{score}.{key} = {v}, [{low}, {high}]"
            );
            if key == "auroc" {
                assert!(
                    low <= v && v <= high,
                    "{score}.auroc = {v} outside [{low}, {high}]"
                );
            }
        }
    }
    assert_eq!(sets[1]["verdict_ood_rate"], 1.0);
    assert_eq!(sets[2]["verdict_ood_rate"], 1.0, "the digit is flagged");
    // The in-distribution verdict rate is the false-alarm rate: small, not zero-by-bug.
    let alarms = sets[0]["verdict_ood_rate"].as_f64().unwrap();
    assert!(alarms < 0.15, "{alarms}");
    let calibration = &report["calibration"];
    assert_eq!(calibration["n_samples"], 200);
    assert!(calibration["accuracy"].as_f64().unwrap() > 0.8);
    let ece = calibration["ece"].as_f64().unwrap();
    assert!((0.0..0.2).contains(&ece), "{ece}");
}

#[test]
fn ood_eval_refuses_sets_without_images() {
    let dir = scratch("empty");
    let data = root().join("crates/trustgc-train/tests/data/fashion-mnist-subset");
    let out = Command::new(env!("CARGO_BIN_EXE_trustgc"))
        .args([
            "ood-eval",
            "--in",
            data.to_str().unwrap(),
            "--ood",
            &format!("empty={}", dir.display()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no PNG or JPEG images"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_trustgc"))
        .args([
            "ood-eval",
            "--in",
            data.to_str().unwrap(),
            "--ood",
            "nameonly",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME=PATH"));
}

/// `trustgc fit-ood` with the latent test, on a copy of the shipped model: the Gaussian
/// is fitted on the subset's 1,000 training images, the thresholds on its 200 test images;
/// the refitted folder then gives verdicts with the latent statistic, and an MNIST digit
/// is called out of distribution.
#[test]
fn fit_ood_adds_a_latent_test_that_the_model_folder_then_uses() {
    let dir = scratch("fit-latent");
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(
            root().join("weights/fashion-mnist").join(file),
            model.join(file),
        )
        .unwrap();
    }
    let data = root().join("crates/trustgc-train/tests/data/fashion-mnist-subset");
    let fit = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_trustgc"))
            .args(["fit-ood", "--model", model.to_str().unwrap()])
            .args(["--data", data.to_str().unwrap(), "--latent-rank", "16"])
            .args(extra)
            .output()
            .unwrap()
    };
    // The Gaussian must not be fitted on the images that set its threshold.
    let out = fit(&["--latent-split", "test"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("calibration split"), "{stderr}");
    assert!(
        !model.join("ood.json").exists(),
        "nothing written on an error"
    );

    let out = fit(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("latent test: Gaussian fitted on 1000 images (rank 16)"),
        "{stdout}"
    );
    let ood: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("ood.json")).unwrap()).unwrap();
    let latent = &ood["latent"];
    assert_eq!(latent["alpha"], 0.02);
    assert_eq!(
        latent["gaussian"]["components"].as_array().unwrap().len(),
        16
    );
    assert_eq!(latent["gaussian"]["class_dims"], 128);
    assert!(latent["threshold"].as_f64().unwrap() > 0.0);

    let out = Command::new(env!("CARGO_BIN_EXE_trustgc"))
        .args(["classify", "--model", model.to_str().unwrap(), "--json"])
        .arg(root().join("examples/images/digit-7.png"))
        .arg(root().join("examples/images/bag.png"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        assert!(line["latent_distance"].as_f64().unwrap() > 0.0, "{line}");
    }
    assert_eq!(
        lines[0]["verdict"]["verdict"], "out_of_distribution",
        "{}",
        lines[0]
    );
    assert!(
        lines[0]["latent_distance"].as_f64().unwrap()
            > lines[1]["latent_distance"].as_f64().unwrap(),
        "the digit lies farther from the clothes than the bag does"
    );

    // A hand-edited Gaussian of the wrong size is refused when the folder is opened.
    let mut broken = ood.clone();
    broken["latent"]["gaussian"]["shared_mean"]
        .as_array_mut()
        .unwrap()
        .pop();
    std::fs::write(
        model.join("ood.json"),
        serde_json::to_string(&broken).unwrap(),
    )
    .unwrap();
    // The checksums are rewritten, so that the shape check, not the checksum, refuses it.
    trustgc::weights::model_dir::write_manifest(&model).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_trustgc"))
        .args(["classify", "--model", model.to_str().unwrap()])
        .arg(root().join("examples/images/bag.png"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ood.json"), "{stderr}");
    assert!(stderr.contains("its Gaussian"), "the shape check: {stderr}");
}
