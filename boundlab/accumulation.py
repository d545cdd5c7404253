"""Orders of sums and dot products, one small function per order.

Each order sums the k terms ``term(0, key), ..., term(k - 1, key)`` with a rounded addition
``add(x, y, key)`` supplied by the arithmetic policy (Model 4.1: fl(x + y) = (x + y)(1 + delta)).

* ``recursive``: s = (((x_1 + x_2) + x_3) + ...), one rounding per addition; the order Lemma
  4.3 analyses: |fl(sum x) - sum x| <= gamma_{k-1} ||x||_1.
* ``pairwise``: a balanced tree, an odd term out waiting for the next level; one rounding per
  addition (error gamma_{ceil(log2 k)} ||x||_1).
* ``blocked``: the unrounded terms of each block of ``size`` are added in float64 in index order
  (exact while a block's terms span fewer than 53 - 2t bits of exponent), each block sum is
  rounded once by ``round_block`` and the block results are added recursively: tensor-core
  multiply-accumulate with a wide internal accumulator.

Sums of up to ``unroll`` terms are unrolled into straight-line code (XLA fuses the recursion into
one loop over the output, running sum in a register); longer ones run as ``lax.fori_loop`` or a
vectorised tree (much faster to compile).  Deterministic modes give the same bits either way.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from boundlab.rounding import hash_fold_in

ACCUMULATIONS = ("recursive", "pairwise", "blocked")

Term = Callable  # term(j, key) -> array; j a Python int (unrolled) or a traced index
Add = Callable  # add(x, y, key) -> fl(x + y)


def fold_key(key, index):
    """The key of sub-site ``index`` (``rounding.hash_fold_in``: a cheap counter hash, not
    threefry), or None when there is no key (deterministic rounding)."""
    return None if key is None else hash_fold_in(key, index)


def take(x, j, axis):
    """x[..., j, ...] along ``axis`` for a Python int or a traced index."""
    if isinstance(j, int):
        return lax.index_in_dim(x, j, axis=axis, keepdims=False)
    return lax.dynamic_index_in_dim(x, j, axis=axis, keepdims=False)


class KeyStream:
    """Distinct PRNG keys for successive rounding sites, fixed by the order of the trace."""

    def __init__(self, key):
        self.key, self._count = key, 0

    def next(self):
        if self.key is None:
            return None
        self._count += 1
        return hash_fold_in(self.key, self._count)


def recursive(term: Term, k: int, add: Add, keys: KeyStream, unroll: int):
    """(((t_0 + t_1) + t_2) + ...) + t_{k-1}, every addition rounded."""
    if k <= unroll:
        total = term(0, keys.next())
        for j in range(1, k):
            total = add(total, term(j, keys.next()), keys.next())
        return total
    term_keys, sum_keys = keys.next(), keys.next()

    def body(j, total):
        return add(total, term(j, fold_key(term_keys, j)), fold_key(sum_keys, j))

    return lax.fori_loop(1, k, body, term(0, fold_key(term_keys, 0)))


def pairwise(term: Term, k: int, add: Add, keys: KeyStream, unroll: int):
    """A balanced tree of rounded additions; an odd term out joins at the next level."""
    if k <= unroll:
        level = [term(j, keys.next()) for j in range(k)]
        while len(level) > 1:
            pairs = [add(level[i], level[i + 1], keys.next()) for i in range(0, len(level) - 1, 2)]
            level = pairs + ([level[-1]] if len(level) % 2 else [])
        return level[0]
    term_keys = keys.next()
    stacked = jax.vmap(lambda j: term(j, fold_key(term_keys, j)))(jnp.arange(k))
    while stacked.shape[0] > 1:
        if stacked.shape[0] % 2:  # the odd term out waits for the next level, as above
            carried, stacked = stacked[-1:], stacked[:-1]
            stacked = jnp.concatenate([add(stacked[0::2], stacked[1::2], keys.next()), carried])
        else:
            stacked = add(stacked[0::2], stacked[1::2], keys.next())
    return stacked[0]


_BLOCK_UNROLL = 64  # block sizes up to this are summed in straight-line code


def blocked(raw_term: Callable, k: int, add: Add, round_block: Callable, size: int, keys: KeyStream,
            unroll: int, zero_down: bool = False):
    """Blocks of ``size`` unrounded terms ``raw_term(j)`` summed exactly in float64, each block
    rounded once (``round_block(block, key)``), the block results added recursively.

    Each block's sum is formed where ``recursive`` asks for the block (unrolled, or inside its
    loop over the blocks): the same float64 additions in the same order, so the same bits either
    way; no straight-line code over all k terms and no stack of the blocks (which Pallas's Triton
    lowering cannot build).  The float64 additions give an exact zero block sum IEEE 754's sign
    for every mode but round toward -inf (+0, unless every term is -0); ``zero_down`` gives it
    that mode's (-0, unless every term is +0)."""
    def block_sum(b):
        start = b * size

        def body(i, carry):  # past k (the last block): the sum kept as it is, not + 0 (-0 + 0 = +0)
            s, plus_zeros = carry  # plus_zeros: every term so far is +0 (tracked only for zero_down)
            static = isinstance(start + i, int)  # an unrolled block, its indices known
            if static and start + i >= k:
                return carry
            term = raw_term(start + i).astype(jnp.float64)
            inside = True if static else start + i < k
            total = s + term if static else jnp.where(inside, s + term, s)
            if plus_zeros is not None:
                plus_zeros = jnp.where(inside, plus_zeros & (term == 0) & ~jnp.signbit(term), plus_zeros)
            return total, plus_zeros

        first = raw_term(start).astype(jnp.float64)  # the fused part: no rounding to t bits
        carry = (first, ((first == 0) & ~jnp.signbit(first)) if zero_down else None)
        if size <= _BLOCK_UNROLL:  # straight-line inside the block: XLA fuses it (3x faster at 16)
            for i in range(1, size):
                carry = body(i, carry)
        else:
            carry = lax.fori_loop(1, size, body, carry)  # static trip count: reverse-mode differentiable
        total, plus_zeros = carry
        return jnp.where((total == 0) & ~plus_zeros, -0.0, total) if zero_down else total

    return recursive(lambda b, key: round_block(block_sum(b), key), -(-k // size), add, keys, unroll)
