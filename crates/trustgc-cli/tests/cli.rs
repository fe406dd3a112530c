//! The `trustgc` binary end to end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use trustgc::weights::Values as RawValues;
use trustgc::weights::safetensors::read_safetensors;
use trustgc_core::GcConfig;

fn trustgc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trustgc"))
        .args(args)
        .output()
        .expect("the binary runs")
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
    Scratch::new("cli", name)
}

fn floats(path: &Path, key: &str) -> Vec<f64> {
    match &read_safetensors(path).unwrap()[key].values {
        RawValues::Float(v) => v.clone(),
        RawValues::Int(v) => v.iter().map(|&i| i as f64).collect(),
    }
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    d / b.iter().map(|y| y * y).sum::<f64>().sqrt()
}

#[test]
fn infer_reproduces_the_golden_latents_and_inverse() {
    let dir = scratch("infer");
    let config = dir.join("mini.json");
    std::fs::write(&config, GcConfig::mini().to_json()).unwrap();
    let weights = golden("mini/mini.safetensors");
    let inputs = golden("mini/golden.safetensors");
    let out = dir.join("out.safetensors");
    let run = trustgc(&[
        "infer",
        "--weights",
        weights.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--input",
        inputs.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // The same float32 tolerances as the library's golden tests.
    assert!(rel_err(&floats(&out, "z_fc"), &floats(&inputs, "z_fc")) < 1e-5);
    assert!(rel_err(&floats(&out, "z_conv"), &floats(&inputs, "z_conv")) < 1e-5);
    assert!(rel_err(&floats(&out, "log_det"), &floats(&inputs, "log_jac")) < 1e-6);
    assert!(rel_err(&floats(&out, "logits"), &floats(&inputs, "logits")) < 1e-5);
    assert_eq!(
        read_safetensors(&out).unwrap()["class_log_likelihoods"].shape,
        vec![4, 10]
    );

    let back = dir.join("back.safetensors");
    let run = trustgc(&[
        "infer",
        "--weights",
        weights.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--input",
        inputs.to_str().unwrap(),
        "--output",
        back.to_str().unwrap(),
        "--reverse",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let err = floats(&back, "x")
        .iter()
        .zip(floats(&inputs, "x_rec"))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(err < 3e-4, "x_rec max abs err {err}");
}

#[test]
fn infer_rejects_bad_inputs_with_a_message() {
    let dir = scratch("infer-bad");
    let config = dir.join("mini.json");
    std::fs::write(&config, GcConfig::mini().to_json()).unwrap();
    let weights = golden("mini/mini.safetensors");
    // The golden batch has no `x` under another name; the reference's own x is [4,3,112,112]
    // but the full ImageNet architecture (no --config) expects 3x224x224 and other keys.
    let run = trustgc(&[
        "infer",
        "--weights",
        weights.to_str().unwrap(),
        "--input",
        golden("mini/golden.safetensors").to_str().unwrap(),
        "--output",
        dir.join("x.safetensors").to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("checkpoint does not match the model config"),
        "{stderr}"
    );
    let run = trustgc(&[
        "infer",
        "--weights",
        weights.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--input",
        dir.join("missing.safetensors").to_str().unwrap(),
        "--output",
        dir.join("y.safetensors").to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("missing.safetensors"));
}

#[test]
fn preprocess_writes_what_torchvision_computes() {
    let dir = scratch("preprocess");
    let out = dir.join("x.safetensors");
    let images: Vec<String> = ["chelsea", "coffee", "astronaut"]
        .iter()
        .map(|n| {
            golden(&format!("images/{n}.png"))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut args = vec![
        "preprocess",
        "--preset",
        "imagenet",
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend(images.iter().map(String::as_str));
    let run = trustgc(&args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let ours = floats(&out, "x");
    let expected = floats(&golden("images/preprocessed.safetensors"), "batch");
    let err = ours
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(err <= 1.0 / 255.0 / 0.224, "max abs err {err}");
}

#[test]
fn unreadable_images_fail_with_their_path_and_exit_code_3() {
    let dir = scratch("classify-bad");
    let bad = dir.join("not-an-image.png");
    std::fs::write(&bad, b"definitely not a png").unwrap();
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    // A model folder from the golden mini, with a grayscale-free config: classify needs an
    // input representation, so give it the ImageNet one at 112.
    let mut config = GcConfig::mini();
    config.input = Some(trustgc_core::input::InputSpec::ImageNet {
        resize: 128,
        crop: 112,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    });
    std::fs::write(model.join("config.json"), config.to_json()).unwrap();
    let loaded = trustgc::weights::reference::load_reference_safetensors::<burn::backend::Flex>(
        &golden("mini/mini.safetensors"),
        &config,
        &Default::default(),
    )
    .unwrap();
    trustgc::weights::safetensors::save_safetensors(&loaded, &model.join("model.safetensors"))
        .unwrap();
    let good = golden("images/chelsea.png");
    let run = trustgc(&[
        "classify",
        "--model",
        model.to_str().unwrap(),
        bad.to_str().unwrap(),
        good.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        run.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stderr).contains("not-an-image.png"));
    // The good image is still classified, as one JSON line.
    let stdout = String::from_utf8_lossy(&run.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let value: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(value["top_k"].as_array().unwrap().len(), 3);
    assert!(value["log_marginal"].as_f64().unwrap().is_finite());
}

#[test]
fn convert_then_infer_equals_infer_on_the_checkpoint() {
    let dir = scratch("convert");
    let config = dir.join("mini.json");
    std::fs::write(&config, GcConfig::mini().to_json()).unwrap();
    let pt = golden("mini/mini_legacy.avg.pt");
    let out = dir.join("converted");
    let _ = std::fs::remove_dir_all(&out);
    let run = trustgc(&[
        "convert",
        pt.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let inputs = golden("mini/golden.safetensors");
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    let run = trustgc(&[
        "infer",
        "--weights",
        out.to_str().unwrap(),
        "--input",
        inputs.to_str().unwrap(),
        "--output",
        a.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let run = trustgc(&[
        "infer",
        "--weights",
        pt.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--input",
        inputs.to_str().unwrap(),
        "--output",
        b.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for key in [
        "z_fc",
        "z_conv",
        "log_det",
        "logits",
        "class_log_likelihoods",
    ] {
        assert_eq!(
            floats(&a, key),
            floats(&b, key),
            "{key}: converted folder vs .pt"
        );
    }
    // Converting again into the same folder is refused with a message.
    let run = trustgc(&[
        "convert",
        pt.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("already exists"));
}

#[test]
fn a_closed_pipe_ends_the_process_quietly() {
    // `trustgc classify … | head -n 1`: the reader goes away after the first line. Rust
    // ignores SIGPIPE by default, and the next println! would panic with "Broken pipe".
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let images = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/images");
    let mut args = vec!["classify".to_string()];
    // Enough images that the output outlasts the pipe's buffer once the reader is gone.
    for _ in 0..400 {
        args.push(images.join("bag.png").to_str().unwrap().to_string());
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_trustgc"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty(), "classify printed nothing");
    // The reader is dropped here: the pipe is closed.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success() || out.status.signal() == Some(13),
        "status {:?}, stderr {stderr}",
        out.status
    );
}

#[test]
fn prototypes_writes_the_grid_where_asked() {
    let dir = scratch("prototypes");
    let grid = dir.join("nested/grid.png");
    let run = trustgc(&[
        "prototypes",
        "--out",
        grid.to_str().unwrap(),
        "--samples",
        "1",
        "--classes",
        "Bag,Coat",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("prototypes classified as their class"),
        "{stdout}"
    );
    let two_rows = trustgc::image::open(&grid).expect("the grid is a PNG");
    // One class: one row fewer.
    let one = dir.join("one.png");
    let run = trustgc(&[
        "prototypes",
        "--out",
        one.to_str().unwrap(),
        "--samples",
        "1",
        "--classes",
        "Bag",
    ]);
    assert!(run.status.success());
    let one_row = trustgc::image::open(&one).expect("the grid is a PNG");
    assert_eq!(two_rows.width(), one_row.width());
    assert!(two_rows.height() > one_row.height());
    // A bad class name is an error that names it, and writes nothing.
    let bad = dir.join("bad.png");
    let run = trustgc(&[
        "prototypes",
        "--out",
        bad.to_str().unwrap(),
        "--classes",
        "Sock",
    ]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("Sock"));
    assert!(!bad.exists());
}
