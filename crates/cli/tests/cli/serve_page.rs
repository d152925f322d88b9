//! The page of `ddim-edit serve` in headless Chromium, driven by `web/e2e/page.mjs`
//! (playwright-core): the edit a user makes on the page downloads the same PNG as `ddim-edit
//! edit`, a second edit reuses the inversion and holds the layout as the CLI's flags do,
//! cancelling works and bad uploads show the server's error. Needs Node, `npm ci` in
//! `crates/cli/web` and Debian's chromium, which `.ci/run` installs; without them the test says
//! so and passes, except under CI (`CI` set), where it fails.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::serve::{Server, cli_edit, cli_edit_with};
use super::{TOY_EDIT, fixtures, stderr};

/// The page's second edit prompt.
const GREEN: &str = "a green triangle on a textured background";

fn missing() -> Option<String> {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node is not installed".into());
    }
    if !web.join("node_modules/playwright-core").is_dir() {
        return Some(format!(
            "playwright-core is not installed: run `npm ci` in {web:?}"
        ));
    }
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "{chromium} is missing (Debian: apt-get install chromium)"
        ));
    }
    None
}

#[test]
fn the_page_edits_like_the_cli_reuses_the_inversion_cancels_and_shows_errors() {
    if let Some(why) = missing() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the browser test cannot run under CI: {why}"
        );
        eprintln!("skipping the browser test: {why}");
        return;
    }
    let server = Server::start();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-page");
    std::fs::create_dir_all(&out).unwrap();
    let photo = fixtures().join("images/toy.png");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/e2e/page.mjs");
    let o = Command::new("node")
        .arg(&script)
        .args([&server.url, photo.to_str().unwrap(), out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!("page report: {report}");
    assert!(report["pageErrors"].is_null(), "{report}");
    let seen: Vec<&str> = report["first"]["seen"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    // The progress moved: several step counts of the inversion or the sampling before the end.
    let steps = seen
        .iter()
        .filter(|s| s.starts_with("inversion") || s.starts_with("sampling"))
        .count();
    assert!(steps >= 2, "{seen:?}");
    assert!(seen.last().unwrap().starts_with("done in"), "{seen:?}");

    let command = report["command"].as_str().unwrap();
    assert!(
        command.contains("--image toy.png") && command.contains(TOY_EDIT),
        "{command}"
    );
    assert_page_report(&report);
    // The PNG the page downloads is the CLI's, byte for byte.
    let page = std::fs::read(out.join("page.png")).unwrap();
    assert_eq!(page, cli_edit(TOY_EDIT, 3));
    // The second edit, with feature injection and the auto blend set on the page, is the CLI's
    // with those flags.
    let second = report["secondCommand"].as_str().unwrap();
    let held = ["--feature-replace", "0.8", "--blend-auto"];
    assert!(
        second.contains("--feature-replace 0.8") && second.contains("--blend-auto"),
        "{second}"
    );
    let page = std::fs::read(out.join("page-2.png")).unwrap();
    assert_eq!(page, cli_edit_with(GREEN, 3, &held));
    assert!(out.join("screenshot.png").is_file());
}

/// The reuse, history, cancel and upload errors the page showed.
fn assert_page_report(report: &Value) {
    assert_eq!(report["firstReuse"], "14 UNet calls", "{report}");
    let reused = "inversion reused: 7 UNet calls, 7 saved";
    assert_eq!(report["secondReuse"], reused, "{report}");
    assert_eq!(report["history"], 2);
    assert_eq!(report["cancelled"], "cancelled");
    let error = |kind: &str| report["errors"][kind].as_str().unwrap_or("").to_string();
    assert!(error("text").contains("not an image"), "{report}");
    let oversize = "larger than the 16.0 MiB the server accepts";
    assert!(error("oversize").contains(oversize), "{report}");
}
