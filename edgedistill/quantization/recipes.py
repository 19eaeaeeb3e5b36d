"""Quantization recipes by name (format, activation and weight types, per-channel, operators), the
recipe sets tried per target, and QuantizeConfig: the pipeline's quantize section, which
`edgedistill quantize` takes too."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from edgedistill.core.config import Strict
from edgedistill.core.registry import Registry, did_you_mean

#: Quantization recipes that `quantize.mode: auto` tries, by name: each sets these QuantizeConfig
#: fields; the others (calibration samples and method, reduce_range, op_types, nodes_to_exclude)
#: come from the pipeline.
QUANT_RECIPES: Registry[dict] = Registry("quantization recipe")
QUANT_RECIPES.register("qdq_u8s8")({"method": "static", "format": "qdq", "activation_type": "uint8", "weight_type": "int8", "per_channel": True})
QUANT_RECIPES.register("qdq_s8s8")({"method": "static", "format": "qdq", "activation_type": "int8", "weight_type": "int8", "per_channel": True})
QUANT_RECIPES.register("qdq_u8u8")({"method": "static", "format": "qdq", "activation_type": "uint8", "weight_type": "uint8", "per_channel": False})
QUANT_RECIPES.register("qoperator_u8s8")({"method": "static", "format": "qoperator", "activation_type": "uint8", "weight_type": "int8", "per_channel": True})
# Operator types worth quantizing on CPUs: weight-bearing ops and the cheap ones between them. Left out:
# elementwise arithmetic (Add, Mul, Sigmoid, HardSigmoid, HardSwish, GlobalAveragePool...), whose
# Quantize/Dequantize pairs cost more than they save. Measured on a MobileNetV3-Small student
# (benchmarks/quantize_vs_peers.py): every op type quantized, p90 0.343 ms; without elementwise, as
# Optimum's avx512_vnni configuration does (this list is its list), 0.287 ms; FP32 0.422 ms.
NO_ELEMENTWISE_OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul", "Clip", "Relu", "Reshape", "Transpose", "Squeeze",
                      "Unsqueeze", "Flatten", "Resize", "MaxPool", "AveragePool", "Slice", "Pad", "Split", "Gather",
                      "GatherElements", "Where", "InstanceNormalization", "LayerNormalization", "BatchNormalization",
                      "TopK", "CumSum"]
QUANT_RECIPES.register("qdq_u8s8_no_elementwise")({"method": "static", "format": "qdq", "activation_type": "uint8",
                                                   "weight_type": "int8", "per_channel": True, "op_types": NO_ELEMENTWISE_OPS})
QUANT_RECIPES.register("qdq_u8s8_per_tensor_no_elementwise")({"method": "static", "format": "qdq", "activation_type": "uint8",
                                                              "weight_type": "int8", "per_channel": False,
                                                              "op_types": NO_ELEMENTWISE_OPS})
# NNCF's post-training algorithm carried into ONNX Runtime's layout (quantization/nncf_ptq.py): the graph
# quantize_static writes, with NNCF's activation ranges and bias-corrected weights. Needs the nncf extra.
QUANT_RECIPES.register("qdq_u8s8_nncf")({"method": "static", "format": "qdq", "activation_type": "uint8", "weight_type": "int8",
                                        "per_channel": True, "ranges": "nncf"})
QUANT_RECIPES.register("qoperator_u8s8_nncf")({"method": "static", "format": "qoperator", "activation_type": "uint8",
                                              "weight_type": "int8", "per_channel": True, "ranges": "nncf"})
QUANT_RECIPES.register("qdq_s8s8_nncf")({"method": "static", "format": "qdq", "activation_type": "int8", "weight_type": "int8",
                                        "per_channel": True, "ranges": "nncf"})
QUANT_RECIPES.register("dynamic_s8")({"method": "dynamic", "weight_type": "int8", "per_channel": True})
QUANT_RECIPES.register("dynamic_s8_per_tensor")({"method": "dynamic", "weight_type": "int8", "per_channel": False})
QUANT_RECIPES.register("fp16")({"method": "fp16"})
QUANT_RECIPES.register("qdq_s8s8_per_tensor")({"method": "static", "format": "qdq", "activation_type": "int8", "weight_type": "int8",
                                              "per_channel": False})
QUANT_RECIPES.register("qdq_s8s8_no_elementwise")({"method": "static", "format": "qdq", "activation_type": "int8",
                                                  "weight_type": "int8", "per_channel": True, "op_types": NO_ELEMENTWISE_OPS})
# Named sets for quantize.recipes. x86: what measured best here (U8S8 first: VNNI's native pairing).
# arm: S8S8 QDQ, which ONNX Runtime's quantization guide recommends as the default on ARM64 (its
# NEON and dot-product kernels take signed activations), per channel and per tensor, without the
# elementwise ops, then U8S8 and dynamic for comparison. Choose latency on the device with
# quantize.target: ssh://... (an emulated core's latency means nothing).
RECIPE_SETS = {
    "x86": ["qdq_u8s8", "qdq_s8s8", "qoperator_u8s8", "qdq_u8s8_no_elementwise", "qdq_u8s8_per_tensor_no_elementwise", "dynamic_s8"],
    "arm": ["qdq_s8s8", "qdq_s8s8_per_tensor", "qdq_s8s8_no_elementwise", "qdq_u8s8", "dynamic_s8"],
    # transformer: what ONNX Runtime recommends for transformer models on CPUs (dynamic INT8 of the
    # optimized graph's MatMul and fused Attention), per channel and per tensor; static QDQ of the
    # weight-bearing ops for comparison; FP16 where the CPU has fast half precision.
    "transformer": ["dynamic_s8", "dynamic_s8_per_tensor", "qdq_u8s8_no_elementwise", "fp16"],
}


class QuantizeConfig(Strict):
    mode: Literal["auto", "fixed"] = "auto"
    """auto: try each of `recipes`, measure validation accuracy and latency (benchmark.threads, batch 1),
    keep the fastest whose accuracy drop is within max_accuracy_drop and that is at least min_speedup
    faster than FP32 (between such candidates less than min_speedup apart, the first in `recipes`); if
    none is accurate enough, calibrate the most accurate static QDQ recipe that is fast enough again with
    retry_calibration, then leave the nodes that add the most quantization error in float (up to
    max_excluded_nodes), within search_budget_s; if nothing qualifies, ship FP32 and say why.
    fixed: quantize once with the fields below, as given."""
    recipes: list[str] = Field(default_factory=lambda: list(RECIPE_SETS["x86"]))
    """auto: the recipes tried (names in QUANT_RECIPES: qdq_u8s8, qdq_s8s8, qdq_u8u8, qoperator_u8s8,
    qdq_u8s8_no_elementwise, qdq_u8s8_per_tensor_no_elementwise, qdq_s8s8_per_tensor,
    qdq_s8s8_no_elementwise, qdq_u8s8_nncf, qoperator_u8s8_nncf, qdq_s8s8_nncf, dynamic_s8,
    dynamic_s8_per_tensor, fp16), or a named set: x86, arm or
    transformer. Default: the modality's set (x86 for images, transformer for text). A recipe that
    names op_types replaces quantize.op_types."""
    max_accuracy_drop: float = Field(1.0, ge=0)
    """auto: largest FP32-minus-quantized validation accuracy drop accepted, in percentage points."""
    min_speedup: float = Field(1.05, ge=1.0)
    """auto: a quantized model ships only if FP32 p90 latency / its p90 latency is at least this
    (1.05: 5% faster), so measurement noise never trades accuracy for no speed."""
    max_excluded_nodes: int = Field(8, ge=0)
    """auto: most nodes left in float (mixed precision) when no recipe is accurate enough. 0: never."""
    retry_calibration: list[Literal["minmax", "entropy", "percentile"]] = Field(default_factory=list)
    """auto: when no recipe is accurate enough, the most accurate static QDQ recipe that is fast enough
    is calibrated again with each of these methods (e.g. [percentile]) before any node is left in float. Default []: on the 224-px
    MobileNetV2 case, percentile lost more on test than MinMax on 3 of 3 seeds, and entropy gave MinMax's
    scales (benchmarks/RESULTS.md, "Quantization fidelity")."""
    search_budget_s: float = Field(900.0, ge=0)
    """auto: wall-clock seconds for the search beyond the recipes (the retried calibrations, then mixed
    precision). The recipes are always tried; when the budget is spent the search stops where it is,
    and the reason says so."""
    latency_runs: int = Field(200, ge=10)
    """auto: minimum timed runs per candidate (after 20 warm-up runs)."""
    latency_min_duration_s: float = Field(0.5, ge=0)
    """auto: minimum timing per candidate in seconds. Sub-millisecond models need thousands of runs
    for a p90 that ranks candidates the same way twice."""
    latency_rounds: int = Field(3, ge=1)
    """auto: how many times FP32 and the candidates within tolerance are timed before the speed rule
    decides, the models alternating round by round (the first timing of each is one round; 1: no
    retiming); each one's p90 is then the median of its rounds. One timing of a sub-millisecond model
    moves by more than min_speedup from run to run, and a machine's load drifts over minutes:
    alternating spreads the drift over all models alike. Candidates more than 1.5x slower than FP32 in
    their first timing are not timed again, and do not ship."""
    method: Literal["static", "dynamic", "fp16"] = "static"
    """fixed: static: activations calibrated on training samples (best for CNNs). dynamic: weights only,
    activation ranges computed at run time (suits MatMul-heavy models). fp16: float16 weights and math."""
    format: Literal["qdq", "qoperator"] = "qdq"
    """fixed: QDQ inserts QuantizeLinear/DequantizeLinear pairs (portable, what mobile EPs expect);
    QOperator uses fused integer operators."""
    per_channel: bool = True
    """fixed: one weight scale per output channel (more accurate for depthwise and narrow convolutions)."""
    activation_type: Literal["uint8", "int8"] = "uint8"
    """fixed: activation integer type (static only). uint8 activations with int8 weights (U8S8) is
    ONNX Runtime's default on x86."""
    weight_type: Literal["int8", "uint8"] = "int8"
    """fixed: weight integer type."""
    reduce_range: bool | Literal["auto"] = "auto"
    """Quantize weights to 7 bits. On x86 CPUs without VNNI (AVX2 only), ONNX Runtime's U8S8 integer
    kernels multiply with VPMADDUBSW, whose 16-bit sums saturate with 8-bit weights: a MobileNetV2 at 224
    px lost 28.7 points of validation accuracy that way (90.13% FP32, 61.47% INT8; 86.80% with 7-bit
    weights; benchmarks/RESULTS.md). auto (default): 7 bits when the candidates run on such a CPU
    (quantize.target host, here without avx512_vnni, avx_vnni or amx_int8), 8 bits elsewhere (VNNI
    x86, ARM, and SSH targets, whose CPU flags are not known when the stage is configured)."""
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    """How activation ranges are chosen from the calibration samples (static only). minmax measured best
    (benchmarks/RESULTS.md). entropy: ONNX Runtime's quantize_static runs its KL search with 128 histogram
    bins and 128 quantized bins and has no option to change them, so the search has one candidate, the
    full range: it gave exactly MinMax's scales on every tensor of MobileNetV2."""
    ranges: Literal["onnxruntime", "nncf"] = "onnxruntime"
    """Static only: where the activation ranges (and biases) come from. onnxruntime: ONNX Runtime's
    calibrator (calibrate_method). nncf: NNCF's post-training algorithm (per-sample statistics, fast bias
    correction) run on the model, its ranges and corrected biases carried into ONNX Runtime's quantizer
    (TensorQuantOverrides): the graph is quantize_static's fast layout, the numbers NNCF's
    (quantization/nncf_ptq.py). Needs `pip install 'edgedistill[nncf]'`; auto mode skips the *_nncf
    recipes, with one line, without it."""
    calibration_samples: int = Field(256, ge=1)
    """Training-split images used to calibrate activation ranges (static only); streamed in batches."""
    op_types: list[str] | None = None
    """Operator types to quantize (e.g. [Conv, Gemm]); None: every type ONNX Runtime can quantize."""
    nodes_to_exclude: list[str] = Field(default_factory=list)
    """Node names left in float, always (names as in the exported ONNX graph)."""
    pre_process: bool = True
    """Run onnxruntime.quantization.quant_pre_process (shape inference, graph optimization) first."""
    target: str = Field("host", pattern=r"^(host|ssh://\S+|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")
    """auto: where candidates are timed. host: this machine. ssh://user@host[:port][/dir]: the device,
    with bench.py over SSH (as `edgedistill bench --target`), so the recipe that ships is the fastest
    there; or a device name of the devices file (its target, threads and python). The report names
    where every latency came from."""
    target_python: str = "python3"
    """auto, ssh target: the interpreter there (needs numpy and onnxruntime)."""
    qat: Literal["auto", "always", "never"] = "auto"
    """Quantization-aware training (the qat stage, settings under `qat:`): a short fine-tuning of the
    student with fake quantization that emulates ONNX Runtime's static INT8, toward the FP32 model's own
    outputs, then quantized by ONNX Runtime again. auto: only when no post-training candidate qualified
    and a static INT8 recipe was min_speedup faster than FP32 but not accurate enough (it costs a training
    run; where post-training is enough, or no INT8 graph is faster here, it cannot pay). always: whenever a
    static INT8 recipe was tried. never: post-training only. The pipeline only: `edgedistill quantize`
    has no PyTorch model to train."""

    @field_validator("recipes", mode="before")
    @classmethod
    def _named_set(cls, v):
        if isinstance(v, str):
            if v not in RECIPE_SETS:
                raise ValueError(f"unknown recipe set '{v}'{did_you_mean(v, list(RECIPE_SETS))}; named sets: "
                                 f"{', '.join(RECIPE_SETS)}, or a list of recipes")
            return list(RECIPE_SETS[v])
        return v

    @field_validator("recipes")
    @classmethod
    def _known_recipes(cls, v):
        for name in v:
            if name not in QUANT_RECIPES:
                raise ValueError(f"unknown recipe '{name}'{did_you_mean(name, QUANT_RECIPES.names())}; "
                                 f"known: {', '.join(QUANT_RECIPES.names())}")
        return v

    @field_validator("reduce_range", mode="before")
    @classmethod
    def _auto_or_bool(cls, v):
        # one clear sentence instead of pydantic's one per member of the union
        if v == "auto" or isinstance(v, bool):
            return v
        raise ValueError(f"must be auto, true or false (got {v!r})")

    def with_recipe(self, name: str) -> "QuantizeConfig":
        # a recipe names where its ranges come from; a pipeline-level quantize.ranges does not leak into it
        return self.model_copy(update={"ranges": "onnxruntime", **QUANT_RECIPES.get(name)})
