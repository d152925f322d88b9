//! `ddim-edit serve`: every bad request is a JSON 4xx that says what is wrong, every limit holds
//! at its edge, cancelling stops a running and a queued job, and Ctrl-C stops the server cleanly.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use super::serve::{Server, toy_job, toy_photo};

/// 16 MiB: `MAX_UPLOAD_BYTES`.
const MAX_UPLOAD: usize = 16 << 20;
/// `MAX_QUEUE`.
const MAX_QUEUE: usize = 32;

fn error(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("a JSON error: {v}"))
}

/// A PNG of `w`×`h` black pixels (compresses to almost nothing).
fn black_png(w: u32, h: u32) -> Vec<u8> {
    let img = image::GrayImage::new(w, h);
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn bad_uploads_are_json_errors_that_say_what_is_wrong() {
    let server = Server::start();
    let photo = toy_photo();
    let cases: Vec<(&str, &[u8], u16, &str)> = vec![
        ("text", b"hello, this is not an image", 415, "not an image"),
        ("empty", b"", 400, "empty"),
        (
            "truncated PNG",
            &photo[..200],
            400,
            "cannot read image the upload",
        ),
    ];
    for (what, body, code, says) in cases {
        let (got, v) = server.upload(body);
        assert_eq!(got, code, "{what}: {v}");
        assert!(error(&v).contains(says), "{what}: {v}");
    }
    // Refused on its Content-Length, before the body is read: the answer comes with none sent.
    let answer = |length: usize| {
        let mut tcp = TcpStream::connect(server.url.trim_start_matches("http://")).unwrap();
        let head = format!(
            "POST /api/images HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut text = String::new();
        let _ = tcp.read_to_string(&mut text);
        text
    };
    let text = answer(MAX_UPLOAD + 1);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        text.contains(r#"{"error":"the request is larger than the 16 MiB accepted"}"#),
        "{text}"
    );
    let text = answer(MAX_UPLOAD);
    assert!(
        text.is_empty() || !text.contains("413"),
        "the limit itself passes (the server waits for the body): {text}"
    );
    // 4096² pixels pass the pixel cap, one row more does not (checked from the header).
    let (code, v) = server.upload(&black_png(4096, 4097));
    assert_eq!(code, 413, "{v}");
    assert!(error(&v).contains("4096x4097 pixels"), "{v}");
    assert_eq!(server.upload(&black_png(4096, 4096)).0, 201);
    let (code, v) = server.post(
        "/api/images/from-url",
        "application/json",
        br#"{"url": "/etc/passwd"}"#,
    );
    assert_eq!(
        (code, v["field"].as_str()),
        (400, Some("url")),
        "never a file path: {v}"
    );
}

#[test]
fn bad_jobs_are_json_errors_that_name_the_field() {
    let server = Server::start();
    let (_, up) = server.upload(&toy_photo());
    let image = up["id"].as_str().unwrap();
    let with = |extra: Value| {
        let mut job = toy_job(image, "a blue triangle on a textured background", 3);
        for (k, v) in extra.as_object().unwrap() {
            job[k] = v.clone();
        }
        job
    };
    let jobs: Vec<(Value, &str)> = vec![
        (
            with(json!({"steps": 0})),
            "`steps` must be in 1..=1000, got 0",
        ),
        (
            with(json!({"steps": 1001})),
            "`steps` must be in 1..=1000, got 1001",
        ),
        (
            with(json!({"start_step": 10})),
            "`start_step` must be smaller than steps 10, got 10",
        ),
        (
            with(json!({"steps": "ten"})),
            "`steps`: invalid type: string \"ten\"",
        ),
        (with(json!({"colour": "red"})), "unknown field `colour`"),
        (
            with(json!({"image": "feed"})),
            "`image` names no uploaded photo (\"feed\")",
        ),
        (with(json!({"prompt": " "})), "`prompt` must not be empty"),
        (
            with(json!({"edit_prompt": "x".repeat(1001)})),
            "`edit_prompt` is longer than 1000 characters",
        ),
        (
            with(json!({"inversion": "magic"})),
            "`inversion` unknown inversion \"magic\"",
        ),
        (
            with(json!({"attention": "all"})),
            "`attention` must be `none` or `p2p`",
        ),
        (
            with(json!({"cross_replace": 1.5, "attention": "p2p"})),
            "`cross_replace` must be a fraction",
        ),
        (
            with(json!({"attention": "none", "blend_words": ["blue"]})),
            "`blend_words` --blend-words needs attention `p2p`",
        ),
        (
            with(json!({"inversion": "direct", "attention": "none"})),
            "direct corrects the source branch",
        ),
        (
            with(json!({"attention": "p2p", "blend_words": ["dragon"]})),
            "dragon",
        ),
    ];
    for (job, says) in jobs {
        let (code, v) = server.submit(&job);
        assert_eq!(code, 400, "{job}: {v}");
        assert!(
            error(&v).contains(says),
            "{job}: expected {says:?}, got {v}"
        );
    }
    let (code, v) = server.post("/api/jobs", "application/json", b"{not json");
    assert_eq!(code, 400);
    assert!(error(&v).contains("not valid JSON"), "{v}");
    let (code, v) = server.get_json("/api/jobs/feed");
    assert_eq!(code, 404);
    assert!(error(&v).contains("no job \"feed\""), "{v}");
}

/// A job long enough to still be running when the test acts: 1000 steps from step 0.
fn long_job(image: &str) -> Value {
    let mut job = toy_job(image, "a blue triangle on a textured background", 0);
    job["steps"] = json!(999);
    job
}

#[test]
fn cancel_stops_running_and_queued_jobs_and_the_queue_has_a_limit() {
    let server = Server::start();
    let (_, up) = server.upload(&toy_photo());
    let image = up["id"].as_str().unwrap();
    let (_, running) = server.submit(&long_job(image));
    let running = running["id"].as_str().unwrap().to_string();
    server.wait(&running, |s| {
        s["state"] == "running" && s["step"].as_u64() > Some(0)
    });
    let mut queued = vec![];
    for i in 0..MAX_QUEUE {
        let (code, st) = server.submit(&long_job(image));
        assert_eq!(
            (code, st["position"].as_u64()),
            (202, Some(i as u64)),
            "{st}"
        );
        queued.push(st["id"].as_str().unwrap().to_string());
    }
    let (code, v) = server.submit(&long_job(image));
    assert_eq!(code, 429, "{v}");
    assert!(error(&v).contains("the queue is full"), "{v}");
    let (code, v) = server.get_json(&format!("/api/jobs/{}/result.png", queued[0]));
    assert_eq!(code, 409, "{v}");
    assert!(error(&v).contains("no result yet"), "{v}");

    // A queued job leaves the queue at once; those behind it move up.
    let (code, st) = server.post(
        &format!("/api/jobs/{}/cancel", queued[0]),
        "application/json",
        b"",
    );
    assert_eq!(
        (code, st["state"].as_str()),
        (200, Some("cancelled")),
        "{st}"
    );
    let (_, next) = server.get_json(&format!("/api/jobs/{}", queued[1]));
    assert_eq!(next["position"], 0, "{next}");
    // The running one stops after its current step.
    server.post(
        &format!("/api/jobs/{running}/cancel"),
        "application/json",
        b"",
    );
    let st = server.wait(&running, |s| s["state"] != "running");
    assert_eq!(st["state"], "cancelled", "{st}");
    assert!(st["step"].as_u64() < Some(999), "{st}");
    let st = server.wait(&queued[1], |s| s["state"] == "running");
    assert_eq!(st["started"], 2, "the next in line started second: {st}");
}

#[test]
fn ctrl_c_cancels_the_running_job_and_stops_the_server() {
    let mut server = Server::start();
    let (_, up) = server.upload(&toy_photo());
    let (_, st) = server.submit(&long_job(up["id"].as_str().unwrap()));
    server.wait(st["id"].as_str().unwrap(), |s| s["state"] == "running");
    let status = server
        .interrupt(Duration::from_secs(20))
        .expect("stops within 20 s");
    assert!(status.success(), "{status:?}");
}
