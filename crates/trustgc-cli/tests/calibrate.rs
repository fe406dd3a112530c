//! `trustgc calibrate` end to end on a copy of the shipped model and the committed 200
//! Fashion-MNIST test images.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn trustgc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trustgc"))
        .args(args)
        .output()
        .unwrap()
}

#[path = "../../../tests-support/scratch.rs"]
mod support;
use support::Scratch;

#[test]
fn calibrate_fits_measures_and_stores_a_temperature() {
    let dir = Scratch::new("calibrate", "fit");
    let model = dir.join("model");
    trustgc::Shipped::FashionMnist.write_to(&model).unwrap();
    std::fs::remove_file(model.join("calibration.json")).unwrap();
    trustgc::weights::model_dir::write_manifest(&model).unwrap();
    let data = root().join("crates/trustgc-train/tests/data/fashion-mnist-subset");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "calibrate",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--calibrate",
            "100",
            "--json",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = trustgc(&a);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let last = stdout.lines().last().unwrap().to_string();
        serde_json::from_str::<serde_json::Value>(&last).unwrap()
    };
    let dry = run(&["--dry-run"]);
    assert!(
        !model.join("calibration.json").exists(),
        "--dry-run writes nothing"
    );
    for key in ["ece_before", "ece_after", "temperature"] {
        let v = dry[key].as_f64().unwrap();
        assert!(v.is_finite() && v >= 0.0, "{key} = {v}");
    }
    assert!(dry["ece_before"].as_f64().unwrap() <= 1.0);
    assert_eq!(
        dry["before"]["n_samples"], 100,
        "evaluated on the other 100"
    );
    let written = run(&[]);
    assert_eq!(written["temperature"], dry["temperature"], "deterministic");
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("calibration.json")).unwrap()).unwrap();
    assert_eq!(stored["temperature"], written["temperature"]);
    assert_eq!(stored["fitted_images"], 100);
    let manifest = std::fs::read_to_string(model.join("checksums.sha256")).unwrap();
    assert!(manifest.contains("  calibration.json\n"), "{manifest}");
    // classify applies it and says so.
    let out = trustgc(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        root().join("examples/images/bag.png").to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["temperature"], stored["temperature"], "{line}");
    // A tampered temperature is refused on load.
    let bad = std::fs::read_to_string(model.join("calibration.json"))
        .unwrap()
        .replace(&stored["temperature"].to_string(), "-1.0");
    trustgc::weights::model_dir::write_model_file(&model, "calibration.json", bad.as_bytes())
        .unwrap();
    let out = trustgc(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        root().join("examples/images/bag.png").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("calibration.json") && err.contains("temperature"),
        "{err}"
    );
    // Too few images to split is an error naming the counts.
    let out = trustgc(&[
        "calibrate",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--skip",
        "199",
        "--dry-run",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("too few"));
    std::fs::remove_dir_all(&dir).unwrap();
}
