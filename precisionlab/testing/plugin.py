"""The precisionlab pytest plugin (entry point ``pytest11``: ``precisionlab``).

Loaded automatically wherever precisionlab is installed. It adds:

* ``--precisionlab-backend NAME``: ``auto`` (default: what ``backend="auto"`` picks),
  a backend name (``numpy``, ``numba``, ...) or ``all`` (every backend available here).
  An unknown name is a usage error listing the choices, a known one that does not load
  here (its package missing) is a usage error saying why;
* the fixture ``precisionlab_backend``: the selected backend name, to pass as
  ``backend=`` to ``pl.round`` & co. and to ``check_kernel``; with ``all`` every test
  that uses it runs once per available backend (ids ``[numpy]``, ``[numba]``);
* ``--precisionlab-preset NAMES``: ``all`` (default: every matmul preset of
  ``pl.presets``) or comma-separated preset names; an unknown name is a usage error
  listing the presets;
* the fixture ``precisionlab_preset``: the selected presets as
  :class:`~precisionlab.matmul.MatmulSpec` instances, one run per preset (ids
  ``[h100_fp16]``, ...); the marker ``@pytest.mark.precisionlab_presets("a", "b")`` narrows
  one test to those presets (the option narrows every test; a test whose marker and the
  option have no preset in common is skipped);
* :func:`parametrize_backends`: a marker that runs one test over every available
  backend whatever the option says (for tests that compare backends);
* a report-header line with the precisionlab version and the options.

Both fixtures together run a test over every (backend, preset) pair.
"""

from __future__ import annotations

from typing import Any

import pytest

from .. import __version__
from ..backends import BACKENDS, available_backends, get_backend

__all__ = ["parametrize_backends", "selected_backends", "selected_presets"]

OPTION = "--precisionlab-backend"
CHOICES = ("auto", "all", *BACKENDS)
PRESET_OPTION = "--precisionlab-preset"
PRESET_MARKER = "precisionlab_presets"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("precisionlab", "precisionlab emulator")
    group.addoption(OPTION, action="store", default="auto", choices=CHOICES, metavar="NAME",
                    help="backend for the precisionlab_backend fixture: auto (default), all (every available "
                         f"backend), or one of {', '.join(BACKENDS)}")
    group.addoption(PRESET_OPTION, action="store", default="all", metavar="NAMES",
                    help="matmul presets for the precisionlab_preset fixture: all (default, every preset of "
                         "pl.presets) or comma-separated names, e.g. h100_fp16,a100_fp16")


def _preset_names(names: Any, where: str) -> list[str]:
    """Preset names checked against the catalogue (case-insensitive), in the catalogue's spelling."""
    from ..presets import presets

    out = []
    for name in names:
        key = str(name).strip().lower()
        if key not in presets:
            raise pytest.UsageError(f"{where}: {name!r} is not a preset; allowed: all, {', '.join(presets)}")
        out.append(key)
    return out


def selected_presets(config: pytest.Config, marker_names: Any = None) -> list[str]:
    """The preset names the option selects, narrowed to ``marker_names`` when given."""
    from ..presets import presets

    choice = config.getoption(PRESET_OPTION)
    names = list(presets) if choice.strip().lower() == "all" else _preset_names(
        [t for t in choice.split(",") if t.strip()], PRESET_OPTION)
    if not names:
        raise pytest.UsageError(f"{PRESET_OPTION}={choice!r}: give preset names or all")
    if marker_names is not None:
        wanted = set(_preset_names(marker_names, f"@pytest.mark.{PRESET_MARKER}"))
        names = [n for n in names if n in wanted]
    return names


def selected_backends(config: pytest.Config) -> list[str]:
    """The backend names the option selects (checked to load here)."""
    choice = config.getoption(OPTION)
    if choice == "auto":
        return ["auto"]
    if choice == "all":
        return available_backends()
    try:
        get_backend(choice)
    except RuntimeError as exc:
        raise pytest.UsageError(f"{OPTION}={choice}: {exc}") from None
    return [choice]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{PRESET_MARKER}(*names): run the test's precisionlab_preset fixture only "
                                       "for these matmul presets")
    if config.getoption(OPTION) != "auto":
        selected_backends(config)                # fail early on a backend that does not load
    if config.getoption(PRESET_OPTION) != "all":
        selected_presets(config)                 # and on an unknown preset


def pytest_report_header(config: pytest.Config) -> str:
    """One line; loads no backend (importing numba takes a while) unless one was asked for."""
    return (f"precisionlab {__version__}: {OPTION}={config.getoption(OPTION)} (backends: {', '.join(BACKENDS)}), "
            f"{PRESET_OPTION}={config.getoption(PRESET_OPTION)}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "precisionlab_backend" in metafunc.fixturenames:
        names = selected_backends(metafunc.config)
        metafunc.parametrize("precisionlab_backend", names, ids=names, scope="session")
    if "precisionlab_preset" in metafunc.fixturenames:
        from ..presets import get_preset

        marker = metafunc.definition.get_closest_marker(PRESET_MARKER)
        names = selected_presets(metafunc.config, None if marker is None else marker.args)
        metafunc.parametrize("precisionlab_preset", [get_preset(n) for n in names], ids=names, scope="session")


def parametrize_backends(argname: str = "backend") -> Any:
    """``@parametrize_backends()``: run the test once per available backend, passing its
    name as ``argname`` (independent of ``--precisionlab-backend``)."""
    return pytest.mark.parametrize(argname, available_backends())
