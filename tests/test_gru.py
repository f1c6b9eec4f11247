"""The GRU frame head's training recurrence (``gru_pair``) against ``nn.GRU``."""

import pytest
import torch

from heardet.approaches.finetune.gru import gru_pair
from heardet.approaches.finetune.model import GRUFrameHead


def outputs_and_gradients(run, modules, inputs, weights):
    """The outputs of ``run()`` and the gradients of their ``weights``-weighted sum in ``inputs`` and ``modules``."""
    for tensor in [*inputs, *(p for m in modules for p in m.parameters())]:
        tensor.grad = None
    outputs = run()
    sum((o * w).sum() for o, w in zip(outputs, weights)).backward()
    return [o.detach() for o in outputs] + [t.grad for t in inputs] + [p.grad for m in modules for p in m.parameters()]


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_two_grus_run_together_give_the_outputs_and_gradients_of_each_run_alone(dtype, tolerance):
    torch.manual_seed(0)
    first, second = (torch.nn.GRU(6, 5, batch_first=True).to(dtype) for _ in range(2))
    inputs = [torch.randn(3, 11, 6, dtype=dtype, requires_grad=True) for _ in range(2)]
    weights = [torch.randn(3, 11, 5, dtype=dtype) for _ in range(2)]
    expected = outputs_and_gradients(lambda: (first(inputs[0])[0], second(inputs[1])[0]), (first, second), inputs,
                                     weights)
    got = outputs_and_gradients(lambda: gru_pair(first, second, *inputs), (first, second), inputs, weights)
    for want, have in zip(expected, got, strict=True):
        torch.testing.assert_close(have, want, atol=tolerance, rtol=tolerance)


def test_the_gru_head_trains_through_the_pair_as_through_its_two_modules():
    torch.manual_seed(0)
    head = GRUFrameHead(16, dropout=0.0).train()
    hidden = torch.randn(3, 9, 16)
    valid = torch.arange(9).unsqueeze(0) < torch.tensor([[9], [4], [1]])
    target = torch.randn(3, 9)

    def gradients():
        head.zero_grad()
        logits = head(hidden, valid)
        (logits * target).sum().backward()
        return logits.detach(), [p.grad.clone() for p in head.parameters()]

    paired = gradients()  # gradients enabled on a CPU: gru_pair
    with torch.no_grad():
        separate = head(hidden, valid)  # nn.GRU's own kernels
    torch.testing.assert_close(paired[0], separate, atol=1e-6, rtol=1e-5)
    assert all(g.abs().sum() > 0 for g in paired[1]), "every weight of the head should get a gradient"


def test_the_pair_refuses_a_gru_it_does_not_implement():
    one_way = torch.nn.GRU(4, 3, batch_first=True)
    both_ways = torch.nn.GRU(4, 3, batch_first=True, bidirectional=True)
    x = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match="one-layer, one-way, batch-first"):
        gru_pair(one_way, both_ways, x, x)
