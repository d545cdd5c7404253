"""The encoder family (BERT/MiniLM and GPT-2 style): pure functions of a parameter pytree
(``network``) and the NNX module ``Encoder`` (``module``), bit for bit the pure functions."""

from boundlab.models.encoder.module import Encoder as Encoder
from boundlab.models.encoder.module import init_params as init_params
from boundlab.models.encoder.network import EncoderConfig as EncoderConfig
from boundlab.models.encoder.network import encode as encode
from boundlab.models.encoder.network import encode_batch as encode_batch
from boundlab.models.encoder.network import mean_pool as mean_pool

__all__ = ["Encoder", "EncoderConfig", "encode", "encode_batch", "init_params", "mean_pool"]
