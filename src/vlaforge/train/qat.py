"""Quantization-aware training: the network trains with its Linear weights fake-quantized the
way deployment will quantize them, so it learns weights that survive the rounding.

``--train.qat=int4-weight`` inserts torchao's fake quantization for the ``int4-weight`` method
of ``vlaforge quantize`` (int4, groups of 32 inputs; the same layers, the same config). The
exported policy holds the trained fp32 weights; ``vlaforge quantize --method=int4-weight``
then produces exactly the network QAT trained.
"""

from __future__ import annotations

from torch import nn

from vlaforge.models.quant import int4_config, int4_quantizable, torchao

QAT_METHODS = ("int4-weight",)


def prepare_qat(model: nn.Module, method: str) -> nn.Module:
    """Swap the quantizable Linear layers of ``model`` (in place) for fake-quantized ones."""
    if method not in QAT_METHODS:
        raise ValueError(f"unknown QAT method {method!r}; known: {', '.join(QAT_METHODS)}")
    ao, _ = torchao()
    from torchao.quantization.qat import QATConfig

    ao.quantize_(model, QATConfig(int4_config(), step="prepare"), filter_fn=int4_quantizable)
    return model
