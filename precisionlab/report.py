"""``precisionlab report``: the Quick start's main job (DESIGN §1, §10).

One command that shows, on any machine, what low precision does:

1. the format catalogue (as ``precisionlab formats``);
2. the cast error of formats x rounding modes (as ``precisionlab error cast``): max/mean
   relative error, ULPs, bits lost, the overflow and underflow thresholds;
3. the accumulation error of matmul presets x K (as ``precisionlab error matmul``) against
   the exact product;
4. the training recipes of ``precisionlab.reference``: how each one rounds, accumulates and
   scales;
5. a few of them trained side by side (as ``precisionlab error train``, without its timings).

The report is printed (aligned tables, Markdown or JSON) and, with ``--out DIR``, written
as ``DIR/report.md``, with the plots ``DIR/cast-error.png`` and ``DIR/matmul-error.png``
when matplotlib is installed.  The rows come from the same functions as the ``error``
commands (``cast_error_record``, ``matmul_error_record`` in :mod:`precisionlab.cli`, which
build on :mod:`precisionlab.analysis`), so the numbers agree with them.

Decisions:

* **Deterministic**: the same command gives the same bytes.  Inputs are seeded; no
  timings, dates, paths or facts of the machine enter the output (the precisionlab
  version does); the Markdown does not depend on whether matplotlib is installed (the
  plots are files of their own, not linked from it).
* **The matmuls run on the NumPy reference backend** by default (``--backend``): it needs
  no JIT compilation, which on a fresh machine costs more than the whole report (a minute
  or more for the Numba matmul kernels on 2 cores).  Every backend gives the same bits
  (the backend tests prove it), so the choice changes only the time.  Casts run on the
  default backend: the Numba rounding kernels compile in seconds.
* **Sizes** keep the report well under a minute on 2 cores: 100000 inputs per cast cell;
  4 x 4 outputs per matmul cell with K = 32, 256, 2048.  Measured after ``pip install .``
  with an empty Numba cache on the shared 2-core development machine: 16 s of CPU time
  the first time (28 to 43 s wall, depending on the other users), 10 to 11 s after.
* **The training table** runs its GEMMs on the Numba backend (the exact reference would take
  minutes); its cold JIT compilation is most of its cost (about 20 s of the report's 45 s wall
  time measured cold on the loaded 2-core machine).  ``--train none`` leaves it out.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .cli import (
    _CAST_ERROR_COLUMNS,
    _FORMAT_COLUMNS,
    _MATMUL_ERROR_COLUMNS,
    _TRAIN_COLUMNS,
    DASH,
    PROG,
    Column,
    _aliases_of,
    _emit,
    _k_value,
    _list_arg,
    _matmul_distribution,
    _nan_text,
    _notes,
    _plot_cast_error,
    _plot_matmul_error,
    _positive_int,
    _sweep,
    cast_error_record,
    fmt_number,
    format_record,
    matmul_error_record,
    parse_matmul_spec,
    train_record,
)
from .formats import Format, formats, get_format
from .rounding import Rounding

__all__ = ["Report", "Section", "build_report", "write_report", "recipe_record", "command_line", "add_parser",
           "DEFAULTS", "REPORT_FILE"]

REPORT_FILE = "report.md"
CAST_PLOT = "cast-error.png"
MATMUL_PLOT = "matmul-error.png"
OUTPUT_FORMATS = ("table", "markdown", "json")
BACKEND_CHOICES = ("numpy", "numba", "auto")

#: The default settings (option name -> value as the command line writes it).
DEFAULTS: dict[str, str] = {
    "formats": "tf32,bf16,fp16,e5m2,e4m3,fp6_e3m2,fp6_e2m3,fp4_e2m1",
    "rounding": "rne,rna,rtz,rto,sr",
    "n": "100000",
    "presets": "exact,fp32_sequential,torch_cpu_tn,bf16_accumulate,fp16_accumulate,v100_fp16,a100_fp16,h100_fp16,"
               "mi300_fp16,h100_e4m3,h100_e4m3+promote128,b200_e4m3",
    "k": "32,256,2048",
    "dist": "uniform,cancelling",
    "m": "4",
    "seed": "0",
    "backend": "numpy",
    "train": "fp32,pure_fp16,torch_amp_fp16,torch_amp_bf16",
    "steps": "30",
}

#: The options that change the report's content, in the order the command line shows them.
_CONTENT_OPTIONS = ("formats", "rounding", "n", "presets", "k", "dist", "m", "seed", "backend", "train", "steps")


@dataclass(frozen=True)
class Section:
    """One table of the report: its records (``_`` keys are for people only), how its columns
    read, a one-line summary for the terminal and the paragraph that explains it in Markdown."""

    key: str
    title: str
    summary: str
    text: str
    columns: Sequence[Column]
    records: list[dict[str, Any]]

    def table(self, output: str) -> str:
        buf = io.StringIO()
        _emit(self.records, self.columns, output, buf)
        return buf.getvalue()

    def machine_records(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if not k.startswith("_")} for r in self.records]


@dataclass(frozen=True)
class Report:
    """The sections, the settings that made them and the command that reproduces them."""

    command: str
    settings: dict[str, Any]
    sections: list[Section] = field(default_factory=list)

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)

    def to_markdown(self) -> str:
        parts = [
            "# precisionlab report\n",
            f"Generated by `{self.command}` (precisionlab {__version__}); the same command gives the same bytes. "
            f"`precisionlab report --out DIR` writes this file as `DIR/{REPORT_FILE}`; the repository's "
            f"`docs/{REPORT_FILE}` is regenerated with `precisionlab report --out docs --no-plots`. Contents: "
            + ", ".join(f"[{s.title}](#{i}-{_anchor(s.title)})" for i, s in enumerate(self.sections, 1)) + ".\n",
        ]
        for i, s in enumerate(self.sections, 1):
            parts.append(f"## {i}. {s.title}\n")
            parts.append(s.text + "\n")
            parts.append(s.table("markdown"))
        return "\n".join(parts)

    def to_table(self) -> str:
        parts = []
        for i, s in enumerate(self.sections, 1):
            heading = f"{i}. {s.title}"
            parts.append(f"{heading}\n{'=' * len(heading)}\n{s.summary}\n\n{s.table('table')}")
        parts.append(f"(precisionlab {__version__}: {self.command})\n")
        return "\n".join(parts)

    def to_json(self) -> str:
        doc: dict[str, Any] = {"report": "precisionlab report", "version": __version__, "command": self.command,
                               "settings": self.settings}
        doc.update({s.key: s.machine_records() for s in self.sections})
        return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _anchor(title: str) -> str:
    """The GitHub anchor of a heading's text (lower case, spaces to '-', punctuation dropped)."""
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c in "-_")


# ---------------------------------------------------------------------------
# the sections
# ---------------------------------------------------------------------------

_FORMATS_TEXT = (
    "Every format in the catalogue (`pl.formats`; `precisionlab formats` prints the same table). *e* and *m* are "
    "the exponent and mantissa (fraction) bits and *bias* the exponent bias; *max finite*, *min normal* and *min "
    "subnormal* are the largest value, the smallest value with the full m+1 bits of precision and the smallest "
    "non-zero value; *eps* = 2^-m is the gap between 1 and the next value; *digits* is the decimal precision "
    "(m+1)·log10 2 and *range* the decades from the smallest positive to the largest finite value. The 8-bit and "
    "smaller formats give up Inf and NaN codes for range: E4M3 has no Inf and one NaN per sign, FP6 and FP4 have "
    "neither, the fnuz formats have one NaN at the code of -0."
)

_CAST_TEXT = (
    "What rounding to each format costs: {n} standard-normal inputs (float32; float64 where float32 cannot feed "
    "the format) rounded with `pl.round(x, fmt, rounding=mode)`. *rel err* is |round(x) − x| / |x| (max and mean "
    "over the inputs that did not overflow); *ulp* is the error in units of the format's spacing at x (the "
    "nearest modes rne and rna stay within 0.5, the directed modes rtz and rto and stochastic rounding sr below "
    "1; sr is the one whose errors average out: the expected value of its result is x); *bits lost* is how "
    "many of the format's m+1 significant bits are wrong, on average. *overflows at* is where a magnitude stops "
    "rounding to a finite value of the format (for the nearest modes the midpoint between max and the next "
    "value an unbounded exponent would have; \"never\" where the mode or the format saturates), *underflows at* "
    "the magnitude up to which a non-zero input rounds to 0; *overflowed* and *underflowed* are the fractions "
    "of these inputs that did."
)

_MATMUL_TEXT = (
    "How the accumulation inside a matrix multiply adds error on top of the rounding of its inputs. For each "
    "preset (the `MatmulSpec` of a real unit or library; `precisionlab presets` lists their parameters), input "
    "distribution and K, A ({m}×K) and B (K×{m}) are drawn, rounded to the preset's input formats, multiplied with "
    "`pl.matmul(A, B, preset)` and compared with the exact product of the rounded inputs (summed in unbounded "
    "integers). `exact` sums the products exactly and rounds once, so it shows only the rounding to the output "
    "format; everything above it is the accumulator's doing: sequential fp16 and bf16 running sums lose more "
    "as the sum grows, tensor cores align each block of products to the largest and truncate the rest, the "
    "H100 FP8 unit (`h100_e4m3`) keeps only 13 fraction bits in its running sum unless the partial sums are "
    "promoted to fp32 every 128 elements (`+promote128`, what DeepSeek-V3 does). *uniform* inputs are on "
    "[0, 1), positive, so the sum grows with K; in *cancelling* inputs half the products are pairs of size "
    "~±256 that cancel exactly and the rest small terms of size ~1/256, so the error shows how much of the small "
    "terms the accumulator kept next to the large ones. *ulp* counts units of the output format at the exact "
    "result, *bits lost* is out of the output format's m+1 bits."
)

_RECIPES_TEXT = (
    "The mixed-precision training recipes of the NumPy reference trainer (`precisionlab.reference`, "
    "`get_recipe(name)`): the MatmulSpec of each GEMM (*fwd* the forward product, *dgrad* the gradient with "
    "respect to the layer's input, *wgrad* the gradient with respect to its weights), the format of the ops "
    "that run in low precision, how weights, weight gradients and optimizer state are stored, the loss scaling "
    "(dynamic: the scale is multiplied by the backoff factor and the step skipped when a gradient overflows, and "
    "multiplied by the growth factor after a number of clean steps) and the FP8 scaling. "
    "`precisionlab error train --recipes fp32,pure_fp16,torch_amp_fp16` trains recipes side by side."
)


def _formats_section() -> Section:
    aliases = _aliases_of()
    records = [{**format_record(f, aliases.get(f.name, [])), "_nan_text": _nan_text(f), "_notes": _notes(f)}
               for f in formats.values()]
    return Section("formats", "Formats", f"The {len(records)} formats of the catalogue (precisionlab formats).",
                   _FORMATS_TEXT, _FORMAT_COLUMNS, records)


def _cast_section(fmts: Sequence[Format], roundings: Sequence[Rounding], n: int, seed: int) -> Section:
    cells = [(f, r) for f in fmts for r in roundings]
    records = _sweep(cells, lambda c: cast_error_record(c[0], c[1], "normal", n, seed),
                     lambda c: f"{c[0].name} {c[1].value}", "report: cast error")
    return Section("cast_error", "Cast error",
                   f"Rounding {n} standard-normal inputs to each format with each rounding mode (precisionlab "
                   "error cast).", _CAST_TEXT.format(n=n), _CAST_ERROR_COLUMNS, records)


def _matmul_section(specs: Sequence[Any], ks: Sequence[int], dists: Sequence[str], m: int, seed: int,
                    backend: str) -> Section:
    cache: dict[Any, Any] = {}
    cells = [(s, k, d) for s in specs for d in dists for k in ks]
    records = _sweep(cells, lambda c: matmul_error_record(c[0], c[1], c[2], m, m, seed, cache, backend=backend),
                     lambda c: f"{c[0].name} K={c[1]} {c[2]}", "report: matmul error")
    return Section("matmul_error", "Matmul accumulation error",
                   f"{m}x{m} outputs of A (M x K) @ B (K x N) per preset, distribution and K against the exact "
                   "product (precisionlab error matmul).", _MATMUL_TEXT.format(m=m), _MATMUL_ERROR_COLUMNS, records)


def _gemms(roles: Any) -> str:
    """``fwd X, dgrad Y, wgrad Z`` with equal neighbours merged (``dgrad/wgrad Y``, or one name)."""
    names = [("fwd", roles.forward.name), ("dgrad", roles.dgrad.name), ("wgrad", roles.wgrad.name)]
    if len({n for _, n in names}) == 1:
        return names[0][1]
    groups: list[tuple[list[str], str]] = []
    for role, name in names:
        if groups and groups[-1][1] == name:
            groups[-1][0].append(role)
        else:
            groups.append(([role], name))
    return ", ".join(f"{'/'.join(r)} {n}" for r, n in groups)


def _power(v: float) -> str:
    """A scale: ``2^k`` for powers of two (loss scales are), else its value."""
    m, e = math.frexp(v)
    return f"2^{e - 1}" if m == 0.5 and v >= 2 else fmt_number(v)


def _loss_scaling(recipe: Any) -> str:
    scaler = recipe.loss_scaler()
    rule = getattr(scaler, "rule", None)
    if rule is None:
        return DASH if scaler.scale == 1 and not scaler.skip_nonfinite else f"static {_power(scaler.scale)}"
    text = (f"{recipe.loss_scaling}: init {_power(rule.init_scale)}, ×{fmt_number(rule.growth_factor)} after "
            f"{rule.growth_interval} clean steps, ×{fmt_number(rule.backoff_factor)} and skip on overflow")
    if rule.max_scale is not None:
        text += f", max {_power(rule.max_scale)}"
    if rule.min_scale is not None:
        text += f", min {_power(rule.min_scale)}"
    return text


def _fp8_scaling(fp8: Any) -> str:
    if fp8 is None:
        return DASH
    kind = type(fp8).__name__
    if kind == "DelayedScaling":
        return (f"delayed ({fp8.fp8_format.name}: {fp8.fp8_format.forward} fwd, {fp8.fp8_format.backward} bwd; "
                f"amax history {fp8.amax_history_len}, {fp8.amax_compute_algo}, margin {fp8.margin})")
    if kind == "CurrentScaling":
        return (f"current per tensor ({fp8.fp8_format.name}: {fp8.fp8_format.forward} fwd, "
                f"{fp8.fp8_format.backward} bwd)")
    if kind == "MXScaling":
        return f"MX blocks of {fp8.block_size} along K, e8m0 scales ({fp8.element_format}, {fp8.rule} rule)"
    return kind


def _models(source: str) -> str:
    """The start of a recipe's citation: the system it reproduces."""
    cut = [i for i in (source.find(": "), source.find(" ("), source.find(", "), source.find(". ")) if i > 0]
    return source[:min(cut)] if cut else source


def _name(fmt: Format | None) -> str | None:
    return None if fmt is None else fmt.name


def recipe_record(recipe: Any) -> dict[str, Any]:
    """One row of the recipes table (machine keys plus ``_`` keys for people)."""
    p = recipe.policy
    weights = ("fp32" if p.weight is None else
               f"{p.weight.name}, fp32 master" if p.master_weights else f"{p.weight.name} (no master copy)")
    return {
        "recipe": recipe.name,
        "models": _models(recipe.source),
        "forward": p.matmul.forward.name, "dgrad": p.matmul.dgrad.name, "wgrad": p.matmul.wgrad.name,
        "low": _name(p.low), "low_ops": list(p.allow),
        "weight": _name(p.weight), "master_weights": p.master_weights,
        "param_grad": _name(p.param_grad), "optimizer_state": _name(p.optimizer_state),
        "loss_scaling": recipe.loss_scaling, "loss_scaler_args": {k: v for k, v in recipe.loss_scaler_args},
        "fp8": None if p.fp8 is None else type(p.fp8).__name__,
        "_gemms": _gemms(p.matmul), "_weights": weights, "_loss": _loss_scaling(recipe), "_fp8": _fp8_scaling(p.fp8),
    }


_RECIPE_COLUMNS = (
    Column("recipe", "recipe"),
    Column("models", "reproduces"),
    Column("_gemms", "GEMMs"),
    Column("low", "low-precision ops", lambda v: v or DASH),
    Column("_weights", "weights"),
    Column("param_grad", "weight grads", lambda v: v or "fp32"),
    Column("optimizer_state", "optimizer state", lambda v: v or "fp32"),
    Column("_loss", "loss scaling"),
    Column("_fp8", "FP8 scaling"),
)


_TRAINING_TEXT = (
    "The recipes trained side by side ({steps} steps of `precisionlab error train`'s defaults: an MLP on the "
    "built-in synthetic classification task, the same initial weights and batches for every recipe; the GEMMs "
    "on the Numba backend). *grads flushed to 0* is the fraction of gradient values that rounding to the "
    "recipe's gradient format turned into zero, *grads overflowed* the count that became Inf or NaN (a step "
    "with one is skipped under dynamic loss scaling), *divergence vs fp32* the largest relative difference of "
    "the loss from the fp32 run over all steps. pure_fp16 loses small gradients to underflow that the AMP "
    "recipes keep with their master weights and loss scaling."
)


def _training_section(names: Sequence[str], steps: int, seed: int) -> Section:
    from .reference.trainer import compare_recipes

    results, reference = compare_recipes(names, steps=steps, seed=seed)
    records = [{k: v for k, v in train_record(r, reference).items() if k != "seconds"} for r in results]
    return Section("training", "Training recipes side by side",
                   f"{len(records)} recipes trained {steps} steps each on the same data and initial weights.",
                   _TRAINING_TEXT.format(steps=steps), tuple(c for c in _TRAIN_COLUMNS if c.key != "seconds"),
                   records)


def _recipes_section() -> Section:
    from .reference.recipes import recipes

    records = [recipe_record(r) for r in recipes.values()]
    return Section("recipes", "Training recipes",
                   "The recipes of the reference trainer (precisionlab error train trains them side by side).",
                   _RECIPES_TEXT, _RECIPE_COLUMNS, records)


# ---------------------------------------------------------------------------
# building, writing
# ---------------------------------------------------------------------------


def _parsed(values: dict[str, str]) -> dict[str, Any]:
    """Settings text (as :data:`DEFAULTS`) -> the values the sections take; ValueError naming a bad one."""
    items = lambda key: [t.strip() for t in values[key].split(",") if t.strip()]  # noqa: E731
    return {
        "formats": [get_format(t) for t in items("formats")],
        "rounding": [Rounding.parse(t) for t in items("rounding")],
        "n": int(values["n"]),
        "presets": [parse_matmul_spec(t) for t in items("presets")],
        "k": [_k_value(t) for t in items("k")],
        "dist": [_matmul_distribution(t) for t in items("dist")],
        "m": int(values["m"]),
        "seed": int(values["seed"]),
        "backend": values["backend"],
        "train": [t for t in items("train") if t != "none"],
        "steps": int(values["steps"]),
    }


def command_line(settings: dict[str, str]) -> str:
    """``precisionlab report`` with the options whose value is not the default."""
    parts = ["precisionlab report"]
    parts += [f"--{key} {settings[key]}" for key in _CONTENT_OPTIONS if settings[key] != DEFAULTS[key]]
    return " ".join(parts)


def build_report(**settings: str) -> Report:
    """Compute every section.  ``settings`` override :data:`DEFAULTS` (same text as the
    command-line options, e.g. ``build_report(k="32,256", presets="exact,h100_fp16")``)."""
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"build_report: unknown settings {unknown}; allowed: {', '.join(DEFAULTS)}")
    text = {**DEFAULTS, **{k: str(v) for k, v in settings.items()}}
    text = {k: ",".join(t.strip() for t in v.split(",") if t.strip()) for k, v in text.items()}
    v = _parsed(text)
    if v["backend"] not in BACKEND_CHOICES:
        raise ValueError(f"backend={v['backend']!r} not allowed; choose one of {', '.join(BACKEND_CHOICES)}")
    sections = [
        _formats_section(),
        _cast_section(v["formats"], v["rounding"], v["n"], v["seed"]),
        _matmul_section(v["presets"], v["k"], v["dist"], v["m"], v["seed"], v["backend"]),
        _recipes_section(),
    ]
    if v["train"]:
        sections.append(_training_section(v["train"], v["steps"], v["seed"]))
    settings_doc = {"cast_formats": [f.name for f in v["formats"]], "roundings": [r.value for r in v["rounding"]],
                    "cast_inputs": v["n"], "cast_distribution": "normal",
                    "presets": [s.name for s in v["presets"]], "k": v["k"], "matmul_distributions": v["dist"],
                    "m": v["m"], "n": v["m"], "seed": v["seed"], "matmul_backend": v["backend"],
                    "train_recipes": v["train"], "train_steps": v["steps"]}
    return Report(command_line(text), settings_doc, sections)


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(report: Report, out_dir: str, plots: bool = True) -> list[str]:
    """Write ``report.md`` (and, when ``plots`` and matplotlib is installed, the two PNG plots)
    into ``out_dir`` (created if missing); returns the paths written."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, REPORT_FILE)
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(report.to_markdown())
        written = [path]
        plt = _pyplot() if plots else None
        if plt is not None:
            for name, draw, key in ((CAST_PLOT, _plot_cast_error, "cast_error"),
                                    (MATMUL_PLOT, _plot_matmul_error, "matmul_error")):
                target = os.path.join(out_dir, name)
                draw(plt, target, report.section(key).machine_records())
                written.append(target)
    except OSError as exc:
        raise ValueError(f"--out {out_dir}: cannot write: {exc.strerror or exc}") from None
    return written


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------


def _check_out(path: str) -> str:
    if os.path.exists(path) and not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"--out {path!r} is a file, not a directory")
    return path


def _run(args: argparse.Namespace, out: io.TextIOBase) -> int:
    settings = {key: ",".join(getattr(args, key)) if isinstance(getattr(args, key), list) else str(getattr(args, key))
                for key in _CONTENT_OPTIONS}
    if args.out is not None:  # fail before the computation, not after it
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"--out {args.out}: cannot create the directory: {exc.strerror or exc}") from None
    report = build_report(**settings)
    if args.out is not None:
        written = write_report(report, args.out, plots=not args.no_plots)
        sys.stderr.write("".join(f"{PROG} report: wrote {p}\n" for p in written))
        if not args.no_plots and len(written) == 1:
            sys.stderr.write(f"{PROG} report: no plots: matplotlib is not installed (pip install "
                             "'precisionlab[plot]')\n")
    if args.output == "json":
        out.write(report.to_json())
    elif args.output == "markdown":
        out.write(report.to_markdown())
    else:
        out.write(report.to_table())
    return 0


def _text_list(parse: Any, what: str) -> Any:
    """A comma-separated option checked item by item and kept as its (stripped) texts."""
    check = _list_arg(parse, what)

    def convert(text: str) -> list[str]:
        check(text)
        return [t.strip() for t in text.split(",") if t.strip()]
    return convert


def _recipe_name(text: str) -> str:
    """A recipe of the reference trainer, or 'none'."""
    if text.strip() != "none":
        from .reference.recipes import get_recipe

        get_recipe(text.strip())
    return text


def _text_of(parse: Any) -> Any:
    def convert(text: str) -> str:
        return str(parse(text))
    return convert


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``precisionlab report`` (called by :mod:`precisionlab.cli`)."""
    from .presets import presets

    modes = ", ".join(m.value for m in Rounding)
    p = sub.add_parser(
        "report", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="the main job: formats, cast error, matmul accumulation error, recipes and training tables",
        description="Compute five tables and print them (--format table, markdown or json):\n"
                    "  1. formats: the catalogue with its derived facts (as 'precisionlab formats');\n"
                    "  2. cast error: for every format x rounding mode, N standard-normal inputs rounded to the\n"
                    "     format: max/mean relative error, max/mean error in ULPs, mean bits lost, the overflow\n"
                    "     and underflow thresholds and the fractions that overflowed and underflowed (as\n"
                    "     'precisionlab error cast');\n"
                    "  3. matmul accumulation error: for every preset x distribution x K, pl.matmul of an MxK and\n"
                    "     a KxM matrix against the exact product of the rounded inputs: relative error, ULPs and\n"
                    "     bits lost (as 'precisionlab error matmul');\n"
                    "  4. training recipes: the GEMM specs, low-precision format, storage of weights, gradients\n"
                    "     and optimizer state, loss scaling and FP8 scaling of every recipe of the reference\n"
                    "     trainer (precisionlab.reference);\n"
                    "  5. the --train recipes trained side by side for --steps steps (as 'precisionlab error\n"
                    "     train' without its time column): final loss, accuracy, skipped steps, gradients\n"
                    "     flushed to zero or overflowed, divergence from fp32.\n"
                    "With --out DIR the report is also written as DIR/report.md, and, when matplotlib is\n"
                    "installed, the plots DIR/cast-error.png and DIR/matmul-error.png. Deterministic: the same\n"
                    "command gives the same bytes (seeded inputs; no timings or dates). The defaults run in\n"
                    "well under a minute on 2 cores, first run included: the matmuls use the NumPy reference\n"
                    "backend, which needs no JIT compilation and gives the same bits as every other backend.",
        epilog="PRESET[+MOD...] as in 'precisionlab error matmul': +promoteN promotes the partial sums to fp32\n"
               "every N K-elements, +FIELD=VALUE changes any MatmulSpec field.\n"
               "presets: " + ", ".join(presets) + "\n\n"
               "output (--format): 'table' (default) aligned tables for a terminal; 'markdown' the document\n"
               "that --out writes as report.md; 'json' one object with the settings and a list of rows per\n"
               "table (float64 values as numbers, inf/-inf/nan as strings, a missing value as null).\n\n"
               "examples:\n"
               "  precisionlab report\n"
               "  precisionlab report --out report\n"
               "  precisionlab report --out docs --no-plots          (regenerates the repository's docs/report.md)\n"
               "  precisionlab report --formats bf16,e4m3 --presets exact,h100_e4m3 --k 64,4096 --format json\n")
    p.add_argument("--out", metavar="DIR", type=_check_out, default=None,
                   help="also write DIR/report.md (and the PNG plots when matplotlib is installed); DIR is created")
    p.add_argument("--no-plots", action="store_true", help="with --out: write report.md only, no PNG plots")
    p.add_argument("--format", dest="output", choices=OUTPUT_FORMATS, default="table",
                   help="what to print: table (default, aligned text), markdown (report.md) or json")
    p.add_argument("--formats", type=_text_list(get_format, "formats"), default=DEFAULTS["formats"].split(","),
                   metavar="F[,F...]", help=f"cast error: target formats (default: {DEFAULTS['formats']})")
    p.add_argument("--rounding", type=_text_list(Rounding.parse, "rounding modes"),
                   default=DEFAULTS["rounding"].split(","), metavar="M[,M...]",
                   help=f"cast error: rounding modes: {modes} or long aliases (default: {DEFAULTS['rounding']})")
    p.add_argument("--n", type=_text_of(_positive_int), default=DEFAULTS["n"], metavar="N",
                   help=f"cast error: standard-normal inputs per format and mode (default: {DEFAULTS['n']})")
    p.add_argument("--presets", type=_text_list(parse_matmul_spec, "presets"), default=DEFAULTS["presets"].split(","),
                   metavar="P[,P...]", help=f"matmul error: presets, each PRESET[+MOD...] (default: "
                                            f"{DEFAULTS['presets']})")
    p.add_argument("--k", type=_text_list(_k_value, "K values"), default=DEFAULTS["k"].split(","),
                   metavar="K[,K...]", help=f"matmul error: inner dimensions K (default: {DEFAULTS['k']})")
    p.add_argument("--dist", type=_text_list(_matmul_distribution, "distributions"),
                   default=DEFAULTS["dist"].split(","), metavar="D[,D...]",
                   help=f"matmul error: input distributions: normal, uniform, cancelling (default: "
                        f"{DEFAULTS['dist']})")
    p.add_argument("--m", type=_text_of(_positive_int), default=DEFAULTS["m"], metavar="M",
                   help=f"matmul error: A is M x K and B is K x M (default: {DEFAULTS['m']})")
    p.add_argument("--seed", type=_text_of(int), default=DEFAULTS["seed"], metavar="S",
                   help=f"seed of every input and of stochastic rounding (default: {DEFAULTS['seed']})")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default=DEFAULTS["backend"],
                   help="backend of the matmuls: numpy (default: no JIT compilation), numba or auto; every "
                        "backend gives the same bits")
    p.add_argument("--train", type=_text_list(_recipe_name, "recipes"), default=DEFAULTS["train"].split(","),
                   metavar="R[,R...]", help=f"training: recipes trained side by side, 'none' for no training "
                                            f"table (default: {DEFAULTS['train']})")
    p.add_argument("--steps", type=_text_of(_positive_int), default=DEFAULTS["steps"], metavar="N",
                   help=f"training: steps per recipe (default: {DEFAULTS['steps']})")
    p.set_defaults(func=_run)
