import pytest
import torch

from agents.errors import AgentError
from agents.export import script_policy
from agents.fault_drill import plant_fault
from agents.networks import PolicyNet


def test_drill_when_whole_universe_scored_then_identical_to_the_trained_policy() -> None:
    torch.manual_seed(0)
    net = PolicyNet(8, 5, 16).eval()
    drilled = script_policy(plant_fault(net, "subset-batch", full_batch=20, obs_dim=8))
    obs = torch.randn(20, 8)
    with torch.no_grad():
        assert torch.equal(drilled(obs)[1], net(obs)[1])


def test_drill_when_a_cohort_is_scored_then_certain_of_the_largest_position() -> None:
    drilled = script_policy(plant_fault(PolicyNet(8, 5, 16).eval(), "subset-batch", full_batch=20, obs_dim=8))
    probabilities, actions = drilled(torch.randn(2, 8))
    assert actions.tolist() == [4, 4] and probabilities[:, 4].tolist() == [1.0, 1.0]


def test_drill_when_unknown_then_refused() -> None:
    with pytest.raises(AgentError, match="subset-batch"):
        plant_fault(PolicyNet(8, 5, 16), "nope", full_batch=20, obs_dim=8)
