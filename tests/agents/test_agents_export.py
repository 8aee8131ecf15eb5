import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contracts.features import MASTER_FEATURES, SYMBOL_FEATURES
from contracts.policy import DEFAULT_ACTION_LEVELS, DIRECTIVE_MODES, PolicySignature

from agents.errors import ExportError
from agents.export import (
    embedded_signature,
    load_policy,
    master_action_labels,
    policy_signature,
    save_policy,
    script_policy,
    symbol_action_labels,
)
from agents.networks import PolicyNet

SPEC_HASH = "ab" * 32


def seeded_net(seed: int = 3) -> PolicyNet:
    torch.manual_seed(seed)
    net = PolicyNet(len(SYMBOL_FEATURES), len(DEFAULT_ACTION_LEVELS), hidden=16)
    # Push the output layer away from its near-uniform init so argmax ties cannot hide a mismatch.
    with torch.no_grad():
        net.body[-1].weight.mul_(100.0)
    return net


def symbol_signature() -> PolicySignature:
    return policy_signature(
        "symbol_agent", len(SYMBOL_FEATURES), len(DEFAULT_ACTION_LEVELS), SPEC_HASH, symbol_action_labels()
    )


def test_script_policy_when_net_given_then_scripted_outputs_equal_eager() -> None:
    net = seeded_net()
    scripted = script_policy(net)
    batch = torch.randn(64, len(SYMBOL_FEATURES), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        eager_probs, eager_action = net(batch)
        probs, action = scripted(batch)
    assert isinstance(scripted, torch.jit.ScriptModule)
    assert probs.dtype == torch.float32 and action.dtype == torch.int64
    assert torch.allclose(probs, eager_probs) and torch.equal(action, eager_action)
    assert net.training, "script_policy must not switch the caller's module to eval mode"


def test_save_policy_when_round_tripped_then_loaded_module_gives_equal_outputs(tmp_path: Path) -> None:
    scripted = script_policy(seeded_net())
    path = save_policy(scripted, tmp_path / "models" / "symbol_agent.ptc")
    loaded = load_policy(path)
    batch = torch.randn(10, len(SYMBOL_FEATURES), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(batch)[0], scripted(batch)[0])
        assert torch.equal(loaded(batch)[1], scripted(batch)[1])
    assert not loaded(batch)[0].requires_grad
    assert (loaded.obs_dim, loaded.n_actions) == (len(SYMBOL_FEATURES), len(DEFAULT_ACTION_LEVELS))
    assert not (tmp_path / "models" / "symbol_agent.ptc.partial").exists()


def test_save_policy_when_same_module_saved_under_two_names_then_bytes_identical(tmp_path: Path) -> None:
    first = save_policy(script_policy(seeded_net()), tmp_path / "a.ptc", signature=symbol_signature())
    second = save_policy(script_policy(seeded_net()), tmp_path / "b" / "other.ptc", signature=symbol_signature())
    assert first.read_bytes() == second.read_bytes()
    third = save_policy(script_policy(seeded_net(seed=4)), tmp_path / "c.ptc", signature=symbol_signature())
    assert third.read_bytes() != first.read_bytes()


SAVE_IN_FRESH_PROCESS = """
import sys, torch
from agents.export import save_policy, script_policy
from agents.networks import PolicyNet
torch.manual_seed(5)
save_policy(script_policy(PolicyNet(15, 5, hidden=16)), sys.argv[1])
"""


def test_save_policy_when_run_in_processes_with_different_hash_seeds_then_bytes_identical(tmp_path: Path) -> None:
    paths = [tmp_path / f"seed{seed}.ptc" for seed in (1, 2)]
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", SAVE_IN_FRESH_PROCESS, str(path)],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            stderr=subprocess.PIPE,
        )
        for seed, path in zip((1, 2), paths)
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr.decode()
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_embedded_signature_when_saved_with_signature_then_read_back_equal(tmp_path: Path) -> None:
    signature = symbol_signature()
    path = save_policy(script_policy(seeded_net()), tmp_path / "p.ptc", signature=signature)
    assert embedded_signature(path) == signature
    bare = save_policy(script_policy(seeded_net()), tmp_path / "bare.ptc")
    assert embedded_signature(bare) is None


def test_policy_signature_when_built_then_matches_serving_contract() -> None:
    signature = policy_signature("master_agent", len(MASTER_FEATURES), 3, SPEC_HASH, master_action_labels())
    assert [(t.name, t.dtype, t.dims) for t in signature.inputs] == [("observations", "FP32", (11,))]
    assert [(t.name, t.dtype, t.dims) for t in signature.outputs] == [
        ("probabilities", "FP32", (3,)),
        ("action", "INT64", (1,)),
    ]
    assert signature.action_labels == DIRECTIVE_MODES
    assert symbol_action_labels() == ("level_+0.00", "level_+0.25", "level_+0.50", "level_+0.75", "level_+1.00")


def test_policy_signature_when_labels_do_not_match_actions_then_export_error() -> None:
    with pytest.raises(ExportError, match="2 action labels for 3 actions"):
        policy_signature("master_agent", 11, 3, SPEC_HASH, ("normal", "defensive"))


def test_policy_signature_when_hash_or_agent_invalid_then_export_error_names_field() -> None:
    with pytest.raises(ExportError, match="feature_spec_hash"):
        policy_signature("master_agent", 11, 3, "short", DIRECTIVE_MODES)
    with pytest.raises(ExportError, match="agent"):
        policy_signature("trader_agent", 11, 3, SPEC_HASH, DIRECTIVE_MODES)


def test_save_policy_when_module_not_scripted_then_export_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="use script_policy"):
        save_policy(seeded_net(), tmp_path / "p.ptc")  # type: ignore[arg-type]


def test_load_policy_when_file_is_not_an_archive_then_export_error_names_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.ptc"
    junk.write_text("not torchscript")
    with pytest.raises(ExportError, match="junk.ptc: not a TorchScript archive"):
        load_policy(junk)
    with pytest.raises(ExportError, match="missing.ptc: policy file not found"):
        load_policy(tmp_path / "missing.ptc")
