"""precisionlab.testing: conformance tests of users' kernels against the emulator (DESIGN §1, §3).

* :func:`assert_bitwise_equal`, :func:`assert_ulp_close` -- assertions with a mismatch
  report (indices, values, codes, ULP distances, histogram);
* :func:`check_kernel` -- run a cast (or, with ``pl.matmul``, a matmul) kernel on inputs
  built to separate behaviours and get a :class:`ConformanceReport`;
* :mod:`precisionlab.testing.strategies` -- hypothesis strategies (needs hypothesis);
* :mod:`precisionlab.testing.plugin` -- the pytest plugin (``--precisionlab-backend`` and
  the ``precisionlab_backend`` fixture, ``--precisionlab-preset`` and the
  ``precisionlab_preset`` fixture, :func:`~precisionlab.testing.plugin.parametrize_backends`),
  registered through the ``pytest11`` entry point.
"""

from .assertions import Comparison, Mismatch, assert_bitwise_equal, assert_ulp_close, compare
from .conformance import CaseResult, ConformanceReport, check_kernel

__all__ = ["assert_bitwise_equal", "assert_ulp_close", "compare", "Comparison", "Mismatch", "check_kernel",
           "ConformanceReport", "CaseResult"]
