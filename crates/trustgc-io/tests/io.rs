//! The guarded reader, the atomic writer and the manifest, against the hostile files of
//! issue #9: devices, pipes, links, huge files, outputs that are inputs, long names and
//! the leftovers of killed writers.

use std::path::Path;
use std::time::Duration;

use trustgc_io::{
    Cap, FileKind, MANIFEST, Manifest, ManifestError, ReadError, Sha256Digest, WriteError,
    partial_path, read_capped, read_text_capped, remove_stale_partials, write_dir, write_file,
};

#[path = "../../../tests-support/scratch.rs"]
mod support;
use support::Scratch;

fn scratch(name: &str) -> Scratch {
    Scratch::new("io", name)
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

const SMALL: Cap = Cap {
    bytes: 10,
    what: "a test file",
};

#[test]
fn devices_pipes_and_folders_are_refused_before_reading() {
    let dir = scratch("kinds");
    let fifo = dir.join("pipe");
    mkfifo(&fifo);
    let link = dir.join("zero-link");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    // Read in another thread: a blocking open of the pipe would never return, and the
    // test fails after 10 s instead of hanging.
    let (send, receive) = std::sync::mpsc::channel();
    let pipe = fifo.clone();
    std::thread::spawn(move || {
        let _ = send.send(read_capped(&pipe, Cap::JSON).map(|b| b.len()));
    });
    match receive.recv_timeout(Duration::from_secs(10)) {
        Ok(Err(ReadError::NotRegular {
            kind: FileKind::Fifo,
            ..
        })) => {}
        Ok(other) => panic!("the FIFO: {other:?}"),
        Err(_) => panic!("reading a FIFO blocked for 10 s"),
    }
    for (path, kind) in [
        (fifo.as_path(), FileKind::Fifo),
        (Path::new("/dev/zero"), FileKind::CharDevice),
        (link.as_path(), FileKind::CharDevice),
        (dir.path(), FileKind::Directory),
    ] {
        match read_capped(path, Cap::JSON) {
            Err(ReadError::NotRegular { path: p, kind: k }) => {
                assert_eq!(p, path);
                assert_eq!(k, kind, "{}", path.display());
            }
            other => panic!("{}: {other:?}", path.display()),
        }
    }
    let message = read_capped(&fifo, Cap::JSON).unwrap_err().to_string();
    assert!(
        message.contains("pipe") && message.contains(&*fifo.to_string_lossy()),
        "{message}"
    );
}

#[test]
fn size_caps_hold() {
    let dir = scratch("caps");
    let big = dir.join("big.json");
    std::fs::write(&big, [b'x'; 11]).unwrap();
    match read_capped(&big, SMALL) {
        Err(ReadError::TooLarge {
            size: 11, cap: 10, ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let ok = dir.join("ok.json");
    std::fs::write(&ok, b"{}").unwrap();
    assert_eq!(read_text_capped(&ok, SMALL).unwrap(), "{}");
    std::fs::write(&ok, [0xff, 0xfe]).unwrap();
    assert!(matches!(
        read_text_capped(&ok, SMALL),
        Err(ReadError::NotUtf8 { .. })
    ));
    assert!(matches!(
        read_capped(&dir.join("missing"), SMALL),
        Err(ReadError::Io { .. })
    ));
}

#[test]
fn outputs_never_replace_links_pipes_or_inputs() {
    let dir = scratch("targets");
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, b"keep").unwrap();
    let link = dir.join("link.txt");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let fifo = dir.join("pipe");
    mkfifo(&fifo);
    let sub = dir.join("folder");
    std::fs::create_dir(&sub).unwrap();
    for (target, kind) in [
        (&link, FileKind::Symlink),
        (&fifo, FileKind::Fifo),
        (&sub, FileKind::Directory),
    ] {
        match write_file(target, &[], b"new") {
            Err(WriteError::NotRegularTarget { path, kind: k }) => {
                assert_eq!(&path, target);
                assert_eq!(k, kind);
            }
            other => panic!("{}: {other:?}", target.display()),
        }
    }
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");

    // The output is an input: by the same name, another name, or a hard link.
    let hard = dir.join("hard.txt");
    std::fs::hard_link(&victim, &hard).unwrap();
    let dotted = dir.join(".").join("victim.txt");
    for target in [&victim, &dotted, &hard] {
        match write_file(target, &[&victim], b"new") {
            Err(WriteError::WouldOverwriteInput { path, input }) => {
                assert_eq!(&path, target);
                assert_eq!(input, victim);
            }
            other => panic!("{}: {other:?}", target.display()),
        }
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep");

    // A regular file that is not an input is replaced; nothing is left beside it.
    let out = dir.join("out.txt");
    std::fs::write(&out, b"old").unwrap();
    write_file(&out, &[&victim], b"new").unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"new");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn errors_name_the_output() {
    let missing = std::env::temp_dir()
        .join(format!("trustgc-io-none-{}", std::process::id()))
        .join("x")
        .join("out.bin");
    let err = write_file(&missing, &[], b"x").unwrap_err();
    assert_eq!(err.path(), missing);
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );
}

#[test]
fn names_of_255_bytes_work() {
    let dir = scratch("long");
    for len in [235, 245, 250, 255] {
        let name = "n".repeat(len - 4) + ".bin";
        let out = dir.join(&name);
        let partial = partial_path(&out).unwrap();
        assert!(partial.file_name().unwrap().len() <= 255, "{len}");
        write_file(&out, &[], b"ok").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"ok", "{len}");
    }
    // Two long names that share their first 200 bytes get different partials.
    let a = dir.join("a".repeat(240) + "1");
    let b = dir.join("a".repeat(240) + "2");
    assert_ne!(partial_path(&a).unwrap(), partial_path(&b).unwrap());
}

/// The id of a process that has finished.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn partials_of_killed_writers_are_removed_and_live_ones_kept() {
    let dir = scratch("stale");
    let out = dir.join("model");
    let own = partial_path(&out).unwrap();
    let name = own.file_name().unwrap().to_str().unwrap();
    let prefix = &name[..name.find(".partial-").unwrap() + ".partial-".len()];
    assert_eq!(prefix, ".model.partial-");
    let dead = dir.join(format!("{prefix}{}-3", dead_pid()));
    std::fs::create_dir_all(dead.join("inner")).unwrap();
    std::fs::write(dead.join("inner").join("model.safetensors"), [0u8; 1000]).unwrap();
    let dead_file = dir.join(format!("{prefix}{}", dead_pid()));
    std::fs::write(&dead_file, b"half").unwrap();
    let live = dir.join(format!("{prefix}1"));
    std::fs::create_dir(&live).unwrap();
    let other = dir.join(".other.partial-12");
    std::fs::write(&other, b"not ours").unwrap();

    write_dir::<WriteError>(&out, |tmp| {
        std::fs::write(tmp.join("a"), b"a").map_err(WriteError::io(tmp))
    })
    .unwrap();
    assert!(!dead.exists() && !dead_file.exists());
    assert!(live.exists(), "pid 1 runs: its partial stays");
    assert!(other.exists(), "another output's partial stays");
    assert_eq!(std::fs::read(out.join("a")).unwrap(), b"a");
    assert_eq!(remove_stale_partials(&out), 0);
}

#[test]
fn folders_appear_whole_or_not_at_all() {
    let dir = scratch("dirs");
    let out = dir.join("converted");
    #[derive(Debug)]
    enum E {
        W(WriteError),
        Fail,
    }
    impl From<WriteError> for E {
        fn from(e: WriteError) -> Self {
            Self::W(e)
        }
    }
    let failed = write_dir::<E>(&out, |tmp| {
        std::fs::write(tmp.join("half"), b"x").unwrap();
        Err(E::Fail)
    });
    assert!(matches!(failed, Err(E::Fail)));
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "partial removed"
    );
    write_dir::<E>(&out, |_| Ok(())).unwrap();
    assert!(matches!(
        write_dir::<E>(&out, |_| Ok(())),
        Err(E::W(WriteError::Exists { .. }))
    ));
}

#[test]
fn manifests_catch_changed_bytes_and_refuse_paths() {
    let dir = scratch("manifest");
    let mut manifest = Manifest::default();
    manifest.insert("model.safetensors", b"weights");
    manifest.insert("config.json", b"{}");
    manifest.write(&dir).unwrap();
    let text = std::fs::read_to_string(dir.join(MANIFEST)).unwrap();
    // sha256sum's format; the digest of "{}" as sha256sum computes it.
    assert!(
        text.contains(
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a  config.json"
        ),
        "{text}"
    );
    let back = Manifest::read(&dir).unwrap().unwrap();
    assert_eq!(back, manifest);
    back.verify(&dir, "model.safetensors", b"weights").unwrap();
    match back.verify(&dir, "model.safetensors", b"weightz") {
        Err(ManifestError::Mismatch {
            path,
            expected,
            actual,
        }) => {
            assert_eq!(path, dir.join("model.safetensors"));
            assert_eq!(expected, Sha256Digest::of(b"weights"));
            assert_eq!(actual, Sha256Digest::of(b"weightz"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        back.verify(&dir, "ood.json", b""),
        Err(ManifestError::Unlisted { .. })
    ));
    let hex = Sha256Digest::of(b"").to_string();
    for bad in [
        format!("{hex}  ../etc/passwd"),
        format!("{hex}  a/b"),
        format!("{hex} a"),
        format!("{}  a", &hex[1..]),
        format!("{}  a", "g".repeat(64)),
        format!("{hex}  a\n{hex}  a"),
    ] {
        assert!(
            matches!(
                Manifest::parse(&bad, Path::new("m")),
                Err(ManifestError::Malformed { .. })
            ),
            "{bad}"
        );
    }
    assert!(Manifest::read(&scratch("no-manifest")).unwrap().is_none());
}

#[test]
fn partials_are_unique_per_write() {
    let out = Path::new("/tmp/x/out.bin");
    assert_ne!(partial_path(out).unwrap(), partial_path(out).unwrap());
    // Two threads writing the same output: each result is one whole write.
    let dir = scratch("threads");
    let target = dir.join("out.bin");
    let handles: Vec<_> = (0..8u8)
        .map(|i| {
            let target = target.clone();
            std::thread::spawn(move || write_file(&target, &[], &vec![i; 100_000]).unwrap())
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let bytes = std::fs::read(&target).unwrap();
    assert_eq!(bytes.len(), 100_000);
    assert!(bytes.iter().all(|&b| b == bytes[0]), "a torn write");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 1, "no partial left");
}
