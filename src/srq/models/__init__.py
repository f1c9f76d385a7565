"""Model zoo: SR architectures written in srq that load the official checkpoints.

>>> import srq
>>> srq.models.list_models()          # doctest: +SKIP
>>> net = srq.create_model("imdn", scale=4, weights="official")   # doctest: +SKIP
"""

from .registry import ModelInfo, create_model, get_model_info, list_models, register_model

# Importing the architecture modules registers them.
from . import carn, edsr, fsrcnn, imdn, mambair, mambairv2, pan, rdn, rfdn, rlfn, srresnet, swinir, tiny  # noqa: F401,E402

__all__ = ["ModelInfo", "create_model", "get_model_info", "list_models", "register_model"]
