//! Pixel attributions (`trustgc::explain::attribution`) add up: the path-integrated
//! gradients of the margin from the counterfactual to the input sum to the change of the
//! margin, on the shipped Fashion-MNIST model and on the golden mini model (ImageNet
//! architecture, random weights, low-rank conv means).
//!
//! The faithfulness measurements of docs/explanations.md (deletion and insertion curves,
//! the model-randomization check) are the ignored test at the end:
//!
//! ```text
//! cargo test --release -p trustgc --test attribution -- --ignored --nocapture faithfulness
//! ```
//!
//! (`ATTRIBUTION_IMAGES=N` changes the number of held-out images, 100 by default.)

mod common;

use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use common::{
    fashion_mnist_test_images as test_images, mini_classifier as mini,
    shipped_classifier as shipped, tensor,
};
use trustgc::core::rng::SplitMix64;
use trustgc::explain::{
    Attribution, AttributionBaseline, AttributionSettings, ExplainError, ExplainSettings,
    ModelImage, OrderCurves, PixelMap, area, spearman,
};
use trustgc::{Classifier, GenerativeClassifier};

type B = Flex;
type A = Autodiff<Flex>;

/// Checks what every attribution must satisfy, and its completeness within `tolerance`.
fn check(
    classifier: &Classifier<B>,
    x: &Tensor<B, 4>,
    baseline: &Tensor<B, 4>,
    attribution: &Attribution,
    tolerance: f64,
) {
    let n = classifier.config().input_shape.iter().product::<usize>();
    assert_eq!(attribution.integrated.len(), n);
    assert_eq!(attribution.gradient_times_input.len(), n);
    assert_eq!(attribution.path_margins.len(), attribution.steps + 1);
    // The endpoints' margins are the model's: recomputed here from a plain forward pass.
    let (a, b) = (attribution.predicted, attribution.contrast);
    let ends = classifier
        .class_margins(Tensor::cat(vec![baseline.clone(), x.clone()], 0), a, b)
        .unwrap();
    let scale = 1e-4 * (1.0 + ends[1].abs() + ends[0].abs());
    assert!(
        (ends[1] - attribution.margin_input).abs() < scale
            && (ends[0] - attribution.margin_baseline).abs() < scale,
        "{ends:?} vs {} {}",
        attribution.margin_baseline,
        attribution.margin_input
    );
    // And against the classifier's class log-likelihoods (log-determinants cancel).
    let ll = classifier.likelihoods_tensor(x.clone()).unwrap().remove(0);
    let model_margin = ll.class_log_likelihoods[a] - ll.class_log_likelihoods[b];
    // (The classifier's are f32 distances by expansion, ‖z‖² − 2z·μ + ‖μ‖²: a coarser
    // rounding than the linear form z·(μ_a − μ_b) used here.)
    assert!(
        (model_margin - attribution.margin_input).abs() < 1e-2 * (1.0 + model_margin.abs()),
        "{model_margin} vs {}",
        attribution.margin_input
    );
    assert!(
        attribution.completeness_error() < tolerance,
        "Σ IG = {}, m(x) − m(x') = {} (error {:.3e}, {} steps)",
        attribution.sum(),
        attribution.margin_change(),
        attribution.completeness_error(),
        attribution.steps
    );
}

#[test]
fn attributions_add_up_on_the_shipped_model() {
    let classifier = shipped();
    let spec = classifier.config().input.clone().unwrap();
    // 64 trapezoid intervals: the margin along the path is smooth except at the ReLU
    // kinks of the coupling subnets; measured errors 1e-4 to 3e-3 (printed below).
    let settings = AttributionSettings {
        steps: 64,
        batch: 13,
    };
    for (i, image) in test_images(4).into_iter().enumerate() {
        let x = classifier.preprocess(&[image]).unwrap();
        let explanation = classifier
            .explain(x.clone(), &ExplainSettings::default())
            .unwrap();
        let attribution = classifier
            .attribute::<A>(x.clone(), &explanation, &settings)
            .unwrap();
        let cf = &explanation.counterfactual;
        let baseline = match attribution.baseline {
            AttributionBaseline::ImageCounterfactual => cf.image.as_ref().unwrap().input.clone(),
            _ => cf.input.clone(),
        };
        println!(
            "test image {i}: {} -> {} from the {:?}: Σ IG = {:.5}, m(x) − m(x') = {:.5}, \
             relative error {:.2e} ({} steps); Σ gradient×input = {:.4}",
            attribution.predicted,
            attribution.contrast,
            attribution.baseline,
            attribution.sum(),
            attribution.margin_change(),
            attribution.completeness_error(),
            attribution.steps,
            attribution.gradient_times_input_sum()
        );
        check(&classifier, &x, &baseline, &attribution, 1e-2);
        if i == 0 {
            // More steps, a smaller error: the sum converges to m(x) − m(x').
            let error = |steps| {
                classifier
                    .integrated_gradients::<A>(
                        x.clone(),
                        baseline.clone(),
                        (attribution.predicted, attribution.contrast),
                        &AttributionSettings { steps, batch: 13 },
                    )
                    .unwrap()
                    .completeness_error()
            };
            let (coarse, fine) = (error(4), error(256));
            println!("test image 0: relative error {coarse:.2e} at 4 steps, {fine:.2e} at 256");
            assert!(fine < coarse && fine < 2e-3, "{coarse} vs {fine}");
        }
        // The margin goes from the counterfactual's (b wins) to the input's (a wins).
        assert!(attribution.margin_input > 0.0 && attribution.margin_baseline < 0.0);
        let map = PixelMap::of(&spec, &attribution.integrated).unwrap();
        assert_eq!((map.width, map.height), (28, 28));
        if attribution.baseline == AttributionBaseline::ImageCounterfactual {
            // A real image's padding is black like the input's: nothing goes there.
            assert!(map.padding.abs() < 1e-9, "{}", map.padding);
        }
        assert!((map.total() - attribution.sum()).abs() < 1e-9 * (1.0 + map.largest()));
    }
}

#[test]
fn attributions_add_up_on_the_golden_mini_model() {
    let classifier = mini();
    let x: Tensor<B, 4> = tensor("x", &Default::default());
    let x = x.narrow(0, 0, 1);
    let settings = ExplainSettings {
        image_max_step: 0.0,
        ..ExplainSettings::default()
    };
    let cf = classifier.counterfactual(x.clone(), &settings).unwrap();
    let attribution = classifier
        .integrated_gradients::<A>(
            x.clone(),
            cf.input.clone(),
            (cf.predicted, cf.contrast),
            &AttributionSettings {
                steps: 32,
                batch: 11,
            },
        )
        .unwrap();
    println!(
        "mini: {} -> {}: Σ IG = {:.5}, m(x) − m(x') = {:.5}, relative error {:.2e} ({} steps)",
        attribution.predicted,
        attribution.contrast,
        attribution.sum(),
        attribution.margin_change(),
        attribution.completeness_error(),
        attribution.steps
    );
    check(&classifier, &x, &cf.input, &attribution, 1e-2);
    // The margin change is the latent move: m(x') = m(x) − t‖Δ‖² exactly in the latent,
    // up to the float32 round trip.
    let expected = cf.step * cf.mean_distance * cf.mean_distance;
    assert!(
        (attribution.margin_change() - expected).abs() < 1e-2 * expected,
        "{} vs {expected}",
        attribution.margin_change()
    );
}

#[test]
fn attribution_requests_are_checked() {
    let classifier = shipped();
    let x = classifier.preprocess(&test_images(1)).unwrap();
    let settings = AttributionSettings::default();
    let ig = |x: Tensor<B, 4>, baseline: Tensor<B, 4>, classes, settings: &AttributionSettings| {
        classifier.integrated_gradients::<A>(x, baseline, classes, settings)
    };
    assert!(matches!(
        ig(x.clone(), x.clone(), (0, 0), &settings),
        Err(ExplainError::SameClass { class: 0 })
    ));
    assert!(matches!(
        ig(x.clone(), x.clone(), (0, 10), &settings),
        Err(ExplainError::ClassOutOfRange { class: 10, .. })
    ));
    let zero = AttributionSettings {
        steps: 0,
        ..settings.clone()
    };
    assert!(matches!(
        ig(x.clone(), x.clone(), (0, 1), &zero),
        Err(ExplainError::Setting {
            setting: "steps",
            ..
        })
    ));
    let two = Tensor::cat(vec![x.clone(), x.clone()], 0);
    assert!(matches!(
        ig(two.clone(), two, (0, 1), &settings),
        Err(ExplainError::Batch { batch: 2 })
    ));
    let wrong = Tensor::<B, 4>::zeros([1, 1, 28, 28], &Default::default());
    assert!(matches!(
        ig(wrong.clone(), wrong, (0, 1), &settings),
        Err(ExplainError::Classify(_))
    ));
    // The same input as baseline: nothing changes, every attribution is 0.
    let same = ig(x.clone(), x.clone(), (0, 1), &settings).unwrap();
    assert_eq!(same.margin_change(), 0.0);
    assert!(same.integrated.iter().all(|&v| v == 0.0));
    // Deletion orders must be permutations of the pixels.
    let image = classifier.input_images(x).unwrap().remove(0);
    let black = ModelImage::constant(28, 28, 1, 0.0);
    let bad = classifier.deletion_insertion(&image, &[0, 0, 1], &black, 5, (0, 1));
    assert!(matches!(bad, Err(ExplainError::PixelShape { .. })));
    let order: Vec<usize> = (0..28 * 28).collect();
    let small = ModelImage::constant(14, 14, 1, 0.0);
    let bad = classifier.deletion_insertion(&image, &order, &small, 5, (0, 1));
    assert!(matches!(bad, Err(ExplainError::PixelShape { .. })));
    // Classes are checked before any image is classified.
    let bad = classifier.deletion_insertion(&image, &order, &black, 5, (10, 1));
    assert!(matches!(
        bad,
        Err(ExplainError::ClassOutOfRange { class: 10, .. })
    ));
    let bad = classifier.deletion_insertion(&image, &order, &black, 5, (3, 3));
    assert!(matches!(bad, Err(ExplainError::SameClass { class: 3 })));
    // The curves run from the input to the fill image and back.
    let curves = classifier
        .deletion_insertion(&image, &order, &black, 5, (0, 1))
        .unwrap();
    assert_eq!(curves.fractions, [0.0, 0.25, 0.5, 0.75, 1.0]);
    assert!((curves.deletion[0] - curves.insertion[4]).abs() < 1e-6);
    assert!((curves.deletion[4] - curves.insertion[0]).abs() < 1e-6);
    assert!((curves.deletion_margin[0] - curves.insertion_margin[4]).abs() < 1e-4);
}

/// Seeded SplitMix64: the random orders of the faithfulness test (Fisher–Yates).
fn shuffle(rng: &mut SplitMix64, v: &mut [usize]) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Mean and standard error of the mean.
fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, (var / n).sqrt())
}

/// The median.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Areas under one method's curves over the images.
#[derive(Default)]
struct Areas {
    deletion: Vec<f64>,
    insertion: Vec<f64>,
    /// Of the margin rescaled to 0 at the fill image and 1 at the input.
    deletion_margin: Vec<f64>,
    insertion_margin: Vec<f64>,
    /// The mean curves' sums.
    deletion_curve: Vec<f64>,
    insertion_curve: Vec<f64>,
}

impl Areas {
    fn add(&mut self, c: &OrderCurves) {
        self.deletion.push(c.deletion_auc());
        self.insertion.push(c.insertion_auc());
        let (top, bottom) = (c.deletion_margin[0], *c.deletion_margin.last().unwrap());
        let rescale =
            |v: &[f64]| -> Vec<f64> { v.iter().map(|m| (m - bottom) / (top - bottom)).collect() };
        self.deletion_margin
            .push(area(&c.fractions, &rescale(&c.deletion_margin)));
        self.insertion_margin
            .push(area(&c.fractions, &rescale(&c.insertion_margin)));
        if self.deletion_curve.is_empty() {
            self.deletion_curve = vec![0.0; c.deletion.len()];
            self.insertion_curve = vec![0.0; c.insertion.len()];
        }
        for (s, v) in self.deletion_curve.iter_mut().zip(&c.deletion) {
            *s += v;
        }
        for (s, v) in self.insertion_curve.iter_mut().zip(&c.insertion) {
            *s += v;
        }
    }
}

/// The faithfulness numbers of docs/explanations.md, on the first N held-out test images
/// (see the file's docs above for the command).
#[test]
#[ignore = "measurement for docs/explanations.md: about two minutes in release"]
fn faithfulness() {
    let n: usize = std::env::var("ATTRIBUTION_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let classifier = shipped();
    let spec = classifier.config().input.clone().unwrap();
    let device = Default::default();
    // Fully randomized weights (the reference initialization, seeded): the same
    // architecture, nothing learned.
    B::seed(&device, 12);
    let random = Classifier::new(
        classifier.config().clone(),
        GenerativeClassifier::<B>::new(classifier.config(), &device).unwrap(),
        &device,
    );
    let settings = AttributionSettings {
        steps: 64,
        batch: 13,
    };
    let points = 29; // every 28 pixels: 0, 1/28, …, 1 of the 784
    let black = ModelImage::constant(28, 28, 1, 0.0);
    let methods = ["integrated gradients", "gradient × input", "random order"];
    let fills = ["black (0)", "the counterfactual"];
    let mut areas: Vec<Vec<Areas>> = (0..2)
        .map(|_| (0..3).map(|_| Areas::default()).collect())
        .collect();
    let mut rng = SplitMix64(7);
    let mut errors = [Vec::new(), Vec::new(), Vec::new()];
    let mut convergence: Vec<(usize, Vec<f64>)> = [8, 16, 32, 64, 128, 256]
        .iter()
        .map(|&s| (s, Vec::new()))
        .collect();
    let mut ranks: Vec<(&str, Vec<f64>)> = [
        "IG (signed)",
        "IG (|value|)",
        "gradient × input (signed)",
        "gradient × input (|value|)",
        "reference: IG vs gradient × input, same model",
        "reference: |IG| vs |x − x'|, same model",
        "reference: |IG| vs |x − x'|, random weights",
    ]
    .iter()
    .map(|&name| (name, Vec::new()))
    .collect();
    let start = std::time::Instant::now();
    for (i, image) in test_images(n).into_iter().enumerate() {
        let x = classifier.preprocess(&[image]).unwrap();
        let explanation = classifier
            .explain(x.clone(), &ExplainSettings::default())
            .unwrap();
        let attribution = classifier
            .attribute::<A>(x.clone(), &explanation, &settings)
            .unwrap();
        let cf = &explanation.counterfactual;
        let baseline = match attribution.baseline {
            AttributionBaseline::ImageCounterfactual => cf.image.as_ref().unwrap().input.clone(),
            _ => cf.input.clone(),
        };
        errors[attribution.baseline as usize].push(attribution.completeness_error());
        if i < 20 {
            for (steps, errors) in &mut convergence {
                let a = classifier
                    .integrated_gradients::<A>(
                        x.clone(),
                        baseline.clone(),
                        (attribution.predicted, attribution.contrast),
                        &AttributionSettings {
                            steps: *steps,
                            batch: 13,
                        },
                    )
                    .unwrap();
                errors.push(a.completeness_error());
            }
        }
        let ig = PixelMap::of(&spec, &attribution.integrated).unwrap();
        let gi = PixelMap::of(&spec, &attribution.gradient_times_input).unwrap();
        let mut random_order: Vec<usize> = (0..ig.values.len()).collect();
        shuffle(&mut rng, &mut random_order);
        let pixels = classifier.input_images(x.clone()).unwrap().remove(0);
        let counterfactual = classifier
            .input_images(baseline.clone())
            .unwrap()
            .remove(0)
            .quantized();
        let classes = (attribution.predicted, attribution.contrast);
        for (f, fill) in [&black, &counterfactual].into_iter().enumerate() {
            for (k, order) in [ig.order(), gi.order(), random_order.clone()]
                .iter()
                .enumerate()
            {
                let curves = classifier
                    .deletion_insertion(&pixels, order, fill, points, classes)
                    .unwrap();
                areas[f][k].add(&curves);
            }
        }
        // Model randomization: the same input, baseline and classes on random weights.
        let randomized = random
            .integrated_gradients::<A>(x.clone(), baseline.clone(), classes, &settings)
            .unwrap();
        let rig = PixelMap::of(&spec, &randomized.integrated).unwrap();
        let rgi = PixelMap::of(&spec, &randomized.gradient_times_input).unwrap();
        let abs = |m: &PixelMap| m.values.iter().map(|v| v.abs()).collect::<Vec<f64>>();
        let difference: Vec<f64> = pixels
            .difference(&counterfactual)
            .unwrap()
            .iter()
            .map(|d| f64::from(d.abs()))
            .collect();
        let values = [
            spearman(&ig.values, &rig.values),
            spearman(&abs(&ig), &abs(&rig)),
            spearman(&gi.values, &rgi.values),
            spearman(&abs(&gi), &abs(&rgi)),
            spearman(&ig.values, &gi.values),
            spearman(&abs(&ig), &difference),
            spearman(&abs(&rig), &difference),
        ];
        for ((_, v), value) in ranks.iter_mut().zip(values) {
            v.push(value);
        }
        if i % 10 == 9 {
            eprintln!("{} images, {:.0} s", i + 1, start.elapsed().as_secs_f64());
        }
    }
    println!(
        "N = {n} held-out Fashion-MNIST test images (the first {n} of t10k), {} trapezoid steps; \
         baselines: {} 8-bit image counterfactuals, {} latent counterfactuals; {:.0} s",
        settings.steps,
        errors[AttributionBaseline::ImageCounterfactual as usize].len(),
        errors[AttributionBaseline::LatentCounterfactual as usize].len(),
        start.elapsed().as_secs_f64()
    );
    let all: Vec<f64> = errors.iter().flatten().copied().collect();
    for (name, e) in [
        ("all", &all),
        (
            "from 8-bit counterfactuals",
            &errors[AttributionBaseline::ImageCounterfactual as usize],
        ),
        (
            "from latent counterfactuals",
            &errors[AttributionBaseline::LatentCounterfactual as usize],
        ),
    ] {
        if e.is_empty() {
            continue;
        }
        println!(
            "completeness |Σ IG − Δm| / |Δm|, {name}: median {:.2e}, max {:.2e}, {} of {} below 1 %",
            median(e),
            e.iter().copied().fold(0.0, f64::max),
            e.iter().filter(|&&e| e < 1e-2).count(),
            e.len()
        );
    }
    for (steps, e) in &convergence {
        println!(
            "  {steps:>4} steps (first {} images): median {:.2e}, max {:.2e}",
            e.len(),
            median(e),
            e.iter().copied().fold(0.0, f64::max)
        );
    }
    for (f, fill) in fills.iter().enumerate() {
        println!(
            "deletion/insertion, deleted pixels taken from {fill}, {points} points (mean ± s.e. over {n} images):"
        );
        println!(
            "  {:<22} {:>15} {:>15} {:>15} {:>15}",
            "order", "del AUC p(a|x)", "ins AUC p(a|x)", "del AUC margin", "ins AUC margin"
        );
        for (k, method) in methods.iter().enumerate() {
            let a = &areas[f][k];
            let cell = |v: &[f64]| {
                let (m, s) = mean_se(v);
                format!("{m:.3} ± {s:.3}")
            };
            println!(
                "  {method:<22} {:>15} {:>15} {:>15} {:>15}",
                cell(&a.deletion),
                cell(&a.insertion),
                cell(&a.deletion_margin),
                cell(&a.insertion_margin)
            );
        }
        let wins = |a: &[f64], b: &[f64], lower: bool| {
            a.iter()
                .zip(b)
                .filter(|(a, b)| if lower { a < b } else { a > b })
                .count()
        };
        let (ig, gi, random) = (&areas[f][0], &areas[f][1], &areas[f][2]);
        println!(
            "  per image, p(a|x): IG deletion below random for {} of {n}, below gradient × input for {}; \
             IG insertion above random for {}, above gradient × input for {}",
            wins(&ig.deletion, &random.deletion, true),
            wins(&ig.deletion, &gi.deletion, true),
            wins(&ig.insertion, &random.insertion, false),
            wins(&ig.insertion, &gi.insertion, false)
        );
        for (k, method) in methods.iter().enumerate() {
            let mean = |v: &[f64]| {
                v.iter()
                    .step_by(7)
                    .map(|s| format!("{:.2}", s / n as f64))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            println!(
                "  mean p(a|x) at fractions 0, 1/4, 1/2, 3/4, 1 ({method}): deletion {} | insertion {}",
                mean(&areas[f][k].deletion_curve),
                mean(&areas[f][k].insertion_curve)
            );
        }
    }
    println!(
        "model randomization: Spearman rank correlation of the pixel maps, trained vs random weights:"
    );
    let mut means = Vec::new();
    for (name, v) in &ranks {
        let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        let (m, s) = mean_se(&v);
        println!("  {name:<48} {m:+.3} ± {s:.3} (n = {})", v.len());
        means.push(m);
    }
    // What the docs state: the signed maps change when the weights are randomized, and
    // IG is more faithful than a random order when pixels are deleted toward the
    // counterfactual it was measured from.
    assert!(means[0] < 0.5 && means[0] < means[4], "{means:?}");
    let cf = &areas[1];
    assert!(mean_se(&cf[0].deletion_margin).0 < mean_se(&cf[2].deletion_margin).0);
    assert!(mean_se(&cf[0].insertion_margin).0 > mean_se(&cf[2].insertion_margin).0);
    assert!(median(&all) < 1e-2);
}
