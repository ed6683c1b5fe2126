"""Named MatmulSpecs for real hardware and libraries (DESIGN §6).

Every preset is a :class:`~precisionlab.matmul.MatmulSpec` instance; its ``source``
field cites where its parameters come from.  ``<hw>_<input>`` accumulates in fp32 and
returns fp32; ``<hw>_<input>_acc16`` is the same unit with an fp16 accumulator and
output (C rounded to fp16 first).  Mixed FP8 operands are
``dataclasses.replace(pl.get_preset("h100_e4m3"), b_format="e5m2")``.  Hardware presets
compute one dot product at a time and chain their steps along K in ascending order.

Sources:

* **FHMP21** -- M. Fasi, N. J. Higham, M. Mikaitis, S. Pranesh, "Numerical behavior of
  NVIDIA tensor cores", PeerJ Computer Science 7:e330 (2021): V100, T4, A100 block FMA
  (alignment to the largest exponent, truncation, normalisation, no extra carry bits).
* **KM25** -- F. A. Khattak, M. Mikaitis, "Accurate models of NVIDIA tensor cores" (2025),
  repository north-numerical-computing/MATLAB-tensor-core: fraction bits and block widths
  of V100 to B200, validated on the published vectors that tests/test_presets.py replays.
* **MMA-Sim** -- P. Xie, Y. Wang, F. Yang, M. Yang, "MMA-Sim: Bit-accurate reference model
  of tensor cores and matrix cores", arXiv:2511.10909 (2025): the exponent given to zero
  terms (here ``ref_exp_floor``), the FP8 13-bit truncation, AMD CDNA1-3 matrix cores.
* **DESIGN §6** -- PyTorch and ml_dtypes CPU measurements recorded in the design.
"""

from __future__ import annotations

from dataclasses import replace

from .formats import Format
from .matmul import MatmulSpec

__all__ = ["presets", "get_preset", "E8M13"]

#: The Hopper/Ada FP8 accumulator: fp32's exponent range with 13 fraction bits (1-8-13).
E8M13 = Format(8, 13, name="e8m13")


def _nvidia(name: str, inputs: str, k_fused: int, n_frac: int, floor32: int, source: str,
            accumulator: Format | str = "fp32", input_rounding: str = "rne", c_mode: str = "early") -> MatmulSpec:
    """A tensor-core block FMA with fp32 C and D: truncation at each step (rtz)."""
    return MatmulSpec(a_format=inputs, input_rounding=input_rounding, step="fused", k_fused=k_fused,
                      n_frac=n_frac, align_rounding="rtz", c_mode=c_mode, ref_exp_floor=floor32,
                      accumulator=accumulator, step_rounding="rtz", output_format="fp32", name=name, source=source)


def _acc16(spec: MatmulSpec, floor16: int) -> MatmulSpec:
    """The same unit with fp16 C and D: C rounded to fp16, every step rounded to fp16 with RNE."""
    return replace(spec, accumulator="fp16", step_rounding="rne", output_format="fp16",
                   ref_exp_floor=floor16, name=f"{spec.name}_acc16",
                   source=spec.source + " fp16 output: round to nearest even at every step (KM25, MMA-Sim).")


_V100 = "V100 (Volta) mma.m8n8k4: 4 products per step, 23 fraction bits after alignment (FHMP21, KM25)."
_T4 = "T4 (Turing) m16n8k8: 8 products per step, 24 fraction bits (FHMP21; one source only)."
_A100 = ("A100 (Ampere) m16n8k16: 8 products per step, 24 fraction bits (FHMP21, KM25); zero terms count as "
         "exponent -132 (fp32 D) / -20 (fp16 D) (MMA-Sim). A2 behaves identically (KM25 data).")
_A100_TF32 = "A100 (Ampere) TF32 m16n8k8: 4 products per step, 24 fraction bits, fp32 truncated to tf32 (KM25)."
_ADA = "Ada Lovelace (RTX 1000, L40S identical): as Ampere, 8 products, 24 fraction bits (KM25, MMA-Sim)."
_ADA_TF32 = "Ada Lovelace TF32 (L40S identical): as Ampere TF32, 4 products, 24 fraction bits (KM25, MMA-Sim)."
_ADA_FP8 = ("Ada Lovelace FP8 mma m16n8k32 (L40S identical): 16 products per step, the sum truncated to 13 fraction "
            "bits with fp32's exponent range (KM25, MMA-Sim).")
_H100 = ("H100 (Hopper) m16n8k16 / wgmma: 16 products per step, 25 fraction bits; zero terms count as exponent -133 "
         "(fp32 D) / -21 (fp16 D) (KM25, MMA-Sim). H200 identical (KM25 data).")
_H100_TF32 = "H100 (Hopper) TF32: 8 products per step, 25 fraction bits (KM25, MMA-Sim)."
_H100_FP8 = ("H100 (Hopper) FP8 wgmma: 32 products per step summed to 13 fraction bits with fp32's exponent range, "
             "'fast accumulation' without promotion (KM25, MMA-Sim). H200 identical.")
_B200 = "B200 (Blackwell): as Hopper, 16 products (fp16/bf16) or 8 (tf32) per step, 25 fraction bits (KM25, MMA-Sim)."
_B200_FP8 = ("B200 (Blackwell) FP8 mma.sync: the 32 products summed and truncated to fp32 first, then C added with one "
             "IEEE round-to-nearest-even addition; fits every published row (shared/hw-vectors README, "
             "tests/test_presets.py), where KM25's and MMA-Sim's B200 parameters do not.")


def _catalogue() -> dict[str, MatmulSpec]:
    p: list[MatmulSpec] = []
    v100 = _nvidia("v100_fp16", "fp16", 4, 23, -131, _V100)
    t4 = _nvidia("t4_fp16", "fp16", 8, 24, -132, _T4)
    a100 = _nvidia("a100_fp16", "fp16", 8, 24, -132, _A100)
    ada = _nvidia("ada_fp16", "fp16", 8, 24, -132, _ADA)
    h100 = _nvidia("h100_fp16", "fp16", 16, 25, -133, _H100)
    b200 = _nvidia("b200_fp16", "fp16", 16, 25, -133, _B200)
    p += [v100, _acc16(v100, -19), t4, _acc16(t4, -20), a100, _acc16(a100, -20),
          _nvidia("a100_bf16", "bf16", 8, 24, -132, _A100),
          _nvidia("a100_tf32", "tf32", 4, 24, -132, _A100_TF32, input_rounding="rtz"),
          ada, _acc16(ada, -20), _nvidia("ada_bf16", "bf16", 8, 24, -132, _ADA),
          _nvidia("ada_tf32", "tf32", 4, 24, -132, _ADA_TF32, input_rounding="rtz")]
    for fp8 in ("e4m3", "e5m2"):
        ada8 = _nvidia(f"ada_{fp8}", fp8, 16, 13, -132, _ADA_FP8, accumulator=E8M13)
        p += [ada8, _acc16(ada8, -20)]
    p += [h100, _acc16(h100, -21), _nvidia("h100_bf16", "bf16", 16, 25, -133, _H100),
          _nvidia("h100_tf32", "tf32", 8, 25, -133, _H100_TF32, input_rounding="rtz")]
    h100_e4m3 = _nvidia("h100_e4m3", "e4m3", 32, 13, -133, _H100_FP8, accumulator=E8M13)
    p += [h100_e4m3, _nvidia("h100_e5m2", "e5m2", 32, 13, -133, _H100_FP8, accumulator=E8M13)]
    p.append(replace(h100_e4m3, name="deepseek_fp8", promote_every=128, a_scale_block=(1, 128),
                     b_scale_block=(128, 128), scale_at="promotion",
                     source="DeepSeek-V3 technical report (2024), §3.3: E4M3 with 1x128 activation and 128x128 weight "
                            "fp32 scales; the H100 wgmma partial sums are promoted to fp32 every 128 K elements "
                            "(N_C = 128) and scaled there (CUTLASS/DeepGEMM), on the h100_e4m3 unit."))
    p += [b200, _acc16(b200, -21), _nvidia("b200_bf16", "bf16", 16, 25, -133, _B200),
          _nvidia("b200_tf32", "tf32", 8, 25, -133, _B200, input_rounding="rtz")]
    for fp8 in ("e4m3", "e5m2"):
        p.append(_nvidia(f"b200_{fp8}", fp8, 32, 25, -133, _B200_FP8, c_mode="late_rn"))

    mi300 = ("AMD MI300 (CDNA3) v_mfma f32 fp16/bf16: products aligned and truncated to 24 fraction bits, then C in a "
             "second stage aligned toward -inf (32 / 24 bits), normalised and floored to 31 bits, then rounded to "
             "nearest even (MMA-Sim, the CDNA3 'asymmetric rounding').")
    for inp in ("fp16", "bf16"):
        p.append(MatmulSpec(a_format=inp, step="fused", k_fused=8, n_frac=24, align_rounding="rtz", c_mode="late_rd",
                            late_n_frac=31, accumulator="fp32", step_rounding="rne", output_format="fp32",
                            name=f"mi300_{inp}", source=mi300))
    p.append(MatmulSpec(a_format="fp16", step="fused", k_fused=4, n_frac=None, c_mode="early", accumulator="fp32",
                        step_rounding="rne", output_format="fp32", name="mi100_fp16",
                        source="AMD MI100 (CDNA1) v_mfma f32 fp16: 4 products and C summed exactly and rounded once to "
                               "nearest even (MMA-Sim's measured model; DESIGN §6 lists a pairwise tree)."))
    p.append(MatmulSpec(a_format="fp16", input_subnormals=False, product_format="fp32", step="pairwise", k_fused=4,
                        accumulator="fp32", step_rounding="rne", accumulator_subnormals=False, output_format="fp32",
                        name="mi250_fp16",
                        source="AMD MI250 (CDNA2) v_mfma f32 fp16: subnormal inputs flushed, products in fp32, "
                               "(p0+p1)+(p2+p3) then + C with fp32 RNE additions, subnormal results flushed "
                               "(MMA-Sim)."))

    torch_src = ("PyTorch CPU ATen kernels (AVX2, also AVX-512 builds; torch 2.13), bf16 torch.matmul, DESIGN §6: "
                 "exact products, fp32 accumulation, one rounding to the output; order {} ({}). For fp16/fp8 "
                 "replace a_format and output_format. Reproduced bit for bit by golden/cpu/torch_matmul*.npz.")
    aten_dot = "group(split(64,lanes(64),split(16,lanes(8),sequential)))"
    for name, order, layout in (("torch_cpu_nn", "interleaved(4)", "both operands row-major"),
                                ("torch_cpu_nt", aten_dot, "B a transposed view, as nn.Linear / F.linear: ATen's "
                                 "dot_with_fp32_arith, a 64-lane main loop over 64·floor(K/64) elements reduced by a "
                                 "halving tree, then an 8-lane loop over the next 16-element chunks (halving tree, "
                                 "added), then the rest one by one; lanes(64) where K mod 64 < 16"),
                                ("torch_cpu_tn", "sequential", "A column-major")):
        p.append(MatmulSpec(a_format="bf16", step="ieee", accumulator="fp32", step_rounding="rne", order=order,
                            output_format="bf16", name=name, source=torch_src.format(order, layout)))
    p.append(MatmulSpec(a_format="bf16", product_format="fp32", step="ieee", accumulator="fp32", step_rounding="rne",
                        output_format="bf16", name="ml_dtypes_dot",
                        source="ml_dtypes np.dot (NPyCustomFloat_DotFunc): float acc = 0; acc += float(a)*float(b); "
                               "one cast to the output type, i.e. fp32 products and additions with RNE. Any input "
                               "format: replace a_format and output_format."))
    p.append(MatmulSpec(a_format="fp32", step="exact", accumulator="fp32", output_format="fp32", name="exact",
                        source="OCP MX / IEEE P3109 BlockDotProduct: all products and C summed exactly, one rounding."))
    for name, fmt in (("fp32_sequential", "fp32"), ("fp16_accumulate", "fp16"), ("bf16_accumulate", "bf16")):
        p.append(MatmulSpec(a_format=fmt, step="ieee", accumulator=fmt, step_rounding="rne", output_format=fmt,
                            name=name, source=f"Textbook recursive summation: one {fmt} FMA per product, RNE "
                                              "(Higham, Accuracy and Stability of Numerical Algorithms, §4)."))
    return {s.name: s for s in p}


def _cpu_framework_presets() -> list[MatmulSpec]:
    """The units behind CPU framework calls, measured on an Intel Xeon with AVX-512 and AMX-BF16
    (golden/cpu/, tools/torch_order_probe.py); precisionlab.frameworks picks them per call."""
    onednn = "torch 2.13 CPU, oneDNN 3.12 brg_matmul"
    return [
        MatmulSpec(a_format="bf16", input_subnormals=False, step="ieee", accumulator="fp32", step_rounding="rne",
                   accumulator_subnormals=False, order="group(blocked(32,interleaved(2)))", output_format="bf16",
                   name="torch_cpu_amx_bf16",
                   source=f"{onednn}:avx10_1_512_amx (torch.matmul/linear/bmm bf16 with M·K·N > 16^3): AMX "
                          "TDPBF16PS tiles of 32 K-elements, each summed as two FMA chains (even and odd k) added "
                          "together, the tile sums added in order; bf16 subnormal inputs read as zero, subnormal "
                          "fp32 results flushed; C (bias) added last. oneDNN balances the K blocks "
                          "(precisionlab.frameworks.onednn_amx_k_block). Measured: golden/cpu/torch_matmul.npz."),
        MatmulSpec(a_format="fp16", step="ieee", accumulator="fp32", step_rounding="rne", order="group(sequential)",
                   output_format="fp16", name="torch_cpu_onednn_fp16",
                   source=f"{onednn}:avx10_1_512 (fp16 with M·K·N > 16^3, AVX-512-FP16 CPUs): one sequential "
                          "fp32 FMA chain over K, C added last, one rounding. Measured: golden/cpu/torch_matmul.npz."),
        MatmulSpec(a_format="e4m3", product_format="fp32", step="ieee", accumulator="fp32", step_rounding="rne",
                   order="sequential", a_scale_block=(None, None), b_scale_block=(None, None), scale_at="products",
                   output_format="fp32", name="torch_cpu_scaled_mm",
                   source="torch._scaled_mm on CPU (torch 2.13, oneDNN 3.12 ref:any matmul, per-tensor scales): "
                          "each product times scale_a, then times scale_b (fp32 roundings), added in order with "
                          "fp32 additions, one rounding to out_dtype. Measured: golden/cpu/torch_matmul.npz."),
        MatmulSpec(a_format="e4m3", step="ieee", accumulator="fp32", step_rounding="rne", order="sequential",
                   a_scale_block=(None, None), b_scale_block=(None, None), scale_at="operands", output_format="fp32",
                   name="torch_cpu_scaled_mm_emulated",
                   source="torch._scaled_mm on CPU without oneDNN's fp8 matmul (e5m2 operands, row-wise scales, or "
                          "mkldnn disabled; torch 2.13): the operands times their scales in fp32, then an MKL sgemm "
                          "(one sequential FMA chain for these sizes), one rounding to out_dtype. Measured: "
                          "golden/cpu/torch_matmul*.npz."),
        MatmulSpec(a_format="bf16", input_subnormals=False, step="ieee", accumulator="fp32", step_rounding="rne",
                   accumulator_subnormals=False, order="split(2,blocked(32,interleaved(2)),sequential)",
                   output_format="fp32", name="jax_cpu_bf16_f32",
                   source="JAX 0.10.2 CPU jnp.dot(bf16, bf16, preferred_element_type=f32), XLA's default YNNPACK "
                          "dot fusion on AMX-BF16: 32-element tiles as in torch_cpu_amx_bf16 over the even part of "
                          "K, unbalanced, an odd last element added at the end; DAZ/FTZ. Measured: "
                          "golden/cpu/jax_dot.npz."),
        MatmulSpec(a_format="bf16", step="ieee", accumulator="fp32", step_rounding="rne",
                   order="split(4,strided(4),group(sequential))", output_format="bf16", name="jax_cpu_dot",
                   source="JAX 0.10.2 CPU jnp.dot for bf16/f16/f8 operands with their own output type: operands "
                          "converted to f32, YNNPACK f32 dot (4 partial sums s[k mod 4] over 4·floor(K/4) "
                          "elements added as (s0+s1)+(s2+s3), the rest summed on its own and added), one rounding; "
                          "f8 outputs round through f16. K = 5, 9, 13, 17 run one sequential dot. Measured: "
                          "golden/cpu/jax_dot.npz."),
        MatmulSpec(a_format="bf16", step="ieee", accumulator="fp32", step_rounding="rne", order="sequential",
                   output_format="bf16", name="jax_cpu_xla_dot",
                   source="JAX 0.10.2 CPU jnp.dot with XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= (XLA's "
                          "own dot after the f32 upcast): one sequential fp32 FMA chain, one rounding. Measured: "
                          "golden/cpu/jax_dot_noynn.npz."),
    ]


#: Preset name -> MatmulSpec (DESIGN §6).
presets: dict[str, MatmulSpec] = _catalogue()
presets.update({s.name: s for s in _cpu_framework_presets()})


def get_preset(name: str) -> MatmulSpec:
    """The preset called ``name`` (case-insensitive); ValueError listing the names otherwise."""
    if isinstance(name, MatmulSpec):
        return name
    if not isinstance(name, str):
        raise TypeError(f"preset name must be a string, got {type(name).__name__} {name!r}")
    key = name.strip().lower()
    if key not in presets:
        raise ValueError(f"preset={name!r} is not a preset; allowed: {', '.join(presets)}")
    return presets[key]
