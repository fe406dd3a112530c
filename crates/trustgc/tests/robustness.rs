//! Attacks and corruptions (`trustgc::robustness`) on the shipped Fashion-MNIST model and
//! held-out Fashion-MNIST test images of the committed subset: FGSM lowers the true
//! class's posterior, PGD stays in the ε-ball and the pixel range, corruptions at
//! severity 0 are the identity, and bad input is a typed error.

use std::io::Read;
use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use trustgc::preprocess::Image8;
use trustgc::robustness::attack::{AttackKind, AttackSettings, Attacker};
use trustgc::robustness::corrupt::Corruption;
use trustgc::robustness::{
    RobustnessError, check_labels, evaluate, pixels_to_input, shift_detection, summarize,
    to_images, to_tensor,
};
use trustgc::{Classifier, Shipped};

type A = Autodiff<Flex>;

fn shipped() -> Classifier<A> {
    Classifier::shipped(Shipped::FashionMnist, &Default::default()).unwrap()
}

fn gunzip(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../trustgc-train/tests/data/fashion-mnist-subset")
        .join(name);
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

/// The first `n` Fashion-MNIST test images of the committed subset (held out: the shipped
/// model was trained on the training split) and their labels.
fn test_images(n: usize) -> (Vec<Image8>, Vec<usize>) {
    let images = gunzip("t10k-images-idx3-ubyte.gz");
    let labels = gunzip("t10k-labels-idx1-ubyte.gz");
    let word = |b: &[u8], i: usize| u32::from_be_bytes(b[4 * i..4 * i + 4].try_into().unwrap());
    assert_eq!(word(&images, 0), 0x803, "IDX images");
    assert_eq!(word(&labels, 0), 0x801, "IDX labels");
    let side = word(&images, 2) as usize;
    assert!(word(&images, 1) as usize >= n);
    let out = (0..n)
        .map(|i| Image8 {
            width: side,
            height: side,
            channels: 1,
            data: images[16 + i * side * side..16 + (i + 1) * side * side].to_vec(),
        })
        .collect();
    (
        out,
        labels[8..8 + n].iter().map(|&l| usize::from(l)).collect(),
    )
}

fn pixels(images: &[Image8]) -> Tensor<Flex, 4> {
    to_tensor::<Flex>(images, [1, 28, 28], &Default::default()).unwrap()
}

fn values(t: Tensor<Flex, 4>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

#[test]
fn pixels_map_to_the_inputs_the_classifier_preprocesses() {
    let classifier =
        Classifier::<Flex>::shipped(Shipped::FashionMnist, &Default::default()).unwrap();
    let (images, _) = test_images(8);
    let decoded: Vec<_> = images
        .iter()
        .map(|i| {
            trustgc::image::DynamicImage::ImageLuma8(
                trustgc::image::GrayImage::from_raw(28, 28, i.data.clone()).unwrap(),
            )
        })
        .collect();
    let expected = values(classifier.preprocess(&decoded).unwrap());
    let spec = classifier.config().input.clone().unwrap();
    let found = values(pixels_to_input(&spec, pixels(&images)));
    assert_eq!(found.len(), expected.len());
    // Both compute (v/255 − mean)/std in f32; the order of operations differs.
    let worst = found
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "{worst}");
    // And the round trip through 8 bits is exact.
    assert_eq!(to_images(pixels(&images)).unwrap(), images);
}

#[test]
fn fgsm_lowers_the_true_class_posterior() {
    let classifier = shipped();
    let attacker = Attacker::new(&classifier).unwrap();
    let (images, labels) = test_images(16);
    let x = pixels(&images);
    let before = attacker
        .true_class_log_posterior(x.clone(), &labels)
        .unwrap();
    let settings = AttackSettings::fgsm(2.0);
    let attacked = attacker.attack(x.clone(), &labels, &settings).unwrap();
    let after = attacker
        .true_class_log_posterior(attacked, &labels)
        .unwrap();
    let lowered = before.iter().zip(&after).filter(|(b, a)| a < b).count();
    // A signed-gradient step lowers the loss to first order; every image here has a
    // non-zero gradient, so all but a rare overshoot must go down.
    assert!(
        lowered >= 15,
        "{lowered} of 16 lowered: {before:?} → {after:?}"
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&after) < mean(&before) - 0.1,
        "{} → {}",
        mean(&before),
        mean(&after)
    );
    // The same through 8-bit images and the classifier's own path (f64 posteriors).
    let rounded = attacker
        .attack_images(&images, &labels, &settings, 8)
        .unwrap();
    let inner = Classifier::<Flex>::shipped(Shipped::FashionMnist, &Default::default()).unwrap();
    let log_p = |set: &[Image8]| -> f64 {
        let (results, _) = evaluate(&inner, set, 8).unwrap();
        let model_posterior: f64 = results
            .iter()
            .zip(&labels)
            .map(|(r, &y)| r.log_posterior[y])
            .sum();
        model_posterior / set.len() as f64
    };
    assert!(log_p(&rounded) < log_p(&images) - 0.1);
}

#[test]
fn pgd_stays_in_the_epsilon_ball_and_the_pixel_range() {
    let classifier = shipped();
    let attacker = Attacker::new(&classifier).unwrap();
    let (images, labels) = test_images(8);
    let x = pixels(&images);
    let clean = values(x.clone());
    for settings in [
        AttackSettings::pgd_steps(AttackKind::Pgd, 4.0, 5),
        AttackSettings::pgd_steps(AttackKind::AdaptivePgd, 4.0, 5),
        AttackSettings::fgsm(8.0),
    ] {
        let eps = settings.epsilon as f32;
        let attacked = values(attacker.attack(x.clone(), &labels, &settings).unwrap());
        let moved = attacked
            .iter()
            .zip(&clean)
            .map(|(a, c)| (a - c).abs())
            .fold(0f32, f32::max);
        assert!(
            moved <= eps + 1e-6,
            "{:?}: moved {moved} > {eps}",
            settings.kind
        );
        // It did move: the attack is not a no-op.
        assert!(moved > eps / 2.0, "{:?}: moved {moved}", settings.kind);
        assert!(
            attacked.iter().all(|v| (0.0..=1.0).contains(v)),
            "{:?}",
            settings.kind
        );
        let rounded = attacker
            .attack_images(&images, &labels, &settings, 4)
            .unwrap();
        let budget = settings.levels().floor() as u8;
        for (a, c) in rounded.iter().zip(&images) {
            assert!(
                a.data
                    .iter()
                    .zip(&c.data)
                    .all(|(a, c)| a.abs_diff(*c) <= budget)
            );
        }
    }
    // PGD at 4/255 misclassifies more than FGSM at 1/255 does.
    let inner = Classifier::<Flex>::shipped(Shipped::FashionMnist, &Default::default()).unwrap();
    let accuracy = |settings: AttackSettings| {
        let attacked = attacker
            .attack_images(&images, &labels, &settings, 8)
            .unwrap();
        summarize(&evaluate(&inner, &attacked, 8).unwrap().0, &labels)
            .unwrap()
            .accuracy
    };
    assert!(accuracy(AttackSettings::pgd(4.0)) < accuracy(AttackSettings::fgsm(1.0)));
}

#[test]
fn corruptions_at_severity_zero_are_the_identity() {
    let (images, _) = test_images(6);
    for corruption in Corruption::ALL {
        for (i, image) in images.iter().enumerate() {
            assert_eq!(
                &corruption.apply(image, 0, i as u64).unwrap(),
                image,
                "{corruption}"
            );
            let strong = corruption.apply(image, 5, i as u64).unwrap();
            assert_ne!(&strong, image, "{corruption} at severity 5 changed nothing");
        }
    }
    // Noise is reproducible from its seed, and differs between seeds.
    let noisy = |seed| {
        Corruption::GaussianNoise
            .apply(&images[0], 3, seed)
            .unwrap()
    };
    assert_eq!(noisy(1), noisy(1));
    assert_ne!(noisy(1), noisy(2));
}

#[test]
fn clean_images_against_themselves_are_at_chance() {
    let inner = Classifier::<Flex>::shipped(Shipped::FashionMnist, &Default::default()).unwrap();
    let (images, labels) = test_images(20);
    let (results, scores) = evaluate(&inner, &images, 8).unwrap();
    let summary = summarize(&results, &labels).unwrap();
    let right = results
        .iter()
        .zip(&labels)
        .filter(|(r, l)| r.predicted().class == **l)
        .count();
    assert_eq!(summary.accuracy, right as f64 / 20.0);
    assert!(summary.flag_rate.is_some());
    // Every pair ties: AUROC exactly 1/2 for every score.
    let detection = shift_detection(&scores, &scores).unwrap();
    assert!(
        detection.auroc.iter().all(|(_, a)| *a == 0.5),
        "{detection:?}"
    );
    // Uniform noise at severity 5 is told apart from clean images by the best score.
    let noisy: Vec<Image8> = images
        .iter()
        .enumerate()
        .map(|(i, im)| Corruption::GaussianNoise.apply(im, 5, i as u64).unwrap())
        .collect();
    let (_, noisy_scores) = evaluate(&inner, &noisy, 8).unwrap();
    let detection = shift_detection(&scores, &noisy_scores).unwrap();
    assert!(detection.best_auroc > 0.9, "{detection:?}");
}

#[test]
fn bad_input_is_a_typed_error() {
    let classifier = shipped();
    let attacker = Attacker::new(&classifier).unwrap();
    let (images, labels) = test_images(4);
    let settings = AttackSettings::fgsm(2.0);
    assert!(matches!(
        attacker.attack_images(&[], &[], &settings, 4),
        Err(RobustnessError::Empty { .. })
    ));
    assert!(matches!(
        attacker.attack_images(&images, &labels[..3], &settings, 4),
        Err(RobustnessError::Labels {
            images: 4,
            labels: 3
        })
    ));
    let mut nan = vec![0.5f32; 4 * 784];
    nan[17] = f32::NAN;
    let x = Tensor::<Flex, 4>::from_data(TensorData::new(nan, [4, 1, 28, 28]), &Default::default());
    assert!(matches!(
        attacker.attack(x, &labels, &settings),
        Err(RobustnessError::PixelRange { count: 1 })
    ));
    let wrong = Tensor::<Flex, 4>::zeros([2, 1, 32, 32], &Default::default());
    assert!(matches!(
        attacker.attack(wrong, &labels[..2], &settings),
        Err(RobustnessError::PixelShape { .. })
    ));
    let big = Image8 {
        width: 32,
        height: 32,
        channels: 1,
        data: vec![0; 1024],
    };
    assert!(matches!(
        attacker.attack_images(&[big], &[0], &settings, 4),
        Err(RobustnessError::ImageShape { index: 0, .. })
    ));
    for bad in [f64::NAN, -1.0, 300.0] {
        let error = attacker
            .attack_images(&images, &labels, &AttackSettings::fgsm(bad), 4)
            .unwrap_err();
        assert!(
            matches!(
                error,
                RobustnessError::Setting {
                    field: "epsilon",
                    ..
                }
            ),
            "{error}"
        );
    }
    let error = attacker
        .attack_images(
            &images,
            &labels,
            &AttackSettings::pgd_steps(AttackKind::Pgd, 2.0, 0),
            4,
        )
        .unwrap_err();
    assert!(
        matches!(error, RobustnessError::Setting { field: "steps", .. }),
        "{error}"
    );
    assert!(matches!(
        attacker.attack_images(&images, &[0, 1, 2, 10], &settings, 4),
        Err(RobustnessError::Label {
            index: 3,
            label: 10,
            ..
        })
    ));
    // The adaptive attack needs ood.json.
    let device = Default::default();
    let bare = Classifier::<A>::new(
        classifier.config().clone(),
        classifier.model().clone(),
        &device,
    );
    let error = Attacker::new(&bare)
        .unwrap()
        .attack_images(&images, &labels, &AttackSettings::adaptive(2.0), 4)
        .unwrap_err();
    assert!(matches!(error, RobustnessError::NoOodStats), "{error}");
    // One class, no images, NaN scores.
    let error = check_labels(3, &[4, 4, 4], 10).unwrap_err();
    assert!(matches!(
        error,
        RobustnessError::OneClass {
            class: 4,
            images: 3
        }
    ));
    assert!(error.to_string().contains("at least two classes"));
    assert!(matches!(
        check_labels(0, &[], 10),
        Err(RobustnessError::Empty { .. })
    ));
    let inner = Classifier::<Flex>::shipped(Shipped::FashionMnist, &Default::default()).unwrap();
    assert!(matches!(
        evaluate(&inner, &[], 8),
        Err(RobustnessError::Empty { .. })
    ));
    let (_, scores) = evaluate(&inner, &images, 8).unwrap();
    let mut broken = scores.clone();
    broken[0].log_px = f64::NAN;
    broken[0].max_log_pxy = f64::NAN;
    assert!(matches!(
        shift_detection(&scores, &broken),
        Err(RobustnessError::Metrics(_))
    ));
    assert!(matches!(
        shift_detection(&scores, &[]),
        Err(RobustnessError::Empty { .. })
    ));
    assert!(matches!(
        Corruption::Blur.apply(&images[0], 9, 0),
        Err(RobustnessError::Severity { severity: 9 })
    ));
}
