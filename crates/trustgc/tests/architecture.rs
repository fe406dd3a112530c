//! The released ImageNet architecture without weights, the golden mini config, and the
//! fixed permutations, against the reference's own descriptions of them.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use burn::backend::Flex;
use common::*;
use trustgc::core::config::NodeKind;
use trustgc::core::keymap::key_table;
use trustgc::core::layers::haar::wavelet_order;
use trustgc::core::params::{ParamKind, parameter_shapes};
use trustgc::core::rng::legacy_permutation;
use trustgc::{GcConfig, GenerativeClassifier};

type B = Flex;

/// `key<TAB>[shape]<TAB>dtype` lines.
fn key_file(relative: &str) -> BTreeMap<String, (Vec<usize>, String)> {
    std::fs::read_to_string(golden_path(relative))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.split('\t');
            let key = parts.next().unwrap().to_string();
            let shape = parts.next().unwrap().trim_matches(|c| c == '[' || c == ']');
            let shape = shape
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse().unwrap())
                .collect();
            (key, (shape, parts.next().unwrap().to_string()))
        })
        .collect()
}

/// The model's parameters (path → shape) must be exactly the key table's (ours → shape).
fn assert_model_matches_table(config: &GcConfig) {
    let model = GenerativeClassifier::<B>::new(config, &Default::default()).unwrap();
    let ours: BTreeMap<String, Vec<usize>> = parameter_shapes::<B, _>(&model)
        .into_iter()
        .map(|p| (p.path, p.shape))
        .collect();
    let table = key_table(config);
    let from_table: BTreeMap<String, Vec<usize>> = table
        .iter()
        .map(|r| (r.ours.clone(), r.shape.clone()))
        .collect();
    assert_eq!(
        from_table.len(),
        table.len(),
        "two table rows map to the same parameter"
    );
    let missing: Vec<_> = from_table
        .keys()
        .filter(|k| !ours.contains_key(*k))
        .collect();
    let unmapped: Vec<_> = ours
        .keys()
        .filter(|k| !from_table.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "table paths the model lacks: {missing:?}"
    );
    assert!(
        unmapped.is_empty(),
        "model parameters no reference key maps to: {unmapped:?}"
    );
    for (path, shape) in &ours {
        assert_eq!(shape, &from_table[path], "shape of {path}");
    }
}

#[test]
fn imagenet_parameters_map_one_to_one_onto_the_released_keys() {
    let config = GcConfig::imagenet();
    let table = key_table(&config);
    let released = key_file("full/full_keys.txt");
    assert_eq!(released.len(), 583);

    let flow_rows: BTreeMap<String, Vec<usize>> = table
        .iter()
        .filter_map(|r| {
            r.reference
                .strip_prefix("inn.")
                .map(|k| (k.to_string(), r.reference_shape.clone()))
        })
        .collect();
    let released_keys: BTreeSet<&String> = released.keys().collect();
    let table_keys: BTreeSet<&String> = flow_rows.keys().collect();
    assert_eq!(
        table_keys, released_keys,
        "the key table names exactly the released flow keys"
    );
    for (key, (shape, dtype)) in &released {
        assert_eq!(&flow_rows[key], shape, "shape of {key}");
        let counter = key.ends_with("num_batches_tracked");
        assert_eq!(
            dtype,
            if counter { "int64" } else { "float32" },
            "dtype of {key}"
        );
    }
    // The head (REFERENCE.md §5): mu [1, 1000, 3072], mu_t [1000, 128], mu_m [128, 147456].
    let head: BTreeMap<&str, &Vec<usize>> = table
        .iter()
        .filter(|r| !r.reference.starts_with("inn."))
        .map(|r| (r.reference.as_str(), &r.reference_shape))
        .collect();
    assert_eq!(head.len(), 3);
    assert_eq!(head["mu"], &vec![1, 1000, 3072]);
    assert_eq!(head["mu_t"], &vec![1000, 128]);
    assert_eq!(head["mu_m"], &vec![128, 147_456]);

    assert_model_matches_table(&config);
}

#[test]
fn imagenet_nodes_match_the_released_graph() {
    let text = std::fs::read_to_string(golden_path("full/full_nodes.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let nodes = json
        .get("nodes")
        .unwrap_or(&json)
        .as_array()
        .expect("a node list");
    let ours = GcConfig::imagenet().nodes();
    assert_eq!(ours.len(), nodes.len());
    for (node, reference) in ours.iter().zip(nodes) {
        assert_eq!(node.index as u64, reference["index"].as_u64().unwrap());
        assert_eq!(
            node.name,
            reference["name"].as_str().unwrap(),
            "name of node {}",
            node.index
        );
        if let Some(outputs) = reference["output_dims"].as_array() {
            let dims: Vec<Vec<usize>> = outputs
                .iter()
                .map(|o| {
                    o.as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d.as_u64().unwrap() as usize)
                        .collect()
                })
                .collect();
            if node.kind != NodeKind::Input {
                assert_eq!(
                    node.output_shapes, dims,
                    "output shapes of node {}",
                    node.index
                );
            }
        }
    }
}

#[test]
fn imagenet_permutation_is_numpys() {
    let config = GcConfig::imagenet();
    let expected = integers("full/full_permute_random.txt");
    assert_eq!(
        legacy_permutation(config.permute_seed, config.n_loss_dims),
        expected
    );
    let model = GenerativeClassifier::<B>::new(&config, &Default::default()).unwrap();
    let ours: Vec<i64> = model
        .flow
        .permute
        .permutation
        .clone()
        .into_data()
        .convert::<i64>()
        .to_vec()
        .unwrap();
    assert_eq!(ours, expected.iter().map(|&i| i as i64).collect::<Vec<_>>());
}

#[test]
fn mini_config_is_expressible() {
    let config = mini_config();
    config.validate().unwrap();
    // The reference's own description translates to the built-in preset.
    assert_eq!(config, GcConfig::mini());
    let reference = mini_reference_json();
    let n = |v: &serde_json::Value| v.as_u64().unwrap() as usize;
    assert_eq!(config.total_dims(), n(&reference["n_total_dims_1d"]));
    assert_eq!(config.conv_dims(), n(&reference["n_conv_dims_1d"]));
    assert_eq!(config.dct_size(), n(&reference["head"]["dct_N"]));
    let widths: Vec<usize> = (0..config.planes.len())
        .map(|s| config.bottleneck_width(s))
        .collect();
    let expected: Vec<usize> = reference["backbone"]["bottleneck_width"]
        .as_array()
        .unwrap()
        .iter()
        .map(n)
        .collect();
    assert_eq!(widths, expected);
    // Node names and output shapes as the reference lists them.
    let nodes = reference["nodes"].as_array().unwrap();
    let ours = config.nodes();
    assert_eq!(ours.len(), nodes.len());
    for (node, r) in ours.iter().zip(nodes) {
        assert_eq!(node.name, r["name"].as_str().unwrap());
        if let Some(outputs) = r["output_dims"].as_array() {
            let dims: Vec<Vec<usize>> = outputs
                .iter()
                .map(|o| o.as_array().unwrap().iter().map(n).collect())
                .collect();
            assert_eq!(node.output_shapes, dims, "node {}", node.index);
        }
    }
    // The key table names exactly mini_keys.txt (tmp_var activations aside).
    let keys = key_file("mini/mini_keys.txt");
    let expected: BTreeSet<&String> = keys
        .keys()
        .filter(|k| !k.starts_with("inn.tmp_var_"))
        .collect();
    let table = key_table(&config);
    let ours: BTreeSet<&String> = table.iter().map(|r| &r.reference).collect();
    assert_eq!(ours, expected);
    for row in &table {
        assert_eq!(
            row.reference_shape, keys[&row.reference].0,
            "{}",
            row.reference
        );
    }
    assert_model_matches_table(&config);
    // Its permutations: PermuteRandom and Haar's wavelet order.
    assert_eq!(
        legacy_permutation(0, 768),
        integers("mini/permute_random.txt")
    );
    assert_eq!(
        wavelet_order(12),
        integers("mini/haar_order_by_wavelet_perm.txt")
    );
}

#[test]
fn model_parameters_are_float_except_permutations() {
    let model = GenerativeClassifier::<B>::new(&mini_config(), &Default::default()).unwrap();
    for p in parameter_shapes::<B, _>(&model) {
        let is_permutation = p.path.ends_with("permutation");
        assert_eq!(p.kind == ParamKind::Int, is_permutation, "{}", p.path);
    }
}

#[test]
fn wrong_input_shapes_are_typed_errors() {
    use burn::tensor::Tensor;
    let device = Default::default();
    let model = GenerativeClassifier::<B>::new(&mini_config(), &device).unwrap();
    let ok = Tensor::<B, 4>::zeros([1, 3, 112, 112], &device);
    assert!(model.try_forward(ok, trustgc::Mode::Eval).is_ok());
    for dims in [[1, 3, 224, 224], [2, 1, 112, 112], [0, 3, 112, 112]] {
        let x = Tensor::<B, 4>::zeros(dims, &device);
        let err = model.try_forward(x, trustgc::Mode::Eval).unwrap_err();
        assert_eq!(err.found, dims.to_vec());
        assert!(err.to_string().contains("[batch, 3, 112, 112]"), "{err}");
    }
}
