"""Energy estimator: hand-computed MACs and SOPs, pricing rules, totals, and zoo models."""
import json

import pytest
import torch
from spikingjelly.activation_based import layer, neuron
from torch import nn

from snnsec.classifier import Classifier
from snnsec.energy import E_AC_PJ, E_MAC_PJ, measure_energy
from snnsec.zoo.base import InputSpec, create_model

B, T = 2, 3


class HandNet(nn.Module):
    """conv3x3 (2->4, pad 1) on 5x5 count frames -> IF -> flatten -> Linear(100, 6) -> IF -> Linear(6, 3).

    Weights are chosen so the spikes are known in closed form: every conv output equals input channel 0
    (values 0 or 2), so the first IF fires exactly where channel 0 is 2; each fc1 unit sums all 100 spikes,
    so the second IF fires at every (sample, step) with at least one spike.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = layer.Conv2d(2, 4, 3, padding=1, bias=False, step_mode="m")
        self.sn1 = neuron.IFNode(step_mode="m")
        self.flat = layer.Flatten(step_mode="m")
        self.fc1 = layer.Linear(100, 6, bias=False, step_mode="m")
        self.sn2 = neuron.IFNode(step_mode="m")
        self.fc2 = layer.Linear(6, 3, step_mode="m")
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, 0, 1, 1] = 1.0
            self.fc1.weight.fill_(1.0)

    def forward(self, x):
        return self.fc2(self.sn2(self.fc1(self.flat(self.sn1(self.conv(x))))))


def _hand_input():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(B, T, 2, 5, 5)
    x[:, :, 0] = 2.0 * (torch.rand(B, T, 5, 5, generator=g) < 0.3)
    x[:, :, 1] = torch.randint(0, 4, (B, T, 5, 5), generator=g).float()  # ignored by the weights
    x[1, 2, 0] = 0.0  # one (sample, step) without any input spike
    return x


def _measure(net, x):
    clf = Classifier(net)
    return measure_energy(net, lambda: clf.predict(x))


def test_hand_built_net_macs_rates_sops_and_energy():
    x = _hand_input()
    report = _measure(HandNet(), x)
    assert (report.time_steps, report.samples) == (T, B)
    rows = {row.name: row for row in report.layers}
    assert list(rows) == ["conv", "fc1", "fc2"]  # forward order
    assert [rows[n].macs for n in rows] == [4 * 5 * 5 * 2 * 3 * 3, 100 * 6, 6 * 3]  # 1800, 600, 18

    # First layer: count frames (0..3) are not binary -> priced as MAC on every step, rate taken as 1.
    conv = rows["conv"]
    assert not conv.binary_input and conv.priced_as == "MAC"
    assert conv.input_rate == pytest.approx(float((x != 0).float().mean()))
    assert conv.sops == T * 1800 and conv.energy_pj == pytest.approx(T * 1800 * E_MAC_PJ)

    # fc1 sees the first IF's spikes: a spike exactly where channel 0 is 2, copied to the 4 channels.
    rate1 = float((x[:, :, 0] == 2).float().mean())
    fc1 = rows["fc1"]
    assert fc1.binary_input and fc1.priced_as == "AC"
    assert fc1.input_rate == pytest.approx(rate1)
    assert fc1.sops == pytest.approx(rate1 * T * 600)
    assert fc1.energy_pj == pytest.approx(rate1 * T * 600 * E_AC_PJ)

    # fc2 sees the second IF: all 6 units fire at each (sample, step) with any spike.
    rate2 = float((x[:, :, 0] == 2).flatten(2).any(2).float().mean())
    assert rate2 < 1  # the silent (sample, step) we planted
    fc2 = rows["fc2"]
    assert fc2.input_rate == pytest.approx(rate2)
    assert fc2.sops == pytest.approx(rate2 * T * 18)

    sn = {n.name: n for n in report.neurons}
    assert list(sn) == ["sn1", "sn2"]
    assert sn["sn1"].neurons == 100 and sn["sn1"].firing_rate == pytest.approx(rate1)
    assert sn["sn2"].neurons == 6 and sn["sn2"].firing_rate == pytest.approx(rate2)
    assert sn["sn1"].spikes_per_sample == pytest.approx(rate1 * 100 * T)


def test_totals_and_ann_equivalent():
    report = _measure(HandNet(), _hand_input())
    ac = [r for r in report.layers if r.priced_as == "AC"]
    assert report.sops == pytest.approx(sum(r.sops for r in ac))
    assert report.mac_ops == T * 1800
    assert report.energy_mj == pytest.approx((report.sops * E_AC_PJ + report.mac_ops * E_MAC_PJ) * 1e-9)
    # ANN equivalent: every layer dense, one step (an ANN reads the input once).
    assert report.ann_macs == report.dense_macs == 1800 + 600 + 18
    assert report.ann_energy_mj == pytest.approx(2418 * E_MAC_PJ * 1e-9)
    record = json.loads(json.dumps(report.to_dict()))
    assert record["totals"]["ann_macs"] == 2418 and len(record["layers"]) == 3
    assert record["totals"]["energy_mj"] == pytest.approx(report.energy_mj)


def test_binary_first_layer_is_priced_as_ac():
    x = (_hand_input() > 0).float()  # binary event frames
    conv = _measure(HandNet(), x).layers[0]
    assert conv.binary_input and conv.priced_as == "AC"
    assert conv.sops == pytest.approx(float((x != 0).float().mean()) * T * 1800)


def test_network_without_neurons_is_a_dense_ann():
    net = nn.Sequential(nn.Flatten(2), nn.Linear(50, 8), nn.ReLU(), nn.Linear(8, 3))
    x = (_hand_input() > 0).float()
    report = _measure(net, x)
    assert report.time_steps == 1 and not report.neurons
    assert all(r.priced_as == "MAC" for r in report.layers)
    assert report.mac_ops == T * (50 * 8 + 8 * 3)  # each of the T bins through the layers, per sample


def test_agrees_with_spikingjelly_synop_counter_without_padding():
    """Where padding plays no role (Linear, 1x1 conv), rate x T x MACs equals the exact per-spike count."""
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter

    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Conv2d(2, 6, 1, step_mode="m"),
        neuron.IFNode(step_mode="m"),
        layer.Flatten(step_mode="m"),
        layer.Linear(6 * 5 * 5, 4, step_mode="m"),
    )
    x = (torch.rand(B, T, 2, 5, 5) < 0.4).float()
    report = _measure(net, x)
    counter = SynOpCounter()
    clf = Classifier(net)
    with torch.no_grad(), DispatchCounterMode([counter]):
        clf.logits(x)
    assert all(r.priced_as == "AC" for r in report.layers)
    assert counter.get_total() > 0
    assert report.sops * B == pytest.approx(counter.get_total())


def test_run_must_call_the_network():
    with pytest.raises(ValueError, match="never called"):
        measure_energy(HandNet(), lambda: None)


@pytest.mark.parametrize("model, config, layers", [("sew-resnet", "tiny", 9), ("spiking-cnn", "tiny", 4)])
def test_zoo_models(model, config, layers):
    import snnsec.zoo.sew_resnet  # noqa: F401  (registers sew-resnet until zoo/__init__ imports it)

    torch.manual_seed(0)
    spec = InputSpec(frames=4, channels=2, height=34, width=34, num_classes=10)
    net = create_model(model, spec, config)
    x = torch.randint(0, 3, (2, 4, 2, 34, 34)).float()
    report = _measure(net, x)
    synaptic = [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [r.name for r in report.layers] == synaptic and len(synaptic) == layers
    first = report.layers[0]
    assert first.priced_as == "MAC" and first.sops == 4 * first.macs  # count frames
    if model == "sew-resnet":
        assert first.macs == 8 * 34 * 34 * 2  # 1x1 up conv, 2 -> 8 channels at 34x34
        assert len(report.neurons) == 8
    for row in report.layers:
        rate = 1.0 if row.priced_as == "MAC" else row.input_rate
        assert row.sops == pytest.approx(rate * 4 * row.macs)
    assert all(0 <= n.firing_rate <= 1 for n in report.neurons)
    assert report.ann_macs == sum(r.macs for r in report.layers)
    assert 0 < report.energy_mj and 0 < report.ann_energy_mj
    json.dumps(report.to_dict())
