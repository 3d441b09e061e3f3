#!/usr/bin/env bash
# Adds to reports/evasion/ the raw-event attacks (DVS-Attacks' query attacks, Gumbel-softmax), event filters
# (static and adaptive), universal patches and transfer, on digits-dvs against the spiking CNN (small) and
# Spikingformer (tiny). Run after benchmarks/sweeps/evasion.sh (it reuses its cached models).
set -euo pipefail
cd "$(dirname "$0")/../.."
snnsec=".venv/bin/snnsec"
out=(--out reports/evasion)

# Spiking CNN: raw-event attacks (budgets in events: 100 400 1600 6400).
for attack in dash mf-dash corner frame gumbel; do
    $snnsec evade --model spiking-cnn --attack "$attack" "${out[@]}"
done
# Event filters in front of the model: every attack static and adaptive.
$snnsec evade --model spiking-cnn --attack dash --filter mask --filter-opt threshold=50 "${out[@]}"
$snnsec evade --model spiking-cnn --attack mf-dash --filter mask --filter-opt threshold=50 "${out[@]}"
$snnsec evade --model spiking-cnn --attack gumbel --filter ba "${out[@]}"
# A universal patch for target class 0; transfer to other zoo models.
$snnsec evade --model spiking-cnn --attack patch --target 0 "${out[@]}"
$snnsec evade --model spiking-cnn --attack pgd --budget 50 --budget 200 --transfer-to spikingformer:tiny \
    --transfer-to sew-resnet:tiny "${out[@]}"

# Spikingformer (tiny): raw-event attacks on 30 samples; transfer back to the spiking CNN.
$snnsec evade --model spikingformer --attack dash --samples 30 "${out[@]}"
$snnsec evade --model spikingformer --attack gumbel --samples 30 "${out[@]}"
$snnsec evade --model spikingformer --attack pgd --budget 50 --budget 200 --samples 50 \
    --transfer-to spiking-cnn:small "${out[@]}"
