import pytest
import torch

from agents.networks import PolicyNet


def test_forward_when_batch_given_then_probabilities_sum_to_one_and_action_is_argmax() -> None:
    torch.manual_seed(0)
    net = PolicyNet(15, 5, hidden=8)
    probs, action = net(torch.randn(7, 15))
    assert probs.shape == (7, 5) and probs.dtype == torch.float32
    assert action.shape == (7,) and action.dtype == torch.int64
    assert torch.allclose(probs.sum(dim=1), torch.ones(7))
    assert torch.equal(action, probs.argmax(dim=1))


def test_forward_when_scripted_and_observation_width_wrong_then_error_names_expected_shape() -> None:
    scripted = torch.jit.script(PolicyNet(15, 5, hidden=8))
    with pytest.raises(torch.jit.Error, match=r"expects observations of shape \[batch, 15\], got \[2, 14\]"):
        scripted(torch.zeros(2, 14))


def test_construct_when_fewer_than_two_actions_then_value_error() -> None:
    with pytest.raises(ValueError, match="n_actions >= 2"):
        PolicyNet(15, 1)
