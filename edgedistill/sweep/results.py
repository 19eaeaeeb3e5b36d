"""A sweep's results, as a person reads them: <store>/sweeps/<name>/trials.json and trials.csv (every
trial's values and metrics), front.png (accuracy against latency and against size: the front in colour,
dominated and infeasible trials greyed), index.html (the plots, the table, the choice) and choice.json.
Rewritten as trials finish, so the page shows a sweep under way."""
from __future__ import annotations

import csv
import html
import math
import time
from pathlib import Path

from edgedistill.core.errors import EdgeDistillError
from edgedistill.core.files import read_json, write_json
from edgedistill.sweep import pareto
from edgedistill.sweep.trial import PARAMS, RESULT

TRIALS_JSON, TRIALS_CSV, PLOT, PAGE, CHOICE = "trials.json", "trials.csv", "front.png", "index.html", "choice.json"


def collect(folder: Path) -> list[dict]:
    """Every trial of the sweep in folder, numbered in the order they started: its result.json, or (still
    running, or killed) its params.json with status running."""
    trials = []
    for d in sorted((Path(folder) / "trials").iterdir()) if (Path(folder) / "trials").is_dir() else []:
        try:
            if (d / RESULT).is_file():
                trials.append(read_json(d / RESULT))
            elif (d / PARAMS).is_file():
                trials.append(dict(read_json(d / PARAMS), status="running"))
        except EdgeDistillError:
            continue  # a file half-written by a killed trial: it reruns on resume
    trials.sort(key=lambda t: (t.get("started", ""), t["trial"]))
    for number, t in enumerate(trials, 1):
        t["number"] = number
    return trials


def half_width(accuracy: float, n: int) -> float:
    """Half the 95% interval of an accuracy (%) measured on n examples (normal approximation): how far
    apart two trials' validation accuracies must be before the difference means something."""
    p = min(max(accuracy / 100, 0.0), 1.0)
    return 196 * math.sqrt(max(p * (1 - p), 0.25 / n) / n) if n else math.inf


def assess(trials: list[dict], objectives: list[str]) -> dict:
    """Statuses (front, dominated, infeasible, failed, running), the choice (most accurate feasible trial)
    and the knee of the front, by trial id."""
    finished = [t for t in trials if t.get("status") != "running"]
    status = dict(zip((t["trial"] for t in finished), pareto.statuses(finished, objectives)))
    status.update({t["trial"]: "running" for t in trials if t.get("status") == "running"})
    on_front = [i for i, t in enumerate(finished) if status[t["trial"]] == "front"]
    feasible = [i for i, t in enumerate(finished) if status[t["trial"]] in ("front", "dominated")]
    chosen = pareto.most_accurate(finished, feasible)
    k = pareto.knee([finished[i] for i in on_front], objectives)
    return {"status": status, "chosen": None if chosen is None else finished[chosen]["trial"],
            "knee": None if k is None else finished[on_front[k]]["trial"]}


def test_numbers(store, trial: dict, budgets) -> dict:
    """The test split, read once at the end for a trial of the front: its bundle result's test accuracy
    (the gate's: the lower of model.onnx's and model.ort's) and the real gate on it (its device budgets
    need the device's own results: `verify` or `ingest` the published bundle)."""
    from edgedistill.core.errors import ConfigError
    from edgedistill.release.gate import check, shipped_accuracy

    result = store.get("bundle", trial["bundle_key"])
    if result is None or result.problem:
        return {"error": "its bundle result is no longer in the store (gc?)"}
    report = read_json(result.path / "report.json")
    out = {"accuracy": shipped_accuracy(report)}
    if budgets is not None:
        try:
            rows = check(report, budgets.model_copy(update={"devices": {}}))
        except ConfigError:  # only device budgets (or regression thresholds): none applies here
            return dict(out, gate="no budget applies without the devices' results")
        out["gate"] = "pass" if all(r.passed for r in rows) else "fail: " + ", ".join(r.metric for r in rows if not r.passed)
    return out


def write(folder: Path, trials: list[dict], objectives: list[str], meta: dict, test: dict | None = None) -> dict:
    """trials.json, trials.csv, front.png, index.html and choice.json of the sweep in folder. test: the test
    numbers of the trials they were read for (the end of the sweep), by trial id. Returns the assessment."""
    folder = Path(folder)
    a = assess(trials, objectives)
    stopped = meta.get("state") == "stopped"  # Ctrl-C: the trials under way start again on resume
    rows = [dict(t, status="stopped" if stopped and a["status"][t["trial"]] == "running" else a["status"][t["trial"]],
                 test=(test or {}).get(t["trial"])) for t in trials]
    write_json(folder / TRIALS_JSON, {"sweep": meta, "chosen": a["chosen"], "knee": a["knee"], "trials": rows})
    _write_csv(folder / TRIALS_CSV, rows)
    plot(rows, folder / PLOT, a)
    choice = {"chosen": a["chosen"], "knee": a["knee"], "rule": "the most accurate feasible trial on validation "
              "(ties: lower latency, then smaller); the knee: the front's point farthest beyond the line through its extremes",
              "trials": {t["trial"]: t for t in rows if t["trial"] in (a["chosen"], a["knee"])}}
    write_json(folder / CHOICE, choice)
    (folder / PAGE).write_text(page(rows, a, meta))
    return a


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for t in rows for k in t.get("params", {})))
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "trial", "status", *keys, "val_accuracy", "latency_ms_p90", "size_kib", "feasible", "budgets_missed",
                    "shipped", "recipe", "test_accuracy", "test_gate", "seconds", "error"])
        for t in rows:
            done = t.get("accuracy") is not None
            test = t.get("test") or {}
            w.writerow([t["number"], t["trial"], t["status"], *[_cell(t.get("params", {}).get(k)) for k in keys],
                        f"{t['accuracy']:.2f}" if done else "", f"{t['latency']:.4f}" if done else "",
                        f"{t['size'] / 1024:.1f}" if done else "", t.get("feasible", ""),
                        " ".join(c["metric"] for c in t.get("checks", []) if not c["passed"]),
                        t.get("shipped", ""), t.get("recipe", ""),
                        f"{test['accuracy']:.2f}" if "accuracy" in test else "", test.get("gate", ""),
                        t.get("seconds", ""), t.get("error") or ""])
    tmp.replace(path)


def show_value(v) -> str:
    """A searched value as the console, the table and the page show it (floats to 4 significant digits)."""
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else v if isinstance(v, str) else str(v)


def _cell(v) -> str:
    return "" if v is None else show_value(v).replace(", ", " ")


COLOURS = {"front": "#1f77b4", "dominated": "#b0b0b0", "infeasible": "#d9d9d9", "chosen": "#d62728", "knee": "#ff7f0e"}


def plot(rows: list[dict], path: Path, a: dict) -> None:
    """Validation accuracy against p90 latency and against size, one point per finished trial: the
    front in colour and joined, dominated trials grey, infeasible ones light grey with an x; the chosen
    trial and the knee ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in rows if t["status"] in ("front", "dominated", "infeasible")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "latency", "latency p90, ms"), (axes[1], "size", "model.onnx, KiB")):
        scale = (lambda v: v / 1024) if key == "size" else (lambda v: v)
        for status, marker in (("infeasible", "x"), ("dominated", "o"), ("front", "o")):
            pts = [t for t in done if t["status"] == status]
            ax.scatter([scale(t[key]) for t in pts], [t["accuracy"] for t in pts], c=COLOURS[status], marker=marker,
                       s=36, zorder=3 if status == "front" else 2, label=f"{status} ({len(pts)})")
        feasible = [t for t in done if t["status"] != "infeasible"]
        line = [feasible[i] for i in pareto.front(feasible, ["accuracy", key])]
        line.sort(key=lambda t: t[key])
        ax.step([scale(t[key]) for t in line], [t["accuracy"] for t in line], where="post", c=COLOURS["front"], lw=1,
                alpha=0.6)
        for role in ("knee", "chosen"):
            t = next((t for t in done if t["trial"] == a[role]), None)
            if t is not None:
                ax.scatter([scale(t[key])], [t["accuracy"]], s=160, facecolors="none", edgecolors=COLOURS[role], lw=2,
                           zorder=4, label=role)
        for t in done:
            ax.annotate(str(t['number']), (scale(t[key]), t["accuracy"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points", color="#555")
        ax.set(xlabel=label, ylabel="validation accuracy, %", title=f"accuracy vs {key}")
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="lower center", ncol=5, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))  # the legend below the plots, off the points
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def page(rows: list[dict], a: dict, meta: dict) -> str:
    e = html.escape
    keys = list(dict.fromkeys(k for t in rows for k in t.get("params", {})))

    def line(t: dict) -> str:
        grey = t["status"] in ("dominated", "infeasible", "failed")
        role = " (chosen)" if t["trial"] == a["chosen"] else " (knee)" if t["trial"] == a["knee"] else ""
        done = t.get("accuracy") is not None
        test = t.get("test") or {}
        missed = ", ".join(c["metric"] for c in t.get("checks", []) if not c["passed"])
        cells = [f"{t['number']}{role}", t["status"] + (f": {missed}" if missed else ""),
                 *[_cell(t.get("params", {}).get(k)) for k in keys],
                 f"{t['accuracy']:.2f} ± {half_width(t['accuracy'], t['val_examples']):.2f}" if done else "",
                 f"{t['latency']:.3f}" if done else "", f"{t['size'] / 1024:.1f}" if done else "",
                 t.get("recipe", ""), f"{test['accuracy']:.2f}" if "accuracy" in test else "",
                 test.get("gate", test.get("error", "")), f"{t.get('seconds', '')}", t.get("error") or ""]
        return (f"<tr{' class=grey' if grey else ''}>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")

    head = ["trial", "status", *keys, "val acc % (± 95%)", "p90 ms", "KiB", "shipped", "test acc %", "test gate", "s", "error"]
    n_done = sum(t["status"] != "running" for t in rows)
    chosen = next((t for t in rows if t["trial"] == a["chosen"]), None)
    summary = ("No finished trial meets the budgets yet." if chosen is None else
               f"Chosen: trial {chosen['number']} ({e(chosen['trial'])}), the most accurate that meets the budgets: "
               f"validation {chosen['accuracy']:.2f}%, p90 {chosen['latency']:.3f} ms, {chosen['size'] / 1024:.1f} KiB.")
    if a["knee"] and a["knee"] != a["chosen"]:
        k = next(t for t in rows if t["trial"] == a["knee"])
        summary += (f" The front's knee, trial {k['number']}: validation {k['accuracy']:.2f}%, "
                    f"p90 {k['latency']:.3f} ms, {k['size'] / 1024:.1f} KiB.")
    unchecked = sorted({n for t in rows for n in t.get("budget_notes", [])})
    notes = "".join(f"<p>Not checked during the search: {e(n)}</p>" for n in unchecked)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(meta['name'])}: edgedistill sweep</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0;font-size:90%}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:nth-child(2),th:nth-child(2){{text-align:left}}tr.grey td{{color:#999}}img{{max-width:100%}}</style></head><body>
<h1>Sweep {e(meta['name'])}</h1>
<p>{n_done} of {meta['trials']} trials done; the sweep is {e(meta['state'])} (updated {time.strftime('%Y-%m-%d %H:%M:%S')}).
Base pipeline <code>{e(meta['pipeline'])}</code>; search {e(meta['search'])} over {e(', '.join(meta['space']))};
objectives {e(', '.join(meta['objectives']))}; budgets <code>{e(str(meta['budgets']))}</code>; latency on {e(meta['latency_on'])}.</p>
<p>Trials are ranked on the validation split; the test split is read once, at the end, for the trials on the
front and the chosen one. {e(meta.get('timing', ''))}</p>{notes}
<p><b>{summary}</b></p>
<img src="{PLOT}" alt="validation accuracy against latency and against size">
<table><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr>
{''.join(line(t) for t in rows)}</table>
</body></html>
"""
