"""Weight-quantization schemes shared by quantization-aware training (train/qat.py) and
post-training quantization (deploy/quantize.py), so both quantize exactly the same layers the
same way."""

from __future__ import annotations

import logging

import torch
from torch import nn

INT4_GROUP = 32  # input features per int4 scale


def torchao():
    """(torchao.quantization, PerGroup), with a one-line error naming the extra when missing."""
    logging.getLogger("torchao").setLevel(logging.ERROR)  # it logs every optional GPU kernel it lacks
    try:
        import torchao.quantization as ao
        from torchao.quantization.granularity import PerGroup
    except ImportError as e:
        raise ImportError(f"weight-only quantization needs torchao: pip install 'vlaforge[deploy]' ({e})") from None
    return ao, PerGroup


def int4_quantizable(module: nn.Module, _fqn: str = "") -> bool:
    """Plain Linear layers whose input width splits into int4 groups (subclasses such as the
    regression head keep their own methods and stay fp32, as in dynamic-int8)."""
    return type(module) is nn.Linear and module.in_features % INT4_GROUP == 0


def int4_config():
    """torchao's int4 weight-only config: int4 weights, one scale per INT4_GROUP inputs."""
    ao, per_group = torchao()
    return ao.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=per_group(INT4_GROUP))
