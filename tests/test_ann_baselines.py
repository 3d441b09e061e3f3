"""ANN baselines (resnet18, vit, xformer): shapes and parameter counts, fold vs per-bin averaging, learning the
embedded task, MAC-priced energy, and the defenses that refuse a model without spiking neurons."""
import numpy as np
import pytest
import torch

from snnsec.classifier import Classifier
from snnsec.energy import E_MAC_PJ, measure_energy
from snnsec.errors import ConfigError
from snnsec.training import TrainConfig, accuracy, seed_everything, train
from snnsec.zoo import MODELS, InputSpec, create_model
from snnsec.zoo.base import DVS128_INPUT, describe

pytestmark = pytest.mark.usefixtures("one_thread")

ANNS = ("resnet18", "vit", "xformer")
SPEC = InputSpec(frames=5, channels=2, height=34, width=34, num_classes=10)

#: Parameters of every named config on the input it was designed for (paper: 128x128, T=16, P=2, 11 classes;
#: the others: 34x34, T=10, 10 classes).
PARAMS = {
    ("resnet18", "paper"): 11_273_099,  # 32 input channels (T*P); torchvision's RGB/1000-class resnet18: 11,689,512
    ("resnet18", "paper-average"): 11_179_019,  # 2 input channels, run per bin
    ("resnet18", "small"): 703_914,
    ("resnet18", "small-average"): 701_322,
    ("resnet18", "tiny"): 177_626,
    ("resnet18", "tiny-average"): 176_330,
    ("vit", "paper"): 6_926_603,  # ViT-Ti dims, patch 16 over 32 input channels
    ("vit", "small"): 226_570,
    ("vit", "tiny"): 82_826,
    ("xformer", "paper"): 4_948_895,
    ("xformer", "small"): 193_762,
    ("xformer", "tiny"): 91_438,
}


def _frames(spec: InputSpec, batch: int, seed: int = 0) -> torch.Tensor:
    """Seeded binary frames ``[B, T, P, H, W]`` (the dataset layout)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, spec.frames, spec.channels, spec.height, spec.width, generator=g) < 0.2).float()


def _classifier(name: str, config: str, spec: InputSpec = SPEC, seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    entry = MODELS.get(name)
    return Classifier(entry.build(entry.resolve_config(config, spec), spec).eval(), entry.feature_layer)


# ---- registry, parameter counts, shapes --------------------------------------------------------------------

@pytest.mark.parametrize("name", ANNS)
def test_registered_as_anns_with_cpu_configs(name):
    entry = MODELS.get(name)
    assert not entry.spiking and entry.reference and entry.description
    assert {"paper", "small", "tiny"} <= set(entry.configs)
    assert entry.default_config(SPEC) == "tiny" and entry.default_config(DVS128_INPUT) == "paper"
    assert entry.input_for("paper") == DVS128_INPUT


@pytest.mark.parametrize("name,config", sorted(PARAMS))
def test_parameter_counts(name, config):
    assert describe(name, config)["params"] == PARAMS[(name, config)]


@pytest.mark.parametrize("name,config,steps", [("resnet18", "tiny", 1), ("resnet18", "tiny-average", 5),
                                               ("vit", "tiny", 1), ("xformer", "tiny", 1)])
def test_shapes_through_the_classifier(name, config, steps):
    clf = _classifier(name, config)
    x = _frames(SPEC, 3)
    out = clf.net(x.transpose(0, 1))
    assert out.shape == (steps, 3, 10)  # [T', B, K]: T' = 1 for one pass over folded bins, T when run per bin
    assert clf.logits(x).shape == (3, 10)
    assert torch.allclose(clf.logits(x), out.mean(0), atol=1e-6)
    assert clf.step_logits(x).shape == (3, steps, 10)
    feats = clf.features(x)
    assert feats.shape[0] == 3 and feats.dim() == 2 and torch.isfinite(feats).all()


@pytest.mark.parametrize("name,config", [("resnet18", "paper"), ("resnet18", "paper-average"), ("vit", "paper"),
                                         ("xformer", "paper")])
def test_paper_configs_run_on_dvs128_frames(name, config):
    spec = InputSpec(frames=4, channels=2, height=128, width=128, num_classes=11)  # T=4: cheaper, same widths
    clf = _classifier(name, config, spec)
    with torch.no_grad():
        assert clf.logits(_frames(spec, 1)).shape == (1, 11)


def test_bad_options_fail_in_one_line():
    for name, option in [("resnet18", {"time": "sum"}), ("resnet18", {"stem": "big"}), ("vit", {"pool": "max"}),
                         ("vit", {"dim": 50, "heads": 4}), ("xformer", {"heads": 5})]:
        with pytest.raises(ConfigError) as err:
            create_model(name, SPEC, "tiny", **option)
        assert "\n" not in str(err.value) and name in str(err.value)


# ---- fold vs average ----------------------------------------------------------------------------------------

def test_fold_reads_all_bins_at_once_and_average_runs_one_net_per_bin():
    x = _frames(SPEC, 2)
    fold, average = _classifier("resnet18", "tiny"), _classifier("resnet18", "tiny-average")
    assert fold.net.stem[0].in_channels == SPEC.frames * SPEC.channels
    assert average.net.stem[0].in_channels == SPEC.channels
    # The averaged net's weights do not depend on T: the same weights on one bin at a time give its per-bin logits.
    one_bin = InputSpec(1, 2, 34, 34, 10)
    single = _classifier("resnet18", "tiny-average", one_bin)
    single.net.load_state_dict(average.net.state_dict())
    with torch.no_grad():
        per_bin = average.step_logits(x)  # [B, T, K]
        alone = torch.stack([single.logits(x[:, t:t + 1]) for t in range(SPEC.frames)], 1)
        torch.testing.assert_close(per_bin, alone, rtol=1e-5, atol=1e-5)
        # Averaging forgets the order of the bins; folding does not.
        shuffled = x[:, torch.tensor([4, 2, 0, 3, 1])]
        torch.testing.assert_close(average.logits(shuffled), average.logits(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(fold.logits(shuffled), fold.logits(x), atol=1e-4)


def test_time_option_overrides_a_named_config():
    net = create_model("resnet18", SPEC, "small", time="average")
    assert net.time == "average" and net.stem[0].in_channels == 2 and net.stem[0].out_channels == 16


# ---- learning the embedded task -----------------------------------------------------------------------------

def _stratified(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                           for c in np.unique(labels)])


#: 30 training samples per class (300), batch 32, each tiny config's recipe (vit: warm-up; xformer: BN statistics
#: re-estimated). The ViT, slow to start from scratch, gets 10 epochs; the CNNs 3. Full digits-dvs test set
#: (359 samples, chance 0.10), seeds 0/1/2: resnet18 0.52/0.62/0.47, xformer 0.51/0.59/0.52, vit 0.53/0.51/0.49.
LEARNS = {"resnet18": 3, "xformer": 3, "vit": 10}


@pytest.mark.parametrize("name", ANNS)
def test_tiny_config_learns_embedded_task(name, digits_frames):
    train_set, test_set = digits_frames
    entry = MODELS.get(name)
    seed_everything(0)
    clf = Classifier(entry.build(entry.resolve_config("tiny", SPEC), SPEC), entry.feature_layer)
    subset = train_set.subset(_stratified(np.asarray(train_set.labels), 30, seed=0))
    config = TrainConfig(epochs=LEARNS[name], batch_size=32, lr=3e-3, seed=0).with_recipe(entry.recipe_for("tiny"))
    train(clf, subset, config)
    acc = accuracy(clf, test_set)
    assert acc > 0.3, f"{name} tiny reached only {acc:.2f} (chance 0.10)"


# ---- energy -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,config", [("resnet18", "tiny"), ("resnet18", "tiny-average"), ("vit", "tiny"),
                                         ("xformer", "tiny")])
def test_ann_energy_is_priced_as_macs_in_one_step(name, config):
    from snnsec.evaluation import _energy_totals

    clf = _classifier(name, config)
    x = _frames(SPEC, 2)  # binary input: still MACs, an ANN has no spikes to accumulate
    report = measure_energy(clf.net, lambda: clf.predict(x))
    assert report.time_steps == 1 and report.neurons == () and report.sops == 0
    assert {row.priced_as for row in report.layers} == {"MAC"}
    assert report.mac_ops == report.dense_macs == report.ann_macs > 0
    assert report.energy_mj == pytest.approx(report.dense_macs * E_MAC_PJ * 1e-9)
    totals = _energy_totals(report)
    assert totals["energy_priced_as"] == "MAC" and totals["firing_rate"] is None


def test_ann_energy_counts_every_bin_of_the_averaged_net_and_the_attention_products():
    x = _frames(SPEC, 2)
    per_bin = _classifier("resnet18", "tiny-average", InputSpec(1, 2, 34, 34, 10))
    average = _classifier("resnet18", "tiny-average")
    one = measure_energy(per_bin.net, lambda: per_bin.predict(x[:, :1])).dense_macs
    every_bin = measure_energy(average.net, lambda: average.predict(x)).dense_macs
    assert every_bin == pytest.approx(SPEC.frames * one, rel=1e-6)
    vit = _classifier("vit", "tiny")
    rows = {row.name: row for row in measure_energy(vit.net, lambda: vit.predict(x)).layers}
    tokens, dim = 1 + 6 * 6, 64  # class token + 6x6 patches of 6 (34 padded to 36)
    assert rows["blocks.0.attn.qk"].macs == rows["blocks.0.attn.av"].macs == tokens * tokens * dim
    assert rows["patch_embed"].macs == 6 * 6 * dim * SPEC.frames * SPEC.channels * 6 * 6


# ---- defenses -------------------------------------------------------------------------------------------

def test_spiking_only_defenses_refuse_anns_in_one_line_before_any_work(monkeypatch, tmp_path):
    from snnsec import defending
    from snnsec.attack_config import AttackConfig, Workspace
    from snnsec.defenses import DEFENSES

    refusing = {name for name in DEFENSES.names() if DEFENSES.get(name).spiking_only}
    assert refusing == {"tmpbd"}

    def no_work(*_args, **_kwargs):
        raise AssertionError("the defense ran before refusing")

    monkeypatch.setattr(defending, "prepare_attack", no_work)
    workspace = Workspace(cache_dir=tmp_path / "cache", out_dir=tmp_path / "out")
    for model in ANNS:
        with pytest.raises(ConfigError) as err:
            defending.run_defense(defending.DefenseConfig("tmpbd"), AttackConfig(model=model, epochs=1), workspace)
        message = str(err.value)
        assert "\n" not in message
        assert f"defense 'tmpbd' does not apply to ANN model '{model}'" in message and "membrane potential" in message
    with pytest.raises(AssertionError, match="ran before refusing"):  # a spiking model passes the check
        defending.run_defense(defending.DefenseConfig("tmpbd"), AttackConfig(model="spiking-cnn", epochs=1), workspace)


def test_pruning_applies_to_anns_on_the_pooled_last_stage():
    """Fine-pruning's layer on an ANN: no spiking layer, so "auto" takes the feature layer, the pooled channels of
    the last conv stage; silencing a pooled channel silences that conv channel (the pool is per channel)."""
    from snnsec.defenses.pruning import channel_activity, prunable_layer, prune

    clf = _classifier("resnet18", "tiny")
    x = _frames(SPEC, 4)
    assert prunable_layer(clf, x, "auto") == "pool"
    activity = channel_activity(clf, "pool", [(x[i], 0) for i in range(4)])
    assert activity.shape == (64,) and (activity >= 0).all()
    prune(clf, "pool", np.array([0, 5]))
    feats = clf.features(x)
    assert (feats[:, [0, 5]] == 0).all() and (feats[:, 1] != 0).any()
