"""The zoo's spiking transformers (Spikformer, Spikingformer, Spike-driven Transformer v1).

Faithfulness is checked against golden outputs of the reference code (``../shared/golden``, or the folder named
by ``SNNSEC_GOLDEN_DIR``; skipped where absent, failed where absent under ``CI=true``): the reference's weights are loaded by order, shape and name,
and the logits and every LIF layer's spike count must match. The rest checks shapes, parameter counts, binary
spikes, state reset and that a tiny config learns.
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from spikingjelly.activation_based import functional, neuron
from torch import nn

import snnsec.zoo.spike_driven_transformer as sdt
import snnsec.zoo.spikformer as spikformer
import snnsec.zoo.spikingformer as spikingformer
from snnsec.classifier import Classifier
from snnsec.errors import ConfigError
from snnsec.zoo.base import MODELS, InputSpec, create_model
from snnsec.zoo.transformer_parts import token_grid

MODULES = {"spikformer": spikformer, "spikingformer": spikingformer, "spike-driven-transformer": sdt}
NAMES = sorted(MODULES)
GOLDEN = {"spikingformer": "spikingformer_small", "spike-driven-transformer": "sdt_small", "spikformer": "spikformer_small"}


pytestmark = pytest.mark.usefixtures("one_thread")


def build(name: str, config: str, spec: InputSpec) -> nn.Module:
    return create_model(name, spec, config)


def lif_modules(net: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in net.named_modules() if isinstance(m, neuron.BaseNode)}


# ----------------------------------------------------------------------------------------------- golden outputs


def load_golden(name: str, golden) -> tuple[dict, dict[str, torch.Tensor]]:
    """``golden`` is conftest's fixture: a missing file skips, or fails under ``CI=true``."""
    safetensors = pytest.importorskip("safetensors.torch")
    meta = golden(f"{GOLDEN[name]}.json")
    return json.loads(meta.read_text()), safetensors.load_file(str(golden(f"{GOLDEN[name]}.safetensors")))


def golden_model(name: str, meta: dict) -> nn.Module:
    """Our model with the architecture of the golden file's reference constructor call."""
    args = meta["constructor_arguments"]["all_resolved_arguments"]
    module = MODULES[name]
    config = replace(
        module.CONFIGS["small"],
        embed_dim=args["embed_dims"],
        depth=args["depths"],
        heads=args["num_heads"],
        mlp_ratio=args["mlp_ratios"],
        **({"pooling": args["pooling_stat"]} if "pooling_stat" in args else {}),
    )
    assert config == module.CONFIGS["small"]  # the golden net is our "small" config
    assert args["patch_size"] == 16 and not args["qkv_bias"] and args.get("spike_mode", "lif") == "lif"
    assert not args.get("dvs_mode", False) and not args.get("TET", False)
    spec = InputSpec(meta["input"]["T"], args["in_channels"], args["img_size_h"], args["img_size_w"], args["num_classes"])
    return MODELS.get(name).build(config, spec)


def reference_state_dict(net: nn.Module, meta: dict, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pair the reference tensors with ours in state_dict order; shapes must agree up to size-1 dimensions and
    the names must be equal (ours follow the reference, which a shape check alone cannot confirm: q/k/v/proj
    weights share one shape, and SDT's logits cannot tell k from v)."""
    ours = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    rows = meta["tensors_in_state_dict_order"]
    assert [row[0] for row in rows] == list(ours)
    mapped = {}
    for key, shape, _kind, _used in rows:
        mine = ours[key]
        assert [s for s in shape if s != 1] == [s for s in mine.shape if s != 1], key
        mapped[key] = tensors[key].reshape(mine.shape)
    return mapped


@pytest.mark.parametrize("name", NAMES)
def test_matches_golden_reference(name: str, golden) -> None:
    meta, tensors = load_golden(name, golden)
    net = golden_model(name, meta)
    net.load_state_dict(reference_state_dict(net, meta, tensors), strict=False)
    missing = set(net.state_dict()) - set(tensors)
    assert all(k.endswith("num_batches_tracked") for k in missing)
    net.eval()

    spikes: list[tuple[str, torch.Tensor]] = []
    for module_name, module in lif_modules(net).items():
        module.register_forward_hook(lambda _m, _i, out, n=module_name: spikes.append((n, out)))
    assert torch.get_num_threads() == 1  # the golden files were made on one thread
    with torch.no_grad():
        functional.reset_net(net)
        out = net(tensors["input"].float().transpose(0, 1).contiguous())  # [B, T, ...] -> [T, B, ...]

    ref = tensors["logits"]
    logits = out.mean(0)  # the reference applies its head to the time-averaged features: equal up to rounding
    assert (logits - ref).abs().max() <= 1e-5 * ref.abs().max()

    expected = meta["lif_layers_in_forward_order"]
    assert [n for n, _ in spikes] == [layer["module"] for layer in expected]
    for (module_name, s), layer in zip(spikes, expected):
        assert list(s.shape) == layer["output_shape"], module_name
        assert s.flatten(1).sum(1).long().tolist() == layer["spike_count_per_t"], module_name


@pytest.mark.parametrize("name", NAMES)
def test_initialisation_is_the_references(name: str, golden) -> None:
    """The golden weights are the reference's own init after manual_seed(0) (BN running stats then calibrated);
    building in the reference's registration order draws the same random numbers."""
    meta, tensors = load_golden(name, golden)
    torch.manual_seed(0)
    net = golden_model(name, meta)
    for key, param in net.named_parameters():
        assert torch.equal(param.detach(), tensors[key].reshape(param.shape)), key


# ------------------------------------------------------------------------------------------ sizes and shapes

PAPER_PARAMS = [
    ("spikingformer", "dvs-2-256", 11, 2_568_971),
    ("spikingformer", "dvs-2-256", 10, 2_568_714),
    ("spike-driven-transformer", "dvs-2-256", 11, 2_567_051),
    ("spikformer", "dvs-2-256", 10, 2_585_610),
    ("spikformer", "dvs-2-256", 11, 2_585_867),
]


@pytest.mark.parametrize(("name", "config", "classes", "params"), PAPER_PARAMS)
def test_paper_parameter_counts(name: str, config: str, classes: int, params: int) -> None:
    net = build(name, config, InputSpec(16, 2, 128, 128, classes))
    assert sum(p.numel() for p in net.parameters()) == params


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("config", "frames", "height", "width"), [
    ("tiny", 1, 32, 32), ("tiny", 3, 48, 64), ("tiny", 2, 128, 128), ("small", 2, 48, 64), ("small", 1, 34, 34),
])
def test_output_shape_follows_input(name: str, config: str, frames: int, height: int, width: int) -> None:
    spec = InputSpec(frames, 2, height, width, 5)
    net = build(name, config, spec).eval()
    with torch.no_grad():
        functional.reset_net(net)
        out = net(torch.rand(frames, 2, 2, height, width))
    assert out.shape == (frames, 2, 5)
    if name == "spikformer":
        grid = token_grid(height, width, MODULES[name].CONFIGS[config].pooling)
        assert net.pos_embed.shape == (1, grid[0] * grid[1], net.head.in_features)


def test_sdt_cifar10dvs_config_runs() -> None:
    """The reference's CIFAR10-DVS setting: 64x64 input, pooling '0011' (16x16 tokens) and dvs_mode's 3x3 pools."""
    config = MODELS.get("spike-driven-transformer").configs["cifar10dvs-2-256"]
    assert (config.pooling, config.dvs_mode) == ("0011", True)
    spec = InputSpec(2, 2, 64, 64, 10)
    net = create_model("spike-driven-transformer", spec, "cifar10dvs-2-256", embed_dim=32, heads=2).train()
    seen = []
    net.block[0].attn.pool.register_forward_hook(lambda _m, _i, out: seen.append(out.shape))
    assert Classifier(net).logits(torch.rand(2, 2, 2, 64, 64)).shape == (2, 10)
    assert seen[0] == (2, 2, 32, 16, 16)  # K after its LIF: 16x16 tokens


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry(name: str) -> None:
    entry = MODELS.get(name)
    assert entry.spiking and {"dvs-2-256", "small", "tiny"} <= set(entry.configs)
    assert entry.default_config(InputSpec(8, 2, 34, 34, 10)) == "tiny"
    assert entry.default_config(InputSpec(16, 2, 128, 128, 11)) == "dvs-2-256"
    with pytest.raises(ConfigError):
        entry.resolve_config("tiny", InputSpec(8, 2, 34, 34, 10), heads=3)
    with pytest.raises(ConfigError):
        entry.resolve_config("tiny", InputSpec(8, 2, 34, 34, 10), pooling="11")


# ------------------------------------------------------------------------------------ spikes, state, learning

#: Layers whose input is binary spikes in the reference as well (the stem conv reads frames; Spikformer's
#: q/k/v and fc1 read its stream of spike counts; Spikingformer's head reads its real-valued stream).
BINARY_INPUTS = {
    "spikingformer": lambda n: n not in ("patch_embed.proj_conv", "head"),
    "spike-driven-transformer": lambda n: n != "patch_embed.proj_conv" and not n.endswith("talking_heads"),
    "spikformer": lambda n: n.endswith(("proj_conv1", "proj_conv2", "proj_conv3", "rpe_conv", "attn.proj_conv", "fc2_conv")),
}


def firing_batch(spec: InputSpec, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 3, (batch, spec.frames, spec.channels, spec.height, spec.width), generator=generator).float()


@pytest.mark.parametrize("name", NAMES)
def test_spikes_are_binary_where_the_references_are(name: str) -> None:
    spec = InputSpec(3, 2, 34, 34, 10)
    torch.manual_seed(0)
    net = build(name, "tiny", spec).train()  # batch statistics in BN: every layer fires
    seen: dict[str, list[torch.Tensor]] = {}
    for module_name, module in net.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)) and BINARY_INPUTS[name](module_name):
            module.register_forward_pre_hook(lambda _m, args, n=module_name: seen.setdefault(n, []).append(args[0]))
    for module_name, module in lif_modules(net).items():
        module.register_forward_hook(lambda _m, _i, out, n=module_name: seen.setdefault(n, []).append(out))
    with torch.no_grad():
        Classifier(net).logits(firing_batch(spec))
    assert set(lif_modules(net)) <= set(seen)
    assert len(seen) > len(lif_modules(net))  # some binary-input layers were found and called
    for module_name, tensors in seen.items():
        for t in tensors:
            assert ((t == 0) | (t == 1)).all(), module_name
            assert t.any(), f"{module_name} never fires"


@pytest.mark.parametrize("name", NAMES)
def test_state_is_reset_between_calls(name: str) -> None:
    spec = InputSpec(3, 2, 34, 34, 10)
    torch.manual_seed(0)
    net = build(name, "tiny", spec).train()  # batch statistics in BN, so that the neurons fire
    clf = Classifier(net, MODELS.get(name).feature_layer)
    x = firing_batch(spec)
    with torch.no_grad():
        first, second = clf.logits(x), clf.logits(x)
        leaked = net(x.transpose(0, 1)), net(x.transpose(0, 1))  # no reset: membranes carry over
    assert torch.equal(first, second)
    assert not torch.equal(leaked[0], leaked[1])
    features = clf.features(x)
    assert features.shape == (2, MODULES[name].CONFIGS["tiny"].embed_dim)


@pytest.mark.parametrize("name", NAMES)
def test_tiny_config_learns_a_batch(name: str) -> None:
    spec = InputSpec(4, 2, 34, 34, 4)
    torch.manual_seed(0)
    net = build(name, "tiny", spec).train()
    clf = Classifier(net)
    x = firing_batch(spec, batch=8)
    y = torch.arange(8) % 4
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = nn.functional.cross_entropy(clf.logits(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    stem = net.patch_embed.proj_conv.weight.grad
    assert stem is not None and stem.abs().sum() > 0  # surrogate gradients reach the first layer
    assert losses[-1] < 0.9 * losses[0], losses
