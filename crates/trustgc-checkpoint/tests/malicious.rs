//! Malicious and malformed inputs: each gives the right typed error, never a panic, an
//! allocation of what the file claims, or an executed command.

mod common;

use common::{Py, TensorSpec, f32_bytes, legacy_checkpoint, pickle, s, zip_checkpoint};
use trustgc_checkpoint::{
    CheckpointError, Limit, Limits, PickleProblem, RequiredElements, Section, default_keep,
    inspect_checkpoint_bytes, read_checkpoint_bytes, read_checkpoint_bytes_with_limits,
};

fn keep_all(_: &str) -> bool {
    true
}

fn read_err(bytes: &[u8]) -> CheckpointError {
    match read_checkpoint_bytes(bytes, keep_all) {
        Ok(c) => panic!("expected an error, read {} tensors", c.tensors.len()),
        Err(e) => {
            // Every error has a message naming what and where.
            assert!(!e.to_string().is_empty());
            e
        }
    }
}

/// `PROTO 2, GLOBAL <module> <name>, SHORT_BINUNICODE <arg>, TUPLE1, REDUCE, STOP`.
fn evil_pickle(module: &str, name: &str, arg: &str) -> Vec<u8> {
    let mut v = vec![0x80, 2, b'c'];
    v.extend(module.as_bytes());
    v.push(b'\n');
    v.extend(name.as_bytes());
    v.push(b'\n');
    v.push(0x8c);
    v.push(arg.len() as u8);
    v.extend(arg.as_bytes());
    v.extend([0x85, b'R', b'.']);
    v
}

fn assert_forbidden(e: CheckpointError, want_module: &str, want_name: &str, want: Section) {
    match e {
        CheckpointError::ForbiddenGlobal {
            module,
            name,
            section,
            offset,
        } => {
            assert_eq!((module.as_str(), name.as_str()), (want_module, want_name));
            assert_eq!(section, want);
            if want == Section::DataPkl {
                assert_eq!(offset, 2, "GLOBAL is the opcode after PROTO");
            }
        }
        other => panic!("expected ForbiddenGlobal {want_module}.{want_name}, got {other:?}"),
    }
}

#[test]
fn os_system_is_refused_in_zip_and_legacy_and_never_runs() {
    let marker = std::env::temp_dir().join(format!("trustgc_pwned_{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let cmd = format!("touch {}", marker.display());
    assert!(cmd.len() < 256);
    let evil = evil_pickle("os", "system", &cmd);

    // As the data.pkl of a zip checkpoint.
    let zip = zip_checkpoint("archive", &evil, &[], Some("little"));
    let e = read_err(&zip);
    let msg = e.to_string();
    assert!(msg.contains("os.system"), "{msg}");
    assert_forbidden(e, "os", "system", Section::DataPkl);
    assert_forbidden(
        inspect_checkpoint_bytes(&zip).unwrap_err(),
        "os",
        "system",
        Section::DataPkl,
    );

    // As the main pickle of a legacy file, and as its very first pickle.
    let legacy = legacy_checkpoint(&evil, &[]);
    assert_forbidden(read_err(&legacy), "os", "system", Section::LegacyMain);
    assert_forbidden(read_err(&evil), "os", "system", Section::LegacyMagic);

    assert!(!marker.exists(), "the pickled command ran");
}

#[test]
fn other_code_execution_globals_are_refused() {
    for (m, n) in [
        ("builtins", "eval"),
        ("__builtin__", "exec"),
        ("subprocess", "Popen"),
        ("posix", "system"),
        ("torch", "load"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch.serialization", "_get_layout"),
        ("collections", "defaultdict"),
    ] {
        let evil = evil_pickle(m, n, "x");
        let zip = zip_checkpoint("a", &evil, &[], None);
        assert_forbidden(read_err(&zip), m, n, Section::DataPkl);
    }
    // STACK_GLOBAL (protocol 4): module and name come from the stack.
    let mut p = vec![0x80, 4, 0x8c, 8];
    p.extend(b"builtins");
    p.extend([0x94, 0x8c, 4]);
    p.extend(b"eval");
    p.extend([0x94, 0x93, 0x8c, 1, b'1', 0x85, b'R', b'.']);
    let zip = zip_checkpoint("a", &p, &[], None);
    match read_err(&zip) {
        CheckpointError::ForbiddenGlobal {
            module,
            name,
            offset,
            ..
        } => {
            assert_eq!(
                (module.as_str(), name.as_str(), offset),
                ("builtins", "eval", 20)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_forbidden_global_stops_parsing_even_inside_the_skipped_optimizer_state() {
    let evil = evil_pickle("os", "system", "x");
    let root = Py::Dict(vec![
        (
            s("mu"),
            Py::Tensor(TensorSpec::contiguous("FloatStorage", "0", &[2])),
        ),
        (
            s("opt"),
            Py::Dict(vec![(
                s("state"),
                Py::Raw(evil[2..evil.len() - 1].to_vec()),
            )]),
        ),
    ]);
    let zip = zip_checkpoint(
        "a",
        &pickle(&root, false),
        &[("0", f32_bytes(&[1.0, 2.0]))],
        None,
    );
    match read_checkpoint_bytes(&zip, default_keep) {
        Err(CheckpointError::ForbiddenGlobal { module, name, .. }) => {
            assert_eq!((module.as_str(), name.as_str()), ("os", "system"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn opcodes_that_construct_objects_are_unsupported() {
    // INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT1, PERSID, and a byte that is no opcode.
    for opcode in [b'i', b'o', 0x81, 0x92, 0x82, b'P', 0xff] {
        let p = vec![0x80, 2, b'N', opcode, b'.'];
        match read_err(&zip_checkpoint("a", &p, &[], None)) {
            CheckpointError::UnsupportedOpcode {
                opcode: o,
                section,
                offset,
            } => {
                assert_eq!((o, section, offset), (opcode, Section::DataPkl, 3));
            }
            other => panic!("opcode {opcode:#x}: {other:?}"),
        }
    }
}

#[test]
fn truncated_zip_is_a_zip_error() {
    let bytes = common::golden_mini("mini.avg.pt");
    let half = &bytes[..bytes.len() / 2];
    assert!(matches!(read_err(half), CheckpointError::Zip { .. }));
    // Cut before the central directory ends.
    let most = &bytes[..bytes.len() - 10];
    assert!(matches!(read_err(most), CheckpointError::Zip { .. }));
}

#[test]
fn truncated_legacy_file_is_a_truncation() {
    let bytes = common::golden_mini("mini_legacy.avg.pt");
    // In the storages.
    match read_err(&bytes[..bytes.len() / 2]) {
        CheckpointError::Truncated {
            section, available, ..
        } => {
            assert_eq!(section, Section::LegacyStorages);
            assert!(available < bytes.len() as u64 / 2);
        }
        other => panic!("{other:?}"),
    }
    // Cut in the last storage by one byte.
    assert!(matches!(
        read_err(&bytes[..bytes.len() - 1]),
        CheckpointError::Truncated {
            section: Section::LegacyStorages,
            needed: _,
            ..
        }
    ));
    // In the main pickle, at every byte of a stretch (lengths and opcodes cut anywhere).
    for cut in 137..1200 {
        match read_err(&bytes[..cut]) {
            CheckpointError::Truncated {
                section: Section::LegacyMain,
                offset,
                ..
            } => assert!(offset <= cut as u64),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    // In the header pickles.
    for cut in 1..137 {
        assert!(
            matches!(read_err(&bytes[..cut]), CheckpointError::Truncated { .. }),
            "cut at {cut}"
        );
    }
}

#[test]
fn storage_claiming_1e12_elements_is_refused_before_allocating() {
    let n = 1_000_000_000_000u64;
    let mut spec = TensorSpec::contiguous("FloatStorage", "0", &[n]);
    spec.numel = n;
    let root = Py::Dict(vec![(s("w"), Py::Tensor(spec))]);

    // Legacy: the count before the storage says 1e12 too; 4e12 bytes are not there.
    let bytes = legacy_checkpoint(&pickle(&root, true), &[("0", n, f32_bytes(&[1.0; 4]))]);
    match read_err(&bytes) {
        CheckpointError::Truncated {
            section: Section::LegacyStorages,
            needed,
            available,
            ..
        } => assert_eq!((needed, available), (4 * n, 16)),
        other => panic!("{other:?}"),
    }
    // Legacy: the count disagrees with the persistent id.
    let bytes = legacy_checkpoint(&pickle(&root, true), &[("0", 4, f32_bytes(&[1.0; 4]))]);
    assert!(matches!(
        read_err(&bytes),
        CheckpointError::StorageSizeMismatch {
            declared_numel: 1_000_000_000_000,
            actual_bytes: 16,
            ..
        }
    ));
    // Zip: the entry has 16 bytes.
    let bytes = zip_checkpoint(
        "a",
        &pickle(&root, false),
        &[("0", f32_bytes(&[1.0; 4]))],
        None,
    );
    match read_err(&bytes) {
        CheckpointError::StorageSizeMismatch {
            storage_key,
            declared_numel,
            element_size,
            actual_bytes,
        } => assert_eq!(
            (
                storage_key.as_str(),
                declared_numel,
                element_size,
                actual_bytes
            ),
            ("0", n, 4, 16)
        ),
        other => panic!("{other:?}"),
    }
    // Element count times element size overflowing 64 bits.
    let mut spec = TensorSpec::contiguous("DoubleStorage", "0", &[1]);
    spec.numel = u64::MAX / 4;
    let root = Py::Dict(vec![(s("w"), Py::Tensor(spec))]);
    let bytes = legacy_checkpoint(&pickle(&root, true), &[("0", u64::MAX / 4, vec![0; 8])]);
    assert!(matches!(
        read_err(&bytes),
        CheckpointError::StorageSizeMismatch { .. }
    ));
}

#[test]
fn view_larger_than_its_storage_is_refused() {
    // 3x4 with strides (4, 1) needs 12 elements; the storage has 10.
    let mut spec = TensorSpec::contiguous("FloatStorage", "0", &[3, 4]);
    spec.numel = 10;
    let root = Py::Dict(vec![(
        s("inn"),
        Py::OrderedDict(vec![(s("w"), Py::Tensor(spec.clone()))]),
    )]);
    let storages = [("0", f32_bytes(&[0.5; 10]))];
    let bytes = zip_checkpoint("a", &pickle(&root, false), &storages, None);
    let e = read_err(&bytes);
    assert!(e.to_string().contains("inn.w"), "{e}");
    match e {
        CheckpointError::ViewOutOfBounds {
            key,
            required,
            storage_numel,
            ..
        } => {
            assert_eq!(key, "inn.w");
            assert_eq!(required, RequiredElements::Count(12));
            assert_eq!(storage_numel, 10);
        }
        other => panic!("{other:?}"),
    }
    // An offset pushing a fitting view out.
    spec.shape = vec![2, 4];
    spec.offset = 3;
    let root = Py::Dict(vec![(s("w"), Py::Tensor(spec.clone()))]);
    let bytes = zip_checkpoint("a", &pickle(&root, false), &storages, None);
    assert!(matches!(
        read_err(&bytes),
        CheckpointError::ViewOutOfBounds {
            required: RequiredElements::Count(11),
            ..
        }
    ));
    // Strides whose product overflows 64 bits.
    spec.offset = 0;
    spec.shape = vec![3, 3];
    spec.stride = vec![i64::MAX as u64, 1];
    let root = Py::Dict(vec![(s("w"), Py::Tensor(spec.clone()))]);
    let bytes = zip_checkpoint("a", &pickle(&root, false), &storages, None);
    assert!(matches!(
        read_err(&bytes),
        CheckpointError::ViewOutOfBounds {
            required: RequiredElements::Overflow,
            ..
        }
    ));
    // A shape whose element count overflows.
    spec.shape = vec![1 << 40, 1 << 40];
    spec.stride = vec![0, 0];
    let root = Py::Dict(vec![(s("w"), Py::Tensor(spec))]);
    let bytes = zip_checkpoint("a", &pickle(&root, false), &storages, None);
    assert!(matches!(
        read_err(&bytes),
        CheckpointError::ShapeOverflow { .. }
    ));
}

#[test]
fn expanded_views_are_held_to_the_element_budget() {
    // One element expanded (stride 0) to 10^12: a valid view, but too much memory.
    let mut spec = TensorSpec::contiguous("FloatStorage", "0", &[1_000_000, 1_000_000]);
    spec.numel = 1;
    spec.stride = vec![0, 0];
    let root = Py::Dict(vec![(s("w"), Py::Tensor(spec))]);
    let bytes = zip_checkpoint(
        "a",
        &pickle(&root, false),
        &[("0", f32_bytes(&[7.0]))],
        None,
    );
    match read_err(&bytes) {
        CheckpointError::LimitExceeded {
            limit: Limit::Elements,
            key,
            ..
        } => assert_eq!(key.as_deref(), Some("w")),
        other => panic!("{other:?}"),
    }
    // It is listed, and dropped by a filter without cost.
    assert_eq!(inspect_checkpoint_bytes(&bytes).unwrap().tensors.len(), 1);
    assert!(
        read_checkpoint_bytes(&bytes, |k| k != "w")
            .unwrap()
            .tensors
            .is_empty()
    );
    // A caller-set budget.
    let root = Py::Dict(vec![(
        s("w"),
        Py::Tensor(TensorSpec::contiguous("FloatStorage", "0", &[4])),
    )]);
    let bytes = zip_checkpoint(
        "a",
        &pickle(&root, false),
        &[("0", f32_bytes(&[1.0; 4]))],
        None,
    );
    let limits = Limits {
        max_elements: Some(3),
        ..Limits::default()
    };
    assert!(matches!(
        read_checkpoint_bytes_with_limits(&bytes, keep_all, &limits),
        Err(CheckpointError::LimitExceeded {
            limit: Limit::Elements,
            value: 4,
            max: 3,
            ..
        })
    ));
}

#[test]
fn garbage_and_empty_inputs() {
    assert!(matches!(read_err(b""), CheckpointError::Empty));
    match read_err(b"GIF89a garbage garbage") {
        CheckpointError::UnrecognizedFormat { prefix } => assert_eq!(prefix, b"GIF89a g"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        read_err(b"\x00"),
        CheckpointError::UnrecognizedFormat { .. }
    ));
    // Looks like a zip, is not.
    assert!(matches!(
        read_err(b"PK\x03\x04 not really a zip file at all"),
        CheckpointError::Zip { .. }
    ));
    // Looks like a legacy pickle, is not.
    assert!(matches!(
        read_err(b"\x80\x02K\x05."),
        CheckpointError::BadMagic
    ));
    // Pseudo-random bytes with either first byte.
    let mut x = 0x1234_5678_9abc_def0u64;
    for first in [0x80u8, b'P'] {
        for len in [1, 7, 64, 4096] {
            let mut v: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            v[0] = first;
            let _ = read_checkpoint_bytes(&v, keep_all).unwrap_err();
        }
    }
}

#[test]
fn legacy_header_is_checked() {
    // Wrong protocol version.
    let mut v = common::legacy_magic();
    v.extend(pickle(&Py::Int(1000), false));
    assert!(matches!(
        read_err(&v),
        CheckpointError::UnsupportedLegacyProtocol { found: Some(1000) }
    ));
    // A persistent id in the sys-info pickle.
    let mut v = common::legacy_magic();
    v.extend(pickle(&Py::Int(1001), false));
    v.extend([0x80, 2, b'N', b'Q', b'.']);
    assert!(matches!(
        read_err(&v),
        CheckpointError::Pickle {
            problem: PickleProblem::UnexpectedPersistentId,
            section: Section::LegacySysInfo,
            ..
        }
    ));
    // A storage key list that is not a list of str.
    let root = Py::Dict(vec![]);
    let mut v = common::legacy_header();
    v.extend(pickle(&root, true));
    v.extend(pickle(&Py::List(vec![Py::Int(3)]), false));
    assert!(matches!(
        read_err(&v),
        CheckpointError::BadStorageKeyList { found: "int" }
    ));
    // Keys the main pickle never declared, or twice.
    let t = Py::Tensor(TensorSpec::contiguous("FloatStorage", "k", &[1]));
    let main = pickle(&Py::Dict(vec![(s("w"), t)]), true);
    let v = legacy_checkpoint(&main, &[("other", 1, f32_bytes(&[1.0]))]);
    assert!(matches!(
        read_err(&v),
        CheckpointError::UndeclaredStorage { .. }
    ));
    let v = legacy_checkpoint(
        &main,
        &[("k", 1, f32_bytes(&[1.0])), ("k", 1, f32_bytes(&[1.0]))],
    );
    assert!(matches!(
        read_err(&v),
        CheckpointError::DuplicateStorageKey { .. }
    ));
    // A tensor whose storage is not in the list.
    let v = legacy_checkpoint(&main, &[]);
    assert!(matches!(
        read_err(&v),
        CheckpointError::MissingStorage { .. }
    ));
    // A negative count.
    let v = legacy_checkpoint(&main, &[("k", u64::MAX, f32_bytes(&[1.0]))]);
    assert!(matches!(
        read_err(&v),
        CheckpointError::NegativeStorageCount { count: -1, .. }
    ));
}

#[test]
fn zip_structure_is_checked() {
    let t = Py::Tensor(TensorSpec::contiguous("FloatStorage", "0", &[1]));
    let main = pickle(&Py::Dict(vec![(s("w"), t)]), false);
    // No data.pkl under the archive directory.
    let mut v = zip_checkpoint("a", &main, &[], None);
    let pos = v.windows(10).position(|w| w == b"a/data.pkl").unwrap();
    v[pos + 2] = b'D';
    let pos = v.windows(10).rposition(|w| w == b"a/data.pkl").unwrap();
    v[pos + 2] = b'D';
    assert!(matches!(
        read_err(&v),
        CheckpointError::MissingEntry { entry } if entry == "a/data.pkl"
    ));
    // The storage entry is missing.
    let v = zip_checkpoint("a", &main, &[], None);
    assert!(matches!(
        read_err(&v),
        CheckpointError::MissingStorage { storage_key } if storage_key == "0"
    ));
    // Unknown byte order.
    let v = zip_checkpoint("a", &main, &[("0", f32_bytes(&[1.0]))], Some("middle"));
    assert!(matches!(
        read_err(&v),
        CheckpointError::UnsupportedByteOrder { found } if found == "middle"
    ));
}

#[test]
fn malformed_pickles_are_typed_errors() {
    let cases: Vec<(Vec<u8>, PickleProblem)> = vec![
        (
            vec![0x80, 2, b'h', 7, b'.'],
            PickleProblem::MissingMemo { index: 7 },
        ),
        (vec![0x80, 2, b'a', b'.'], PickleProblem::StackUnderflow),
        (vec![0x80, 2, b't', b'.'], PickleProblem::MissingMark),
        (vec![0x80, 2, b'.'], PickleProblem::EmptyResult),
        (
            vec![0x80, 9, b'N', b'.'],
            PickleProblem::UnsupportedProtocol { version: 9 },
        ),
        // SETITEM on a list.
        (
            vec![0x80, 2, b']', b'N', b'N', b's', b'.'],
            PickleProblem::WrongType {
                expected: "dict",
                found: "list",
            },
        ),
        // Invalid UTF-8.
        (
            vec![0x80, 2, 0x8c, 1, 0xff, b'.'],
            PickleProblem::InvalidUtf8,
        ),
        // REDUCE of a non-global.
        (
            vec![0x80, 2, b'N', b')', b'R', b'.'],
            PickleProblem::WrongType {
                expected: "an allowed global",
                found: "None",
            },
        ),
        // BUILD on a list.
        (
            vec![0x80, 2, b']', b'N', b'b', b'.'],
            PickleProblem::UnsupportedBuild { target: "list" },
        ),
        // A popped value below the mark.
        (
            vec![0x80, 2, b'N', b'(', b'a', b'.'],
            PickleProblem::StackUnderflow,
        ),
        // A persistent id that is not a storage tuple.
        (
            vec![0x80, 2, b'N', b'Q', b'.'],
            PickleProblem::BadPersistentId {
                reason: "not a tuple",
            },
        ),
    ];
    for (p, want) in cases {
        match read_err(&zip_checkpoint("a", &p, &[], None)) {
            CheckpointError::Pickle {
                problem, section, ..
            } => {
                assert_eq!(problem, want, "{p:x?}");
                assert_eq!(section, Section::DataPkl);
            }
            other => panic!("{p:x?}: {other:?}"),
        }
    }
}

#[test]
fn bad_tensor_arguments_are_typed_errors() {
    let mut base = TensorSpec::contiguous("FloatStorage", "0", &[2]);
    base.location = "meta".into();
    let root = Py::Dict(vec![(s("w"), Py::Tensor(base))]);
    match read_err(&zip_checkpoint("a", &pickle(&root, false), &[], None)) {
        CheckpointError::Pickle {
            problem: PickleProblem::UnsupportedLocation { location },
            ..
        } => assert_eq!(location, "meta"),
        other => panic!("{other:?}"),
    }
    // A storage class that is not on the allow-list.
    let spec = TensorSpec::contiguous("QInt8Storage", "0", &[2]);
    let root = Py::Dict(vec![(s("w"), Py::Tensor(spec))]);
    assert!(matches!(
        read_err(&zip_checkpoint("a", &pickle(&root, false), &[], None)),
        CheckpointError::ForbiddenGlobal { name, .. } if name == "QInt8Storage"
    ));
    // Calling a storage class.
    let mut p = common::Pickler::new(false);
    p.global("torch", "FloatStorage");
    p.out.extend([b')', b'R']);
    assert!(matches!(
        read_err(&zip_checkpoint("a", &p.finish(), &[], None)),
        CheckpointError::Pickle {
            problem: PickleProblem::BadArguments { .. },
            ..
        }
    ));
    // _rebuild_tensor_v2 with a str as storage.
    let mut p = common::Pickler::new(false);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.value(&Py::Tuple(vec![
        s("x"),
        Py::Int(0),
        Py::Tuple(vec![]),
        Py::Tuple(vec![]),
        Py::Bool(false),
        Py::None,
    ]));
    p.out.push(b'R');
    assert!(matches!(
        read_err(&zip_checkpoint("a", &p.finish(), &[], None)),
        CheckpointError::Pickle {
            problem: PickleProblem::BadArguments {
                reason: "argument 0 is not a storage",
                ..
            },
            ..
        }
    ));
    // Negative sizes, and size/stride of different lengths.
    for (shape, stride) in [(vec![-1i64], vec![1i64]), (vec![2], vec![1, 1])] {
        let mut p = common::Pickler::new(false);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.out.push(b'(');
        p.out.push(b'(');
        p.str("storage");
        p.global("torch", "FloatStorage");
        p.str("0");
        p.str("cpu");
        p.int(2);
        p.out.extend([b't', b'Q']);
        p.int(0);
        p.value(&Py::Tuple(shape.into_iter().map(Py::Int).collect()));
        p.value(&Py::Tuple(stride.into_iter().map(Py::Int).collect()));
        p.value(&Py::Bool(false));
        p.value(&Py::None);
        p.out.extend([b't', b'R']);
        assert!(matches!(
            read_err(&zip_checkpoint(
                "a",
                &p.finish(),
                &[("0", f32_bytes(&[1.0; 2]))],
                None
            )),
            CheckpointError::Pickle {
                problem: PickleProblem::BadArguments { .. },
                ..
            }
        ));
    }
    // Two persistent ids for one storage key with different dtypes.
    let root = Py::Dict(vec![
        (
            s("a"),
            Py::Tensor(TensorSpec::contiguous("FloatStorage", "0", &[2])),
        ),
        (
            s("b"),
            Py::Tensor(TensorSpec::contiguous("LongStorage", "0", &[1])),
        ),
    ]);
    assert!(matches!(
        read_err(&zip_checkpoint("a", &pickle(&root, false), &[], None)),
        CheckpointError::Pickle {
            problem: PickleProblem::ConflictingStorage { .. },
            ..
        }
    ));
    // Too many dimensions.
    let spec = TensorSpec::contiguous("FloatStorage", "0", &[1; 65]);
    let root = Py::Dict(vec![(s("w"), Py::Tensor(spec))]);
    assert!(matches!(
        read_err(&zip_checkpoint(
            "a",
            &pickle(&root, false),
            &[("0", f32_bytes(&[1.0]))],
            None
        )),
        CheckpointError::LimitExceeded {
            limit: Limit::Dimensions,
            value: 65,
            ..
        }
    ));
}

#[test]
fn declared_lengths_beyond_the_input_are_truncations() {
    let cases: Vec<Vec<u8>> = vec![
        // BINUNICODE of 4 GiB - 1.
        vec![0x80, 2, b'X', 0xff, 0xff, 0xff, 0xff, b'a', b'.'],
        // BINUNICODE8 of 2^63.
        vec![0x80, 4, 0x8d, 0, 0, 0, 0, 0, 0, 0, 0x80, b'a'],
        // BINBYTES8 of 2^64 - 1.
        vec![
            0x80, 4, 0x8e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ],
        // LONG4 of 2^31 - 1 bytes.
        vec![0x80, 2, 0x8b, 0xff, 0xff, 0xff, 0x7f, 1, b'.'],
        // FRAME of 2^64 - 1.
        vec![
            0x80, 4, 0x95, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, b'N', b'.',
        ],
        // A GLOBAL line without its newline.
        vec![0x80, 2, b'c', b'o', b's'],
        // No STOP.
        vec![0x80, 2, b'N'],
    ];
    for p in cases {
        match read_err(&zip_checkpoint("a", &p, &[], None)) {
            CheckpointError::Truncated { section, .. } => assert_eq!(section, Section::DataPkl),
            other => panic!("{p:x?}: {other:?}"),
        }
    }
    // A negative LONG4 length.
    let p = vec![0x80, 2, 0x8b, 0xff, 0xff, 0xff, 0xff, b'.'];
    assert!(matches!(
        read_err(&zip_checkpoint("a", &p, &[], None)),
        CheckpointError::Pickle {
            problem: PickleProblem::NegativeLength,
            ..
        }
    ));
}

#[test]
fn shared_and_cyclic_containers_are_bounded() {
    let t = Py::Tensor(TensorSpec::contiguous("FloatStorage", "0", &[1]));
    // Exponential sharing: l0 = [t]; l(k+1) = [lk, lk].
    let mut p = common::Pickler::new(false);
    p.value(&Py::List(vec![t.clone()]));
    for _ in 0..60 {
        // BINPUT 0, POP, EMPTY_LIST, MARK, BINGET 0, BINGET 0, APPENDS.
        p.out
            .extend([b'q', 0, b'0', b']', b'(', b'h', 0, b'h', 0, b'e']);
    }
    let root = p.finish();
    let bytes = zip_checkpoint("a", &root, &[("0", f32_bytes(&[1.0]))], None);
    match read_err(&bytes) {
        CheckpointError::LimitExceeded { limit, .. } => {
            assert!(
                matches!(limit, Limit::Visits | Limit::Metadata),
                "{limit:?}"
            );
        }
        other => panic!("{other:?}"),
    }

    // A list that contains itself (and a tensor): a cycle.
    let mut p = common::Pickler::new(false);
    p.out.extend([b']', b'q', 0]);
    p.tensor(&TensorSpec::contiguous("FloatStorage", "0", &[1]));
    p.out.extend([b'a', b'h', 0, b'a']);
    let bytes = zip_checkpoint("a", &p.finish(), &[("0", f32_bytes(&[1.0]))], None);
    assert!(matches!(
        read_err(&bytes),
        CheckpointError::LimitExceeded {
            limit: Limit::Depth,
            ..
        }
    ));

    // Deep nesting.
    let mut v = Py::Dict(vec![(s("w"), t)]);
    for _ in 0..100 {
        v = Py::Dict(vec![(s("d"), v)]);
    }
    let bytes = zip_checkpoint("a", &pickle(&v, false), &[("0", f32_bytes(&[1.0]))], None);
    assert!(matches!(
        read_err(&bytes),
        CheckpointError::LimitExceeded {
            limit: Limit::Depth,
            max: 64,
            ..
        }
    ));
    let limits = Limits {
        max_depth: 200,
        ..Limits::default()
    };
    let ckpt = read_checkpoint_bytes_with_limits(&bytes, keep_all, &limits).unwrap();
    assert_eq!(ckpt.tensors.len(), 1);
    assert!(ckpt.tensors[0].0.ends_with("d.d.w"));
}

#[test]
fn duplicate_and_unflattenable_keys() {
    let t = Py::Tensor(TensorSpec::contiguous("FloatStorage", "0", &[1]));
    let root = Py::Dict(vec![
        (s("a.b"), t.clone()),
        (s("a"), Py::Dict(vec![(s("b"), t.clone())])),
    ]);
    let bytes = zip_checkpoint(
        "a",
        &pickle(&root, false),
        &[("0", f32_bytes(&[1.0]))],
        None,
    );
    assert!(matches!(
        read_err(&bytes),
        CheckpointError::DuplicateKey { key } if key == "a.b"
    ));
    let root = Py::Dict(vec![(
        s("x"),
        Py::Dict(vec![(Py::Tuple(vec![Py::Int(1)]), t)]),
    )]);
    let bytes = zip_checkpoint(
        "a",
        &pickle(&root, false),
        &[("0", f32_bytes(&[1.0]))],
        None,
    );
    assert!(matches!(
        read_err(&bytes),
        CheckpointError::UnsupportedDictKey { parent, kind: "tuple" } if parent == "x"
    ));
}

/// Shared containers must not make parsing or flattening quadratic.
#[test]
fn shared_large_containers_stay_linear() {
    let start = std::time::Instant::now();
    // A list of 100k ints, then a list holding it 100k times (via the memo).
    let mut p = common::Pickler::new(false);
    p.out.extend([b']', b'(']);
    for _ in 0..100_000 {
        p.out.extend([b'K', 1]);
    }
    p.out.extend([b'e', b'q', 0, b'0', b']', b'(']);
    for _ in 0..100_000 {
        p.out.extend([b'h', 0]);
    }
    p.out.push(b'e');
    let bytes = zip_checkpoint("a", &p.finish(), &[], None);
    assert!(matches!(
        read_err(&bytes),
        CheckpointError::LimitExceeded {
            limit: Limit::Visits,
            ..
        }
    ));

    // A 100k-element tuple passed (via the memo) to 100k REDUCEs and BINPERSIDs.
    for tail in [
        &[b'h', 1, b'h', 0, b'R', b'0'][..],
        &[b'h', 0, b'Q', b'0'][..],
    ] {
        let mut p = common::Pickler::new(false);
        p.out.push(b'(');
        for _ in 0..100_000 {
            p.out.push(b'N');
        }
        p.out.extend([b't', b'q', 0]);
        p.global("collections", "OrderedDict");
        p.out.extend([b'q', 1, b'0']);
        for _ in 0..100_000 {
            p.out.extend(tail);
        }
        let bytes = zip_checkpoint("a", &p.finish(), &[], None);
        assert!(matches!(read_err(&bytes), CheckpointError::Pickle { .. }));
    }

    // A 200 kB string used 100k times as a dict key, and as a storage key.
    let long = "k".repeat(200_000);
    let mut p = common::Pickler::new(false);
    p.out.push(b'}');
    p.str(&long);
    p.out.extend([b'q', 0, b'0']);
    for _ in 0..100_000 {
        p.out.extend([b'h', 0, b'N', b's']);
    }
    let bytes = zip_checkpoint("a", &p.finish(), &[], None);
    let c = read_checkpoint_bytes(&bytes, keep_all).unwrap();
    assert!(c.tensors.is_empty());
    let mut spec = TensorSpec::contiguous("FloatStorage", "0", &[1]);
    spec.key = long;
    let root = Py::Dict(vec![(s("w"), Py::Tensor(spec))]);
    let bytes = zip_checkpoint("a", &pickle(&root, false), &[], None);
    assert!(matches!(
        read_err(&bytes),
        CheckpointError::Pickle {
            problem: PickleProblem::BadPersistentId { .. },
            ..
        }
    ));
    assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
}

/// `PROTO 2`, `n` EMPTY_LISTs, `n - 1` APPENDs (each list into the one below it), STOP:
/// `n` nested empty lists in `2n + 2` bytes, the shape of the 17.9 MB attack.
fn nested_lists(n: usize) -> Vec<u8> {
    let mut v = vec![0x80, 2];
    v.extend(std::iter::repeat_n(b']', n));
    v.extend(std::iter::repeat_n(b'a', n - 1));
    v.push(b'.');
    v
}

fn is_pickle_memory(e: &CheckpointError, want_max: u64) -> bool {
    matches!(
        e,
        CheckpointError::LimitExceeded {
            limit: Limit::PickleMemory,
            value,
            max,
            key: None,
        } if *max == want_max && value > max
    )
}

/// The pickle machine's bookkeeping is charged to a budget as it is created: a small
/// pickle of cheap opcodes stops with a typed error instead of growing to gigabytes.
#[test]
fn pickle_machine_memory_is_budgeted() {
    // A caller-set budget, in both containers, for each cheap way to grow: nested lists,
    // a run of DUPs (stack slots), memo entries, empty dicts, marks.
    let limits = Limits {
        max_pickle_memory: Some(64 << 10),
        ..Limits::default()
    };
    let dups = {
        let mut v = vec![0x80, 2, b']'];
        v.extend(std::iter::repeat_n(b'2', 10_000));
        v.push(b'.');
        v
    };
    let memo = {
        let mut v = vec![0x80, 2, b']'];
        for i in 0..10_000u32 {
            v.push(b'r');
            v.extend(i.to_le_bytes());
        }
        v.push(b'.');
        v
    };
    let dicts = {
        let mut v = vec![0x80, 2];
        v.extend(std::iter::repeat_n(b'}', 10_000));
        v.push(b'.');
        v
    };
    let marks = {
        let mut v = vec![0x80, 2];
        v.extend(std::iter::repeat_n(b'(', 10_000));
        v.extend([b']', b'.']);
        v
    };
    for (name, pkl) in [
        ("nested lists", nested_lists(10_000)),
        ("DUPs", dups),
        ("memo", memo),
        ("dicts", dicts),
        ("marks", marks),
    ] {
        for bytes in [
            zip_checkpoint("a", &pkl, &[], None),
            legacy_checkpoint(&pkl, &[]),
        ] {
            let e = read_checkpoint_bytes_with_limits(&bytes, keep_all, &limits)
                .expect_err("over the budget");
            assert!(is_pickle_memory(&e, 64 << 10), "{name}: {e}");
            assert!(e.to_string().contains("pickle machine memory"), "{e}");
        }
    }

    // The budget counts what the machine holds, not more: the released checkpoints' structure
    // (the golden mini, a 45 kB data.pkl) needs about 1 MB, and fails below that.
    let mini = common::golden_mini("mini.avg.pt");
    let tight = Limits {
        max_pickle_memory: Some(100 << 10),
        ..Limits::default()
    };
    let e = read_checkpoint_bytes_with_limits(&mini, default_keep, &tight).expect_err("tight");
    assert!(is_pickle_memory(&e, 100 << 10), "{e}");
    let enough = Limits {
        max_pickle_memory: Some(2 << 20),
        ..Limits::default()
    };
    assert!(read_checkpoint_bytes_with_limits(&mini, default_keep, &enough).is_ok());
    let legacy = common::golden_mini("mini_legacy.avg.pt");
    assert!(read_checkpoint_bytes_with_limits(&legacy, default_keep, &enough).is_ok());

    // The attack at a realistic size, under the default budget: 2 Mi nested empty
    // lists (a 4 MiB data.pkl) would take about 350 MiB of bookkeeping.
    let start = std::time::Instant::now();
    let pkl = nested_lists(2 << 20);
    let want = Limits::default().pickle_memory(pkl.len() as u64);
    assert_eq!(want, 48 * pkl.len() as u64 + (64 << 20));
    let e = read_err(&zip_checkpoint("a", &pkl, &[], None));
    assert!(is_pickle_memory(&e, want), "{e}");
    let e = inspect_checkpoint_bytes(&zip_checkpoint("a", &pkl, &[], None))
        .expect_err("over the default budget");
    assert!(is_pickle_memory(&e, want), "{e}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}
