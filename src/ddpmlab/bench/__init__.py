"""Timing against peers: training and sampling throughput of a config's model, and our CIFAR-10 U-Net against
diffusers' UNet2DModel (an optional extra, `pip install -e .[peers]`, imported only by `bench.peers`)."""

from ddpmlab.bench.sample import bench_sample, describe_sample
from ddpmlab.bench.timing import count_flops, data_shape, images_per_second, matmul_rate, timed_calls
from ddpmlab.bench.train import TrainingStep, bench_train, describe_train

__all__ = ["bench_train", "describe_train", "bench_sample", "describe_sample", "TrainingStep", "count_flops",
           "data_shape", "images_per_second", "matmul_rate", "timed_calls"]
