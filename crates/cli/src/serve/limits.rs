//! Every limit of the server, named once; the API tests exercise each at its edge.

/// The largest request body: an upload, or a job's JSON (a 512 px photo is under 1 MiB as PNG).
pub const MAX_UPLOAD_BYTES: usize = 16 << 20;
/// The most pixels an uploaded photo may have, read from its header before it is decoded.
pub const MAX_PIXELS: u64 = 4096 * 4096;
/// Photos kept in memory; the least recently used goes first.
pub const MAX_IMAGES: usize = 32;
/// Jobs waiting behind the running one; beyond that a submission gets 429.
pub const MAX_QUEUE: usize = 32;
/// Finished jobs whose status and result are kept; the oldest goes first.
pub const MAX_FINISHED_JOBS: usize = 64;
/// Inversions kept for reuse (one is a few MB at 512 px); the least recently used goes first.
pub const MAX_INVERSIONS: usize = 8;
/// The longest prompt, in characters (CLIP reads 77 tokens of it).
pub const MAX_PROMPT_CHARS: usize = 1000;
/// The most steps of a job (the schedules of SD take at most 1000).
pub const MAX_STEPS: usize = 1000;
/// The most reweighted or blend words of a job.
pub const MAX_WORDS: usize = 16;
/// How often, at most, a running job's preview is made (each reads the latents off the device).
pub const PREVIEW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);
