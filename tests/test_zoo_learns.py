"""Every zoo model's tiny config learns the embedded digits-dvs task above chance in seconds."""
import numpy as np
import pytest
import torch

from snnsec.classifier import Classifier
from snnsec.training import TrainConfig, accuracy, seed_everything, train
from snnsec.zoo import MODELS, InputSpec

#: The budget every model gets: 4 epochs of 400 samples at batch 32 (52 steps). Models whose tiny config
#: declares a training recipe (lr, warm-up, BN recalibration) train with it; the others with lr 3e-3.
BUDGET = TrainConfig(epochs=4, batch_size=32, lr=3e-3, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", MODELS.names())
def test_tiny_config_learns_embedded_task(name, digits_frames):
    train_set, test_set = digits_frames
    entry = MODELS.get(name)
    spec = InputSpec(5, 2, 34, 34, 10)
    assert entry.default_config(spec) == "tiny" or "tiny" in entry.configs
    seed_everything(0)
    clf = Classifier(entry.build(entry.resolve_config("tiny", spec), spec), entry.feature_layer)
    rng = np.random.default_rng(0)
    subset = train_set.subset(rng.choice(len(train_set), 400, replace=False))
    config = BUDGET.with_recipe(entry.recipe_for("tiny"))
    assert (config.epochs, config.batch_size) == (BUDGET.epochs, BUDGET.batch_size)  # a recipe never buys budget
    train(clf, subset, config)
    acc = accuracy(clf, test_set.subset(np.arange(200)))
    assert acc > 0.3, f"{name} tiny reached only {acc:.2f} (chance 0.10)"


# --------------------------------------------------------------------- the recipe options of training


def test_warmup_rises_linearly_then_decays_by_cosine():
    from snnsec.training import _schedule

    def lrs(steps: int, warmup: int) -> list[float]:
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        scheduler, out = _schedule(optimizer, steps, warmup), []
        for _ in range(steps):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    assert lrs(6, 3) == pytest.approx([0.25, 0.5, 0.75, 1.0, 0.75, 0.25])  # then cosine over the 3 steps left
    assert lrs(4, 0) == pytest.approx([1.0, 0.85355339, 0.5, 0.14644661])  # default: cosine from the first step
    with pytest.raises(Exception, match="warm-up"):
        TrainConfig(warmup_steps=-1)


class _FrameNorm(torch.nn.Module):
    """[T, B, C, H, W] -> BN per frame -> per-step logits [T, B, C]."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(2)

    def forward(self, x):
        return self.bn(x.flatten(0, 1)).mean((2, 3)).reshape(*x.shape[:3])


def test_bn_recalibration_averages_batches_with_final_weights():
    from torch.utils.data import DataLoader, TensorDataset

    from snnsec.training import recalibrate_batchnorm

    g = torch.Generator().manual_seed(0)
    frames = torch.randn(12, 3, 2, 4, 4, generator=g) * 0.05 + 2.0  # far from the initial mean 0, variance 1
    loader = DataLoader(TensorDataset(frames, torch.zeros(12, dtype=torch.long)), batch_size=4)
    clf = Classifier(_FrameNorm())
    recalibrate_batchnorm(clf, loader, batches=2)
    bn = clf.net.bn
    batch_means = [frames[i:i + 4].transpose(1, 2).flatten(2).mean(-1).mean(0) for i in (0, 4)]  # [C] each
    assert torch.allclose(bn.running_mean, torch.stack(batch_means).mean(0), atol=1e-6)
    assert float(bn.running_var.max()) < 0.01  # the 1.0 it was initialised with is gone
    assert bn.momentum == 0.1 and bn.num_batches_tracked == 2


def test_recipes_name_configs_and_keep_the_budget():
    from snnsec.errors import ConfigError
    from snnsec.zoo.base import ModelEntry, TrainRecipe

    recipe = TrainRecipe(lr=1e-2, warmup_steps=5)
    config = BUDGET.with_recipe(recipe)
    assert (config.lr, config.warmup_steps, config.weight_decay) == (1e-2, 5, 1e-2)
    assert (config.epochs, config.batch_size, config.seed) == (BUDGET.epochs, BUDGET.batch_size, BUDGET.seed)
    assert BUDGET.with_recipe(None) is BUDGET
    entry = MODELS.get("spikformer")
    with pytest.raises(ConfigError, match="unknown config"):
        ModelEntry(**{**entry.__dict__, "recipes": {"huge": recipe}})
    with pytest.raises(ConfigError):
        TrainRecipe(lr=0.0)
