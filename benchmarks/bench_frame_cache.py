"""Frame cache: bytes on disk and one epoch's reads, dense int16 memmap vs compressed HDF5 vs spikingjelly's npz.

Run on demand:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_frame_cache.py [--repeats 3] [--steps 10]

Data: the embedded digits-dvs training split (1,438 samples) framed as a default attack frames it
(``resolve_attack(AttackConfig())``: T=10, time slicing, 2 x 34 x 34, binary encoding), in a temporary folder.

(a) dense: the previous cache, an int16 ``.npy`` ``[N, T, P, H, W]`` plus an int64 labels ``.npy``, read through
    ``np.load(mmap_mode="r")``;
(b) compressed: ``snnsec.framing.frame_dataset``'s HDF5 file (gzip, one sample per chunk; labels inside), read
    through :class:`~snnsec.framing.CompressedCounts`;
(c) spikingjelly: one file per sample, ``np.savez_compressed(file, frames=frames)`` with ``frames`` float64
    ``[T, 2, H, W]`` as ``integrate_events_by_fixed_frames_number`` returns them (``np.zeros`` then ``+=``), in
    ``<root>/<class>/`` folders; read as ``load_npz_frames`` does (``with np.load(f) as z:
    z["frames"].astype(np.float32)``), the class from the folder, as its ``DatasetFolder`` does
    (spikingjelly 2.0.0, ``spikingjelly/datasets/utils.py``; its module imports torchvision, so the two lines
    are repeated here, not imported).

One epoch = one pass of ``DataLoader(dataset, batch_size=32, shuffle=True, generator=seeded)`` as
``snnsec.training.train`` builds it; (a) and (b) through ``FrameDataset`` (counts encoded to float32 on
read), (c) through its own per-file dataset. Epochs are interleaved (a, b, c, a, ...) and the median of
``--repeats`` is reported, with the files in the page cache (just written and read: "warm") and after
``posix_fadvise(POSIX_FADV_DONTNEED)`` on every file ("evicted"; the kernel may keep pages it cannot drop,
e.g. on some overlay file systems, so that column may understate a cold read; each epoch gets a fresh dataset,
so no earlier memory map or open file pins the pages). The benchmark checks
that (a) and (b) give identical batches and that (c) holds the same counts.

Training step: the default model (spiking-cnn, its config for digits-dvs) and recipe's optimizer, forward +
cross-entropy + backward + step on a batch of 32 through ``Classifier.logits``, median of ``--steps`` after 2
warm-up steps; the report compares it with the read time per batch. Writes
``reports/benchmarks/frame_cache.{md,json}``. The CPU is shared: compare ratios within one run.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "reports" / "benchmarks"
BATCH = 32
VARIANTS = ("dense", "compressed", "spikingjelly")
LABELS = {"dense": "(a) dense int16 .npy memmap (previous cache)",
          "compressed": "(b) compressed HDF5 (gzip, 1 sample/chunk)",
          "spikingjelly": "(c) spikingjelly per-sample npz (savez_compressed)"}


class NpzFrames(Dataset):
    """spikingjelly's frame folder as its ``DatasetFolder`` reads it: sorted classes, sorted files, loader
    ``load_npz_frames``."""

    def __init__(self, root: Path) -> None:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.samples = [(f, k) for k, c in enumerate(classes) for f in sorted((root / c).iterdir())]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        path, target = self.samples[index]
        with np.load(path) as frames_file:  # spikingjelly.datasets.utils.load_npz_frames
            return frames_file["frames"].astype(np.float32), target


def disk_bytes(paths: list[Path]) -> dict[str, int]:
    """Apparent size and allocated blocks (what ``du`` counts) of ``paths``."""
    stats = [p.stat() for p in paths]
    return {"files": len(paths), "bytes": sum(s.st_size for s in stats),
            "allocated": sum(s.st_blocks * 512 for s in stats)}


def evict(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def epoch(dataset: Dataset, seed: int = 0) -> tuple[float, int]:
    """Seconds for one shuffled pass at batch 32, and the number of batches."""
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=False,
                        generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    batches = sum(1 for _ in loader)
    return time.perf_counter() - t0, batches


def machine_info() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    import h5py

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "numpy": np.__version__, "h5py": h5py.__version__,
            "hdf5": h5py.version.hdf5_version, "python": platform.python_version(),
            "git_commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}


def train_step_seconds(resolved: Any, loader_set: Dataset, steps: int) -> float:
    from snnsec.classifier import Classifier
    from snnsec.training import StepHook, make_optimizer
    from snnsec.zoo import MODELS

    torch.manual_seed(0)
    entry = MODELS.get(resolved.config.model)
    clf = Classifier(entry.build(resolved.model_config, resolved.input_spec), entry.feature_layer)
    optimizer = make_optimizer(resolved.training, [p for p in clf.net.parameters() if p.requires_grad])
    hook = StepHook()
    batch = next(iter(DataLoader(loader_set, batch_size=BATCH, shuffle=True,
                                 generator=torch.Generator().manual_seed(0))))
    clf.net.train()

    def step() -> float:
        t0 = time.perf_counter()
        loss, _ = hook.loss(clf, batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - t0

    for _ in range(2):
        step()
    return statistics.median(step() for _ in range(steps))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from snnsec.attack_config import AttackConfig, resolve_attack
    from snnsec.datasets import DATASETS

    resolved = resolve_attack(AttackConfig())
    raw = DATASETS.get(resolved.config.dataset).load("train", None)
    len(raw[0][0])  # the emulator runs on first access: not part of the framing time
    work = Path(tempfile.mkdtemp(prefix="bench-frame-cache-", dir=args.tmp))
    try:
        return _measure(args, resolved, raw, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(args: argparse.Namespace, resolved: Any, raw: Any, work: Path) -> dict[str, Any]:
    from snnsec.attacks.poisoning import FrameDataset
    from snnsec.framing import CompressedCounts, encode, events_to_frames, frame_dataset

    framing = resolved.framing
    result: dict[str, Any] = {"dataset": resolved.config.dataset, "split": "train", "samples": len(raw),
                              "framing": framing.identity(), "batch": BATCH}

    t0 = time.perf_counter()
    counts = np.stack([events_to_frames(raw[i][0], raw.info.sensor_size, framing.frames, framing.slicing,
                                        framing.size, framing.bin_us) for i in range(len(raw))])
    labels = np.array([int(raw[i][1]) for i in range(len(raw))], dtype=np.int64)
    result["framing_s"] = time.perf_counter() - t0
    result["shape"], result["max_count"] = list(counts.shape), int(counts.max())
    result["density"] = float((counts > 0).mean())

    # (a) the previous cache: int16 memmap + labels .npy (as frame_dataset wrote them before)
    dense_path, dense_labels = work / "dense.npy", work / "dense.labels.npy"
    t0 = time.perf_counter()
    out = np.lib.format.open_memmap(dense_path, mode="w+", dtype=np.int16, shape=counts.shape)
    out[:] = counts
    out.flush()
    del out
    np.save(dense_labels, labels)
    write = {"dense": time.perf_counter() - t0}

    # (b) the compressed cache, through frame_dataset (framing + compression + digest)
    t0 = time.perf_counter()
    arrays = frame_dataset(raw, "train", framing, work / "cache")
    write["compressed (framing included)"] = time.perf_counter() - t0

    # (c) spikingjelly: float64 frames, one savez_compressed file per sample in <class>/ folders
    sj_root = work / "sj"
    t0 = time.perf_counter()
    for i in range(len(counts)):
        folder = sj_root / str(labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        frames = np.zeros(counts.shape[1:])  # float64, as integrate_events_by_fixed_frames_number makes it
        frames += counts[i]
        np.savez_compressed(folder / f"{i:05d}.npz", frames=frames)
    write["spikingjelly"] = time.perf_counter() - t0
    result["write_s"] = write

    files = {"dense": [dense_path, dense_labels], "compressed": [arrays.cache_path],
             "spikingjelly": sorted(sj_root.rglob("*.npz"))}
    sizes = {name: disk_bytes(paths) for name, paths in files.items()}
    result["disk"] = sizes

    binary = partial(encode, encoding=framing.encoding)
    shape, stored = arrays.counts.shape, arrays.counts.stored_dtype
    make = {  # a fresh dataset per epoch: no mapping or open file of an earlier epoch keeps pages cached
        "dense": lambda: FrameDataset(np.load(dense_path, mmap_mode="r"), np.load(dense_labels), binary),
        "compressed": lambda: FrameDataset(CompressedCounts(arrays.cache_path, shape, stored), arrays.labels, binary),
        "spikingjelly": lambda: NpzFrames(sj_root)}

    # Checks: (a) and (b) give identical batches; (c) holds the same counts.
    loaders = [DataLoader(make[v](), batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0))
               for v in ("dense", "compressed")]
    for (xa, ya), (xb, yb) in zip(*loaders, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb), "dense and compressed batches differ"
    for path, target in make["spikingjelly"]().samples[::97]:
        i = int(path.stem)
        with np.load(path) as z:
            assert np.array_equal(z["frames"], counts[i]) and target == labels[i]
    assert np.array_equal(np.asarray(arrays.counts), counts) and np.array_equal(arrays.labels, labels)
    arrays.counts.close()
    del loaders
    gc.collect()

    times: dict[str, dict[str, list[float]]] = {v: {"warm": [], "evicted": []} for v in VARIANTS}
    batches = 0
    for condition in ("warm", "evicted"):
        for _ in range(args.repeats):
            for variant in VARIANTS:
                dataset = make[variant]()
                if condition == "evicted":
                    evict(files[variant])
                seconds, batches = epoch(dataset)
                times[variant][condition].append(seconds)
                del dataset
                gc.collect()
    result["epoch_s"] = {v: {k: statistics.median(ts) for k, ts in t.items()} for v, t in times.items()}
    result["epoch_s_all"] = times
    result["batches"] = batches
    result["train_step_s"] = train_step_seconds(resolved, make["compressed"](), args.steps)
    result["model"] = {"name": resolved.config.model, "config": type(resolved.model_config).__name__,
                       "input": str(resolved.input_spec), "optimizer": resolved.training.optimizer}
    result["stored_dtype"] = str(stored)
    return result


def write_report(result: dict[str, Any], out: Path) -> None:
    disk, epoch_s, n = result["disk"], result["epoch_s"], result["samples"]
    step, batches = result["train_step_s"], result["batches"]
    mib = lambda b: b / 2**20  # noqa: E731
    rows = []
    for v in VARIANTS:
        d, e = disk[v], epoch_s[v]
        rows.append(f"| {LABELS[v]} | {d['files']:,} | {mib(d['bytes']):.2f} | {mib(d['allocated']):.2f} | "
                    f"{disk['dense']['bytes'] / d['bytes']:.1f} | {d['bytes'] / disk['compressed']['bytes']:.2f} | "
                    f"{e['warm']:.3f} | {e['evicted']:.3f} | {1e3 * e['warm'] / batches:.2f} | "
                    f"{1e6 * e['warm'] / n:.0f} |")
    c = epoch_s["compressed"]["warm"]
    m = result["machine"]
    text = f"""# Frame cache: dense int16 vs compressed HDF5 vs spikingjelly's per-sample npz

Generated by `benchmarks/bench_frame_cache.py` on {result['generated']} (commit {m['git_commit']}{' with uncommitted changes' if m['uncommitted_changes'] else ''}).
Machine: {m['cpu']}, {m['cores']} logical CPUs, OMP_NUM_THREADS={m['omp_num_threads']}, {m['torch_threads']} torch thread(s),
torch {m['torch']}, numpy {m['numpy']}, h5py {m['h5py']} (HDF5 {m['hdf5']}), Python {m['python']}. Load average (1 min)
before {result['load_average']['before']:.2f}, after {result['load_average']['after']:.2f}: the CPUs are shared, compare the
ratios within this run.

Data: digits-dvs `train`, {n:,} samples framed as the default attack frames them ({json.dumps(result['framing'])}):
counts {result['shape']} (max {result['max_count']}, {100 * result['density']:.1f}% of elements non-zero; the compressed
cache stores them as {result['stored_dtype']}). Framing the split (`events_to_frames`) took {result['framing_s']:.2f} s.

| cache | files | MiB on disk | MiB allocated | dense / this | this / compressed | epoch, warm (s) | epoch, evicted (s) | per batch of 32, warm (ms) | per sample, warm (µs) |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

- **Size**: the compressed cache is **{disk['dense']['bytes'] / disk['compressed']['bytes']:.1f}x smaller** than the dense
  int16 cache and **{disk['spikingjelly']['bytes'] / disk['compressed']['bytes']:.2f}x smaller** than spikingjelly's npz files
  ({disk['spikingjelly']['allocated'] / disk['compressed']['allocated']:.2f}x in allocated blocks: {disk['spikingjelly']['files']:,}
  small files round up to the file system's block).
- **Reads** (one shuffled epoch, batch {BATCH}, {batches} batches, median of {len(result['epoch_s_all']['dense']['warm'])}):
  compressed / dense = **{c / epoch_s['dense']['warm']:.2f}x** the time, spikingjelly / compressed =
  **{epoch_s['spikingjelly']['warm'] / c:.2f}x**; with every file dropped from the page cache before the epoch
  (`posix_fadvise(DONTNEED)`, "evicted"): {epoch_s['compressed']['evicted'] / epoch_s['dense']['evicted']:.2f}x and
  {epoch_s['spikingjelly']['evicted'] / epoch_s['compressed']['evicted']:.2f}x. The compressed reads' time is mostly
  zlib's inflate (about {1e6 * c / n:.0f} µs per sample here), not the disk.
- **Training step** of the default model ({result['model']['name']}, input {result['model']['input']}, {result['model']['optimizer']}),
  batch {BATCH}: **{1e3 * step:.1f} ms** (median of the timed steps). Reading a batch from the compressed cache takes
  {1e3 * c / batches:.2f} ms, **{100 * (c / batches) / step:.1f}%** of a step: reads keep up with training
  (dense: {100 * (epoch_s['dense']['warm'] / batches) / step:.1f}%, spikingjelly: {100 * (epoch_s['spikingjelly']['warm'] / batches) / step:.1f}%).
- **Writing** (s): dense {result['write_s']['dense']:.2f} (counts in memory), compressed
  {result['write_s']['compressed (framing included)']:.2f} (`frame_dataset`: framing, compression and digest),
  spikingjelly {result['write_s']['spikingjelly']:.2f} (counts in memory, float64 frames as it writes them).

Checks run by the benchmark: (a) and (b) yield identical batches over the whole epoch, and (b) decompressed equals the
framed counts; every 97th npz file holds the same counts. Not measured here: the real sets (dense int16 at T=16:
CIFAR10-DVS 10.5 GB, N-Caltech101 about 15 GB, from the issue); their density, and so the ratio, differs from
digits-dvs'.
"""
    out.mkdir(parents=True, exist_ok=True)
    (out / "frame_cache.md").write_text(text)
    (out / "frame_cache.json").write_text(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="epochs per variant and condition (default 3)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (default 10)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the temporary caches (default: $TMPDIR)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    result = run(args)
    result["load_average"] = {"before": load_before, "after": os.getloadavg()[0]}
    result["machine"] = machine_info()
    result["generated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_report(result, args.out)
    print(f"wrote {args.out / 'frame_cache.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
