"""Modules import cleanly whichever is imported first (no import cycle through DRF's settings)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["orders.api.serializers", "catalog.api.serializers", "config.api", "config.urls"])
def test_a_module_imports_first_thing_after_setup(module):
    code = f"import django; django.setup(); import {module}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
