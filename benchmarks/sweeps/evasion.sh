#!/usr/bin/env bash
# Regenerates reports/evasion/: every evasion attack on digits-dvs (binary frames, T=10, 34x34) against the
# spiking CNN (small) and Spikingformer (tiny), 100 seeded correctly classified test samples each (SDA on
# Spikingformer: 50), plus PGD against an adversarially trained spiking CNN. Finished runs are not skipped:
# run it on a fresh reports/evasion. Models are trained once and cached (~/.cache/snnsec or SNNSEC_CACHE_DIR).
# About 1 h 15 min at one thread on a 2-core machine (Spikingformer training: ~10 min).
set -euo pipefail
cd "$(dirname "$0")/../.."
snnsec=".venv/bin/snnsec"
out=(--out reports/evasion)

# Spiking CNN: every attack, the PGD surrogate sweep, a targeted run, adversarial training.
$snnsec evade --model spiking-cnn --attack pgd --surrogate sweep "${out[@]}"
$snnsec evade --model spiking-cnn --attack fgsm "${out[@]}"
$snnsec evade --model spiking-cnn --attack sda "${out[@]}"
$snnsec evade --model spiking-cnn --attack sparsefool "${out[@]}"
$snnsec evade --model spiking-cnn --attack random --no-checks "${out[@]}"
$snnsec evade --model spiking-cnn --attack pgd --target random "${out[@]}"
$snnsec evade --model spiking-cnn --attack pgd --defense adversarial-training \
    --defense-opt budget=200 --defense-opt ratio=1.0 --defense-opt steps=3 "${out[@]}"

# Spikingformer (tiny): the same attacks; PGD with its own surrogate, PDSG and the rate gradient.
$snnsec evade --model spikingformer --attack pgd --surrogate model --surrogate pdsg --surrogate rate "${out[@]}"
$snnsec evade --model spikingformer --attack fgsm "${out[@]}"
$snnsec evade --model spikingformer --attack sparsefool "${out[@]}"
$snnsec evade --model spikingformer --attack sda --samples 50 "${out[@]}"
$snnsec evade --model spikingformer --attack random --no-checks "${out[@]}"
