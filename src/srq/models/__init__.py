"""Model zoo: SR, denoising and JPEG-deblocking architectures written in srq that load the official checkpoints;
and your own models.

>>> import srq
>>> srq.models.list_models()          # doctest: +SKIP
>>> net = srq.create_model("imdn", scale=4, weights="official")   # doctest: +SKIP
>>> small = srq.create_model("rlfn", scale=4, feature_channels=48)   # a width variant (RLFN-S)  # doctest: +SKIP
>>> mine = srq.models.from_file("my_arch.py:build_model", scale=4, weights="my.pth", pixel_range=255)  # doctest: +SKIP
"""

from .checks import check_output_range
from .registry import ModelInfo, arch_defaults, create_model, get_model_info, list_models, register_model
from .user import from_file
from .wrappers import wrap

# Importing the architecture modules registers them.
from . import carn, dncnn, edsr, fsrcnn, imdn, mambair, mambairv2, pan, rdn, rfdn, rlfn, srresnet, swinir  # noqa: F401,E402
from . import mambair_restore, swinir_restore, tiny  # noqa: F401,E402

__all__ = ["ModelInfo", "arch_defaults", "check_output_range", "create_model", "from_file", "get_model_info",
           "list_models", "register_model", "wrap"]
