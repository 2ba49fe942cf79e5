"""Quantization-aware training: the network trains with its Linear weights fake-quantized the
way deployment will quantize them, so it learns weights that survive the rounding.

``--train.qat=int4-weight`` inserts torchao's fake quantization for the ``int4-weight`` method
of ``vlaforge quantize`` (int4, groups of 32 inputs; the same layers, the same config). The
exported policy holds the trained fp32 weights; ``vlaforge quantize --method=int4-weight``
then produces exactly the network QAT trained.
"""

from __future__ import annotations

import logging

from torch import nn

QAT_METHODS = ("int4-weight",)


def _config(method: str):
    """The torchao base config and layer filter of a deploy method, as ``vlaforge quantize`` uses them."""
    import torch

    from vlaforge.deploy.quantize import INT4_GROUP, _torchao, int4_quantizable

    ao, per_group = _torchao()
    return ao.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=per_group(INT4_GROUP)), int4_quantizable


def prepare_qat(model: nn.Module, method: str) -> nn.Module:
    """Swap the quantizable Linear layers of ``model`` (in place) for fake-quantized ones."""
    if method not in QAT_METHODS:
        raise ValueError(f"unknown QAT method {method!r}; known: {', '.join(QAT_METHODS)}")
    logging.getLogger("torchao").setLevel(logging.ERROR)
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    base, layers = _config(method)
    quantize_(model, QATConfig(base, step="prepare"), filter_fn=layers)
    return model
