#!/usr/bin/env bash
# Writes the seed inputs of the fuzz targets from tests/fixtures into fuzz/seeds/<target>/
# (then minimised into fuzz/corpus/<target>/ with `cargo fuzz cmin`, see fuzz/README.md).
# Needs jq, and a built ddim-edit ($DDIM_EDIT, default target/debug/ddim-edit) for the trajectory.
set -euo pipefail
cd "$(dirname "$0")/.."
fixtures=tests/fixtures
out=fuzz/seeds
rm -rf "$out"
mkdir -p "$out"/{config,safetensors_header,trajectory,tokenizer_folder}

# config: every config of the fixture models and of the full-size config copies.
for f in $fixtures/models/*/{unet,vae,text_encoder}/config.json \
         $fixtures/models/*/scheduler/scheduler_config.json \
         $fixtures/configs/*/{unet,vae,text_encoder}/config.json \
         $fixtures/configs/*/scheduler/scheduler_config.json; do
  name=$(echo "${f#$fixtures/}" | tr / -)
  cp "$f" "$out/config/$name"
done

# safetensors_header: the smallest reference tensor files (whole, valid files).
for f in tiny-sd2-v-vae tiny-sd1-vae; do
  cp "$fixtures/refs/$f.safetensors" "$out/safetensors_header/$f.safetensors"
done

# trajectory: a real 3-step trajectory of the tiny model, and a reference file with other tensors.
"${DDIM_EDIT:-target/debug/ddim-edit}" invert -q --model $fixtures/models/tiny-sd1 \
  --image $fixtures/images/sd1.png --prompt "a red circle" --steps 3 \
  --out "$out/trajectory/tiny-sd1-3-steps.safetensors" > /dev/null
cp "$out/trajectory/tiny-sd1-3-steps.safetensors" "$out/safetensors_header/"
cp "$fixtures/refs/pipeline-gen_sd1.safetensors" "$out/trajectory/"

# tokenizer_folder: each fixture tokenizer cut to its first 60 merges, the vocabulary to the
# byte tokens, those merges' pieces and the special tokens; files joined by NUL bytes in the
# order of harness::TOKENIZER_FILES (tokenizer_config, vocab, merges, special_tokens_map).
for m in tiny-sd1 tiny-sd2; do
  dir=$fixtures/models/$m/tokenizer
  merges=$(mktemp)
  head -n 61 "$dir/merges.txt" > "$merges"
  {
    jq -c . "$dir/tokenizer_config.json"
    printf '\0'
    jq -c --rawfile m "$merges" '
      ($m | split("\n") | .[1:] | map(select(length > 0) | split(" ") | [.[0], .[1], .[0] + .[1]])
        | flatten) as $need
      | with_entries(select(.value < 512 or .value >= 49406 or (.key as $k | $need | index([$k]))))
    ' "$dir/vocab.json"
    printf '\0'
    cat "$merges"
    printf '\0'
    jq -c . "$dir/special_tokens_map.json"
  } > "$out/tokenizer_folder/$m"
  rm "$merges"
done
du -sh "$out"/*
