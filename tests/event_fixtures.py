"""Writers for tiny event datasets in the exact on-disk formats tonic 1.7.0 reads.

Each ``write_*`` function writes one sample file; each ``make_*`` function writes a small dataset in the
folder layout tonic expects under a data directory and returns the list of :class:`Sample` written, with
the events as the loader must return them (``t`` in microseconds).

Formats (checked against tonic's readers, see tests/test_tonic_datasets.py):

* DVS128 Gesture (tonic's preprocessed copy): ``np.save`` of an int64 array ``[N, 4]`` with columns
  ``x, y, p, t``, ``t`` in **milliseconds** (tonic multiplies by 1000 on load). Label = file name.
* N-MNIST / N-Caltech101 ``.bin``: 5 bytes per event: ``x``, ``y``, then ``p`` in bit 7 of byte 2 and a
  23-bit timestamp (µs) in the rest of bytes 2..4, big-endian. An event with ``y == 240`` is a timestamp
  overflow marker: the reader adds ``2**13`` to it and all later timestamps and drops it.
  :func:`encode_mnist_bin` emits such markers whenever a timestamp no longer fits in 23 bits.
* CIFAR10-DVS ``.aedat4`` (AEDAT 4.0, as read by the ``aedat`` package that tonic's ``read_aedat4``
  uses): the magic ``#!AER-DAT4.0\\r\\n``; a uint32 length and an ``IOHeader`` flatbuffer (compression,
  data-table position, XML description of the streams); then packets, each a uint32 stream id, a uint32
  length and a size-prefixed ``EventPacket`` flatbuffer (file identifier ``EVTS``, a vector of 16-byte
  ``Event`` structs ``t:int64, x:int16, y:int16, on:bool``). :func:`write_aedat4` writes it uncompressed
  with a small hand-made flatbuffer layout, no dependency.
* SHD / SSC ``.h5`` (the Heidelberg spiking data sets, read by tonic's ``HSD.__getitem__``): one HDF5 file
  per split, ``spikes/times`` (variable-length float arrays, seconds), ``spikes/units`` (variable-length
  uint16 arrays, channel 0..699), ``labels`` (uint16), ``extra/keys`` (class names, bytes) and
  ``extra/speaker`` (uint16 per sample), which tonic reads on construction; plus the empty
  ``<name>.h5.zip`` placeholder tonic's own existence check wants. tonic turns times into
  ``int(times * 1e6)`` µs (float64, truncated), ``x`` = unit, ``p`` = 1.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Expected events: what the loader must return (tonic's field names, ``t`` in microseconds).
EVENTS = np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])


@dataclass(frozen=True)
class Sample:
    path: Path
    events: np.ndarray  # EVENTS dtype, as the loader must return them
    label: int
    split: str | None = None  # None where the dataset has no official split


def random_events(
    rng: np.random.Generator, n: int, width: int, height: int, t_max: int, t_unit: int = 1
) -> np.ndarray:
    """``n`` events sorted by time, ``t`` a multiple of ``t_unit`` in ``[0, t_max)``."""
    ev = np.zeros(n, dtype=EVENTS)
    ev["x"] = rng.integers(0, width, n)
    ev["y"] = rng.integers(0, height, n)
    ev["t"] = np.sort(rng.integers(0, t_max // t_unit, n)) * t_unit
    ev["p"] = rng.integers(0, 2, n)
    return ev


# --------------------------------------------------------------------------------------------------
# DVS128 Gesture


def write_dvsgesture_npy(path: Path, events: np.ndarray) -> None:
    """tonic's DVSGesture sample: int64 ``[N, 4]`` columns x, y, p, t with ``t`` in milliseconds."""
    if np.any(events["t"] % 1000):
        raise ValueError("DVSGesture stores t in whole milliseconds")
    arr = np.stack([events["x"], events["y"], events["p"], events["t"] // 1000], axis=1).astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)


def make_dvsgesture(
    data_dir: Path,
    samples: Sequence[tuple[str, int, str, int]] = (
        ("train", 1, "fluorescent", 0),
        ("train", 1, "fluorescent", 5),
        ("train", 2, "lab", 10),
        ("train", 2, "natural", 3),
        ("test", 24, "led", 7),
        ("test", 29, "fluorescent_led", 1),
    ),
    n_events: int = 12,
    seed: int = 0,
) -> list[Sample]:
    """``(split, user, lighting, label)`` per sample, written to
    ``DVSGesture/ibmGesture{Train,Test}/user<NN>_<lighting>/<label>.npy``."""
    rng = np.random.default_rng(seed)
    out = []
    for split, user, lighting, label in samples:
        folder = "ibmGestureTrain" if split == "train" else "ibmGestureTest"
        path = data_dir / "DVSGesture" / folder / f"user{user:02d}_{lighting}" / f"{label}.npy"
        ev = random_events(rng, n_events, 128, 128, t_max=6_000_000, t_unit=1000)
        write_dvsgesture_npy(path, ev)
        out.append(Sample(path, ev, label, split))
    return out


# --------------------------------------------------------------------------------------------------
# N-MNIST / N-Caltech101 .bin

_TS_BITS = 23
_OVERFLOW_STEP = 2**13  # what tonic's read_mnist_file adds per overflow marker
_OVERFLOW_Y = 240


def encode_mnist_bin(events: np.ndarray) -> bytes:
    """The exact inverse of ``tonic.io.read_mnist_file`` for events sorted by ``t``.

    Before an event whose timestamp (less the overflow already signalled) does not fit in 23 bits,
    overflow markers ``(x=0, y=240, p=0, ts=0)`` are emitted, each worth ``2**13`` µs.
    """
    out = bytearray()
    offset = 0
    for x, y, t, p in zip(events["x"], events["y"], events["t"], events["p"], strict=True):
        x, y, t, p = int(x), int(y), int(t), int(p)
        if not (0 <= x < 256 and 0 <= y < 256 and y != _OVERFLOW_Y and p in (0, 1)):
            raise ValueError(f"event ({x}, {y}, {t}, {p}) cannot be stored in the 40-bit format")
        if t < offset:
            raise ValueError("events must be sorted by t")
        while t - offset >= 2**_TS_BITS:
            out += bytes((0, _OVERFLOW_Y, 0, 0, 0))
            offset += _OVERFLOW_STEP
        ts = t - offset
        out += bytes((x, y, (p << 7) | (ts >> 16), (ts >> 8) & 0xFF, ts & 0xFF))
    return bytes(out)


def write_mnist_bin(path: Path, events: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_mnist_bin(events))


def make_nmnist(
    data_dir: Path,
    per_digit: dict[str, Sequence[int]] | None = None,
    n_events: int = 10,
    seed: int = 1,
) -> list[Sample]:
    """``NMNIST/{Train,Test}/<digit>/<id>.bin``; ``per_digit[split]`` lists the digit of each sample."""
    per_digit = per_digit or {"train": (0, 0, 3, 7, 9), "test": (1, 3, 8)}
    rng = np.random.default_rng(seed)
    out = []
    for split, digits in per_digit.items():
        folder = "Train" if split == "train" else "Test"
        for i, digit in enumerate(digits):
            path = data_dir / "NMNIST" / folder / str(digit) / f"{i + 1:05d}.bin"
            ev = random_events(rng, n_events, 34, 34, t_max=310_000)
            write_mnist_bin(path, ev)
            out.append(Sample(path, ev, digit, split))
    return out


def make_ncaltech101(
    data_dir: Path,
    per_class: dict[str, int] | None = None,
    n_events: int = 10,
    seed: int = 2,
    annotations: bool = True,
) -> list[Sample]:
    """``NCALTECH101/Caltech101/<class>/image_<NNNN>.bin`` (``per_class[name]`` files per class).

    Events are offset (x >= 5, y >= 3) as in real recordings: tonic subtracts each sample's minimum
    x and y, so the expected events are the written ones less those minima. With ``annotations``, an
    ``annotation_0001.bin`` per class is also written under ``Caltech101_annotations/`` (as extracted
    from the real archive); it is not a sample.
    """
    from snnsec.datasets.tonic_sets import NCALTECH101_CLASSES

    per_class = per_class or {"accordion": 3, "BACKGROUND_Google": 2, "Faces_easy": 1, "yin_yang": 12}
    rng = np.random.default_rng(seed)
    out = []
    for name, count in per_class.items():
        for i in range(count):
            path = data_dir / "NCALTECH101" / "Caltech101" / name / f"image_{i + 1:04d}.bin"
            written = random_events(rng, n_events, 230, 170, t_max=300_000)
            written["x"] += 5
            written["y"] += 3
            write_mnist_bin(path, written)
            expected = written.copy()
            expected["x"] -= written["x"].min()
            expected["y"] -= written["y"].min()
            out.append(Sample(path, expected, NCALTECH101_CLASSES.index(name)))
        if annotations:
            box = np.zeros(4, dtype=EVENTS)
            box["x"], box["y"] = (10, 200, 200, 10), (10, 10, 150, 150)
            write_mnist_bin(data_dir / "NCALTECH101" / "Caltech101_annotations" / name / "annotation_0001.bin", box)
    return out


# --------------------------------------------------------------------------------------------------
# CIFAR10-DVS .aedat4

AEDAT4_MAGIC = b"#!AER-DAT4.0\r\n"


def _aedat4_description(width: int, height: int) -> str:
    p = "/mainloop/Recorder/outInfo/"
    return (
        '<dv version="2.0">\n'
        f'  <node name="outInfo" path="{p}">\n'
        f'    <node name="0" path="{p}0/">\n'
        '      <attr key="compression" type="string">NONE</attr>\n'
        '      <attr key="originalModuleName" type="string">capture</attr>\n'
        '      <attr key="originalOutputName" type="string">events</attr>\n'
        '      <attr key="typeDescription" type="string">Array of events (polarity ON/OFF).</attr>\n'
        '      <attr key="typeIdentifier" type="string">EVTS</attr>\n'
        f'      <node name="info" path="{p}0/info/">\n'
        f'        <attr key="sizeX" type="int">{width}</attr>\n'
        f'        <attr key="sizeY" type="int">{height}</attr>\n'
        '        <attr key="source" type="string">snnsec test fixture</attr>\n'
        "      </node>\n"
        "    </node>\n"
        "  </node>\n"
        "</dv>\n"
    )


def _pad4(buf: bytearray) -> bytearray:
    buf += b"\0" * (-len(buf) % 4)
    return buf


def _ioheader_flatbuffer(description: str) -> bytes:
    """``table IOHeader {compression: int32 = NONE; file_data_position: int64 = -1; description: string}``
    with identifier ``IOHE``; compression and file_data_position are left at their defaults (absent)."""
    text = description.encode()
    buf = bytearray()
    buf += struct.pack("<I", 20)  # 0: root uoffset -> table at 20
    buf += b"IOHE"  # 4: file identifier
    buf += struct.pack("<5H", 10, 8, 0, 0, 4)  # 8: vtable (size, table size, field offsets)
    buf += b"\0\0"  # 18: align the table
    buf += struct.pack("<iI", 20 - 8, 28 - 24)  # 20: soffset to vtable; 24: uoffset to string at 28
    buf += struct.pack("<I", len(text)) + text + b"\0"  # 28: string
    return bytes(_pad4(buf))


_EVENT_STRUCT = np.dtype({"names": ["t", "x", "y", "on"], "formats": ["<i8", "<i2", "<i2", "u1"],
                          "offsets": [0, 8, 10, 12], "itemsize": 16})


def _event_packet_flatbuffer(events: np.ndarray) -> bytes:
    """Size-prefixed ``table EventPacket {elements: [Event]}`` with identifier ``EVTS``; the vector's
    16-byte structs start 8-aligned (``Event`` holds an int64)."""
    rec = np.zeros(len(events), dtype=_EVENT_STRUCT)
    rec["t"], rec["x"], rec["y"], rec["on"] = events["t"], events["x"], events["y"], events["p"]
    body = bytearray()
    body += struct.pack("<I", 0)  # 0: size prefix, filled below
    body += struct.pack("<I", 20 - 4)  # 4: root uoffset -> table at 20
    body += b"EVTS"  # 8: file identifier
    body += struct.pack("<3H", 6, 8, 4)  # 12: vtable (size, table size, elements at +4)
    body += b"\0\0"  # 18
    body += struct.pack("<iI", 20 - 12, 28 - 24)  # 20: soffset to vtable; 24: uoffset to vector at 28
    body += struct.pack("<I", len(events))  # 28: vector length; elements at 32 (8-aligned)
    body += rec.tobytes()
    struct.pack_into("<I", body, 0, len(body) - 4)
    return bytes(body)


def write_aedat4(
    path: Path, events: np.ndarray, width: int = 128, height: int = 128, packet_size: int = 4
) -> None:
    """One uncompressed polarity-event stream (id 0), ``packet_size`` events per packet, no data table."""
    header = _ioheader_flatbuffer(_aedat4_description(width, height))
    out = bytearray(AEDAT4_MAGIC)
    out += struct.pack("<I", len(header)) + header
    for start in range(0, max(len(events), 1), packet_size):
        packet = _event_packet_flatbuffer(events[start:start + packet_size])
        out += struct.pack("<II", 0, len(packet)) + packet
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))


def make_cifar10dvs(
    data_dir: Path,
    per_class: dict[str, int] | None = None,
    n_events: int = 9,
    seed: int = 3,
) -> list[Sample]:
    """``CIFAR10DVS/<class>/cifar10_<class>_<i>.aedat4`` (``per_class[name]`` files, i from 0)."""
    from snnsec.datasets.tonic_sets import CIFAR10_DVS_CLASSES

    per_class = per_class or {"airplane": 10, "cat": 20, "truck": 3}
    rng = np.random.default_rng(seed)
    out = []
    for name, count in per_class.items():
        for i in range(count):
            path = data_dir / "CIFAR10DVS" / name / f"cifar10_{name}_{i}.aedat4"
            ev = random_events(rng, n_events, 128, 128, t_max=1_300_000)
            ev["t"] += 1_600_000_000_000_000  # AEDAT4 timestamps are absolute µs; tonic keeps them
            write_aedat4(path, ev)
            out.append(Sample(path, ev, CIFAR10_DVS_CLASSES.index(name)))
    return out


# --------------------------------------------------------------------------------------------------
# SHD / SSC (HDF5)


def write_hsd_h5(path: Path, times: Sequence[np.ndarray], units: Sequence[np.ndarray], labels: Sequence[int],
                 keys: Sequence[str], speakers: Sequence[int] | None = None,
                 time_dtype: type = np.float32) -> None:
    """One SHD/SSC split file: per sample spike ``times`` (seconds) and ``units`` (channels), its label,
    the class ``keys`` and speaker ids, in the layout tonic's HSD reader expects; also writes the empty
    ``.h5.zip`` placeholder beside it."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        spikes = f.create_group("spikes")
        t = spikes.create_dataset("times", (len(times),), dtype=h5py.vlen_dtype(np.dtype(time_dtype)))
        u = spikes.create_dataset("units", (len(units),), dtype=h5py.vlen_dtype(np.dtype(np.uint16)))
        for i, (ti, ui) in enumerate(zip(times, units, strict=True)):
            t[i] = np.asarray(ti, dtype=time_dtype)
            u[i] = np.asarray(ui, dtype=np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))
        extra = f.create_group("extra")
        extra.create_dataset("keys", data=np.array([k.encode() for k in keys]))
        speakers = np.zeros(len(labels), dtype=np.uint16) if speakers is None else speakers
        extra.create_dataset("speaker", data=np.asarray(speakers, dtype=np.uint16))
    Path(f"{path}.zip").touch()


def make_hsd(data_dir: Path, dataset: str = "shd", per_split: dict[str, int] | None = None,
             n_events: int = 60, duration_s: float = 1.4, seed: int = 5,
             time_dtype: type = np.float32) -> list[Sample]:
    """``SHD/shd_<split>.h5`` (or ``SSC/ssc_<split>.h5``) with ``per_split[split]`` samples of random
    spikes on 700 channels over ``duration_s`` seconds (some past 1 s, to be truncated by 100 x 10 ms
    bins), labels cycling over the classes; returns the expected events (fields x, y=0, t in µs, p=1)."""
    from snnsec.datasets.tonic_sets import SHD_CLASSES, SSC_CLASSES

    classes = SHD_CLASSES if dataset == "shd" else SSC_CLASSES
    folder = "SHD" if dataset == "shd" else "SSC"
    per_split = per_split or {"train": 24, "test": 12}
    rng = np.random.default_rng(seed)
    out = []
    for split, count in per_split.items():
        times, units, labels = [], [], []
        for i in range(count):
            ti = np.sort(rng.uniform(0, duration_s, n_events)).astype(time_dtype)
            ui = rng.integers(0, 700, n_events).astype(np.uint16)
            times.append(ti)
            units.append(ui)
            labels.append(i % len(classes))
        path = data_dir / folder / f"{dataset}_{split}.h5"
        write_hsd_h5(path, times, units, labels, classes, speakers=[i % 3 for i in range(count)],
                     time_dtype=time_dtype)
        for ti, ui, label in zip(times, units, labels, strict=True):
            ev = np.zeros(len(ti), dtype=EVENTS)
            ev["x"], ev["t"], ev["p"] = ui, (ti.astype(np.float64) * 1e6).astype(np.int64), 1
            out.append(Sample(path, ev, label, split))
    return out
