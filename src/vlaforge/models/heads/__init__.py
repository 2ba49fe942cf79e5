"""Action heads: what turns the policy's query tokens into an action chunk (``--policy.head``).

| name       | predicts                          | loss                    | inference                  |
|------------|-----------------------------------|-------------------------|----------------------------|
| regression | the chunk directly (ACT-style)    | L1                      | one linear map             |
| tokenized  | 256 bins per dimension (RT-2/OpenVLA) | cross-entropy       | arg-max bin centre         |
| dit        | noise, with a Diffusion Transformer (DDPM) | MSE on the noise | DDIM, ``sample_steps`` |
| flow       | velocity noise -> actions (pi0 flow matching) | MSE on the velocity | Euler, ``sample_steps`` |

Every head takes ``cond`` (B, K, d), the K query tokens after the backbone, and works on
normalised actions (B, K, A). ``loss`` weighs each chunk slot by ``valid`` (steps past the
episode end count zero) and averages over a fixed number of slots, so equal micro-batches
average to the whole batch's loss. ``predict`` draws any noise from ``generator``, so a
sampled chunk is reproducible. The regression head averages the modes of a multimodal
action distribution; the diffusion and flow heads sample them (tests/test_heads.py). The
contract (``ActionHead``, with the flags the toolkit reads) is in base.py; tests run every
registered head.
"""

from vlaforge.models.heads import diffusion, flow, regression, tokenized  # noqa: F401  (registration)
