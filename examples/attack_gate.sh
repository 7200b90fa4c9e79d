#!/usr/bin/env bash
# A recovery-attack gate for a CI pipeline: protect a dataset, let an attacker learn to undo the
# protection on its public (train) ids, and fail the job when it recovers the test ids too well.
# Usage: examples/attack_gate.sh [WORKDIR]
#   METHOD=blur PARAMS="--radius 12" MAX_SSIM=0.5 EPOCHS=20 ATTACKERS=l1,gan examples/attack_gate.sh /tmp/gate
# The gate applies to the worst case over the attackers run (default: the papers' l1).
# The defaults are sized for a CPU runner (64x32 synthetic images, a narrow UNet, 5 epochs); for a
# real archive use SIZE=256x128 NGF=64 and the authors' EPOCHS=100 on a GPU.
# Exit codes: 0 the gate passed, 1 it failed, 2 bad input (as every ppvi command).
set -euo pipefail

PPVI=${PPVI:-ppvi}
METHOD=${METHOD:-noise}
PARAMS=${PARAMS:-}
MAX_SSIM=${MAX_SSIM:-0.5}   # on each modality's mean SSIM of recovered vs original
MAX_PSNR=${MAX_PSNR:-}      # optional, dB
ATTACKERS=${ATTACKERS:-l1}  # comma list of l1, gan (identity needs --model, linkage a ReID training)
EPOCHS=${EPOCHS:-5}
SIZE=${SIZE:-64x32}
NGF=${NGF:-16}
work=${1:-$(mktemp -d)}

# 1. data: here the embedded synthetic VI set; in production, your archive
[ -d "$work/raw" ] || $PPVI --quiet data synth "$work/raw" --ids 8 --images-per-camera 2 --height 64 --width 32 \
  --seed 0 >/dev/null

# 2. protect (resumable: re-running skips finished files)
# shellcheck disable=SC2086
$PPVI --quiet anonymize --method "$METHOD" $PARAMS --input "$work/raw" --output "$work/anon-$METHOD" >/dev/null

# 3. attack; an interrupted attack (or a re-run with other thresholds) continues from its checkpoint
out="$work/attack-$METHOD"
args=(--raw "$work/raw" --anon "$work/anon-$METHOD" --out "$out" --attacker "$ATTACKERS" --epochs "$EPOCHS"
      --size "$SIZE" --ngf "$NGF" --batch-size 8 --max-ssim "$MAX_SSIM" --resume)
[ -z "$MAX_PSNR" ] || args+=(--max-psnr "$MAX_PSNR")
status=0
$PPVI --quiet --json attack "${args[@]}" > "$work/attack.json" || status=$?

# 4. the exit code is the gate (1: recovery too good); attack.json holds every number
if [ "$status" -eq 1 ]; then
  echo "attack gate failed ($METHOD): the worst-case attacker recovers too much (max SSIM $MAX_SSIM)" >&2
  exit 1
elif [ "$status" -ne 0 ]; then
  exit "$status"
fi
echo "attack gate passed ($METHOD)"
