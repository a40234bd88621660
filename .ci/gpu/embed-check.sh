#!/usr/bin/env bash
# #12's device check on a lent H200 (16 cores), one command of at most 9.5 minutes (9 files come back); run from the repo root
# after .ci/gpu/wheels.sh here, with the device tool: carry [".whl"], timeout_s 600, command
#   bash .ci/gpu/embed-check.sh
# Writes every table under $OUT (the device tool brings it back):
#   gpu/embed.csv   the gpu backend at the full config's batch and shard sizes on 4,096 synthetic
#                   640x480 JPEGs, against the bare model: vs_bare (goal >= 0.85), the compute step
#                   alone and the device's pace in the pipeline, start-up steps, host vs device time
#   gil/gil.csv     the launching thread's pace beside loader threads and processes
#   cores/cores.csv what 1-16 busy CPUs each keep of one's compute and memory bandwidth
#   cpu/embed.csv   SD-VAE layout on 1/2/4/8/16 CPUs: pinned, intraop, naive (up to 4), with
#                   efficiency (goal >= 0.80 at 8), Karp-Flatt, compute cost per item vs 1 CPU
set -uo pipefail
OUT=${OUT:-/tmp/embed-check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc; lscpu | grep -E '^(Model name|Thread|Core|Socket|NUMA node\(s\)|L3)'
# 1. GPU against the bare model (~3 min: two modalities, bare and compute-alone runs each)
timeout 235 python3 -m diffscale.bench --out-dir "$OUT/gpu" embed --backends gpu --gpus 1 \
  --vae sd-vae-ft-mse --text-encoder clip-vit-large-patch14 --image-size 256 --batch 16 --text-batch 256 \
  --shard-size 2048 --dtype bf16 --sizes 4096 --source-size 640x480 --work-dir /tmp/embed-gpu 2>&1 \
  | grep -v '^modality=' | tee -a "$OUT/check.log"
# 2. the GIL, without the GPU (~30 s)
timeout 40 python3 -m diffscale.bench --out-dir "$OUT/gil" gil --loaders 1 4 2>&1 \
  | grep -v '^modality=' | tee -a "$OUT/check.log"
# 3. what the CPUs share (~25 s): clocks/SMT (compute) and memory bandwidth, 1-16 processes at once
timeout 35 python3 -m diffscale.bench --out-dir "$OUT/cores" cores --cpus 1 2 4 8 16 --seconds 0.5 2>&1 \
  | grep -v '^probe=' | tee -a "$OUT/check.log"
# 4. CPU scaling, SD-VAE layout at 64 px (~3 min; the 1-CPU baseline is ~17 s of compute)
timeout 260 python3 -m diffscale.bench --out-dir "$OUT/cpu" embed --backends serial multiprocessing \
  --policies pinned naive intraop --cpus 1 2 4 8 16 --naive-max-cpus 4 --modalities images \
  --vae sd-vae-ft-mse --image-size 64 --batch 4 --shard-size 32 --sizes 96 --source-size 640x480 2>&1 \
  | grep -v '^modality=' | tee -a "$OUT/check.log"
ls -R "$OUT"
