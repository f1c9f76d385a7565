"""PSNR/SSIM as pure functions."""
