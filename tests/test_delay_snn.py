"""delay-snn (Hammouamri et al., SNN-delays): sizes, integer delays at evaluation, the sigma schedule, its own
optimizers through the one trainer, and inputs of both kinds (spiking audio and event-camera frames)."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from snnsec.artifacts import load_training_state
from snnsec.classifier import Classifier
from snnsec.errors import ConfigError
from snnsec.training import Optimization, TrainConfig, seed_everything, train
from snnsec.zoo import MODELS, InputSpec, create_model
from snnsec.zoo.base import EMBEDDED_INPUT, OptimizerGroup
from snnsec.zoo.delay_snn import SHD_INPUT, SSC_INPUT, DelayConv, DelaySNNConfig

pytestmark = pytest.mark.usefixtures("one_thread")
ENTRY = MODELS.get("delay-snn")
AUDIO = InputSpec(frames=12, channels=1, height=1, width=8, num_classes=4)
TAU = (10.05 + 1e-9) / 10.0
#: DCLS normalises each one-hot kernel by (sum + 1e-7): the weight it applies at an integer delay.
DCLS_SCALE = torch.tensor(1.0) / (torch.tensor(1.0) + 1e-7)


def build(spec: InputSpec, config: str = "tiny", **over) -> torch.nn.Module:
    seed_everything(0)
    return create_model("delay-snn", spec, config, **over)


# ------------------------------------------------------------------------------------- sizes and configs

def test_paper_configs_have_the_reference_parameter_counts_and_key_layout():
    shd = build(ENTRY.input_for("shd"), "shd")
    ssc = build(ENTRY.input_for("ssc"), "ssc")
    assert sum(p.numel() for p in shd.parameters() if p.requires_grad) == 214_016
    assert sum(p.numel() for p in shd.parameters()) == 214_016  # SIG is a buffer, not a frozen parameter
    assert sum(p.numel() for p in ssc.parameters() if p.requires_grad) == 1_230_848
    assert (ENTRY.input_for("shd"), ENTRY.input_for("ssc")) == (SHD_INPUT, SSC_INPUT)
    assert (SHD_INPUT.channels, SHD_INPUT.height, SHD_INPUT.width) == (1, 1, 140)
    # The reference's nn.Sequential: [Dcls1d, BN, LIF, Dropout] x 2, Dcls1d, LIF.
    assert [k for k in shd.state_dict() if not k.startswith("model.1.") and not k.startswith("model.5.")] == [
        f"model.{i}.{name}" for i in (0, 4, 8) for name in ("weight", "P", "SIG")]
    assert {ENTRY.default_config(SHD_INPUT), ENTRY.default_config(SSC_INPUT)} == {"shd", "ssc"}
    assert ENTRY.default_config(EMBEDDED_INPUT) == "small"
    conv = shd.model[0]
    assert float(conv.SIG.min()) == float(conv.SIG.max()) == 12 and float(conv.P.detach().abs().max()) <= 12
    assert not conv.SIG.requires_grad


def test_bad_input_and_bad_options_fail_in_one_line():
    net = build(AUDIO)
    for x in (torch.zeros(12, 2, 1, 1, 9), torch.zeros(2, 12, 1, 1, 8), torch.zeros(12, 2, 8)):
        with pytest.raises(ConfigError) as info:
            net(x)
        assert "\n" not in str(info.value) and "zoo model 'delay-snn' takes float frames" in str(info.value)
    for bad in ({"max_delay": 4}, {"dropout": 1.0}, {"pool_mode": "max"}, {"tau_ms": 5.0}, {"layers": 0}):
        with pytest.raises(ConfigError) as info:
            DelaySNNConfig(**bad)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("spec", [EMBEDDED_INPUT, InputSpec(10, 1, 1, 140, 20)], ids=["digits-dvs", "audio"])
def test_runs_on_camera_and_audio_frames_through_the_classifier(spec):
    net = build(spec, "small" if spec.height > 1 else "tiny")
    clf = Classifier(net, ENTRY.feature_layer)
    x = (torch.rand(3, spec.frames, spec.channels, spec.height, spec.width) < 0.2).float()
    logits, feats = clf.logits_and_features(x)
    assert logits.shape == (3, spec.num_classes) and torch.isfinite(logits).all()
    assert feats.shape[0] == 3
    md = net.config.max_delay
    # m = sum_t softmax(v_t) over T + (layers + 1) * (max_delay - 1) // 2 steps: each row sums to that count.
    steps = spec.frames + (net.config.layers + 1) * ((md - 1) // 2)
    assert torch.allclose(logits.sum(1), torch.full((3,), float(steps)), atol=1e-4)
    assert clf.predict(x).shape == (3,)


# ------------------------------------------------------------------ evaluation: integer delays, no mutation

def shifted(x: torch.Tensor, weight: torch.Tensor, delays: torch.Tensor, steps: int) -> torch.Tensor:
    """``[T, B, C_in]`` -> ``[steps, B, C_out]``: y[t, :, o] = sum_i weight[o, i] * x[t - delays[o, i], :, i]."""
    frames = x.shape[0]
    y = torch.zeros(steps, x.shape[1], weight.shape[0])
    for o in range(weight.shape[0]):
        for i in range(weight.shape[1]):
            d = int(delays[o, i])
            n = min(frames, steps - d)
            if n > 0:
                y[d:d + n, :, o] += DCLS_SCALE * weight[o, i] * x[:n, :, i]
    return y


def integer_delays(conv: DelayConv) -> torch.Tensor:
    """Rounded positions as delays: kernel index round(P) + max_delay // 2 after max_delay - 1 left padding."""
    lim = conv.dilated_kernel_size[0] // 2
    return lim - torch.round(conv.P.detach()[0, :, :, 0]).clamp(-lim, lim)


def test_dcls_layer_in_eval_mode_is_an_integer_shift_of_each_input_channel():
    torch.manual_seed(0)
    md, frames = 7, 9
    conv = DelayConv(6, 4, md)
    with torch.no_grad():
        conv.P.uniform_(-3.4, 3.4)
        conv.SIG.fill_(2.0)
    x = torch.randn(frames, 2, 6)  # [T, B, C]
    padded = F.pad(x.permute(1, 2, 0), (md - 1, (md - 1) // 2))
    conv.eval()
    out = conv(padded).permute(2, 0, 1)
    delays = integer_delays(conv)
    assert torch.equal(conv.delays(), delays.long()) and 0 <= int(delays.min()) and int(delays.max()) <= md - 1
    assert len(delays.unique()) > 3
    expected = shifted(x, conv.weight.detach()[:, :, 0], delays, frames + (md - 1) // 2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    conv.train()
    assert not torch.allclose(conv(padded).permute(2, 0, 1), expected, atol=1e-3)  # training: Gaussian kernels


def reimplemented_logits(net, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The eval forward written out: explicit shifts, BN with running statistics, LIF loops, softmax sum.
    Returns ``[B, K]`` and the hidden layers' firing rate."""
    md, layers = net.config.max_delay, net.config.layers
    h = x.flatten(2)
    rates = []
    for i in range(layers):
        conv, bn = net.model[4 * i], net.model[4 * i + 1]
        h = shifted(h, conv.weight.detach()[:, :, 0], integer_delays(conv), h.shape[0] + (md - 1) // 2)
        h = (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight.detach() + bn.bias.detach()
        v, spikes = torch.zeros_like(h[0]), []
        for t in range(h.shape[0]):
            v = v - v / TAU + h[t]
            s = (v >= 1.0).float()
            v = v * (1 - s)
            spikes.append(s)
        h = torch.stack(spikes)
        rates.append(float(h.mean()))
    conv = net.model[-2]
    h = shifted(h, conv.weight.detach()[:, :, 0], integer_delays(conv), h.shape[0] + (md - 1) // 2)
    v, vs = torch.zeros_like(h[0]), []
    for t in range(h.shape[0]):
        v = v - v / TAU + h[t]
        vs.append(v)
    return torch.stack(vs).softmax(2).sum(0), sum(rates) / len(rates)


def test_eval_logits_equal_an_explicit_integer_delay_network():
    spec = InputSpec(frames=10, channels=1, height=1, width=12, num_classes=5)
    net = build(spec, "tiny", layers=2, hidden=16, max_delay=7, dropout=0.3)
    torch.manual_seed(1)
    with torch.no_grad():
        for bn in (net.model[1], net.model[5]):  # statistics and gains that make every layer spike
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(1.0, 3.0)
            bn.bias.uniform_(-0.2, 0.5)
    x = (torch.rand(3, 10, 1, 1, 12) < 0.4).float()
    clf = Classifier(net.eval())
    with torch.no_grad():
        logits = clf.logits(x)
    expected, rate = reimplemented_logits(net, x.transpose(0, 1))
    assert 0.05 < rate < 0.8, rate
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_eval_leaves_the_trained_positions_alone():
    net = build(AUDIO, "tiny", max_delay=9)
    x = (torch.rand(12, 4, 1, 1, 8) < 0.3).float()
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "batches" not in k}
    clf = Classifier(net)
    train_out = clf.logits(x.transpose(0, 1)).detach()
    with clf.evaluating():
        eval_out = clf.logits(x.transpose(0, 1)).detach()
    net.train()
    assert not torch.allclose(train_out, eval_out)
    for key, value in before.items():
        assert torch.equal(net.state_dict()[key], value), key
    positions = net.model[0].P
    assert not torch.equal(positions, positions.round())  # still unrounded
    assert torch.allclose(clf.logits(x.transpose(0, 1)).detach(), train_out)


# -------------------------------------------------------------------------------- training: sigma, optimizers

def test_sigma_decays_exponentially_to_0_23_over_the_first_quarter_of_the_epochs():
    net = build(AUDIO, "tiny", max_delay=25)
    assert net.sigma == 12
    sigmas = []
    for epoch in range(20):
        net.end_epoch(epoch, 20)
        sigmas.append(net.sigma)
    assert sigmas[3] > 0.3 and sigmas[4] == pytest.approx(0.23, rel=1e-5)
    assert sigmas[:5] == pytest.approx([12 * (0.23 / 12) ** (k / 5) for k in range(1, 6)], rel=1e-5)
    assert sigmas[5:] == [sigmas[4]] * 15
    assert all(float(c.SIG.min()) == float(c.SIG.max()) == sigmas[-1] for c in net.convs)
    short = build(AUDIO, "tiny", max_delay=25)
    for epoch in range(3):  # epochs // 4 == 0: no decay, as the reference
        short.end_epoch(epoch, 3)
    assert short.sigma == 12


def test_positions_get_their_own_adam_at_100x_lr_without_weight_decay():
    net = build(AUDIO, "small")
    optimization = Optimization(net, TrainConfig(epochs=8, lr=1e-3, weight_decay=1e-5), steps_per_epoch=5)
    opts = optimization.optimizers
    assert list(opts) == ["weights", "batchnorm", "positions"]
    assert all(type(o) is torch.optim.Adam for o in opts.values())
    positions = opts["positions"].param_groups[0]
    assert [id(p) for p in positions["params"]] == [id(c.P) for c in net.convs]
    assert positions["lr"] == pytest.approx(0.1) and positions["weight_decay"] == 0
    weights = opts["weights"].param_groups[0]
    assert [id(p) for p in weights["params"]] == [id(c.weight) for c in net.convs]
    assert weights["weight_decay"] == 1e-5 and opts["batchnorm"].param_groups[0]["weight_decay"] == 0
    assert weights["lr"] == pytest.approx(5e-3 / 25)  # one-cycle from its peak 5 lr / 25
    for _ in range(5):  # per-batch steps leave the per-epoch schedules alone
        optimization.step()
    assert positions["lr"] == pytest.approx(0.1)
    optimization.end_epoch(0)
    assert positions["lr"] == pytest.approx(0.05 * (1 + torch.cos(torch.tensor(torch.pi / 8)).item()))
    assert weights["lr"] > 5e-3 / 25
    with pytest.raises(ConfigError, match="reference's schedules"):
        Optimization(net, TrainConfig(warmup_steps=3), steps_per_epoch=5)
    # A defense's own phase (ABL's unlearning: SGD with momentum, constant lr) gets what it asks for.
    tuned = Optimization(net, TrainConfig(lr=1e-3, optimizer="sgd", momentum=0.9, schedule="constant"),
                         steps_per_epoch=5)
    assert all(type(o) is torch.optim.SGD and o.param_groups[0]["momentum"] == 0.9 for o in tuned.optimizers.values())
    tuned.step()
    tuned.end_epoch(0)
    assert tuned.optimizers["weights"].param_groups[0]["lr"] == pytest.approx(1e-3)
    assert tuned.optimizers["positions"].param_groups[0]["lr"] == pytest.approx(0.1)


def test_trainer_rejects_groups_that_miss_a_parameter():
    class Partial(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)

        def optimizer_groups(self, config):
            return [OptimizerGroup("a", tuple(self.a.parameters()), config.lr)]

    with pytest.raises(ConfigError, match="exactly once"):
        Optimization(Partial(), TrainConfig(), steps_per_epoch=1)


def planted_audio(n: int = 64) -> TensorDataset:
    """Class k: channels 2k and 2k+1 fire, the second 3 steps after the first, plus sparse noise."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % AUDIO.num_classes
    x = (torch.rand(n, AUDIO.frames, 1, 1, AUDIO.width, generator=g) < 0.05).float()
    starts = torch.randint(0, AUDIO.frames - 4, (n,), generator=g)
    for i in range(n):
        k, t = int(labels[i]), int(starts[i])
        x[i, t, 0, 0, 2 * k] = 1.0
        x[i, t + 3, 0, 0, 2 * k + 1] = 1.0
    return TensorDataset(x, labels)


def test_tiny_config_trains_through_the_one_trainer_and_resumes():
    data = planted_audio()
    config = TrainConfig(epochs=4, batch_size=16, lr=5e-3, weight_decay=1e-5, seed=0)
    clf = Classifier(build(AUDIO), ENTRY.feature_layer)
    history = train(clf, data, config)
    assert history[-1] < 0.75 * history[0], history
    assert clf.net.sigma == pytest.approx(0.23, rel=1e-5)  # epochs // 4 = 1 decay step
    assert not clf.net.training
    lim = clf.net.config.max_delay // 2
    assert all(float(c.P.detach().abs().max()) <= lim for c in clf.net.convs)


def test_a_run_killed_mid_epoch_resumes_all_optimizers_and_schedules(tmp_path, monkeypatch):
    data = planted_audio(48)
    config = TrainConfig(epochs=4, batch_size=16, lr=5e-3, weight_decay=1e-5, seed=0)
    unbroken = Classifier(build(AUDIO, dropout=0.2))
    expected = train(unbroken, data, config)

    calls, original = {"n": 0}, torch.optim.Adam.step

    def die_in_second_epoch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3 * 3 + 4:  # 3 optimizers, 3 batches per epoch: the second epoch's second batch
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    checkpoint = tmp_path / "delay.partial.pt"
    monkeypatch.setattr(torch.optim.Adam, "step", die_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(Classifier(build(AUDIO, dropout=0.2)), data, config, checkpoint=checkpoint)
    monkeypatch.setattr(torch.optim.Adam, "step", original)
    saved = load_training_state(checkpoint)
    assert len(saved["history"]) == 1 and set(saved["optimizers"]) == {"weights", "batchnorm", "positions"}
    assert set(saved["schedulers"]) == set(saved["optimizers"])
    resumed = Classifier(build(AUDIO, dropout=0.2))
    assert train(resumed, data, config, checkpoint=checkpoint) == expected
    for (key, a), b in zip(unbroken.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(a, b), key
