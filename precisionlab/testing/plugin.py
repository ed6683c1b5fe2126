"""The precisionlab pytest plugin (entry point ``pytest11``: ``precisionlab``).

Loaded automatically wherever precisionlab is installed. It adds:

* ``--precisionlab-backend NAME``: ``auto`` (default: what ``backend="auto"`` picks),
  a backend name (``numpy``, ``numba``, ...) or ``all`` (every backend available here).
  An unknown name is a usage error listing the choices, a known one that does not load
  here (its package missing) is a usage error saying why;
* the fixture ``precisionlab_backend``: the selected backend name, to pass as
  ``backend=`` to ``pl.round`` & co. and to ``check_kernel``; with ``all`` every test
  that uses it runs once per available backend (ids ``[numpy]``, ``[numba]``);
* :func:`parametrize_backends`: a marker that runs one test over every available
  backend whatever the option says (for tests that compare backends);
* a report-header line with the precisionlab version and the option.

(A preset fixture joins these when ``pl.matmul`` lands: ``precisionlab_preset``,
parametrised by ``--precisionlab-preset``.)
"""

from __future__ import annotations

from typing import Any

import pytest

from .. import __version__
from ..backends import BACKENDS, available_backends, get_backend

__all__ = ["parametrize_backends", "selected_backends"]

OPTION = "--precisionlab-backend"
CHOICES = ("auto", "all", *BACKENDS)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("precisionlab", "precisionlab emulator")
    group.addoption(OPTION, action="store", default="auto", choices=CHOICES, metavar="NAME",
                    help="backend for the precisionlab_backend fixture: auto (default), all (every available "
                         f"backend), or one of {', '.join(BACKENDS)}")


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
    if config.getoption(OPTION) != "auto":
        selected_backends(config)                # fail early on a backend that does not load


def pytest_report_header(config: pytest.Config) -> str:
    """One line; loads no backend (importing numba takes a while) unless one was asked for."""
    return f"precisionlab {__version__}: {OPTION}={config.getoption(OPTION)} (backends: {', '.join(BACKENDS)})"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "precisionlab_backend" in metafunc.fixturenames:
        names = selected_backends(metafunc.config)
        metafunc.parametrize("precisionlab_backend", names, ids=names, scope="session")


def parametrize_backends(argname: str = "backend") -> Any:
    """``@parametrize_backends()``: run the test once per available backend, passing its
    name as ``argname`` (independent of ``--precisionlab-backend``)."""
    return pytest.mark.parametrize(argname, available_backends())
