"""Attention backends agree with naive attention; the flash-attn packing is exact; bad names fail."""

import pytest
import torch

from vlaforge.models.transformer import Attention, attention, flash_attn_unpadded, naive_attention


def qkv_mask(seed=0, b=3, h=2, t=11, dh=8):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, t, dh, generator=g) for _ in range(3))
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[0, 2:5] = False
    mask[-1, -3:] = False
    return q, k, v, mask


@pytest.mark.parametrize("backend", ["auto", "flash", "math", "composed"])
def test_backends_agree_with_naive(backend):
    q, k, v, mask = qkv_mask()
    ref = naive_attention(q, k, v, mask)
    torch.testing.assert_close(attention(q, k, v, mask, backend), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(attention(q, k, v, None, backend), naive_attention(q, k, v), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["auto", "flash", "math", "composed"])
def test_backends_agree_under_bf16_autocast(backend):
    q, k, v, mask = qkv_mask(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, backend)
    torch.testing.assert_close(out.float(), naive_attention(q, k, v, mask), rtol=0.05, atol=0.05)


def varlen_reference(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0):
    """flash_attn_varlen_func's contract, in plain torch: each packed sequence attends to itself."""
    out = torch.empty_like(q)
    for s, e in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
        seq = [x[s:e].transpose(0, 1).float() for x in (q, k, v)]
        out[s:e] = naive_attention(*(x[None] for x in seq))[0].transpose(0, 1).to(q.dtype)
    return out


def test_flash_attn_packing_matches_masked_attention():
    q, k, v, mask = qkv_mask(2)
    out = flash_attn_unpadded(q, k, v, mask, kernel=varlen_reference)
    ref = naive_attention(q, k, v, mask)
    keep = mask[:, None, :, None].expand_as(ref)
    torch.testing.assert_close(out[keep], ref[keep], rtol=0.02, atol=0.02)  # packed in bf16
    assert bool((out[~keep] == 0).all())


def test_module_backends_agree():
    torch.manual_seed(0)
    ref = Attention(16, 4, 0.0, "math")
    x, mask = torch.randn(2, 7, 16), torch.ones(2, 7, dtype=torch.bool)
    mask[1, :2] = False
    for backend in ("auto", "flash", "composed"):
        other = Attention(16, 4, 0.0, backend)
        other.load_state_dict(ref.state_dict())
        torch.testing.assert_close(other(x, mask), ref(x, mask), rtol=1e-5, atol=1e-5)


def test_bad_backends():
    with pytest.raises(ValueError, match="unknown attention backend 'fast'"):
        Attention(8, 2, 0.0, "fast")
    q, k, v, mask = qkv_mask()
    with pytest.raises(ValueError, match="mem_efficient has no CPU kernel"):
        attention(q, k, v, mask, "mem_efficient")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["auto", "mem_efficient", "math"])
def test_cuda_backends_agree(backend):
    q, k, v, mask = (x.cuda() for x in qkv_mask())
    torch.testing.assert_close(attention(q, k, v, mask, backend), naive_attention(q, k, v, mask), rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_flash():
    from vlaforge.models.transformer import flash_attn_available

    q, k, v, mask = (x.cuda() for x in qkv_mask())
    h = [x.half() for x in (q, k, v)]
    torch.testing.assert_close(attention(*h, None, "flash").float(), naive_attention(q, k, v), rtol=0.01, atol=0.01)
    if not flash_attn_available():
        with pytest.raises(ValueError, match="needs the flash-attn package"):
            attention(*h, mask, "flash")
        return
    ref = naive_attention(q, k, v, mask)
    keep = mask[:, None, :, None].expand_as(ref)
    torch.testing.assert_close(attention(*h, mask, "flash").float()[keep], ref[keep], rtol=0.01, atol=0.01)


def test_auto_switches_kernel_with_length_under_bf16():
    """auto takes the composed matmuls below COMPOSED_BELOW tokens, the math kernel below
    MATH_BELOW and flash from there on; all agree with naive attention, and the choice shows in
    which kernel runs (the composed path calls no SDPA kernel)."""
    from torch.profiler import profile

    from vlaforge.models.transformer import COMPOSED_BELOW, MATH_BELOW

    assert COMPOSED_BELOW < MATH_BELOW
    cases = ((16, None), (COMPOSED_BELOW + 8, "_scaled_dot_product_attention_math"),
             (MATH_BELOW + 8, "_scaled_dot_product_flash_attention"))
    for t, kernel in cases:
        q, k, v, mask = qkv_mask(3, b=2, t=t)
        with profile() as prof, torch.autocast("cpu", dtype=torch.bfloat16):
            out = attention(q, k, v, mask, "auto")
        names = {e.key for e in prof.key_averages()}
        sdpa = sorted(n for n in names if "scaled_dot_product" in n)
        assert (not sdpa) if kernel is None else any(kernel in n for n in sdpa), (t, sdpa)
        torch.testing.assert_close(out.float(), naive_attention(q, k, v, mask), rtol=0.05, atol=0.05)


def test_composed_zeroes_fully_masked_sequences_with_finite_gradients():
    q, k, v, mask = (x.requires_grad_() if x.is_floating_point() else x for x in qkv_mask(4))
    mask[1] = False
    out = attention(q, k, v, mask, "composed")
    out.square().sum().backward()
    assert bool((out[1] == 0).all())
    assert all(bool(torch.isfinite(x.grad).all()) for x in (q, k, v))
    torch.testing.assert_close(out[0], naive_attention(q, k, v, mask)[0], rtol=1e-5, atol=1e-5)
