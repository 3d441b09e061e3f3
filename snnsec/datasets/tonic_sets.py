"""The real neuromorphic datasets, read from disk by tonic: DVS128 Gesture, CIFAR10-DVS, N-MNIST, N-Caltech101.

Registered names: ``dvs128``, ``cifar10-dvs``, ``nmnist``, ``ncaltech101``, and the spiking-audio sets
``shd`` and ``ssc`` (all ``needs_data_dir=True``).

**Where the data comes from.** The data directory is the ``--data-dir DIR`` option, or else the
``SNNSEC_DATA_DIR`` environment variable. Under it each dataset lives in the folder tonic uses (tonic's
class name): ``DVSGesture/``, ``CIFAR10DVS/``, ``NMNIST/``, ``NCALTECH101/``. ``DIR`` may also be that
dataset folder itself. The layouts are listed in :data:`LAYOUTS` and in the error raised when a dataset
is missing.

**Reading.** Each split is a real tonic dataset object (``tonic.datasets.DVSGesture`` etc.), indexed
through tonic's own ``__getitem__``, so events come from tonic's readers with tonic's dtypes and units
(fields ``x``, ``y``, ``t`` in microseconds, ``p``). Only two of tonic's methods are replaced, in a
subclass that keeps tonic's class name (tonic derives the folder from it):

* ``download`` raises :class:`~snnsec.errors.DataNotFoundError` naming the layout, where to get the
  data and how to point the toolkit at it. The toolkit never downloads anything (no network access).
* ``_check_exists`` is our own check: the split's folder holds at least one sample file. tonic's check
  also wants the downloaded archive beside the extracted files and a minimum file count (10,000 .bin
  files per N-MNIST split, 1,000 .aedat4 for CIFAR10-DVS, 8,709 .bin for N-Caltech101, 100 .npy per
  DVS-Gesture split); below those it would try to download. Dropping both lets a partial copy, a
  subset or a test fixture load, and the archives can be deleted after extraction.

**Splits.** DVS128 Gesture and N-MNIST have official train/test folders. CIFAR10-DVS and N-Caltech101
have none; for them :func:`stratified_split` applies a fixed rule (no randomness): within each class,
sort the files by file name (plain string order) and put the first ``ceil(0.9 * n)`` in ``train`` and
the remaining ones in ``test``. For CIFAR10-DVS that is 900/100 per class. This is the rule of
SpikingJelly's ``split_to_train_test_set(0.9, dataset, num_classes, random_split=False)`` on
file-name-sorted samples, the split most SNN papers on these datasets report.

**Order and labels.** Samples are ordered by their path relative to the data directory (tonic's own
order depends on the file system for some datasets). Labels are ``int`` class indices into
``info.classes``.

**Cache key.** ``cache_key`` hashes the dataset name, the split, the resolved data directory, the
split's files (relative paths), their count, total size and newest modification time, tonic's
version and this module's reading version: it changes when the split's files change.

Dataset-specific notes (tonic 1.7.0):

* DVS128 Gesture: tonic's preprocessed copy (``.npy`` arrays ``[N, 4]`` of ``x, y, p, t`` with ``t`` in
  milliseconds; tonic multiplies ``t`` by 1000). Label = the file name (``0.npy`` .. ``10.npy``).
* CIFAR10-DVS: tonic's AEDAT4 conversion (not the original ``.aedat`` files), read with tonic's
  ``read_aedat4``, which needs the ``aedat`` package (tonic does not install it). Events are
  ``t: uint64, x: uint16, y: uint16, p: bool`` (the field title ``p`` that aedat leaves on the
  polarity field is dropped). Timestamps are kept as recorded (tonic does not shift them to 0).
* N-MNIST: 40-bit ``.bin`` events; label = the digit folder.
* SHD / SSC (Cramer et al. 2020, the Heidelberg spiking data sets): one HDF5 file per split,
  ``SHD/shd_{train,test}.h5`` and ``SSC/ssc_{train,valid,test}.h5`` (``spikes/times``: per sample a
  float array of spike times in seconds, ``spikes/units``: the channel of each spike in 0..699,
  ``labels``, ``extra/keys``, ``extra/speaker``). tonic's ``SHD``/``SSC`` readers give events
  ``t`` (``int(seconds * 1e6)``, truncated), ``x`` (the channel) and ``p = 1``; a ``y = 0`` field is
  added (fields ``x, y, t, p``, tonic's int64 widths) so that every sample lies on the (700, 1, 1) sensor
  like any event stream. Splits: SHD's official train/test; SSC's train and test, its ``valid`` file is
  not read (the benchmarks train on train and score on test; the file may be absent). Labels are the
  files' ``labels``; SHD's 20 classes are English then German digits, SSC's 35 the Speech Commands
  words in the files' (alphabetical) key order. tonic's check also wants the ``.h5.zip`` archive beside
  each ``.h5``; snnsec only needs the ``.h5``. Defaults: T = 100 bins of 10 ms (``window`` slicing,
  1 s, longer samples truncated, shorter ones padded with empty bins) over 140 channels (the 700
  summed in groups of 5), count encoding, as SNN-delays bins them (see :mod:`snnsec.framing`).
* N-Caltech101: 40-bit ``.bin`` events; tonic subtracts each sample's minimum ``x`` and ``y``. tonic
  declares no sensor size (recordings differ); we use (240, 180, 2) and drop any event outside it (the
  published recordings lie inside it, so this is a guard). tonic walks the whole ``NCALTECH101/``
  folder, so ``annotation_*.bin`` files of an extracted ``Caltech101_annotations/`` would become
  samples: we only keep files under ``NCALTECH101/Caltech101/``. Classes: the 101 folders (100 objects
  and ``BACKGROUND_Google``; N-Caltech101 has no ``Faces`` folder), ordered case-insensitively.
* ``ncaltech101-crop``: the same samples with the 180x180 centre crop Sneaky Spikes applies
  (``transforms.CenterCrop(min(H, W))`` on spikingjelly's 180x240 frames: columns 30..209): events
  with ``30 <= x < 210`` are kept, shifted by -30, on a 180x180 sensor. Two differences remain: the
  crop is cut from the events, so only the kept events count for the slicing (the reference framed the
  whole recording, then cropped the frames; every event stream here must lie on its sensor), and
  tonic subtracts each recording's minimum ``x``/``y`` while spikingjelly keeps the raw coordinates,
  so the 180 columns kept are relative to each recording's left edge.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import operator
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from snnsec.datasets.base import DATASETS, SPLITS, DatasetInfo, DatasetSpec
from snnsec.errors import ConfigError, DataError, DataNotFoundError, SnnsecError

__all__ = [
    "DATA_DIR_ENV",
    "HsdEventDataset",
    "LAYOUTS",
    "NCALTECH101_CLASSES",
    "TRAIN_FRACTION",
    "TonicEventDataset",
    "load_cifar10_dvs",
    "load_dvs128",
    "load_ncaltech101",
    "load_ncaltech101_crop",
    "load_nmnist",
    "load_shd",
    "load_ssc",
    "resolve_data_dir",
    "stratified_split",
]

#: Environment variable read when no ``--data-dir`` is given.
DATA_DIR_ENV = "SNNSEC_DATA_DIR"

#: Share of each class that goes to ``train`` for datasets without an official split.
TRAIN_FRACTION = 0.9

#: Bumped whenever this module changes the events it returns (part of every cache key).
_READ_VERSION = 1

DVS_GESTURE_CLASSES = (
    "hand clapping",
    "right hand wave",
    "left hand wave",
    "right arm clockwise",
    "right arm counter-clockwise",
    "left arm clockwise",
    "left arm counter-clockwise",
    "arm roll",
    "air drums",
    "air guitar",
    "other gestures",
)

CIFAR10_DVS_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

NMNIST_CLASSES = tuple(str(d) for d in range(10))

#: N-Caltech101's class folders (Caltech-101's categories less ``Faces``, plus ``BACKGROUND_Google``),
#: ordered case-insensitively; a label is the index into this tuple.
NCALTECH101_CLASSES = tuple(sorted((
    "accordion", "airplanes", "anchor", "ant", "BACKGROUND_Google", "barrel", "bass", "beaver",
    "binocular", "bonsai", "brain", "brontosaurus", "buddha", "butterfly", "camera", "cannon",
    "car_side", "ceiling_fan", "cellphone", "chair", "chandelier", "cougar_body", "cougar_face",
    "crab", "crayfish", "crocodile", "crocodile_head", "cup", "dalmatian", "dollar_bill", "dolphin",
    "dragonfly", "electric_guitar", "elephant", "emu", "euphonium", "ewer", "Faces_easy", "ferry",
    "flamingo", "flamingo_head", "garfield", "gerenuk", "gramophone", "grand_piano", "hawksbill",
    "headphone", "hedgehog", "helicopter", "ibis", "inline_skate", "joshua_tree", "kangaroo", "ketch",
    "lamp", "laptop", "Leopards", "llama", "lobster", "lotus", "mandolin", "mayfly", "menorah",
    "metronome", "minaret", "Motorbikes", "nautilus", "octopus", "okapi", "pagoda", "panda", "pigeon",
    "pizza", "platypus", "pyramid", "revolver", "rhino", "rooster", "saxophone", "schooner",
    "scissors", "scorpion", "sea_horse", "snoopy", "soccer_ball", "stapler", "starfish",
    "stegosaurus", "stop_sign", "strawberry", "sunflower", "tick", "trilobite", "umbrella", "watch",
    "water_lilly", "wheelchair", "wild_cat", "windsor_chair", "wrench", "yin_yang",
), key=str.lower))
assert len(NCALTECH101_CLASSES) == 101

#: N-Caltech101 has no sensor size in tonic; recordings (after tonic's min-subtraction) fit in this.
NCALTECH101_SENSOR_SIZE = (240, 180, 2)

#: Sneaky Spikes centre-crops N-Caltech101 frames to min(H, W) = 180 px: columns [30, 210).
NCALTECH101_CROP = 180


@dataclass(frozen=True)
class _Source:
    """How one dataset is laid out on disk and where it comes from."""

    name: str  # registry name
    title: str
    tonic_class: str  # class in tonic.datasets, also the folder under the data directory
    suffix: str  # sample file suffix
    layout: tuple[str, ...]  # lines relative to <data-dir>
    obtain: str  # where to get it, how to extract it
    official_split: bool  # tonic takes train=True/False
    samples_under: str | None = None  # folder (under tonic's) holding the samples; None: tonic's folder_name
    urls: dict[str, str] = field(default_factory=dict)  # tonic's download URLs (tested against tonic)

    def missing_message(self, problem: str) -> str:
        lines = [f"{self.title} (dataset '{self.name}') not found: {problem}.", "Expected layout:"]
        lines += [f"  {line}" for line in self.layout]
        lines.append(self.obtain)
        lines.append(
            f"Point the toolkit at the directory that contains {self.tonic_class}/ with --data-dir DIR "
            f"or the {DATA_DIR_ENV} environment variable (snnsec never downloads data)."
        )
        return "\n".join(lines)


_DVS_GESTURE = _Source(
    name="dvs128",
    title="DVS128 Gesture",
    tonic_class="DVSGesture",
    suffix=".npy",
    layout=(
        "<data-dir>/DVSGesture/ibmGestureTrain/user<NN>_<lighting>/<label>.npy   (train; <label> 0..10)",
        "<data-dir>/DVSGesture/ibmGestureTest/user<NN>_<lighting>/<label>.npy    (test)",
    ),
    obtain=(
        "Get tonic's preprocessed copy of IBM's DVS128 Gesture dataset (http://research.ibm.com/dvsgesture/): "
        "ibmGestureTrain.tar.gz from https://figshare.com/ndownloader/files/38022171 and "
        "ibmGestureTest.tar.gz from https://figshare.com/ndownloader/files/38020584; extract both into "
        "<data-dir>/DVSGesture/ (the .tar.gz archives themselves are not needed)."
    ),
    official_split=True,
    urls={
        "train_url": "https://figshare.com/ndownloader/files/38022171",
        "test_url": "https://figshare.com/ndownloader/files/38020584",
    },
)

_CIFAR10_DVS = _Source(
    name="cifar10-dvs",
    title="CIFAR10-DVS",
    tonic_class="CIFAR10DVS",
    suffix=".aedat4",
    layout=(
        "<data-dir>/CIFAR10DVS/<class>/<name>.aedat4   (<class>: " + ", ".join(CIFAR10_DVS_CLASSES) + ")",
        f"no official split: per class, files sorted by name, first {TRAIN_FRACTION:.0%} train, rest test",
    ),
    obtain=(
        "Get tonic's AEDAT4 conversion of CIFAR10-DVS (https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671; "
        "the original .aedat files are not read): CIFAR10DVS.zip from https://figshare.com/ndownloader/files/38023437; "
        "extract it into <data-dir>/CIFAR10DVS/ and extract each <class>.zip inside it there "
        "(the .zip archives themselves are not needed). Reading .aedat4 needs the 'aedat' package (pip install aedat)."
    ),
    official_split=False,
    samples_under="",
    urls={"url": "https://figshare.com/ndownloader/files/38023437"},
)

_NMNIST = _Source(
    name="nmnist",
    title="N-MNIST",
    tonic_class="NMNIST",
    suffix=".bin",
    layout=(
        "<data-dir>/NMNIST/Train/<digit>/<id>.bin   (train)",
        "<data-dir>/NMNIST/Test/<digit>/<id>.bin    (test)",
    ),
    obtain=(
        "Get N-MNIST (https://www.garrickorchard.com/datasets/n-mnist): train.zip from "
        "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/39c25547-014b-4137-a934-9d29fa53c7a0/file_downloaded "
        "and test.zip from "
        "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/05a4d654-7e03-4c15-bdfa-9bb2bcbea494/file_downloaded; "
        "extract both into <data-dir>/NMNIST/ (the .zip archives themselves are not needed)."
    ),
    official_split=True,
    urls={
        "train_url": "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/39c25547-014b-4137-a934-9d29fa53c7a0/file_downloaded",
        "test_url": "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/05a4d654-7e03-4c15-bdfa-9bb2bcbea494/file_downloaded",
    },
)

_NCALTECH101 = _Source(
    name="ncaltech101",
    title="N-Caltech101",
    tonic_class="NCALTECH101",
    suffix=".bin",
    layout=(
        "<data-dir>/NCALTECH101/Caltech101/<class>/image_<NNNN>.bin   (101 class folders, BACKGROUND_Google included)",
        f"no official split: per class, files sorted by name, first {TRAIN_FRACTION:.0%} train, rest test",
    ),
    obtain=(
        "Get N-Caltech101 (https://www.garrickorchard.com/datasets/n-caltech101): N-Caltech101-archive.zip from "
        "https://data.mendeley.com/public-files/datasets/cy6cvx3ryv/files/36b5c52a-b49d-4853-addb-a836a8883e49/file_downloaded; "
        "extract it into <data-dir>/NCALTECH101/ and extract the Caltech101.zip inside it there "
        "(Caltech101_annotations and the .zip archives are not needed)."
    ),
    official_split=False,
    samples_under="Caltech101",
    urls={
        "url": "https://data.mendeley.com/public-files/datasets/cy6cvx3ryv/files/36b5c52a-b49d-4853-addb-a836a8883e49/file_downloaded",
    },
)

_HSD_OBTAIN = (
    "Get the {title} from https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/: {files} from "
    "https://zenkelab.org/datasets/; unzip them into <data-dir>/{folder}/ (snnsec reads only the .h5 files; "
    "tonic's own check also wants the .h5.zip archives beside them)."
)

_SHD = _Source(
    name="shd",
    title="Spiking Heidelberg Digits (SHD)",
    tonic_class="SHD",
    suffix=".h5",
    layout=("<data-dir>/SHD/shd_train.h5   (train)", "<data-dir>/SHD/shd_test.h5    (test)"),
    obtain=_HSD_OBTAIN.format(title="Spiking Heidelberg Digits", files="shd_train.h5.zip and shd_test.h5.zip",
                              folder="SHD"),
    official_split=True,
    urls={"base_url": "https://zenkelab.org/datasets/"},
)

_SSC = _Source(
    name="ssc",
    title="Spiking Speech Commands (SSC)",
    tonic_class="SSC",
    suffix=".h5",
    layout=("<data-dir>/SSC/ssc_train.h5   (train)", "<data-dir>/SSC/ssc_test.h5    (test)",
            "<data-dir>/SSC/ssc_valid.h5   (not read; may be absent)"),
    obtain=_HSD_OBTAIN.format(title="Spiking Speech Commands", files="ssc_train.h5.zip and ssc_test.h5.zip",
                              folder="SSC"),
    official_split=True,
    urls={"base_url": "https://zenkelab.org/datasets/"},
)

_SOURCES = {s.name: s for s in (_DVS_GESTURE, _CIFAR10_DVS, _NMNIST, _NCALTECH101, _SHD, _SSC)}

#: Expected on-disk layout of each registered dataset, relative to the data directory.
LAYOUTS: dict[str, tuple[str, ...]] = {s.name: s.layout for s in _SOURCES.values()}


# --------------------------------------------------------------------------------------------------
# data directory, tonic subclasses


def resolve_data_dir(data_dir: str | os.PathLike[str] | None, dataset: str) -> Path:
    """The directory holding ``<TonicClass>/`` for ``dataset``: ``data_dir``, else ``$SNNSEC_DATA_DIR``.

    ``data_dir`` may also name the dataset's own folder (``.../DVSGesture``); its parent is returned then.
    Raises :class:`DataNotFoundError` when neither is given or the directory does not exist.
    """
    src = _SOURCES[dataset]
    if data_dir is None or str(data_dir) == "":
        env = os.environ.get(DATA_DIR_ENV, "")
        if not env:
            raise DataNotFoundError(src.missing_message(
                f"no data directory given: pass --data-dir DIR or set the {DATA_DIR_ENV} environment variable"
            ))
        data_dir = env
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(src.missing_message(f"the data directory {root} does not exist"))
    root = root.resolve()
    if root.name == src.tonic_class and not (root / src.tonic_class).is_dir():
        root = root.parent
    return root


class _LocalOnly:
    """Mixed in before a tonic dataset class: checks for local files our way and never downloads."""

    _snnsec_source: _Source
    location_on_system: str
    folder_name: str

    def _snnsec_sample_root(self) -> Path:
        under = self._snnsec_source.samples_under
        return Path(self.location_on_system, self.folder_name if under is None else under)

    def _check_exists(self) -> bool:
        root = self._snnsec_sample_root()
        if self._snnsec_source.suffix == ".h5":  # SHD/SSC: one file per split, named by tonic
            return Path(self.location_on_system, self.data_filename).is_file()
        return root.is_dir() and next(root.rglob(f"*{self._snnsec_source.suffix}"), None) is not None

    def download(self) -> None:
        root = self._snnsec_sample_root()
        if self._snnsec_source.suffix == ".h5":
            raise DataNotFoundError(self._snnsec_source.missing_message(f"no {self.data_filename} in {root}"))
        raise DataNotFoundError(
            self._snnsec_source.missing_message(f"no {self._snnsec_source.suffix} files under {root}")
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # The class is made at run time (see _local_class), so pickle (DataLoader workers under
        # spawn/forkserver) rebuilds it by dataset name instead of looking it up by its qualified name.
        return (_restore_local, (self._snnsec_source.name, self.__dict__))


def _restore_local(dataset: str, state: dict[str, Any]) -> Any:
    cls = _local_class(dataset)
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


@functools.cache
def _local_class(dataset: str) -> type:
    """tonic's dataset class with :class:`_LocalOnly` mixed in, under tonic's class name (tonic's
    folder is ``save_to/<class name>``). tonic is imported here, not at module import: it imports torch."""
    import tonic.datasets

    src = _SOURCES[dataset]
    base = getattr(tonic.datasets, src.tonic_class)
    return type(src.tonic_class, (_LocalOnly, base), {"_snnsec_source": src, "__module__": __name__})


def _require_reader(src: _Source) -> None:
    if src.suffix == ".aedat4" and importlib.util.find_spec("aedat") is None:
        raise SnnsecError(
            f"reading {src.title} (.aedat4 files) needs the 'aedat' package, which tonic uses but does not "
            "install: pip install aedat"
        )


# --------------------------------------------------------------------------------------------------
# splits, cache keys, the dataset object


def stratified_split(
    files: Sequence[str | os.PathLike[str]],
    labels: Sequence[int],
    split: str,
    train_fraction: float = TRAIN_FRACTION,
) -> list[int]:
    """Positions (into ``files``) of ``split`` under the fixed per-class rule.

    Within each class, files are sorted by file name (then by full path); the first
    ``ceil(train_fraction * n)`` are ``train``, the rest ``test``. Returned positions are ascending.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    by_class: dict[int, list[int]] = {}
    for pos, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(pos)
    chosen: list[int] = []
    for positions in by_class.values():
        positions.sort(key=lambda i: (Path(files[i]).name, str(files[i])))
        n_train = math.ceil(train_fraction * len(positions))
        chosen += positions[:n_train] if split == "train" else positions[n_train:]
    return sorted(chosen)


def _cache_key(name: str, split: str, root: Path, files: Sequence[Path]) -> str:
    import tonic

    digest = hashlib.sha256()
    digest.update(f"{name}\0{split}\0{root}\0{len(files)}\0{tonic.__version__}\0{_READ_VERSION}\0".encode())
    total = newest = 0
    for f in files:
        st = f.stat()
        total += st.st_size
        newest = max(newest, st.st_mtime_ns)
        digest.update(f.relative_to(root).as_posix().encode() + b"\0")
    digest.update(f"{total}\0{newest}".encode())
    return f"{name}/{split}/{digest.hexdigest()[:20]}"


class TonicEventDataset:
    """One split of a tonic dataset: ``dataset[i] -> (events, label)`` (the :class:`EventDataset` protocol).

    ``events`` is tonic's structured array (fields ``x``, ``y``, ``t`` in µs, ``p``); ``label`` an ``int``.
    ``files`` and ``labels`` list every sample of the split without reading it; ``tonic_dataset`` is the
    underlying tonic object (``files[i]`` is ``tonic_dataset.data[tonic_indices[i]]``).
    """

    def __init__(
        self,
        info: DatasetInfo,
        split: str,
        root: Path,
        tonic_dataset: Any,
        tonic_indices: Sequence[int],
        labels: Sequence[int],
        postprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.info = info
        self.split = split
        self.root = root
        self.tonic_dataset = tonic_dataset
        self.tonic_indices = tuple(int(i) for i in tonic_indices)
        self.labels = tuple(int(label) for label in labels)
        self.files = tuple(Path(tonic_dataset.data[i]) for i in self.tonic_indices)
        self._postprocess = postprocess
        self.cache_key = _cache_key(info.name, split, root, self.files)

    def __len__(self) -> int:
        return len(self.tonic_indices)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        index = operator.index(index)
        _check_file_size(self.files[index])
        events, _ = self.tonic_dataset[self.tonic_indices[index]]
        if self._postprocess is not None:
            events = self._postprocess(events)
        return events, self.labels[index]

    def __repr__(self) -> str:
        return f"TonicEventDataset({self.info.name!r}, split={self.split!r}, n={len(self)}, root={str(self.root)!r})"


#: Bytes per event of the 40-bit ``.bin`` format (N-MNIST, N-Caltech101): a file is a whole number of them.
_BIN_EVENT_BYTES = 5


def _check_file_size(path: Path) -> None:
    """A ``.bin`` file cut inside an event is truncated: tonic would read it silently or fail obscurely."""
    if path.suffix == ".bin":
        size = path.stat().st_size
        if size % _BIN_EVENT_BYTES:
            raise DataError(f"{path} is truncated: {size} bytes is not a whole number of "
                            f"{_BIN_EVENT_BYTES}-byte events; replace the file or remove it from the data directory")


def _is_hidden(rel: Path) -> bool:
    """macOS archive debris (``__MACOSX/``, ``._name``) and other hidden files are not samples."""
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


def _open(
    src: _Source,
    info: DatasetInfo,
    split: str,
    data_dir: str | os.PathLike[str] | None,
    label_of: Callable[[Any, Path], int | None],
    keep: Callable[[Path, Path], bool] = lambda path, folder: True,
    postprocess: Callable[[np.ndarray], np.ndarray] | None = None,
) -> TonicEventDataset:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r} for dataset {src.name!r}; choose one of: {', '.join(SPLITS)}")
    root = resolve_data_dir(data_dir, src.name)
    cls = _local_class(src.name)
    kwargs = {"train": split == "train"} if src.official_split else {}
    folder = root / src.tonic_class
    try:
        tonic_ds = cls(str(root), **kwargs)  # our download() raises DataNotFoundError when nothing is there
    except (ValueError, KeyError, IndexError) as exc:  # tonic derives labels/metadata from folder names
        raise DataNotFoundError(src.missing_message(
            f"unexpected files or folders under {folder} (tonic: {type(exc).__name__}: {exc})"
        )) from exc

    picked: list[tuple[str, int, int]] = []  # (relative path, tonic index, label)
    for i, (path, target) in enumerate(zip(tonic_ds.data, tonic_ds.targets, strict=True)):
        path = Path(path)
        if _is_hidden(path.relative_to(folder)) or not keep(path, folder):
            continue
        label = label_of(target, path)
        if label is None or not 0 <= label < info.num_classes:
            raise DataNotFoundError(src.missing_message(
                f"{path} does not fit the layout (its label {target!r} is not one of the "
                f"{info.num_classes} classes)"
            ))
        picked.append((path.relative_to(root).as_posix(), i, label))
    if not picked:
        raise DataNotFoundError(src.missing_message(f"no {src.suffix} samples under {folder}"))
    picked.sort()
    if not src.official_split:
        positions = stratified_split([p[0] for p in picked], [p[2] for p in picked], split)
        picked = [picked[i] for i in positions]
    _require_reader(src)
    return TonicEventDataset(
        info, split, root, tonic_ds, [p[1] for p in picked], [p[2] for p in picked], postprocess
    )


# --------------------------------------------------------------------------------------------------
# the four datasets


DVS128_INFO = DatasetInfo(
    name="dvs128",
    sensor_size=(128, 128, 2),
    classes=DVS_GESTURE_CLASSES,
    description="IBM DVS128 Gesture: 11 hand and arm gestures by 29 subjects under several lighting "
    "conditions (tonic's copy).",
)
CIFAR10_DVS_INFO = DatasetInfo(
    name="cifar10-dvs",
    sensor_size=(128, 128, 2),
    classes=CIFAR10_DVS_CLASSES,
    description="CIFAR10-DVS: 10,000 CIFAR-10 images recorded with a DVS128 (tonic's AEDAT4 copy); "
    "fixed stratified 90/10 split.",
)
NMNIST_INFO = DatasetInfo(
    name="nmnist",
    sensor_size=(34, 34, 2),
    classes=NMNIST_CLASSES,
    description="N-MNIST: MNIST digits recorded with an ATIS sensor over three saccades.",
)
NCALTECH101_INFO = DatasetInfo(
    name="ncaltech101",
    sensor_size=NCALTECH101_SENSOR_SIZE,
    classes=NCALTECH101_CLASSES,
    description="N-Caltech101: Caltech-101 images recorded with an ATIS sensor (100 objects + background); "
    "fixed stratified 90/10 split.",
)


NCALTECH101_CROP_INFO = DatasetInfo(
    name="ncaltech101-crop",
    sensor_size=(NCALTECH101_CROP, NCALTECH101_CROP, 2),
    classes=NCALTECH101_CLASSES,
    description="N-Caltech101 with Sneaky Spikes' 180x180 centre crop (columns 30..209); "
    "fixed stratified 90/10 split.",
)


def _int_label(target: Any, path: Path) -> int:
    return int(target)


_NCALTECH_INDEX = {name: i for i, name in enumerate(NCALTECH101_CLASSES)}


def _ncaltech_label(target: Any, path: Path) -> int | None:
    return _NCALTECH_INDEX.get(str(target))


def _under_caltech101(path: Path, folder: Path) -> bool:
    """tonic walks all of NCALTECH101/: keep the samples, not e.g. Caltech101_annotations/*.bin."""
    rel = path.relative_to(folder).parts
    return len(rel) >= 3 and rel[0] == "Caltech101"


def _inside_ncaltech_sensor(events: np.ndarray) -> np.ndarray:
    width, height, _ = NCALTECH101_SENSOR_SIZE
    inside = (events["x"] < width) & (events["y"] < height)
    return events if inside.all() else events[inside]


def _without_field_titles(events: np.ndarray) -> np.ndarray:
    """aedat names the polarity field ``on`` with title ``p``; tonic renames it ``p`` but the title stays.
    Return a view with plain field names (same memory layout)."""
    fields = events.dtype.fields or {}
    if all(len(spec) == 2 for spec in fields.values()):
        return events
    names = list(events.dtype.names)
    plain = np.dtype({
        "names": names,
        "formats": [fields[n][0] for n in names],
        "offsets": [fields[n][1] for n in names],
        "itemsize": events.dtype.itemsize,
    })
    return events.view(plain)


def load_dvs128(split: str, data_dir: str | os.PathLike[str] | None = None) -> TonicEventDataset:
    """DVS128 Gesture, official split (``ibmGestureTrain`` / ``ibmGestureTest``)."""
    return _open(_DVS_GESTURE, DVS128_INFO, split, data_dir, _int_label)


def load_cifar10_dvs(split: str, data_dir: str | os.PathLike[str] | None = None) -> TonicEventDataset:
    """CIFAR10-DVS, fixed stratified 90/10 split (see :func:`stratified_split`)."""
    return _open(_CIFAR10_DVS, CIFAR10_DVS_INFO, split, data_dir, _int_label, postprocess=_without_field_titles)


def load_nmnist(split: str, data_dir: str | os.PathLike[str] | None = None) -> TonicEventDataset:
    """N-MNIST, official split (``Train`` / ``Test``)."""
    return _open(_NMNIST, NMNIST_INFO, split, data_dir, _int_label)


def load_ncaltech101(split: str, data_dir: str | os.PathLike[str] | None = None) -> TonicEventDataset:
    """N-Caltech101, fixed stratified 90/10 split (see :func:`stratified_split`)."""
    return _open(
        _NCALTECH101, NCALTECH101_INFO, split, data_dir, _ncaltech_label,
        keep=_under_caltech101, postprocess=_inside_ncaltech_sensor,
    )


def _ncaltech_centre_crop(events: np.ndarray) -> np.ndarray:
    """The events inside the 180x180 centre crop (columns 30..209 of 240), shifted to start at column 0."""
    left = (NCALTECH101_SENSOR_SIZE[0] - NCALTECH101_CROP) // 2
    inside = (events["x"] >= left) & (events["x"] < left + NCALTECH101_CROP) & (events["y"] < NCALTECH101_CROP)
    events = events[inside]  # a copy
    events["x"] -= left
    return events


def load_ncaltech101_crop(split: str, data_dir: str | os.PathLike[str] | None = None) -> TonicEventDataset:
    """N-Caltech101 (same files and split as ``ncaltech101``) on the reference's 180x180 centre crop."""
    return _open(
        _NCALTECH101, NCALTECH101_CROP_INFO, split, data_dir, _ncaltech_label,
        keep=_under_caltech101, postprocess=_ncaltech_centre_crop,
    )


DATASETS.add("dvs128", DatasetSpec(info=DVS128_INFO, load=load_dvs128, needs_data_dir=True, default_frames=16))
DATASETS.add(
    "cifar10-dvs", DatasetSpec(info=CIFAR10_DVS_INFO, load=load_cifar10_dvs, needs_data_dir=True, default_frames=16)
)
DATASETS.add("nmnist", DatasetSpec(info=NMNIST_INFO, load=load_nmnist, needs_data_dir=True, default_frames=10))
DATASETS.add(
    "ncaltech101", DatasetSpec(info=NCALTECH101_INFO, load=load_ncaltech101, needs_data_dir=True, default_frames=10)
)
DATASETS.add(
    "ncaltech101-crop",
    DatasetSpec(info=NCALTECH101_CROP_INFO, load=load_ncaltech101_crop, needs_data_dir=True, default_frames=10),
)


# --------------------------------------------------------------------------------------------------
# spiking audio: SHD and SSC (one HDF5 file per split)


SHD_CLASSES = (
    *(f"english {w}" for w in ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")),
    *(f"german {w}" for w in ("null", "eins", "zwei", "drei", "vier", "fuenf", "sechs", "sieben", "acht", "neun")),
)
SSC_CLASSES = (
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go", "happy",
    "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven", "sheila", "six", "stop",
    "three", "tree", "two", "up", "visual", "wow", "yes", "zero",
)
#: SHD/SSC channels: 700 cochlear channels, one row, one polarity (tonic's (width, height, polarities)).
HSD_SENSOR_SIZE = (700, 1, 1)
#: The audio sets' defaults: 100 bins of 10 ms (1 s), channels summed by 5 (700 -> 140), as SNN-delays.
HSD_FRAMES, HSD_CHANNELS = 100, 140

SHD_INFO = DatasetInfo(
    name="shd",
    sensor_size=HSD_SENSOR_SIZE,
    classes=SHD_CLASSES,
    description="Spiking Heidelberg Digits: spoken digits 0-9 in English and German (12 speakers), "
    "700-channel cochlea-model spikes (Cramer et al. 2020).",
)
SSC_INFO = DatasetInfo(
    name="ssc",
    sensor_size=HSD_SENSOR_SIZE,
    classes=SSC_CLASSES,
    description="Spiking Speech Commands: Google Speech Commands v0.2 (35 words), 700-channel cochlea-model "
    "spikes (Cramer et al. 2020); train and test files.",
)


class HsdEventDataset:
    """One split of SHD or SSC: ``dataset[i] -> (events, label)`` read by tonic's ``SHD``/``SSC`` reader.

    ``events`` has fields ``x`` (channel), ``y`` (0), ``t`` (µs), ``p`` (1, as tonic gives it), int64.
    ``path`` is the split's ``.h5`` file, ``labels`` every sample's label (read once, without the spikes).
    """

    def __init__(self, info: DatasetInfo, split: str, root: Path, tonic_dataset: Any) -> None:
        import h5py

        self.info, self.split, self.root, self.tonic_dataset = info, split, root, tonic_dataset
        self.path = Path(tonic_dataset.location_on_system, tonic_dataset.data_filename)
        with h5py.File(self.path, "r") as f:
            labels = np.asarray(f["labels"][()])
            n_times, n_units = len(f["spikes/times"]), len(f["spikes/units"])
        if not len(labels) == n_times == n_units:
            raise DataError(f"{self.path} is inconsistent: {len(labels)} labels, {n_times} spike-time and "
                            f"{n_units} spike-unit arrays; replace the file")
        self.labels = tuple(int(label) for label in labels)
        self.cache_key = _cache_key(info.name, split, root, [self.path])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        index = operator.index(index)
        events, _ = self.tonic_dataset[index]
        return with_row(events), self.labels[index]

    def __repr__(self) -> str:
        return f"HsdEventDataset({self.info.name!r}, split={self.split!r}, n={len(self)}, path={str(self.path)!r})"


#: SHD/SSC events as served: tonic's fields and widths plus ``y``.
HSD_EVENT_DTYPE = np.dtype([("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])


def with_row(events: np.ndarray) -> np.ndarray:
    """tonic's 1-D audio events (fields t, x, p) as x, y (= 0), t, p events on a (W, 1, 1) sensor."""
    out = np.zeros(len(events), dtype=HSD_EVENT_DTYPE)
    for name in ("x", "t", "p"):
        out[name] = events[name]
    return out


def _open_hsd(src: _Source, info: DatasetInfo, split: str, data_dir: str | os.PathLike[str] | None) -> HsdEventDataset:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r} for dataset {src.name!r}; choose one of: {', '.join(SPLITS)}")
    root = resolve_data_dir(data_dir, src.name)
    cls = _local_class(src.name)
    kwargs = {"train": split == "train"} if src.tonic_class == "SHD" else {"split": split}
    try:
        tonic_ds = cls(str(root), **kwargs)  # our download() raises DataNotFoundError when the file is absent
        return HsdEventDataset(info, split, root, tonic_ds)
    except SnnsecError:
        raise
    except (OSError, KeyError, ValueError) as exc:  # not HDF5, or a group tonic reads is missing
        reason = " ".join(str(exc).split())
        raise DataNotFoundError(src.missing_message(
            f"{root / src.tonic_class} holds a {split} file that is not in the layout ({type(exc).__name__}: {reason})"
        )) from exc


def load_shd(split: str, data_dir: str | os.PathLike[str] | None = None) -> HsdEventDataset:
    """Spiking Heidelberg Digits, official split (``shd_train.h5`` / ``shd_test.h5``)."""
    return _open_hsd(_SHD, SHD_INFO, split, data_dir)


def load_ssc(split: str, data_dir: str | os.PathLike[str] | None = None) -> HsdEventDataset:
    """Spiking Speech Commands, ``ssc_train.h5`` / ``ssc_test.h5`` (``ssc_valid.h5`` is not read)."""
    return _open_hsd(_SSC, SSC_INFO, split, data_dir)


_AUDIO_DEFAULTS = {"needs_data_dir": True, "default_frames": HSD_FRAMES, "default_size": HSD_CHANNELS,
                   "default_model": "delay-snn", "default_slicing": "window", "default_encoding": "counts",
                   "default_trigger": "band"}
DATASETS.add("shd", DatasetSpec(info=SHD_INFO, load=load_shd, **_AUDIO_DEFAULTS))
DATASETS.add("ssc", DatasetSpec(info=SSC_INFO, load=load_ssc, **_AUDIO_DEFAULTS))
