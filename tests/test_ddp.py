"""One training run over two CPU processes (gloo) takes the steps of one process on the same global batch:
the same weights, BatchNorm statistics and loss history up to the order of float sums; only rank 0 writes."""
import os
import shutil
import socket
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from spikingjelly.activation_based import layer
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from snnsec import distributed, integrity
from snnsec.classifier import Classifier
from snnsec.errors import ConfigError
from snnsec.records import RunRecord, append_record, write_tables
from snnsec.training import StepHook, TrainConfig, seed_everything, train
from snnsec.zoo import MODELS, InputSpec

SPEC = InputSpec(4, 2, 8, 8, 4)
#: name -> (samples, config): 27 samples in batches of 8 end in a batch of 3 (shares 2 and 1), trained with SGD
#: (whose steps scale with the gradient: a share weighted wrongly shows); 17 end in a batch of 1 (rank 1's
#: share is empty), trained with AdamW, warm-up and BN re-estimation over the global batches; "resumed" goes
#: on from the checkpoint a single process left when killed in its second epoch (of a run with another seed:
#: the resumed run ends elsewhere than a fresh one, so it shows the checkpoint was read).
RUNS = {
    "partial-batch": (27, TrainConfig(epochs=2, batch_size=8, lr=0.2, optimizer="sgd", momentum=0.9, seed=0)),
    "empty-share": (17, TrainConfig(epochs=1, batch_size=8, lr=1e-2, seed=1, warmup_steps=1,
                                     bn_recalibration_batches=2)),
    "resumed": (27, TrainConfig(epochs=3, batch_size=8, lr=0.2, optimizer="sgd", momentum=0.9, seed=2)),
}
CHECKPOINT = "resumed.partial.pt"
TOLERANCE = 1e-5  # measured: at most 1.2e-7 apart (float sums in another order)


def data(samples: int) -> TensorDataset:
    g = torch.Generator().manual_seed(samples)
    frames = (torch.rand(samples, SPEC.frames, SPEC.channels, SPEC.height, SPEC.width, generator=g) < 0.3).float()
    return TensorDataset(frames, torch.randint(0, SPEC.num_classes, (samples,), generator=g))


def tiny_cnn() -> Classifier:
    """spiking-cnn "tiny": conv-BN-LIF-pool x 2 (spikingjelly's multi-step BatchNorm2d), spiking FC, readout;
    the FC weights scaled up so that its neurons fire (~9% of steps) and the readout's weights learn too."""
    seed_everything(0)
    entry = MODELS.get("spiking-cnn")
    classifier = Classifier(entry.build(entry.resolve_config("tiny", SPEC), SPEC), entry.feature_layer)
    with torch.no_grad():
        classifier.net.fc[2].weight.mul_(8)
    return classifier


def trained(samples: int, config: TrainConfig, checkpoint: Path | None = None) -> dict:
    classifier = tiny_cnn()
    history = train(classifier, data(samples), config, checkpoint=checkpoint)
    return {"history": history, "state": {k: v.clone() for k, v in classifier.net.state_dict().items()},
            "types": sorted({type(m).__name__ for m in classifier.net.modules()})}


def _worker(rank: int, port: int, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    results = {name: trained(samples, config, out / CHECKPOINT if name == "resumed" else None)
               for name, (samples, config) in RUNS.items()}
    torch.save(results, out / f"rank{rank}.pt")
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(out: Path, timeout: float = 120.0) -> list[dict]:
    context = mp.start_processes(_worker, args=(free_port(), out), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"two-process training did not finish within {timeout:.0f} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


class Interrupt(Exception):
    pass


def interrupted(path: Path, samples: int, config: TrainConfig, steps: int) -> None:
    """A single-process run killed after ``steps`` SGD steps leaves its last finished epoch's checkpoint."""
    original, done = torch.optim.SGD.step, []

    def step_then_die(self, *args, **kwargs):
        if len(done) == steps:
            raise Interrupt
        done.append(1)
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch, pytest.raises(Interrupt):
        patch.setattr(torch.optim.SGD, "step", step_then_die)
        train(tiny_cnn(), data(samples), config, checkpoint=path)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    samples, config = RUNS["resumed"]
    interrupted(out / CHECKPOINT, samples, replace(config, seed=3), steps=6)  # 4 steps an epoch: in the 2nd
    shutil.copy(out / CHECKPOINT, out / "single.partial.pt")
    shutil.copy(integrity.digest_path(out / CHECKPOINT), integrity.digest_path(out / "single.partial.pt"))
    results = run_two_processes(out)
    assert not (out / CHECKPOINT).exists()  # removed when training ended
    results.append({"resumed": trained(samples, config, out / "single.partial.pt")})  # one process, same start
    return results


@pytest.mark.parametrize("name", sorted(RUNS))
def test_two_processes_train_like_one_on_the_same_global_batch(two_processes, name):
    samples, config = RUNS[name]
    rank0, rank1 = (two_processes[rank][name] for rank in range(2))
    single = trained(samples, config)
    if name == "resumed":
        fresh, single = single, two_processes[2][name]
        assert (fresh["state"]["head.1.weight"] - single["state"]["head.1.weight"]).abs().max() > 1e-3
    assert rank0["types"] == single["types"]  # BatchNorm layers are put back after training
    assert rank0["state"].keys() == single["state"].keys()
    for key, value in rank0["state"].items():
        assert torch.equal(value, rank1["state"][key]), key  # the processes hold one model
    start = tiny_cnn().net.state_dict()
    for key, value in single["state"].items():  # every weight learned: none is compared untouched
        assert not value.is_floating_point() or (value - start[key]).abs().max() > 1e-3, key
    for key, value in single["state"].items():
        if value.is_floating_point():
            torch.testing.assert_close(rank0["state"][key], value, rtol=0, atol=TOLERANCE, msg=key)
        else:
            assert torch.equal(rank0["state"][key], value), key  # num_batches_tracked
    assert rank0["history"] == rank1["history"]
    torch.testing.assert_close(torch.tensor(rank0["history"]), torch.tensor(single["history"]), rtol=0, atol=TOLERANCE)


def test_a_batch_size_the_processes_cannot_share_is_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="batch size 7 must be a multiple of the 2 processes"):
        train(tiny_cnn(), data(9), TrainConfig(epochs=1, batch_size=7))


def test_a_hook_that_did_not_opt_in_trains_in_one_process_only(monkeypatch):
    class Own(StepHook):
        pass

    class Mean(StepHook):
        data_parallel = True

    assert StepHook.data_parallel and Mean.data_parallel and not Own.data_parallel
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="Own cannot be split over processes"):
        train(tiny_cnn(), data(8), TrainConfig(epochs=1, batch_size=8), step=Own())


def test_shares_are_contiguous_and_cover_each_global_batch(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    for size in (0, 1, 2, 7, 9):
        parts = []
        for rank in range(3):
            monkeypatch.setenv("RANK", str(rank))
            parts.append(distributed.share(size))
        assert [parts[0].start, *(p.stop for p in parts)] == sorted([0, *(p.stop for p in parts)])
        assert parts[0].start == 0 and parts[-1].stop == size
        assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.BatchNorm2d(3), (6, 3, 4, 4)),
    (lambda: nn.BatchNorm1d(3, momentum=None), (6, 3)),
    (lambda: layer.BatchNorm2d(3, step_mode="m"), (2, 3, 3, 4, 4)),
    (lambda: layer.BatchNorm1d(3, step_mode="m"), (2, 3, 3, 5)),
])
def test_the_stand_in_normalises_like_the_layer_it_replaces(make, shape):
    """In one process the stand-in's "global" batch is the batch: outputs, gradients and running statistics
    match the layer's own (the same tensors are updated: the layer holds the trained values afterwards)."""
    torch.manual_seed(0)
    reference, norm = make(), make()
    with torch.no_grad():
        for layer_ in (reference, norm):
            layer_.weight.copy_(torch.linspace(0.5, 2, 3))
            layer_.bias.copy_(torch.linspace(-1, 1, 3))
    standin = distributed.GlobalBatchNorm(norm)
    for _ in range(2):
        x = torch.randn(shape) * 3 + 1
        x_ref, x_in = x.clone().requires_grad_(), x.clone().requires_grad_()
        (reference(x_ref) ** 3).sum().backward()
        (standin(x_in) ** 3).sum().backward()
        torch.testing.assert_close(x_in.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-4)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(norm.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    assert standin.state_dict().keys() == reference.state_dict().keys()


def test_only_the_main_process_writes_records_and_tables(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    record = RunRecord(kind="attack", run_id="x", config={}, metrics={}, started="", finished="", duration_s=0.0)
    append_record(tmp_path / "records.jsonl", record)
    assert write_tables([record.to_dict()], [], tmp_path, "attack_results", "caption") == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", MODELS.names())
def test_every_zoo_model_trains_on_an_empty_share(name):
    """A process's share of a last batch smaller than the world is empty: every model must take it."""
    entry = MODELS.get(name)
    spec = InputSpec(4, 2, 16, 16, 4)
    try:
        config = entry.resolve_config("tiny", spec)
    except ConfigError:  # a model without a tiny preset (its default fits the spec)
        config = entry.resolve_config(None, spec)
    classifier = Classifier(entry.build(config, spec), entry.feature_layer)
    classifier.net.train()
    logits = classifier.logits(torch.zeros(0, spec.frames, spec.channels, spec.height, spec.width))
    (F.cross_entropy(logits, torch.zeros(0, dtype=torch.long)) * 0.0).backward()
    assert logits.shape[0] == 0
    assert all(torch.isfinite(p.grad).all() for p in classifier.net.parameters() if p.grad is not None)
