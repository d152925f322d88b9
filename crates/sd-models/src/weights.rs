//! Strict loading of diffusers/transformers safetensors weights into Burn modules.
//!
//! Burn's safetensors store (`burn::store::SafetensorsStore`) does the reading; this file adds what a
//! user needs on top: the weight file a component folder holds, a header check that turns a truncated
//! or corrupt file into an error naming it, the key renames below, a dtype cast (files may be f32, f16
//! or bf16), and strictness — every parameter must be found, every tensor of the file must be used
//! (except known buffers), shapes must agree.
//!
//! | file key (diffusers / transformers)            | module path                      | why                                  |
//! |------------------------------------------------|----------------------------------|--------------------------------------|
//! | `….to_out.0.…`                                 | `….to_out.…`                     | `to_out` is `[Linear, Dropout]`      |
//! | `….ff.net.0.proj.…`                            | `….ff.geglu.proj.…`              | GEGLU is `net[0]`                    |
//! | `….ff.net.2.…`                                 | `….ff.out.…`                     | output Linear is `net[2]`            |
//! | `….query/key/value/proj_attn.…` (old VAEs)     | `….to_q/to_k/to_v/to_out.…`      | legacy `AttentionBlock` names        |
//! | `text_model.…` (transformers 4.x)              | `…` (no prefix)                  | transformers 5 saves without prefix  |
//! | `*.weight` / `*.bias` of GroupNorm / LayerNorm | `gamma` / `beta`                 | Burn's names (PyTorch adapter)       |
//! | Linear `weight` `[out, in]`                    | `weight` `[in, out]`             | Burn stores Linear transposed        |
//!
//! Ignored buffers: `text_model.embeddings.position_ids` (older transformers checkpoints).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::store::{
    ApplyError, FloatCastAdapter, KeyRemapper, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter,
    SafetensorsStore,
};
use burn::tensor::{DType, Tensor};

use crate::autocast::{self, AutocastAdapter};

use crate::error::{ModelError, Result};

/// File-key renames shared by every model family (regex → replacement).
pub(crate) const RENAMES: &[(&str, &str)] = &[
    (r"\.to_out\.0\.", ".to_out."),
    (r"\.ff\.net\.0\.proj\.", ".ff.geglu.proj."),
    (r"\.ff\.net\.2\.", ".ff.out."),
    (r"\.query\.", ".to_q."),
    (r"\.key\.", ".to_k."),
    (r"\.value\.", ".to_v."),
    (r"\.proj_attn\.", ".to_out."),
    (r"^text_model\.", ""),
];

/// The reverse of [`RENAMES`] for module paths (literal substrings), used to name parameters the
/// way diffusers' state dicts do (manifests, error messages).
const REVERSE: &[(&str, &str)] = &[
    (".to_out.", ".to_out.0."),
    (".ff.geglu.proj.", ".ff.net.0.proj."),
    (".ff.out.", ".ff.net.2."),
];

/// Buffers that checkpoints may carry and that are not parameters.
const IGNORED: &[&str] = &["embeddings.position_ids"];

/// One tensor's entry in a safetensors header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Byte range in the data section (after the 8-byte length and the header).
    pub data_offsets: (u64, u64),
}

/// Reads and checks a safetensors header: every tensor's byte range must lie inside the file and
/// match its dtype and shape. Returns the tensors by name. Only the header is read.
pub fn read_header(path: &Path) -> Result<BTreeMap<String, TensorInfo>> {
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|_| too_short(path, file_len))?;
    let header_len = header_length(len_bytes, file_len, path)?;
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| corrupt(path, format!("cannot read header: {e}")))?;
    check_header(&header, file_len - 8 - header_len, path)
}

/// [`read_header`] of a whole safetensors file in memory; `path` names it in errors.
pub fn parse_header(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, TensorInfo>> {
    let file_len = bytes.len() as u64;
    let len_bytes = bytes
        .first_chunk::<8>()
        .ok_or_else(|| too_short(path, file_len))?;
    let header_len = header_length(*len_bytes, file_len, path)?;
    let header = &bytes[8..8 + header_len as usize];
    check_header(header, file_len - 8 - header_len, path)
}

/// The largest safetensors header read (Stable Diffusion's UNet has about 100 kB of it).
const MAX_HEADER_BYTES: u64 = 100_000_000;

fn corrupt(path: &Path, message: String) -> ModelError {
    ModelError::CorruptWeights {
        path: path.to_path_buf(),
        message,
    }
}

fn too_short(path: &Path, file_len: u64) -> ModelError {
    corrupt(
        path,
        format!("file is {file_len} bytes, too short for a header"),
    )
}

/// The header length the first 8 bytes give, checked against the file's length.
fn header_length(len_bytes: [u8; 8], file_len: u64, path: &Path) -> Result<u64> {
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES || 8 + header_len > file_len {
        return Err(corrupt(
            path,
            format!("header length {header_len} does not fit in a {file_len}-byte file"),
        ));
    }
    Ok(header_len)
}

/// The tensors of a header's JSON, each checked against a data section of `data_len` bytes.
fn check_header(header: &[u8], data_len: u64, path: &Path) -> Result<BTreeMap<String, TensorInfo>> {
    let json: serde_json::Value = serde_json::from_slice(header)
        .map_err(|e| corrupt(path, format!("header is not valid JSON: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| corrupt(path, "header is not a JSON object".into()))?;
    let mut out = BTreeMap::new();
    for (name, entry) in obj {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| corrupt(path, format!("tensor {name:?}: {what}"));
        let dtype = entry["dtype"]
            .as_str()
            .ok_or_else(|| bad("no dtype"))?
            .to_string();
        let shape: Vec<usize> = entry["shape"]
            .as_array()
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("bad shape"))?;
        let offsets = entry["data_offsets"]
            .as_array()
            .and_then(|o| Some((o.first()?.as_u64()?, o.get(1)?.as_u64()?)))
            .ok_or_else(|| bad("bad data_offsets"))?;
        let elem: u64 = match dtype.as_str() {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "I8" | "U8" | "BOOL" => 1,
            _ => return Err(bad(&format!("unknown dtype {dtype}"))),
        };
        // Checked: a hostile shape's product overflows 64 bits.
        let bytes = shape
            .iter()
            .try_fold(elem, |acc, &d| acc.checked_mul(d as u64));
        if offsets.1 < offsets.0 || bytes != Some(offsets.1 - offsets.0) {
            return Err(bad("byte range does not match dtype and shape"));
        }
        if offsets.1 > data_len {
            return Err(corrupt(
                path,
                format!(
                    "truncated: tensor {name:?} ends at byte {} of the data section, which has only {data_len} bytes",
                    offsets.1
                ),
            ));
        }
        out.insert(
            name.clone(),
            TensorInfo {
                dtype,
                shape,
                data_offsets: offsets,
            },
        );
    }
    Ok(out)
}

/// The safetensors file of a component folder: `{stem}.safetensors`, or `{stem}.{variant}.safetensors`
/// when a variant (e.g. `fp16`) is asked for or is the only file present.
pub fn weights_file(dir: &Path, stem: &str, variant: Option<&str>) -> Result<PathBuf> {
    let plain = dir.join(format!("{stem}.safetensors"));
    if let Some(v) = variant {
        let p = dir.join(format!("{stem}.{v}.safetensors"));
        return if p.is_file() {
            Ok(p)
        } else {
            Err(ModelError::MissingFile {
                path: p,
                what: format!("{v} weights"),
            })
        };
    }
    if plain.is_file() {
        return Ok(plain);
    }
    for v in ["fp16", "bf16"] {
        let p = dir.join(format!("{stem}.{v}.safetensors"));
        if p.is_file() {
            return Ok(p);
        }
    }
    let what = if dir.join(format!("{stem}.bin")).is_file() {
        "weights in safetensors format (only a pickled .bin is present, which is not read)"
            .to_string()
    } else {
        "weights".to_string()
    };
    Err(ModelError::MissingFile { path: plain, what })
}

/// Loads `path` into `module`, strictly, casting floats to `dtype` (bf16 on the CPU backend may
/// mean autocast: see [`crate::autocast`]).
pub fn load<M: Module>(module: M, path: &Path, dtype: DType) -> Result<M> {
    let header = read_header(path)?;
    load_from(
        module,
        SafetensorsStore::from_file(path),
        &header,
        path,
        dtype,
    )
}

/// [`load`] from a safetensors file in memory (a component of a single-file checkpoint);
/// `name` names it in errors.
pub fn load_bytes<M: Module>(module: M, bytes: Vec<u8>, name: &Path, dtype: DType) -> Result<M> {
    let header = parse_header(&bytes, name)?;
    load_from(
        module,
        SafetensorsStore::from_bytes(Some(bytes)),
        &header,
        name,
        dtype,
    )
}

fn load_from<M: Module>(
    mut module: M,
    store: SafetensorsStore,
    header: &BTreeMap<String, TensorInfo>,
    path: &Path,
    dtype: DType,
) -> Result<M> {
    for (key, info) in header {
        let ignored = IGNORED.iter().any(|s| key.ends_with(s));
        if !ignored && !matches!(info.dtype.as_str(), "F32" | "F16" | "BF16") {
            return Err(ModelError::BadDtype {
                path: path.to_path_buf(),
                key: key.clone(),
                dtype: info.dtype.clone(),
            });
        }
    }
    let remapper = KeyRemapper::from_patterns(RENAMES.to_vec())
        .map_err(|e| ModelError::config(path, format!("internal key remapping: {e}")))?;
    let adapter = match autocast::applies(dtype, module.devices().first()) {
        true => PyTorchToBurnAdapter.chain(AutocastAdapter),
        false => PyTorchToBurnAdapter.chain(FloatCastAdapter::to(dtype)),
    };
    let mut store = store
        .remap(remapper)
        .with_from_adapter(adapter)
        .skip_enum_variants(true)
        .allow_partial(true)
        .validate(false);
    let result = module
        .load_from(&mut store)
        .map_err(|e| ModelError::CorruptWeights {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if let Some(err) = result.errors.first() {
        return Err(match err {
            ApplyError::ShapeMismatch {
                path: key,
                expected,
                found,
            } => ModelError::ShapeMismatch {
                path: path.to_path_buf(),
                key: file_key(key),
                expected: expected.to_vec(),
                found: found.to_vec(),
            },
            other => ModelError::CorruptWeights {
                path: path.to_path_buf(),
                message: other.to_string(),
            },
        });
    }
    if let Some((key, _)) = result.missing.first() {
        return Err(ModelError::MissingTensor {
            path: path.to_path_buf(),
            key: file_key(key),
            more: more(result.missing.len()),
        });
    }
    let unused: Vec<&String> = result
        .unused
        .iter()
        .filter(|k| !IGNORED.iter().any(|s| k.ends_with(s)))
        .collect();
    if let Some(key) = unused.first() {
        return Err(ModelError::UnexpectedTensor {
            path: path.to_path_buf(),
            key: (*key).clone(),
            more: more(unused.len()),
        });
    }
    Ok(module)
}

fn more(n: usize) -> String {
    if n > 1 {
        format!(" (and {} more)", n - 1)
    } else {
        String::new()
    }
}

/// A module path in diffusers' key naming.
pub fn file_key(module_path: &str) -> String {
    let mut key = format!(".{module_path}");
    for (from, to) in REVERSE {
        key = key.replace(from, to);
    }
    let key = key[1..].to_string();
    match key.rsplit_once('.') {
        Some((prefix, "gamma")) => format!("{prefix}.weight"),
        Some((prefix, "beta")) => format!("{prefix}.bias"),
        _ => key,
    }
}

/// `module` with every float parameter cast to `dtype`, or as [`crate::autocast`] stores it where
/// that applies (for models built in memory; files are cast while loading, see [`load`]).
pub fn cast<M: Module>(module: M, dtype: DType) -> M {
    if autocast::applies(dtype, module.devices().first()) {
        return autocast::cast(module);
    }
    struct Cast(DType);
    impl ModuleMapper for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let dtype = self.0;
            param.map(|t| t.cast(dtype))
        }
    }
    module.map(&mut Cast(dtype))
}

/// Every parameter of `module` as diffusers names and shapes it (Linear weights `[out, in]`,
/// norms `weight`/`bias`): the module's side of a key/shape manifest. Lazy parameters stay
/// uninitialised, so this is cheap even for full-size models.
pub fn manifest<M: Module>(module: &M) -> BTreeMap<String, Vec<usize>> {
    let mut visitor = ManifestVisitor::default();
    module.visit(&mut visitor);
    visitor.out
}

#[derive(Default)]
struct ManifestVisitor {
    /// (field name, type of the module that holds the field)
    path: Vec<(String, String)>,
    out: BTreeMap<String, Vec<usize>>,
}

impl ModuleVisitor for ManifestVisitor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let mut dims = param.lazy_shape().to_vec();
        let holder = self.path.last().map(|(_, c)| c.as_str()).unwrap_or("");
        if holder == "Struct:Linear" && dims.len() == 2 {
            dims.reverse();
        }
        let module_path = self
            .path
            .iter()
            .filter(|(_, c)| !c.starts_with("Enum:"))
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(".");
        self.out.insert(file_key(&module_path), dims);
    }
}
