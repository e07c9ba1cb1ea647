"""Seeded content generators for the synthetic disk: text/logs, executable-like binary, random.

Each generator is a table of tokens (padded to a fixed width, with a mask of the real bytes) and a
frequency table; output is gathered token by token with numpy, so it runs at ~100 MiB/s. With
zstd level 3 on 4 MiB pieces the text compresses ~3.3-3.6x and the binary ~1.9x; random does not.
"""

from __future__ import annotations

import numpy as np

from bench import layout

LETTERS = np.frombuffer(b"etaoinshrdlcumwfgypbvkjxqz", dtype=np.uint8)
_PIECE = 4 << 20  # generate in pieces of this many bytes (keeps temporaries small)


def _zipf_table(n: int, exponent: float, size: int = 1 << 16) -> np.ndarray:
    """Indices 0..n-1, each repeated in proportion to a Zipf weight: a uniform pick from the
    table is a Zipf-distributed pick, far faster than ``Generator.zipf``."""
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    counts = np.maximum(1, np.round(weights / weights.sum() * size)).astype(np.int64)
    return np.repeat(np.arange(n), counts)


class _TokenModel:
    """Tokens padded to ``width`` bytes (a multiple of 8, gathered as uint64 words)."""

    def __init__(self, tokens: np.ndarray, lengths: np.ndarray, table: np.ndarray) -> None:
        width = tokens.shape[1]
        assert width % 8 == 0
        self.words = np.ascontiguousarray(tokens, dtype=np.uint8).view(np.uint64)
        self.mask = np.arange(width)[None, :] < lengths[:, None]
        self.table = table
        self.mean_len = float(lengths[table].mean())

    def generate(self, rng: np.random.Generator, n: int) -> bytes:
        parts: list[np.ndarray] = []
        got = 0
        while got < n:
            count = int(min(_PIECE, n - got) / self.mean_len) + 64
            idx = self.table[rng.integers(0, len(self.table), count)]
            piece = self.words[idx].view(np.uint8).reshape(-1)[self.mask[idx].reshape(-1)]
            parts.append(piece)
            got += len(piece)
        return np.concatenate(parts)[:n].tobytes()


def text_model(rng: np.random.Generator) -> _TokenModel:
    """Log-like text: a 6,000-word vocabulary (letter frequencies of English, Zipf word
    frequencies) plus line starts carrying a timestamp."""
    nwords, nstarts, width = 6000, 3000, 16
    letter_p = 1.0 / np.arange(1, len(LETTERS) + 1)
    letter_p /= letter_p.sum()
    word_len = np.clip(rng.geometric(0.18, nwords), 2, width - 1)
    tokens = np.zeros((nwords + nstarts, width), dtype=np.uint8)
    letters = rng.choice(LETTERS, size=(nwords, width), p=letter_p)
    cols = np.arange(width)[None, :]
    tokens[:nwords] = np.where(cols < word_len[:, None], letters, 0)
    tokens[np.arange(nwords), word_len] = ord(" ")
    starts = [
        b"\n%02d:%02d:%02d.%03d "
        % (rng.integers(0, 24), rng.integers(0, 60), rng.integers(0, 60), rng.integers(0, 1000))
        for _ in range(nstarts)
    ]
    for i, start in enumerate(starts):
        tokens[nwords + i, : len(start)] = np.frombuffer(start, dtype=np.uint8)
    lengths = np.concatenate([word_len + 1, [len(s) for s in starts]]).astype(np.int64)
    table = np.concatenate([_zipf_table(nwords, 1.05), nwords + np.arange(2 * nstarts) % nstarts])
    return _TokenModel(tokens, lengths, table)


class _BinaryModel:
    """Executable-like binary: code (instruction idioms of 4-32 bytes with Zipf frequencies,
    mixed with operands of 2-8 bytes) interrupted by runs of random data (constants, tables,
    compressed resources) of 256 B-1.75 KiB making up 35 % of the bytes. Compresses ~1.9x, and
    zstd-3 runs on it at about the speed it has on real executables (~300 MiB/s here)."""

    RANDOM_SHARE, RANDOM_RUN = 0.35, 1024

    def __init__(self, rng: np.random.Generator) -> None:
        nidioms, noperands, width = 4000, 1 << 18, 32
        lengths = np.concatenate([rng.integers(4, 33, nidioms), rng.integers(2, 9, noperands)])
        tokens = rng.integers(0, 256, (nidioms + noperands, width), dtype=np.uint8)
        zipf = _zipf_table(nidioms, 1.1)
        operands = nidioms + rng.permutation(noperands)[: int(len(zipf) * 0.3)]
        table = np.concatenate([zipf, operands])
        self.code = _TokenModel(tokens, lengths.astype(np.int64), table)

    def generate(self, rng: np.random.Generator, n: int) -> bytes:
        out = np.frombuffer(self.code.generate(rng, n), dtype=np.uint8).copy()
        runs = 2 * n // self.RANDOM_RUN + 16  # enough runs to cover n
        run_len = rng.integers(self.RANDOM_RUN // 4, self.RANDOM_RUN * 7 // 4, runs)
        is_random = np.repeat(rng.random(runs) < self.RANDOM_SHARE, run_len)[:n]
        out[is_random] = np.frombuffer(rng.bytes(int(is_random.sum())), dtype=np.uint8)
        return out.tobytes()


class Content:
    """All kinds of content for one seed; ``make(kind, rng, n)`` returns ``n`` bytes."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng([seed, 0xC0DE])
        self.text = text_model(rng)
        self.binary = _BinaryModel(rng)

    def make(self, kind: str, rng: np.random.Generator, n: int) -> bytes:
        if kind == layout.TEXT:
            return self.text.generate(rng, n)
        if kind == layout.BINARY:
            return self.binary.generate(rng, n)
        if kind == layout.RANDOM:
            return rng.bytes(n)
        if kind == layout.ZEROS:
            return bytes(n)
        raise ValueError(f"no content for kind {kind!r}")
