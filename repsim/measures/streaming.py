"""Exact streaming similarity: CKA and the CCA family from minibatches, in ``O(d^2)`` memory.

Feed paired minibatches ``(X_b, Y_b)`` (rows are datapoints; numpy or torch, CPU or CUDA, 4-D
with a ``conv=`` policy) to an accumulator with ``update``; combine accumulators built in
parallel with ``merge`` (in one process) or ``all_reduce`` (across the ranks of a
``torch.distributed`` process group). The results equal the in-memory
functions (:func:`repsim.linear_cka`, :func:`repsim.mean_cca`, ...) on the concatenated data to
rounding, whatever the batch sizes (a batch may have a single row) and however large the means.

**Exact pairwise updates.** Every accumulator keeps its statistics *about its own running
mean*: the count ``n``, the means ``m_x``, ``m_y`` and the centred co-moments
``Sxx = sum_i (x_i - m_x)(x_i - m_x)'``, ``Syy``, ``Sxy``. Two sets of statistics (a batch and
the running total, or two accumulators) ``A``, ``B`` are merged exactly by Chan, Golub & LeVeque
(1979): ``n = n_A + n_B``, ``m = m_A + (m_B - m_A) n_B / n`` and
``S = S_A + S_B + n_A n_B / n (m_B - m_A)(m_B - m_A)'``, i.e. each part's statistics are moved
from its own mean to the new one (``x - m = u + delta`` with ``u = x - m_part``,
``delta = m_part - m``, ``sum u = 0``) and added. Nothing is ever computed about the origin, so
large means (post-ReLU activations, offsets of ``1e4``) cause no cancellation.

**Every magnitude.** Each batch is scaled by a power of two per side (exactly) before its
statistics are formed, and statistics of different scales are brought to the larger one before
they are added, so nothing overflows or underflows at magnitudes from ``1e-300`` to ``1e300``;
the results (CKA and the CCA family do not depend on a side's scale) are those at magnitude 1.

**Across ranks.** :meth:`MomentAccumulator.all_reduce` gathers every rank's statistics as
tensors (two ``all_gather`` calls: a header of counts and scales, then the statistics) and
merges them on every rank in rank order 0, 1, ...: every rank ends with the same statistics, bit
for bit, whatever the timing, and they equal one accumulator fed everything up to rounding.
``torch.distributed`` is imported only when it is called.

Memory: ``O(dx^2 + dy^2 + dx dy)`` for the statistics plus what one batch needs. The accumulators
are :class:`MomentAccumulator` (the moments; here), :class:`~repsim.measures.streaming_cka.StreamingCKA`
and :class:`~repsim.measures.streaming_cca.StreamingCCA`.

Imports: :mod:`repsim.measures.inputs` and :mod:`repsim.measures.products` only.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import torch

from repsim.measures.inputs import as_pair, finite_max_abs, normalising_exponent, scale_, shares_memory
from repsim.measures.products import cross_product, gram

Stats = dict[str, torch.Tensor]
__all__ = ["MomentAccumulator", "Stats"]


def _times_power_of_two(t: torch.Tensor, exponent: int) -> torch.Tensor:
    """``t * 2^exponent`` as a new tensor (exact but for overflow and underflow)."""
    return scale_(t.clone(), -exponent)


def _rescaled_pair(values: tuple[float, float], old: tuple[int, int], new: tuple[int, int]) -> tuple[float, float]:
    return (values[0] * 2.0 ** (old[0] - new[0]), values[1] * 2.0 ** (old[1] - new[1]))


class MomentAccumulator:
    """Running count, means and centred co-moments of paired minibatches (exact, mergeable).

    After ``update`` with batches of ``X`` ``(b, dx)`` and ``Y`` ``(b, dy)``:

    - ``n``: number of datapoints seen;
    - ``mean_x`` ``(dx,)``, ``mean_y`` ``(dy,)``: their means;
    - ``sxx`` ``(dx, dx)``, ``syy`` ``(dy, dy)``, ``sxy`` ``(dx, dy)``: centred co-moments
      ``Xc'Xc``, ``Yc'Yc``, ``Xc'Yc`` of all the data seen (sums, not divided by ``n``).

    Args:
        conv: policy for 4-D batches ``(N, C, H, W)`` (see :data:`repsim.CONV_POLICIES`).
        dtype: dtype of the statistics (float64 by default; batches are cast before centring).

    Examples:
        Four datapoints one at a time: by hand the mean is ``2.5``, ``sum (x - 2.5)^2 = 5`` and
        ``sum (x - 2.5)(y - 2.5) = 4``.

        >>> from repsim.measures import MomentAccumulator
        >>> acc = MomentAccumulator()
        >>> for x, y in [(1.0, 1.0), (2.0, 3.0), (3.0, 2.0), (4.0, 4.0)]:
        ...     _ = acc.update([[x]], [[y]])
        >>> acc.n, round(float(acc.mean_x), 6), round(float(acc.sxx), 6), round(float(acc.sxy), 6)
        (4, 2.5, 5.0, 4.0)
    """

    #: How each statistic scales with the data: ``(p, q)`` for ``x^p y^q``.
    _POWERS: ClassVar[dict[str, tuple[int, int]]] = {
        "mean_x": (1, 0),
        "mean_y": (0, 1),
        "sxx": (2, 0),
        "syy": (0, 2),
        "sxy": (1, 1),
    }

    def __init__(self, *, conv: str | None = None, dtype: torch.dtype = torch.float64):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point torch dtype; got {dtype}")
        self.conv = conv
        self.dtype = dtype
        self.n = 0
        self.batches = 0
        self._stats: Stats = {}  # scaled by 2^-(p ex + q ey), (p, q) = _POWERS[key]
        self._exponents = (0, 0)  # (ex, ey): the power-of-two scale of the stored statistics
        self._largest = (0.0, 0.0)  # largest |x|, |y| seen, scaled: the yardstick for "constant"

    # ------------------------------------------------------------------ public statistics
    @property
    def mean_x(self) -> torch.Tensor:
        return self._stat("mean_x")

    @property
    def mean_y(self) -> torch.Tensor:
        return self._stat("mean_y")

    @property
    def sxx(self) -> torch.Tensor:
        return self._stat("sxx")

    @property
    def syy(self) -> torch.Tensor:
        return self._stat("syy")

    @property
    def sxy(self) -> torch.Tensor:
        return self._stat("sxy")

    @property
    def exponents(self) -> tuple[int, int]:
        """``(ex, ey)``: the statistics are kept for the data scaled by ``2^-ex``, ``2^-ey``."""
        return self._exponents

    def _stat(self, key: str) -> torch.Tensor:
        """A statistic in the data's units (it overflows to infinity where those do: co-moments of
        data beyond about ``1e154``; the results, computed from the scaled statistics, do not)."""
        if not self.n:
            raise ValueError(f"{type(self).__name__} has seen no data yet: call update(X, Y) first")
        p, q = self._POWERS[key]
        return _times_power_of_two(self._stats[key], p * self._exponents[0] + q * self._exponents[1])

    # ------------------------------------------------------------------ accumulation
    def update(self, X: Any, Y: Any) -> MomentAccumulator:
        """Add a minibatch: ``X`` ``(b, dx)``, ``Y`` ``(b, dy)`` (``b >= 1``) of the same datapoints.

        Raises ``ValueError`` for bad batches (NaN/inf, mismatched rows, 1-D, empty, 4-D without
        ``conv``) and for a number of neurons different from earlier batches. Returns ``self``.
        """
        x, y = as_pair(X, Y, conv=self.conv, dtype=self.dtype, min_n=1, measure="a minibatch", check_finite=False)
        if self._stats:
            self._check_dims(x.shape[1], y.shape[1])
            x, y = x.to(self._device), y.to(self._device)
        largest = (finite_max_abs(x, "X"), finite_max_abs(y, "Y"))
        exponents = (normalising_exponent(largest[0]), normalising_exponent(largest[1]))
        if exponents[0]:
            x = scale_(x.clone() if shares_memory(x, X) else x, exponents[0])
        if exponents[1]:
            y = scale_(y.clone() if shares_memory(y, Y) else y, exponents[1])
        mean_x, mean_y = x.mean(dim=0), y.mean(dim=0)
        batch = self._centred_stats(x - mean_x, y - mean_y)
        batch.update(mean_x=mean_x, mean_y=mean_y)
        scaled = (math.ldexp(largest[0], -exponents[0]), math.ldexp(largest[1], -exponents[1]))
        self._absorb(x.shape[0], batch, exponents, scaled, 1)
        return self

    def merge(self, other: MomentAccumulator) -> MomentAccumulator:
        """Add the data of another accumulator of the same kind, in place; returns ``self``.

        Exact (the pairwise update), so merging is associative and commutative to rounding.
        """
        if type(other) is not type(self) or other.conv != self.conv or other.dtype != self.dtype:
            raise ValueError(
                f"can only merge accumulators of one kind, conv and dtype: {type(self).__name__}"
                f"(conv={self.conv!r}, dtype={self.dtype}) and {type(other).__name__}"
                f"(conv={other.conv!r}, dtype={other.dtype})"
            )
        if not other.n:
            return self
        stats = dict(other._stats)
        if self.n:
            self._check_dims(stats["mean_x"].shape[0], stats["mean_y"].shape[0])
            stats = {key: value.to(self._device) for key, value in stats.items()}
        self._absorb(other.n, stats, other._exponents, other._largest, other.batches)
        return self

    def all_reduce(self, group: Any = None) -> MomentAccumulator:
        """Replace this accumulator's data by the data of every rank's accumulator in the
        ``torch.distributed`` process ``group`` (default: the default group), merged in rank
        order, in place; returns ``self``.

        A collective: every rank of the group calls it, with accumulators of one kind, ``conv``,
        ``dtype`` and settings, that have seen the same numbers of neurons (or no data at all).
        The exchange is two ``all_gather`` of tensors (CPU tensors for gloo, the current CUDA
        device for NCCL); the statistics stay on this accumulator's device. Every rank ends with
        the same statistics, bit for bit, equal to those of one accumulator fed every rank's
        batches (to rounding; ``merge`` is exact). ``ValueError`` (on every rank) when ranks saw
        different numbers of neurons.
        """
        import torch.distributed as dist

        world = dist.get_world_size(group)
        where = self._collective_device(dist.get_backend(group))
        header = torch.tensor(self._header(), dtype=torch.float64, device=where)
        headers = [torch.empty_like(header) for _ in range(world)]
        dist.all_gather(headers, header, group=group)
        dims = {(int(h[6]), int(h[7])) for h in headers if h[0] > 0}
        if len(dims) > 1:
            raise ValueError(f"the ranks' accumulators saw different numbers of neurons (dx, dy): {sorted(dims)}")
        if not dims:
            return self
        template = self._stats_template(*dims.pop())
        payload = self._flat_stats(template, where)
        payloads = [torch.empty_like(payload) for _ in range(world)]
        dist.all_gather(payloads, payload, group=group)
        home = self._device if self.n else where
        parts = [self._part(h, p.to(home), template) for h, p in zip(headers, payloads) if h[0] > 0]
        self.n, self.batches, self._stats, self._exponents, self._largest = 0, 0, {}, (0, 0), (0.0, 0.0)
        for part in parts:
            self.merge(part)
        return self

    def _collective_device(self, backend: str) -> torch.device:
        """Where the exchanged tensors live: the current CUDA device for NCCL, else the CPU."""
        return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")

    def _header(self) -> list[float]:
        """``[n, batches, ex, ey, largest_x, largest_y, dx, dy]`` (float64 holds each exactly)."""
        dims = (self._stats["mean_x"].shape[0], self._stats["mean_y"].shape[0]) if self.n else (0, 0)
        return [self.n, self.batches, *self._exponents, *self._largest, *dims]

    def _stats_template(self, dx: int, dy: int) -> Stats:
        """Zero statistics of the shapes this kind keeps for ``dx`` and ``dy`` neurons, by name."""
        stats = self._centred_stats(torch.zeros(1, dx, dtype=self.dtype), torch.zeros(1, dy, dtype=self.dtype))
        stats.update(mean_x=torch.zeros(dx, dtype=self.dtype), mean_y=torch.zeros(dy, dtype=self.dtype))
        return stats

    def _flat_stats(self, template: Stats, device: torch.device) -> torch.Tensor:
        """The statistics in name order as one flat tensor (zeros where there is no data)."""
        source = self._stats if self.n else template
        return torch.cat([source[key].reshape(-1).to(device) for key in sorted(template)])

    def _part(self, header: torch.Tensor, flat: torch.Tensor, template: Stats) -> MomentAccumulator:
        """An accumulator like this one holding one rank's ``header`` and statistics ``flat``."""
        part = copy.copy(self)
        values = [int(v) for v in header[:4].tolist()]
        part.n, part.batches, part._exponents = values[0], values[1], (values[2], values[3])
        part._largest = (float(header[4]), float(header[5]))
        sizes = [template[key].numel() for key in sorted(template)]
        pieces = torch.split(flat, sizes)
        part._stats = {key: piece.reshape(template[key].shape) for key, piece in zip(sorted(template), pieces)}
        return part

    def copy(self) -> MomentAccumulator:
        """An independent copy (for merging without changing this one)."""
        return copy.deepcopy(self)

    @property
    def _device(self) -> torch.device:
        """Where the statistics live: the device of the first data (later batches are moved there)."""
        return self._stats["mean_x"].device

    def _check_dims(self, dx: int, dy: int) -> None:
        have = (self._stats["mean_x"].shape[0], self._stats["mean_y"].shape[0])
        if (dx, dy) != have:
            raise ValueError(f"batch has {dx} neurons in X and {dy} in Y; earlier data had {have[0]} and {have[1]}")

    def _absorb(
        self,
        n_b: int,
        stats_b: Stats,
        exponents_b: tuple[int, int],
        largest_b: tuple[float, float],
        batches: int,
    ) -> None:
        """Merge statistics ``stats_b`` of ``n_b`` datapoints (about their own mean, scaled by
        ``exponents_b``) into ours: both are first brought to the larger scale of each side (an
        exact power-of-two rescaling), so that nothing overflows whatever the magnitudes."""
        if not self.n:
            self.n, self._stats, self._exponents, self._largest = n_b, stats_b, exponents_b, largest_b
        else:
            common = (max(self._exponents[0], exponents_b[0]), max(self._exponents[1], exponents_b[1]))
            largest_a = _rescaled_pair(self._largest, self._exponents, common)
            self._stats = self._rescaled(self._stats, self._exponents, common)
            stats_b = self._rescaled(stats_b, exponents_b, common)
            largest_b = _rescaled_pair(largest_b, exponents_b, common)
            self._exponents = common
            self._largest = (max(largest_a[0], largest_b[0]), max(largest_a[1], largest_b[1]))
            n_a, stats_a = self.n, self._stats
            n = n_a + n_b
            step_x = stats_b["mean_x"] - stats_a["mean_x"]
            step_y = stats_b["mean_y"] - stats_a["mean_y"]
            frac_b = n_b / n
            # each part moves to the new mean m = m_A + step n_B / n: delta_A = -step n_B / n,
            # delta_B = step n_A / n
            moved_a = self._shifted(stats_a, n_a, -step_x * frac_b, -step_y * frac_b)
            moved_b = self._shifted(stats_b, n_b, step_x * (1 - frac_b), step_y * (1 - frac_b))
            self._stats = {key: moved_a[key] + moved_b[key] for key in moved_a}
            self._stats["mean_x"] = stats_a["mean_x"] + step_x * frac_b
            self._stats["mean_y"] = stats_a["mean_y"] + step_y * frac_b
            self.n = n
        self.batches += batches

    @classmethod
    def _rescaled(cls, stats: Stats, old: tuple[int, int], new: tuple[int, int]) -> Stats:
        """Statistics scaled by ``2^-old`` expressed at the scale ``2^-new`` (``new >= old``)."""
        return {
            key: _times_power_of_two(
                value, -(cls._POWERS[key][0] * (new[0] - old[0]) + cls._POWERS[key][1] * (new[1] - old[1]))
            )
            for key, value in stats.items()
        }

    @staticmethod
    def _centred_stats(u: torch.Tensor, v: torch.Tensor) -> Stats:
        """Co-moments of a batch centred at its own mean: ``u`` ``(b, dx)``, ``v`` ``(b, dy)``."""
        return {"sxx": gram(u), "syy": gram(v), "sxy": cross_product(u, v)}

    @staticmethod
    def _shifted(stats: Stats, n: int, dx: torch.Tensor, dy: torch.Tensor) -> Stats:
        """Co-moments about a centre moved so that every centred point ``u`` becomes ``u + dx``
        (``v + dy``): ``S_pq + n d_p d_q'`` (the cross terms vanish as ``sum u = 0``)."""
        return {
            "sxx": stats["sxx"] + n * torch.outer(dx, dx),
            "syy": stats["syy"] + n * torch.outer(dy, dy),
            "sxy": stats["sxy"] + n * torch.outer(dx, dy),
        }

    # ------------------------------------------------------------------ checks for results
    def _check_ready(self, min_n: int, measure: str) -> None:
        """Enough datapoints for ``measure``, and neither side constant."""
        if self.n < min_n:
            raise ValueError(f"{measure} needs at least {min_n} datapoints; the accumulator has {self.n}")
        eps = torch.finfo(self.dtype).eps
        for name, key, scale in (("X", "sxx", self._largest[0]), ("Y", "syy", self._largest[1])):
            # as repsim.measures.inputs.centre: constant when every centred entry is <= 64 eps max|t|
            if float(torch.diagonal(self._stats[key]).max()) <= self.n * (64 * eps * scale) ** 2:
                raise ValueError(f"{name} is constant: every neuron has zero variance over the datapoints")
