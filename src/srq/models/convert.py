"""Convert an official checkpoint (any format srq reads) into srq's own ``.safetensors`` file.

The source is loaded through the registry — safe reader, the architecture's ``adapt_state_dict``
(key renames, Paddle ``Linear`` transposes, derived buffers checked and dropped) and a strict load —
and the model's resulting ``state_dict()`` is written, so the file loads without any adaptation and
gives bit-identical outputs.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SrqError

__all__ = ["convert_checkpoint"]


def convert_checkpoint(model_name: str, scale: int, src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Load ``src`` into registry model ``model_name`` at ``scale`` and save it as ``dst`` (.safetensors).

    The file is written to a temporary name in the destination folder and moved into place with
    ``os.replace``, so ``dst`` is either the old file or the complete new one. Metadata records the
    model, the scale and the source file's name and SHA-256. Returns ``dst`` as a :class:`Path`.
    Raises :class:`SrqError` for unknown models/scales, unreadable or mismatching checkpoints and a
    destination that is not ``.safetensors``.
    """
    from ..fileio import file_sha256, write_safetensors
    from .registry import create_model

    dst = Path(dst)
    if dst.suffix.lower() != ".safetensors":
        raise SrqError(f"the output must end in .safetensors, not {dst.name!r}")
    src = Path(src)
    if not src.is_file():
        raise SrqError(f"weights file {str(src)!r} does not exist; check the path")
    net = create_model(model_name, scale, src, wrap=False)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    metadata = {"srq_model": model_name.lower(), "scale": str(scale), "source": src.name,
                "source_sha256": file_sha256(src)}
    try:
        return write_safetensors(dst, tensors, metadata=metadata)
    except OSError as e:
        raise SrqError(f"could not write {dst} ({e.strerror or e}); check the folder and free space")
