"""`ddpmlab bench train|sample|peers`: throughput on random data; nothing is downloaded or written."""

from __future__ import annotations

import json

from ddpmlab import bench
from ddpmlab.bench.peers import bench_peers, describe_peers


def run(args) -> int:
    if args.bench_command == "train":
        result = bench.bench_train(args.config, args.overrides, args.batch_size, args.steps, args.warmup, args.device)
        text = bench.describe_train
    elif args.bench_command == "sample":
        result = bench.bench_sample(args.config, args.sampler, args.steps, args.overrides, args.batch_size,
                                    args.repeats, args.device)
        text = bench.describe_sample
    else:
        result = bench_peers(args.batch_size, args.steps, args.rounds, args.warmup, args.device, args.overrides)
        text = describe_peers
    print(json.dumps(result) if args.json else text(result))
    return 0
