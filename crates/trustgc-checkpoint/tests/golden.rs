//! The four golden checkpoints of the mini model against `mini.safetensors`, bit for bit.

mod common;

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom};

use common::golden_mini;
use safetensors::{Dtype, SafeTensors};
use trustgc_checkpoint::{
    Checkpoint, DType, Format, Limits, Values, default_keep, inspect_checkpoint,
    inspect_checkpoint_bytes, read_checkpoint, read_checkpoint_bytes, read_checkpoint_from,
};

const FILES: [(&str, Format); 4] = [
    ("mini.avg.pt", Format::Zip),
    ("mini_legacy.avg.pt", Format::Legacy),
    ("mini_clean.avg.pt", Format::Zip),
    ("mini_cudaloc.avg.pt", Format::Zip),
];

/// `mini_keys.txt`: key -> (shape, dtype name), in file order.
fn mini_keys() -> Vec<(String, Vec<usize>, String)> {
    let text = String::from_utf8(common::golden_mini("mini_keys.txt")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.split('\t');
            let key = parts.next().unwrap().to_string();
            let shape = parts.next().unwrap().trim();
            let dtype = parts.next().unwrap().trim().to_string();
            let inner = shape.trim_start_matches('[').trim_end_matches(']');
            let shape = if inner.trim().is_empty() {
                vec![]
            } else {
                inner
                    .split(',')
                    .map(|x| x.trim().parse().unwrap())
                    .collect()
            };
            (key, shape, dtype)
        })
        .collect()
}

fn assert_matches_safetensors(name: &str, ckpt: &Checkpoint) {
    let bytes = common::golden_mini("mini.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut expected: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    expected.sort();
    let mut got: Vec<String> = ckpt.tensors.iter().map(|(k, _)| k.clone()).collect();
    got.sort();
    assert_eq!(got, expected, "{name}: keys differ from mini.safetensors");

    for (key, t) in &ckpt.tensors {
        let view = st.tensor(key).unwrap();
        assert_eq!(t.shape, view.shape(), "{name}: shape of {key}");
        let data = view.data();
        match (view.dtype(), &t.values) {
            (Dtype::F32, Values::Float(v)) => {
                assert_eq!(t.dtype, DType::F32, "{name}: dtype of {key}");
                assert_eq!(v.len() * 4, data.len(), "{name}: length of {key}");
                for (i, (x, b)) in v.iter().zip(data.chunks_exact(4)).enumerate() {
                    let want = f32::from_le_bytes(b.try_into().unwrap());
                    assert_eq!(
                        (*x as f32).to_bits(),
                        want.to_bits(),
                        "{name}: {key}[{i}] = {x}, want {want}"
                    );
                    assert_eq!(
                        *x,
                        f64::from(want),
                        "{name}: {key}[{i}] not widened exactly"
                    );
                }
            }
            (Dtype::I64, Values::Int(v)) => {
                assert_eq!(t.dtype, DType::I64, "{name}: dtype of {key}");
                let want: Vec<i64> = data
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                assert_eq!(v, &want, "{name}: values of {key}");
            }
            (d, _) => panic!("{name}: {key} has dtype {:?}, safetensors {d:?}", t.dtype),
        }
    }
}

#[test]
fn every_golden_checkpoint_equals_safetensors_with_the_default_filter() {
    let keys = mini_keys();
    for (name, format) in FILES {
        let path = common::golden_dir().join("mini").join(name);
        let ckpt = read_checkpoint(&path, default_keep).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ckpt.format, format, "{name}");
        assert_matches_safetensors(name, &ckpt);
        // File order is the state-dict order of mini_keys.txt.
        let want: Vec<&str> = keys
            .iter()
            .map(|(k, _, _)| k.as_str())
            .filter(|k| default_keep(k))
            .collect();
        let got: Vec<&str> = ckpt.tensors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(got, want, "{name}: order");
    }
}

#[test]
fn reading_from_memory_equals_reading_the_file() {
    for (name, _) in FILES {
        let bytes = common::golden_mini(name);
        let a = read_checkpoint_bytes(&bytes, default_keep).unwrap();
        let b =
            read_checkpoint(common::golden_dir().join("mini").join(name), default_keep).unwrap();
        assert_eq!(a, b, "{name}");
    }
}

#[test]
fn keep_everything_gives_the_activations_as_views() {
    let keys = mini_keys();
    for name in ["mini.avg.pt", "mini_legacy.avg.pt", "mini_cudaloc.avg.pt"] {
        let path = common::golden_dir().join("mini").join(name);
        let ckpt = read_checkpoint(&path, |_| true).unwrap();
        // Every key of mini_keys.txt (activations included) with its shape and dtype.
        for (key, shape, dtype) in &keys {
            let t = ckpt
                .get(key)
                .unwrap_or_else(|| panic!("{name}: {key} missing"));
            assert_eq!(&t.shape, shape, "{name}: {key}");
            assert_eq!(t.dtype.name(), dtype, "{name}: {key}");
            assert_eq!(t.numel(), shape.iter().product::<usize>(), "{name}: {key}");
        }
        // The optimizer's momentum buffers are there too (124 trainable tensors).
        let n_opt = ckpt
            .tensors
            .iter()
            .filter(|(k, _)| k.starts_with("opt.state.") && k.ends_with(".momentum_buffer"))
            .count();
        assert_eq!(n_opt, 124, "{name}");
        assert_eq!(ckpt.tensors.len(), keys.len() + 124, "{name}");

        // The split outputs view the DCT output: tmp_var_9 = [:768], tmp_var_3 = [768:]
        // (storage offset 768) of tmp_var_12.
        let whole = ckpt
            .get("inn.tmp_var_12")
            .unwrap()
            .values
            .as_float()
            .unwrap();
        let head = ckpt
            .get("inn.tmp_var_9")
            .unwrap()
            .values
            .as_float()
            .unwrap();
        let tail = ckpt
            .get("inn.tmp_var_3")
            .unwrap()
            .values
            .as_float()
            .unwrap();
        assert_eq!(whole.len(), 37632);
        assert_eq!(head, &whole[..768], "{name}");
        assert_eq!(tail, &whole[768..], "{name}");
        // tmp_var_4 is the first of four inputs: a view of a 4x larger storage.
        assert_eq!(ckpt.get("inn.tmp_var_4").unwrap().numel(), 3 * 112 * 112);
    }
}

#[test]
fn inspect_lists_everything_without_values() {
    let keys = mini_keys();
    let inv = inspect_checkpoint(common::golden_dir().join("mini/mini.avg.pt")).unwrap();
    assert_eq!(inv.format, Format::Zip);
    assert_eq!(inv.tensors.len(), keys.len() + 124);
    let by_key: HashMap<&str, _> = inv.tensors.iter().map(|t| (t.key.as_str(), t)).collect();
    for (key, shape, dtype) in &keys {
        let t = by_key[key.as_str()];
        assert_eq!(&t.shape, shape, "{key}");
        assert_eq!(t.dtype.name(), dtype, "{key}");
        assert_eq!(t.location, "cpu");
    }
    let v3 = by_key["inn.tmp_var_3"];
    assert_eq!(
        (v3.storage_offset, v3.stride.as_slice()),
        (768, &[37632, 1][..])
    );
    assert_eq!(v3.storage_key, by_key["inn.tmp_var_12"].storage_key);

    let inv = inspect_checkpoint(common::golden_dir().join("mini/mini_cudaloc.avg.pt")).unwrap();
    assert!(inv.tensors.iter().all(|t| t.location == "cuda:0"));
    let inv = inspect_checkpoint(common::golden_dir().join("mini/mini_legacy.avg.pt")).unwrap();
    assert_eq!(inv.format, Format::Legacy);
    assert_eq!(inv.tensors.len(), keys.len() + 124);
}

/// Flips one byte in the data of a zip entry of a golden file.
fn corrupt_entry(bytes: &mut [u8], entry: &str) {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&bytes[..])).unwrap();
    let start = archive.by_name(entry).unwrap().data_start().unwrap() as usize;
    bytes[start + 5] ^= 0x40;
}

#[test]
fn corrupt_zip_entries_fail_their_crc_only_when_read() {
    use trustgc_checkpoint::CheckpointError;
    let clean = common::golden_mini("mini.avg.pt");
    let inv = trustgc_checkpoint::inspect_checkpoint_bytes(&clean).unwrap();
    let storage_of = |key: &str| {
        let t = inv.tensors.iter().find(|t| t.key == key).unwrap();
        format!("mini.avg/data/{}", t.storage_key)
    };
    let crc_error = |r: Result<_, CheckpointError>, want: &str| match r {
        Err(CheckpointError::ZipEntryRead { entry, source }) => {
            assert_eq!(entry, want);
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidData, "{source}");
        }
        Err(e) => panic!("{want}: {e:?}"),
        Ok(_) => panic!("{want}: read without error"),
    };

    // The pickle.
    let mut bytes = clean.clone();
    corrupt_entry(&mut bytes, "mini.avg/data.pkl");
    crc_error(
        read_checkpoint_bytes(&bytes, default_keep),
        "mini.avg/data.pkl",
    );

    // A storage of the optimizer state: never read with the default filter.
    let momentum = storage_of("opt.state.0.momentum_buffer");
    let mut bytes = clean.clone();
    corrupt_entry(&mut bytes, &momentum);
    let ckpt = read_checkpoint_bytes(&bytes, default_keep).unwrap();
    assert_eq!(ckpt, read_checkpoint_bytes(&clean, default_keep).unwrap());
    crc_error(read_checkpoint_bytes(&bytes, |_| true), &momentum);

    // A kept storage.
    let mu = storage_of("mu");
    let mut bytes = clean.clone();
    corrupt_entry(&mut bytes, &mu);
    crc_error(read_checkpoint_bytes(&bytes, default_keep), &mu);
}

/// Counts the bytes read through it.
struct Counting<'c, R> {
    inner: R,
    read: &'c Cell<u64>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

fn bytes_read(bytes: &[u8], keep: &dyn Fn(&str) -> bool) -> (u64, Checkpoint) {
    let read = Cell::new(0);
    let reader = Counting {
        inner: io::Cursor::new(bytes),
        read: &read,
    };
    let c = read_checkpoint_from(reader, bytes.len() as u64, keep, &Limits::default()).unwrap();
    (read.get(), c)
}

#[test]
fn dropped_tensors_are_never_read_legacy() {
    let bytes = golden_mini("mini_legacy.avg.pt");
    let (read, c) = bytes_read(&bytes, &default_keep);
    let kept: u64 = c
        .tensors
        .iter()
        .map(|(_, t)| (t.numel() * t.dtype.size()) as u64)
        .sum();
    // The format sniff (8), the five pickles (they end at byte 58701), the 375
    // storage counts, and the bytes of the kept tensors: nothing else.
    assert_eq!(read, 8 + 58701 + 375 * 8 + kept);
    let (read_all, _) = bytes_read(&bytes, &|_| true);
    assert!(read_all > read + 4_000_000, "{read_all} vs {read}");
}

#[test]
fn dropped_tensors_are_never_read_zip() {
    let bytes = golden_mini("mini.avg.pt");
    let (read, _) = bytes_read(&bytes, &default_keep);
    let inv = inspect_checkpoint_bytes(&bytes).unwrap();
    // Storages that only dropped tensors use: none of their bytes may be read.
    let mut kept_storages = HashSet::new();
    let mut dropped: HashMap<&str, u64> = HashMap::new();
    for t in &inv.tensors {
        let n = (t.shape.iter().product::<usize>() * t.dtype.size()) as u64;
        if default_keep(&t.key) {
            kept_storages.insert(t.storage_key.as_str());
        } else {
            let e = dropped.entry(t.storage_key.as_str()).or_default();
            *e = (*e).max(n);
        }
    }
    let unread: u64 = dropped
        .iter()
        .filter(|(k, _)| !kept_storages.contains(*k))
        .map(|(_, n)| n)
        .sum();
    assert!(unread > 1_500_000, "{unread}");
    assert!(
        read <= bytes.len() as u64 - unread,
        "read {read} of {} bytes, {unread} belong to dropped tensors only",
        bytes.len()
    );
}
