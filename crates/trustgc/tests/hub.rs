#![cfg(feature = "pretrained")]
//! `trustgc::hub` against a real HTTP/1.1 server on 127.0.0.1 that speaks the part of the
//! Hugging Face hub protocol hf-hub 1.0 uses:
//! - `HEAD`/`GET /{owner}/{name}/resolve/{revision}/{path}` with `ETag`, `X-Repo-Commit`
//!   (40 hex) and `Content-Length`, no `X-Xet-Hash`; `If-None-Match` → 304;
//! - large ("LFS") files answer the resolve URL with a 302 to an absolute CDN URL carrying
//!   `X-Linked-Etag` and `X-Linked-Size`, as the hub does;
//! - 404s carry `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) and,
//!   for missing files, `X-Repo-Commit`;
//! - `GET /api/models/{owner}/{name}[/revision/{revision}]` (hf-hub's `exists` and
//!   `revision_exists`, used to tell a missing repository from missing files).
//!
//! Every test has its own server and its own cache folder, and sets no environment
//! variables (everything goes through `HubOptions`). hf-hub's retries are switched off so
//! failures are immediate.
//!
//! The model served is the golden mini model (`../shared/golden/mini`, or
//! `$TRUSTGC_GOLDEN`); the tests fail when it is missing.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use trustgc::hub::{
    Corruption, DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, DEFAULT_REPO, HubError, HubOptions,
    Pretrained, PretrainedExt, TimeoutPhase, fetch_model_dir,
};
use trustgc::weights::convert::ConvertError;
use trustgc::weights::reference::load_reference_safetensors;
use trustgc::weights::safetensors::save_safetensors;
use trustgc::{Classifier, GcConfig, GenerativeClassifier, Mode};

type B = Flex;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const REPO: &str = "trustgc-test/mini";

// ---------------------------------------------------------------------------------------
// Golden data and the local model folder.

/// `../shared/golden` beside the checkout, or `$TRUSTGC_GOLDEN`; panics when missing.
fn golden_dir() -> PathBuf {
    let dir = match std::env::var_os("TRUSTGC_GOLDEN") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
    };
    assert!(
        dir.join("README.md").is_file(),
        "golden data not found at {} (expected ../shared/golden beside the checkout, or set TRUSTGC_GOLDEN)",
        dir.display()
    );
    dir
}

fn golden_path(relative: &str) -> PathBuf {
    let path = golden_dir().join(relative);
    assert!(path.is_file(), "golden file missing: {}", path.display());
    path
}

/// This run's scratch folder, `target/tmp/hub-tests-<pid>`; folders of earlier runs
/// whose process is gone are removed first.
fn scratch_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        if Path::new("/proc/self").exists()
            && let Ok(entries) = std::fs::read_dir(&tmp)
        {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("hub-tests-")
                    && !Path::new("/proc").join(pid).exists()
                {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        tmp.join(format!("hub-tests-{}", std::process::id()))
    })
}

/// A scratch folder for one test (emptied first if it exists).
fn scratch(name: &str) -> PathBuf {
    let dir = scratch_root().join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The mini model as a trustgc model folder: its path, `config.json` and
/// `model.safetensors` bytes. Built once per test binary.
struct LocalModel {
    dir: PathBuf,
    config: Vec<u8>,
    weights: Vec<u8>,
}

fn local_model() -> &'static LocalModel {
    static MODEL: OnceLock<LocalModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let config = GcConfig::mini();
        let model = load_reference_safetensors::<B>(
            &golden_path("mini/mini.safetensors"),
            &config,
            &Default::default(),
        )
        .expect("mini.safetensors loads");
        let dir = scratch("local-model");
        save_safetensors(&model, &dir.join("model.safetensors")).unwrap();
        std::fs::write(dir.join("config.json"), config.to_json()).unwrap();
        LocalModel {
            config: std::fs::read(dir.join("config.json")).unwrap(),
            weights: std::fs::read(dir.join("model.safetensors")).unwrap(),
            dir,
        }
    })
}

/// A deterministic input batch for the mini model.
fn input() -> Tensor<B, 4> {
    let [c, h, w] = GcConfig::mini().input_shape;
    let n = 2 * c * h * w;
    let data: Vec<f32> = (0..n)
        .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 2.0)
        .collect();
    Tensor::from_data(TensorData::new(data, [2, c, h, w]), &Default::default())
}

fn class_log_likelihoods(classifier: &Classifier<B>) -> Vec<Vec<f64>> {
    classifier
        .likelihoods_tensor(input())
        .unwrap()
        .into_iter()
        .map(|l| l.class_log_likelihoods)
        .collect()
}

fn reference_outputs() -> &'static Vec<Vec<f64>> {
    static OUT: OnceLock<Vec<Vec<f64>>> = OnceLock::new();
    OUT.get_or_init(|| {
        let local = Classifier::<B>::from_dir(&local_model().dir, &Default::default()).unwrap();
        class_log_likelihoods(&local)
    })
}

// ---------------------------------------------------------------------------------------
// The hub server.

#[derive(Clone, Debug)]
enum Fault {
    /// Answer every request for the file with this status.
    Status(u16),
    /// Announce the full `Content-Length` but send only this many body bytes, then close.
    Truncate(usize),
    /// Announce the full `Content-Length`, send this many body bytes, then neither send
    /// nor close until the server stops.
    Stall(usize),
}

#[derive(Clone)]
struct HubFile {
    body: Vec<u8>,
    /// Served like an LFS file: resolve → 302 to an absolute CDN URL.
    lfs: bool,
    fault: Option<Fault>,
    /// Sent as the `ETag` (`X-Linked-Etag` for LFS) instead of the real one, as it is.
    etag: Option<String>,
    /// Sent as `X-Repo-Commit` instead of [`COMMIT`], as it is.
    commit: Option<String>,
}

impl HubFile {
    fn plain(body: &[u8]) -> Self {
        Self {
            body: body.to_vec(),
            lfs: false,
            fault: None,
            etag: None,
            commit: None,
        }
    }
    fn lfs(body: &[u8]) -> Self {
        Self {
            lfs: true,
            ..Self::plain(body)
        }
    }
    fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }
    fn with_etag(mut self, etag: &str) -> Self {
        self.etag = Some(etag.to_string());
        self
    }
    fn with_commit(mut self, commit: &str) -> Self {
        self.commit = Some(commit.to_string());
        self
    }
}

#[derive(Default)]
struct HubRepo {
    files: HashMap<String, HubFile>,
    /// When set, every resolve request needs `Authorization: Bearer <token>`.
    token: Option<String>,
    /// Sent as `X-Repo-Commit` of 404 answers instead of [`COMMIT`], as it is.
    not_found_commit: Option<String>,
}

/// One request the server saw.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    if_none_match: Option<String>,
}

#[derive(Default)]
struct HubState {
    repos: HashMap<String, HubRepo>,
    seen: Vec<Seen>,
}

/// The hub's ETag of a file: for LFS files the SHA-256 of the content (as here for all;
/// the hub's plain files have their 40-digit git blob id, which trustgc does not check).
fn etag_of(body: &[u8]) -> String {
    trustgc_io::Sha256Digest::of(body).to_string()
}

struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<HubState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(repos: Vec<(&str, HubRepo)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(HubState {
            repos: repos
                .into_iter()
                .map(|(id, repo)| (id.to_string(), repo))
                .collect(),
            seen: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (state, stop) = (state.clone(), stop.clone());
                    std::thread::spawn(move || {
                        let _ = handle(stream, addr, &state, &stop);
                    });
                }
            })
        };
        Self {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the listening socket: later connections are refused.
    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(self.addr);
            thread.join().unwrap();
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn clear_seen(&self) {
        self.state.lock().unwrap().seen.clear();
    }

    fn set_file(&self, repo: &str, path: &str, file: HubFile) {
        let mut state = self.state.lock().unwrap();
        let repo = state.repos.get_mut(repo).unwrap();
        repo.files.insert(path.to_string(), file);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes (after announcing all of them).
    truncate: Option<usize>,
    /// After them, hang until the server stops.
    stall: bool,
}

impl Reply {
    fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            truncate: None,
            stall: false,
        }
    }
    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
    fn json(self, body: String) -> Self {
        let mut reply = self.header("Content-Type", "application/json");
        reply.body = body.into_bytes();
        reply
    }
    fn error(status: u16, code: &str, message: &str) -> Self {
        Reply::new(status)
            .header("X-Error-Code", code)
            .json(format!("{{\"error\":\"{message}\"}}"))
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        304 => "Not Modified",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

fn handle(
    stream: TcpStream,
    addr: SocketAddr,
    state: &Mutex<HubState>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let mut state = state.lock().unwrap();
    state.seen.push(Seen {
        method: method.clone(),
        path: path.clone(),
        if_none_match: headers.get("if-none-match").cloned(),
    });
    let reply = route(&state, addr, &path, &headers);
    drop(state);
    write_reply(stream, &method, reply, stop)
}

fn route(
    state: &HubState,
    addr: SocketAddr,
    path: &str,
    headers: &HashMap<String, String>,
) -> Reply {
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // hf-hub's repo and revision existence checks.
    if segments.len() >= 4 && segments[0] == "api" && segments[1] == "models" {
        let id = format!("{}/{}", segments[2], segments[3]);
        if !state.repos.contains_key(&id) {
            return Reply::error(404, "RepoNotFound", "Repository not found");
        }
        if segments.len() == 6
            && segments[4] == "revision"
            && !["main", COMMIT].contains(&segments[5])
        {
            return Reply::error(404, "RevisionNotFound", "Invalid rev id");
        }
        return Reply::new(200).json(format!("{{\"id\":\"{id}\",\"sha\":\"{COMMIT}\"}}"));
    }
    // The CDN behind LFS redirects.
    if segments.len() == 2 && segments[0] == "cdn" {
        for repo in state.repos.values() {
            for file in repo.files.values() {
                if etag_of(&file.body) == segments[1] {
                    return serve_body(file);
                }
            }
        }
        return Reply::new(404);
    }
    // {owner}/{name}/resolve/{revision}/{path...}
    if segments.len() < 5 || segments[2] != "resolve" {
        return Reply::new(404);
    }
    let id = format!("{}/{}", segments[0], segments[1]);
    let Some(repo) = state.repos.get(&id) else {
        return Reply::error(404, "RepoNotFound", "Repository not found");
    };
    if let Some(token) = &repo.token
        && headers.get("authorization") != Some(&format!("Bearer {token}"))
    {
        return Reply::error(
            401,
            "Unauthorized",
            "Invalid credentials in Authorization header",
        );
    }
    if !["main", COMMIT].contains(&segments[3]) {
        return Reply::error(404, "RevisionNotFound", "Invalid rev id");
    }
    let file_path = segments[4..].join("/");
    let Some(file) = repo.files.get(&file_path) else {
        return Reply::error(404, "EntryNotFound", "Entry not found").header(
            "X-Repo-Commit",
            repo.not_found_commit.as_deref().unwrap_or(COMMIT),
        );
    };
    if let Some(Fault::Status(status)) = file.fault {
        return Reply::error(status, "Failure", "injected failure");
    }
    let etag = etag_of(&file.body);
    let quoted = format!("\"{}\"", file.etag.as_deref().unwrap_or(&etag));
    let commit = file.commit.as_deref().unwrap_or(COMMIT);
    if headers.get("if-none-match") == Some(&quoted) {
        return Reply::new(304)
            .header("ETag", quoted.clone())
            .header("X-Linked-Etag", quoted)
            .header("X-Repo-Commit", commit);
    }
    if file.lfs {
        return Reply::new(302)
            .header("Location", format!("http://{addr}/cdn/{etag}"))
            .header("ETag", "\"pointer\"")
            .header("X-Linked-Etag", quoted)
            .header("X-Linked-Size", file.body.len().to_string())
            .header("X-Repo-Commit", commit);
    }
    serve_body(file)
        .header("ETag", quoted)
        .header("X-Repo-Commit", commit)
}

fn serve_body(file: &HubFile) -> Reply {
    let mut reply = Reply::new(200).header("Content-Type", "application/octet-stream");
    reply.body = file.body.clone();
    match file.fault {
        Some(Fault::Truncate(n)) => reply.truncate = Some(n),
        Some(Fault::Stall(n)) => {
            reply.truncate = Some(n);
            reply.stall = true;
        }
        _ => {}
    }
    reply
}

fn write_reply(
    mut stream: TcpStream,
    method: &str,
    reply: Reply,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        status_text(reply.status),
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if method != "HEAD" && reply.status != 304 {
        let n = reply
            .truncate
            .unwrap_or(reply.body.len())
            .min(reply.body.len());
        stream.write_all(&reply.body[..n])?;
        stream.flush()?;
        while reply.stall && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}

// ---------------------------------------------------------------------------------------
// Helpers.

/// A repository holding the converted mini model as `beta_8/` (weights served like LFS).
fn converted_repo() -> HubRepo {
    let model = local_model();
    let mut repo = HubRepo::default();
    repo.files
        .insert("beta_8/config.json".into(), HubFile::plain(&model.config));
    repo.files.insert(
        "beta_8/model.safetensors".into(),
        HubFile::lfs(&model.weights),
    );
    repo.files.insert(
        "beta_8/README.md".into(),
        HubFile::plain(b"# mini\nThe golden mini model, for tests.\n"),
    );
    repo
}

/// Options for `server` with a fresh cache, no retries, no progress bars.
fn options(server: &Server, repo: &str, cache: &Path) -> HubOptions {
    let mut options = HubOptions::from_env();
    options.repo_id = repo.to_string();
    options.revision = "main".to_string();
    options.endpoint = server.endpoint();
    options.cache_dir = cache.to_path_buf();
    options.token = None;
    options.offline = false;
    options.progress = false;
    options.max_retries = 0;
    options.retry_base_delay = Duration::from_millis(1);
    options
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

/// The cache holds no partial file, no dangling link, no unreferenced blob, no
/// half-finished conversion, and every linked file is valid.
fn assert_cache_clean(cache: &Path) {
    let all = files_under(cache);
    let mut linked = HashSet::new();
    for path in &all {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".incomplete"),
            "partial download left in the cache: {}",
            path.display()
        );
        assert!(
            !name.contains(".partial-"),
            "half-finished conversion left in the cache: {}",
            path.display()
        );
        let meta = std::fs::symlink_metadata(path).unwrap();
        if !meta.file_type().is_symlink() {
            continue;
        }
        let target = std::fs::canonicalize(path)
            .unwrap_or_else(|e| panic!("dangling link {}: {e}", path.display()));
        let bytes = std::fs::read(&target).unwrap();
        if name == "config.json" {
            GcConfig::from_json(&String::from_utf8_lossy(&bytes))
                .unwrap_or_else(|e| panic!("invalid config cached at {}: {e}", path.display()));
        } else if name.ends_with(".safetensors") {
            safetensors::SafeTensors::deserialize(&bytes).unwrap_or_else(|e| {
                panic!("invalid safetensors cached at {}: {e}", path.display())
            });
        } else if name.ends_with(".pt") {
            assert!(
                bytes.starts_with(b"PK\x03\x04"),
                "invalid checkpoint cached at {}",
                path.display()
            );
        }
        linked.insert(target);
    }
    for path in &all {
        let in_blobs = path
            .parent()
            .is_some_and(|p| p.file_name().is_some_and(|n| n == "blobs"));
        if in_blobs {
            let canonical = std::fs::canonicalize(path).unwrap();
            assert!(
                linked.contains(&canonical),
                "blob not linked from any snapshot (left over by a failure?): {}",
                path.display()
            );
        }
    }
}

fn message(error: &HubError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(&format!(" | {s}"));
        source = s.source();
    }
    println!("{text}");
    text
}

// ---------------------------------------------------------------------------------------
// Tests.

#[test]
fn pretrained_names_round_trip() {
    assert_eq!(Pretrained::ALL.len(), 8);
    for variant in Pretrained::ALL {
        assert_eq!(variant.to_string().parse::<Pretrained>(), Ok(variant));
        assert_eq!(variant.file_name().parse::<Pretrained>(), Ok(variant));
        assert_eq!(format!("{}.avg.pt", variant.folder()), variant.file_name());
    }
    assert_eq!(Pretrained::Beta8.file_name(), "beta_8.avg.pt");
    assert_eq!(Pretrained::Beta8.folder(), "beta_8");
    assert_eq!(Pretrained::BetaInf.folder(), "beta_inf");
    for text in ["beta8", "beta_8", "8", "BETA-8", " beta_8 "] {
        assert_eq!(text.parse::<Pretrained>(), Ok(Pretrained::Beta8), "{text}");
    }
    for text in ["inf", "beta_inf", "infinity", "∞", "betainf"] {
        assert_eq!(
            text.parse::<Pretrained>(),
            Ok(Pretrained::BetaInf),
            "{text}"
        );
    }
    let error = "beta_3".parse::<Pretrained>().unwrap_err();
    assert!(error.to_string().contains("beta_16"), "{error}");
    assert_eq!(Pretrained::Beta0.reported_top1(), None);
    assert_eq!(Pretrained::Beta8.reported_top1(), Some(74.59));
    assert_eq!(Pretrained::BetaInf.reported_top1(), Some(76.27));
    assert_eq!(Pretrained::Beta32.beta(), trustgc::Beta::Finite(32.0));
    assert_eq!(Pretrained::BetaInf.beta(), trustgc::Beta::Infinity);
    // The token never shows in debug output.
    let mut options = HubOptions::from_env();
    options.token = Some("hf_secret_value".into());
    assert!(!format!("{options:?}").contains("hf_secret_value"));
}

#[test]
fn first_load_downloads_then_the_cache_serves_without_the_server() {
    let mut server = Server::start(vec![(REPO, converted_repo())]);
    let cache = scratch("first-load");
    let mut opts = options(&server, REPO, &cache);
    // Exercises the progress bars (hidden: stderr is not a terminal under the harness).
    opts.progress = true;
    let device = Default::default();

    // First load: downloads, and the model equals the one of the local folder.
    let classifier = Classifier::<B>::pretrained_with(Pretrained::Beta8, &opts, &device).unwrap();
    assert_eq!(&class_log_likelihoods(&classifier), reference_outputs());
    let seen = server.seen();
    let gets: Vec<&str> = seen
        .iter()
        .filter(|s| s.method == "GET")
        .map(|s| s.path.as_str())
        .collect();
    assert!(
        gets.iter().any(|p| p.ends_with("/beta_8/config.json")),
        "{gets:?}"
    );
    assert!(gets.iter().any(|p| p.starts_with("/cdn/")), "{gets:?}");
    let dir = fetch_model_dir(Pretrained::Beta8, &opts).unwrap();
    assert!(dir.starts_with(&cache), "{}", dir.display());
    assert!(dir.join("README.md").is_file());
    assert!(!dir.join("ood.json").exists());

    // The bare model through the trait gives the same outputs.
    let model =
        GenerativeClassifier::<B>::pretrained_with(Pretrained::Beta8, &opts, &device).unwrap();
    let local = trustgc::weights::safetensors::load_safetensors::<B>(
        &local_model().dir.join("model.safetensors"),
        &GcConfig::mini(),
        &device,
    )
    .unwrap();
    let a = model.forward(input(), Mode::Eval).logits().into_data();
    let b = local.forward(input(), Mode::Eval).logits().into_data();
    assert_eq!(a, b);

    // Second load with the server up: revalidation only (304), no body transferred.
    server.clear_seen();
    assert_eq!(fetch_model_dir(Pretrained::Beta8, &opts).unwrap(), dir);
    let seen = server.seen();
    assert!(seen.iter().all(|s| s.method == "HEAD"), "{seen:?}");
    assert!(
        seen.iter().any(|s| s.if_none_match.is_some()),
        "no conditional request: {seen:?}"
    );

    // With the server gone, the cache serves the model (after one refused connection).
    server.stop();
    let start = std::time::Instant::now();
    let classifier = Classifier::<B>::pretrained_with(Pretrained::Beta8, &opts, &device).unwrap();
    assert_eq!(&class_log_likelihoods(&classifier), reference_outputs());
    println!("cache hit with the server down: {:?}", start.elapsed());

    // Offline mode, server gone.
    let mut offline = opts.clone();
    offline.offline = true;
    assert_eq!(fetch_model_dir(Pretrained::Beta8, &offline).unwrap(), dir);
    assert_cache_clean(&cache);
}

#[test]
fn offline_mode_uses_only_the_cache() {
    let server = Server::start(vec![(REPO, converted_repo())]);
    let cache = scratch("offline");
    let mut opts = options(&server, REPO, &cache);
    opts.offline = true;

    // Nothing cached: a typed error, and no request reached the server.
    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    let text = message(&error);
    assert!(
        matches!(&error, HubError::OfflineNotCached { tried, .. } if tried.len() == 3),
        "{error:?}"
    );
    assert!(
        text.contains("HF_HUB_OFFLINE") && text.contains("online"),
        "{text}"
    );
    assert!(server.seen().is_empty(), "{:?}", server.seen());

    // Once fetched online, offline mode finds it without any request.
    opts.offline = false;
    let dir = fetch_model_dir(Pretrained::Beta8, &opts).unwrap();
    server.clear_seen();
    opts.offline = true;
    assert_eq!(fetch_model_dir(Pretrained::Beta8, &opts).unwrap(), dir);
    let classifier =
        Classifier::<B>::pretrained_with(Pretrained::Beta8, &opts, &Default::default()).unwrap();
    assert_eq!(&class_log_likelihoods(&classifier), reference_outputs());
    assert!(server.seen().is_empty(), "{:?}", server.seen());

    // Another variant is not cached.
    let error = fetch_model_dir(Pretrained::Beta16, &opts).unwrap_err();
    assert!(
        matches!(error, HubError::OfflineNotCached { .. }),
        "{error:?}"
    );
    assert_cache_clean(&cache);
}

#[test]
fn missing_repository_is_repo_not_found() {
    let server = Server::start(vec![(REPO, converted_repo())]);
    let cache = scratch("no-repo");
    // The default repository has not been published: this is what users see today.
    let opts = options(&server, DEFAULT_REPO, &cache);
    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    let text = message(&error);
    assert!(
        matches!(&error, HubError::RepoNotFound { repo_id, .. } if repo_id == DEFAULT_REPO),
        "{error:?}"
    );
    assert!(text.contains("not been published"), "{text}");
    assert!(
        text.contains("TRUSTGC_HUB_REPO") && text.contains("from_dir"),
        "{text}"
    );
    assert_cache_clean(&cache);

    let opts = options(&server, "someone/else", &cache);
    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    assert!(matches!(error, HubError::RepoNotFound { .. }), "{error:?}");
    assert!(!message(&error).contains("not been published"));

    let mut opts = options(&server, "not-an-id", &cache);
    opts.repo_id = "not-an-id".into();
    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    assert!(matches!(error, HubError::InvalidRepoId { .. }), "{error:?}");
}

#[test]
fn repository_without_the_files_is_not_found() {
    let server = Server::start(vec![(REPO, HubRepo::default())]);
    let cache = scratch("no-files");
    let opts = options(&server, REPO, &cache);
    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    let text = message(&error);
    match &error {
        HubError::NotFound {
            repo_id,
            revision,
            tried,
        } => {
            assert_eq!(repo_id, REPO);
            assert_eq!(revision, "main");
            assert_eq!(
                tried,
                &[
                    "beta_8/config.json",
                    "beta_8/model.safetensors",
                    "beta_8.avg.pt"
                ]
            );
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(
        text.contains("beta_8.avg.pt") && text.contains("docs/hub.md"),
        "{text}"
    );
    assert_cache_clean(&cache);

    // A revision that does not exist.
    let mut opts = options(&server, REPO, &cache);
    opts.revision = "v9".into();
    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    let text = message(&error);
    assert!(
        matches!(&error, HubError::RevisionNotFound { revision, .. } if revision == "v9"),
        "{error:?}"
    );
    assert!(text.contains("TRUSTGC_HUB_REVISION"), "{text}");

    // An incomplete upload: config.json without the weights.
    server.set_file(
        REPO,
        "beta_8/config.json",
        HubFile::plain(&local_model().config),
    );
    let opts = options(&server, REPO, &cache);
    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    let text = message(&error);
    assert!(
        matches!(&error, HubError::FileNotFound { file, .. } if file == "beta_8/model.safetensors"),
        "{error:?}"
    );
    assert!(text.contains("incomplete"), "{text}");
    assert_cache_clean(&cache);
}

#[test]
fn unauthorized_says_to_set_hf_token() {
    let mut repo = converted_repo();
    repo.token = Some("hf_good".into());
    let server = Server::start(vec![(REPO, repo)]);
    let cache = scratch("unauthorized");
    let mut opts = options(&server, REPO, &cache);

    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    let text = message(&error);
    assert!(
        matches!(
            &error,
            HubError::Unauthorized {
                status: 401,
                token_given: false,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(text.contains("set HF_TOKEN"), "{text}");
    assert_cache_clean(&cache);

    opts.token = Some("hf_wrong".into());
    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    let text = message(&error);
    assert!(
        matches!(
            &error,
            HubError::Unauthorized {
                token_given: true,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        text.contains("refused") && !text.contains("hf_wrong"),
        "{text}"
    );

    opts.token = Some("hf_good".into());
    let dir = fetch_model_dir(Pretrained::Beta8, &opts).unwrap();
    assert!(dir.join("model.safetensors").is_file());
    assert_cache_clean(&cache);
}

#[test]
fn server_error_says_retry_later() {
    let mut repo = converted_repo();
    let weights = repo.files["beta_8/model.safetensors"].clone();
    repo.files.insert(
        "beta_8/model.safetensors".into(),
        weights.clone().with_fault(Fault::Status(500)),
    );
    let server = Server::start(vec![(REPO, repo)]);
    let cache = scratch("server-error");
    let opts = options(&server, REPO, &cache);

    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    let text = message(&error);
    assert!(
        matches!(&error, HubError::Server { status: 500, file, .. } if file == "beta_8/model.safetensors"),
        "{error:?}"
    );
    assert!(text.contains("retry later"), "{text}");
    assert_cache_clean(&cache);

    // Once the server recovers, the next call works.
    server.set_file(REPO, "beta_8/model.safetensors", weights);
    fetch_model_dir(Pretrained::Beta8, &opts).unwrap();
    assert_cache_clean(&cache);
}

#[test]
fn truncated_body_leaves_no_partial_file() {
    let mut repo = converted_repo();
    let weights = repo.files["beta_8/model.safetensors"].clone();
    repo.files.insert(
        "beta_8/model.safetensors".into(),
        weights.clone().with_fault(Fault::Truncate(1000)),
    );
    let server = Server::start(vec![(REPO, repo)]);
    let cache = scratch("truncated");
    let opts = options(&server, REPO, &cache);

    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    let text = message(&error);
    assert!(
        matches!(&error, HubError::Interrupted { file, .. } if file == "beta_8/model.safetensors"),
        "{error:?}"
    );
    assert!(text.contains("run again"), "{text}");
    assert_cache_clean(&cache);

    // A small file cut short the same way.
    server.set_file(
        REPO,
        "beta_8/config.json",
        HubFile::plain(&local_model().config).with_fault(Fault::Truncate(10)),
    );
    let cache2 = scratch("truncated-config");
    let error = fetch_model_dir(Pretrained::Beta8, &options(&server, REPO, &cache2)).unwrap_err();
    assert!(matches!(error, HubError::Interrupted { .. }), "{error:?}");
    assert_cache_clean(&cache2);

    // Served whole, the same cache fills.
    server.set_file(
        REPO,
        "beta_8/config.json",
        HubFile::plain(&local_model().config),
    );
    server.set_file(REPO, "beta_8/model.safetensors", weights);
    let dir = fetch_model_dir(Pretrained::Beta8, &opts).unwrap();
    assert!(dir.join("model.safetensors").is_file());
    assert_cache_clean(&cache);
}

#[test]
fn corrupt_files_are_removed_from_the_cache() {
    // The mock keeps one commit while files change under it, which the hub never does;
    // each case therefore gets a fresh cache.
    let model = local_model();
    let server = Server::start(vec![(REPO, converted_repo())]);

    // Weights that are not safetensors, served with a perfectly valid HTTP answer.
    let garbage = b"<html><body>Service temporarily unavailable</body></html>".repeat(50);
    server.set_file(REPO, "beta_8/model.safetensors", HubFile::lfs(&garbage));
    let cache = scratch("corrupt-weights");
    let opts = options(&server, REPO, &cache);
    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    let text = message(&error);
    match &error {
        HubError::CorruptDownload {
            file, path, source, ..
        } => {
            assert_eq!(file, "beta_8/model.safetensors");
            assert!(matches!(source, Corruption::Safetensors(_)), "{source:?}");
            assert!(
                !path.exists(),
                "corrupt file still cached: {}",
                path.display()
            );
        }
        other => panic!("expected CorruptDownload, got {other:?}"),
    }
    assert!(
        text.contains("removed from the cache") && text.contains("downloads it again"),
        "{text}"
    );
    assert_cache_clean(&cache);
    // Fixed on the server: the next call downloads the weights again and works.
    server.set_file(
        REPO,
        "beta_8/model.safetensors",
        HubFile::lfs(&model.weights),
    );
    let classifier =
        Classifier::<B>::pretrained_with(Pretrained::Beta8, &opts, &Default::default()).unwrap();
    assert_eq!(&class_log_likelihoods(&classifier), reference_outputs());
    assert_cache_clean(&cache);

    // A well-formed file whose data is cut short (the server itself holds a short file,
    // and announces its true length).
    let short = &model.weights[..model.weights.len() - 100];
    server.set_file(REPO, "beta_8/model.safetensors", HubFile::lfs(short));
    let cache = scratch("corrupt-short");
    let error = fetch_model_dir(Pretrained::Beta8, &options(&server, REPO, &cache)).unwrap_err();
    message(&error);
    assert!(
        matches!(
            &error,
            HubError::CorruptDownload {
                source: Corruption::Safetensors(e),
                ..
            } if matches!(**e, safetensors::SafeTensorError::MetadataIncompleteBuffer)
        ),
        "{error:?}"
    );
    assert_cache_clean(&cache);

    // A config.json that is not a config.
    server.set_file(
        REPO,
        "beta_8/model.safetensors",
        HubFile::lfs(&model.weights),
    );
    server.set_file(
        REPO,
        "beta_8/config.json",
        HubFile::plain(b"{\"hello\": 1}"),
    );
    let cache = scratch("corrupt-config");
    let opts = options(&server, REPO, &cache);
    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    message(&error);
    assert!(
        matches!(
            &error,
            HubError::CorruptDownload {
                source: Corruption::Config(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert_cache_clean(&cache);
    server.set_file(REPO, "beta_8/config.json", HubFile::plain(&model.config));
    fetch_model_dir(Pretrained::Beta8, &opts).unwrap();
    assert_cache_clean(&cache);
}

#[test]
fn original_checkpoints_are_converted_once() {
    // Layout (b): only the authors' file at the top of the repository. The golden mini
    // checkpoint is saved exactly as the released files were (zip, optimizer state,
    // activations); the options say its architecture.
    let checkpoint = std::fs::read(golden_dir().join("mini/mini.avg.pt")).unwrap();
    let mut repo = HubRepo::default();
    repo.files
        .insert("beta_8.avg.pt".into(), HubFile::lfs(&checkpoint));
    let mut server = Server::start(vec![(REPO, repo)]);
    let cache = scratch("original");
    let mut opts = options(&server, REPO, &cache);
    opts.architecture = GcConfig::mini();

    let converted = fetch_model_dir(Pretrained::Beta8, &opts).unwrap();
    assert!(
        converted.starts_with(cache.join("trustgc-converted")),
        "{}",
        converted.display()
    );
    for name in ["config.json", "model.safetensors", "README.md"] {
        assert!(
            converted.join(name).is_file(),
            "{name} missing in {}",
            converted.display()
        );
    }
    let seen = server.seen();
    assert!(
        seen.iter()
            .any(|s| s.method == "GET" && s.path.ends_with("/beta_8.avg.pt"))
    );
    // Converted from the .pt, the model gives exactly the local model's outputs.
    let classifier =
        Classifier::<B>::pretrained_with(Pretrained::Beta8, &opts, &Default::default()).unwrap();
    assert_eq!(&class_log_likelihoods(&classifier), reference_outputs());
    // Once: later calls reuse the folder, with the server gone and offline too.
    let modified = std::fs::metadata(converted.join("model.safetensors"))
        .unwrap()
        .modified()
        .unwrap();
    server.stop();
    assert_eq!(
        fetch_model_dir(Pretrained::Beta8, &opts).unwrap(),
        converted
    );
    let mut offline = opts.clone();
    offline.offline = true;
    assert_eq!(
        fetch_model_dir(Pretrained::Beta8, &offline).unwrap(),
        converted
    );
    assert_eq!(
        std::fs::metadata(converted.join("model.safetensors"))
            .unwrap()
            .modified()
            .unwrap(),
        modified
    );
    assert_cache_clean(&cache);
}

#[test]
fn a_broken_original_checkpoint_leaves_nothing_behind() {
    let checkpoint = [b"PK\x03\x04".as_slice(), &[7u8; 4096]].concat();
    let mut repo = HubRepo::default();
    repo.files
        .insert("beta_8.avg.pt".into(), HubFile::lfs(&checkpoint));
    let server = Server::start(vec![(REPO, repo)]);
    let cache = scratch("original-broken");
    let mut opts = options(&server, REPO, &cache);
    opts.architecture = GcConfig::mini();
    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    let text = message(&error);
    match &error {
        HubError::Conversion {
            source: ConvertError::Read { path, .. },
            ..
        } => {
            assert!(path.ends_with(format!("snapshots/{COMMIT}/beta_8.avg.pt")));
        }
        other => panic!("expected a conversion read error, got {other:?}"),
    }
    assert!(text.contains("beta_8.avg.pt"), "{text}");
    let converted = cache.join("trustgc-converted");
    let leftovers: Vec<_> = files_under(&converted)
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    assert!(
        leftovers.is_empty(),
        "a failed conversion left {leftovers:?}"
    );
    assert_cache_clean(&cache);
}

#[test]
fn a_checkpoint_that_is_not_one_is_removed() {
    let mut repo = HubRepo::default();
    repo.files.insert(
        "beta_8.avg.pt".into(),
        HubFile::lfs(b"<!DOCTYPE html><title>Expired link</title>"),
    );
    let server = Server::start(vec![(REPO, repo)]);
    let cache = scratch("not-a-checkpoint");
    let opts = options(&server, REPO, &cache);
    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    message(&error);
    assert!(
        matches!(
            &error,
            HubError::CorruptDownload {
                source: Corruption::NotACheckpoint { .. },
                ..
            }
        ),
        "{error:?}"
    );
    assert_cache_clean(&cache);
}

#[test]
fn unreachable_hub_is_a_network_error() {
    let mut server = Server::start(vec![(REPO, converted_repo())]);
    let cache = scratch("unreachable");
    let opts = options(&server, REPO, &cache);
    server.stop();
    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    let text = message(&error);
    assert!(matches!(error, HubError::Network { .. }), "{error:?}");
    assert!(
        text.contains("HF_ENDPOINT") && text.contains("HF_HUB_OFFLINE"),
        "{text}"
    );
    assert_cache_clean(&cache);
}

#[test]
fn a_download_in_progress_elsewhere_is_left_alone() {
    // Another process is downloading the weights: it holds hf-hub's lock on the blob and
    // writes `blobs/<etag>.incomplete`. hf-hub waits 10 s for the lock, then gives up.
    let model = local_model();
    let server = Server::start(vec![(REPO, converted_repo())]);
    let cache = scratch("locked");
    let opts = options(&server, REPO, &cache);
    let etag = etag_of(&model.weights);
    let repo_dir = cache.join("models--trustgc-test--mini");
    let partial = repo_dir.join("blobs").join(format!("{etag}.incomplete"));
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    std::fs::write(&partial, &model.weights[..1000]).unwrap();
    let lock_path = cache
        .join(".locks/models--trustgc-test--mini")
        .join(format!("{etag}.lock"));
    std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    let lock = std::fs::File::create(&lock_path).unwrap();
    lock.lock().unwrap();

    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    let text = message(&error);
    assert!(
        matches!(&error, HubError::Locked { path } if path == &lock_path),
        "{error:?}"
    );
    assert!(text.contains("another process"), "{text}");
    assert!(
        partial.exists(),
        "the other process's partial download was deleted"
    );

    // The other process is gone (without finishing): the next call downloads the file.
    drop(lock);
    let dir = fetch_model_dir(Pretrained::Beta8, &opts).unwrap();
    assert!(dir.join("model.safetensors").is_file());
    assert_cache_clean(&cache);
}

// ---------------------------------------------------------------------------------------
// A hostile hub: values that would lead paths out of the cache, and servers that stall.

/// A test folder holding `cache/` and `outside/`: what a hostile hub aims at.
fn cache_and_outside(name: &str) -> (PathBuf, PathBuf) {
    let root = scratch(name);
    let (cache, outside) = (root.join("cache"), root.join("outside"));
    std::fs::create_dir_all(&outside).unwrap();
    (cache, outside)
}

#[test]
fn an_lfs_file_whose_bytes_are_not_its_announced_sha256_is_not_cached() {
    let model = local_model();
    let mut repo = converted_repo();
    // The hub announces the SHA-256 of other bytes (a corrupted CDN copy or a tampered
    // mirror): the same size, one byte different.
    let mut other = model.weights.clone();
    let last = other.len() - 1;
    other[last] ^= 1;
    let announced = etag_of(&other);
    repo.files.insert(
        "beta_8/model.safetensors".into(),
        HubFile::lfs(&model.weights).with_etag(&announced),
    );
    let server = Server::start(vec![(REPO, repo)]);
    let cache = scratch("lfs-digest");
    let error = fetch_model_dir(Pretrained::Beta8, &options(&server, REPO, &cache)).unwrap_err();
    let text = message(&error);
    match &error {
        HubError::CorruptDownload {
            file,
            source: Corruption::Digest { expected, actual },
            ..
        } => {
            assert_eq!(file, "beta_8/model.safetensors");
            assert_eq!(expected.to_string(), announced);
            assert_eq!(actual.to_string(), etag_of(&model.weights));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(text.contains(&announced), "{text}");
    assert_cache_clean(&cache);
    assert!(
        files_under(&cache)
            .iter()
            .filter(|p| p.parent().is_some_and(|d| d.ends_with("blobs")))
            .all(|p| !p.to_string_lossy().contains(&announced)),
        "no blob under the announced digest"
    );
}

#[test]
fn an_etag_leading_out_of_the_cache_is_refused() {
    let (cache, outside) = cache_and_outside("hostile-etag");
    let victim = outside.join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    // From `<cache>/models--trustgc-test--mini/blobs/`, three levels up is the test
    // folder: hf-hub wrote `blobs/<etag>.incomplete` and renamed it onto `blobs/<etag>`.
    for (lfs, etag) in [
        (false, "../../../outside/victim.txt"),
        (true, "../../../outside/victim.txt"),
        (false, "..\\..\\..\\outside\\victim.txt"),
        (false, "0123456789abcdef0123456789abcdef0123456/"),
        (false, "0123456789ABCDEF0123456789ABCDEF01234567"),
        (false, "0123456789abcdef\u{0}"),
        (false, ""),
    ] {
        let mut repo = converted_repo();
        let config = HubFile::plain(&local_model().config).with_etag(etag);
        let config = if lfs {
            HubFile {
                lfs: true,
                ..config
            }
        } else {
            config
        };
        repo.files.insert("beta_8/config.json".into(), config);
        let server = Server::start(vec![(REPO, repo)]);
        let error =
            fetch_model_dir(Pretrained::Beta8, &options(&server, REPO, &cache)).expect_err(etag);
        let text = message(&error);
        match &error {
            HubError::UnsafeServerValue {
                what, value, file, ..
            } => {
                assert!(what.contains("ETag"), "{what}");
                assert_eq!(value, etag);
                assert_eq!(file, "beta_8/config.json");
                assert!(
                    text.contains("refused before any file was written"),
                    "{text}"
                );
            }
            // A NUL in a header is refused by the HTTP client itself.
            _ if etag.contains('\u{0}') => {}
            other => panic!("{etag:?}: expected UnsafeServerValue, got {other:?}"),
        }
        // Refused on the HEAD: no body was asked for.
        assert!(
            server.seen().iter().all(|s| s.method == "HEAD"),
            "{:?}",
            server.seen()
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(files_under(&outside), vec![victim.clone()]);
        assert_cache_clean(&cache);
    }
}

#[test]
fn a_commit_id_leading_out_of_the_cache_is_refused() {
    let (cache, outside) = cache_and_outside("hostile-commit");
    // From `<cache>/models--trustgc-test--mini/snapshots/`, three levels up is the test
    // folder: hf-hub created `snapshots/<commit>/beta_8/` and `refs/main` from it.
    for commit in [
        "../../../outside/planted",
        "../../../outside/0123456789abcdef0123456789abcdef01234567",
        "0123456789abcdef0123456789abcdef0123456",
        "0123456789abcdef0123456789abcdef012345678",
        "/tmp",
    ] {
        let mut repo = converted_repo();
        repo.files.insert(
            "beta_8/config.json".into(),
            HubFile::plain(&local_model().config).with_commit(commit),
        );
        let server = Server::start(vec![(REPO, repo)]);
        let error =
            fetch_model_dir(Pretrained::Beta8, &options(&server, REPO, &cache)).expect_err(commit);
        message(&error);
        assert!(
            matches!(
                &error,
                HubError::UnsafeServerValue { what, value, .. }
                    if what.contains("X-Repo-Commit") && value == commit
            ),
            "{commit}: {error:?}"
        );
        assert!(
            files_under(&outside).is_empty(),
            "{:?}",
            files_under(&outside)
        );
        assert!(!cache.join("models--trustgc-test--mini/snapshots").exists());
        assert!(!cache.join("models--trustgc-test--mini/refs").exists());
        assert_cache_clean(&cache);
    }

    // The same for the optional ood.json: in the 404 saying it is missing (hf-hub wrote
    // `.no_exist/<commit>/<file>`), and in the answer of one that is there.
    for (case, missing) in [("cache-404", true), ("cache-200", false)] {
        let mut repo = converted_repo();
        if missing {
            repo.not_found_commit = Some("../../../outside/no".into());
        } else {
            repo.files.insert(
                "beta_8/ood.json".into(),
                HubFile::plain(b"{}").with_commit("../../../outside/ood"),
            );
        }
        let server = Server::start(vec![(REPO, repo)]);
        let cache = cache.with_file_name(case);
        let error =
            fetch_model_dir(Pretrained::Beta8, &options(&server, REPO, &cache)).unwrap_err();
        message(&error);
        assert!(
            matches!(&error, HubError::UnsafeServerValue { file, .. } if file == "beta_8/ood.json"),
            "{case}: {error:?}"
        );
        let planted = files_under(&outside);
        assert!(planted.is_empty(), "{case}: {planted:?}");
        assert_cache_clean(&cache);
    }
}

#[test]
fn a_revision_leading_out_of_the_cache_is_refused() {
    let server = Server::start(vec![(REPO, converted_repo())]);
    let (cache, outside) = cache_and_outside("hostile-revision");
    // Fill the cache, then plant what hf-hub would read for the revision
    // `../../../outside/ref` (from `refs/`, three levels up is the test folder): a ref
    // naming the cached commit. hf-hub loaded the model through it, offline.
    fetch_model_dir(Pretrained::Beta8, &options(&server, REPO, &cache)).unwrap();
    std::fs::write(outside.join("ref"), COMMIT).unwrap();
    let before = files_under(&cache);
    server.clear_seen();
    for offline in [true, false] {
        for revision in [
            "../../../outside/ref",
            "../../../../somewhere",
            "/etc/passwd",
            "refs/../../x",
            "a/./b",
            "a\\..\\b",
            "main\n",
            "ma\u{0}in",
            "main\u{7f}",
            "a b",
            "a:b",
            "a//b",
            "a/",
            ".hidden",
            "x.lock",
            "@",
            "main@{1}",
            "main~1",
            "main^",
            "ends.",
            "",
        ] {
            let mut opts = options(&server, REPO, &cache);
            opts.offline = offline;
            opts.revision = revision.to_string();
            let error = fetch_model_dir(Pretrained::Beta8, &opts).expect_err(revision);
            let text = message(&error);
            assert!(
                matches!(&error, HubError::InvalidRevision { revision: r, .. } if r == revision),
                "{revision:?}: {error:?}"
            );
            assert!(text.contains("TRUSTGC_HUB_REVISION"), "{text}");
        }
    }
    let long = "a".repeat(300);
    let mut opts = options(&server, REPO, &cache);
    opts.revision = long;
    assert!(matches!(
        fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err(),
        HubError::InvalidRevision { .. }
    ));
    assert!(server.seen().is_empty(), "{:?}", server.seen());
    assert_eq!(files_under(&cache), before);
    assert_eq!(files_under(&outside), vec![outside.join("ref")]);

    // Valid revisions still work: a commit id, online and offline ...
    let mut opts = options(&server, REPO, &cache);
    opts.revision = COMMIT.to_string();
    let dir = fetch_model_dir(Pretrained::Beta8, &opts).unwrap();
    assert!(dir.starts_with(cache.join(format!("models--trustgc-test--mini/snapshots/{COMMIT}"))));
    opts.offline = true;
    assert_eq!(fetch_model_dir(Pretrained::Beta8, &opts).unwrap(), dir);
    // ... and names git allows (not in this cache: offline, they are simply not cached).
    for revision in [
        "v1.0",
        "refs/pr/1",
        "release-2024_01",
        "feature/x.y",
        "ümlaut",
    ] {
        opts.revision = revision.to_string();
        let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
        assert!(
            matches!(error, HubError::OfflineNotCached { .. }),
            "{revision}: {error:?}"
        );
    }
    assert_cache_clean(&cache);

    // Repository ids are checked the same way.
    for repo_id in [
        "owner/..", "../x", "a\\b/c", "a/b/c", "own er/x", "a/-x", "a--b/c",
    ] {
        let mut opts = options(&server, REPO, &cache);
        opts.repo_id = repo_id.to_string();
        let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
        assert!(
            matches!(error, HubError::InvalidRepoId { .. }),
            "{repo_id}: {error:?}"
        );
    }
}

#[test]
fn a_planted_link_in_the_cache_is_not_followed() {
    let server = Server::start(vec![(REPO, converted_repo())]);
    let (cache, outside) = cache_and_outside("planted-link");
    let dir = fetch_model_dir(Pretrained::Beta8, &options(&server, REPO, &cache)).unwrap();
    // Someone (an old hf-hub talking to a hostile hub) left a snapshot link pointing out
    // of the cache and a refs file naming no commit.
    let secret = outside.join("secret.json");
    std::fs::write(&secret, local_model().config.clone()).unwrap();
    let link = dir.join("config.json");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let mut opts = options(&server, REPO, &cache);
    opts.offline = true;
    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    message(&error);
    assert!(
        matches!(&error, HubError::UnsafeServerValue { what, .. } if what.contains("link")),
        "{error:?}"
    );
    // Online, the link is replaced by a good one.
    let dir = fetch_model_dir(Pretrained::Beta8, &options(&server, REPO, &cache)).unwrap();
    assert!(
        std::fs::read_link(dir.join("config.json"))
            .unwrap()
            .is_relative()
    );
    assert_eq!(std::fs::read(&secret).unwrap(), local_model().config);
    assert_cache_clean(&cache);

    std::fs::write(
        cache.join("models--trustgc-test--mini/refs/main"),
        "../../x",
    )
    .unwrap();
    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    message(&error);
    assert!(
        matches!(&error, HubError::UnsafeServerValue { value, .. } if value == "../../x"),
        "{error:?}"
    );
}

/// Options with 1 s timeouts.
fn impatient(mut opts: HubOptions) -> HubOptions {
    opts.connect_timeout = Duration::from_secs(1);
    opts.read_timeout = Duration::from_secs(1);
    opts
}

/// Fetches with `opts` (1 s timeouts, no retries): a read timeout on `file`, within a few
/// seconds. Returns the message.
fn times_out(opts: &HubOptions, file: &str) -> String {
    let start = std::time::Instant::now();
    let error = fetch_model_dir(Pretrained::Beta8, opts).unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        matches!(
            &error,
            HubError::Timeout { phase: TimeoutPhase::Read, after, file: f, .. }
                if *after == Duration::from_secs(1) && f == file
        ),
        "{error:?}"
    );
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    message(&error)
}

#[test]
fn a_silent_hub_times_out() {
    // A listener that never accepts: the kernel completes the connection, nobody answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = Server::start(vec![(REPO, converted_repo())]);
    let cache = scratch("silent");
    let mut opts = impatient(options(&server, REPO, &cache));
    opts.endpoint = format!("http://{}", silent.local_addr().unwrap());
    let text = times_out(&opts, "beta_8/config.json");
    assert!(
        text.contains("TRUSTGC_HUB_READ_TIMEOUT") && text.contains("HF_HUB_OFFLINE"),
        "{text}"
    );
    assert_cache_clean(&cache);

    // With retries, each attempt times out; still bounded.
    opts.max_retries = 2;
    let start = std::time::Instant::now();
    let error = fetch_model_dir(Pretrained::Beta8, &opts).unwrap_err();
    assert!(matches!(error, HubError::Timeout { .. }), "{error:?}");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );

    // A model fetched once keeps loading from the cache when the hub falls silent.
    let good = options(&server, REPO, &cache);
    let dir = fetch_model_dir(Pretrained::Beta8, &good).unwrap();
    opts.max_retries = 0;
    assert_eq!(fetch_model_dir(Pretrained::Beta8, &opts).unwrap(), dir);
    assert_cache_clean(&cache);
    drop(silent);
}

/// A server whose weights have `fault`, its cache folder `name`, options with 1 s
/// timeouts, and the weights served whole.
fn faulty_weights(fault: Fault, name: &str) -> (Server, PathBuf, HubOptions, HubFile) {
    let weights = converted_repo().files["beta_8/model.safetensors"].clone();
    let server = Server::start(vec![(REPO, converted_repo())]);
    server.set_file(
        REPO,
        "beta_8/model.safetensors",
        weights.clone().with_fault(fault),
    );
    let cache = scratch(name);
    let opts = impatient(options(&server, REPO, &cache));
    (server, cache, opts, weights)
}

#[test]
fn a_hub_stalling_mid_body_times_out_and_leaves_no_partial_file() {
    let (server, cache, opts, weights) = faulty_weights(Fault::Stall(1000), "stall");
    let text = times_out(&opts, "beta_8/model.safetensors");
    assert!(text.contains("nothing was cached"), "{text}");
    assert_cache_clean(&cache);

    // A small file stalling the same way, in a fresh cache.
    let config = HubFile::plain(&local_model().config);
    server.set_file(
        REPO,
        "beta_8/config.json",
        config.clone().with_fault(Fault::Stall(10)),
    );
    let fresh = impatient(options(&server, REPO, &scratch("stall-config")));
    let error = fetch_model_dir(Pretrained::Beta8, &fresh).unwrap_err();
    assert!(matches!(error, HubError::Timeout { .. }), "{error:?}");
    assert_cache_clean(&fresh.cache_dir);

    // A partial file of a killed download (no lock held) is removed by the next run.
    let stale = cache
        .join("models--trustgc-test--mini/blobs")
        .join(format!("{}.incomplete", "a".repeat(64)));
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(&stale, b"half").unwrap();
    server.set_file(REPO, "beta_8/config.json", config);
    server.set_file(REPO, "beta_8/model.safetensors", weights);
    let dir = fetch_model_dir(Pretrained::Beta8, &opts).unwrap();
    assert!(dir.join("model.safetensors").is_file());
    assert!(!stale.exists());
    assert_cache_clean(&cache);
}

#[test]
fn timeouts_have_documented_defaults() {
    let opts = HubOptions::from_env();
    if std::env::var_os("TRUSTGC_HUB_CONNECT_TIMEOUT").is_none() {
        assert_eq!(opts.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    }
    if std::env::var_os("TRUSTGC_HUB_READ_TIMEOUT").is_none() {
        assert_eq!(opts.read_timeout, DEFAULT_READ_TIMEOUT);
    }
    assert_eq!(DEFAULT_CONNECT_TIMEOUT, Duration::from_secs(30));
    assert_eq!(DEFAULT_READ_TIMEOUT, Duration::from_secs(60));
    let text = format!("{opts:?}");
    assert!(text.contains("read_timeout"), "{text}");
}
