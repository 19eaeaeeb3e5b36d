"""Bad input: exit 2, one line on stderr that names the problem, no traceback unless --debug."""
import subprocess
import sys

import numpy as np
import yaml
from PIL import Image

from edgedistill.cli import main

from conftest import write_pipeline


def run_cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def one_line_error(code, err):
    assert code == 2, err
    # progress lines of stages that started may come first; the error is one line, the last
    errors = [line for line in err.splitlines() if line.startswith("edgedistill:")]
    assert len(errors) == 1 and errors[0].startswith("edgedistill: error: ") and err.endswith(errors[0]), err
    assert "Traceback" not in err
    return errors[0]


def test_unknown_key(tmp_path, capsys):
    line = one_line_error(*run_cli(["plan", str(write_pipeline(tmp_path, distill={"tempreature": 2}))], capsys))
    assert "distill.tempreature" in line and "did you mean 'temperature'" in line


def test_wrong_type_from_set(tmp_path, capsys):
    line = one_line_error(*run_cli(["run", str(write_pipeline(tmp_path)), "--store", str(tmp_path / "s"),
                                    "--set", "benchmark.threads=many"], capsys))
    assert "benchmark.threads" in line
    assert not (tmp_path / "s" / "results").exists()  # nothing computed


def test_missing_pipeline_file(tmp_path, capsys):
    line = one_line_error(*run_cli(["plan", str(tmp_path / "missing.yaml")], capsys))
    assert "missing.yaml" in line and "does not exist" in line


def test_missing_data_folder(tmp_path, capsys):
    path = write_pipeline(tmp_path, data={"kind": "imagefolder", "train_dir": "no/such/dir", "channels": 1, "mean": [0.5], "std": [0.5]})
    line = one_line_error(*run_cli(["run", str(path), "--store", str(tmp_path / "s")], capsys))
    assert "no/such/dir" in line and "not a folder" in line


def test_unreadable_image(tmp_path, capsys):
    for c in ("a", "b"):
        d = tmp_path / "imgs" / c
        d.mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((10, 10), 40 * i, np.uint8)).save(d / f"{i}.png")
    (tmp_path / "imgs" / "b" / "broken.png").write_bytes(b"not a png at all")
    path = write_pipeline(tmp_path, data={"kind": "imagefolder", "train_dir": "imgs", "channels": 1, "mean": [0.5], "std": [0.5]})
    line = one_line_error(*run_cli(["run", str(path), "--store", str(tmp_path / "s")], capsys))
    assert "broken.png" in line and "cannot read image" in line


def test_bad_budgets_file(tmp_path, capsys):
    path = write_pipeline(tmp_path)
    (tmp_path / "budgets.yaml").write_text(yaml.safe_dump({"max_latency_ms_p99": 3}))
    line = one_line_error(*run_cli(["run", str(path), "--store", str(tmp_path / "s")], capsys))
    assert "max_latency_ms_p99" in line and "did you mean 'max_latency_ms_p90'" in line


def test_unknown_stage_name(tmp_path, capsys):
    line = one_line_error(*run_cli(["plan", str(write_pipeline(tmp_path)), "--until", "distil"], capsys))
    assert "did you mean 'distill'" in line


def test_gate_on_a_folder_that_is_not_a_bundle(tmp_path, capsys):
    (tmp_path / "b.yaml").write_text("min_accuracy: 1\n")
    line = one_line_error(*run_cli(["gate", str(tmp_path), "--budgets", str(tmp_path / "b.yaml")], capsys))
    assert "not a bundle" in line


def test_debug_shows_the_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgedistill", "plan", str(tmp_path / "missing.yaml"), "--debug"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "edgedistill", "plan", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_light_commands_do_not_import_torch(tmp_path):
    """`ls`, `--help`, `gate` and errors stay fast: nothing they import loads torch or ONNX Runtime (the
    modality registry, the report and the gate included)."""
    script = ("import sys; from edgedistill.cli import main; main(['ls', '--store', sys.argv[1]]);"
              "from edgedistill.data.dataset import for_spec; from edgedistill.release import gate, ingest, report;"
              "print(sorted(m for m in ('torch', 'onnxruntime', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "store")], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
