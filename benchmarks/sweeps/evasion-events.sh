#!/usr/bin/env bash
# Adds to reports/evasion/ the raw-event attacks (DVS-Attacks' query attacks, Gumbel-softmax), event filters
# (static and adaptive), a universal patch and transfer, on digits-dvs against the spiking CNN (small) and
# Spikingformer (tiny). Sample counts are cut (50 / 30 / 20) to fit about 45 CPU-minutes on two lanes.
# Run after benchmarks/sweeps/evasion.sh: it reuses the cached models. `lane` runs one part (a, b, c or d).
set -euo pipefail
cd "$(dirname "$0")/../.."
snnsec=".venv/bin/snnsec"
out=(--out reports/evasion)
lane="${1:-all}"

if [[ $lane == a || $lane == all ]]; then
    # Spiking CNN: raw-event attacks (budgets in events edited: 100 400 1600 6400).
    for attack in dash mf-dash corner frame gumbel; do
        $snnsec evade --model spiking-cnn --attack "$attack" --samples 50 "${out[@]}"
    done
    # Event filters in front of the model: every attack static (crafted without it) and adaptive (through it).
    $snnsec evade --model spiking-cnn --attack mf-dash --filter mask --filter-opt threshold=50 --budget 1600 \
        --budget 6400 --samples 30 "${out[@]}"
    $snnsec evade --model spiking-cnn --attack gumbel --filter ba --budget 400 --budget 1600 --samples 30 "${out[@]}"
    # A universal patch for target class 0 (one epoch).
    $snnsec evade --model spiking-cnn --attack patch --target 0 --budget 0.03 --budget 0.1 --attack-opt epochs=1 \
        --attack-opt max_iterations=10 --samples 50 "${out[@]}"
fi
if [[ $lane == b || $lane == all ]]; then
    # Transfer between the spiking CNN and Spikingformer, both ways.
    $snnsec evade --model spiking-cnn --attack pgd --budget 50 --budget 200 --samples 50 \
        --transfer-to spikingformer:tiny "${out[@]}"
    $snnsec evade --model spikingformer --attack pgd --budget 50 --budget 200 --samples 30 \
        --transfer-to spiking-cnn:small "${out[@]}"
    # Spikingformer (tiny): raw-event attacks on 20 samples.
    $snnsec evade --model spikingformer --attack gumbel --samples 20 --budget 400 --budget 1600 "${out[@]}"
    $snnsec evade --model spikingformer --attack dash --samples 20 --budget 1600 --budget 6400 "${out[@]}"
fi
if [[ $lane == c || $lane == all ]]; then
    # Frame attacks behind the background-activity filter: flips made real as events, static and adaptive (BPDA).
    $snnsec evade --model spiking-cnn --attack pgd --filter ba --budget 50 --budget 200 --samples 30 "${out[@]}"
    $snnsec evade --model spiking-cnn --attack sda --filter ba --budget 200 --budget 800 --samples 20 "${out[@]}"
    # The universal patch with smaller steps and more epochs than AE-Patch's (lr 1, 1 epoch above).
    $snnsec evade --model spiking-cnn --attack patch --target 0 --budget 0.1 --budget 0.2 --attack-opt lr=0.05 \
        --attack-opt epochs=3 --samples 50 "${out[@]}"
fi
if [[ $lane == d || $lane == all ]]; then
    # Transfer between the spiking CNN and an ANN baseline (ResNet-18, small) on the same frames, both ways.
    $snnsec evade --model spiking-cnn --attack pgd --budget 50 --budget 200 --samples 50 \
        --transfer-to resnet18:small "${out[@]}"
    $snnsec evade --model resnet18 --model-config small --attack pgd --budget 50 --budget 200 --samples 50 \
        --transfer-to spiking-cnn:small "${out[@]}"
fi
