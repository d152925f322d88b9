#!/bin/bash
# A sharded `ddim-edit batch` as a Slurm job array: each array task runs one shard of jobs.jsonl
# into shared storage. The shard comes from SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT (and
# _MIN, _STEP), so the script passes no --shard; any --array range works (0-7, 1-8, 0-14:2).
#
# Once, before submitting (on a node with internet access), fill the shared Hugging Face cache:
#   HF_HUB_CACHE=/shared/hf-cache ddim-edit fetch sd-2-1-base
# Submit:    sbatch docs/batch/slurm-array.sh
# Resubmit the same script after a crash, a pre-emption or a time-out: every task skips what its
# shard already finished (results line and PNGs present) and redoes the job it was cut off in.
# Merge:     cat /shared/edits/results-*-of-8.jsonl > /shared/edits/results.jsonl
#
#SBATCH --job-name=ddim-edit
#SBATCH --array=0-7
#SBATCH --cpus-per-task=8
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --output=logs/%x-%A_%a.out
set -euo pipefail

# Every task reads the model from the shared cache, none downloads it.
export HF_HUB_CACHE=/shared/hf-cache HF_HUB_OFFLINE=1

# Exit status 2 means the batch ran and some jobs failed (each has its error in the results file).
srun ddim-edit batch /shared/jobs.jsonl --out-dir /shared/edits \
    --model sd-2-1-base --steps 50 -q
