"""The dependency direction of shared/DESIGN.md, enforced by an AST scan."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROJECT = {"contracts", "market_data", "features", "agents", "registry", "serving", "gateway", "paper_exchange",
           "data_checks", "monitoring", "orchestration", "marlops"}
ALLOWED: dict[str, set[str]] = {
    "contracts": set(),
    "market_data": {"contracts"},
    "features": {"contracts", "market_data", "data_checks"},
    "agents": {"contracts", "features", "gateway.domain"},
    "registry": {"contracts"},
    "serving": {"contracts", "registry"},
    "gateway": {"contracts"},
    # The simulated venue: of the gateway only the broker interface, the rate limiter and the errors a broker
    # raises; and nothing in gateway/ imports paper_exchange (the row above).
    "paper_exchange": {"contracts", "gateway.brokers.base", "gateway.brokers.rate_limit", "gateway.errors"},
    "data_checks": {"contracts"},
    "monitoring": {"contracts"},
    "marlops": PROJECT - {"orchestration"},
    "orchestration": PROJECT,
}
FORBIDDEN_THIRD_PARTY = {"gateway/domain": {"fastapi", "alpaca", "sqlalchemy", "httpx", "starlette", "dagster"},
                         "contracts": {"fastapi", "dagster", "torch", "mlflow"}}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _allowed(package: str, module: str) -> bool:
    top = module.split(".")[0]
    if top not in PROJECT or top == package:
        return True
    return any(module == a or module.startswith(a + ".") or top == a for a in ALLOWED[package] if "." not in a) or \
        any(module == a or module.startswith(a + ".") for a in ALLOWED[package] if "." in a)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_when_scanning_package_then_only_allowed_directions(package: str) -> None:
    root = REPO / package
    if not root.exists():
        pytest.skip(f"{package}/ not present")
    bad = [f"{p.relative_to(REPO)} imports {m}" for p in root.rglob("*.py") for m in sorted(_imports(p))
           if not _allowed(package, m)]
    assert bad == []


@pytest.mark.parametrize("folder", sorted(FORBIDDEN_THIRD_PARTY))
def test_imports_when_pure_package_then_no_framework_imports(folder: str) -> None:
    banned = FORBIDDEN_THIRD_PARTY[folder]
    bad = [f"{p.relative_to(REPO)} imports {m}" for p in (REPO / folder).rglob("*.py") for m in sorted(_imports(p))
           if m.split(".")[0] in banned]
    assert bad == []
