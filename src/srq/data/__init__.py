"""Image IO, MATLAB-exact bicubic, benchmark sets, training crops."""

from .bicubic import imresize, imresize_uint8
from .calibration import calibration_set
from .datasets import BENCHMARKS, Sample, SRBenchmark, benchmark_dir, calibration_images
from .download import DATASET_URLS, download_benchmarks, extract_benchmark
from .io import mod_crop, read_image, to_tensor, to_uint8, write_image
from .training import LROnlySet, TrainingSet

__all__ = [
    "BENCHMARKS",
    "DATASET_URLS",
    "LROnlySet",
    "SRBenchmark",
    "Sample",
    "TrainingSet",
    "benchmark_dir",
    "calibration_images",
    "calibration_set",
    "download_benchmarks",
    "extract_benchmark",
    "imresize",
    "imresize_uint8",
    "mod_crop",
    "read_image",
    "to_tensor",
    "to_uint8",
    "write_image",
]
