import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

FIXTURES = Path(__file__).parent / "fixtures"

# Tiny presets for tests live in tests/fixtures/models; the project's presets stay visible too.
os.environ["EDGEDISTILL_MODELS"] = str(FIXTURES / "models")
os.environ.setdefault("CI", "1")  # no progress bars in test logs
if os.environ.get("PYTEST_XDIST_WORKER"):  # make test: one process per core, so one thread each (set before torch loads)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# The longest files first (a few minutes of work each on 2 cores): with `--dist loadfile` each file goes
# whole to the next free worker, so one of these started last would leave the other worker idle at the end.
LONG_FILES = ("e2e/test_sweep.py", "models/test_architectures.py", "stages/test_qat.py", "e2e/test_distributed.py",
              "e2e/test_resume.py", "e2e/test_online.py", "data/test_text.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0].removeprefix("tests/")
        return LONG_FILES.index(path) if path in LONG_FILES else len(LONG_FILES)

    items.sort(key=rank)  # stable: the order inside a file, and of the other files, is kept


TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"kind": "digits", "image_size": 8, "channels": 1, "mean": [0.5], "std": [0.5]},
    "teacher": {"preset": "tiny_teacher", "epochs": 3, "batch_size": 32, "lr": 0.01},
    "student": {"preset": "tiny_student"},
    "distill": {"epochs": 3, "batch_size": 32, "lr": 0.01, "temperature": 4.0, "alpha": 0.7},
    "quantize": {"mode": "fixed", "calibration_samples": 64},  # auto is tested in test_quantize
    "benchmark": {"threads": 1, "warmup": 2, "runs": 20, "min_duration_s": 0.1, "profile_runs": 5},
    "budgets": "budgets.yaml",
}

TINY_BUDGETS = {"max_size_mb": 1.0, "max_latency_ms_p90": 1000.0, "min_accuracy": 50.0, "max_accuracy_drop": 40.0}


def write_pipeline(folder: Path, base: dict = TINY, **sections) -> Path:
    """A tiny pipeline in folder (with the budgets file TINY names): base (default: TINY, digits) with
    sections overriding its keys, a section's mapping merged into base's."""
    tree = yaml.safe_load(yaml.safe_dump(base))
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(tree.get(k), dict):
            tree[k].update(v)
        else:
            tree[k] = v
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "budgets.yaml").write_text(yaml.safe_dump(TINY_BUDGETS))
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny pipeline run once end to end, for all pytest-xdist workers (the first to get here runs it
    under a file lock in the folder they share: pytest-xdist's documented pattern); read only: tests copy
    its store before changing it."""
    import fcntl

    from edgedistill.cli import main

    shared = tmp_path_factory.getbasetemp().parent if os.environ.get("PYTEST_XDIST_WORKER") else \
        tmp_path_factory.getbasetemp()
    root = shared / "tiny_run"
    pipeline, store = root / "p" / "pipeline.yaml", root / "store"
    with open(shared / "tiny_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "done").is_file():
            shutil.rmtree(root, ignore_errors=True)  # a worker that died half way
            write_pipeline(pipeline.parent)
            assert main(["run", str(pipeline), "--store", str(store)]) == 0
            (root / "done").touch()
    return pipeline, store


@pytest.fixture
def bundle(tiny_run, tmp_path):
    """A private copy of the tiny run's bundle (v1), free to change."""
    _, store = tiny_run
    copy = tmp_path / "v1"
    shutil.copytree(store / "bundles" / "tiny" / "v1", copy)
    return copy


@pytest.fixture
def tiny_store_copy(tiny_run, tmp_path):
    """A private copy of the tiny run's store and pipeline folder, free to change."""
    pipeline, store = tiny_run
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    shutil.copytree(pipeline.parent, tmp_path / "p")
    return tmp_path / "p" / pipeline.name, copy


GRAY_SPEC = {"height": 2, "width": 2, "channels": 1, "scale": 1 / 255, "mean": [0.5], "std": [0.25]}


def gray_batches(n: int, cfg, size: int = 2, classes: int = 3, seed: int = 0):
    """n random gray size x size images with random labels, as the training loop takes them (Batches)."""
    import torch

    from edgedistill.data.image.augment import Batches

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, size, size, 1), generator=g, dtype=torch.uint8).numpy()
    labels = torch.randint(0, classes, (n,), generator=g).numpy()
    return Batches(images, labels, {**GRAY_SPEC, "height": size, "width": size}, cfg, False, classes)


# Helpers of the tests that SIGKILL a run and resume it (e2e/test_resume.py, stages/test_qat.py).
def cli(*args, **kw):
    """`python -m edgedistill ARGS` as a child process, its output captured."""
    return subprocess.Popen([sys.executable, "-m", "edgedistill", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


ENV = dict(os.environ, OMP_NUM_THREADS="1")  # same thread count in every run: bitwise-equal results


def kill_at_first_checkpoint(proc: subprocess.Popen, work: Path, timeout_s: float = 120) -> bool:
    """SIGKILL proc as soon as a training checkpoint appears under work (a stage's work folder);
    whether it was still running then (False: it finished first, nothing was tested)."""
    deadline = time.time() + timeout_s
    while not list(work.glob("*/checkpoint.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    running = proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return running


@contextlib.contextmanager
def one_torch_thread():
    """Training results depend on the thread count (reduction order): one thread, as the child processes
    run (ENV), whatever runs the test."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_uninterrupted(*args) -> int:
    """`edgedistill ARGS` in this process on one torch thread: the reference a resumed run must equal bit
    for bit, without the cost of another interpreter."""
    from edgedistill.cli import main

    with one_torch_thread():
        return main([str(a) for a in args])
