"""The Python API: load_run on a recorded run, the nn.Module view, ART and torchattacks driving it.

One tiny attack run is recorded per module, on ``digits-dvs-mini``: every sixth digits-dvs sample (a
test-only dataset, so framing and training take about a second each instead of a quarter minute).
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

import snnsec.attack_config as attack_config
import snnsec.attack_setup as attack_setup
import snnsec.model_cache as model_cache
import snnsec.training as training
from snnsec import api
from snnsec.artifacts import read_card
from snnsec.attack_config import make_trigger
from snnsec.attack_setup import prepare_attack, trigger_example
from snnsec.classifier import Classifier
from snnsec.datasets import DATASETS
from snnsec.datasets.digits_dvs import SPEC as DIGITS_SPEC
from snnsec.datasets.digits_dvs import DigitsDvs
from snnsec.errors import ConfigError
from snnsec.experiment import AttackConfig, Workspace, run_attack
from snnsec.records import append_record, config_hash
from snnsec.training import accuracy
from snnsec.zoo import MODELS, InputSpec, create_model

README = Path(__file__).resolve().parents[1] / "README.md"
MINI = "digits-dvs-mini"
CONFIG = AttackConfig(dataset=MINI, model_config="tiny", frames=4, size=16, epochs=3, batch_size=8, lr=1e-2)
SPEC = InputSpec(frames=4, channels=2, height=16, width=16, num_classes=10)


class EverySixth:
    """digits-dvs with every sixth sample of a split (still all ten classes)."""

    info = replace(DIGITS_SPEC.info, name=MINI)

    def __init__(self, split: str, data_dir: Path | None = None) -> None:
        self.base = DigitsDvs(split)
        self.rows = np.arange(0, len(self.base), 6)
        self.labels = self.base.labels[self.rows]
        self.cache_key = f"{self.base.cache_key}-every6"

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.base[int(self.rows[index])]


def _no_training(*_args, **_kwargs):
    raise AssertionError("load_run must not train")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """``(record, workspace)`` of one tiny recorded attack run (1 CPU thread: the run id includes it)."""
    root = tmp_path_factory.mktemp("api-run")
    workspace = Workspace(cache_dir=root / "cache", out_dir=root / "out", device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(DATASETS._entries, MINI, replace(DIGITS_SPEC, info=EverySixth.info, load=EverySixth,
                                                        default_frames=4))
        record = run_attack(CONFIG, workspace)
        yield record, workspace
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def loaded(recorded):
    record, workspace = recorded
    return api.load_run(record.run_id[:6], out_dir=workspace.out_dir, cache_dir=workspace.cache_dir, device="cpu")


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(model_cache, "train", _no_training)
    monkeypatch.setattr(training, "train", _no_training)


# ---- load_run -------------------------------------------------------------------------------------------

def test_load_run_rebuilds_the_recorded_run_without_training(recorded, no_training):
    record, workspace = recorded
    run = api.load_run(record.run_id[:5], out_dir=workspace.out_dir, cache_dir=workspace.cache_dir, device="cpu")
    metrics = record.metrics
    assert run.run_id == record.run_id and run.config.dataset == MINI
    assert accuracy(run.clean, run.test_set) == metrics["ca_clean"]  # the very models the run evaluated
    assert accuracy(run.backdoored, run.test_set) == metrics["ca_backdoor"]
    assert accuracy(run.backdoored, run.triggered_test) == metrics["asr"]
    assert (len(run.train_set), len(run.test_set)) == (metrics["train_samples"], metrics["test_samples"])
    assert len(run.poisoned_indices) == metrics["poisoned_samples"] == round(0.1 * len(run.train_set))
    assert run.trigger.params() == record.config["trigger_params"]
    x, y = run.arrays("poisoned-train")
    poisoned = run.poisoned_indices
    assert x.dtype == np.float32 and x.shape == (len(run.train_set), 4, 2, 16, 16)
    assert (y[poisoned] == 0).all() and np.array_equal(np.delete(y, poisoned), np.delete(run.train_set.labels, poisoned))
    clean_x, _ = run.arrays("train")
    assert (x[poisoned] != clean_x[poisoned]).any(axis=(1, 2, 3, 4)).all()  # triggered where poisoned, only there
    assert np.array_equal(np.delete(x, poisoned, axis=0), np.delete(clean_x, poisoned, axis=0))


def test_records_keep_poisoned_indices_and_cards_the_input_spec(recorded, loaded):
    record, workspace = recorded
    saved = api.poisoned_indices_path(workspace.out_dir, record.run_id)
    assert record.artifacts["poisoned_indices"] == str(saved)
    assert json.loads(saved.read_text())["indices"] == loaded.poisoned_indices.tolist()
    for name in ("clean_model", "backdoored_model"):
        assert read_card(Path(record.artifacts[name]))["input_spec"] == asdict(SPEC)


def test_arrays_subsets_are_seeded_and_checked(loaded):
    x, y = loaded.arrays("test", limit=40)
    again, _ = loaded.arrays("test", limit=40)
    assert x.shape == (40, 4, 2, 16, 16) and np.array_equal(x, again)
    assert len(set(y.tolist())) > 3  # a random subset, not the first rows
    with pytest.raises(ConfigError, match="unknown split 'val'; choose one of: train, test"):
        loaded.arrays("val")


def test_load_run_errors_are_one_line(recorded, tmp_path, no_training):
    record, workspace = recorded
    with pytest.raises(ConfigError, match=f"no run records at {tmp_path}"):
        api.load_run(record.run_id, out_dir=tmp_path)
    with pytest.raises(ConfigError, match=f"no attack run with id 'zzz' .* attack runs there: {record.run_id}"):
        api.load_run("zzz", out_dir=workspace.out_dir, cache_dir=workspace.cache_dir)
    # Two runs sharing a prefix: the error lists both.
    out = tmp_path / "out"
    shutil.copytree(workspace.out_dir, out)
    twin = replace(record, run_id=record.run_id[:3] + ("e" if record.run_id[3] == "f" else "f") * 9)
    append_record(out / "records.jsonl", twin)
    with pytest.raises(ConfigError, match=f"2 attack runs .* start with '{record.run_id[:3]}': .*{twin.run_id}"):
        api.load_run(record.run_id[:3], out_dir=out, cache_dir=workspace.cache_dir)
    # A run recorded on other data than the events there now: it no longer rebuilds as recorded.
    edited = tmp_path / "edited"
    edited.mkdir()
    changed = {**record.config, "data_version": {"train": "older-events", "test": "older-events"}}
    append_record(edited / "records.jsonl", replace(record, run_id=config_hash(changed), config=changed))
    with pytest.raises(ConfigError, match=f"run {config_hash(changed)} no longer rebuilds as recorded "
                                          r"\(differs in: data_version\)"):
        api.load_run(config_hash(changed), out_dir=edited, cache_dir=workspace.cache_dir)
    # The frames are cached but the models are not: an error, never a training run.
    cache = tmp_path / "cache"
    shutil.copytree(workspace.cache_dir / "frames", cache / "frames")
    with pytest.raises(ConfigError, match=r"clean model .* is missing; pass the cache_dir"):
        api.load_run(record.run_id, out_dir=workspace.out_dir, cache_dir=cache)


def test_workspace_honours_snnsec_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SNNSEC_CACHE_DIR", str(tmp_path))
    assert Workspace().cache_dir == tmp_path
    monkeypatch.delenv("SNNSEC_CACHE_DIR")
    assert Workspace().cache_dir == Path.home() / ".cache" / "snnsec"


def test_load_run_shares_the_cli_lookup(recorded):
    record, workspace = recorded
    with pytest.raises(ConfigError, match="load_run needs a run id"):
        api.load_run("  ", out_dir=workspace.out_dir)
    run = api.load_run(f" {record.run_id[:6]} ", out_dir=workspace.out_dir, cache_dir=workspace.cache_dir, device="cpu")
    assert run.run_id == record.run_id


def test_prepare_attack_builds_the_trigger_once_and_trigger_example_shows_it(recorded, monkeypatch):
    """resolve_attack builds the trigger to check it and prepare_attack reuses it (binary frames: the value
    is known before any data is read); trigger_example is the prepared attack's trigger on one sample."""
    _, workspace = recorded
    built = []

    def counted(config):
        built.append(config.trigger_value)
        return make_trigger(config)

    monkeypatch.setattr(attack_config, "make_trigger", counted)
    monkeypatch.setattr(attack_setup, "make_trigger", counted)
    setup = prepare_attack(CONFIG, workspace)
    assert built == [1.0]
    clean, triggered, label = trigger_example(CONFIG, workspace, "train", 3)
    frames, y = setup.train_set[3]
    assert torch.equal(clean, frames) and label == y
    assert torch.equal(triggered, setup.trigger.apply(frames)) and not torch.equal(triggered, clean)
    with pytest.raises(ConfigError, match=r"--index must be in \[0, "):
        trigger_example(CONFIG, workspace, "test", len(setup.test_set))


# ---- input checks and the nn.Module view -----------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS.names())
def test_zoo_models_reject_frames_that_do_not_match_their_spec(name):
    spec = InputSpec(frames=4, channels=2, height=32, width=32, num_classes=10)
    net = create_model(name, spec, "tiny")
    assert net.input_spec == spec
    bad = {
        "batch-first": (torch.zeros(3, 4, 2, 32, 32), r"got shape \(3, 4, 2, 32, 32\) \(it looks batch-first"),
        "T": (torch.zeros(5, 3, 2, 32, 32), r"got shape \(5, 3, 2, 32, 32\)$"),
        "channels": (torch.zeros(4, 3, 1, 32, 32), r"got shape \(4, 3, 1, 32, 32\)$"),
        "size": (torch.zeros(4, 3, 2, 34, 34), r"got shape \(4, 3, 2, 34, 34\)$"),
        "dtype": (torch.zeros(4, 3, 2, 32, 32, dtype=torch.uint8), "got dtype torch.uint8"),
    }
    for x, message in bad.values():
        with pytest.raises(ConfigError, match=rf"zoo model '{name}' takes float frames \[T, B, P, H, W\] with T=4, "
                                              rf"P=2, H=32, W=32; {message}"):
            net(x)
    with pytest.raises(ConfigError, match=r"classifier takes float frames \[B, T, P, H, W\] .*it looks time-major"):
        Classifier(net).logits(torch.zeros(4, 3, 2, 32, 32))


def test_view_resets_state_averages_over_time_and_exposes_features_last(loaded):
    classifier = loaded.backdoored
    view = classifier.as_module().eval()
    x = torch.from_numpy(loaded.arrays("test", limit=12)[0])
    seen = []
    view.features.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        out = view(x)
        assert torch.equal(out, view(x))  # no state carried from the first call
        assert torch.allclose(view(x[:5]), out[:5], atol=1e-5)
        assert torch.allclose(view(x.double()), out)  # other float dtypes are cast to the model's
    assert torch.equal(out, classifier.logits(x).detach())
    assert [name for name, _ in view.named_children()][-1] == "features"
    assert torch.equal(seen[0], classifier.features(x))
    assert seen[0].shape == (12, 32)  # the tiny spiking CNN's spiking FC layer, time-averaged
    with pytest.raises(ConfigError, match="got dtype torch.int64"):
        view(x.long())
    with pytest.raises(ConfigError, match="it looks time-major"):
        view(x.transpose(0, 1))


# ---- ART ------------------------------------------------------------------------------------------------

def test_art_predict_matches_snnsec_at_any_batch_size(loaded):
    art = api.art_classifier(loaded.backdoored)
    assert (art.input_shape, art.nb_classes, tuple(art.clip_values)) == ((4, 2, 16, 16), 10, (0.0, 1.0))
    x, y = loaded.arrays("test", limit=48)
    ours = loaded.backdoored.predict(torch.from_numpy(x)).numpy()
    assert len(set(ours.tolist())) > 1  # a model that tells classes apart, so agreement means something
    for batch_size in (1, 5, 48, 128):
        theirs = art.predict(x, batch_size=batch_size).argmax(1)
        assert (theirs == y).mean() == (ours == y).mean()
        assert np.array_equal(theirs, ours)


def test_art_fgsm_runs_within_its_budget(loaded):
    from art.attacks.evasion import FastGradientMethod

    art = api.art_classifier(loaded.backdoored)
    x, _ = loaded.arrays("test", limit=16)
    adv = FastGradientMethod(art, eps=0.25).generate(x)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    assert np.abs(adv - x).max() <= 0.25 + 1e-6
    assert (adv != x).mean() > 0.01  # surrogate gradients reach the input


def test_art_poison_defences_read_the_feature_layer(loaded, monkeypatch):
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    art = api.art_classifier(loaded.backdoored)
    assert art.layer_names[-1] == "features"
    x, y = loaded.arrays("poisoned-train", limit=120)
    onehot = np.eye(10)[y]
    calls = []
    original = type(art).get_activations

    def spy(self, x, layer=None, batch_size=128, framework=False):
        out = original(self, x, layer, batch_size, framework)
        calls.append((self.layer_names[layer] if isinstance(layer, int) else layer, out))
        return out

    monkeypatch.setattr(type(art), "get_activations", spy)
    features = loaded.backdoored.features(torch.from_numpy(x)).numpy()
    report, is_clean = SpectralSignatureDefense(art, x, onehot, expected_pp_poison=0.1).detect_poison()
    assert len(is_clean) == len(x) and 0 < len(report) < len(x)
    defence = ActivationDefence(art, x, onehot)
    _, is_clean = defence.detect_poison(nb_clusters=2, nb_dims=3, reduce="PCA")
    assert len(is_clean) == len(x)
    assert [layer for layer, _ in calls] == ["features", "features"]
    for _, activations in calls:
        np.testing.assert_allclose(activations, features, atol=1e-6)


# ---- torchattacks ---------------------------------------------------------------------------------------

def test_torchattacks_fgsm_and_pgd_run_on_the_view(loaded):
    import torchattacks

    view = loaded.backdoored.as_module()
    x, y = (torch.from_numpy(a) for a in loaded.arrays("test", limit=16))
    for attack in (torchattacks.FGSM(view, eps=0.25), torchattacks.PGD(view, eps=0.25, alpha=0.1, steps=3)):
        adv = attack(x, y)
        assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
        assert (adv - x).abs().max() <= 0.25 + 1e-6
        assert (adv != x).float().mean() > 0.01


# ---- the README's example -------------------------------------------------------------------------------

def test_readme_python_api_example_runs(recorded, monkeypatch, capsys):
    record, workspace = recorded
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) < 20
    call = r'load_run\("[0-9a-f]+", out_dir="reports"\)'
    assert re.search(call, code)
    code = re.sub(call, f"load_run({record.run_id[:6]!r}, out_dir={str(workspace.out_dir)!r})", code)
    monkeypatch.setenv("SNNSEC_CACHE_DIR", str(workspace.cache_dir))  # the example uses the default cache
    monkeypatch.setattr(model_cache, "train", _no_training)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert re.search(r"clean [01]\.\d+, under FGSM [01]\.\d+", printed)
    assert re.search(r"ASR [01]\.\d+", printed)
