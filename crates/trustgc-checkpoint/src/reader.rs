//! The two container formats, flattening of the unpickled object into keyed tensors, and
//! materialization of views.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom};
use std::rc::Rc;

use zip::ZipArchive;

use crate::error::{CheckpointError, Limit, RequiredElements, Section, ViewGeometry};
use crate::pickle::{
    self, Arena, Input, MemoryBudget, ObjId, Object, StorageTable, TensorRef, Unpickled, Value,
};
use crate::{Checkpoint, DType, Format, Inventory, Limits, Tensor, TensorInfo, Values};

/// torch's legacy magic number, 0x1950a86a20f9469cfc6c, as little-endian bytes.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_PROTOCOL_VERSION: i64 = 1001;
const ZIP_MAGIC: [u8; 4] = *b"PK\x03\x04";
/// Depth values above this are clamped, so that flattening cannot overflow the call stack.
const DEPTH_CAP: usize = 1024;

/// A tensor found while flattening, with its validated geometry.
struct Entry {
    key: String,
    tensor: ObjId,
    numel: u64,
    /// First storage element the view touches (relative to the storage reference).
    lo: u64,
    /// One past the last storage element the view touches.
    hi: u64,
}

/// Where storage bytes come from.
enum Source<R> {
    Zip {
        archive: ZipArchive<R>,
        prefix: String,
        big_endian: bool,
    },
    Legacy {
        reader: R,
        /// Storage key -> file offset of its first byte.
        offsets: HashMap<Rc<str>, u64>,
    },
}

struct Loaded<R> {
    format: Format,
    unpickled: Unpickled,
    entries: Vec<Entry>,
    source: Source<R>,
}

pub(crate) fn read<R: Read + Seek>(
    reader: R,
    len: u64,
    keep: &dyn Fn(&str) -> bool,
    limits: &Limits,
) -> Result<Checkpoint, CheckpointError> {
    let mut loaded = load(reader, len, limits)?;
    let max = limits
        .max_elements
        .unwrap_or_else(|| len.saturating_mul(4).saturating_add(1 << 20));
    let mut budget = Budget { used: 0, max };
    let mut tensors = Vec::new();
    for e in &loaded.entries {
        if !keep(&e.key) {
            continue;
        }
        let Object::Tensor(t) = loaded.unpickled.arena.get(e.tensor) else {
            unreachable!("entries point at tensors")
        };
        let tensor = materialize(&mut loaded.source, t, e, &mut budget)?;
        tensors.push((e.key.clone(), tensor));
    }
    Ok(Checkpoint {
        format: loaded.format,
        tensors,
    })
}

pub(crate) fn inspect<R: Read + Seek>(
    reader: R,
    len: u64,
    limits: &Limits,
) -> Result<Inventory, CheckpointError> {
    let loaded = load(reader, len, limits)?;
    let tensors = loaded
        .entries
        .iter()
        .map(|e| {
            let Object::Tensor(t) = loaded.unpickled.arena.get(e.tensor) else {
                unreachable!("entries point at tensors")
            };
            TensorInfo {
                key: e.key.clone(),
                // Fits: the element count was checked to fit in usize.
                shape: t.shape.iter().map(|&s| s as usize).collect(),
                stride: t.stride.clone(),
                storage_offset: t.storage_offset,
                dtype: t.storage.dtype,
                storage_key: t.storage.key.to_string(),
                location: t.storage.location.to_string(),
            }
        })
        .collect();
    Ok(Inventory {
        format: loaded.format,
        tensors,
    })
}

fn load<R: Read + Seek>(
    mut reader: R,
    len: u64,
    limits: &Limits,
) -> Result<Loaded<R>, CheckpointError> {
    if len == 0 {
        return Err(CheckpointError::Empty);
    }
    let mut prefix = [0u8; 8];
    let n = usize::try_from(len.min(8)).unwrap_or(8);
    reader
        .read_exact(&mut prefix[..n])
        .map_err(|source| CheckpointError::Read {
            section: Section::LegacyMagic,
            offset: 0,
            source,
        })?;
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|source| CheckpointError::Read {
            section: Section::LegacyMagic,
            offset: 0,
            source,
        })?;
    let (format, unpickled, storages, source) = if prefix[..n].starts_with(&ZIP_MAGIC) {
        let (u, s, src) = open_zip(reader, len, limits)?;
        (Format::Zip, u, s, src)
    } else if prefix[0] == 0x80 {
        let (u, s, src) = open_legacy(reader, len, limits)?;
        (Format::Legacy, u, s, src)
    } else {
        return Err(CheckpointError::UnrecognizedFormat {
            prefix: prefix[..n].to_vec(),
        });
    };
    let entries = flatten(&unpickled, limits, len)?;
    let mut loaded = Loaded {
        format,
        unpickled,
        entries,
        source,
    };
    check_storages(&mut loaded, &storages)?;
    Ok(loaded)
}

// ---------------------------------------------------------------- zip

fn zip_entry_err(entry: &str) -> impl FnOnce(zip::result::ZipError) -> CheckpointError + '_ {
    move |source| match source {
        zip::result::ZipError::FileNotFound => CheckpointError::MissingEntry {
            entry: entry.to_string(),
        },
        source => CheckpointError::ZipEntry {
            entry: entry.to_string(),
            source,
        },
    }
}

/// Reads a whole zip entry of at most `max` declared bytes.
fn read_zip_entry<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    name: &str,
    max: u64,
) -> Result<Vec<u8>, CheckpointError> {
    let mut file = archive.by_name(name).map_err(zip_entry_err(name))?;
    let declared = file.size();
    if declared > max {
        return Err(CheckpointError::LimitExceeded {
            limit: Limit::EntrySize,
            value: declared,
            max,
            key: Some(name.to_string()),
        });
    }
    // Grows with the data actually read, never beyond the (bounded) declared size.
    let mut buf = Vec::new();
    let read_err = |source| CheckpointError::ZipEntryRead {
        entry: name.to_string(),
        source,
    };
    (&mut file)
        .take(declared)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    if (buf.len() as u64) < declared {
        return Err(CheckpointError::ZipEntryShort {
            entry: name.to_string(),
            read: buf.len() as u64,
            declared,
        });
    }
    check_entry_end(&mut file).map_err(read_err)?;
    Ok(buf)
}

/// At the declared end of an entry: one more read must find its end, where the zip reader
/// checks the CRC-32 of everything read (a corrupt entry is `InvalidData`).
fn check_entry_end(file: &mut impl Read) -> io::Result<()> {
    let mut extra = [0u8; 1];
    match file.read(&mut extra)? {
        0 => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "more data than the declared size",
        )),
    }
}

type Opened<R> = (Unpickled, StorageTable, Source<R>);

fn open_zip<R: Read + Seek>(
    reader: R,
    len: u64,
    limits: &Limits,
) -> Result<Opened<R>, CheckpointError> {
    let mut archive = ZipArchive::new(reader).map_err(|source| CheckpointError::Zip { source })?;
    // Like torch: the archive name is the directory of the first entry.
    let prefix = archive
        .name_for_index(0)
        .and_then(|n| n.split_once('/'))
        .map(|(p, _)| p.to_string())
        .ok_or_else(|| CheckpointError::MissingEntry {
            entry: "<archive>/data.pkl".to_string(),
        })?;
    let big_endian = match archive.index_for_name(&format!("{prefix}/byteorder")) {
        None => false,
        Some(_) => {
            let b = read_zip_entry(&mut archive, &format!("{prefix}/byteorder"), 32)?;
            match b.as_slice() {
                b"little" => false,
                b"big" => true,
                other => {
                    return Err(CheckpointError::UnsupportedByteOrder {
                        found: String::from_utf8_lossy(other).into_owned(),
                    });
                }
            }
        }
    };
    // Stored entries cannot exceed the file; deflated ones are held to 4x the file.
    let max_pickle = len.saturating_mul(4).max(1 << 20);
    let pkl = read_zip_entry(&mut archive, &format!("{prefix}/data.pkl"), max_pickle)?;
    let mut storages = StorageTable::default();
    let mut cursor = io::Cursor::new(pkl.as_slice());
    let mut input = Input::new(&mut cursor, 0, pkl.len() as u64, Section::DataPkl);
    let mut budget = MemoryBudget::new(limits.pickle_memory(pkl.len() as u64));
    let unpickled = pickle::unpickle(
        &mut input,
        Some(&mut storages),
        limits.max_dims,
        &mut budget,
    )?;
    Ok((
        unpickled,
        storages,
        Source::Zip {
            archive,
            prefix,
            big_endian,
        },
    ))
}

// ---------------------------------------------------------------- legacy

fn open_legacy<R: Read + Seek>(
    mut reader: R,
    len: u64,
    limits: &Limits,
) -> Result<Opened<R>, CheckpointError> {
    let mut pos = 0u64;
    // One budget for the file's pickles: where the main pickle ends is not known before.
    let mut budget = MemoryBudget::new(limits.pickle_memory(len));
    let mut run = |reader: &mut R,
                   pos: &mut u64,
                   section: Section,
                   storages: Option<&mut StorageTable>|
     -> Result<Unpickled, CheckpointError> {
        let mut input = Input::new(reader, *pos, len - *pos, section);
        let u = pickle::unpickle(&mut input, storages, limits.max_dims, &mut budget)?;
        *pos = input.pos;
        Ok(u)
    };
    let magic = run(&mut reader, &mut pos, Section::LegacyMagic, None)?;
    let magic_ok = match &magic.root {
        Value::BigInt(b) => b[..] == LEGACY_MAGIC[..],
        _ => false,
    };
    if !magic_ok {
        return Err(CheckpointError::BadMagic);
    }
    let protocol = run(&mut reader, &mut pos, Section::LegacyProtocol, None)?;
    match protocol.root {
        Value::Int(LEGACY_PROTOCOL_VERSION) => {}
        Value::Int(v) => return Err(CheckpointError::UnsupportedLegacyProtocol { found: Some(v) }),
        _ => return Err(CheckpointError::UnsupportedLegacyProtocol { found: None }),
    }
    // System information (endianness, type sizes): storages are little-endian regardless.
    run(&mut reader, &mut pos, Section::LegacySysInfo, None)?;
    let mut storages = StorageTable::default();
    let main = run(
        &mut reader,
        &mut pos,
        Section::LegacyMain,
        Some(&mut storages),
    )?;
    let keys = run(&mut reader, &mut pos, Section::LegacyStorageKeys, None)?;
    let key_list: Vec<Rc<str>> = match &keys.root {
        Value::Obj(id) => match keys.arena.get(*id) {
            Object::List(items) => items
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Ok(s.clone()),
                    other => Err(CheckpointError::BadStorageKeyList {
                        found: keys.arena.kind(other),
                    }),
                })
                .collect::<Result<_, _>>()?,
            other => {
                return Err(CheckpointError::BadStorageKeyList {
                    found: other.kind(),
                });
            }
        },
        other => {
            return Err(CheckpointError::BadStorageKeyList {
                found: keys.arena.kind(other),
            });
        }
    };

    // Each storage: 8-byte little-endian element count, then its raw bytes.
    let mut offsets = HashMap::new();
    for key in key_list {
        let undeclared = || CheckpointError::UndeclaredStorage {
            storage_key: key.chars().take(300).collect(),
        };
        // Length first: a long key cannot have been declared, and is not hashed.
        if key.len() > pickle::MAX_STORAGE_KEY {
            return Err(undeclared());
        }
        let &(dtype, declared) = storages.decls.get(&key).ok_or_else(undeclared)?;
        if offsets.contains_key(&key) {
            return Err(CheckpointError::DuplicateStorageKey {
                storage_key: key.to_string(),
            });
        }
        let available = len - pos;
        if available < 8 {
            return Err(CheckpointError::Truncated {
                section: Section::LegacyStorages,
                offset: pos,
                needed: 8,
                available,
            });
        }
        let count = read_i64_at(&mut reader, pos)?;
        let count = u64::try_from(count).map_err(|_| CheckpointError::NegativeStorageCount {
            storage_key: key.to_string(),
            count,
            offset: pos,
        })?;
        let es = dtype.size() as u64;
        let mismatch = || CheckpointError::StorageSizeMismatch {
            storage_key: key.to_string(),
            declared_numel: declared,
            element_size: es,
            actual_bytes: count.saturating_mul(es),
        };
        if count != declared {
            return Err(mismatch());
        }
        let nbytes = count.checked_mul(es).ok_or_else(mismatch)?;
        let data = pos + 8;
        if nbytes > len - data {
            return Err(CheckpointError::Truncated {
                section: Section::LegacyStorages,
                offset: data,
                needed: nbytes,
                available: len - data,
            });
        }
        offsets.insert(key, data);
        pos = data + nbytes;
    }
    Ok((main, storages, Source::Legacy { reader, offsets }))
}

fn read_i64_at<R: Read + Seek>(reader: &mut R, pos: u64) -> Result<i64, CheckpointError> {
    let mut b = [0u8; 8];
    reader
        .seek(SeekFrom::Start(pos))
        .and_then(|_| reader.read_exact(&mut b))
        .map_err(|source| CheckpointError::Read {
            section: Section::LegacyStorages,
            offset: pos,
            source,
        })?;
    Ok(i64::from_le_bytes(b))
}

// ---------------------------------------------------------------- flattening

struct Walker<'a> {
    arena: &'a Arena,
    max_depth: usize,
    visits: u64,
    max_visits: u64,
    metadata: u64,
    max_metadata: u64,
    seen: HashSet<String>,
    out: Vec<(String, ObjId)>,
}

impl<'a> Walker<'a> {
    fn walk(
        &mut self,
        v: &'a Value,
        key: &mut String,
        depth: usize,
    ) -> Result<(), CheckpointError> {
        let Value::Obj(id) = v else { return Ok(()) };
        let arena = self.arena;
        let obj = arena.get(*id);
        let scanned = match obj {
            Object::Tensor(t) => return self.emit(key, *id, t.shape.len()),
            Object::Dict(d) => d.entries.len(),
            Object::List(items) | Object::Tuple(items) => items.len(),
            // Sets cannot hold tensors (unhashable); globals, storages, devices hold nothing.
            _ => return Ok(()),
        };
        // Charged before scanning; scalars are skipped but still scanned.
        self.visits = self.visits.saturating_add(1 + scanned as u64);
        if self.visits > self.max_visits {
            return Err(CheckpointError::LimitExceeded {
                limit: Limit::Visits,
                value: self.visits,
                max: self.max_visits,
                key: Some(key.clone()),
            });
        }
        match obj {
            Object::Dict(d) => {
                for (k, val) in &d.entries {
                    if !self.is_container(val) {
                        continue;
                    }
                    let seg = match k {
                        Value::Str(s) => Segment::Str(s),
                        Value::Int(i) => Segment::Int(*i),
                        Value::Bool(b) => Segment::Str(if *b { "True" } else { "False" }),
                        Value::None => Segment::Str("None"),
                        other => {
                            return Err(CheckpointError::UnsupportedDictKey {
                                parent: key.clone(),
                                kind: arena.kind(other),
                            });
                        }
                    };
                    self.child(seg, val, key, depth)?;
                }
            }
            Object::List(items) | Object::Tuple(items) => {
                for (i, val) in items.iter().enumerate() {
                    if self.is_container(val) {
                        self.child(Segment::Int(i as i64), val, key, depth)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn child(
        &mut self,
        seg: Segment<'a>,
        val: &'a Value,
        key: &mut String,
        depth: usize,
    ) -> Result<(), CheckpointError> {
        if depth >= self.max_depth {
            return Err(CheckpointError::LimitExceeded {
                limit: Limit::Depth,
                value: depth as u64 + 1,
                max: self.max_depth as u64,
                key: Some(key.clone()),
            });
        }
        let len = key.len();
        if !key.is_empty() {
            key.push('.');
        }
        match seg {
            Segment::Str(s) => key.push_str(s),
            Segment::Int(i) => key.push_str(&i.to_string()),
        }
        self.charge(key.len() as u64, key)?;
        self.walk(val, key, depth + 1)?;
        key.truncate(len);
        Ok(())
    }

    fn is_container(&self, v: &Value) -> bool {
        match v {
            Value::Obj(id) => matches!(
                self.arena.get(*id),
                Object::Dict(_) | Object::List(_) | Object::Tuple(_) | Object::Tensor(_)
            ),
            _ => false,
        }
    }

    fn charge(&mut self, bytes: u64, key: &str) -> Result<(), CheckpointError> {
        self.metadata = self.metadata.saturating_add(bytes);
        if self.metadata > self.max_metadata {
            return Err(CheckpointError::LimitExceeded {
                limit: Limit::Metadata,
                value: self.metadata,
                max: self.max_metadata,
                key: Some(key.to_string()),
            });
        }
        Ok(())
    }

    fn emit(&mut self, key: &str, id: ObjId, ndim: usize) -> Result<(), CheckpointError> {
        self.charge(key.len() as u64 + 16 * ndim as u64 + 32, key)?;
        if !self.seen.insert(key.to_string()) {
            return Err(CheckpointError::DuplicateKey {
                key: key.to_string(),
            });
        }
        self.out.push((key.to_string(), id));
        Ok(())
    }
}

enum Segment<'s> {
    Str(&'s str),
    Int(i64),
}

fn flatten(u: &Unpickled, limits: &Limits, len: u64) -> Result<Vec<Entry>, CheckpointError> {
    // A tree visits each container once, and each costs at least one pickle byte; only
    // shared containers (memo GETs) visit more. Keys are bounded the same way.
    let scale = (u.arena.len() as u64).max(len);
    let mut w = Walker {
        arena: &u.arena,
        max_depth: limits.max_depth.min(DEPTH_CAP),
        visits: 0,
        max_visits: scale.saturating_mul(2).saturating_add(1 << 16),
        metadata: 0,
        max_metadata: scale.saturating_mul(8).saturating_add(1 << 20),
        seen: HashSet::new(),
        out: Vec::new(),
    };
    let mut key = String::new();
    w.walk(&u.root, &mut key, 0)?;
    let out = std::mem::take(&mut w.out);
    out.into_iter()
        .map(|(key, id)| {
            let Object::Tensor(t) = u.arena.get(id) else {
                unreachable!("emitted ids are tensors")
            };
            let (numel, lo, hi) = geometry(&key, t)?;
            Ok(Entry {
                key,
                tensor: id,
                numel,
                lo,
                hi,
            })
        })
        .collect()
}

/// Element count and the storage span `[lo, hi)` of a view, checked against its storage.
fn geometry(key: &str, t: &TensorRef) -> Result<(u64, u64, u64), CheckpointError> {
    let numel = t
        .shape
        .iter()
        .try_fold(1u64, |acc, &s| acc.checked_mul(s))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(|| CheckpointError::ShapeOverflow {
            key: key.to_string(),
            shape: t.shape.clone(),
        })?;
    let required = if numel == 0 {
        Some(t.storage_offset)
    } else {
        t.shape
            .iter()
            .zip(&t.stride)
            .try_fold(t.storage_offset, |acc, (&s, &st)| {
                (s - 1).checked_mul(st).and_then(|x| acc.checked_add(x))
            })
            .and_then(|max_index| max_index.checked_add(1))
    };
    match required {
        Some(r) if r <= t.storage.numel => {
            let lo = if numel == 0 { r } else { t.storage_offset };
            Ok((numel, lo, r))
        }
        _ => Err(CheckpointError::ViewOutOfBounds {
            key: key.to_string(),
            storage_key: t.storage.key.to_string(),
            view: Box::new(ViewGeometry {
                storage_offset: t.storage_offset,
                shape: t.shape.clone(),
                stride: t.stride.clone(),
            }),
            required: required.map_or(RequiredElements::Overflow, RequiredElements::Count),
            storage_numel: t.storage.numel,
        }),
    }
}

/// Every storage a tensor refers to must be in the file with the declared size.
fn check_storages<R: Read + Seek>(
    loaded: &mut Loaded<R>,
    table: &StorageTable,
) -> Result<(), CheckpointError> {
    let mut checked: HashSet<Rc<str>> = HashSet::new();
    for e in &loaded.entries {
        let Object::Tensor(t) = loaded.unpickled.arena.get(e.tensor) else {
            unreachable!("entries point at tensors")
        };
        let key = &t.storage.key;
        if !checked.insert(key.clone()) {
            continue;
        }
        let &(dtype, declared) =
            table
                .decls
                .get(key)
                .ok_or_else(|| CheckpointError::MissingStorage {
                    storage_key: key.to_string(),
                })?;
        let es = dtype.size() as u64;
        match &mut loaded.source {
            Source::Legacy { offsets, .. } => {
                if !offsets.contains_key(key) {
                    return Err(CheckpointError::MissingStorage {
                        storage_key: key.to_string(),
                    });
                }
            }
            Source::Zip {
                archive, prefix, ..
            } => {
                let name = format!("{prefix}/data/{key}");
                let actual = match archive.by_name(&name) {
                    Ok(f) => f.size(),
                    Err(zip::result::ZipError::FileNotFound) => {
                        return Err(CheckpointError::MissingStorage {
                            storage_key: key.to_string(),
                        });
                    }
                    Err(source) => {
                        return Err(CheckpointError::ZipEntry {
                            entry: name,
                            source,
                        });
                    }
                };
                if declared.checked_mul(es) != Some(actual) {
                    return Err(CheckpointError::StorageSizeMismatch {
                        storage_key: key.to_string(),
                        declared_numel: declared,
                        element_size: es,
                        actual_bytes: actual,
                    });
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- materialization

/// Elements materialized so far (values, and storage bytes read or decompressed).
struct Budget {
    used: u64,
    max: u64,
}

impl Budget {
    fn charge(&mut self, elements: u64, key: &str) -> Result<(), CheckpointError> {
        let used = self.used.saturating_add(elements);
        if used > self.max {
            return Err(CheckpointError::LimitExceeded {
                limit: Limit::Elements,
                value: used,
                max: self.max,
                key: Some(key.to_string()),
            });
        }
        self.used = used;
        Ok(())
    }
}

fn materialize<R: Read + Seek>(
    source: &mut Source<R>,
    t: &TensorRef,
    e: &Entry,
    budget: &mut Budget,
) -> Result<Tensor, CheckpointError> {
    // Before allocating: the values, and the storage span they are gathered from.
    budget.charge(e.numel.max(e.hi - e.lo).max(1), &e.key)?;
    let dtype = t.storage.dtype;
    let es = dtype.size() as u64;
    // Checked in `geometry` / `check_storages`: hi <= numel, numel * es fits the entry.
    let first = t.storage.elem_offset + e.lo;
    let span_bytes = (e.hi - e.lo) * es;
    let span = usize::try_from(span_bytes).map_err(|_| CheckpointError::ShapeOverflow {
        key: e.key.clone(),
        shape: t.shape.clone(),
    })?;
    let mut bytes = vec![0u8; if e.numel == 0 { 0 } else { span }];
    let big_endian = match source {
        Source::Zip {
            archive,
            prefix,
            big_endian,
        } => {
            if !bytes.is_empty() {
                let name = format!("{prefix}/data/{}", t.storage.key);
                let read_err = |source| CheckpointError::ZipEntryRead {
                    entry: name.clone(),
                    source,
                };
                let skip = first * es;
                let whole = first == 0 && e.hi - e.lo == t.storage.root_numel;
                match archive.by_name_seek(&name) {
                    // A whole storage: read in order, and the CRC-32 checked at its end.
                    Ok(_) if whole => {
                        let mut file = archive.by_name(&name).map_err(zip_entry_err(&name))?;
                        file.read_exact(&mut bytes).map_err(read_err)?;
                        check_entry_end(&mut file).map_err(read_err)?;
                    }
                    // Stored (torch's choice): seek straight to the span.
                    Ok(mut file) => {
                        file.seek(SeekFrom::Start(skip))
                            .and_then(|_| file.read_exact(&mut bytes))
                            .map_err(read_err)?;
                    }
                    // Compressed: decompress up to the span, which is charged too.
                    Err(zip::result::ZipError::UnsupportedArchive(_)) => {
                        budget.charge(first, &e.key)?;
                        let mut file = archive.by_name(&name).map_err(zip_entry_err(&name))?;
                        let skipped = io::copy(&mut (&mut file).take(skip), &mut io::sink())
                            .map_err(read_err)?;
                        if skipped < skip {
                            return Err(read_err(io::ErrorKind::UnexpectedEof.into()));
                        }
                        file.read_exact(&mut bytes).map_err(read_err)?;
                        if whole {
                            check_entry_end(&mut file).map_err(read_err)?;
                        }
                    }
                    Err(err) => return Err(zip_entry_err(&name)(err)),
                }
            }
            *big_endian
        }
        Source::Legacy { reader, offsets } => {
            if !bytes.is_empty() {
                let data = offsets.get(&t.storage.key).copied().ok_or_else(|| {
                    CheckpointError::MissingStorage {
                        storage_key: t.storage.key.to_string(),
                    }
                })?;
                let start = data + first * es;
                reader
                    .seek(SeekFrom::Start(start))
                    .and_then(|_| reader.read_exact(&mut bytes))
                    .map_err(|source| CheckpointError::Read {
                        section: Section::LegacyStorages,
                        offset: start,
                        source,
                    })?;
            }
            false
        }
    };
    let n = e.numel as usize;
    let shape: Vec<usize> = t.shape.iter().map(|&s| s as usize).collect();
    let base = t.storage_offset - e.lo;
    let values = if dtype.is_float() {
        let mut out = Vec::with_capacity(n);
        for_each_index(&t.shape, &t.stride, base, |i| {
            out.push(decode_float(&bytes, i as usize, dtype, big_endian));
        });
        Values::Float(out)
    } else {
        let mut out = Vec::with_capacity(n);
        for_each_index(&t.shape, &t.stride, base, |i| {
            out.push(decode_int(&bytes, i as usize, dtype, big_endian));
        });
        Values::Int(out)
    };
    Ok(Tensor {
        shape,
        dtype,
        values,
    })
}

/// Calls `f` with the storage index of every element of the view, row-major.
fn for_each_index(shape: &[u64], stride: &[u64], base: u64, mut f: impl FnMut(u64)) {
    if shape.contains(&0) {
        return;
    }
    let nd = shape.len();
    if nd == 0 {
        f(base);
        return;
    }
    let (inner_n, inner_s) = (shape[nd - 1], stride[nd - 1]);
    let mut idx = vec![0u64; nd];
    let mut off = base;
    loop {
        // The innermost dimension in one run.
        let mut o = off;
        for _ in 0..inner_n {
            f(o);
            o = o.wrapping_add(inner_s);
        }
        // Odometer over the outer dimensions; offsets wrap only transiently.
        let mut d = nd - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            off = off.wrapping_add(stride[d]);
            if idx[d] < shape[d] {
                break;
            }
            off = off.wrapping_sub(stride[d].wrapping_mul(shape[d]));
            idx[d] = 0;
        }
    }
}

fn element<const N: usize>(bytes: &[u8], i: usize, big_endian: bool) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&bytes[i * N..i * N + N]);
    if big_endian {
        b.reverse();
    }
    b
}

fn decode_float(bytes: &[u8], i: usize, dtype: DType, be: bool) -> f64 {
    match dtype {
        DType::F64 => f64::from_le_bytes(element(bytes, i, be)),
        DType::F32 => f32::from_le_bytes(element(bytes, i, be)).into(),
        DType::F16 => half::f16::from_le_bytes(element(bytes, i, be)).to_f64(),
        DType::BF16 => half::bf16::from_le_bytes(element(bytes, i, be)).to_f64(),
        _ => unreachable!("float dtypes only"),
    }
}

fn decode_int(bytes: &[u8], i: usize, dtype: DType, be: bool) -> i64 {
    match dtype {
        DType::I64 => i64::from_le_bytes(element(bytes, i, be)),
        DType::I32 => i32::from_le_bytes(element(bytes, i, be)).into(),
        DType::I16 => i16::from_le_bytes(element(bytes, i, be)).into(),
        DType::I8 => i8::from_le_bytes(element(bytes, i, be)).into(),
        DType::U8 => u8::from_le_bytes(element(bytes, i, be)).into(),
        DType::Bool => i64::from(bytes[i] != 0),
        _ => unreachable!("integer dtypes only"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indices(shape: &[u64], stride: &[u64], base: u64) -> Vec<u64> {
        let mut v = Vec::new();
        for_each_index(shape, stride, base, |i| v.push(i));
        v
    }

    #[test]
    fn view_indices() {
        assert_eq!(indices(&[], &[], 5), vec![5]);
        assert_eq!(indices(&[2, 3], &[3, 1], 0), vec![0, 1, 2, 3, 4, 5]);
        // Transpose of a 3x2 row-major matrix.
        assert_eq!(indices(&[2, 3], &[1, 2], 0), vec![0, 2, 4, 1, 3, 5]);
        // Expanded (stride 0) with an offset.
        assert_eq!(indices(&[2, 2], &[0, 1], 4), vec![4, 5, 4, 5]);
        assert_eq!(indices(&[2, 0], &[1, 1], 0), Vec::<u64>::new());
        // A size-1 dimension with a huge stride must not overflow.
        assert_eq!(indices(&[1, 2], &[u64::MAX, 1], 0), vec![0, 1]);
    }
}
