//! The plan derived from a config drives the model: its parameter count, node list and
//! block shapes agree with the model built from it.

use burn::backend::Flex;
use trustgc_core::params::parameter_shapes;
use trustgc_core::plan::BlockLayers;
use trustgc_core::{GcConfig, GenerativeClassifier};

type B = Flex;

fn configs() -> Vec<(&'static str, GcConfig)> {
    let mut odd = GcConfig::mini();
    // Odd channel counts and a stride-1 stage after a stride-2 one.
    odd.input_shape = [5, 32, 32];
    odd.n_loss_dims = 40;
    odd.mu_low_rank_k = 0;
    odd.planes = vec![16, 32, 32];
    odd.blocks = vec![2, 1, 3];
    odd.strides = vec![2, 1, 2];
    vec![
        ("imagenet", GcConfig::imagenet()),
        ("mini", GcConfig::mini()),
        ("odd", odd),
    ]
}

#[test]
fn the_plan_counts_the_parameters_of_the_built_model() {
    let device = Default::default();
    for (name, config) in configs() {
        config.validate().unwrap();
        // Building is lazy: the convolution weights are not allocated.
        let model = GenerativeClassifier::<B>::new(&config, &device).unwrap();
        let built: usize = parameter_shapes::<B, _>(&model)
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum();
        let planned = config.num_params();
        println!("{name}: plan {planned} values, built model {built}");
        assert_eq!(planned, built, "{name}");
    }
}

#[test]
fn plan_nodes_and_paths_follow_the_reference_order() {
    for (name, config) in configs() {
        let plan = config.plan();
        let nodes = config.nodes();
        // [input] + blocks + [out_fc, DCT, out_conv, PERM, split]
        assert_eq!(nodes.len(), plan.blocks.len() + 6, "{name}");
        for (i, block) in plan.blocks.iter().enumerate() {
            assert_eq!(block.node, i + 1, "{name}");
            assert_eq!(nodes[block.node].name, block.name, "{name}");
        }
        assert_eq!(plan.split_node, nodes.len() - 1, "{name}");
        // Shapes chain from block to block and end at the DCT's input.
        let mut shape = config.input_shape;
        for block in &plan.blocks {
            assert_eq!(block.input_shape(), shape, "{name} node {}", block.node);
            shape = block.output_shape();
        }
        assert_eq!(
            shape,
            [plan.final_channels, plan.final_side, plan.final_side],
            "{name}"
        );
        assert_eq!(plan.final_side, config.dct_size(), "{name}");
        assert_eq!(plan.final_channels, config.final_channels(), "{name}");
        // Every stage's slow blocks are numbered from 0 in their paths.
        let downs = plan
            .blocks
            .iter()
            .filter(|b| matches!(b.layers, BlockLayers::Down { .. }))
            .count();
        let stride2 = config.strides.iter().filter(|&&s| s == 2).count();
        assert_eq!(downs, stride2, "{name}");
    }
}

#[test]
fn imagenet_plan_has_the_released_size() {
    let config = GcConfig::imagenet();
    let plan = config.plan();
    assert_eq!(plan.blocks.len(), 19);
    assert_eq!(plan.dct_node, 21);
    assert_eq!(plan.permute_node, 23);
    assert_eq!(plan.split_node, 24);
    assert_eq!(plan.blocks[6].path, "flow.stages.1.down");
    assert_eq!(plan.blocks[7].path, "flow.stages.1.blocks.0");
}
