"""Energy estimator: hand-computed MACs and SOPs, pricing rules, totals, and zoo models."""
import json

import pytest
import torch
from spikingjelly.activation_based import layer, neuron
from torch import nn

from snnsec.classifier import Classifier
from snnsec.energy import CONVENTIONS, DEFAULT_CONVENTION, E_AC_PJ, E_MAC_PJ, measure_energy
from snnsec.zoo.base import InputSpec, create_model
from snnsec.zoo.transformer_parts import ActivationProduct

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


# ----------------------------------------------------------------------------------- activation products


class ProductNet(nn.Module):
    """x -> Linear (identity weights) = h -> IF = s; then h h^T (no spike operand), (h h^T) s (spikes on the right)
    and s * s (element-wise, spikes on the left). With x in {0, 0.25, 2} over T=2 steps, s = (x == 2) exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = layer.Linear(4, 4, bias=False, step_mode="m")
        self.sn = neuron.IFNode(step_mode="m")
        self.gram = ActivationProduct("matmul")
        self.select = ActivationProduct("matmul")
        self.mask = ActivationProduct("mul")
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(4))

    def forward(self, x):  # [T, B, 1, 4, 4]
        h = self.fc(x)
        s = self.sn(h)
        return (self.select(self.gram(h, h.transpose(-2, -1)), s) + self.mask(s, s)).flatten(2)


def test_activation_products_are_priced_by_their_spike_operand():
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([0.0, 0.25, 2.0])[torch.randint(0, 3, (B, 2, 1, 4, 4), generator=g)]
    report = _measure(ProductNet(), x)
    rows = {row.name: row for row in report.layers}
    assert list(rows) == ["fc", "gram", "select", "mask"]
    assert [rows[n].kind for n in rows] == ["Linear", "MatMul", "MatMul", "Mul"]
    # per sample and step: h h^T and (h h^T) s are 4 x 4 outputs of length-4 dot products; s * s is 16 products
    assert [rows[n].macs for n in rows] == [64, 64, 64, 16]
    spike_rate = float((x == 2).float().mean())
    gram = rows["gram"]
    assert not gram.binary_input and gram.priced_as == "MAC" and gram.sops == 2 * 64
    assert gram.energy_pj == pytest.approx(2 * 64 * E_MAC_PJ)
    select = rows["select"]  # integer scores on the left, spikes on the right: each spike selects a score
    assert select.binary_input and select.priced_as == "AC"
    assert select.input_rate == pytest.approx(spike_rate)
    assert select.sops == pytest.approx(spike_rate * 2 * 64)
    assert rows["mask"].priced_as == "AC" and rows["mask"].sops == pytest.approx(spike_rate * 2 * 16)
    assert report.dense_macs == report.ann_macs == 64 * 3 + 16
    assert report.mac_ops == 2 * 64 + 2 * 64  # fc reads h's real values, and the gram matrix
    assert report.sops == pytest.approx(spike_rate * 2 * (64 + 16))


def test_activation_product_leaves_the_operator_unchanged():
    a, b = torch.rand(2, 3, 5, 4), torch.rand(2, 3, 4, 6)
    assert torch.equal(ActivationProduct("matmul")(a, b), a @ b)
    assert torch.equal(ActivationProduct("mul")(a, a), a * a)
    assert not list(ActivationProduct("mul").state_dict())
    with pytest.raises(ValueError, match="op must be"):
        ActivationProduct("einsum")


#: Per transformer: its attention products, the LIF whose spikes each is priced by, and its dense MACs per
#: sample and step in tokens N and width C (any split into heads gives the same count).
ATTENTION = {
    "spikformer": {"qk": ("q_lif", lambda n, c: n * n * c), "qkv": ("v_lif", lambda n, c: n * n * c)},
    "spikingformer": {"qk": ("q_lif", lambda n, c: n * n * c), "qkv": ("v_lif", lambda n, c: n * n * c)},
    "spike-driven-transformer": {"kv": ("k_lif", lambda n, c: n * c), "qkv": ("q_lif", lambda n, c: n * c)},
}


def _tiny_firing_transformer(model: str):
    """A seeded tiny zoo transformer in train mode (BN on batch statistics: every layer fires at init), its
    config, its Classifier and a seeded count-frame batch [2, 3, 2, 34, 34]."""
    from snnsec.zoo.base import MODELS

    torch.manual_seed(0)
    spec = InputSpec(frames=3, channels=2, height=34, width=34, num_classes=10)
    net = create_model(model, spec, "tiny").train()
    x = torch.randint(0, 3, (2, 3, 2, 34, 34), generator=torch.Generator().manual_seed(0)).float()
    return MODELS.get(model).configs["tiny"], net, Classifier(net), x

@pytest.mark.parametrize("model", sorted(ATTENTION))
def test_transformer_attention_products_match_a_hand_count(model):
    from snnsec.zoo.transformer_parts import token_grid

    config, net, clf, x = _tiny_firing_transformer(model)
    scores = []  # Q K^T of Spikformer / Spikingformer: integer-valued, so (Q K^T) V is priced by V's spikes
    if model != "spike-driven-transformer":
        net.block[0].attn.qk.register_forward_hook(lambda _m, _args, out: scores.append(out))
    report = measure_energy(net, lambda: clf.logits(x))

    grid = token_grid(34, 34, config.pooling)
    tokens, width = grid[0] * grid[1], config.embed_dim
    rows = {row.name: row for row in report.layers}
    rates = {n.name: n.firing_rate for n in report.neurons}
    for product, (lif_name, macs) in ATTENTION[model].items():
        row = rows[f"block.0.attn.{product}"]
        rate = rates[f"block.0.attn.{lif_name}"]
        assert row.macs == macs(tokens, width), product
        assert row.priced_as == "AC" and row.binary_input
        assert 0 < rate < 1 and row.input_rate == pytest.approx(rate), product
        assert row.sops == pytest.approx(rate * 3 * row.macs)
        assert row.energy_pj == pytest.approx(row.sops * E_AC_PJ)
    if scores:
        assert (scores[0] > 1).any()  # not binary: the event operand of (Q K^T) V is V
    names = [row.name for row in report.layers]  # in forward order, between the value conv and the projection
    assert names.index("block.0.attn.v_conv") < names.index("block.0.attn.qkv") < names.index("block.0.attn.proj_conv")
    assert report.dense_macs == sum(row.macs for row in report.layers)
    assert report.sops == pytest.approx(sum(row.sops for row in report.layers if row.priced_as == "AC"))


# ----------------------------------------------------------------------------------- conventions


class TwoLayerAttention(nn.Module):
    """Linear(3d, 3d) (identity weights) -> IF, split into Q, K, V (N tokens x d), then (Q K^T) V.

    On binary input the IF fires exactly where the input is 1 (threshold 1, hard reset), so Q, K and V are
    the input's three chunks and every count below is known in closed form."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = layer.Linear(3 * d, 3 * d, bias=False, step_mode="m")
        self.sn = neuron.IFNode(step_mode="m")
        self.attn = nn.Module()
        self.attn.qk = ActivationProduct("matmul")
        self.attn.qkv = ActivationProduct("matmul")
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(3 * d))

    def forward(self, x):  # [T, B, 1, N, 3d]
        q, k, v = self.sn(self.fc(x)).chunk(3, dim=-1)
        return self.attn.qkv(self.attn.qk(q, k.transpose(-2, -1)), v).flatten(2)


def _attention_input(n: int, d: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    density = torch.tensor([0.6] * d + [0.35] * d + [0.2] * d)  # Q, K, V
    return (torch.rand(B, T, 1, n, 3 * d, generator=g) < density).float()


@pytest.mark.parametrize("name", ["measured", "papers", "spikingformer-script"])
def test_each_convention_equals_a_hand_count_on_a_two_layer_model(name):
    n, d = 6, 4
    x = _attention_input(n, d)
    net = TwoLayerAttention(d)
    clf = Classifier(net)
    report = measure_energy(net, lambda: clf.predict(x), convention=name)
    assert report.convention == CONVENTIONS[name] and report.to_dict()["convention"]["name"] == name
    rate_x = float(x.mean())
    rate_q, rate_k, rate_v = (float(part.mean()) for part in x.chunk(3, dim=-1))
    fc_macs = n * 3 * d * 3 * d
    if name == "papers":  # first layer as MAC on every step, whatever its input
        fc = T * fc_macs * E_MAC_PJ
    else:  # binary frames: one accumulate per input event and synapse
        fc = rate_x * T * fc_macs * E_AC_PJ
    if name == "spikingformer-script":  # Q (K^T V): K^T V at min(rate K, rate V), Q (K^T V) at rate Q
        attention = (min(rate_k, rate_v) + rate_q) * T * n * d * d * E_AC_PJ
    else:  # (Q K^T) V: Q K^T at rate Q; (Q K^T) V, integer scores on the left, at rate V
        attention = (rate_q + rate_v) * T * n * n * d * E_AC_PJ
    assert report.energy_mj == pytest.approx((fc + attention) * 1e-9)
    rows = {row.name: row for row in report.layers}
    assert rows["fc"].priced_as == ("MAC" if name == "papers" else "AC") and rows["fc"].binary_input
    expected_macs = n * d * d if name == "spikingformer-script" else n * n * d
    assert rows["attn.qk"].macs == rows["attn.qkv"].macs == expected_macs


def test_conventions_are_named_and_validated():
    from snnsec.cli import ENERGY_CONVENTIONS
    from snnsec.energy import EnergyConvention, energy_convention
    from snnsec.errors import ConfigError

    assert tuple(CONVENTIONS) == ENERGY_CONVENTIONS and DEFAULT_CONVENTION == "measured"
    with pytest.raises(ConfigError, match="papers"):
        energy_convention("literature")
    with pytest.raises(ConfigError, match="kv-first"):
        EnergyConvention("mine", attention="k-first")
    x = (_hand_input() > 0).float()
    measured = _measure(HandNet(), x)
    net = HandNet()
    clf = Classifier(net)
    papers = measure_energy(net, lambda: clf.predict(x), convention=EnergyConvention("mine", first_layer="mac"))
    assert papers.layers[0].priced_as == "MAC" and measured.layers[0].priced_as == "AC"
    assert papers.layers[1:] == measured.layers[1:]  # only the first layer is re-priced


def test_agrees_with_spikingjelly_synop_counter_on_padded_convolutions():
    """On 3x3 convolutions with zero padding, rate x T x MACs counts the synapses into the padding too, so it
    exceeds spikingjelly's exact per-spike count: by about 3% at 32x32 (the border), asserted within 10%."""
    from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter

    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Conv2d(2, 4, 3, padding=1, bias=False, step_mode="m"),
        neuron.IFNode(step_mode="m"),
        layer.Conv2d(4, 4, 3, padding=1, bias=False, step_mode="m"),
    )
    with torch.no_grad():
        net[0].weight.abs_()  # every conv output positive: the IF fires
    x = (torch.rand(B, T, 2, 32, 32) < 0.3).float()
    report = _measure(net, x)
    counter = SynOpCounter()
    with torch.no_grad(), DispatchCounterMode([counter]):
        Classifier(net).logits(x)
    exact = counter.get_total() / B
    assert all(r.priced_as == "AC" for r in report.layers) and exact > 0
    assert exact <= report.sops <= 1.10 * exact


@pytest.mark.parametrize("model", ["spikformer", "spikingformer"])
def test_kv_first_attention_on_zoo_transformers(model):
    """Spikingformer's script order Q (K^T V): N d^2 per head for each product, N / d times fewer than (Q K^T) V."""
    from snnsec.zoo.transformer_parts import token_grid

    config, net, clf, x = _tiny_firing_transformer(model)
    computed = measure_energy(net, lambda: clf.logits(x))
    kv_first = measure_energy(net, lambda: clf.logits(x), convention="spikingformer-script")
    grid = token_grid(34, 34, config.pooling)
    tokens, width, head = grid[0] * grid[1], config.embed_dim, config.embed_dim // config.heads
    rates = {n.name: n.firing_rate for n in kv_first.neurons}
    rows = {row.name: row for row in kv_first.layers}
    kv, qkv = rows["block.0.attn.qk"], rows["block.0.attn.qkv"]
    assert kv.macs == qkv.macs == tokens * width * head
    k_rate, v_rate = rates["block.0.attn.k_lif"], rates["block.0.attn.v_lif"]
    assert kv.input_rate == pytest.approx(min(k_rate, v_rate))
    assert qkv.input_rate == pytest.approx(rates["block.0.attn.q_lif"])
    assert kv.sops == pytest.approx(kv.input_rate * 3 * kv.macs) and kv.priced_as == qkv.priced_as == "AC"
    others = [name for name in rows if ".attn.qk" not in name]
    assert all(rows[name] == {r.name: r for r in computed.layers}[name] for name in others)


def test_attack_tables_name_the_energy_convention_also_for_records_made_before_it_was_selectable():
    from snnsec.experiment import ATTACK_COLUMNS
    from snnsec.records import cell, flatten

    column = next(c for c in ATTACK_COLUMNS if c.title == "E. conv.")
    old = flatten({"metrics": {"energy_mj": 0.1}})
    new = flatten({"metrics": {"energy_mj": 0.1, "energy_convention": "papers"}})
    assert cell(old, column) == "measured" and cell(new, column) == "papers"


def test_delay_layers_cost_one_accumulate_per_spike_tap_and_target():
    """A DCLS delay layer (delay-snn) on time-padded input: a spike reaches each output neuron through
    kernel_count taps, so its SOPs are (input spikes) x C_out x kernel_count, whatever the padding or the
    dilated kernel's length."""
    spec = InputSpec(frames=12, channels=1, height=1, width=140, num_classes=20)
    net = create_model("delay-snn", spec, "tiny").eval()
    x = (torch.rand(3, 12, 1, 1, 140) < 0.1).float()
    report = measure_energy(net, lambda: Classifier(net).predict(x))
    first = report.layers[0]
    conv = next(m for m in net.modules() if type(m).__name__ == "DelayConv")
    assert first.binary_input and first.priced_as == "AC"
    assert first.macs == conv.out_channels * 140 * conv.kernel_count
    assert first.sops == pytest.approx(float(x.sum()) / 3 * conv.out_channels * conv.kernel_count)
