"""PSNR/SSIM as pure functions on uint8 RGB images, and BT.601 colour conversions."""

from .color import rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb
from .psnr_ssim import psnr, ssim

__all__ = ["psnr", "rgb_to_y", "rgb_to_ycbcr", "ssim", "ycbcr_to_rgb"]
