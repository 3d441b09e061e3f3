"""Frame attacks in front of an event filter (``attacks/evasion/realise.py``): frame edits made real land in their
slots, the streams are valid and seeded, and the filter-aware victim shows the model the filtered realisation
while passing gradients straight through."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from snnsec.attacks.evasion.base import Victim
from snnsec.attacks.evasion.domains import check_event_stream
from snnsec.attacks.evasion.event_base import EventView
from snnsec.attacks.evasion.gumbel import bin_intervals
from snnsec.attacks.evasion.realise import FilteredVictim, FrameRealiser, check_realisable
from snnsec.classifier import Classifier
from snnsec.defenses.event_filters import create_event_filter
from snnsec.errors import ConfigError
from snnsec.framing import FramingConfig, encode, events_to_frames

try:
    from test_gumbel_attack import SENSOR, SmallSNN, random_stream
except ImportError:  # run from the repository root
    from tests.test_gumbel_attack import SENSOR, SmallSNN, random_stream


def _fixed_slots(events: np.ndarray, framing: FramingConfig) -> np.ndarray:
    """Slots that cannot be edited: those holding the stream's first or last event (never deleted: they fix the
    bins), and those of bins no timestamp falls in (a stream shorter than T microseconds)."""
    t = events["t"].astype(np.int64)
    ends = events[[int(np.argmin(t)), len(t) - 1 - int(np.argmax(t[::-1]))]]
    fixed = events_to_frames(ends, SENSOR, framing.frames, "time", framing.size) > 0
    lo, hi = bin_intervals(int(t.min()), int(t.max()), framing.frames)
    fixed[hi <= lo] = True
    return fixed.reshape(-1)


@pytest.mark.parametrize("encoding,size", [("binary", (16, 16)), ("counts", (16, 16)), ("binary", None)])
def test_realised_stream_frames_as_the_attack_edited_them(encoding, size):
    rng = np.random.default_rng(3)
    framing = FramingConfig(frames=4, size=size, encoding=encoding)
    realiser = FrameRealiser(EventView(SENSOR, framing), seed=7)
    checked = 0
    for key in range(30):
        events = random_stream(rng)
        if len(events) < 2:
            continue
        counts = events_to_frames(events, SENSOR, 4, "time", size)
        clean = torch.from_numpy(np.asarray(encode(counts, encoding), dtype=np.float32))
        pick = torch.from_numpy(rng.random(clean.shape)).float()
        if encoding == "binary":
            adv = torch.where(pick < 0.03, 1 - clean, clean)
        else:
            adv = (clean + torch.where(pick < 0.02, 2.0, 0.0) - torch.where(pick > 0.97, 1.0, 0.0)).clamp_min(0)
        stream = realiser.stream(events, clean, adv, key)
        found = check_event_stream(stream, SENSOR, events)
        after = encode(events_to_frames(stream, SENSOR, 4, "time", size), encoding).reshape(-1).astype(np.float64)
        want = adv.reshape(-1).double().numpy()
        free = ~_fixed_slots(events, framing)
        assert (after[free] == want[free]).all()
        changed = (clean != adv).reshape(-1).numpy()
        assert found["total"] >= int(changed[free].sum())  # at least one event per edited element
        assert (realiser.stream(events, clean, adv, key) == stream).all()  # seeded: same frames, same stream
        checked += int(changed.sum())
    assert checked > 200


def test_filtered_victim_shows_the_filtered_realisation_and_passes_gradients_straight_through():
    framing = FramingConfig(frames=4, size=(16, 16), encoding="binary")
    view = EventView(SENSOR, framing, create_event_filter("ba"))
    realiser = FrameRealiser(view, seed=0)
    rng = np.random.default_rng(0)
    streams = [random_stream(rng) for _ in range(12)]
    streams = [s for s in streams if len(s) > 50][:4]
    classifier = Classifier(SmallSNN())
    clean = realiser.unfiltered(streams)
    victim = FilteredVictim(Victim(classifier), realiser)
    victim.register(streams, clean, range(len(streams)))
    adv = clean.clone()
    adv[:, :, 1, 4:8, 4:8] = 1  # a block of ON pixels on every sample
    shown = torch.stack([realiser.scored(s, c, a, k) for k, (s, c, a) in enumerate(zip(streams, clean, adv))])
    assert torch.equal(victim.through_filter(adv), shown)
    assert torch.equal(victim.through_filter(adv[[2, 0]]), shown[[2, 0]])  # rows matched to their own streams
    plain = Victim(classifier)
    assert torch.allclose(victim.predict_logits(adv), plain.predict_logits(shown))
    loss = lambda logits: logits[:, 0]  # noqa: E731
    grad, _ = victim.gradient(adv, loss)
    grad_shown, _ = plain.gradient(shown, loss)
    assert torch.allclose(grad, grad_shown)  # the identity through the filter (BPDA)


def test_only_time_slicing_is_realisable():
    check_realisable("time")
    with pytest.raises(ConfigError, match="needs --slicing time"):
        check_realisable("count")
