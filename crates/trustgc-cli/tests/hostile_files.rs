//! Hostile files at the command line (issue #9, items 4 to 7): devices, pipes and links
//! as inputs and outputs, outputs that are inputs, long names, killed writers' leftovers,
//! NaN tensors, empty batches and corrupted model folders. Each case failed (hung, ate
//! memory, replaced a file, or answered NaN with exit 0) before the guarded reader and the
//! atomic writer of `trustgc-io`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use safetensors::tensor::TensorView;
use trustgc_core::GcConfig;

/// Runs the binary; a run past 60 s (a blocked read) fails the test instead of hanging it.
fn trustgc(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trustgc"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("trustgc {args:?} still runs after 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn fails_with(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "exit 0; stderr: {err}");
    for needle in needles {
        assert!(err.contains(needle), "`{needle}` not in: {err}");
    }
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
    Scratch::new("hostile", name)
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A safetensors file with float32 tensors.
fn tensors(path: &Path, items: &[(&str, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = items
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = items
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            let view = TensorView::new(safetensors::Dtype::F32, shape.clone(), b).unwrap();
            (name.to_string(), view)
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn devices_and_pipes_are_refused_as_inputs_without_blocking() {
    let dir = scratch("inputs");
    let fifo = dir.join("pipe.png");
    mkfifo(&fifo);
    let zero_link = dir.join("zero.png");
    std::os::unix::fs::symlink("/dev/zero", &zero_link).unwrap();
    for image in [s(&fifo), "/dev/zero", s(&zero_link)] {
        let out = trustgc(&["classify", image]);
        fails_with(&out, &[image, "not a regular file"]);
    }
    // The same for --config, --input and a model folder's weights.
    let config_fifo = dir.join("config.json");
    mkfifo(&config_fifo);
    let out = trustgc(&[
        "infer",
        "--weights",
        s(&golden("mini/mini.safetensors")),
        "--config",
        s(&config_fifo),
        "--input",
        s(&golden("mini/golden.safetensors")),
        "--output",
        s(&dir.join("out.safetensors")),
    ]);
    fails_with(&out, &["config.json", "named pipe"]);
    let config = dir.join("mini.json");
    std::fs::write(&config, GcConfig::mini().to_json()).unwrap();
    let out = trustgc(&[
        "infer",
        "--weights",
        s(&golden("mini/mini.safetensors")),
        "--config",
        s(&config),
        "--input",
        "/dev/zero",
        "--output",
        s(&dir.join("out.safetensors")),
    ]);
    fails_with(&out, &["/dev/zero", "character device"]);
    let out = trustgc(&["convert", "/dev/zero", "--out", s(&dir.join("conv"))]);
    fails_with(&out, &["/dev/zero", "character device"]);

    let model = dir.join("model");
    trustgc::Shipped::FashionMnist.write_to(&model).unwrap();
    std::fs::remove_file(model.join("model.safetensors")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", model.join("model.safetensors")).unwrap();
    let image = golden("images/chelsea.png");
    let out = trustgc(&["classify", "--model", s(&model), s(&image)]);
    fails_with(&out, &["model.safetensors", "character device"]);
}

#[test]
fn outputs_never_replace_inputs_links_or_pipes() {
    let dir = scratch("outputs");
    let image = dir.join("cat.png");
    std::fs::copy(golden("images/chelsea.png"), &image).unwrap();
    let before = std::fs::read(&image).unwrap();
    // The output is the input, by the same or another name.
    let alias = dir.join(".").join("cat.png");
    for output in [&image, &alias] {
        let out = trustgc(&["preprocess", s(&image), "--output", s(output)]);
        fails_with(&out, &["cat.png", "it is the input"]);
    }
    assert_eq!(
        std::fs::read(&image).unwrap(),
        before,
        "the input is intact"
    );

    // A link or pipe as the output is refused and stays what it was.
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, b"keep").unwrap();
    let link = dir.join("link.safetensors");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let fifo = dir.join("pipe.safetensors");
    mkfifo(&fifo);
    for (output, kind) in [(&link, "symbolic link"), (&fifo, "named pipe")] {
        let out = trustgc(&["preprocess", s(&image), "--output", s(output)]);
        fails_with(&out, &[s(output), kind]);
    }
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");

    // infer: the output is the input tensor file.
    let config = dir.join("mini.json");
    std::fs::write(&config, GcConfig::mini().to_json()).unwrap();
    let input = dir.join("golden.safetensors");
    std::fs::copy(golden("mini/golden.safetensors"), &input).unwrap();
    let out = trustgc(&[
        "infer",
        "--weights",
        s(&golden("mini/mini.safetensors")),
        "--config",
        s(&config),
        "--input",
        s(&input),
        "--output",
        s(&input),
    ]);
    fails_with(&out, &["golden.safetensors", "it is the input"]);
    assert_eq!(
        std::fs::read(&input).unwrap(),
        std::fs::read(golden("mini/golden.safetensors")).unwrap()
    );

    // A 250-byte output name works (the temporary name is shortened).
    let long = dir.join("x".repeat(238) + ".safetensors");
    let out = trustgc(&["preprocess", s(&image), "--output", s(&long)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(long.is_file());
    // An output in a missing folder names the output.
    let missing = dir.join("no").join("such").join("x.safetensors");
    let out = trustgc(&["preprocess", s(&image), "--output", s(&missing)]);
    fails_with(&out, &[s(&missing)]);
}

#[test]
fn a_killed_conversion_leaves_nothing_behind_for_long() {
    let dir = scratch("stale");
    let config = dir.join("mini.json");
    std::fs::write(&config, GcConfig::mini().to_json()).unwrap();
    let out_dir = dir.join("converted");
    // What a convert killed mid-way leaves: its partial folder, named by its process id.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = dir.join(format!(".converted.partial-{dead}"));
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("model.safetensors"), vec![0u8; 1 << 20]).unwrap();
    let out = trustgc(&[
        "convert",
        s(&golden("mini/mini_legacy.avg.pt")),
        "--config",
        s(&config),
        "--out",
        s(&out_dir),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stale.exists(),
        "the killed run's partial folder was removed"
    );
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
    let manifest = std::fs::read_to_string(out_dir.join("checksums.sha256")).unwrap();
    assert!(manifest.contains("  model.safetensors\n"), "{manifest}");
}

#[test]
fn a_checkpoint_with_the_wrong_sha256_is_not_converted() {
    let dir = scratch("digest");
    let config = dir.join("mini.json");
    std::fs::write(&config, GcConfig::mini().to_json()).unwrap();
    let pt = golden("mini/mini_legacy.avg.pt");
    let right = trustgc_io::Sha256Digest::of(&std::fs::read(&pt).unwrap()).to_string();
    let last = if right.ends_with('0') { "1" } else { "0" };
    let wrong = format!("{}{last}", &right[..63]);
    let out_dir = dir.join("converted");
    let out = trustgc(&[
        "convert",
        s(&pt),
        "--config",
        s(&config),
        "--out",
        s(&out_dir),
        "--sha256",
        &wrong,
    ]);
    fails_with(&out, &["mini_legacy.avg.pt", &right, "download it again"]);
    assert!(!out_dir.exists());
    let out = trustgc(&[
        "convert",
        s(&pt),
        "--config",
        s(&config),
        "--out",
        s(&out_dir),
        "--sha256",
        &right.to_uppercase(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let card = std::fs::read_to_string(out_dir.join("README.md")).unwrap();
    assert!(
        card.contains(&right),
        "the card records the source's SHA-256"
    );
}

#[test]
fn a_flipped_byte_in_a_model_folder_is_named() {
    let dir = scratch("flip");
    let model = dir.join("model");
    trustgc::Shipped::FashionMnist.write_to(&model).unwrap();
    let image = golden("images/chelsea.png");
    let out = trustgc(&["classify", "--model", s(&model), s(&image)]);
    assert!(out.status.success(), "{}", stderr(&out));
    // One byte of one weight, deep in the data (the header still parses).
    let weights = model.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x01;
    std::fs::write(&weights, &bytes).unwrap();
    let out = trustgc(&["classify", "--model", s(&model), s(&image)]);
    fails_with(
        &out,
        &["model.safetensors", "corrupt or was changed", "SHA-256"],
    );
    // ood.json changed by hand without updating the manifest.
    bytes[at] ^= 0x01;
    std::fs::write(&weights, &bytes).unwrap();
    let ood = std::fs::read_to_string(model.join("ood.json")).unwrap();
    std::fs::write(
        model.join("ood.json"),
        ood.replace("\"alpha\"", " \"alpha\""),
    )
    .unwrap();
    let out = trustgc(&["classify", "--model", s(&model), s(&image)]);
    fails_with(&out, &["ood.json", "corrupt or was changed"]);
    // ood.json deleted from a folder whose manifest lists it: not silently verdict-free.
    std::fs::write(model.join("ood.json"), ood).unwrap();
    std::fs::remove_file(model.join("ood.json")).unwrap();
    let out = trustgc(&["classify", "--model", s(&model), s(&image)]);
    fails_with(&out, &["ood.json", "is missing", "lists it"]);
}

#[test]
fn infer_refuses_nan_inputs_and_empty_batches() {
    let dir = scratch("nan");
    let config = dir.join("mini.json");
    let mini = GcConfig::mini();
    std::fs::write(&config, mini.to_json()).unwrap();
    let weights = golden("mini/mini.safetensors");
    let run = |input: &Path, reverse: bool| {
        let output = dir.join("out.safetensors");
        let mut args = vec![
            "infer",
            "--weights",
            s(&weights),
            "--config",
            s(&config),
            "--input",
            s(input),
            "--output",
            s(&output),
        ];
        if reverse {
            args.push("--reverse");
        }
        let out = trustgc(&args);
        assert!(!output.exists() || out.status.success());
        out
    };
    let [c, h, w] = mini.input_shape;
    let n = c * h * w;
    for (value, shown) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf")] {
        let mut x = vec![0.1f32; 2 * n];
        x[n + 5] = value;
        let input = dir.join("x.safetensors");
        tensors(&input, &[("x", vec![2, c, h, w], x)]);
        fails_with(
            &run(&input, false),
            &["`x`", "non-finite", shown, &(n + 5).to_string()],
        );
    }
    let (l, k) = (mini.n_loss_dims, mini.conv_dims());
    let mut z_fc = vec![0.0f32; 2 * l];
    z_fc[3] = f32::NAN;
    let latents = dir.join("z.safetensors");
    tensors(
        &latents,
        &[
            ("z_fc", vec![2, l], z_fc),
            ("z_conv", vec![2, k], vec![0.0; 2 * k]),
        ],
    );
    fails_with(&run(&latents, true), &["`z_fc`", "non-finite"]);
    // A batch of no latents (and of no images).
    tensors(
        &latents,
        &[("z_fc", vec![0, l], vec![]), ("z_conv", vec![0, k], vec![])],
    );
    fails_with(&run(&latents, true), &["`z_fc`", "holds no values"]);
    let empty = dir.join("empty.safetensors");
    tensors(&empty, &[("x", vec![0, c, h, w], vec![])]);
    fails_with(&run(&empty, false), &["`x`", "holds no values"]);
    // Finite latents so large that the inverse overflows: refused, nothing written.
    tensors(
        &latents,
        &[
            ("z_fc", vec![1, l], vec![3e38; l]),
            ("z_conv", vec![1, k], vec![3e38; k]),
        ],
    );
    let out = run(&latents, true);
    if out.status.success() {
        let written =
            trustgc::weights::safetensors::read_safetensors(&dir.join("out.safetensors")).unwrap();
        for (key, t) in written {
            let trustgc::weights::Values::Float(v) = t.values else {
                panic!("{key} is not float")
            };
            assert!(
                v.iter().all(|x| x.is_finite()),
                "{key} holds non-finite values"
            );
        }
    } else {
        fails_with(&out, &["non-finite", "nothing was written"]);
    }
}
