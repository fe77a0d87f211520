"""The pinned requirement files: production gets the runtime set only, tests the same pins plus tools."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_TOOLS = {"pytest", "pytest-django", "pytest-timeout", "factory-boy", "faker", "hypothesis", "schemathesis"}
TEST_TOOLS |= {"playwright", "ruff", "mypy", "django-stubs", "djangorestframework-stubs", "pre-commit", "time-machine"}


def pins(name):
    """{package: version} of a compiled file; every requirement must be pinned and hashed."""
    text = (ROOT / name).read_text()
    found = {}
    for block in re.split(r"\n(?=\S)", text):
        line = block.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s\\]+)", line)
        assert match, f"{name}: not pinned: {line.splitlines()[0]}"
        assert "--hash=sha256:" in block, f"{name}: no hash for {match.group(1)}"
        found[match.group(1).lower().replace("_", "-")] = match.group(3)
    return found


def test_the_production_requirements_hold_no_test_or_lint_tool():
    runtime = pins("requirements.txt")

    assert {"django", "celery", "gunicorn", "whitenoise", "sentry-sdk", "django-axes"} <= set(runtime)
    assert not TEST_TOOLS & set(runtime)


def test_the_development_requirements_pin_every_runtime_package_at_the_same_version():
    runtime, dev = pins("requirements.txt"), pins("requirements-dev.txt")

    assert {name: dev.get(name) for name in runtime} == runtime
    assert set(dev) >= TEST_TOOLS
