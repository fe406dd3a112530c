//! Hand-made checkpoints: every dtype, views with offsets and arbitrary strides, byte
//! orders, legacy storage views, parameters, protocol 4 opcodes, nested keys.

mod common;

use common::{
    Py, TensorSpec, f32_bytes, legacy_checkpoint, pickle, s, zip_checkpoint, zip_checkpoint_with,
};
use trustgc_checkpoint::{
    Checkpoint, DType, Format, Values, default_keep, inspect_checkpoint_bytes,
    read_checkpoint_bytes,
};

fn keep_all(_: &str) -> bool {
    true
}

/// Both formats of the same object; `storages` as (key, element count, bytes).
fn both(root: &Py, storages: &[(&str, u64, Vec<u8>)]) -> [(Format, Vec<u8>); 2] {
    let zip_storages: Vec<(&str, Vec<u8>)> =
        storages.iter().map(|(k, _, b)| (*k, b.clone())).collect();
    [
        (
            Format::Zip,
            zip_checkpoint(
                "my archive.v2",
                &pickle(root, false),
                &zip_storages,
                Some("little"),
            ),
        ),
        (
            Format::Legacy,
            legacy_checkpoint(&pickle(root, true), storages),
        ),
    ]
}

fn read_both(root: &Py, storages: &[(&str, u64, Vec<u8>)]) -> Vec<Checkpoint> {
    both(root, storages)
        .into_iter()
        .map(|(format, bytes)| {
            let c = read_checkpoint_bytes(&bytes, keep_all)
                .unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!(c.format, format);
            c
        })
        .collect()
}

#[test]
fn every_dtype_round_trips() {
    let f16: Vec<half::f16> = [1.5f32, -0.0, 65504.0, f32::INFINITY]
        .iter()
        .map(|&x| half::f16::from_f32(x))
        .collect();
    let bf16: Vec<half::bf16> = [3.0f32, -1e30, 1e-30]
        .iter()
        .map(|&x| half::bf16::from_f32(x))
        .collect();
    let cases: Vec<(&str, &str, Vec<u8>, Values, DType)> = vec![
        (
            "HalfStorage",
            "f16",
            f16.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::Float(f16.iter().map(|x| x.to_f64()).collect()),
            DType::F16,
        ),
        (
            "BFloat16Storage",
            "bf16",
            bf16.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::Float(bf16.iter().map(|x| x.to_f64()).collect()),
            DType::BF16,
        ),
        (
            "FloatStorage",
            "f32",
            f32_bytes(&[0.1, -2.5e-38, 3.4e38]),
            Values::Float(vec![0.1f32.into(), (-2.5e-38f32).into(), 3.4e38f32.into()]),
            DType::F32,
        ),
        (
            "DoubleStorage",
            "f64",
            [0.1f64, -1e300]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            Values::Float(vec![0.1, -1e300]),
            DType::F64,
        ),
        (
            "LongStorage",
            "i64",
            [i64::MIN, -1, i64::MAX]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            Values::Int(vec![i64::MIN, -1, i64::MAX]),
            DType::I64,
        ),
        (
            "IntStorage",
            "i32",
            [i32::MIN, 7].iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::Int(vec![i32::MIN.into(), 7]),
            DType::I32,
        ),
        (
            "ShortStorage",
            "i16",
            [-300i16, 300]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            Values::Int(vec![-300, 300]),
            DType::I16,
        ),
        (
            "CharStorage",
            "i8",
            vec![0x80, 0x7f],
            Values::Int(vec![-128, 127]),
            DType::I8,
        ),
        (
            "ByteStorage",
            "u8",
            vec![0, 255],
            Values::Int(vec![0, 255]),
            DType::U8,
        ),
        (
            "BoolStorage",
            "bool",
            vec![1, 0, 1],
            Values::Int(vec![1, 0, 1]),
            DType::Bool,
        ),
        (
            "UntypedStorage",
            "raw",
            vec![9, 8],
            Values::Int(vec![9, 8]),
            DType::U8,
        ),
    ];
    let mut items = Vec::new();
    let mut storages = Vec::new();
    for (class, key, bytes, values, dtype) in &cases {
        let n = values.len() as u64;
        assert_eq!(bytes.len() as u64, n * dtype.size() as u64);
        items.push((s(key), Py::Tensor(TensorSpec::contiguous(class, key, &[n]))));
        storages.push((*key, n, bytes.clone()));
    }
    for c in read_both(&Py::OrderedDict(items), &storages) {
        assert_eq!(c.tensors.len(), cases.len());
        for ((key, t), (_, want_key, _, values, dtype)) in c.tensors.iter().zip(&cases) {
            assert_eq!(key, want_key);
            assert_eq!(t.dtype, *dtype, "{key}");
            assert_eq!(&t.values, values, "{key}");
            assert_eq!(t.shape, vec![values.len()]);
        }
    }
}

#[test]
fn views_come_out_row_major() {
    // Storage 0..24 as f32.
    let data: Vec<f32> = (0..24).map(|x| x as f32).collect();
    let storages = [("s", 24, f32_bytes(&data))];
    let view = |offset, shape: &[u64], stride: &[u64]| {
        let mut t = TensorSpec::contiguous("FloatStorage", "s", shape);
        t.numel = 24;
        t.offset = offset;
        t.stride = stride.to_vec();
        Py::Tensor(t)
    };
    let root = Py::Dict(vec![
        // The transpose of the 4x6 matrix at offset 0.
        (s("t"), view(0, &[6, 4], &[1, 6])),
        // Rows 1..3, columns 2..5 of it: offset 8, shape 2x3, strides (6, 1).
        (s("slice"), view(8, &[2, 3], &[6, 1])),
        // Every other element from 3 on, as a 2x2x2.
        (s("step"), view(3, &[2, 2, 2], &[8, 4, 2])),
        // One element expanded to 2x3 (stride 0).
        (s("expand"), view(5, &[2, 3], &[0, 0])),
        // A scalar at offset 23, and an empty view.
        (s("scalar"), view(23, &[], &[])),
        (s("empty"), view(24, &[0, 5], &[5, 1])),
    ]);
    for c in read_both(&root, &storages) {
        let vals = |k: &str| c.get(k).unwrap().values.as_float().unwrap().to_vec();
        let t: Vec<f64> = (0..6)
            .flat_map(|j| (0..4).map(move |i| (i * 6 + j) as f64))
            .collect();
        assert_eq!(vals("t"), t);
        assert_eq!(c.get("t").unwrap().shape, vec![6, 4]);
        assert_eq!(vals("slice"), vec![8.0, 9.0, 10.0, 14.0, 15.0, 16.0]);
        assert_eq!(
            vals("step"),
            vec![3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0, 17.0]
        );
        assert_eq!(vals("expand"), vec![5.0; 6]);
        assert_eq!(vals("scalar"), vec![23.0]);
        assert_eq!(c.get("scalar").unwrap().shape, Vec::<usize>::new());
        assert!(vals("empty").is_empty());
        assert_eq!(c.get("empty").unwrap().shape, vec![0, 5]);
    }
}

#[test]
fn deflated_zip_entries_read_like_stored_ones() {
    let data: Vec<f32> = (0..1000).map(|x| (x as f32).sin()).collect();
    let mut view = TensorSpec::contiguous("FloatStorage", "s", &[10, 3]);
    view.numel = 1000;
    view.offset = 900;
    view.stride = vec![1, 10];
    let root = Py::Dict(vec![
        (
            s("whole"),
            Py::Tensor(TensorSpec::contiguous("FloatStorage", "s", &[1000])),
        ),
        (s("view"), Py::Tensor(view)),
    ]);
    let pkl = pickle(&root, false);
    let storages = [("s", f32_bytes(&data))];
    let stored = zip_checkpoint("a", &pkl, &storages, None);
    let deflated =
        zip_checkpoint_with("a", &pkl, &storages, None, zip::CompressionMethod::Deflated);
    assert!(deflated.len() < stored.len());
    let a = read_checkpoint_bytes(&stored, keep_all).unwrap();
    let b = read_checkpoint_bytes(&deflated, keep_all).unwrap();
    assert_eq!(a, b);
    let v = b.get("view").unwrap().values.as_float().unwrap();
    assert_eq!(v[0], f64::from(data[900]));
    assert_eq!(v[1], f64::from(data[910]));
    assert_eq!(v[3], f64::from(data[901]));
}

#[test]
fn big_endian_zip_storages() {
    let root = Py::Dict(vec![
        (
            s("f"),
            Py::Tensor(TensorSpec::contiguous("FloatStorage", "0", &[2])),
        ),
        (
            s("i"),
            Py::Tensor(TensorSpec::contiguous("LongStorage", "1", &[1])),
        ),
    ]);
    let f: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|x| x.to_be_bytes())
        .collect();
    let bytes = zip_checkpoint(
        "a",
        &pickle(&root, false),
        &[("0", f), ("1", (-3i64).to_be_bytes().to_vec())],
        Some("big"),
    );
    let c = read_checkpoint_bytes(&bytes, keep_all).unwrap();
    assert_eq!(c.get("f").unwrap().values, Values::Float(vec![1.5, -2.0]));
    assert_eq!(c.get("i").unwrap().values, Values::Int(vec![-3]));
}

#[test]
fn legacy_storage_views() {
    // Two storage views (offset 2, size 3) and (offset 0, size 2) of one root of 6.
    let mut a = TensorSpec::contiguous("FloatStorage", "root", &[3]);
    a.numel = 6;
    a.view = Some(("v1".into(), 2, 3));
    let mut b = TensorSpec::contiguous("FloatStorage", "root", &[2]);
    b.numel = 6;
    b.view = Some(("v0".into(), 0, 2));
    let root = Py::Dict(vec![
        (s("a"), Py::Tensor(a.clone())),
        (s("b"), Py::Tensor(b)),
    ]);
    let data = f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let bytes = legacy_checkpoint(&pickle(&root, true), &[("root", 6, data.clone())]);
    let c = read_checkpoint_bytes(&bytes, keep_all).unwrap();
    assert_eq!(
        c.get("a").unwrap().values,
        Values::Float(vec![2.0, 3.0, 4.0])
    );
    assert_eq!(c.get("b").unwrap().values, Values::Float(vec![0.0, 1.0]));
    // A tensor reaching past its storage view (but not past the root) is out of bounds.
    a.shape = vec![4];
    a.stride = vec![1];
    let root = Py::Dict(vec![(s("a"), Py::Tensor(a.clone()))]);
    let bytes = legacy_checkpoint(&pickle(&root, true), &[("root", 6, data.clone())]);
    assert!(matches!(
        read_checkpoint_bytes(&bytes, keep_all),
        Err(trustgc_checkpoint::CheckpointError::ViewOutOfBounds { .. })
    ));
    // A storage view past its root.
    a.shape = vec![1];
    a.view = Some(("v".into(), 5, 2));
    let root = Py::Dict(vec![(s("a"), Py::Tensor(a))]);
    let bytes = legacy_checkpoint(&pickle(&root, true), &[("root", 6, data)]);
    assert!(matches!(
        read_checkpoint_bytes(&bytes, keep_all),
        Err(trustgc_checkpoint::CheckpointError::Pickle { .. })
    ));
}

#[test]
fn gc_checkpoint_layout_with_parameters_optimizer_and_filter() {
    let mut mu = TensorSpec::contiguous("FloatStorage", "2", &[1, 2]);
    mu.param = true;
    let mut momentum = TensorSpec::contiguous("FloatStorage", "3", &[2]);
    momentum.location = "cuda:1".into();
    let root = Py::Dict(vec![
        (
            s("inn"),
            Py::OrderedDict(vec![
                (
                    s("tmp_var_1"),
                    Py::Tensor(TensorSpec::contiguous("FloatStorage", "0", &[2])),
                ),
                (
                    s("module_list.1.w"),
                    Py::Tensor(TensorSpec::contiguous("FloatStorage", "1", &[2])),
                ),
                (
                    s("module_list.1.bn.num_batches_tracked"),
                    Py::Tensor(TensorSpec::contiguous("LongStorage", "4", &[])),
                ),
            ]),
        ),
        (s("mu"), Py::Tensor(mu)),
        (
            s("opt"),
            Py::Dict(vec![
                (
                    s("state"),
                    Py::Dict(vec![(
                        Py::Int(0),
                        Py::Dict(vec![(s("momentum_buffer"), Py::Tensor(momentum))]),
                    )]),
                ),
                (
                    s("param_groups"),
                    Py::List(vec![Py::Dict(vec![
                        (s("lr"), Py::Float(0.1)),
                        (s("nesterov"), Py::Bool(false)),
                        (s("foreach"), Py::None),
                        (s("params"), Py::List(vec![Py::Int(0), Py::Int(1)])),
                        (s("big"), Py::Raw(vec![0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1])),
                    ])]),
                ),
            ]),
        ),
    ]);
    let storages = [
        ("0", 2, f32_bytes(&[9.0, 9.0])),
        ("1", 2, f32_bytes(&[1.0, 2.0])),
        ("2", 2, f32_bytes(&[3.0, 4.0])),
        ("3", 2, f32_bytes(&[5.0, 6.0])),
        ("4", 1, 42i64.to_le_bytes().to_vec()),
    ];
    for (format, bytes) in both(&root, &storages) {
        let c = read_checkpoint_bytes(&bytes, default_keep).unwrap();
        let keys: Vec<&str> = c.tensors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "inn.module_list.1.w",
                "inn.module_list.1.bn.num_batches_tracked",
                "mu"
            ],
            "{format:?}"
        );
        let nbt = c.get("inn.module_list.1.bn.num_batches_tracked").unwrap();
        assert_eq!((nbt.shape.len(), &nbt.values), (0, &Values::Int(vec![42])));
        assert_eq!(c.get("mu").unwrap().shape, vec![1, 2]);

        let inv = inspect_checkpoint_bytes(&bytes).unwrap();
        let keys: Vec<&str> = inv.tensors.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "inn.tmp_var_1",
                "inn.module_list.1.w",
                "inn.module_list.1.bn.num_batches_tracked",
                "mu",
                "opt.state.0.momentum_buffer"
            ]
        );
        assert_eq!(inv.tensors[4].location, "cuda:1");
    }
}

#[test]
fn protocol_4_opcodes() {
    // {'w': tensor} written with FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, BINGET.
    let mut p = vec![0x80, 4, 0x95];
    let mut body = vec![b'}', 0x94];
    let sbu = |b: &mut Vec<u8>, x: &str| {
        b.push(0x8c);
        b.push(x.len() as u8);
        b.extend(x.as_bytes());
        b.push(0x94);
    };
    sbu(&mut body, "w");
    sbu(&mut body, "torch._utils");
    sbu(&mut body, "_rebuild_tensor_v2");
    body.push(0x93);
    body.push(0x94);
    body.extend([b'(', b'(']);
    sbu(&mut body, "storage");
    sbu(&mut body, "torch");
    sbu(&mut body, "DoubleStorage");
    body.extend([0x93, 0x94]);
    sbu(&mut body, "k");
    sbu(&mut body, "cpu");
    body.extend([
        b'K', 2, b't', b'Q', b'K', 1, b'K', 1, 0x85, b'K', 1, 0x85, 0x89,
    ]);
    body.extend([b'N', b't', b'R', b's']);
    body.push(b'.');
    p.extend((body.len() as u64).to_le_bytes());
    p.extend(body);
    let data: Vec<u8> = [1.0f64, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
    let bytes = zip_checkpoint("x", &p, &[("k", data)], None);
    let c = read_checkpoint_bytes(&bytes, keep_all).unwrap();
    assert_eq!(c.tensors.len(), 1);
    assert_eq!(c.get("w").unwrap().values, Values::Float(vec![2.0]));
}

#[test]
fn only_reachable_tensors_count_and_lists_are_indexed() {
    let t = |k: &str| Py::Tensor(TensorSpec::contiguous("FloatStorage", k, &[1]));
    let root = Py::Dict(vec![
        (
            s("l"),
            Py::List(vec![Py::Int(5), t("a"), Py::Tuple(vec![t("b")])]),
        ),
        (Py::Int(-3), t("c")),
        (Py::Bool(true), t("d")),
        (Py::None, t("e")),
    ]);
    let storages: Vec<(&str, u64, Vec<u8>)> = ["a", "b", "c", "d", "e"]
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, 1, f32_bytes(&[i as f32])))
        .collect();
    for c in read_both(&root, &storages) {
        let keys: Vec<&str> = c.tensors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["l.1", "l.2.0", "-3", "True", "None"]);
    }
    // A bare tensor has the empty key.
    let bytes = zip_checkpoint(
        "a",
        &pickle(&t("a"), false),
        &[("a", f32_bytes(&[1.0]))],
        None,
    );
    let c = read_checkpoint_bytes(&bytes, keep_all).unwrap();
    assert_eq!(c.tensors[0].0, "");
}

/// Writes small valid checkpoints (both formats) as fuzzing seeds into
/// `$TRUSTGC_WRITE_SEEDS`; `fuzz/seed.sh` runs it:
/// `TRUSTGC_WRITE_SEEDS=fuzz/corpus/checkpoint cargo test -p trustgc-checkpoint --test synthetic -- --ignored write_fuzz_seeds`
#[test]
#[ignore = "writes fuzzing seeds: TRUSTGC_WRITE_SEEDS=DIR cargo test -p trustgc-checkpoint --test synthetic -- --ignored write_fuzz_seeds"]
fn write_fuzz_seeds() {
    let Some(dir) = std::env::var_os("TRUSTGC_WRITE_SEEDS") else {
        panic!("set TRUSTGC_WRITE_SEEDS to the corpus directory");
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut spec = TensorSpec::contiguous("FloatStorage", "0", &[2, 2]);
    spec.numel = 6;
    spec.offset = 1;
    spec.stride = vec![1, 2];
    let mut param = TensorSpec::contiguous("HalfStorage", "1", &[3]);
    param.param = true;
    let root = Py::Dict(vec![
        (
            s("inn"),
            Py::OrderedDict(vec![
                (s("tmp_var_0"), Py::Tensor(spec)),
                (
                    s("n"),
                    Py::Tensor(TensorSpec::contiguous("LongStorage", "2", &[])),
                ),
            ]),
        ),
        (s("mu"), Py::Tensor(param)),
        (
            s("opt"),
            Py::Dict(vec![(
                s("param_groups"),
                Py::List(vec![Py::Float(0.9), Py::Bool(true), Py::None, s("x")]),
            )]),
        ),
    ]);
    let storages = [
        ("0", 6, f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])),
        ("1", 3, vec![0, 60, 0, 188, 0, 0]),
        ("2", 1, 7i64.to_le_bytes().to_vec()),
    ];
    for (format, bytes) in both(&root, &storages) {
        read_checkpoint_bytes(&bytes, keep_all).unwrap();
        let name = format!("small_{format:?}.pt").to_lowercase();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
