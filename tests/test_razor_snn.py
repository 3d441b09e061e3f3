"""razor-snn: frames pruned at inference by a binary mask (checked against the masked computation done by
hand), soft re-weighting in training, the tiny config learns digits-dvs with pruning on, pruning saves energy."""
import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional

from snnsec.classifier import Classifier
from snnsec.errors import ConfigError
from snnsec.training import TrainConfig, accuracy, seed_everything, train
from snnsec.zoo import MODELS, InputSpec, create_model
from snnsec.zoo.base import DVS128_INPUT, EMBEDDED_INPUT, describe
from snnsec.zoo.razor_snn import RazorSNN, energy_saving, kept_counts, pruning, soft_top_k

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = InputSpec(5, 2, 34, 34, 10)


def tiny(seed: int = 0, **over) -> Classifier:
    seed_everything(seed)
    return Classifier(create_model("razor-snn", SPEC, "tiny", **over), MODELS.get("razor-snn").feature_layer)


def frames(batch: int = 6, seed: int = 0) -> torch.Tensor:
    """Binary frames [B, T, P, H, W] whose event density varies over time (so the razors have something to rank)."""
    g = torch.Generator().manual_seed(seed)
    density = torch.rand(batch, SPEC.frames, 1, 1, 1, generator=g) * 0.2
    return (torch.rand(batch, SPEC.frames, 2, 34, 34, generator=g) < density).float()


def test_mask_prunes_frames_at_inference_and_not_when_disabled():
    clf, x = tiny(), frames()
    net = clf.net
    assert isinstance(net, RazorSNN)
    clf.predict(x)
    report = net.pruning_report()
    counts = kept_counts(SPEC.frames, len(net.razors), net.config.keep_ratio)  # 5 -> 4 -> 3 -> 2
    assert counts == [4, 3, 2]
    assert [report[f"razors.{i}"] for i in range(3)] == pytest.approx([1 - k / SPEC.frames for k in counts])
    assert report["overall"] == pytest.approx(0.4)
    with pruning(net, False):
        clf.predict(x)
        assert set(net.pruning_report().values()) == {0.0}
    assert net.pruning_enabled  # restored
    clf.predict(x)
    assert net.pruning_report()["overall"] > 0
    with torch.no_grad():  # a training-mode pass re-weights, never prunes
        net.train()
        clf.logits(x)
    assert set(net.pruning_report().values()) == {0.0}
    short = Classifier(create_model("razor-snn", InputSpec(4, 2, 34, 34, 10), "tiny", keep_ratio=0.8))
    assert [r.keep for r in short.net.razors] == [3, 2, None]  # the last razor keeps the 2 frames still alive
    short.predict(frames()[:, :4])
    assert short.net.pruning_report() == pytest.approx({"razors.0": 0.25, "razors.1": 0.5, "razors.2": 0.5,
                                                        "overall": 1.25 / 3})
    unpruned = tiny(keep_ratio=1.0)
    unpruned.predict(x)
    assert set(unpruned.net.pruning_report().values()) == {0.0}
    assert all(r.keep is None for r in unpruned.net.razors)


def spiking(clf: Classifier, x: torch.Tensor) -> Classifier:
    """``clf`` with BN statistics of one batch and a stronger FC layer, so that every layer spikes."""
    with torch.no_grad():
        for module in clf.net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # a cumulative average: after one batch, that batch's statistics
        clf.net.train()
        clf.logits(x)
        clf.net.fc[2].weight.mul_(6.0)
    clf.net.eval()
    assert clf.features(x).sum() > 0  # the feature layer fires
    return clf


def test_pruned_output_equals_masked_computation_by_hand():
    x = frames(seed=1)
    clf = spiking(tiny(seed=1), x)
    net = clf.net
    with torch.no_grad():
        logits = clf.logits(x)
        assert logits.std(0).min() > 1e-3  # the samples' logits differ: not the readout's bias alone
        masks = [r.last_mask.clone() for r in net.razors]  # [T, B] bool per razor
        for outer, inner in zip(masks, masks[1:]):  # hierarchical: a frame pruned once stays pruned
            assert not (inner & ~outer).any()
        counts = kept_counts(SPEC.frames, len(masks), net.config.keep_ratio)
        assert [m.sum(0).tolist() for m in masks] == [[k] * len(x) for k in counts]

        functional.reset_net(net)
        h, alive = x.transpose(0, 1), torch.ones_like(masks[0])
        stages = [*net.blocks, net.fc]
        for index, (mask, stage) in enumerate(zip(masks, stages)):
            h = h * alive.float().view(*alive.shape, *([1] * (h.dim() - 2)))
            z = net.razors[index].scores(h)  # the razor keeps the top-k scores among the frames still alive
            assert (z.masked_fill(~mask, float("inf")).min(0).values
                    >= z.masked_fill(~(alive & ~mask), float("-inf")).max(0).values).all()
            h = stage(h * mask.float().view(*mask.shape, *([1] * (h.dim() - 2))))  # pruned frames' input is zero
            alive = mask
        by_hand = net.head(h * alive.float().unsqueeze(-1)).mean(0)
        functional.reset_net(net)
    assert torch.allclose(logits, by_hand, atol=1e-5)
    with pruning(net, False), torch.no_grad():
        assert not torch.allclose(clf.logits(x), logits, atol=1e-3)  # the mask changed the result


def test_training_reweights_softly_and_reaches_the_embeddings():
    clf, x = tiny(), frames()
    net = clf.net.train()
    clf.logits(x).logsumexp(1).sum().backward()
    for razor in net.razors:
        for name in ("embedding", "channel_weights", "w1", "w2"):
            grad = getattr(razor, name).grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    z = torch.tensor([[0.9, 0.1], [0.5, 0.2], [0.2, 0.8], [-0.3, 0.5], [0.0, -0.4]], requires_grad=True)
    weights = soft_top_k(z, z.detach(), keep=3)
    top = torch.zeros_like(z, dtype=torch.bool).scatter_(0, z.detach().topk(3, dim=0).indices, True)
    assert (weights[top] == 1).all() and ((weights[~top] > 0) & (weights[~top] < 1)).all()
    weights.sum().backward()
    assert z.grad[~top].abs().min() > 0  # differentiable where it damps


def test_energy_is_lower_with_pruning():
    x = frames()
    saving = energy_saving(spiking(tiny(), x), x)
    assert saving.pruned_share["overall"] == pytest.approx(0.4)
    assert saving.ratio < 0.95, saving
    assert saving.convention == "measured"


def test_attack_records_carry_the_share_pruned_and_the_unpruned_energy():
    from snnsec.attacks.poisoning import FrameDataset
    from snnsec.energy import energy_convention
    from snnsec.evaluation import _frame_pruning

    x = frames(batch=12)
    clf = spiking(tiny(), x)
    test_set = FrameDataset(x.numpy().astype(np.int16), np.arange(12) % 10, lambda c: c.astype(np.float32))
    metrics = _frame_pruning(clf, test_set, energy_convention("measured"))
    assert metrics["frames_pruned"] == pytest.approx(0.4)
    assert metrics["energy_unpruned_mj"] > 0
    assert _frame_pruning(Classifier(create_model("spiking-cnn", SPEC, "tiny")), test_set,
                          energy_convention("measured")) == {}


def _stratified(dataset, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.asarray(dataset.labels)
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)])


@pytest.mark.parametrize("seed", [0, 1])
def test_tiny_learns_embedded_task_with_pruning_on(seed, digits_frames):
    train_set, test_set = digits_frames
    clf = tiny(seed)
    subset = train_set.subset(_stratified(train_set, 40, seed))  # 400 samples, 40 per class
    train(clf, subset, TrainConfig(epochs=4, batch_size=32, lr=3e-3, seed=seed))
    test = test_set.subset(np.arange(200))
    acc = accuracy(clf, test)
    assert clf.net.pruning_report()["overall"] == pytest.approx(0.4)
    assert acc > 0.3, f"razor-snn tiny (seed {seed}) reached only {acc:.2f} with pruning on (chance 0.10)"
    x = torch.stack([test[i][0] for i in range(32)])
    assert energy_saving(clf, x).ratio < 0.9


def test_configs_defaults_and_one_line_errors():
    entry = MODELS.get("razor-snn")
    assert entry.spiking and entry.feature_layer == "fc"
    assert entry.default_config(EMBEDDED_INPUT) == "small" and entry.default_config(DVS128_INPUT) == "gesture"
    card = describe("razor-snn", "gesture")
    assert card["input"]["frames"] == 16 and card["params"] > 1_000_000
    assert kept_counts(16, 6, 0.85) == [14, 12, 10, 9, 8, 7]
    narrow = Classifier(create_model("razor-snn", DVS128_INPUT, "gesture", channels=4, hidden=16), "fc")
    narrow.predict((torch.rand(1, 16, 2, 128, 128, generator=torch.Generator().manual_seed(0)) < 0.05).float())
    assert narrow.net.pruning_report()["razors.5"] == pytest.approx(1 - 7 / 16)
    for over in ({"keep_ratio": 0.0}, {"keep_ratio": 1.5}, {"blocks": 0}, {"dropout": 1.0}):
        with pytest.raises(ConfigError) as err:
            create_model("razor-snn", SPEC, "tiny", **over)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="at least"):
        create_model("razor-snn", InputSpec(5, 2, 8, 8, 10), "tiny", blocks=4)
    clf = tiny()
    for bad in (torch.zeros(2, 4, 2, 34, 34), torch.zeros(2, 5, 2, 34, 34, dtype=torch.long)):
        with pytest.raises(ConfigError) as err:
            clf.predict(bad)
        assert "\n" not in str(err.value)
    other = Classifier(create_model("spiking-cnn", SPEC, "tiny"), "fc")
    with pytest.raises(ConfigError, match="razor-snn"):
        energy_saving(other, frames())
    with pytest.raises(ConfigError, match="razor-snn"):
        with pruning(other.net, False):
            pass
