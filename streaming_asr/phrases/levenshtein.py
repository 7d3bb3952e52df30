"""Bit-parallel Levenshtein distance (Myers / Hyyrö) over many text windows and phrases at once, in
numpy: the kernel of phrase spotting (matching.py), kept apart because it is pure arithmetic on bit
vectors and needs no knowledge of phrases or words."""

from __future__ import annotations

import numpy as np


def _small_int_argsort(values: np.ndarray, descending: bool = False) -> np.ndarray:
    """Stable argsort of small non-negative ints (radix sort on 16 bits where they fit)."""
    v = -values if descending else values
    if values.size and int(values.max()) < 1 << 15:
        v = v.astype(np.int16)
    return np.argsort(v, kind="stable")


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per element of an unsigned integer array."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        counts: np.ndarray = np.bitwise_count(x).astype(np.int64)
        return counts
    x = x.astype(np.uint64)
    out = np.zeros(x.shape, dtype=np.int64)
    for shift in range(0, 64, 8):
        out += _BYTE_BITS[((x >> np.uint64(shift)) & np.uint64(255)).astype(np.intp)]
    return out


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def bit_parallel_distances(
    peq: list[np.ndarray],
    n_codes: int,
    codes: np.ndarray,
    lane_base: np.ndarray,
    lane_row: np.ndarray,
    lane_tlen: np.ndarray,
    need: np.ndarray,
    cand_lane: np.ndarray,
    cand_len: np.ndarray,
) -> np.ndarray:
    """Levenshtein distances for many (window, target) pairs at once (Myers 1999, Hyyrö 2001,
    global-distance variant).

    ``peq[w][row + code]`` holds bits ``w*B..`` (B = 32 or 64, the arrays' unsigned dtype) of the
    mask of the target's positions that hold character ``code``; lane ``l``'s target starts at row
    ``lane_row[l]`` and has ``lane_tlen[l]`` characters, and the lane scans ``codes`` from
    ``lane_base[l]`` for ``need[l]`` characters, one character per step, each step a few numpy
    operations over all lanes. Candidate ``c`` reads its distance from lane ``cand_lane[c]`` after
    ``cand_len[c]`` steps: D = steps + popcount(VP) - popcount(VN) over the target's bits."""
    dtype = peq[0].dtype.type
    bits = peq[0].dtype.itemsize * 8
    n_words = len(peq)
    one, top_shift = dtype(1), dtype(bits - 1)
    # Longest scan first, so that the lanes still running after r steps are a prefix.
    order = _small_int_argsort(need, descending=True)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    cand_lane = rank[cand_lane]
    need, lane_base, lane_row = need[order], lane_base[order], lane_row[order]
    lanes = need.size
    vp = [np.full(lanes, ~dtype(0), dtype=dtype) for _ in range(n_words)]
    vn = [np.zeros(lanes, dtype=dtype) for _ in range(n_words)]
    # The low target-length bits of each candidate's lane, word by word, to read the distance.
    c_len = lane_tlen[order][cand_lane].astype(np.int64)
    masks = []
    for w in range(n_words):
        k = np.clip(c_len - w * bits, 0, bits)
        part = np.left_shift(np.uint64(1), np.minimum(k, 63).astype(np.uint64)) - np.uint64(1)
        masks.append(np.where(k >= 64, ~np.uint64(0), part).astype(dtype))
    dist = np.empty(cand_len.size, dtype=np.int64)
    by_len = _small_int_argsort(cand_len)
    steps = int(need[0]) if lanes else 0
    bounds = np.searchsorted(cand_len[by_len], np.arange(steps + 2)).tolist()

    def read(r: int) -> None:  # distances of the windows r characters long
        cand = by_len[bounds[r] : bounds[r + 1]]
        if cand.size == 0:
            return
        lane = cand_lane[cand]
        d = np.full(cand.size, r, dtype=np.int64)
        for w in range(n_words):
            d += _popcount(vp[w][lane] & masks[w][cand])
            d -= _popcount(vn[w][lane] & masks[w][cand])
        dist[cand] = d

    read(0)
    active = np.searchsorted(-need, -np.arange(steps), side="left").tolist()  # lanes with need > r
    for r, a in enumerate(active):
        idx = lane_row[:a] + codes[lane_base[:a] + r]
        eq = [p[idx] for p in peq]
        pv = [v[:a] for v in vp]
        nv = [v[:a] for v in vn]
        # xh = (((eq & vp) + vp) ^ vp) | eq, the sum's carry running across the words
        xh = []
        carry = None
        for w in range(n_words):
            x = eq[w] & pv[w]
            s = x + pv[w]
            if carry is None:
                carry = s < x
            else:
                s2 = s + carry.astype(dtype)
                carry = (s < x) | (s2 < s)
                s = s2
            xh.append((s ^ pv[w]) | eq[w])
        hp = [nv[w] | ~(xh[w] | pv[w]) for w in range(n_words)]
        hn = [pv[w] & xh[w] for w in range(n_words)]
        # Shift both left by one across the words; a 1 enters hp (D[i][0] = i).
        hp = [(hp[w] << one) | ((hp[w - 1] >> top_shift) if w else one) for w in range(n_words)]
        hn = [(hn[w] << one) | (hn[w - 1] >> top_shift) if w else hn[w] << one for w in range(n_words)]
        for w in range(n_words):
            xv = eq[w] | nv[w]
            pv[w][...] = hn[w] | ~(xv | hp[w])
            nv[w][...] = hp[w] & xv
        read(r + 1)
    return dist
