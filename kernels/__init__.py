"""Pallas custom-precision kernels, installed as ``boundlab.kernels``.

Empty for now: kernels arrive with their own issue, each next to a pure-jnp reference.  This
package is imported lazily, so ``import boundlab`` never needs Pallas or a GPU.
"""
