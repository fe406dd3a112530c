//! An evaluation over nothing is an error, not "accuracy 0.00 %".

use std::sync::Arc;

use burn::backend::Flex;
use trustgc::Shipped;
use trustgc_core::input::InputSpec;
use trustgc_train::data::{GrayscaleSamples, LabeledImages, Samples};
use trustgc_train::eval::{EvalError, evaluate};

#[test]
fn evaluating_no_images_is_an_error() {
    let device = Default::default();
    let config = Shipped::FashionMnist.config().unwrap();
    let model = Shipped::FashionMnist.model::<Flex>(&device).unwrap();
    let mean_log_std = config.input.as_ref().unwrap().mean_log_std();
    let Some(InputSpec::Grayscale(input)) = config.input.clone() else {
        panic!("the shipped model takes grayscale images");
    };
    let empty: Arc<dyn Samples> = Arc::new(GrayscaleSamples {
        images: LabeledImages {
            pixels: Arc::new(Vec::new()),
            labels: Arc::new(Vec::new()),
            side: 28,
        },
        input,
    });
    let result = evaluate(&model, empty, mean_log_std, 8, 0, &device, |_, _| {});
    match result {
        Err(EvalError::NoImages { items: 0 }) => {}
        other => panic!("{other:?}"),
    }
}
