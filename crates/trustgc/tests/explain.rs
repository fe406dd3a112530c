//! Explanations (`trustgc::explain`) are faithful to the model: the margin decomposition
//! adds up to the model's own margin, counterfactuals are classified as their class and
//! round-trip through the flow, prototypes are classified as their class; on the shipped
//! Fashion-MNIST model and on the golden mini model (ImageNet architecture, random
//! weights, low-rank conv means).

mod common;

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use common::{
    fashion_mnist_test_images as test_images, golden_path, mini_classifier as mini, mini_config,
    shipped_classifier as shipped, tensor,
};
use trustgc::core::input::InputSpec;
use trustgc::explain::{
    ExplainError, ExplainSettings, LatentGroup, PrototypeSettings, input_to_image,
};
use trustgc::weights::reference::load_reference_safetensors;
use trustgc::{Classifier, ClassifyError, GcConfig, GenerativeClassifier, Mode, Shipped};

type B = Flex;

fn host(t: Tensor<B, 2>) -> Vec<f64> {
    t.into_data().convert::<f64>().into_vec::<f64>().unwrap()
}

/// `z` of one input and `μ_a`, `μ_b`, all `D` values, computed here from the model's
/// public parts (not by the code under test).
fn latent_and_means(
    classifier: &Classifier<B>,
    x: Tensor<B, 4>,
    a: usize,
    b: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let out = classifier.model().forward(x, Mode::Eval);
    let mut z = host(out.z_fc);
    z.extend(host(out.z_conv));
    let head = &classifier.model().head;
    let mu_fc = host(head.mu_fc.val());
    let mu_conv = host(head.materialize_mu_conv());
    let (l, c) = (
        classifier.config().n_loss_dims,
        z.len() - classifier.config().n_loss_dims,
    );
    let mean = |y: usize| {
        let mut m = mu_fc[y * l..(y + 1) * l].to_vec();
        m.extend_from_slice(&mu_conv[y * c..(y + 1) * c]);
        m
    };
    (z, mean(a), mean(b))
}

/// Checks one input's decomposition; returns `|margin − model_margin|` and its bound.
fn check_margin(classifier: &Classifier<B>, x: Tensor<B, 4>) -> (f64, f64) {
    let margin = classifier.decision_margin(x.clone(), None, 5).unwrap();
    let likelihoods = classifier.likelihoods_tensor(x.clone()).unwrap().remove(0);
    let ranked = likelihoods.top_k(2);
    assert_eq!(
        (margin.predicted, margin.contrast),
        (ranked[0].class, ranked[1].class),
        "the default contrast is the runner-up"
    );
    let (z, mu_a, mu_b) = latent_and_means(classifier, x, margin.predicted, margin.contrast);
    let sq = |m: &[f64]| z.iter().zip(m).map(|(z, m)| (z - m) * (z - m)).sum::<f64>();
    let (d_a, d_b) = (sq(&mu_a), sq(&mu_b));
    let direct = -0.5 * d_a + 0.5 * d_b;
    // Exact in f64: the terms and the direct distances are two f64 evaluations of the
    // same f32 values; they agree to f64 rounding of sums of D terms of size ≤ d_a + d_b.
    let f64_bound = 1e-12 * (d_a + d_b) * (z.len() as f64).sqrt();
    let sum: f64 = margin.terms.iter().sum();
    assert_eq!(margin.terms.len(), classifier.config().total_dims());
    assert!(
        (sum - direct).abs() <= f64_bound && (margin.margin - direct).abs() <= f64_bound,
        "Σ m_i = {sum}, margin {}, direct {direct}",
        margin.margin
    );
    let groups: f64 = margin.groups.iter().map(|g| g.total).sum();
    assert!((groups - direct).abs() <= f64_bound, "{groups} vs {direct}");
    let dims: usize = margin.groups.iter().map(|g| g.dims).sum();
    assert_eq!(dims, z.len());
    assert_eq!(margin.groups[0].group, LatentGroup::ClassDimensions);
    assert_eq!(margin.groups[0].dims, classifier.config().n_loss_dims);
    // The top dimensions are the largest |m_i|, and their terms are the listed ones.
    let largest = margin.terms.iter().map(|t| t.abs()).fold(0.0, f64::max);
    assert_eq!(margin.top[0].term.abs(), largest);
    for t in &margin.top {
        assert_eq!(margin.terms[t.index], t.term);
        assert!(margin.top[0].term.abs() >= t.term.abs());
    }
    // Against the model's own class log-likelihoods (float32 distances by expansion
    // ‖z‖² − 2z·μ + ‖μ‖², then −½d + log|det J| − D/2·ln 2π): each distance carries an
    // f32 rounding error of a few ε·(‖z‖² + ‖μ‖²), each log-likelihood one of ε·|ll|.
    let ll = &likelihoods.class_log_likelihoods;
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>();
    let scale = 2.0 * norm(&z)
        + norm(&mu_a)
        + norm(&mu_b)
        + ll[margin.predicted].abs()
        + ll[margin.contrast].abs();
    let f32_bound = 4.0 * f64::from(f32::EPSILON) * scale;
    assert_eq!(
        margin.model_margin,
        ll[margin.predicted] - ll[margin.contrast]
    );
    let error = (margin.margin - margin.model_margin).abs();
    assert!(
        error <= f32_bound,
        "margin {} vs the model's {}: {error:e} > {f32_bound:e}",
        margin.margin,
        margin.model_margin
    );
    (error, f32_bound)
}

#[test]
fn the_margin_decomposes_exactly_on_the_shipped_model() {
    let classifier = shipped();
    let images = test_images(20);
    let mut worst = (0.0f64, 0.0f64);
    let mut spread = Vec::new();
    for image in &images {
        let x = classifier.preprocess(std::slice::from_ref(image)).unwrap();
        let (error, bound) = check_margin(&classifier, x.clone());
        if error > worst.0 {
            worst = (error, bound);
        }
        // ‖z − μ_a‖² / D: a sample of the class Gaussian at temperature τ has about τ².
        let l = classifier.likelihoods_tensor(x).unwrap().remove(0);
        let a = l.predicted().class;
        spread.push(-2.0 * l.logits[a] / classifier.config().total_dims() as f64);
    }
    spread.sort_by(f64::total_cmp);
    println!(
        "shipped: ‖z − μ_a‖²/D of 20 test images: min {:.3}, median {:.3}, max {:.3}",
        spread[0], spread[10], spread[19]
    );
    println!(
        "shipped: worst |Σ m_i − (log p(x|a) − log p(x|b))| = {:.3e} nats (bound {:.3e})",
        worst.0, worst.1
    );
}

#[test]
fn the_margin_decomposes_exactly_on_the_golden_mini_model() {
    let classifier = mini();
    let x: Tensor<B, 4> = tensor("x", &Default::default());
    let mut worst = (0.0f64, 0.0f64);
    for i in 0..x.dims()[0] {
        let (error, bound) = check_margin(&classifier, x.clone().narrow(0, i, 1));
        if error > worst.0 {
            worst = (error, bound);
        }
    }
    println!(
        "mini: worst |Σ m_i − (log p(x|a) − log p(x|b))| = {:.3e} nats (bound {:.3e})",
        worst.0, worst.1
    );
    // The low-rank conv means contribute: the decomposition covers z_conv's bands.
    let margin = classifier
        .decision_margin(x.narrow(0, 0, 1), None, 5)
        .unwrap();
    assert!(margin.groups.len() > 1);
    assert!(margin.groups[1..].iter().any(|g| g.total_abs > 0.0));
}

#[test]
fn counterfactuals_of_held_out_images_are_classified_as_the_contrast_class() {
    let classifier = shipped();
    let images = test_images(200);
    let settings = ExplainSettings::default();
    let (mut exact, mut clamped, mut quantized, mut reached) = (0, 0, 0, 0);
    let (mut image_ok, mut evaluations) = (0, 0);
    let (mut worst_abs, mut worst_rel) = (0.0f64, 0.0f64);
    let (mut steps, mut image_steps, mut gap) = (Vec::new(), Vec::new(), 0.0f64);
    let (mut out_of_range, mut padding) = (0usize, 0.0f32);
    for image in &images {
        let x = classifier.preprocess(std::slice::from_ref(image)).unwrap();
        let cf = classifier.counterfactual(x, &settings).unwrap();
        reached += usize::from(cf.reached);
        steps.push(cf.step);
        exact += usize::from(cf.exact.agrees_with(0.9));
        clamped += usize::from(cf.clamped.as_ref().unwrap().agrees_with(0.9));
        quantized += usize::from(cf.quantized.as_ref().unwrap().agrees_with(0.9));
        worst_abs = worst_abs.max(cf.round_trip.max_abs_error);
        worst_rel = worst_rel.max(cf.round_trip.relative_error);
        let pixels = classifier.input_images(cf.input.clone()).unwrap().remove(0);
        out_of_range += pixels.out_of_range();
        padding = padding.max(pixels.padding_max);
        gap = gap.max((cf.expected_posterior - cf.exact.posterior).abs());
        let image = cf.image.as_ref().unwrap();
        evaluations += image.evaluations;
        if image.reached {
            image_ok += 1;
            image_steps.push(image.step);
            // What the search says of its image is what the model says of it.
            assert!(image.recheck.agrees_with(0.9));
            let again = classifier.likelihoods_tensor(image.input.clone()).unwrap();
            assert_eq!(again[0], image.recheck.likelihoods);
            assert_eq!(image.image.out_of_range(), 0);
        }
        // The path ends at the image counterfactual when it was found, else at x'.
        assert_eq!(cf.path.steps[0], 0.0);
        let end = if image.reached { image.step } else { cf.step };
        assert_eq!(*cf.path.steps.last().unwrap(), end);
        assert_eq!(cf.path.inputs.dims()[0], settings.path_frames);
        assert_eq!(
            cf.path.image_checks.as_ref().unwrap().len(),
            settings.path_frames
        );
    }
    steps.sort_by(f64::total_cmp);
    image_steps.sort_by(f64::total_cmp);
    let n = images.len() as f64;
    let pct = |k: usize| 100.0 * k as f64 / n;
    println!(
        "counterfactuals of {} held-out test images (target p >= 0.9):\n\
         - latent step reached within t <= 1: {reached}; step t median {:.3}, max {:.3}\n\
         - x' = f^-1(z') classified as the contrast class with p >= 0.9: {exact} ({:.1} %); \
         largest |closed form - model| posterior gap {gap:.2e}\n\
         - x' clamped to [0, 1] with black padding: {clamped} ({:.1} %); as an 8-bit image: \
         {quantized} ({:.1} %); {out_of_range} pixel values outside [0, 1] in all \
         ({:.1} per image), padding up to {padding:.3}\n\
         - 8-bit image counterfactual on the same line (t <= 4): {image_ok} ({:.1} %), \
         step median {:.3}, max {:.3}; {:.1} images inverted per search\n\
         - round trip max |f(x') - z'| {worst_abs:.3e}, max relative {worst_rel:.3e}",
        images.len(),
        steps[steps.len() / 2],
        steps[steps.len() - 1],
        pct(exact),
        pct(clamped),
        pct(quantized),
        out_of_range as f64 / n,
        pct(image_ok),
        image_steps
            .get(image_steps.len() / 2)
            .copied()
            .unwrap_or(f64::NAN),
        image_steps.last().copied().unwrap_or(f64::NAN),
        evaluations as f64 / n,
    );
    assert!(exact as f64 >= 0.95 * n, "{exact} of {n}");
    // Inversion then encoding in float32 through 11 coupling blocks and the DCT; measured
    // worst ~2e-6 absolute on latents of order 1: 1e-4 leaves room for other CPUs' rounding.
    assert!(
        worst_abs < 1e-4 && worst_rel < 1e-5,
        "{worst_abs:e} {worst_rel:e}"
    );
}

#[test]
fn counterfactuals_round_trip_on_the_golden_mini_model() {
    let classifier = mini();
    let x: Tensor<B, 4> = tensor("x", &Default::default());
    for i in 0..x.dims()[0] {
        let cf = classifier
            .counterfactual(x.clone().narrow(0, i, 1), &ExplainSettings::default())
            .unwrap();
        println!(
            "mini input {i}: {} -> {}, step {:.4} (reached {}), p(b|x') {:.4} (closed form {:.4}), \
             round trip {:.3e} abs, {:.3e} rel",
            cf.predicted,
            cf.contrast,
            cf.step,
            cf.reached,
            cf.exact.posterior,
            cf.expected_posterior,
            cf.round_trip.max_abs_error,
            cf.round_trip.relative_error
        );
        assert!(
            cf.clamped.is_none() && cf.quantized.is_none(),
            "no input representation"
        );
        // golden/README.md: the inverse's float32 floor is 2e-4 absolute.
        assert!(cf.round_trip.max_abs_error < 2e-3, "{:?}", cf.round_trip);
        assert!(cf.round_trip.relative_error < 1e-4, "{:?}", cf.round_trip);
        // The model's float32 distances of ~4e4 dimensions differ from the closed form by
        // ~1e-2 nats of log-odds: posteriors within 1e-2 near 0.9.
        assert!((cf.expected_posterior - cf.exact.posterior).abs() < 1e-2);
        if cf.reached {
            assert!(cf.exact.agrees_with(0.9), "{:?}", cf.exact);
        }
    }
}

#[test]
fn prototypes_are_classified_as_their_class() {
    let classifier = shipped();
    let settings = PrototypeSettings {
        samples: 3,
        ..PrototypeSettings::default()
    };
    let prototypes = classifier.prototypes(&settings).unwrap();
    assert_eq!(prototypes.prototypes.dims(), [10, 4, 16, 16]);
    assert_eq!(prototypes.samples.as_ref().unwrap().dims(), [30, 4, 16, 16]);
    let agree = |checks: &[trustgc::explain::Recheck]| checks.iter().filter(|c| c.agrees()).count();
    let quantized = prototypes.prototype_quantized_checks.as_ref().unwrap();
    println!(
        "shipped prototypes classified as their class: exact {} of 10 (least p {:.4}), \
         8-bit {} of 10 (least p {:.4}); samples at tau = {}: {} of {}",
        agree(&prototypes.prototype_checks),
        prototypes
            .prototype_checks
            .iter()
            .map(|c| c.posterior)
            .fold(1.0, f64::min),
        agree(quantized),
        quantized.iter().map(|c| c.posterior).fold(1.0, f64::min),
        settings.temperature,
        agree(&prototypes.sample_checks),
        prototypes.sample_checks.len()
    );
    assert_eq!(agree(&prototypes.prototype_checks), 10);

    let classifier = mini();
    let prototypes = classifier
        .prototypes(&PrototypeSettings {
            classes: Some(vec![0, 3, 9]),
            samples: 0,
            ..PrototypeSettings::default()
        })
        .unwrap();
    assert!(prototypes.samples.is_none());
    assert_eq!(prototypes.prototypes.dims(), [3, 3, 112, 112]);
    assert!(prototypes.prototype_quantized_checks.is_none());
    for check in &prototypes.prototype_checks {
        assert!(check.agrees(), "{check:?}");
    }
}

#[test]
fn pictures_of_the_counterfactual_have_the_image_size() {
    let classifier = shipped();
    let image = &test_images(1)[0];
    let x = classifier.preprocess(std::slice::from_ref(image)).unwrap();
    // The input itself comes back as the same 8-bit image.
    let back = classifier.input_images(x.clone()).unwrap().remove(0);
    assert_eq!(back.to_image().to_luma8(), image.to_luma8());
    let explanation = classifier.explain(x, &ExplainSettings::default()).unwrap();
    let cf = &explanation.counterfactual;
    let frames = classifier.input_images(cf.path.inputs.clone()).unwrap();
    assert_eq!(frames.len(), 7);
    for frame in &frames {
        assert_eq!((frame.width, frame.height, frame.channels), (28, 28, 1));
    }
    let counterfactual = classifier.input_images(cf.input.clone()).unwrap().remove(0);
    let image = cf.image.as_ref().unwrap();
    assert!(image.reached, "this image has an 8-bit counterfactual");
    // The path ends at the 8-bit counterfactual's step: its last frame, made an 8-bit
    // image, is that counterfactual.
    assert_eq!(frames[6].quantized(), image.image);
    assert_eq!(
        cf.path.image_checks.as_ref().unwrap()[6].likelihoods,
        image.recheck.likelihoods
    );
    assert_eq!(back.difference(&counterfactual).unwrap().len(), 28 * 28);
    // The 8-bit image the CLI writes, preprocessed as any image file is, is exactly the
    // tensor the quantized recheck classified.
    let written = counterfactual.to_image();
    let again = classifier.preprocess(&[written]).unwrap();
    let expected = classifier
        .images_to_inputs(&[counterfactual.quantized()])
        .unwrap();
    assert_eq!(x_values(&again), x_values(&expected));
    let spec = classifier.config().input.clone().unwrap();
    let values: Vec<f32> = x_values(&cf.input);
    assert_eq!(input_to_image(&spec, &values), counterfactual);
}

fn x_values(x: &Tensor<B, 4>) -> Vec<f32> {
    x.clone().into_data().convert::<f32>().into_vec().unwrap()
}

#[test]
fn bad_requests_are_typed_errors() {
    let classifier = shipped();
    let image = &test_images(1)[0];
    let x = classifier.preprocess(std::slice::from_ref(image)).unwrap();
    assert_eq!(classifier.class_index("Sneaker").unwrap(), 7);
    assert_eq!(classifier.class_index("ankle boot").unwrap(), 9);
    assert_eq!(classifier.class_index("3").unwrap(), 3);
    assert!(matches!(
        classifier.class_index("Hat"),
        Err(ExplainError::UnknownClass { ref name, classes: 10 }) if name == "Hat"
    ));
    assert!(matches!(
        classifier.class_index("12"),
        Err(ExplainError::ClassOutOfRange {
            class: 12,
            classes: 10
        })
    ));
    let settings = |f: &dyn Fn(&mut ExplainSettings)| {
        let mut s = ExplainSettings::default();
        f(&mut s);
        s
    };
    let predicted = classifier
        .likelihoods_tensor(x.clone())
        .unwrap()
        .remove(0)
        .predicted()
        .class;
    let err = classifier
        .explain(x.clone(), &settings(&|s| s.contrast = Some(predicted)))
        .unwrap_err();
    assert!(
        matches!(err, ExplainError::SameClass { class } if class == predicted),
        "{err}"
    );
    let err = classifier
        .explain(x.clone(), &settings(&|s| s.contrast = Some(10)))
        .unwrap_err();
    assert!(
        matches!(err, ExplainError::ClassOutOfRange { class: 10, .. }),
        "{err}"
    );
    for bad in [
        settings(&|s| s.target_posterior = 0.3),
        settings(&|s| s.target_posterior = 1.0),
        settings(&|s| s.max_step = f64::NAN),
        settings(&|s| s.path_frames = 1),
    ] {
        let err = classifier.explain(x.clone(), &bad).unwrap_err();
        assert!(matches!(err, ExplainError::Setting { .. }), "{err}");
    }
    let err = classifier
        .explain(
            Tensor::cat(vec![x.clone(), x.clone()], 0),
            &ExplainSettings::default(),
        )
        .unwrap_err();
    assert!(matches!(err, ExplainError::Batch { batch: 2 }), "{err}");
    // An input the model cannot take: wrong shape, NaN.
    let wrong = Tensor::<B, 4>::zeros([1, 3, 16, 16], &Default::default());
    let err = classifier
        .explain(wrong, &ExplainSettings::default())
        .unwrap_err();
    assert!(
        matches!(err, ExplainError::Classify(ClassifyError::Shape(_))),
        "{err}"
    );
    let nan = x.clone().mul_scalar(f32::NAN);
    let err = classifier
        .explain(nan, &ExplainSettings::default())
        .unwrap_err();
    assert!(
        matches!(err, ExplainError::Classify(ClassifyError::NonFinite { .. })),
        "{err}"
    );
    let err = classifier
        .prototypes(&PrototypeSettings {
            classes: Some(vec![10]),
            ..PrototypeSettings::default()
        })
        .unwrap_err();
    assert!(
        matches!(err, ExplainError::ClassOutOfRange { class: 10, .. }),
        "{err}"
    );
    let err = classifier
        .prototypes(&PrototypeSettings {
            temperature: -1.0,
            ..PrototypeSettings::default()
        })
        .unwrap_err();
    assert!(matches!(err, ExplainError::Setting { .. }), "{err}");

    // A model of one class has nothing to contrast.
    let mut config: GcConfig = Shipped::FashionMnist.config().unwrap();
    config.n_classes = 1;
    config.class_names = vec!["only".into()];
    let device = Default::default();
    let model = GenerativeClassifier::<B>::new(&config, &device).unwrap();
    let one = Classifier::new(config, model, &device);
    let err = one
        .explain(x.clone(), &ExplainSettings::default())
        .unwrap_err();
    assert!(
        matches!(err, ExplainError::TooFewClasses { classes: 1 }),
        "{err}"
    );
    let err = one.decision_margin(x, None, 3).unwrap_err();
    assert!(
        matches!(err, ExplainError::TooFewClasses { classes: 1 }),
        "{err}"
    );
    // Pixels of another size.
    let small = classifier
        .input_images(Tensor::from_data(
            TensorData::new(vec![0f32; 4 * 16 * 16], [1, 4, 16, 16]),
            &Default::default(),
        ))
        .unwrap()
        .remove(0);
    let mut cropped = small.clone();
    cropped.width = 27;
    assert!(matches!(
        classifier.images_to_inputs(&[cropped]),
        Err(ExplainError::PixelShape { .. })
    ));
}

#[test]
fn images_are_explained_on_the_imagenet_architecture() {
    // The golden mini model with an ImageNet-style representation (Resize 128, crop 112).
    let device = Default::default();
    let mut config = mini_config();
    config.input = Some(InputSpec::ImageNet {
        resize: 128,
        crop: 112,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    });
    let model =
        load_reference_safetensors::<B>(&golden_path("mini/mini.safetensors"), &config, &device)
            .unwrap();
    let classifier = Classifier::new(config, model, &device);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/images/chelsea.png");
    let image = trustgc::preprocess::read_image(&path).unwrap();
    let x = classifier.preprocess(&[image]).unwrap();
    assert_eq!(x.dims(), [1, 3, 112, 112]);
    // The crop comes back as RGB pixels, and goes back to the same input.
    let pixels = classifier.input_images(x.clone()).unwrap().remove(0);
    assert_eq!(
        (pixels.width, pixels.height, pixels.channels),
        (112, 112, 3)
    );
    assert_eq!(pixels.out_of_range(), 0);
    let again = classifier.images_to_inputs(&[pixels]).unwrap();
    let error = (again - x.clone()).abs().max().into_scalar();
    assert!(error < 1e-5, "{error}");

    let settings = ExplainSettings {
        path_frames: 3,
        image_max_step: 1.0,
        image_grid: 4,
        ..ExplainSettings::default()
    };
    let explanation = classifier.explain(x, &settings).unwrap();
    let cf = &explanation.counterfactual;
    assert!(cf.reached && cf.exact.agrees_with(0.9), "{:?}", cf.exact);
    assert!(cf.clamped.is_some() && cf.quantized.is_some());
    let image = cf.image.as_ref().unwrap();
    assert_eq!(
        (image.image.width, image.image.height, image.image.channels),
        (112, 112, 3)
    );
    assert!(image.evaluations >= 1);
    assert_eq!(cf.path.image_checks.as_ref().unwrap().len(), 3);
    println!(
        "mini (ImageNet representation): step {:.3}; x' {:.3}, clamped {:.3}, 8-bit {:.3}; 8-bit search: reached {} at t = {:.3} after {} images",
        cf.step,
        cf.exact.posterior,
        cf.clamped.as_ref().unwrap().posterior,
        cf.quantized.as_ref().unwrap().posterior,
        image.reached,
        image.step,
        image.evaluations
    );
}
