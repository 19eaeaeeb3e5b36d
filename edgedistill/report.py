"""report.html and its plots (PNG, matplotlib) for a bundle: accuracy against latency and against size
for the teacher and the students (every quantization candidate too), and the training curves."""
from __future__ import annotations

import html
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


def plot_training(histories: dict[str, list[dict]], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for (name, history), color in zip(histories.items(), ("tab:blue", "tab:orange")):
        epochs = [h["epoch"] for h in history]
        axes[0].plot(epochs, [h["train_loss"] for h in history], "o-", color=color, label=name)
        axes[1].plot(epochs, [h["val_accuracy"] for h in history], "o-", color=color, label=name)
    axes[0].set(xlabel="epoch", ylabel="training loss", title="training loss (distill: KD + CE)")
    axes[1].set(xlabel="epoch", ylabel="validation accuracy, %", title="validation accuracy")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=110, metadata=PNG_META)
    plt.close(fig)


def write_html(report: dict, out: Path, labels: list[str]) -> None:
    """report.html beside tradeoffs.png and training.png."""
    e = html.escape
    models = "".join(
        f"<tr><td>{e(ROLES[r][0])}</td><td>{m['accuracy']:.2f}</td><td>{m['latency_ms']['p50']:.3f}</td>"
        f"<td>{m['latency_ms']['p90']:.3f}</td><td>{m['size_bytes'] / 1024:.1f}</td><td>{m['peak_rss_mb']:.1f}</td></tr>"
        for r, m in report["models"].items())
    num = lambda v, f: "-" if v is None else format(v, f)
    candidates = "".join(
        f"<tr><td>{e(c['name'])}</td><td>{num(c['val_accuracy'], '.2f')}</td><td>{num(c['latency_ms_p90'], '.3f')}</td>"
        f"<td>{num(c['size_bytes'] and c['size_bytes'] / 1024, '.1f')}</td><td>{len(c['excluded_nodes'])}</td>"
        f"<td>{e(c['error'] or '')}</td></tr>" for c in report["quantization"]["candidates"])
    devices = "".join(
        f"<tr><td>{e(name)}</td><td>{e(d['device'].get('cpu', ''))}</td><td>{d['latency_ms']['p50']:.3f}</td>"
        f"<td>{d['latency_ms']['p90']:.3f}</td><td>{num(d.get('peak_rss_mb'), '.1f')}</td></tr>"
        for name, d in report.get("devices", {}).items()) or "<tr><td colspan=5>none ingested yet</td></tr>"
    q, dev = report["quantization"], report["device"]
    out.write_text(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(report['pipeline'])}: edgedistill report</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>{e(report['pipeline'])}</h1>
<p>Shipped: <b>{e(report['shipped'])}</b> (<code>model.onnx</code>, {report['size_bytes']:,} bytes), {len(labels)} classes.
Test accuracy {report['accuracy'][report['shipped']]:.2f}% (teacher {report['accuracy']['teacher']:.2f}%), latency p90
{report['latency_ms']['p90']:.3f} ms at batch 1 on {e(dev['cpu'])}, {dev['threads']} thread(s), onnxruntime {e(dev['onnxruntime'])}.</p>
<h2>Models (test split)</h2>
<table><tr><th>model</th><th>accuracy %</th><th>p50 ms</th><th>p90 ms</th><th>size KiB</th><th>peak RSS MiB</th></tr>{models}</table>
<img src="tradeoffs.png" alt="accuracy against latency and against size">
<h2>Quantization ({e(q['mode'])})</h2>
<p>{e(q['reason'])}</p>
<table><tr><th>configuration</th><th>val accuracy %</th><th>p90 ms</th><th>size KiB</th><th>nodes in float</th><th>error</th></tr>{candidates}</table>
<h2>Training</h2>
<img src="training.png" alt="training loss and validation accuracy per epoch">
<h2>Target devices</h2>
<table><tr><th>device</th><th>CPU</th><th>p50 ms</th><th>p90 ms</th><th>peak RSS MiB</th></tr>{devices}</table>
<p>All numbers: <code>report.json</code>. Provenance: <code>manifest.json</code>.</p>
</body></html>
""")
