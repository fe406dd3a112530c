//! The analytic FLOP count against the reference's own count of the ImageNet architecture
//! (`../shared/golden/full/full_flops.txt`, PyTorch's `FlopCounterMode` on the original
//! code: 2 FLOPs per multiply-add of convolutions and matrix products).

use std::collections::BTreeMap;
use std::path::PathBuf;

use trustgc_core::GcConfig;
use trustgc_core::flops::FlopCount;

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

/// The reference's per-node GFLOPs (`node  N name  X GFLOP` lines) and its
/// `model.model only` total.
fn reference_counts() -> (BTreeMap<usize, f64>, f64) {
    let text = std::fs::read_to_string(golden("full/full_flops.txt")).unwrap();
    let mut nodes = BTreeMap::new();
    let mut total = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"node") && words.last() == Some(&"GFLOP") {
            let node: usize = words[1].parse().unwrap();
            let gflop: f64 = words[words.len() - 2].parse().unwrap();
            nodes.insert(node, gflop);
        }
        if let Some(rest) = line.strip_prefix("model.model only:") {
            total = Some(
                rest.trim()
                    .trim_end_matches("GFLOP")
                    .trim()
                    .parse()
                    .unwrap(),
            );
        }
    }
    (nodes, total.expect("a `model.model only` line"))
}

/// What the reference computes as convolutions and trustgc does not (see the module docs
/// of `trustgc_core::flops`): per coupling block the permutation as a 1x1 convolution
/// `2·C'²·H'W'` over its `C'` output channels; per downsampling step the one-hot
/// unshuffle (couplings) or Haar kernels as a grouped stride-2 convolution with
/// `[4c, 1, 2, 2]` weights: `2·4c·4·(H/2)²` for `c` input channels.
fn reference_only(config: &GcConfig) -> BTreeMap<usize, u64> {
    let mut extra = BTreeMap::new();
    for block in config.plan().blocks {
        let [out_channels, out_side, _] = block.output_shape();
        let (c, s) = (out_channels as u64, out_side as u64);
        let mut flops = 0;
        if block.is_coupling() {
            flops += 2 * c * c * s * s;
        }
        if block.downsamples() {
            flops += 2 * 4 * block.channels as u64 * 4 * s * s;
        }
        extra.insert(block.node, flops);
    }
    extra
}

#[test]
fn imagenet_count_matches_the_reference_counter_per_node() {
    let config = GcConfig::imagenet();
    let count = FlopCount::of(&config).unwrap();
    let (reference, reference_total) = reference_counts();
    let extra = reference_only(&config);
    // The reference prints GFLOP with 3 decimals: ±0.5 MFLOP of rounding.
    let tolerance = 0.5e6 + 1.0;
    let mut ours_plus_extra = 0u64;
    for node in &count.nodes {
        let expected = reference[&node.node] * 1e9;
        let ours = node.flops + extra.get(&node.node).copied().unwrap_or(0);
        ours_plus_extra += ours;
        assert!(
            (ours as f64 - expected).abs() <= tolerance,
            "node {} {}: ours {} + reference-only {} vs reference {expected}",
            node.node,
            node.name,
            node.flops,
            extra.get(&node.node).copied().unwrap_or(0),
        );
    }
    // Every computing node of the reference is covered (PERM_FC and the split are 0).
    for (node, gflop) in &reference {
        if *gflop > 0.0 {
            assert!(count.nodes.iter().any(|n| n.node == *node), "node {node}");
        }
    }
    assert!((ours_plus_extra as f64 - reference_total * 1e9).abs() <= 0.5e6 + 1.0);
}

#[test]
fn a_full_mu_conv_head_costs_what_the_reference_distances_cost() {
    // The reference's `cluster distances (batch 1)` line: z against the materialized
    // `[classes, D]` means, which is our head with a full `mu_conv`.
    let text = std::fs::read_to_string(golden("full/full_flops.txt")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("cluster distances (batch 1):"))
        .unwrap();
    let gflop: f64 = line
        .split(':')
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches("GFLOP")
        .trim()
        .parse()
        .unwrap();
    let mut config = GcConfig::imagenet();
    config.mu_low_rank_k = 0;
    let count = FlopCount::of(&config).unwrap();
    assert!((count.head as f64 - gflop * 1e9).abs() <= 0.5e5 + 1.0);
    assert_eq!(count.class_norms, 0);
}
