"""Compressors for gossip messages: each learner's row `[P]` of a block `[K, P]` becomes a byte string.

A compressor's message is a `uint8` tensor `[K, B]`, one row per learner, B bytes each: exactly
the bytes that are sent (values, indices, scales, packed bits), so the bytes a method counts are
the bytes the transport moves. `decode` turns the messages of any learners back into dense rows.
Random choices (random-k's entries, qsgd's rounding) come from streams keyed by
(seed, learner, round), so the sender and every receiver, in one process or many, agree.

Specs (`--compress`): `none`, `top-k:F`, `random-k:F`, `qsgd:B`, `sign`.
"""

from __future__ import annotations

import abc

import math

import numpy as np
import torch

from diffdac import noise
from diffdac.errors import ConfigError

RANDOM_K_STREAM = 0x5A4D  # noise stream: random-k's entries per (learner, round)
QSGD_STREAM = 0x9A5D  # noise stream: qsgd's stochastic rounding per (learner, entry, round)


def _bytes(tensor: torch.Tensor) -> torch.Tensor:
    """Rows `[K, X]` of any dtype as their bytes `[K, X * itemsize]`."""
    return tensor.contiguous().view(torch.uint8)


def _typed(message: torch.Tensor, start: int, count: int, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """`count` values of `dtype` per row read from byte column `start`, and the column after them."""
    end = start + count * _itemsize(dtype)
    return message[:, start:end].contiguous().view(dtype), end


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned codes `[K, P]` below 2**bits -> `[K, bits * ceil(P / 8)]` bytes: bit plane b of every entry, then b + 1.

    Plane by plane, so the largest temporary is one byte per entry (at 1,024 learners a bit per
    entry as int64 would be hundreds of MB).
    """
    k, p = codes.shape
    planes = []
    for b in range(bits):
        plane = ((codes >> b) & 1).to(torch.uint8)
        plane = torch.nn.functional.pad(plane, (0, (-p) % 8)).reshape(k, -1, 8)
        packed = plane[..., 0].clone()
        for j in range(1, 8):
            packed |= plane[..., j] << j
        planes.append(packed)
    return torch.cat(planes, dim=1)


def unpack_bits(packed: torch.Tensor, width: int, bits: int) -> torch.Tensor:
    """The inverse of `pack_bits`: `[K, bits * ceil(width / 8)]` bytes -> int64 codes `[K, width]`."""
    k, per_plane = packed.shape[0], math.ceil(width / 8)
    codes = torch.zeros((k, width), dtype=torch.int64, device=packed.device)
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    for b in range(bits):
        chunk = packed[:, b * per_plane : (b + 1) * per_plane]
        plane = ((chunk.unsqueeze(-1) >> shifts) & 1).reshape(k, -1)[:, :width]
        codes |= plane.to(torch.int64) << b
    return codes


class Compressor(abc.ABC):
    """One rule Q for compressing rows; subclasses say how a row becomes bytes and back.

    `exact` compressors lose nothing (decode(encode(v)) is v bit for bit).
    """

    exact = False

    def __init__(self, spec: str, seed: int) -> None:
        self.spec, self.seed = spec, seed

    @abc.abstractmethod
    def row_bytes(self, width: int, dtype: torch.dtype) -> int:
        """Bytes of one learner's message for a row of `width` entries of `dtype`."""

    @abc.abstractmethod
    def encode(self, rows: torch.Tensor, learners: np.ndarray, round_index: int) -> torch.Tensor:
        """Rows `[K, P]` of learners `learners` (global ids) in round `round_index` -> messages `[K, B]` uint8."""

    @abc.abstractmethod
    def decode(
        self, message: torch.Tensor, learners: np.ndarray, round_index: int, width: int, dtype: torch.dtype
    ) -> torch.Tensor:
        """Messages `[M, B]` of learners `learners` -> the dense rows `[M, width]` they stand for."""

    def compress(self, rows: torch.Tensor, learners: np.ndarray, round_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(messages, the rows a receiver decodes from them): what a test or a benchmark looks at."""
        message = self.encode(rows, learners, round_index)
        return message, self.decode(message, learners, round_index, rows.shape[1], rows.dtype)

    def __repr__(self) -> str:
        return f"Compressor({self.spec!r})"


class Identity(Compressor):
    """`none`: the rows themselves, at their dtype."""

    exact = True

    def row_bytes(self, width: int, dtype: torch.dtype) -> int:
        return width * _itemsize(dtype)

    def encode(self, rows: torch.Tensor, learners: np.ndarray, round_index: int) -> torch.Tensor:
        return _bytes(rows)

    def decode(self, message, learners, round_index, width, dtype) -> torch.Tensor:
        return _typed(message, 0, width, dtype)[0]


class Sparse(Compressor):
    """A fraction F of each row's entries, the rest zero: the count k = max(1, round(F * P))."""

    def __init__(self, spec: str, seed: int, fraction: float) -> None:
        super().__init__(spec, seed)
        self.fraction = fraction

    def count(self, width: int) -> int:
        return min(width, max(1, round(self.fraction * width)))

    def _scatter(self, values: torch.Tensor, indices: torch.Tensor, width: int) -> torch.Tensor:
        return values.new_zeros((len(values), width)).scatter_(1, indices.to(torch.int64), values)


def _index_dtype(width: int) -> torch.dtype:
    return torch.int32 if width < 2**31 else torch.int64


class TopK(Sparse):
    """`top-k:F`: the k entries of largest magnitude, sent as k values and k int32 indices (int64 past 2^31 entries)."""

    def row_bytes(self, width: int, dtype: torch.dtype) -> int:
        return self.count(width) * (_itemsize(dtype) + _itemsize(_index_dtype(width)))

    def encode(self, rows: torch.Tensor, learners: np.ndarray, round_index: int) -> torch.Tensor:
        width = rows.shape[1]
        indices = rows.abs().topk(self.count(width), dim=1, sorted=False).indices.sort(dim=1).values
        values = rows.gather(1, indices)
        return torch.cat([_bytes(values), _bytes(indices.to(_index_dtype(width)))], dim=1)

    def decode(self, message, learners, round_index, width, dtype) -> torch.Tensor:
        k = self.count(width)
        values, end = _typed(message, 0, k, dtype)
        indices, _ = _typed(message, end, k, _index_dtype(width))
        return self._scatter(values, indices, width)


class RandomK(Sparse):
    """`random-k:F`: k entries drawn per (seed, learner, round), sent as their k values only.

    Receivers draw the same entries from the same keyed stream, so no index travels.
    """

    def row_bytes(self, width: int, dtype: torch.dtype) -> int:
        return self.count(width) * _itemsize(dtype)

    def __init__(self, spec: str, seed: int, fraction: float) -> None:
        super().__init__(spec, seed, fraction)
        self._last: tuple[tuple, torch.Tensor] | None = None  # a round's entries: in one process decode reuses encode's

    def indices(self, learners: np.ndarray, round_index: int, width: int, device: torch.device) -> torch.Tensor:
        """The k entries of each learner's row in this round, ascending: `[K, k]` int64."""
        key = (round_index, width, str(device), np.asarray(learners).tobytes())
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        draws = noise.uniform(self.seed, RANDOM_K_STREAM, np.asarray(learners), 1, round_index, draws=width)[:, 0, :]
        k = self.count(width)
        chosen = torch.from_numpy(np.sort(np.argpartition(draws, k - 1, axis=1)[:, :k], axis=1)).to(device)
        self._last = (key, chosen)
        return chosen

    def encode(self, rows: torch.Tensor, learners: np.ndarray, round_index: int) -> torch.Tensor:
        values = rows.gather(1, self.indices(learners, round_index, rows.shape[1], rows.device))
        return _bytes(values)

    def decode(self, message, learners, round_index, width, dtype) -> torch.Tensor:
        values, _ = _typed(message, 0, self.count(width), dtype)
        return self._scatter(values, self.indices(learners, round_index, width, message.device), width)


class QSGD(Compressor):
    """`qsgd:B`: QSGD's stochastic quantisation (Alistarh et al. 2017) with B bits per entry and one scale per row.

    An entry is a sign bit and a level in 0..s, s = 2^(B-1) - 1 (sent as B bit planes of ceil(P / 8)
    bytes after the float scale), rounded up with probability the
    remainder of s|v_i|/||v||_2 (keyed draws), so Q(v) = ||v|| sign(v) level / s is unbiased.
    The message carries ||v|| / (s tau), tau = 1 + min(P / s^2, sqrt(P) / s), the scaling CHOCO's
    paper (Koloskova et al. 2019, its qsgd_s) applies to make Q a contraction in expectation: the
    decoded rows are the unbiased Q(v) divided by tau.
    """

    def __init__(self, spec: str, seed: int, bits: int) -> None:
        super().__init__(spec, seed)
        self.bits, self.levels = bits, 2 ** (bits - 1) - 1

    def tau(self, width: int) -> float:
        s = self.levels
        return 1.0 + min(width / s**2, math.sqrt(width) / s)

    def row_bytes(self, width: int, dtype: torch.dtype) -> int:
        return _itemsize(dtype) + self.bits * math.ceil(width / 8)

    def encode(self, rows: torch.Tensor, learners: np.ndarray, round_index: int) -> torch.Tensor:
        width, s = rows.shape[1], self.levels
        v = rows.double()
        norm = v.square().sum(1, keepdim=True).sqrt()
        ratio = torch.where(norm > 0, v.abs() * s / norm.clamp_min(1e-300), torch.zeros_like(v))
        draws = noise.uniform(self.seed, QSGD_STREAM, np.asarray(learners), 1, round_index, draws=width)[:, 0, :]
        level = torch.floor(ratio + torch.from_numpy(draws).to(v.device)).clamp_(0, s).to(torch.int32)
        codes = level | ((v < 0).to(torch.int32) << (self.bits - 1))
        scale = (norm / (s * self.tau(width))).to(rows.dtype)
        return torch.cat([_bytes(scale), pack_bits(codes, self.bits)], dim=1)

    def decode(self, message, learners, round_index, width, dtype) -> torch.Tensor:
        scale, end = _typed(message, 0, 1, dtype)
        codes = unpack_bits(message[:, end:], width, self.bits)
        level = (codes & self.levels).to(dtype)
        sign = 1 - 2 * (codes >> (self.bits - 1)).to(dtype)
        return scale * sign * level


class Sign(Compressor):
    """`sign`: one sign bit per entry and one scale per row, ||v||_1 / P (scaled sign, Karimireddy et al. 2019).

    A zero entry is sent as +. ||v - Q(v)||^2 = ||v||^2 - ||v||_1^2 / P: a contraction.
    """

    def row_bytes(self, width: int, dtype: torch.dtype) -> int:
        return _itemsize(dtype) + math.ceil(width / 8)

    def encode(self, rows: torch.Tensor, learners: np.ndarray, round_index: int) -> torch.Tensor:
        scale = rows.double().abs().mean(1, keepdim=True).to(rows.dtype)
        return torch.cat([_bytes(scale), pack_bits((rows < 0).to(torch.uint8), 1)], dim=1)

    def decode(self, message, learners, round_index, width, dtype) -> torch.Tensor:
        scale, end = _typed(message, 0, 1, dtype)
        negative = unpack_bits(message[:, end:], width, 1).to(dtype)
        return scale * (1 - 2 * negative)


SPECS = "none, top-k:F, random-k:F (0 < F <= 1), qsgd:B (2 <= B <= 16 bits) or sign"


def parse(spec: str, seed: int = 0) -> Compressor:
    """A `--compress` spec -> its compressor, or a ConfigError naming the forms there are."""
    name, _, arg = str(spec).partition(":")
    bad = ConfigError(f"--compress {spec!r} is not a compressor: use {SPECS}")
    if name in ("none", "sign"):
        if arg:
            raise bad
        return Identity(spec, seed) if name == "none" else Sign(spec, seed)
    if name in ("top-k", "random-k"):
        try:
            fraction = float(arg)
        except ValueError:
            raise bad from None
        if not 0 < fraction <= 1:
            raise bad
        return (TopK if name == "top-k" else RandomK)(spec, seed, fraction)
    if name == "qsgd":
        if not arg.isdigit() or not 2 <= int(arg) <= 16:
            raise bad
        return QSGD(spec, seed, int(arg))
    raise bad
