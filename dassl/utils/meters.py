"""Running averages for losses and metrics printed during training."""
from collections import defaultdict

import torch


class AverageMeter:
    """Tracks the last value, sum, count and average (or an exponential moving average)."""

    def __init__(self, ema=False):
        self.ema = ema
        self.reset()

    def reset(self):
        self.val = 0
        self.avg = 0
        self.sum = 0
        self.count = 0

    def update(self, val, n=1):
        if isinstance(val, torch.Tensor):
            val = val.item()
        self.val = val
        self.sum += val * n
        self.count += n
        if self.ema:
            self.avg = self.avg * 0.9 + self.val * 0.1
        else:
            self.avg = self.sum / self.count


class MetricMeter:
    """A set of named AverageMeters, printed as ``name val (avg)`` pairs.

    Usage::

        losses = MetricMeter()
        losses.update({"loss": loss, "acc": acc})
        print(losses)  # loss 0.4321 (0.5012) acc 88.0000 (85.2500)
    """

    def __init__(self, delimiter=" "):
        self.meters = defaultdict(AverageMeter)
        self.delimiter = delimiter

    def update(self, input_dict):
        if input_dict is None:
            return
        if not isinstance(input_dict, dict):
            raise TypeError("MetricMeter.update() expects a dict of name -> number or scalar tensor")
        for name, value in input_dict.items():
            self.meters[name].update(value)

    def __str__(self):
        return self.delimiter.join(
            f"{name} {meter.val:.4f} ({meter.avg:.4f})" for name, meter in self.meters.items()
        )
