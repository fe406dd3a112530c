//! Test helpers: the golden directory, and a tiny pickle / checkpoint writer for
//! hand-made (valid, malformed and malicious) checkpoints.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::io::{Cursor, Write};
use std::path::PathBuf;

/// `shared/golden`: `$TRUSTGC_GOLDEN`, else `../../../shared/golden` from this crate.
/// Panics (never skips) when it is not there.
pub fn golden_dir() -> PathBuf {
    let dir = match std::env::var_os("TRUSTGC_GOLDEN") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
    };
    assert!(
        dir.join("mini/mini.safetensors").is_file(),
        "golden data not found at {} (set TRUSTGC_GOLDEN to the shared/golden directory)",
        dir.display()
    );
    dir
}

/// A golden file of `mini/`, read whole.
pub fn golden_mini(name: &str) -> Vec<u8> {
    let path = golden_dir().join("mini").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A tensor reference as torch pickles it.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    /// `FloatStorage`, `LongStorage`, ... (module `torch`).
    pub class: &'static str,
    pub key: String,
    pub location: String,
    pub numel: u64,
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
    /// Wrap in `torch._utils._rebuild_parameter`.
    pub param: bool,
    /// Legacy only: `(view_key, offset, size)` storage view metadata.
    pub view: Option<(String, u64, u64)>,
}

impl TensorSpec {
    /// A contiguous tensor over a whole storage.
    pub fn contiguous(class: &'static str, key: &str, shape: &[u64]) -> Self {
        let mut stride = vec![0; shape.len()];
        let mut s = 1;
        for i in (0..shape.len()).rev() {
            stride[i] = s;
            s *= shape[i];
        }
        TensorSpec {
            class,
            key: key.to_string(),
            location: "cpu".to_string(),
            numel: shape.iter().product(),
            offset: 0,
            shape: shape.to_vec(),
            stride,
            param: false,
            view: None,
        }
    }
}

/// A Python value to pickle.
#[derive(Clone, Debug)]
pub enum Py {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Py>),
    Tuple(Vec<Py>),
    Dict(Vec<(Py, Py)>),
    OrderedDict(Vec<(Py, Py)>),
    Tensor(TensorSpec),
    /// Raw opcodes that push one value.
    Raw(Vec<u8>),
}

pub fn s(x: &str) -> Py {
    Py::Str(x.to_string())
}

/// Pickle writer (protocol 2 opcodes, plus whatever `Raw` adds).
pub struct Pickler {
    pub out: Vec<u8>,
    pub legacy: bool,
}

impl Pickler {
    pub fn new(legacy: bool) -> Self {
        Pickler {
            out: vec![0x80, 2],
            legacy,
        }
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(b'.');
        self.out
    }

    pub fn str(&mut self, x: &str) {
        self.out.push(b'X');
        self.out.extend((x.len() as u32).to_le_bytes());
        self.out.extend(x.as_bytes());
    }

    pub fn int(&mut self, v: i64) {
        if (0..256).contains(&v) {
            self.out.extend([b'K', v as u8]);
        } else if (0..65536).contains(&v) {
            self.out.push(b'M');
            self.out.extend((v as u16).to_le_bytes());
        } else if i32::try_from(v).is_ok() {
            self.out.push(b'J');
            self.out.extend((v as i32).to_le_bytes());
        } else {
            self.out.extend([0x8a, 8]);
            self.out.extend(v.to_le_bytes());
        }
    }

    pub fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend(name.as_bytes());
        self.out.push(b'\n');
    }

    pub fn int_tuple(&mut self, v: &[u64]) {
        self.out.push(b'(');
        for &x in v {
            self.int(x as i64);
        }
        self.out.push(b't');
    }

    pub fn ordered_dict_empty(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.extend([b')', b'R']);
    }

    pub fn tensor(&mut self, t: &TensorSpec) {
        if t.param {
            self.global("torch._utils", "_rebuild_parameter");
        }
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.out.push(b'(');
        // persistent id
        self.out.push(b'(');
        self.str("storage");
        self.global("torch", t.class);
        self.str(&t.key);
        self.str(&t.location);
        self.int(t.numel as i64);
        if self.legacy {
            match &t.view {
                None => self.out.push(b'N'),
                Some((k, o, n)) => {
                    self.str(k);
                    self.int(*o as i64);
                    self.int(*n as i64);
                    self.out.push(0x87);
                }
            }
        }
        self.out.extend([b't', b'Q']);
        self.int(t.offset as i64);
        self.int_tuple(&t.shape);
        self.int_tuple(&t.stride);
        self.out.push(0x89);
        self.ordered_dict_empty();
        self.out.extend([b't', b'R']);
        if t.param {
            self.out.push(0x88);
            self.ordered_dict_empty();
            self.out.extend([0x87, b'R']);
        }
    }

    pub fn value(&mut self, v: &Py) {
        match v {
            Py::None => self.out.push(b'N'),
            Py::Bool(b) => self.out.push(if *b { 0x88 } else { 0x89 }),
            Py::Int(i) => self.int(*i),
            Py::Float(f) => {
                self.out.push(b'G');
                self.out.extend(f.to_be_bytes());
            }
            Py::Str(x) => self.str(x),
            Py::List(items) => {
                self.out.extend([b']', b'(']);
                for i in items {
                    self.value(i);
                }
                self.out.push(b'e');
            }
            Py::Tuple(items) => {
                self.out.push(b'(');
                for i in items {
                    self.value(i);
                }
                self.out.push(b't');
            }
            Py::Dict(items) | Py::OrderedDict(items) => {
                if matches!(v, Py::Dict(_)) {
                    self.out.push(b'}');
                } else {
                    self.ordered_dict_empty();
                }
                self.out.push(b'(');
                for (k, v) in items {
                    self.value(k);
                    self.value(v);
                }
                self.out.push(b'u');
            }
            Py::Tensor(t) => self.tensor(t),
            Py::Raw(b) => self.out.extend(b),
        }
    }
}

/// The pickle of `root`; `legacy` gives persistent ids their sixth (view) element.
pub fn pickle(root: &Py, legacy: bool) -> Vec<u8> {
    let mut p = Pickler::new(legacy);
    p.value(root);
    p.finish()
}

/// A zip checkpoint: `<prefix>/data.pkl`, `<prefix>/data/<key>`, optional byteorder.
pub fn zip_checkpoint(
    prefix: &str,
    data_pkl: &[u8],
    storages: &[(&str, Vec<u8>)],
    byteorder: Option<&str>,
) -> Vec<u8> {
    zip_checkpoint_with(
        prefix,
        data_pkl,
        storages,
        byteorder,
        zip::CompressionMethod::Stored,
    )
}

/// [`zip_checkpoint`] with every entry compressed by `method`.
pub fn zip_checkpoint_with(
    prefix: &str,
    data_pkl: &[u8],
    storages: &[(&str, Vec<u8>)],
    byteorder: Option<&str>,
    method: zip::CompressionMethod,
) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    w.start_file(format!("{prefix}/data.pkl"), opts).unwrap();
    w.write_all(data_pkl).unwrap();
    if let Some(b) = byteorder {
        w.start_file(format!("{prefix}/byteorder"), opts).unwrap();
        w.write_all(b.as_bytes()).unwrap();
    }
    for (key, bytes) in storages {
        w.start_file(format!("{prefix}/data/{key}"), opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.start_file(format!("{prefix}/version"), opts).unwrap();
    w.write_all(b"3\n").unwrap();
    w.finish().unwrap().into_inner()
}

/// The magic-number pickle of a legacy file.
pub fn legacy_magic() -> Vec<u8> {
    let mut v = vec![0x80, 2, 0x8a, 10];
    v.extend([0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);
    v.push(b'.');
    v
}

/// The three header pickles of a legacy file (magic, protocol 1001, sys info).
pub fn legacy_header() -> Vec<u8> {
    let mut v = legacy_magic();
    v.extend(pickle(&Py::Int(1001), false));
    v.extend(pickle(
        &Py::Dict(vec![
            (s("protocol_version"), Py::Int(1001)),
            (s("little_endian"), Py::Bool(true)),
        ]),
        false,
    ));
    v
}

/// A legacy checkpoint: header, `main` pickle, key list, then for each storage its
/// element count and bytes.
pub fn legacy_checkpoint(main: &[u8], storages: &[(&str, u64, Vec<u8>)]) -> Vec<u8> {
    let mut v = legacy_header();
    v.extend(main);
    v.extend(pickle(
        &Py::List(storages.iter().map(|(k, _, _)| s(k)).collect()),
        false,
    ));
    for (_, count, bytes) in storages {
        v.extend(count.to_le_bytes());
        v.extend(bytes);
    }
    v
}

/// Little-endian f32 bytes.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
