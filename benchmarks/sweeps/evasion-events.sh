#!/usr/bin/env bash
# Adds to reports/evasion/ the raw-event attacks (DVS-Attacks' query attacks, Gumbel-softmax), event filters
# (static and adaptive), a universal patch and transfer, on digits-dvs against the spiking CNN (small) and
# Spikingformer (tiny); 50 samples a run (30 on Spikingformer) to keep it near 45 CPU-minutes.
# Run after (or beside) benchmarks/sweeps/evasion.sh: it reuses the cached models.
set -euo pipefail
cd "$(dirname "$0")/../.."
snnsec=".venv/bin/snnsec"
out=(--out reports/evasion)

# Spiking CNN: raw-event attacks (budgets in events edited: 100 400 1600 6400).
for attack in dash mf-dash corner frame gumbel; do
    $snnsec evade --model spiking-cnn --attack "$attack" --samples 50 "${out[@]}"
done
# Event filters in front of the model: every attack static (crafted without it) and adaptive (through it).
$snnsec evade --model spiking-cnn --attack dash --filter mask --filter-opt threshold=50 --budget 1600 --budget 6400 \
    --samples 50 "${out[@]}"
$snnsec evade --model spiking-cnn --attack mf-dash --filter mask --filter-opt threshold=50 --budget 1600 \
    --budget 6400 --samples 50 "${out[@]}"
$snnsec evade --model spiking-cnn --attack gumbel --filter ba --budget 400 --budget 1600 --samples 50 "${out[@]}"
# A universal patch for target class 0 (one epoch); transfer to other zoo models.
$snnsec evade --model spiking-cnn --attack patch --target 0 --budget 0.03 --budget 0.1 --attack-opt epochs=1 \
    --attack-opt max_iterations=10 --samples 50 "${out[@]}"
$snnsec evade --model spiking-cnn --attack pgd --budget 50 --budget 200 --samples 50 \
    --transfer-to spikingformer:tiny --transfer-to sew-resnet:tiny "${out[@]}"

# Spikingformer (tiny): raw-event attacks on 30 samples; transfer back to the spiking CNN.
$snnsec evade --model spikingformer --attack dash --samples 30 --budget 1600 --budget 6400 "${out[@]}"
$snnsec evade --model spikingformer --attack gumbel --samples 30 --budget 400 --budget 1600 "${out[@]}"
$snnsec evade --model spikingformer --attack pgd --budget 50 --budget 200 --samples 30 \
    --transfer-to spiking-cnn:small "${out[@]}"
