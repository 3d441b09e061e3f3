"""A training run killed between epochs resumes from its checkpoint with the numbers of an unbroken run."""
import numpy as np
import pytest
import torch

from snnsec.artifacts import load_training_state
from snnsec.classifier import Classifier
from snnsec.training import TrainConfig, seed_everything, train
from snnsec.zoo import MODELS, InputSpec


def small_model():  # dropout 0.2: the resumed run must restore the RNG too
    seed_everything(0)
    spec = InputSpec(5, 2, 34, 34, 10)
    entry = MODELS.get("spiking-cnn")
    return Classifier(entry.build(entry.resolve_config("small", spec), spec), entry.feature_layer)


class Interrupt(Exception):
    pass


def test_resume_after_interrupt_matches_an_unbroken_run(digits_frames, tmp_path, monkeypatch):
    train_set, _ = digits_frames
    subset = train_set.subset(np.arange(96))
    config = TrainConfig(epochs=3, batch_size=32, lr=3e-3, seed=0)
    unbroken = small_model()
    expected = train(unbroken, subset, config)

    checkpoint = tmp_path / "model.partial.pt"
    broken = small_model()
    steps = {"n": 0}
    original_step = torch.optim.AdamW.step

    def step_then_die(self, *args, **kwargs):  # killed in the middle of the second epoch
        steps["n"] += 1
        if steps["n"] == 5:
            raise Interrupt
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_die)
    with pytest.raises(Interrupt):
        train(broken, subset, config, checkpoint=checkpoint)
    monkeypatch.setattr(torch.optim.AdamW, "step", original_step)
    saved = load_training_state(checkpoint)
    assert len(saved["history"]) == 1  # the first epoch was kept

    resumed = small_model()
    history = train(resumed, subset, config, checkpoint=checkpoint)
    assert history == expected
    for a, b in zip(unbroken.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.equal(a, b)
    assert not checkpoint.exists()  # removed once training finished
