#!/usr/bin/env bash
# A privacy gate for a CI pipeline: protect a dataset, measure it, fail the job when the
# protection is too weak. Usage: examples/privacy_gate.sh [WORKDIR]
#   METHOD=noise PARAMS="--sigma 0.5" MAX_SSIM=0.5 MAX_PSNR=15 MAX_AD=1000 examples/privacy_gate.sh /tmp/gate
# Exit codes: 0 the gate passed, 1 it failed, 2 bad input (as every ppvi command).
set -euo pipefail

PPVI=${PPVI:-ppvi}
METHOD=${METHOD:-noise}
PARAMS=${PARAMS:-}
MAX_SSIM=${MAX_SSIM:-0.5}   # PPA's privacy thresholds
MAX_PSNR=${MAX_PSNR:-15}
MAX_AD=${MAX_AD:-100000}
work=${1:-$(mktemp -d)}

# 1. data: here the embedded synthetic VI set; in production, your archive
[ -d "$work/raw" ] || $PPVI --quiet data synth "$work/raw" --ids 6 --images-per-camera 1 --seed 0 >/dev/null

# 2. protect (resumable: re-running skips finished files)
# shellcheck disable=SC2086
$PPVI --quiet anonymize --method "$METHOD" $PARAMS --input "$work/raw" --output "$work/anon-$METHOD" >/dev/null

# 3. measure as JSON, then gate with jq on every modality's mean
$PPVI --quiet --json privacy --raw "$work/raw" --anon "$work/anon-$METHOD" > "$work/privacy.json"
$PPVI --quiet --json chaos "$work/anon-$METHOD" > "$work/chaos.json"

jq -r '.mean | to_entries[] | "\(.key): SSIM \(.value.ssim) PSNR \(.value.psnr)"' "$work/privacy.json"
jq -r '.mean | to_entries[] | "\(.key): AD \(.value)"' "$work/chaos.json"

if ! jq -e --argjson s "$MAX_SSIM" --argjson p "$MAX_PSNR" \
    '[.mean[] | .ssim <= $s and .psnr != null and .psnr <= $p] | all' "$work/privacy.json" >/dev/null; then
  echo "privacy gate failed: mean SSIM > $MAX_SSIM or PSNR > $MAX_PSNR" >&2
  exit 1
fi
if ! jq -e --argjson a "$MAX_AD" '[.mean[] | . != null and . <= $a] | all' "$work/chaos.json" >/dev/null; then
  echo "chaos gate failed: mean AD > $MAX_AD" >&2
  exit 1
fi
echo "privacy gate passed ($METHOD)"
