//! `trustgc bench` end to end on the mini architecture (no timing assertions: the numbers
//! depend on the machine and its load).

use std::process::{Command, Output};

use serde_json::Value;

fn trustgc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trustgc"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Runs `bench` with `args` and `--json`, and parses the last line of stdout.
fn bench_json(args: &[&str]) -> Value {
    let mut all = vec!["bench", "--json"];
    all.extend_from_slice(args);
    let run = trustgc(&all);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let last = stdout.lines().last().expect("bench prints a line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {last}"))
}

fn positive(report: &Value, key: &str) -> f64 {
    let value = report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {report}"));
    assert!(value.is_finite() && value > 0.0, "`{key}` = {value}");
    value
}

#[test]
fn bench_reports_speed_flops_and_memory_as_json() {
    let report = bench_json(&[
        "--preset", "mini", "--batch", "2", "--runs", "3", "--warmup", "1",
    ]);
    assert_eq!(report["preset"], "mini");
    assert_eq!(report["device"], "cpu");
    assert_eq!(report["batch"], 2);
    assert_eq!(report["runs"], 3);
    assert_eq!(report["train"], false);
    assert_eq!(report["input_shape"], serde_json::json!([3, 112, 112]));
    for key in [
        "ms_per_image",
        "images_per_s",
        "gflops_per_s",
        "gflop_per_batch",
        "peak_rss_mb",
        "median_ms",
    ] {
        positive(&report, key);
    }
    // The derived figures agree with each other.
    let (median, per_image) = (
        positive(&report, "median_ms"),
        positive(&report, "ms_per_image"),
    );
    assert!((median / 2.0 - per_image).abs() <= 1e-9 * median);
    let images_per_s = positive(&report, "images_per_s");
    assert!((images_per_s * per_image / 1e3 - 1.0).abs() < 1e-9);
    let gflops = positive(&report, "gflop_per_batch") / (median / 1e3);
    assert!((positive(&report, "gflops_per_s") / gflops - 1.0).abs() < 1e-9);
    assert_eq!(report["run_ms"].as_array().unwrap().len(), 3);
    assert!(report.get("run_loss").is_none());
}

#[test]
fn a_training_step_gives_the_same_losses_with_checkpointing() {
    let args = [
        "--preset", "mini", "--train", "--batch", "2", "--runs", "2", "--warmup", "1",
    ];
    let plain = bench_json(&args);
    let mut with = args.to_vec();
    with.push("--checkpointing");
    let checkpointed = bench_json(&with);
    for report in [&plain, &checkpointed] {
        assert_eq!(report["train"], true);
        for key in [
            "ms_per_image",
            "images_per_s",
            "gflops_per_s",
            "peak_rss_mb",
        ] {
            positive(report, key);
        }
    }
    assert_eq!(checkpointed["checkpointing"], true);
    // The second step's loss depends on the first step's gradients: recomputing the
    // element-wise operations in the backward pass must not change them.
    let losses = |r: &Value| -> Vec<f64> {
        r["run_loss"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let (a, b) = (losses(&plain), losses(&checkpointed));
    assert_eq!(a.len(), 2);
    assert!(a.iter().all(|l| l.is_finite()));
    assert_ne!(a[0], a[1], "the update changed nothing");
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-6 * x.abs(), "{a:?} vs {b:?}");
    }
}

#[test]
fn bad_bench_arguments_are_refused() {
    for args in [
        &["bench", "--preset", "mini", "--checkpointing"][..],
        &["bench"][..],
        &["bench", "--preset", "mini", "--model", "fashion-mnist"][..],
        &["bench", "--preset", "mini", "--batch", "0"][..],
        &["bench", "--preset", "mini", "--runs", "0"][..],
        &["bench", "--preset", "resnet"][..],
    ] {
        let run = trustgc(args);
        assert_eq!(run.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn bench_runs_a_shipped_model_by_name() {
    let report = bench_json(&["--model", "fashion-mnist", "--batch", "4", "--runs", "1"]);
    assert_eq!(report["model"], "fashion-mnist");
    assert!(report["preset"].is_null());
    assert_eq!(report["input_shape"], serde_json::json!([4, 16, 16]));
    positive(&report, "gflops_per_s");
}
