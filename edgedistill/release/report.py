"""report.html and its plots (PNG, matplotlib) for a bundle: accuracy against latency and against size
for the teacher and the students (every quantization candidate too), and the training curves."""
from __future__ import annotations

import html
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

ROLES = {"teacher": ("teacher", "tab:blue", "s"), "student_fp32": ("student FP32", "tab:orange", "o"),
         "student_int8": ("student quantized", "tab:green", "D")}
# PNG metadata without the matplotlib version: the same numbers give the same bytes on any install
PNG_META = {"Software": None}


def plot_tradeoffs(report: dict, path: Path) -> None:
    """Test accuracy against p90 latency and against size (log axes), one point per model."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for i, (role, m) in enumerate(report["models"].items()):
        label, color, marker = ROLES[role]
        offset = (6, 6) if i % 2 == 0 else (6, -14)  # neighbours' labels on opposite sides
        for ax, x, text in zip(axes, (m["latency_ms"]["p90"], m["size_bytes"] / 1024),
                               (f"{m['latency_ms']['p90']:.3f} ms", f"{m['size_bytes'] / 1024:.0f} KiB")):
            ax.scatter(x, m["accuracy"], color=color, marker=marker, s=70, label=label, zorder=3)
            ax.annotate(text, (x, m["accuracy"]), fontsize=8, xytext=offset, textcoords="offset points")
    device = report["device"]
    axes[0].set(xlabel=f"latency p90, ms (batch 1, {device['threads']} thread)", ylabel="test accuracy, %",
                title="accuracy vs latency")
    axes[1].set(xlabel="model size, KiB", ylabel="test accuracy, %", title="accuracy vs size")
    for ax in axes:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.25, y=0.25)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(loc="lower right")
    fig.suptitle(f"{report['pipeline']} on {device['cpu']}", fontsize=9)
    fig.savefig(path, dpi=110, metadata=PNG_META)
    plt.close(fig)


def plot_training(histories: dict[str, list[dict]], path: Path, losses: str = "distill: KD + CE") -> None:
    """Training loss and validation accuracy per epoch of each model (up to four), one line each.
    losses: what the distillation loss is, for the title."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for (name, history), color in zip(histories.items(), ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        epochs = [h["epoch"] for h in history]
        axes[0].plot(epochs, [h["train_loss"] for h in history], "o-", color=color, label=name)
        axes[1].plot(epochs, [h["val_accuracy"] for h in history], "o-", color=color, label=name)
    axes[0].set(xlabel="epoch", ylabel="training loss", title=f"training loss ({losses})")
    axes[1].set(xlabel="epoch", ylabel="validation accuracy, %", title="validation accuracy")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=110, metadata=PNG_META)
    plt.close(fig)


def write_html(report: dict, out: Path, labels: list[str]) -> None:
    """report.html beside tradeoffs.png and training.png."""
    out.write_text(render_html(report, labels))


def render_html(report: dict, labels: list[str]) -> str:
    """The text of report.html; everything it embeds from the report is HTML-escaped."""
    e = html.escape
    models = "".join(
        f"<tr><td>{e(ROLES[r][0])}</td><td>{m['accuracy']:.2f}</td><td>{m['latency_ms']['p50']:.3f}</td>"
        f"<td>{m['latency_ms']['p90']:.3f}</td><td>{m['size_bytes'] / 1024:.1f}</td><td>{m['peak_rss_mb']:.1f}</td></tr>"
        for r, m in report["models"].items())
    num = lambda v, f: "-" if v is None else format(v, f)
    candidates = "".join(
        f"<tr><td>{e(c['name'])}</td><td>{num(c['val_accuracy'], '.2f')}</td><td>{interval(c.get('val_drop'))}</td>"
        f"<td>{num(c.get('val_drop') and c['val_drop']['agreement'], '.1f')}</td><td>{num(c['latency_ms_p90'], '.3f')}</td>"
        f"<td>{num(c['size_bytes'] and c['size_bytes'] / 1024, '.1f')}</td><td>{len(c['excluded_nodes'])}</td>"
        f"<td>{e(c.get('graph_from', ''))}</td><td>{e(c['error'] or '')}</td></tr>" for c in report["quantization"]["candidates"])
    devices = "".join("<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>"
                      for row in device_rows(report)) or "<tr><td colspan=7>none measured yet</td></tr>"
    q, dev = report["quantization"], report["device"]
    sizes = report.get("image_size") or {"teacher": "?", "student": "?"}  # bundles before per-model sizes
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(report['pipeline'])}: edgedistill report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>{e(report['pipeline'])}</h1>
<p>Shipped: <b>{e(report['shipped'])}</b> (<code>model.onnx</code>, {report['size_bytes']:,} bytes), {len(labels)} classes,
input {px(sizes['student'])} (teacher {px(sizes['teacher'])}).
Test accuracy {report['accuracy'][report['shipped']]:.2f}% (teacher {report['accuracy']['teacher']:.2f}%), latency p90
{report['latency_ms']['p90']:.3f} ms at batch 1 on {e(dev['cpu'])}, {dev['threads']} thread(s), onnxruntime {e(dev['onnxruntime'])}.
{e(rounds_text(report))}</p>
<h2>Models (test split)</h2>
<table><tr><th>model</th><th>accuracy %</th><th>p50 ms</th><th>p90 ms</th><th>size KiB</th><th>peak RSS MiB</th></tr>{models}</table>
<p>{e(ort_format_text(report))}</p>
<img src="tradeoffs.png" alt="accuracy against latency and against size">
<h2>Distillation</h2>
<p>{e(distillation_text(report)) or 'not recorded'}</p>
<h2>Quantization ({e(q['mode'])})</h2>
<p>{e(shipped_text(q, report["shipped"]))}.</p>
<p>{e(quantization_text(q, report["shipped"]))}</p>
<table><tr><th>configuration</th><th>val accuracy %</th><th>drop pt [95% interval]</th><th>agreement %</th><th>p90 ms</th><th>size KiB</th><th>nodes in float</th><th>graph from</th><th>error</th></tr>{candidates}</table>
<h2>Training</h2>
<img src="training.png" alt="training loss and validation accuracy per epoch">
<h2>Target devices</h2>
<table><tr>{"".join(f"<th>{e(h)}</th>" for h in DEVICE_COLUMNS)}</tr>{devices}</table>
<p>All numbers: <code>report.json</code>. Provenance: <code>manifest.json</code>.</p>
</body></html>
"""


def shipped_text(q: dict, shipped_role: str, strong=lambda s: s) -> str:
    """'Ships X: why' for the bundle's model (report.json "shipped"), naming the quantize rule's own
    choice where bundle.ship overrode it. strong: how the model's name is emphasised (Markdown: **)."""
    model = "FP32" if shipped_role == "student_fp32" else q["recipe"]
    chosen = "FP32" if q["choice"] == "fp32" else q["recipe"]
    reason = q["reason"].removeprefix(f"{q['recipe']}: ")  # the rule's reason may start with the name
    if model == chosen:
        return f"Ships {strong(model)}: {reason}"
    return f"Ships {strong(model)}, as bundle.ship says; the quantize rule chose {chosen}: {reason}"


def interval(d: dict | None) -> str:
    """A paired drop as 'drop [low, high]' (points), '-' where there is none (FP32 itself, a failure)."""
    return "-" if d is None else f"{d['drop']:.2f} [{d['ci_low']:.2f}, {d['ci_high']:.2f}]"


def quantization_text(q: dict, shipped_role: str | None = None) -> str:
    """The rule, how sure the validation numbers are, and the shipped model's drop on test (plain text)."""
    if "rule" not in q:  # bundles made before the statistics existed
        return ""
    test = q.get("test_drop")
    parts = [f"Rule: {q['rule']}."]
    if q["val_resolution"]["note"]:
        parts.append(f"Warning: {q['val_resolution']['note']}.")
    parts.append("FP32 ships: nothing is lost to quantization." if test is None else
                 f"Measured once on test ({test['images']} examples), after the choice: drop {interval(test)} points "
                 f"({test['level']:.0%} interval), top-1 agreement with FP32 {test['agreement']:.1f}%.")
    if q.get("latency_from"):
        # FP32 (the first candidate) is timed again exactly when the speed rule was decided on alternated timings
        rounds = len((q.get("candidates") or [{}])[0].get("latency_rounds_ms") or ())
        parts.append(f"Candidates' latencies measured on {q['latency_from']}"
                     + (f"; those that decided the speed rule (FP32 and the candidates within tolerance) are the median "
                        f"of {rounds} timings, the models alternating." if rounds > 1 else "."))
    if q.get("qat"):
        parts.append(qat_text(q, shipped_role))
    return " ".join(parts)


def qat_text(q: dict, shipped_role: str | None = None) -> str:
    """One sentence on quantization-aware training: why it did not run, or what it gave (plain text).
    shipped_role: the bundle's shipped model (report.json "shipped"), which bundle.ship can force
    against the quantize rule; None: what the rule chose."""
    t = q["qat"]
    if not t["ran"]:
        return f"Quantization-aware training: not run: {t['reason']}."
    c = next(c for c in q["candidates"] if c["name"] == t["candidate"])
    d = c["val_drop"]
    # the QAT model is in the result whenever it is the most accurate quantized one (q["recipe"])
    ships = t["shipped"] if shipped_role is None else shipped_role == "student_int8" and q["recipe"] == t["candidate"]
    if ships == t["shipped"]:
        verdict = "it ships." if ships else f"not shipped: {t['reason']}."
    elif t["shipped"]:
        verdict = "the rule chose it, but bundle.ship: fp32 ships FP32."
    else:
        verdict = f"bundle.ship: quantized ships it (the rule would not: {t['reason']})."
    e = t.get("emulated")  # absent in results of qat stage version 2
    where = f" on the {e['tensors']} tensors and {e['weights']} weights ONNX Runtime quantizes" if e else ""
    return (f"Quantization-aware training ({len(t['history'])} epochs, emulating {t['recipe']}{where}): {c['name']} "
            f"{c['val_accuracy']:.2f}% on validation after ONNX Runtime quantized it (drop {interval(d)} points), "
            f"{t['val_accuracy_fake_quant']:.2f}% with PyTorch's fake quantization; " + verdict)


def distillation_text(report: dict) -> str:
    """One paragraph on which student ships, distilled or trained alone, and why (plain text)."""
    d = report.get("distillation")
    if d is None:  # bundles made before the baseline existed
        return ""
    mode = ("Online distillation (distill.mode online): the teacher and the student trained together, each "
            "learning from the labels and the other's softened outputs (Deep Mutual Learning). ") if d.get("mode") == "online" else ""
    return mode + _shipped_student_text(d)


def _shipped_student_text(d: dict) -> str:
    if d["alone"] is None:
        return (f"Distilled student shipped; no student-alone baseline was trained (distill.baseline: false). "
                f"Validation: teacher {d['teacher_val_accuracy']:.2f}%, distilled student {d['distilled']['val_accuracy']:.2f}%.")
    shipped = ("the distilled student" if d["shipped"] == "distilled"
               else "the student trained alone (better on validation, beyond its noise)")
    v = d["val_drop_vs_alone"]
    text = (f"Shipped: {shipped}. Validation: teacher {d['teacher_val_accuracy']:.2f}%, distilled student "
            f"{d['distilled']['val_accuracy']:.2f}%, student alone {d['alone']['val_accuracy']:.2f}% (distilled minus alone: "
            f"{-v['drop']:+.2f} points, 95% interval {-v['ci_high']:+.2f} to {-v['ci_low']:+.2f}; {d['rule']}). "
            f"Test (PyTorch): distilled {d['distilled']['test_accuracy']:.2f}%, alone {d['alone']['test_accuracy']:.2f}%.")
    return text + (f" Warning: {d['warning']}." if d["warning"] else "")


_MARKDOWN = re.compile(r"([\\`*_\[\]|~])")


DEVICE_COLUMNS = ("device", "CPU", "p50 ms", "p90 ms", "peak RSS MiB", "top-1 agreement with build host %", "accuracy %")


def device_rows(report: dict) -> list[tuple[str, ...]]:
    """One row of DEVICE_COLUMNS per device in report.json: a latency measured on a device (ingested
    bench.py results), or (edgedistill verify --target, emulated) the answers compared with the build
    host's on the shipped test inputs; an emulated CPU's latency means nothing and is never shown."""
    num = lambda v, f: "-" if v is None else format(v, f)
    rows = []
    for name, d in sorted(report.get("devices", {}).items()):
        lat = d.get("latency_ms") or {}
        rows.append((name, d["device"].get("cpu", ""), num(lat.get("p50"), ".3f"), num(lat.get("p90"), ".3f"),
                     num(d.get("peak_rss_mb"), ".1f"), num(d.get("top1_agreement"), ".2f"),
                     num(d.get("accuracy"), ".2f") + (f" (build host {d['host_accuracy']:.2f}, {d['images']} examples)"
                                                      if "host_accuracy" in d else "")))
    return rows


def md(text: object) -> str:
    """Text from the data or a device (class names, CPU strings, error messages), inert in Markdown:
    one line, HTML characters as entities, and the characters that make tables, links, code and
    emphasis backslash-escaped."""
    return _MARKDOWN.sub(r"\\\1", html.escape(" ".join(str(text).split()), quote=False))


def px(size) -> str:
    """An input size as the card says it: pixels, or token ids for text (no size)."""
    return "token-id" if size is None else f"{size} px"


def ort_format_text(report: dict) -> str:
    """The shipped model's two files, each measured on the test split."""
    o = report.get("ort_format")
    if not o or "accuracy" not in o:  # bundles before model.ort was measured on the whole test split
        return ""
    steps = f" ({o['max_abs_diff_steps']:.1f} output quantization steps)" if o.get("max_abs_diff_steps") else ""
    return (f"The shipped model as the device runs it: `model.onnx` {o['onnx_accuracy']:.2f}% (ONNX Runtime, what bench.py "
            f"runs), `model.ort` {o['accuracy']:.2f}% (ONNX Runtime Mobile's format, optimized for {o['target_platform']}); "
            f"top-1 agreement {o['top1_agreement']:.2%}, max abs logit difference {o['max_abs_diff']:.2e}{steps}, "
            f"{o['samples']} examples. Gates read the lower of the two.")


def rounds_text(report: dict) -> str:
    """How many alternating rounds the shipped model's batch-1 latency percentiles are the median of
    (bundles before the benchmark stage's rounds, or one round: nothing)."""
    p90s = report["models"][report["shipped"]].get("latency_rounds_ms") or []
    if len(p90s) < 2:
        return ""
    return (f"The batch-1 latency percentiles (p50 to p99, min, mean) are the median of {len(p90s)} rounds, the models "
            f"timed in turn (teacher, student FP32, student INT8, teacher, ...); this model's p90 per round "
            f"{min(p90s):.3f}-{max(p90s):.3f} ms. Load, cold start, throughput and the profile are the first round's.\n")


def isolation_text(report: dict) -> str:
    """How the shipped model's timing was kept from others' (bundles before timings took turns: nothing)."""
    iso = report.get("benchmark", {}).get("isolation")
    if not iso:
        return ""
    threads = f"; OMP_NUM_THREADS={iso['omp_num_threads']} in the run" if iso.get("omp_num_threads") else ""
    return (f"Timed alone on {iso['scope']}: timings of runs sharing it take turns under one lock "
            f"(`{md(iso['lock'])}`, waited {iso['waited_s']:.1f} s); training of other runs may have gone on beside it{threads}.\n")


def model_card(report: dict, labels: list[str], pre: dict) -> str:
    from edgedistill.data.dataset import for_spec

    acc, lat, dev, quant = report["accuracy"], report["latency_ms"], report["device"], report["quantization"]
    size = report.get("image_size") or {"teacher": "?", "student": "?"}  # bundles before per-model sizes
    num = lambda v, f: "-" if v is None else format(v, f)
    tp = report.get("throughput")
    throughput = f"Throughput at batch {tp['batch']}: {tp['images_per_s']:,.0f} images/s.\n" if tp else ""
    ops = ", ".join(f"{md(o['op_type'])} {o['share']:.0%}" for o in report["top_ops"][:5]) or "not profiled"
    rows = device_rows(report)
    devices = ("## Target devices (bench.py results, ingested; emulated: answers only, no latency)\n\n"
               f"| {' | '.join(DEVICE_COLUMNS)} |\n|{'---|' * len(DEVICE_COLUMNS)}\n"
               + "".join(f"| {' | '.join(md(c) for c in row)} |\n" for row in rows) + "\n") if rows else ""
    tried = "\n".join(
        f"| {md(c['name'])} | {num(c['val_accuracy'], '.2f')} | {interval(c.get('val_drop'))} | "
        f"{num(c.get('val_drop') and c['val_drop']['agreement'], '.1f')} | {num(c['latency_ms_p90'], '.3f')} | "
        f"{num(c['size_bytes'] and c['size_bytes'] / 1024, '.1f')} | {len(c['excluded_nodes'])} | "
        f"{md(c.get('graph_from', ''))} | {md(c['error'] or '')} |"
        for c in quant["candidates"])
    rows = "\n".join(
        f"| {role} | {m['accuracy']:.2f} | {m['latency_ms']['p50']:.3f} | {m['latency_ms']['p90']:.3f} | "
        f"{m['size_bytes'] / 1024:.1f} | {m['peak_rss_mb']:.1f} |"
        for role, m in report["models"].items())
    return f"""# {report['pipeline']}: model card

Shipped model: `model.onnx` = **{report['shipped']}**, {report['params']['student']:,} parameters,
{px(size['student'])} input (teacher: {report['params']['teacher']:,} parameters, {px(size['teacher'])}).

## Task
{len(labels)} classes: {', '.join(md(label) for label in labels[:20])}{' ...' if len(labels) > 20 else ''}.
{for_spec(pre).describe_input(pre)}

## Accuracy (test split, {report['test_samples']} images, ONNX Runtime)
teacher {acc['teacher']:.2f}%, student FP32 {acc['student_fp32']:.2f}%, student INT8 {acc['student_int8']:.2f}%.
{ort_format_text(report)}

## Distillation
{md(distillation_text(report)) or 'not recorded'}

## Shipped model on {md(dev['cpu'])} ({dev['cores']} cores, {dev['threads']} thread(s), onnxruntime {dev['onnxruntime']})
Latency at batch 1: p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f} ms, p99 {lat['p99']:.3f} ms,
min {lat['min']:.3f} ms, mean {lat['mean']:.3f} ms. Size {report['size_bytes']:,} bytes.
Session load {report['load_ms']:.1f} ms, cold start (load + first inference) {report['cold_start_ms']:.1f} ms.
Peak resident memory {report['peak_rss_mb']:.1f} MiB (a process holding only ONNX Runtime and this model).
{rounds_text(report)}{throughput}{isolation_text(report)}CPU flags: {md(', '.join(dev['flags'])) or 'none of note'}.
Top operators by time (ONNX Runtime profiler): {ops}.

| model | test acc % | p50 ms | p90 ms | size KiB | peak RSS MiB |
|---|---|---|---|---|---|
{rows}

## Quantization ({quant['mode']})
{shipped_text(quant, report["shipped"], lambda m: f"**{m}**")}.

{md(quantization_text(quant, report["shipped"]))}

| configuration | val acc % | drop pt [95% interval] | agreement % | p90 ms | size KiB | nodes in float | graph from | error |
|---|---|---|---|---|---|---|---|---|
{tried}

Export parity (PyTorch vs ONNX Runtime, FP32 student): max abs logit difference
{report['parity']['max_abs_diff']:.2e}, top-1 agreement {report['parity']['top1_agreement']:.2%}.

{devices}On a target device: copy this folder, run `python3 bench.py --name DEVICE --out DEVICE.json` (needs
only numpy and onnxruntime; add `--inputs test_inputs.npy --labels test_labels.npy` for accuracy on the
shipped test images), then `edgedistill ingest DEVICE.json BUNDLE` records it in report.json. Without a
device, `edgedistill verify BUNDLE --target aarch64` checks the answers on emulated ARM cores.

Provenance: manifest.json lists the sha256 of every file and the stage results this bundle came from.
"""
