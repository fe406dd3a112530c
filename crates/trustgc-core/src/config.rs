//! [`GcConfig`]: the architecture of a generative classifier of the IB-INN family.
//!
//! It is what the hub's `config.json` holds. [`GcConfig::imagenet`] is the released
//! ImageNet model; any model of the same family (other input sizes,
//! channels, classes, widths, depths) is a `GcConfig` too. [`GcConfig::validate`] rejects a
//! configuration that cannot work, naming the field, before any tensor is allocated.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::plan::BlockLayers;

/// The architecture of a generative classifier (flow + Gaussian head).
///
/// Field names follow the reference where it has one (`ibinn_imagenet`'s
/// `InvertibleImagenetClassifier`, `InvertibleResNet`, `InvertibleMulticlassClassifier`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// Input shape `[channels, height, width]` (the reference's `input_dims`).
    pub input_shape: [usize; 3],
    /// Number of classes.
    pub n_classes: usize,
    /// Latent dimensions that carry the class means `mu` (`n_loss_dims_1d`).
    pub n_loss_dims: usize,
    /// Rank of the class means of the remaining dimensions, `mu_conv = mu_t @ mu_m`
    /// (`mu_low_rank_k`); 0 stores a full `mu_conv` `[n_classes, conv_dims]`.
    pub mu_low_rank_k: usize,
    /// Base width of the ResNet subnets; also the hidden width of the entry subnets.
    pub base_width: usize,
    /// Planes per stage; a bottleneck has width `planes · base_width / 64`.
    pub planes: Vec<usize>,
    /// Coupling blocks per stage.
    pub blocks: Vec<usize>,
    /// Stride per stage: 2 starts the stage with a downsampling coupling, 1 with a slow one.
    pub strides: Vec<usize>,
    /// Bound of the coupling log-scales (`clamp`).
    pub clamp: f64,
    /// Initial act-norm scale of every coupling (`act_norm`, softplus type).
    pub act_norm: f64,
    /// Hidden width of the 1x1 subnet after the Haar transform (the reference uses the
    /// channel count there, `16 · input channels`).
    pub entry_1x1_hidden: usize,
    /// Haar `rebalance` (output factor `0.5 · rebalance`).
    #[serde(default = "default_rebalance")]
    pub haar_rebalance: f64,
    /// DCT pooling `rebalance`.
    #[serde(default = "default_rebalance")]
    pub dct_rebalance: f64,
    /// Seed of numpy's legacy generator for the permutation of the loss dimensions.
    #[serde(default)]
    pub permute_seed: u32,
    /// BatchNorm momentum (PyTorch convention).
    #[serde(default = "default_bn_momentum")]
    pub bn_momentum: f64,
    /// BatchNorm ε.
    #[serde(default = "default_bn_eps")]
    pub bn_eps: f64,
    /// Class names in index order (empty: unnamed classes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_names: Vec<String>,
    /// How images become inputs (empty: the caller provides tensors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<crate::input::InputSpec>,
}

/// The 1000 ImageNet-1k class names in class-index order (torchvision's list).
pub fn imagenet_class_names() -> Vec<String> {
    include_str!("../data/imagenet_class_names.txt")
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn default_rebalance() -> f64 {
    0.5
}
fn default_bn_momentum() -> f64 {
    0.05
}
fn default_bn_eps() -> f64 {
    1e-5
}

/// The most blocks a stage may have (the released model has at most 6).
pub const MAX_BLOCKS_PER_STAGE: usize = 1024;

/// The most parameters a config may describe (2^32, 16 GiB in float32); a config asking
/// for more is refused before anything is allocated.
pub const MAX_PARAMS: usize = 1 << 32;

/// Why a [`GcConfig`] was rejected.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A field's value is outside what the architecture allows.
    #[error("config field `{field}` = {value}: {requirement}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Its value, as written.
        value: String,
        /// What it must satisfy.
        requirement: &'static str,
    },
    /// Two per-stage lists have different lengths.
    #[error(
        "config fields `planes`, `blocks` and `strides` must have one entry per stage; got {planes}, {blocks} and {strides} entries"
    )]
    StageCount {
        /// Entries in `planes`.
        planes: usize,
        /// Entries in `blocks`.
        blocks: usize,
        /// Entries in `strides`.
        strides: usize,
    },
    /// The input size does not survive the downsampling steps.
    #[error(
        "config field `input_shape`: height and width {height}x{width} must be equal and divisible by {factor} (2 for the entry coupling, 2 for Haar, 2 per stride-2 stage)"
    )]
    Indivisible {
        /// Input height.
        height: usize,
        /// Input width.
        width: usize,
        /// The total downsampling factor.
        factor: usize,
    },
    /// More loss dimensions than the latent has.
    #[error(
        "config field `n_loss_dims` = {n_loss_dims} must be smaller than the latent size {total} (input channels x height x width), so that z_conv is not empty"
    )]
    LossDims {
        /// The configured loss dimensions.
        n_loss_dims: usize,
        /// The latent size.
        total: usize,
    },
    /// The model would have more parameters than trustgc builds.
    #[error(
        "config describes a model of {params} parameters, more than the {max} trustgc builds (the released ImageNet model has about 78 million)"
    )]
    TooLarge {
        /// The config's parameter count.
        params: usize,
        /// The limit, [`MAX_PARAMS`].
        max: usize,
    },
    /// A size computed from the config overflows.
    #[error("config is too large: {what} overflows")]
    Overflow {
        /// What was being computed.
        what: &'static str,
    },
    /// The JSON could not be parsed into a config.
    #[error("config JSON is invalid: {source}")]
    Json {
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
}

/// The kind of a node in the reference graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// `InputNode`, no module.
    Input,
    /// The entry downsampling coupling (entry subnets).
    EntryDown,
    /// Haar downsampling.
    Haar,
    /// The slow coupling with the 1x1 subnet after Haar.
    Entry1x1,
    /// A downsampling coupling with bottleneck subnets, first block of stage `stage`.
    Down {
        /// Stage index (0-based).
        stage: usize,
    },
    /// A slow coupling with a bottleneck subnet, block `block` (0-based) of stage `stage`.
    Slow {
        /// Stage index (0-based).
        stage: usize,
        /// Block index within the stage (0-based).
        block: usize,
    },
    /// `OutputNode` of `z_fc`, no parameters.
    OutFc,
    /// DCT pooling.
    Dct,
    /// `OutputNode` of `z_conv`, no parameters.
    OutConv,
    /// The random permutation of the loss dimensions.
    PermuteRandom,
    /// The split into loss and conv dimensions.
    Split,
}

/// One node of the reference graph, at its `module_list` index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// Index `N` in `module_list.N` (the order of the constructor's list, not execution).
    pub index: usize,
    /// The reference's node name (with its trailing spaces).
    pub name: String,
    /// What the node is.
    pub kind: NodeKind,
    /// Shape of the node's (first) input, without batch.
    pub input_shape: Vec<usize>,
    /// Shapes of its outputs, without batch.
    pub output_shapes: Vec<Vec<usize>>,
}

impl GcConfig {
    /// The released ImageNet architecture (the reference's `_trustworthy_gc`: 3x224x224
    /// inputs, 1000 classes, 3072 loss dimensions, a rank-128 head, ResNet-50-like stages
    /// `[3, 4, 6, 3]`).
    pub fn imagenet() -> Self {
        Self {
            input_shape: [3, 224, 224],
            n_classes: 1000,
            n_loss_dims: 3072,
            mu_low_rank_k: 128,
            base_width: 64,
            planes: vec![64, 128, 256, 512],
            blocks: vec![3, 4, 6, 3],
            strides: vec![1, 2, 2, 2],
            clamp: 0.7,
            act_norm: 0.7,
            entry_1x1_hidden: 48,
            haar_rebalance: 0.5,
            dct_rebalance: 0.5,
            permute_seed: 0,
            bn_momentum: 0.05,
            bn_eps: 1e-5,
            class_names: imagenet_class_names(),
            input: Some(crate::input::InputSpec::imagenet()),
        }
    }

    /// The mini model the parity tests compare with the reference (docs/parity.md in the
    /// repository): the released code paths at small sizes (3x112x112, 10 classes, 768 loss dimensions, rank 8, base width
    /// 16, planes [32, 64, 64, 128], blocks [1, 2, 1, 1], strides [1, 2, 1, 2]). No input
    /// representation: it takes tensors.
    pub fn mini() -> Self {
        Self {
            input_shape: [3, 112, 112],
            n_classes: 10,
            n_loss_dims: 768,
            mu_low_rank_k: 8,
            base_width: 16,
            planes: vec![32, 64, 64, 128],
            blocks: vec![1, 2, 1, 1],
            strides: vec![1, 2, 1, 2],
            entry_1x1_hidden: 48,
            class_names: Vec::new(),
            input: None,
            ..Self::imagenet()
        }
    }

    /// Parses and validates a `config.json`.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let config: Self =
            serde_json::from_str(text).map_err(|source| ConfigError::Json { source })?;
        config.validate()?;
        Ok(config)
    }

    /// The config as pretty JSON (the hub's `config.json`).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a GcConfig always serializes")
    }

    /// Checks that the architecture can be built; names the offending field otherwise.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(
            field: &'static str,
            value: impl ToString,
            requirement: &'static str,
        ) -> ConfigError {
            ConfigError::Invalid {
                field,
                value: value.to_string(),
                requirement,
            }
        }
        let [channels, height, width] = self.input_shape;
        if channels < 2 {
            return Err(invalid(
                "input_shape",
                format!("{:?}", self.input_shape),
                "the entry coupling splits the input channels in two, so at least 2 channels are needed (give a 1-channel image a second channel, e.g. duplicated or noise)",
            ));
        }
        if self.n_classes == 0 {
            return Err(invalid(
                "n_classes",
                self.n_classes,
                "at least one class is needed",
            ));
        }
        if self.n_loss_dims == 0 {
            return Err(invalid(
                "n_loss_dims",
                self.n_loss_dims,
                "must be at least 1",
            ));
        }
        if self.base_width == 0 {
            return Err(invalid("base_width", self.base_width, "must be at least 1"));
        }
        if self.entry_1x1_hidden == 0 {
            return Err(invalid(
                "entry_1x1_hidden",
                self.entry_1x1_hidden,
                "must be at least 1",
            ));
        }
        let stages = self.planes.len();
        if stages == 0 || self.blocks.len() != stages || self.strides.len() != stages {
            return Err(ConfigError::StageCount {
                planes: self.planes.len(),
                blocks: self.blocks.len(),
                strides: self.strides.len(),
            });
        }
        for (stage, &planes) in self.planes.iter().enumerate() {
            if planes.checked_mul(self.base_width).is_none() {
                return Err(ConfigError::Overflow {
                    what: "bottleneck width",
                });
            }
            if self.bottleneck_width(stage) == 0 {
                return Err(invalid(
                    "planes",
                    format!("{:?}", self.planes),
                    "each bottleneck width planes * base_width / 64 must be at least 1",
                ));
            }
        }
        if self.blocks.iter().any(|&b| b > MAX_BLOCKS_PER_STAGE) {
            return Err(invalid(
                "blocks",
                format!("{:?}", self.blocks),
                "a stage has at most 1024 blocks",
            ));
        }
        if self.blocks.contains(&0) {
            return Err(invalid(
                "blocks",
                format!("{:?}", self.blocks),
                "every stage needs at least one block",
            ));
        }
        if self.strides.iter().any(|&s| s != 1 && s != 2) {
            return Err(invalid(
                "strides",
                format!("{:?}", self.strides),
                "every stride must be 1 or 2",
            ));
        }
        for (field, value) in [
            ("clamp", self.clamp),
            ("act_norm", self.act_norm),
            ("haar_rebalance", self.haar_rebalance),
            ("dct_rebalance", self.dct_rebalance),
            ("bn_eps", self.bn_eps),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(invalid(
                    field,
                    value,
                    "must be a finite number greater than 0",
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.bn_momentum) {
            return Err(invalid(
                "bn_momentum",
                self.bn_momentum,
                "must be between 0 and 1",
            ));
        }
        // act_norm is stored through softplus; its raw value must be finite.
        if !crate::layers::coupling::act_norm_raw_for_scale(self.act_norm).is_finite() {
            return Err(invalid(
                "act_norm",
                self.act_norm,
                "is outside the range softplus can represent",
            ));
        }
        let factor = self.downsampling_factor();
        if height != width || height == 0 || height % factor != 0 {
            return Err(ConfigError::Indivisible {
                height,
                width,
                factor,
            });
        }
        if !self.class_names.is_empty() && self.class_names.len() != self.n_classes {
            return Err(invalid(
                "class_names",
                format!("{} names", self.class_names.len()),
                "must be empty or name every class",
            ));
        }
        if let Some(input) = &self.input {
            input.validate()?;
        }
        if let Some(input) = &self.input
            && input.model_shape() != self.input_shape
        {
            return Err(invalid(
                "input",
                format!("{:?}", input.model_shape()),
                "the input representation must produce `input_shape`",
            ));
        }
        let total = self.checked_total_dims()?;
        if self.n_loss_dims >= total {
            return Err(ConfigError::LossDims {
                n_loss_dims: self.n_loss_dims,
                total,
            });
        }
        self.check_plan()?;
        Ok(())
    }

    /// The total spatial downsampling: entry coupling, Haar, and each stride-2 stage.
    pub fn downsampling_factor(&self) -> usize {
        let stride2 = self.strides.iter().filter(|&&s| s == 2).count() as u32;
        1usize.checked_shl(2 + stride2).unwrap_or(0)
    }

    fn checked_total_dims(&self) -> Result<usize, ConfigError> {
        let [c, h, w] = self.input_shape;
        c.checked_mul(h)
            .and_then(|v| v.checked_mul(w))
            .ok_or(ConfigError::Overflow { what: "input size" })
    }

    /// `D`, the number of latent dimensions (= input values per sample).
    pub fn total_dims(&self) -> usize {
        let [c, h, w] = self.input_shape;
        c * h * w
    }

    /// Dimensions of `z_conv`: `D − n_loss_dims`.
    pub fn conv_dims(&self) -> usize {
        self.total_dims() - self.n_loss_dims
    }

    /// The side `N` of the final feature map the DCT pools.
    pub fn dct_size(&self) -> usize {
        self.input_shape[1] / self.downsampling_factor()
    }

    /// Channels of the final feature map.
    pub fn final_channels(&self) -> usize {
        let n = self.dct_size();
        self.total_dims() / (n * n)
    }

    /// Inner width of the bottlenecks of `stage`: `planes · base_width / 64`.
    pub fn bottleneck_width(&self, stage: usize) -> usize {
        self.planes[stage] * self.base_width / 64
    }

    /// The number of values in every tensor of the model (see
    /// [`FlowPlan::num_params`](crate::plan::FlowPlan::num_params)). Call on a validated
    /// config.
    pub fn num_params(&self) -> usize {
        self.plan().num_params(self)
    }

    /// The reference graph's nodes in `module_list` order:
    /// `[input] + blocks + [out_fc] + [DCT, out_conv, PERM] + [split]`, derived from the
    /// [`plan`](Self::plan).
    ///
    /// Call on a validated config.
    pub fn nodes(&self) -> Vec<NodeSpec> {
        let plan = self.plan();
        let [c, h, w] = self.input_shape;
        let mut nodes = vec![NodeSpec {
            index: 0,
            name: "input".into(),
            kind: NodeKind::Input,
            input_shape: vec![],
            output_shapes: vec![vec![c, h, w]],
        }];
        for block in &plan.blocks {
            let kind = match block.layers {
                BlockLayers::EntryDown { .. } => NodeKind::EntryDown,
                BlockLayers::Haar => NodeKind::Haar,
                BlockLayers::Entry1x1 { .. } => NodeKind::Entry1x1,
                BlockLayers::Down { stage, .. } => NodeKind::Down { stage },
                BlockLayers::Slow { stage, block, .. } => NodeKind::Slow { stage, block },
            };
            nodes.push(NodeSpec {
                index: block.node,
                name: block.name.clone(),
                kind,
                input_shape: block.input_shape().to_vec(),
                output_shapes: vec![block.output_shape().to_vec()],
            });
        }
        let (total, loss) = (plan.total_dims, plan.n_loss_dims);
        let conv = total - loss;
        let (n, channels) = (plan.final_side, plan.final_channels);
        let tail = [
            (
                plan.out_fc_node,
                "out_fc",
                NodeKind::OutFc,
                vec![loss],
                vec![],
            ),
            (
                plan.dct_node,
                "DCT",
                NodeKind::Dct,
                vec![channels, n, n],
                vec![vec![total]],
            ),
            (
                plan.out_conv_node,
                "out_conv",
                NodeKind::OutConv,
                vec![conv],
                vec![],
            ),
            (
                plan.permute_node,
                "PERM_FC_0 1",
                NodeKind::PermuteRandom,
                vec![loss],
                vec![vec![loss]],
            ),
            (
                plan.split_node,
                "exit_flow split",
                NodeKind::Split,
                vec![total],
                vec![vec![loss], vec![conv]],
            ),
        ];
        for (index, name, kind, input_shape, output_shapes) in tail {
            nodes.push(NodeSpec {
                index,
                name: name.into(),
                kind,
                input_shape,
                output_shapes,
            });
        }
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_is_valid_and_has_the_reference_sizes() {
        let config = GcConfig::imagenet();
        config.validate().unwrap();
        assert_eq!(config.total_dims(), 150_528);
        assert_eq!(config.conv_dims(), 147_456);
        assert_eq!(config.dct_size(), 7);
        assert_eq!(config.final_channels(), 3072);
        assert_eq!(config.class_names.len(), 1000);
        assert_eq!(config.class_names[0], "tench");
        let nodes = config.nodes();
        assert_eq!(nodes.len(), 25);
        assert_eq!(nodes[17].name, "Strided entry_flow");
        assert_eq!(nodes[17].output_shapes, vec![vec![3072, 7, 7]]);
        assert_eq!(nodes[19].name, "middle_flow 4_3 ");
        assert_eq!(nodes[21].kind, NodeKind::Dct);
        assert_eq!(nodes[24].kind, NodeKind::Split);
    }

    fn field_of(err: ConfigError) -> String {
        match err {
            ConfigError::Invalid { field, .. } => field.to_string(),
            ConfigError::StageCount { .. } => "planes/blocks/strides".into(),
            ConfigError::Indivisible { .. } => "input_shape".into(),
            ConfigError::LossDims { .. } => "n_loss_dims".into(),
            other => format!("{other}"),
        }
    }

    #[test]
    fn impossible_configs_name_their_field() {
        type Mutation = Box<dyn Fn(&mut GcConfig)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("n_classes", Box::new(|c| c.n_classes = 0)),
            ("input_shape", Box::new(|c| c.input_shape = [1, 224, 224])),
            ("input_shape", Box::new(|c| c.input_shape = [3, 225, 225])),
            ("input_shape", Box::new(|c| c.input_shape = [3, 224, 112])),
            ("n_loss_dims", Box::new(|c| c.n_loss_dims = 150_528)),
            ("n_loss_dims", Box::new(|c| c.n_loss_dims = 0)),
            (
                "planes/blocks/strides",
                Box::new(|c| c.blocks.pop().map(|_| ()).unwrap_or(())),
            ),
            ("strides", Box::new(|c| c.strides[1] = 3)),
            ("blocks", Box::new(|c| c.blocks[0] = 0)),
            ("planes", Box::new(|c| c.planes[0] = 0)),
            ("clamp", Box::new(|c| c.clamp = f64::NAN)),
            ("act_norm", Box::new(|c| c.act_norm = -1.0)),
            ("bn_momentum", Box::new(|c| c.bn_momentum = 2.0)),
            ("base_width", Box::new(|c| c.base_width = 0)),
        ];
        for (field, mutate) in cases {
            let mut config = GcConfig::imagenet();
            mutate(&mut config);
            let err = config.validate().expect_err(field);
            assert_eq!(field_of(err), field);
        }
    }

    #[test]
    fn fuzzer_finding_a_zero_block_side_is_an_error() {
        // Found by `cargo fuzz run config` (a division by zero in `model_shape`).
        let text = r#"{"input_shape": [4, 16, 16], "n_classes": 10, "n_loss_dims": 128, "mu_low_rank_k": 0, "base_width": 32, "planes": [128, 128], "blocks": [4, 4], "strides": [1, 1], "clamp": 0.7, "act_norm": 0.7, "entry_1x1_hidden": 64, "haar_rebalance": 0.4, "dct_rebalance": 0.5, "permute_seed": 0, "bn_momentum": 0.05, "bn_eps": 1e-05, "input": {"kind": "grayscale", "size": 28, "pad": 2, "mean": 0.286, "std": 0.353, "space_to_depth": 0}, "class_names": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]}"#;
        let err = GcConfig::from_json(text).unwrap_err();
        assert!(err.to_string().contains("space_to_depth 0"), "{err}");
    }

    #[test]
    fn huge_sizes_are_errors_not_overflows() {
        let mut config = GcConfig::imagenet();
        config.input_shape = [usize::MAX / 2, 224, 224];
        config.input = None;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Overflow { .. })
        ));
        let mut config = GcConfig::imagenet();
        config.n_classes = usize::MAX / 3;
        config.class_names.clear();
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Overflow { .. })
        ));
    }

    #[test]
    fn absurdly_large_models_are_refused_before_allocation() {
        // Found by `cargo fuzz run config`: 44,448 blocks made deriving the key table slow.
        let mut config = GcConfig::mini();
        config.blocks[1] = 44444;
        let err = config.validate().unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "blocks",
                    ..
                }
            ),
            "{err}"
        );
        let mut config = GcConfig::mini();
        config.planes = vec![100_000; config.blocks.len()];
        let err = config.validate().unwrap_err();
        assert!(matches!(err, ConfigError::TooLarge { .. }), "{err}");
        assert!(GcConfig::imagenet().validate().is_ok());
    }

    #[test]
    fn json_round_trip_and_unknown_fields() {
        let config = GcConfig::imagenet();
        let back = GcConfig::from_json(&config.to_json()).unwrap();
        assert_eq!(back, config);
        let mut value: serde_json::Value = serde_json::from_str(&config.to_json()).unwrap();
        value["surprise"] = serde_json::json!(1);
        assert!(matches!(
            GcConfig::from_json(&value.to_string()),
            Err(ConfigError::Json { .. })
        ));
    }
}
