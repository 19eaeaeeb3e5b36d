"""ONNX Runtime's quantizer driven by a recipe: calibration readers streamed from a split, opset
upgrade and pre-processing, quantize_static / quantize_dynamic / FP16, the nodes that add the most
error (for mixed precision), NNCF's numbers carried into ONNX Runtime's layout, and 7-bit weights
on x86 CPUs without VNNI (whose U8S8 kernels saturate with 8-bit ones)."""
from __future__ import annotations

import contextlib
import io
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)
from tqdm.auto import tqdm

from edgedistill.quantization.recipes import QuantizeConfig
from edgedistill.runtime.ortbench import select as select_inputs


def recipe_configs(q: QuantizeConfig) -> dict[str, QuantizeConfig]:
    """The configurations a run tries, by name: q itself in fixed mode, one per recipe in auto mode."""
    return {"fixed": q} if q.mode == "fixed" else {name: q.with_recipe(name) for name in q.recipes}


def resolve_reduce_range(q: QuantizeConfig) -> QuantizeConfig:
    """reduce_range auto made a bool: True where the candidates run on a CPU whose U8S8 kernels
    saturate (quantize.target host, this machine, x86 without VNNI), else False."""
    if q.reduce_range != "auto":
        return q
    rr = q.target == "host" and host_saturates_u8s8()
    return q.model_copy(update={"reduce_range": rr})


QUANT_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
CALIBRATION = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
FORMATS = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class BatchReader(CalibrationDataReader):
    """Feeds calibration inputs to ONNX Runtime batch by batch: only one batch is ever converted
    (decoded, preprocessed) into memory, so calibration sets larger than memory work.

    n: how many samples; feeds(rows) turns a slice of them into the model's inputs: {input name:
    array} (a split's feeds, which may hold more than the model takes) or one array for a one-input
    model (ortbench.select); inputs: the model's inputs (model_inputs), whose dtypes the arrays are
    cast to. A model whose batch is fixed gets exactly that many samples a batch (the last one
    padded by repeating its last sample). The first batch is checked to fit the model (DataError
    naming both shapes and `what`).

    quantize_model has ONNX Runtime's calibrator collect one batch per call (its CalibStridedMinMax
    option, which calls set_range): histogram methods (entropy, percentile) then keep histograms,
    not every activation of every sample (onnxruntime#10503: memory grew with the calibration set),
    and a smaller last batch is a call of its own (onnxruntime#18792: entropy and percentile failed
    on a ragged last batch).
    """

    def __init__(self, n: int, feeds: Callable[[slice], dict], inputs: Sequence, batch: int = 32,
                 progress: bool = False, what: str = "the calibration data"):
        from edgedistill.runtime.ortbench import fixed_batch

        self.n, self.feeds, self.inputs, self.progress, self.what = n, feeds, list(inputs), progress, what
        self.fixed = fixed_batch(self.inputs)
        self.batch = self.fixed or batch
        self.batches = math.ceil(n / self.batch)
        self._bar = None
        self.set_range(0, self.batches)

    def __len__(self) -> int:
        """Batches, the unit of set_range."""
        return self.batches

    def set_range(self, start_index: int, end_index: int) -> None:
        """Read batches [start_index, end_index) next (ONNX Runtime's strided calibration)."""
        self._it = self._batches(start_index, min(end_index, self.batches))

    def _batches(self, first: int, last: int) -> Iterator[dict]:
        from edgedistill.core.errors import DataError
        from edgedistill.runtime.ortbench import DTYPES, InputMismatch, check_feed, pad_rows

        for b in range(first, last):
            rows = slice(b * self.batch, min((b + 1) * self.batch, self.n))
            try:
                feeds = select_inputs([m.name for m in self.inputs], self.feeds(rows))
                if b == 0:
                    check_feed(self.inputs, feeds, self.what)
            except InputMismatch as e:
                raise DataError(str(e)) from None
            feeds = {m.name: np.ascontiguousarray(feeds[m.name], dtype=DTYPES.get(m.type, np.float32)) for m in self.inputs}
            size = len(next(iter(feeds.values())))
            if self.fixed:  # the model takes exactly that many: the last batch padded
                feeds = pad_rows(feeds, self.fixed)
            if self.progress:
                self._bar = self._bar or tqdm(total=self.n, desc="calibrate", unit="sample", leave=False)
                self._bar.update(size)
                if b == self.batches - 1:
                    self._bar.close()
                    self._bar = None
            yield feeds

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self.set_range(0, self.batches)


def split_reader(split: Any, inputs: Sequence, batch: int = 32, progress: bool = False) -> BatchReader:
    """Calibration from a split (or a subset of one) for a model with these inputs: its feeds, a batch at a time."""
    return BatchReader(len(split), split.feeds, inputs, batch=batch, progress=progress)


class ModelInput(NamedTuple):
    """One input of an ONNX model as ONNX Runtime sees it: name, type ('tensor(float)'), shape (ints and
    dimension names)."""

    name: str
    type: str
    shape: list


def model_inputs(model: Path) -> list[ModelInput]:
    """The inputs of an ONNX model as ONNX Runtime sees them. Plain values, not ONNX Runtime's NodeArgs:
    those keep their session alive, and a session left to the garbage collector deadlocked forked
    decode workers that collected it."""
    from edgedistill.runtime.onnx_utils import session

    return [ModelInput(m.name, m.type, list(m.shape)) for m in session(model).get_inputs()]


MIN_OPSET = 13
"""ONNX Runtime's quantizer writes per-channel DequantizeLinear with an axis, which opset 13 brought
(an opset-11 model got a file ONNX Runtime refuses: nncf#1537, onnxruntime#28228)."""


def upgrade_opset(src: Path, dst: Path, reader: Callable[[], CalibrationDataReader], log: Callable[[str], None]) -> Path:
    """src itself when its opset is MIN_OPSET or newer; else src converted with onnx's version
    converter to MIN_OPSET into dst, checked to load and to give src's outputs on a calibration
    batch. StageError, before anything is quantized, when it cannot be converted safely."""
    from onnx import version_converter

    from edgedistill.core.errors import StageError
    from edgedistill.runtime.onnx_utils import check_loads, session

    model = onnx.load(str(src))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)
    if opset >= MIN_OPSET:
        return src
    why = (f"the model is opset {opset}; ONNX Runtime's quantizer needs opset {MIN_OPSET} or newer (per-channel "
           f"DequantizeLinear), and onnx's version converter")
    try:
        onnx.save(version_converter.convert_version(model, MIN_OPSET), str(dst))
        check_loads(dst, f"the model converted to opset {MIN_OPSET}")
    except Exception as e:  # the converter raises many types for operators it cannot convert
        raise StageError(f"{why} could not convert it ({type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}); "
                         f"export it again at opset {MIN_OPSET} or newer; nothing was written") from None
    batch = reader().get_next()
    before, after = (session(p).run(None, batch) for p in (src, dst))
    diff = max(float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max()) for a, b in zip(before, after))
    scale = max(float(np.abs(np.asarray(a, np.float64)).max()) for a in before) or 1.0
    if diff > 1e-4 * max(1.0, scale):
        raise StageError(f"{why} changed its outputs (max abs diff {diff:.2e}); export it again at opset {MIN_OPSET} "
                         f"or newer; nothing was written")
    log(f"the model is opset {opset}: converted to opset {MIN_OPSET} (onnx version converter; outputs unchanged, max "
        f"abs diff {diff:.1e}) for ONNX Runtime's quantizer")
    return dst


def prepare_source(fp32: Path, q: QuantizeConfig, reader: Callable[[], CalibrationDataReader], work: Path,
                   log: Callable[[str], None]) -> Path:
    """The model quantization starts from: fp32 at MIN_OPSET or newer (upgrade_opset), then (quantize.
    pre_process) through ONNX Runtime's quant_pre_process (shape inference, graph optimization)."""
    source = upgrade_opset(fp32, work / "opset_upgraded.onnx", reader, log)
    if not q.pre_process:
        return source
    out = work / "preprocessed.onnx"
    try:
        quant_pre_process(str(source), str(out))
    except Exception as e:  # ONNX Runtime's symbolic shape inference misses some graphs (a 1-D CNN's Concat)
        log(f"quant_pre_process: symbolic shape inference failed ({type(e).__name__}); pre-processing without it")
        quant_pre_process(str(source), str(out), skip_symbolic_shape=True)
    return out


def quantize_model(src: Path, dst: Path, q: QuantizeConfig, reader: Callable[[], CalibrationDataReader],
                   exclude: list[str] = (), overrides: dict | None = None) -> None:
    """Apply one quantization configuration with ONNX Runtime's own tools, then check that ONNX
    Runtime loads what was written (StageError, and dst removed, when it does not). Static
    calibration collects one batch at a time (BatchReader). src: a model prepare_source made.
    overrides: ONNX Runtime's TensorQuantOverrides ({tensor: [{rmin, rmax}]}), which take the place
    of calibrated ranges for those tensors (nncf_ptq.carry)."""
    from edgedistill.runtime.onnx_utils import check_loads

    q = resolve_reduce_range(q)
    excluded = [*q.nodes_to_exclude, *exclude]
    # ONNX Runtime prints "Collecting tensor data and making histogram ..." for every batch
    with contextlib.redirect_stdout(io.StringIO()):
        if q.method == "static":
            quantize_static(str(src), str(dst), reader(), quant_format=FORMATS[q.format], per_channel=q.per_channel,
                            reduce_range=q.reduce_range, activation_type=QUANT_TYPES[q.activation_type],
                            weight_type=QUANT_TYPES[q.weight_type], calibrate_method=CALIBRATION[q.calibrate_method],
                            op_types_to_quantize=q.op_types, nodes_to_exclude=excluded,
                            # one batch per collect: see BatchReader
                            extra_options={"CalibStridedMinMax": 1, **({"TensorQuantOverrides": overrides} if overrides else {})})
        elif q.method == "dynamic":
            quantize_dynamic(str(src), str(dst), per_channel=q.per_channel, reduce_range=q.reduce_range,
                             weight_type=QUANT_TYPES[q.weight_type], op_types_to_quantize=q.op_types, nodes_to_exclude=excluded)
        else:
            from onnxruntime.transformers.float16 import convert_float_to_float16

            model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, node_block_list=excluded or None)
            onnx.save(model, str(dst))
    try:
        check_loads(dst, f"the quantized model {Path(dst).name}")
    except Exception:
        Path(dst).unlink(missing_ok=True)
        raise


def rank_nodes_by_error(fp32_model: Path, qdq_model: Path, reader: Callable[[], CalibrationDataReader], work: Path) -> list[tuple[str, float]]:
    """Weight-bearing nodes (Conv, Gemm, MatMul) ranked by the quantization error they add, worst first.

    ONNX Runtime's qdq_loss_debug gives, for each quantized activation, its SQNR (dB) between the FP32
    model and the dequantized QDQ model. A node's added error is the SQNR of its input minus the SQNR
    of the first quantized tensor after it (its Conv+Relu output, say): the dB this node loses. The
    ranking is ours; the measurement is ONNX Runtime's.
    """
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    float_aug, qdq_aug = work / "rank_float.onnx", work / "rank_qdq.onnx"
    modify_model_output_intermediate_tensors(str(fp32_model), str(float_aug))
    modify_model_output_intermediate_tensors(str(qdq_model), str(qdq_aug))
    matching = create_activation_matching(collect_activations(str(qdq_aug), reader()), collect_activations(str(float_aug), reader()))
    sqnr = {name: float(err["xmodel_err"]) for name, err in compute_activation_error(matching).items()}

    graph = onnx.load(str(fp32_model)).graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    ranked = []
    for node in graph.node:
        if node.op_type not in WEIGHT_OPS or node.input[0] not in sqnr:
            continue
        out = node.output[0]
        while out not in sqnr and len(consumers.get(out, [])) == 1:  # through fused activations
            out = consumers[out][0].output[0]
        if out in sqnr:
            ranked.append((node.name, sqnr[node.input[0]] - sqnr[out]))
    return sorted(ranked, key=lambda r: -r[1])


NNCF_CORRECTED = "nncf_corrected.onnx"
"""The float model with NNCF's corrected biases (carry_nncf), in the work folder."""


def carry_nncf(source: Path, calibration: Callable[[], CalibrationDataReader], work: Path,
               log: Callable[[str], None] = lambda m: None, progress: bool = False) -> tuple[Path, dict]:
    """NNCF's numbers for quantize.ranges nncf (nncf_ptq.carry): the float model with its corrected
    biases (in work/) and ONNX Runtime's TensorQuantOverrides holding its activation ranges."""
    from edgedistill.quantization import nncf_ptq

    started, r = time.monotonic(), calibration()
    carried = nncf_ptq.carry(source, iter(r.get_next, None), work / NNCF_CORRECTED, r.fixed, progress)
    log(f"NNCF {nncf_ptq.version()}: {carried['ranges']} activation ranges, {carried['biases_corrected']} "
        f"bias(es) corrected ({time.monotonic() - started:.0f} s), carried into ONNX Runtime's quantizer")
    return work / NNCF_CORRECTED, carried["overrides"]


VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
"""x86 CPU flags whose integer dot products do not saturate 16-bit sums (ONNX Runtime's U8S8 kernels
use them instead of VPMADDUBSW)."""


def saturates_u8s8(flags: Sequence[str], machine: str) -> bool:
    """Whether ONNX Runtime's U8S8 kernels saturate on this CPU: x86 without VNNI. Unknown flags (an
    empty list: cpu_info reads /proc/cpuinfo, which only Linux has) are not taken as saturation."""
    return machine.lower() in ("x86_64", "amd64", "i686", "x86") and bool(flags) and not set(VNNI_FLAGS) & set(flags)


def host_saturates_u8s8() -> bool:
    """saturates_u8s8 for this machine."""
    import platform

    from edgedistill.runtime.ortbench import cpu_info

    return saturates_u8s8(cpu_info()[1], platform.machine())


def uses_calibration(q: QuantizeConfig) -> bool:
    return any(c.method == "static" for c in recipe_configs(q).values())


def calibration_rows(n: int, samples: int, seed: int) -> np.ndarray:
    """The training-split rows calibration reads (sorted: the memory-mapped split is read forward)."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:samples])
