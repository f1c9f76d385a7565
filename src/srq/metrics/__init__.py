"""PSNR/SSIM as pure functions on uint8 RGB images, and BT.601 colour conversions."""

from .color import rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb
from .psnr_ssim import psnr, psnr_ssim, ssim

__all__ = ["psnr", "psnr_ssim", "rgb_to_y", "rgb_to_ycbcr", "ssim", "ycbcr_to_rgb"]
