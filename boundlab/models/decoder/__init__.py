"""The decoder family (the Llama architecture: RMS norm, rotary embeddings, grouped-query attention,
SwiGLU, tied embeddings): pure functions of a parameter pytree (``network``), a KV cache in a chosen
storage format and generation under ``lax.scan`` (``generation``), and the NNX module ``Decoder``
(``module``), bit for bit the pure functions.  ``boundlab.models.load("smollm2")`` gives
SmolLM2-135M-Instruct in this family."""

from boundlab.models.decoder.generation import CacheFormat as CacheFormat
from boundlab.models.decoder.generation import empty_cache as empty_cache
from boundlab.models.decoder.generation import forward_cached as forward_cached
from boundlab.models.decoder.generation import generate as generate
from boundlab.models.decoder.generation import generate_batch as generate_batch
from boundlab.models.decoder.generation import pad_prompts as pad_prompts
from boundlab.models.decoder.generation import shard_prompts as shard_prompts
from boundlab.models.decoder.module import Decoder as Decoder
from boundlab.models.decoder.network import LAYER_KEYS as LAYER_KEYS
from boundlab.models.decoder.network import DecoderConfig as DecoderConfig
from boundlab.models.decoder.network import attention_maps as attention_maps
from boundlab.models.decoder.network import block as block
from boundlab.models.decoder.network import cast_params as cast_params
from boundlab.models.decoder.network import check_params as check_params
from boundlab.models.decoder.network import forward as forward
from boundlab.models.decoder.network import forward_batch as forward_batch
from boundlab.models.decoder.network import init_params as init_params
from boundlab.models.decoder.network import next_token_loss as next_token_loss
from boundlab.models.decoder.network import param_shapes as param_shapes

__all__ = ["CacheFormat", "Decoder", "DecoderConfig", "LAYER_KEYS", "attention_maps", "block", "cast_params", "check_params",
           "empty_cache", "forward", "forward_batch", "forward_cached", "generate", "generate_batch", "init_params",
           "next_token_loss", "pad_prompts", "param_shapes", "shard_prompts"]
