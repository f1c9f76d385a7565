"""Image IO, MATLAB-exact bicubic, benchmark sets."""
