"""Two one-way GRUs run side by side for training on a CPU: the recurrence of the GRU frame head.

On a CPU, autograd through ``nn.GRU`` records some ten small operations per frame and direction and replays
them one by one backwards, so the recurrence took about two fifths of a stage (a) training step of the GRU frame
head. :func:`gru_pair` computes what the two modules give called one after the other, with both directions in one
batched matrix product per frame, and a backward pass written out (:class:`_PairRecurrence`) that keeps only the
recurrence in its loop over the frames and takes every other product in bulk. ``benchmarks/finetune_speed.py
--head-clips`` times a training step both ways.

The weights stay those of the two ``nn.GRU`` modules, so a model saves and loads as before. The outputs and
gradients agree with ``nn.GRU``'s to float rounding (``tests/test_gru.py``), not bit for bit: a training run
follows a slightly different path than it did through ``nn.GRU``.
"""

from __future__ import annotations

import torch
from torch import nn


class _PairRecurrence(torch.autograd.Function):
    """The GRU recurrence of ``D`` directions at once, given their input projections.

    ``gi [frames, D, batch, 3H]`` (``x @ W_ih.T + b_ih``), ``w_hh [D, 3H, H]``, ``b_hh [D, 3H]`` ->
    hidden states ``[frames, D, batch, H]``, from zeros, in ``nn.GRU``'s gate order (reset, update, new):
    ``r = σ(gi_r + gh_r)``, ``z = σ(gi_z + gh_z)``, ``n = tanh(gi_n + r ⊙ gh_n)``, ``h' = n + z ⊙ (h - n)``
    with ``gh = h @ W_hh.T + b_hh``.
    """

    @staticmethod
    def forward(ctx, gi: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
        frames, directions, batch, gates = gi.shape
        size = gates // 3
        out = gi.new_empty(frames, directions, batch, size)
        rz = gi.new_empty(frames, directions, batch, 2 * size)
        new = gi.new_empty(frames, directions, batch, size)
        gh = gi.new_empty(frames, directions, batch, gates)
        w_t = w_hh.transpose(1, 2)
        bias = b_hh.unsqueeze(1)
        h = gi.new_zeros(directions, batch, size)
        # Views of each frame made once: indexing in the loop costs as much as the small products themselves.
        steps = zip(gi[..., : 2 * size].unbind(0), gi[..., 2 * size :].unbind(0), gh.unbind(0),
                    gh[..., : 2 * size].unbind(0), gh[..., 2 * size :].unbind(0), rz.unbind(0),
                    rz[..., :size].unbind(0), rz[..., size:].unbind(0), new.unbind(0), out.unbind(0))
        for gi_rz, gi_new, gh_t, gh_rz, gh_new, rz_t, reset, update, new_t, out_t in steps:
            torch.baddbmm(bias, h, w_t, out=gh_t)
            torch.add(gi_rz, gh_rz, out=rz_t).sigmoid_()
            torch.addcmul(gi_new, reset, gh_new, out=new_t).tanh_()
            h = torch.addcmul(new_t, update, h - new_t, out=out_t)
        ctx.save_for_backward(w_hh, out, rz, new, gh[..., 2 * size :])
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w_hh, out, rz, new, gh_new = ctx.saved_tensors
        frames, directions, batch, size = out.shape
        before = torch.cat([out.new_zeros(1, directions, batch, size), out[:-1]])  # each frame's incoming state
        reset, update = rz[..., :size], rz[..., size:]
        # Everything but the recurrence, in bulk: d(gate input) = dh times these.
        to_update = (before - new) * update * (1 - update)
        to_new = (1 - update) * (1 - new * new)
        to_reset = gh_new * reset * (1 - reset)  # times d(new's input)
        grad_gh = out.new_empty(frames, directions, batch, 3 * size)  # d(h @ W_hh.T + b_hh), gate by gate
        grad_new = out.new_empty(frames, directions, batch, size)  # d(new's input) = d(gi_n)
        carry = out.new_zeros(directions, batch, size)
        steps = zip(grad_out.unbind(0), to_new.unbind(0), to_update.unbind(0), to_reset.unbind(0), reset.unbind(0),
                    update.unbind(0), grad_new.unbind(0), grad_gh.unbind(0), grad_gh[..., :size].unbind(0),
                    grad_gh[..., size : 2 * size].unbind(0), grad_gh[..., 2 * size :].unbind(0))
        for g, to_n, to_u, to_r, r, u, d_new, d_gh, d_reset, d_update, d_gh_new in reversed(list(steps)):
            dh = g + carry
            torch.mul(dh, to_n, out=d_new)
            torch.mul(dh, to_u, out=d_update)
            torch.mul(d_new, to_r, out=d_reset)
            torch.mul(d_new, r, out=d_gh_new)
            carry = torch.baddbmm(dh * u, d_gh, w_hh)
        grad_gi = torch.cat([grad_gh[..., : 2 * size], grad_new], dim=-1)
        grad_w = torch.einsum("tdbg,tdbh->dgh", grad_gh, before)
        return grad_gi, grad_w, grad_gh.sum(dim=(0, 2))


def gru_pair(first: nn.GRU, second: nn.GRU, x_first: torch.Tensor, x_second: torch.Tensor) -> tuple[torch.Tensor,
                                                                                                     torch.Tensor]:
    """``first(x_first)[0], second(x_second)[0]`` for two one-layer, batch-first, one-way GRUs of one size, from
    zero states: outputs ``[batch, frames, hidden]`` each, differentiable in the inputs and both modules' weights."""
    for gru in (first, second):
        if gru.num_layers != 1 or gru.bidirectional or not gru.batch_first or not gru.bias or gru.proj_size:
            raise ValueError(f"gru_pair takes one-layer, one-way, batch-first GRUs with biases; got {gru!r}")
    x = torch.stack([x_first, x_second])  # [D, batch, frames, in]
    directions, batch, frames, width = x.shape
    w_ih = torch.stack([first.weight_ih_l0, second.weight_ih_l0])
    b_ih = torch.stack([first.bias_ih_l0, second.bias_ih_l0])
    gi = torch.baddbmm(b_ih.unsqueeze(1), x.reshape(directions, batch * frames, width), w_ih.transpose(1, 2))
    gi = gi.view(directions, batch, frames, -1).permute(2, 0, 1, 3).contiguous()  # [frames, D, batch, 3H]
    w_hh = torch.stack([first.weight_hh_l0, second.weight_hh_l0])
    b_hh = torch.stack([first.bias_hh_l0, second.bias_hh_l0])
    out = _PairRecurrence.apply(gi, w_hh, b_hh).permute(1, 2, 0, 3)  # [D, batch, frames, H]
    return out[0], out[1]
