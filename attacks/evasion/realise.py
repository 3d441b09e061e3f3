"""Frame attacks in front of an event filter: their frame edits made real as events, and a filter-aware victim.

An event filter (``--filter ba|mask|purify``) acts on the raw stream, so a frame attack (fgsm, pgd, sda,
sparsefool, patch, random) that should face it has to be turned into events first. :class:`FrameRealiser` does
that for one clean stream and the attack's frames, framed without the filter:

- an element the attack raised (binary 0 -> 1, or a count +k) becomes that many new events, each at a seeded
  time inside the element's time bin and a seeded sensor pixel inside its cell, with its polarity;
- an element the attack lowered (binary 1 -> 0, or a count -k) loses that many of its events (binary: all of
  them), chosen with the same seeded generator. The stream's first and last events are never deleted: under
  ``slicing="time"`` they fix every bin's edges (an element that holds one of them keeps it, so the framed
  stream can differ from the attack's frames there; the score is always the real stream's). A stream shorter
  than T microseconds has bins no timestamp falls in: nothing can be added there.

The generator is seeded by the run's seed and the sample's row, so the same frames always give the same
stream: crafting and scoring agree exactly.

Two ways to attack a filtered model (``mode`` in ``snnsec.evading``), both scored on the realised stream through
the filter:

- ``static``: the attack crafts against the model without the filter; its frames are realised and filtered;
- ``adaptive``: the attack crafts against :class:`FilteredVictim`, whose forward realises each input, filters and
  frames it again (the exact pipeline of the scoring), and whose backward is the identity through the filter
  (BPDA, Athalye et al., ICML 2018: the filter only deletes events, so the identity is the natural
  approximation of its derivative). Query attacks see the filtered model's answers exactly.

Only ``slicing="time"`` is supported (the bins of the other slicings move with every inserted or deleted event),
as for the raw-event attack ``gumbel``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from snnsec.attacks.evasion.base import Victim
from snnsec.attacks.evasion.domains import DomainViolation
from snnsec.attacks.evasion.event_base import EventView, merged, synthetic_events
from snnsec.attacks.evasion.gumbel import StreamGrid, cell_bounds, stream_grid
from snnsec.errors import ConfigError


def check_realisable(slicing: str) -> None:
    """One-line error unless frames of ``slicing`` can be realised as events (time slicing only)."""
    if slicing != "time":
        raise ConfigError(f"--filter with a frame attack realises its edits as events, which needs --slicing time "
                          f"(the bins of {slicing!r} move with every inserted or deleted event)")


@dataclass(frozen=True)
class FrameRealiser:
    """Turns a frame attack's output into a real stream (module doc); ``view`` holds the filter and framing."""

    view: EventView
    seed: int = 0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        framing, (width, height, polarities) = self.view.framing, self.view.sensor_size
        out_h, out_w = framing.size if framing.size is not None else (height, width)
        return framing.frames, polarities, out_h, out_w

    def unfiltered(self, streams: Sequence[np.ndarray], device: torch.device | str = "cpu") -> Tensor:
        """The frames of ``streams`` without the filter: what a frame attack edits."""
        return self.view.without_filter().batch(streams, device)

    def grid(self, events: np.ndarray) -> StreamGrid:
        """Where each event of ``events`` sits in the frame grid (what :meth:`stream` edits)."""
        return stream_grid(events, self.view, self.shape)

    def stream(self, events: np.ndarray, clean: Tensor, adv: Tensor, key: int,
               grid: StreamGrid | None = None) -> np.ndarray:
        """``events`` with the changes from frames ``clean`` to ``adv`` (both ``[T, P, H, W]``, unfiltered) made
        real; ``key`` (the sample's row) seeds the times, pixels and deletions; ``grid``: :meth:`grid` of
        ``events``, if already made."""
        delta = (adv.detach().cpu().double() - clean.detach().cpu().double()).flatten().numpy()
        changed = np.flatnonzero(delta)
        if not len(changed) or not len(events):
            return events
        binary = self.view.framing.encoding == "binary"
        frames, polarities, out_h, out_w = self.shape
        width, height, _ = self.view.sensor_size
        grid = grid if grid is not None else self.grid(events)
        rng = np.random.default_rng([self.seed, key])
        deleted: list[np.ndarray] = []
        slots: list[np.ndarray] = []
        for slot, change in zip(changed.tolist(), delta[changed].tolist()):
            if change < 0:
                candidates = grid.removable_in(slot)
                keep = len(candidates) if binary else min(len(candidates), int(round(-change)))
                deleted.append(rng.permutation(candidates)[:keep])
            else:
                slots.append(np.full(int(round(change)), slot, dtype=np.int64))
        kept = np.delete(events, np.concatenate(deleted)) if deleted else events
        if not slots:
            return kept
        added = np.concatenate(slots)
        bins = added // (out_w * out_h * polarities)
        added = added[grid.t_hi[bins] > grid.t_lo[bins]]
        if not len(added):  # only bins no timestamp falls in (a stream shorter than T microseconds)
            return kept
        x_lo, x_hi = cell_bounds(out_w, width)
        y_lo, y_hi = cell_bounds(out_h, height)
        cx, cy = added % out_w, (added // out_w) % out_h
        channel, time_bin = (added // (out_w * out_h)) % polarities, added // (out_w * out_h * polarities)
        xs = rng.integers(x_lo[cx], x_hi[cx])
        ys = rng.integers(y_lo[cy], y_hi[cy])
        ts = rng.integers(grid.t_lo[time_bin], grid.t_hi[time_bin])
        return merged(kept, synthetic_events(events.dtype, xs, ys, ts, channel))

    def scored(self, events: np.ndarray, clean: Tensor, adv: Tensor, key: int,
               grid: StreamGrid | None = None) -> Tensor:
        """The frames the filtered model is shown for the realised stream ``[T, P, H, W]``."""
        return self.view.frames(self.stream(events, clean, adv, key, grid))


class FilteredVictim(Victim):
    """The model behind the event filter, for frame attacks (module doc: ``adaptive``).

    Inputs are frames without the filter, each an edit of one registered clean sample: the forward pass realises
    it on that sample's stream, filters and frames it, and the backward pass is the identity through the filter.
    A row is matched to its sample by the nearest registered clean frame (in elements that differ). Where that is
    not unique (a patch covering the whole frame) the first such sample is taken: the attack's view is then an
    approximation; the score never is (it realises each sample on its own stream)."""

    def __init__(self, victim: Victim, realiser: FrameRealiser) -> None:
        super().__init__(victim.classifier, victim.surrogate)
        self.realiser = realiser
        self._streams: list[np.ndarray] = []
        self._grids: list[StreamGrid] = []
        self._keys: list[int] = []
        self._clean = torch.zeros(0)
        self._support = torch.zeros(0)  # the clean frames' non-zero elements, flat, for matching rows

    def register(self, streams: Sequence[np.ndarray], clean: Tensor, keys: Sequence[int]) -> None:
        """Add samples (their streams, unfiltered clean frames ``[N, T, P, H, W]`` and seeding keys)."""
        self._streams.extend(streams)
        self._grids.extend(self.realiser.grid(e) for e in streams)
        self._keys.extend(int(k) for k in keys)
        clean = clean.detach().to(self.device)
        support = (clean > 0).flatten(1).float()
        self._clean = clean if not len(self._clean) else torch.cat([self._clean, clean])
        self._support = support if not len(self._support) else torch.cat([self._support, support])

    def through_filter(self, x: Tensor) -> Tensor:
        """What the filtered model is shown for each row of ``x`` (no gradients)."""
        owners = self._owners(x)
        frames = [self.realiser.scored(self._streams[i], self._clean[i], row, self._keys[i], self._grids[i])
                  for i, row in zip(owners.tolist(), x.detach())]
        return torch.stack(frames).to(x.device) if frames else x.detach().clone()

    def _owners(self, x: Tensor) -> Tensor:
        if not len(self._clean):
            raise DomainViolation("filter-aware attack: no clean samples registered")
        rows = (x.detach() > 0).flatten(1).float()
        differ = rows.sum(1, keepdim=True) + self._support.sum(1)[None] - 2 * rows @ self._support.T  # [n, registered]
        return differ.argmin(1)  # ties (a patch over the whole frame) take the first: crafting approximates

    def logits(self, x: Tensor) -> Tensor:
        shown = self.through_filter(x)
        return super().logits(x + (shown - x).detach())

    def predict_logits(self, x: Tensor, batch: int = 256) -> Tensor:
        return super().predict_logits(self.through_filter(x), batch)
