//! `ddim-edit serve --model toy`, driven over HTTP: every route of the OpenAPI file, the result
//! equal to `ddim-edit edit`'s PNG byte for byte, the kept inversion (UNet calls saved), progress
//! events, cancelling, every limit and bad request as a JSON 4xx, a graceful stop, and a load of
//! 4 clients × 5 jobs (`serve_load.rs`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{TOY_EDIT, TOY_PROMPT, fixtures, run, stderr};

/// A running server; stopped with SIGINT when dropped.
pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    pub fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ddim-edit"))
            .args([
                "serve", "-q", "--model", "toy", "--port", "0", "--steps", "10",
            ])
            .env(
                "XDG_DATA_HOME",
                std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("data"),
            )
            .env("HF_HUB_OFFLINE", "1")
            .stdout(Stdio::piped())
            .spawn()
            .expect("starts");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let url = line.trim().trim_end_matches('/').to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{line:?}");
        Self { child, url }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGINT and waits for the exit (at most `limit`).
    pub fn interrupt(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-INT", &self.pid().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent()
    }

    /// GET → (status, body bytes).
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let mut r = Self::agent()
            .get(format!("{}{path}", self.url))
            .call()
            .unwrap();
        let bytes = r
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap();
        (r.status().as_u16(), bytes)
    }

    pub fn get_json(&self, path: &str) -> (u16, Value) {
        let (code, body) = self.get(path);
        (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// POST `body` with `content_type` → (status, JSON body).
    pub fn post(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        let mut r = Self::agent()
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .send(body)
            .unwrap();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (
            r.status().as_u16(),
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    pub fn upload(&self, bytes: &[u8]) -> (u16, Value) {
        self.post("/api/images?name=in.png", "image/png", bytes)
    }

    pub fn submit(&self, job: &Value) -> (u16, Value) {
        self.post("/api/jobs", "application/json", job.to_string().as_bytes())
    }

    /// Follows a job's event stream to its end: every status it gave.
    pub fn follow(&self, id: &str) -> Vec<Value> {
        let r = Self::agent()
            .get(format!("{}/api/jobs/{id}/events", self.url))
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let reader = BufReader::new(r.into_body().into_reader());
        let mut seen = vec![];
        for line in reader.lines() {
            let line = line.unwrap();
            if let Some(data) = line.strip_prefix("data:") {
                seen.push(serde_json::from_str::<Value>(data.trim()).unwrap());
            }
        }
        seen
    }

    /// Polls a job until `done` says so (at most 120 s).
    pub fn wait(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let (code, st) = self.get_json(&format!("/api/jobs/{id}"));
            assert_eq!(code, 200, "{st}");
            if done(&st) {
                return st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "job {id} stuck: {st}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.interrupt(Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn toy_photo() -> Vec<u8> {
    std::fs::read(fixtures().join("images/toy.png")).unwrap()
}

/// A toy edit of photo `image` with 10 steps from `start`.
pub fn toy_job(image: &str, edit: &str, start: usize) -> Value {
    json!({"image": image, "prompt": TOY_PROMPT, "edit_prompt": edit, "steps": 10, "start_step": start})
}

/// `ddim-edit edit` with the toy model and the same settings: the PNG's bytes.
pub fn cli_edit(edit: &str, start: usize) -> Vec<u8> {
    cli_edit_with(edit, start, &[])
}

/// [`cli_edit`] with further flags of `edit`.
pub fn cli_edit_with(edit: &str, start: usize, flags: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (image, out) = (
        fixtures().join("images/toy.png"),
        dir.path().join("out.png"),
    );
    let start = start.to_string();
    let mut args = vec![
        "edit",
        "-q",
        "--model",
        "toy",
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        TOY_PROMPT,
        "--edit-prompt",
        edit,
        "--steps",
        "10",
        "--start-step",
        &start,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::read(out).unwrap()
}

fn uint(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

#[test]
fn edits_equal_the_cli_and_reuse_the_photos_inversion() {
    let server = Server::start();
    let (code, up) = server.upload(&toy_photo());
    assert_eq!(code, 201, "{up}");
    let image = up["id"].as_str().unwrap().to_string();
    let (code, again) = server.upload(&toy_photo());
    assert_eq!(
        (code, &again["id"]),
        (201, &up["id"]),
        "the same bytes are the same photo"
    );

    // First edit: a fresh inversion of 10 − 3 steps, then 7 sampling steps.
    let (code, st) = server.submit(&toy_job(&image, TOY_EDIT, 3));
    assert_eq!(code, 202, "{st}");
    let id = st["id"].as_str().unwrap().to_string();
    let events = server.follow(&id);
    let last = events.last().unwrap();
    assert_eq!(last["state"], "done", "{last}");
    let phases: Vec<&str> = events.iter().filter_map(|e| e["phase"].as_str()).collect();
    for phase in ["encode", "inversion", "sampling", "decode"] {
        assert!(phases.contains(&phase), "{phase} in {phases:?}");
    }
    let fractions: Vec<f64> = events
        .iter()
        .map(|e| e["fraction"].as_f64().unwrap())
        .collect();
    assert!(
        fractions.windows(2).all(|w| w[0] <= w[1]),
        "progress only moves forward: {fractions:?}"
    );
    assert!(events.len() > 10, "an event per step: {}", events.len());
    assert!(uint(last, "preview") > 0, "a preview was made");
    assert_eq!(
        (last["inversion_reused"].as_bool(), uint(last, "unet_calls")),
        (Some(false), 14)
    );
    let (code, png) = server.get(&format!("/api/jobs/{id}/result.png"));
    assert_eq!(code, 200);
    assert_eq!(
        png,
        cli_edit(TOY_EDIT, 3),
        "the page's PNG is the CLI's, byte for byte"
    );
    let command = last["command"].as_str().unwrap();
    assert!(
        command
            .starts_with("ddim-edit edit --model toy --image in.png --prompt 'an orange triangle"),
        "{command}"
    );
    assert!(
        command.contains(
            "--steps 10 --start-step 3 --guidance 3.5 --inversion-guidance 1 --inversion direct --attention p2p --cross-replace 0.8 --self-replace 0.4 --out edited.png"
        ),
        "{command}"
    );
    let (code, _) = server.get(&format!("/api/jobs/{id}/preview.png"));
    assert_eq!(code, 200);
    later_edits_reuse_the_inversion(&server, &image);
}

fn later_edits_reuse_the_inversion(server: &Server, image: &str) {
    // Second edit of the same photo and prompt: the kept inversion, 7 sampling calls only.
    let other = "a green triangle on a textured background";
    let (_, st) = server.submit(&toy_job(image, other, 3));
    let second = server.wait(st["id"].as_str().unwrap(), |s| {
        s["state"] != "queued" && s["state"] != "running"
    });
    assert_eq!(second["state"], "done", "{second}");
    assert_eq!(second["inversion_reused"], true);
    assert_eq!(
        (
            uint(&second, "unet_calls"),
            uint(&second, "unet_calls_saved")
        ),
        (7, 7)
    );
    // From step 1 the kept 7 entries are continued by 2: 2 + 9 calls, 7 saved, same PNG as the CLI.
    let (_, st) = server.submit(&toy_job(image, other, 1));
    let id = st["id"].as_str().unwrap().to_string();
    let third = server.wait(&id, |s| s["state"] == "done" || s["state"] == "failed");
    assert_eq!(
        (uint(&third, "unet_calls"), uint(&third, "unet_calls_saved")),
        (11, 7),
        "{third}"
    );
    let (_, png) = server.get(&format!("/api/jobs/{id}/result.png"));
    assert_eq!(png, cli_edit(other, 1));
}

#[test]
fn every_route_of_the_openapi_file_is_served() {
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/web/openapi.json")).unwrap(),
    )
    .unwrap();
    let server = Server::start();
    let (code, served) = server.get_json("/api/openapi.json");
    assert_eq!(
        (code, &served),
        (200, &spec),
        "the server gives the file in the repository"
    );
    let mut routes = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            routes += 1;
            let url = path.replace("{id}", "0123456789abcdef");
            let code = match method.as_str() {
                "get" => server.get(&url).0,
                "post" => server.post(&url, "application/json", b"{}").0,
                m => panic!("{m} {path}"),
            };
            // An unknown id gives 404 with a JSON error naming it; an unknown route the same code
            // with "no such route", so look at the body.
            let (_, body) = match method.as_str() {
                "get" => server.get_json(&url),
                _ => server.post(&url, "application/json", b"{}"),
            };
            let text = body["error"].as_str().unwrap_or("");
            assert!(
                code != 405 && !text.contains("no such route"),
                "{method} {path}: {code} {body}"
            );
        }
    }
    assert_eq!(routes, 14, "routes in the OpenAPI file");
    let (code, body) = server.get_json("/api/nothing");
    assert_eq!((code, body["error"].as_str()), (404, Some("no such route")));
    let (code, info) = server.get_json("/api/info");
    assert_eq!(code, 200);
    assert_eq!(
        (info["model"].as_str(), info["width"].as_u64()),
        (Some("toy"), Some(64))
    );
    assert_eq!(
        info["defaults"]["steps"], 10,
        "--steps sets the page's default"
    );
}

/// Runs a job's `command` as a shell would, with the photo's and the output's real paths: the PNG.
fn run_command(command: &str, photo: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (image, out) = (dir.path().join("in.png"), dir.path().join("out.png"));
    std::fs::write(&image, photo).unwrap();
    let line = command
        .replacen(
            "ddim-edit ",
            &format!("'{}' ", env!("CARGO_BIN_EXE_ddim-edit")),
            1,
        )
        .replace("--image in.png", &format!("--image '{}'", image.display()))
        .replace("--out edited.png", &format!("--out '{}' -q", out.display()));
    let o = Command::new("sh")
        .args(["-c", &line])
        .env("HF_HUB_OFFLINE", "1")
        .env(
            "XDG_DATA_HOME",
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("data"),
        )
        .output()
        .unwrap();
    assert!(o.status.success(), "{line}: {}", stderr(&o));
    std::fs::read(out).unwrap()
}

/// A Prompt-to-Prompt edit with every option, from a photo fetched by URL (the server's own
/// image route): its `command`, run by a shell, writes the same PNG.
#[test]
fn a_prompt_to_prompt_edits_command_gives_the_same_png() {
    let server = Server::start();
    let (_, up) = server.upload(&toy_photo());
    let url = format!("{}{}", server.url, up["url"].as_str().unwrap());
    let body = json!({ "url": url }).to_string();
    let (code, fetched) = server.post("/api/images/from-url", "application/json", body.as_bytes());
    assert_eq!(code, 201, "{fetched}");
    let (_, photo) = server.get(up["url"].as_str().unwrap());
    let image = fetched["id"].as_str().unwrap().to_string();
    let mut job = toy_job(&image, "a blue triangle on a textured background", 3);
    for (k, v) in [
        ("attention", json!("p2p")),
        ("inversion", json!("direct")),
        ("cross_replace", json!(0.6)),
        ("self_replace", json!(0.2)),
        ("reweight", json!([{"word": "blue", "factor": 1.5}])),
        ("blend_words", json!(["triangle"])),
        ("negative_prompt", json!("it's blurry")),
    ] {
        job[k] = v;
    }
    let (code, st) = server.submit(&job);
    assert_eq!(code, 202, "{st}");
    let id = st["id"].as_str().unwrap().to_string();
    let done = server.wait(&id, |s| s["state"] == "done" || s["state"] == "failed");
    assert_eq!(done["state"], "done", "{done}");
    let command = done["command"]
        .as_str()
        .unwrap()
        .replace(&format!("--image {}", fetched_name(&url)), "--image in.png");
    assert!(
        command.contains("--negative-prompt 'it'\\''s blurry'"),
        "{command}"
    );
    let (_, png) = server.get(&format!("/api/jobs/{id}/result.png"));
    assert_eq!(png, run_command(&command, &photo), "{command}");
}

/// The name a photo fetched from `url` goes by: the last part of its path.
fn fetched_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}
