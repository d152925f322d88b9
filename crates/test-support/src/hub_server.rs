//! A stand-in for the Hugging Face hub on 127.0.0.1, serving one repository (a fixture folder)
//! at one commit, with the requests and headers `hf-hub` and the fetch engine (`ddim-edit fetch`,
//! `cargo xtask fetch`) use:
//!
//! - `GET /api/models/{org}/{name}/revision/{rev}` → `{"id", "sha", "siblings": [{"rfilename"}]}`
//!   (404 with `X-Error-Code: RevisionNotFound` for an unknown revision);
//! - `HEAD`/`GET /{org}/{name}/resolve/{rev}/{path}` → `X-Repo-Commit`, `Content-Length`,
//!   `Accept-Ranges: bytes` and the git blob SHA-1 as `ETag` for regular files; for `*.safetensors` (LFS on
//!   the real hub) a `302` to `/cdn/{path}` carrying `X-Linked-Etag`/`ETag` = the SHA-256 and
//!   `X-Linked-Size`, as the hub redirects to its CDN; unknown files → 404 `EntryNotFound`;
//! - `HEAD`/`GET /cdn/{path}` → the bytes, with a CDN `ETag` and no hub headers;
//! - `Range: bytes=a-[b]` → 206 with `Content-Range`.
//!
//! Faults, each for one file: `cut` (the first GET sends the headers and half the bytes, then
//! closes the connection), `corrupt` (the bytes differ from the advertised hash), `missing`
//! (listed in `siblings` but 404 on `resolve`), `commit` (another commit answered for every
//! revision, as a hostile mirror might). The server answers one request per connection
//! (`Connection: close`), stops when dropped, and in any case after 120 s or 2000 connections.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

mod snapshot;

pub use snapshot::{assert_snapshot, repo_dir};

pub const REPO: &str = "test-org/tiny-sd1";
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Faults to inject, by repository path.
#[derive(Default, Clone)]
pub struct Faults {
    pub cut: Option<String>,
    pub corrupt: Option<String>,
    pub missing: Option<String>,
    /// The commit the revision API answers instead of [`COMMIT`] (a hostile hub or mirror).
    pub commit: Option<String>,
}

struct State {
    endpoint: String,
    files: BTreeMap<String, Vec<u8>>,
    faults: Faults,
    cut_done: bool,
    log: Vec<String>,
    authorizations: Vec<String>,
}

pub struct HubServer {
    pub endpoint: String,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
    thread: Option<JoinHandle<()>>,
}

/// The git blob id the hub gives a non-LFS file as its ETag: SHA-1 of `blob {len}\0` + bytes.
pub fn git_sha1_hex(bytes: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    sha1::Digest::update(&mut h, format!("blob {}\0", bytes.len()).as_bytes());
    sha1::Digest::update(&mut h, bytes);
    sha1::Digest::finalize(h)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file under `root`, by repository path.
pub fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

impl HubServer {
    pub fn start(files: BTreeMap<String, Vec<u8>>, faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State {
            endpoint: endpoint.clone(),
            files,
            faults,
            cut_done: false,
            log: Vec::new(),
            authorizations: Vec::new(),
        }));
        let (stop2, state2) = (stop.clone(), state.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut served = 0;
            while !stop2.load(Ordering::SeqCst)
                && started.elapsed() < Duration::from_secs(120)
                && served < 2000
            {
                match listener.accept() {
                    Ok((stream, _)) => {
                        served += 1;
                        let state = state2.clone();
                        std::thread::spawn(move || {
                            let _ = handle(stream, &state);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            endpoint,
            stop,
            state,
            thread: Some(thread),
        }
    }

    /// The `Authorization` headers received.
    pub fn authorizations(&self) -> Vec<String> {
        self.state.lock().unwrap().authorizations.clone()
    }

    /// `METHOD path [range]` of every request so far.
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// The parts of a request the stand-in reads.
struct Request {
    method: String,
    path: String,
    range: Option<String>,
    authorization: Option<String>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let (mut range, mut authorization) = (None, None);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            } else if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    Ok(Request {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or("").to_string(),
        range,
        authorization,
    })
}

/// Headers and body of a JSON answer.
fn json(body: String) -> (Vec<(&'static str, String)>, Vec<u8>) {
    (
        vec![
            ("Content-Type", "application/json".to_string()),
            ("Content-Length", body.len().to_string()),
        ],
        body.into_bytes(),
    )
}

/// `GET /api/models/{REPO}/revision/{rev}`: the commit and file list.
fn revision_info(stream: &mut TcpStream, st: &State, rev: &str) -> std::io::Result<()> {
    if rev != "main" && rev != COMMIT {
        let (mut h, body) = json(r#"{"error":"Invalid rev id"}"#.into());
        h.push(("X-Error-Code", "RevisionNotFound".into()));
        return respond(stream, "404 Not Found", &h, &body);
    }
    let siblings: Vec<String> = st
        .files
        .keys()
        .map(|f| format!(r#"{{"rfilename":"{f}"}}"#))
        .collect();
    let commit = st.faults.commit.as_deref().unwrap_or(COMMIT);
    let (h, body) = json(format!(
        r#"{{"id":"{REPO}","sha":"{commit}","siblings":[{}]}}"#,
        siblings.join(",")
    ));
    respond(stream, "200 OK", &h, &body)
}

fn handle(mut stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let request = read_request(&stream)?;
    let (method, path, range) = (
        request.method.as_str(),
        request.path.as_str(),
        request.range,
    );
    let mut st = state.lock().unwrap();
    st.authorizations.extend(request.authorization);
    st.log.push(
        format!("{method} {path} {}", range.as_deref().unwrap_or(""))
            .trim_end()
            .to_string(),
    );
    if let Some(rev) = path.strip_prefix(&format!("/api/models/{REPO}/revision/")) {
        return revision_info(&mut stream, &st, rev);
    }
    if let Some(file) = path.strip_prefix("/cdn/") {
        // The CDN: plain bytes, its own ETag, no hub headers.
        let Some(content) = st.files.get(file).cloned() else {
            return respond(
                &mut stream,
                "404 Not Found",
                &[("Content-Length", "0".into())],
                &[],
            );
        };
        let headers = vec![
            ("ETag", "\"cdn-object\"".to_string()),
            ("Accept-Ranges", "bytes".into()),
        ];
        return serve_bytes(stream, st, method, file, range, content, headers);
    }
    let Some(rest) = path.strip_prefix(&format!("/{REPO}/resolve/")) else {
        let (h, body) = json(r#"{"error":"Repository not found"}"#.into());
        return respond(&mut stream, "404 Not Found", &h, &body);
    };
    let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
    let missing = st.faults.missing.as_deref() == Some(file);
    let content = st.files.get(file).cloned();
    let (Some(content), true, false) = (content, rev == "main" || rev == COMMIT, missing) else {
        let (mut h, body) = json(r#"{"error":"Entry not found"}"#.into());
        h.push(("X-Error-Code", "EntryNotFound".into()));
        h.push(("X-Repo-Commit", COMMIT.into()));
        return respond(&mut stream, "404 Not Found", &h, &body);
    };
    let sha = sha256_hex(&content);
    if file.ends_with(".safetensors") {
        // LFS: the hub answers with its metadata and redirects to the CDN.
        let headers = [
            ("X-Repo-Commit", COMMIT.to_string()),
            ("X-Linked-Etag", format!("\"{sha}\"")),
            ("X-Linked-Size", content.len().to_string()),
            ("ETag", format!("\"{sha}\"")),
            ("Location", format!("{}/cdn/{file}", st.endpoint)),
            ("Content-Length", "0".into()),
        ];
        return respond(&mut stream, "302 Found", &headers, &[]);
    }
    let headers = vec![
        ("X-Repo-Commit", COMMIT.to_string()),
        ("ETag", format!("\"{}\"", git_sha1_hex(&content))),
        ("Accept-Ranges", "bytes".into()),
    ];
    serve_bytes(stream, st, method, file, range, content, headers)
}

/// The bytes of `file` (all, or the asked range), with the `cut` and `corrupt` faults.
fn serve_bytes(
    mut stream: TcpStream,
    mut st: std::sync::MutexGuard<'_, State>,
    method: &str,
    file: &str,
    range: Option<String>,
    mut body: Vec<u8>,
    mut headers: Vec<(&str, String)>,
) -> std::io::Result<()> {
    if st.faults.corrupt.as_deref() == Some(file) {
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
    }
    if method == "HEAD" {
        headers.push(("Content-Length", body.len().to_string()));
        return respond(&mut stream, "200 OK", &headers, &[]);
    }
    let cut = range.is_none() && !st.cut_done && st.faults.cut.as_deref() == Some(file);
    st.cut_done |= cut;
    drop(st);
    if let Some(spec) = range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
        let start: usize = a.parse().unwrap_or(0);
        let end = b
            .parse()
            .map(|e: usize| e + 1)
            .unwrap_or(body.len())
            .min(body.len());
        if start >= end {
            return respond(
                &mut stream,
                "416 Range Not Satisfiable",
                &[("Content-Length", "0".into())],
                &[],
            );
        }
        headers.push((
            "Content-Range",
            format!("bytes {start}-{}/{}", end - 1, body.len()),
        ));
        headers.push(("Content-Length", (end - start).to_string()));
        return respond(
            &mut stream,
            "206 Partial Content",
            &headers,
            &body[start..end],
        );
    }
    headers.push(("Content-Length", body.len().to_string()));
    if cut {
        // The headers promise the whole file; the connection closes after half of it.
        respond(&mut stream, "200 OK", &headers, &body[..body.len() / 2])?;
        return stream.shutdown(std::net::Shutdown::Both);
    }
    respond(&mut stream, "200 OK", &headers, &body)
}
