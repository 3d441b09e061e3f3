"""SEW-ResNet: faithfulness to the reference (golden logits and spike counts), shapes, configs, training."""
import json

import pytest
import torch
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.neuron import BaseNode

from snnsec.classifier import Classifier
from snnsec.errors import ConfigError
from snnsec.zoo.base import MODELS, InputSpec, create_model
from snnsec.zoo.sew_resnet import CONFIGS, SEWResNet, convert_reference_state_dict

GESTURE = InputSpec(frames=4, channels=2, height=128, width=128, num_classes=11)


def _spike_recorder(net):
    """Forward hooks on every spiking neuron: (name, output) in call order."""
    records = []
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: records.append((name, out.detach())))
        for name, module in net.named_modules()
        if isinstance(module, BaseNode)
    ]
    return records, handles


def _load_by_order(net, tensors, rows):
    """Pair the reference tensors with ours in state_dict order, by shape (size-1 dims dropped) and name suffix."""
    ours = [(k, v) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(ours) == len(rows)
    state = {}
    for (key, value), (ref_key, ref_shape, _kind, _used) in zip(ours, rows):
        assert key.rsplit(".", 1)[-1] == ref_key.rsplit(".", 1)[-1], (key, ref_key)
        assert [d for d in value.shape if d != 1] == [d for d in ref_shape if d != 1], (key, ref_key)
        assert key == ref_key  # the names are the reference's own, so official checkpoints load by key
        state[key] = tensors[ref_key].reshape(value.shape)
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)


def test_golden_gesture_logits_and_spike_counts(golden):  # missing files: skipped, failed under CI=true
    from safetensors.torch import load_file

    meta = json.loads(golden("sew_gesture.json").read_text())
    tensors = load_file(str(golden("sew_gesture.safetensors")))
    assert meta["constructor_arguments"]["all_resolved_arguments"] == {"connect_f": "ADD"}
    net = create_model("sew-resnet", GESTURE, "gesture")
    _load_by_order(net, tensors, meta["tensors_in_state_dict_order"])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    clf = Classifier(net)
    records, handles = _spike_recorder(net)
    try:
        with clf.evaluating(), torch.no_grad():
            out = clf.logits(tensors["input"].float())
    finally:
        torch.set_num_threads(threads)
        for h in handles:
            h.remove()

    ref = tensors["logits"]
    assert out.shape == ref.shape
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()

    expected = meta["lif_layers_in_forward_order"]
    assert [name for name, _ in records] == [layer["module"] for layer in expected]
    for (name, spikes), layer in zip(records, expected):
        assert int(spikes.sum()) == layer["spike_count"], name
        assert spikes.flatten(1).sum(1).long().tolist() == layer["spike_count_per_t"], name


def test_official_checkpoint_layout_loads_strictly(golden):
    """The reference's cext PLIF stores w as [1]; convert_reference_state_dict maps it onto our 0-d w."""
    from safetensors.torch import load_file

    tensors = load_file(str(golden("sew_gesture.safetensors")))
    net = create_model("sew-resnet", GESTURE, "gesture")
    weights = {k: v for k, v in tensors.items() if k not in ("input", "logits")}
    checkpoint = {k: (v.reshape(1) if k.endswith(".w") else v) for k, v in weights.items()}
    checkpoint.update({k: v for k, v in net.state_dict().items() if k.endswith("num_batches_tracked")})
    net.load_state_dict(convert_reference_state_dict(checkpoint), strict=True)
    assert net.conv[0][1].w.shape == torch.Size([])


def test_paper_config_parameter_count():
    net = create_model("sew-resnet", GESTURE, "gesture")
    assert sum(p.numel() for p in net.parameters()) == 130_426  # PARAMS.json sew_resnet_gesture_add
    assert net.out.in_features == 32  # 128 / 2**7 = 1


@pytest.mark.parametrize(
    "config, height, width, frames, batch",
    [
        ("tiny", 34, 34, 4, 2),
        ("tiny", 35, 48, 3, 1),
        ("tiny", 8, 8, 1, 3),
        ("gesture", 128, 128, 2, 1),
        ("gesture", 200, 150, 1, 1),
    ],
)
def test_output_shapes_follow_the_input(config, height, width, frames, batch):
    spec = InputSpec(frames=frames, channels=2, height=height, width=width, num_classes=7)
    net = create_model("sew-resnet", spec, config).eval()
    stages = len(CONFIGS[config].stage_channels)
    assert net.out.in_features == CONFIGS[config].stage_channels[-1] * (height >> stages) * (width >> stages)
    x = torch.rand(frames, batch, 2, height, width)
    with torch.no_grad():
        functional.reset_net(net)
        assert net(x).shape == (frames, batch, 7)  # direct call only to check the zoo contract's shape
        functional.reset_net(net)


def test_input_too_small_is_a_config_error():
    with pytest.raises(ConfigError, match="at least 128x128"):
        create_model("sew-resnet", InputSpec(8, 2, 34, 34, 10), "gesture")
    with pytest.raises(ConfigError, match="connect"):
        create_model("sew-resnet", InputSpec(8, 2, 34, 34, 10), "tiny", connect="OR")


def test_registry_entry():
    entry = MODELS.get("sew-resnet")
    assert entry.spiking and entry.reference_accuracy == {"dvs128": 0.9792, "cifar10-dvs": 0.744}
    assert set(entry.configs) >= {"gesture", "tiny"}
    assert entry.default_config(GESTURE) == "gesture"
    assert entry.default_config(InputSpec(8, 2, 34, 34, 10)) == "tiny"
    net = entry.build(entry.resolve_config(None, GESTURE), GESTURE)
    assert isinstance(net, SEWResNet) and entry.feature_layer in dict(net.named_modules())


@pytest.mark.parametrize("connect", ["ADD", "AND", "IAND"])
def test_spikes_binary_features_and_determinism(connect):
    torch.manual_seed(0)
    spec = InputSpec(frames=4, channels=2, height=34, width=34, num_classes=10)
    net = create_model("sew-resnet", spec, "tiny", connect=connect)
    clf = Classifier(net, feature_layer=MODELS.get("sew-resnet").feature_layer)
    x = torch.randint(0, 3, (2, 4, 2, 34, 34)).float()
    records, handles = _spike_recorder(net)
    try:
        first = clf.probabilities(x)
    finally:
        for h in handles:
            h.remove()
    assert len(records) == 1 + 2 + 1 + 2 + 2  # up conv, block, up conv (8 -> 16), block, block
    for name, spikes in records:
        assert ((spikes == 0) | (spikes == 1)).all(), name
    assert torch.equal(first, clf.probabilities(x))  # state is reset between calls
    feats = clf.features(x)
    assert feats.shape == (2, net.out.in_features)
    if connect != "ADD":  # AND / IAND keep the block outputs binary, so the pooled rates lie in [0, 1]
        assert feats.min() >= 0 and feats.max() <= 1


def test_tiny_config_learns():
    torch.manual_seed(0)
    spec = InputSpec(frames=4, channels=2, height=24, width=24, num_classes=4)  # small, to keep the test fast
    net = create_model("sew-resnet", spec, "tiny")
    clf = Classifier(net)
    x = torch.randint(0, 2, (8, 4, 2, 24, 24)).float()
    y = torch.arange(8) % 4
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.cross_entropy(clf.logits(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is not None for p in net.parameters())
