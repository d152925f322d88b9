//! The library half of `cargo xtask`: the subcommand that integration tests drive directly
//! (`convert` on the fixture models, and of single-file checkpoints). `main.rs` dispatches to it; `fetch` (a shell over the
//! `model-source` crate), `bench`, `eval-toy` and `fixtures` live in the binary only.

pub mod convert;
pub mod convert_single;

/// The CPU's model name and its vector features, from /proc/cpuinfo.
pub fn cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let flags = field("flags");
    let features: Vec<&str> = [
        "avx2",
        "fma",
        "avx512f",
        "avx512_bf16",
        "avx512_fp16",
        "avx512_vnni",
        "amx_bf16",
        "amx_tile",
    ]
    .into_iter()
    .filter(|f| flags.split_whitespace().any(|x| x == *f))
    .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "{} ({threads} threads; {})",
        field("model name"),
        features.join(" ")
    )
}
