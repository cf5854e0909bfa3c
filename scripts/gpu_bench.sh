#!/usr/bin/env bash
# The GPU check and step benchmark: scripts/gpu_slot.sh's `bench` plan, one command of at most
# 8 minutes (each step under its own timeout, 480 s in all): the carried wheels installed --no-deps
# --target a scratch folder, the CUDA-only tests, host syncs per step, the attacks' strength per
# precision, ResNet-18 at batch 128 and 512 with every BAT variant (the defaults beside plain fp32)
# and 3 synthetic epochs of 50,000 images each of PGD-AT and BAT (images/s per epoch). $OUT receives
# summary.md, console.log and results.tar.gz, nothing else.
#
#   OUT=results bash scripts/gpu_bench.sh                   # on a GPU machine (docs/performance.md)
#   OUT=/tmp/dry BATLIT_DRY_RUN=1 bash scripts/gpu_bench.sh # tiny sizes, runs on a CPU
exec env PLAN=bench bash "$(dirname "$0")/gpu_slot.sh"
