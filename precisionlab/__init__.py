"""precisionlab: bit-exact emulation of low-precision floating-point arithmetic.

    import precisionlab as pl
    pl.round(x, "bf16")            # round to any format, any mode
    pl.encode(x, "e4m3")           # ... and get the codes
    pl.decode(codes, "e4m3")
    pl.matmul(a, b, "h100_fp16")   # a matmul as a given tensor core computes it
"""

from .formats import Format, formats, get_format, p3109
from .matmul import MatmulSpec, Order, matmul
from .presets import get_preset, presets
from .rounding import Overflow, Rounding, decode, encode, round

__all__ = ["Format", "formats", "get_format", "p3109", "Rounding", "Overflow", "round", "encode", "decode",
           "MatmulSpec", "Order", "matmul", "presets", "get_preset"]
__version__ = "0.1.0"
