//! The Markdown tables eval-toy prints, from the JSON report it writes.

use std::fmt::Write as _;

use serde_json::Value;

use super::SMALL_RADIUS;

/// The Markdown tables of a report.
pub fn table(report: &Value) -> String {
    let mut t = reconstruction(report);
    t += &edits(report);
    t += &notes(report);
    t
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn rows(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// Reconstruction PSNR by steps and guidance (nothing without a reconstruction).
fn reconstruction(report: &Value) -> String {
    let mut t = String::new();
    let recon: Vec<&Value> = rows(&report["reconstruction"]).collect();
    if recon.is_empty() {
        return t;
    }
    let _ = writeln!(
        t,
        "\nReconstruction (invert → sample with the caption), {} held-out scenes\n",
        report["scenes"]
    );
    t.push_str("| steps | guidance | PSNR (dB) | worst (dB) |\n|---:|---:|---:|---:|\n");
    for r in recon {
        let _ = writeln!(
            t,
            "| {} | {} | {:.2} | {:.2} |",
            r["steps"],
            r["guidance"],
            num(&r["psnr_db"]),
            num(&r["min_psnr_db"])
        );
    }
    t
}

/// One row per edit kind and method.
fn edits(report: &Value) -> String {
    let mut t = String::new();
    let first = &report["edits"][0];
    let _ = writeln!(
        t,
        "\nEdits at N = {}, k = {}, guidance {} (inversion {})\n",
        first["steps"], first["start_step"], first["guidance"], first["inversion_guidance"]
    );
    let _ = writeln!(
        t,
        "| edit | method | success | mask IoU | IoU, r ≤ {SMALL_RADIUS} px | PSNR outside (dB) | PSNR (dB) | UNet passes | s / edit |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows(&report["edits"]) {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.3} | {} | {:.2} | {:.2} | {:.0} | {:.2} |",
            r["edit"].as_str().unwrap_or("?"),
            r["method"].as_str().unwrap_or("?"),
            r["success"]
                .as_f64()
                .map_or("–".to_string(), |v| format!("{:.0} %", 100.0 * v)),
            num(&r["mask_iou"]),
            r["mask_iou_small"]
                .as_f64()
                .map_or("–".to_string(), |v| format!("{v:.3}")),
            num(&r["psnr_outside_db"]),
            num(&r["psnr_db"]),
            num(&r["unet_calls"]),
            num(&r["seconds"])
        );
    }
    if rows(&report["edits"]).any(|r| r["edit"] == "background") {
        t +=
            "\n(background edits: PSNR outside is over the inside of the shape, which they keep)\n";
    }
    t.push('\n');
    t
}

/// The exact edit's IoU per kind, and per-scene wins of inversion against img2img.
fn notes(report: &Value) -> String {
    let mut t = String::new();
    let mut kinds = Vec::new();
    for r in rows(&report["edits"]) {
        let kind = r["edit"].as_str().unwrap_or("?");
        if !kinds.contains(&kind) {
            kinds.push(kind);
            let _ = writeln!(
                t,
                "{kind}: an exact edit scores mask IoU {:.3}",
                num(&r["exact_edit_mask_iou"])
            );
        }
    }
    for c in rows(&report["inversion_vs_img2img"]) {
        let _ = writeln!(
            t,
            "{}: higher mask IoU by inversion in {} scenes, by img2img in {} (of {})",
            c["edit"].as_str().unwrap_or("?"),
            c["inversion_ahead_on_iou"],
            c["img2img_ahead_on_iou"],
            c["scenes"]
        );
    }
    t
}
