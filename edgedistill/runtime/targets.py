"""Emulated ARM targets: ONNX Runtime for aarch64 under QEMU user-mode emulation, for correctness.

Does a bundle give the same answers on an ARM core as on the machine that built it? The INT8 kernels
of ONNX Runtime (MLAS) differ by core: plain NEON (Cortex-A53, A72: Raspberry Pi 3/4), dot product
(Cortex-A76, Neoverse-N1: Pi 5, most phones), and what QEMU's `max` CPU adds (i8mm, SVE). QEMU runs the
real aarch64 wheels of numpy and onnxruntime with each CPU model's instruction set, so each family of
kernels runs. Latency under emulation says nothing about a device and is never reported as one.

The target is a folder (default ~/.cache/edgedistill/targets/aarch64, or $EDGEDISTILL_TARGETS/aarch64):
  sysroot/    Debian's arm64 python3 with its libraries (debootstrap, first stage only: nothing runs)
  site/       the aarch64 wheels of onnxruntime and numpy, the versions this machine uses
  cpus/<cpu>/ a view of sysroot per CPU model (see cpu_view)
  target.json what was built, from what, and how long it took
`edgedistill target setup aarch64` builds it once (debootstrap needs root); running it needs no root.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgedistill.core.errors import ConfigError, StageError

ARCH = "aarch64"
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
PYTHON = "usr/bin/python3.11"
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64")
# QEMU CPU model -> (MIDR implementer, part number, /proc/cpuinfo Features), as the Linux kernel prints
# them on that core. `max` is QEMU's own CPU with every extension it emulates.
_V8 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
_V82_DOT = _V8 + " atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp"
CPUS = {
    "cortex-a53": ("0x41", "0xd03", _V8),
    "cortex-a72": ("0x41", "0xd08", _V8),
    "cortex-a76": ("0x41", "0xd0b", _V82_DOT),
    "neoverse-n1": ("0x41", "0xd0c", _V82_DOT + " ssbs"),
    "max": ("0x00", "0x051", _V82_DOT + " sve asimdfhm flagm sb paca pacg dcpodp sve2 i8mm bf16 svei8mm svebf16"),
}
DEFAULT_CPUS = ("cortex-a53", "cortex-a72", "cortex-a76", "neoverse-n1")


def default_root() -> Path:
    base = os.environ.get("EDGEDISTILL_TARGETS") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgedistill" / "targets"
    return Path(base) / ARCH


def device_name(cpu: str) -> str:
    """The name a verification is recorded under: aarch64-a72, aarch64-neoverse-n1, aarch64-max."""
    return f"{ARCH}-{cpu.removeprefix('cortex-')}"


def parse_target(text: str) -> list[str]:
    """'aarch64' (the four default cores) or 'aarch64:cortex-a72' -> CPU models."""
    arch, _, cpu = text.partition(":")
    if arch != ARCH:
        raise ConfigError(f"unknown target '{text}'; emulated targets: {ARCH} or {ARCH}:CPU (CPU one of {', '.join(CPUS)})")
    if not cpu:
        return list(DEFAULT_CPUS)
    if cpu not in CPUS:
        from edgedistill.core.registry import did_you_mean

        raise ConfigError(f"unknown CPU '{cpu}' in --target {text}{did_you_mean(cpu, list(CPUS))}; known: {', '.join(CPUS)}")
    return [cpu]


def qemu() -> str:
    found = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if not found:
        raise ConfigError("QEMU user-mode emulation is not installed: `apt-get install qemu-user-static` (Debian/Ubuntu), "
                          "then run again")
    return found


def status(root: Path | None = None, same_versions: bool = False) -> dict:
    """target.json of a built target, or a clear error saying how to build one. same_versions: also
    require the onnxruntime and numpy of this machine, so that a comparison is of the CPU, not of two
    releases."""
    root = Path(root or default_root())
    try:
        info = json.loads((root / "target.json").read_text())
    except (OSError, ValueError):
        raise ConfigError(f"no {ARCH} target in '{root}'; build it once with `edgedistill target setup {ARCH}` "
                          f"(or `make {ARCH}`)") from None
    if same_versions:
        import numpy
        import onnxruntime

        here = {"onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__}
        differ = [f"{k} {info.get(k)} there, {v} here" for k, v in here.items() if info.get(k) != v]
        if differ:
            raise ConfigError(f"the {ARCH} target in '{root}' was built for other versions ({'; '.join(differ)}); "
                              f"rebuild it: `edgedistill target setup {ARCH} --force`")
    return info


def cpu_view(sysroot: Path, view: Path, cpu: str) -> None:
    """A prefix for `qemu -L` in which a CPU model's /proc/cpuinfo and CPU list are those of an ARM core.

    Written by hand because nothing does it: QEMU 7.2 user mode passes the host's x86 /proc/cpuinfo and
    /sys/devices/system/cpu through, and ONNX Runtime >= 1.28 (pytorch/cpuinfo) crashes at import on
    them. QEMU looks a guest's absolute path up under the -L prefix first, so the view links every
    top-level folder of sysroot and adds its own proc/cpuinfo and sys/devices/system/cpu (one core).
    """
    implementer, part, features = CPUS[cpu]
    view.mkdir(parents=True)
    for entry in sysroot.iterdir():
        if entry.name not in ("proc", "sys"):
            (view / entry.name).symlink_to(os.path.relpath(entry, view))
    (view / "proc").mkdir()
    (view / "proc" / "cpuinfo").write_text(
        f"processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: {features}\nCPU implementer\t: {implementer}\n"
        f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 0\n\n")
    cpu_dir = view / "sys" / "devices" / "system" / "cpu"
    cpu_dir.mkdir(parents=True)
    for name in ("possible", "present", "online", "kernel_max"):
        (cpu_dir / name).write_text("0\n")


def setup(root: Path | None = None, log=print, force: bool = False) -> dict:
    """Build the aarch64 target folder (minutes, network: Debian's mirror and PyPI). Built beside it and
    renamed into place, so a killed set-up leaves no half-built target."""
    import numpy
    import onnxruntime

    root = Path(root or default_root())
    if not force and (root / "target.json").is_file():
        try:
            return status(root, same_versions=True)
        except ConfigError:
            log(f"the {ARCH} target in '{root}' was built for other onnxruntime/numpy versions: rebuilding it")
    for tool, package in (("debootstrap", "debootstrap"), ("dpkg-deb", "dpkg")):
        if not shutil.which(tool):
            raise ConfigError(f"'{tool}' is not installed: `apt-get install {package}` (Debian/Ubuntu), then run again")
    qemu_bin = qemu()
    if os.geteuid() != 0:
        raise ConfigError(f"building the {ARCH} target needs root once (debootstrap): run `sudo edgedistill target setup {ARCH}`; "
                          f"running it afterwards does not")
    started = time.time()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        sysroot = tmp / "sysroot"
        log(f"debootstrap: Debian {SUITE} arm64 ({', '.join(PACKAGES)}) ...")
        _run(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase", f"--include={','.join(PACKAGES)}",
              SUITE, str(sysroot), MIRROR], "debootstrap")
        # --foreign unpacks only the essential packages; the rest wait, downloaded, for a second stage
        # that would need to run arm64 code as root. Unpacking is all python3 needs.
        debs = sorted((sysroot / "var" / "cache" / "apt" / "archives").glob("*.deb"))
        for deb in debs:
            _run(["dpkg-deb", "-x", str(deb), str(sysroot)], f"unpacking {deb.name}")
            deb.unlink()
        log(f"pip: onnxruntime {onnxruntime.__version__} and numpy {numpy.__version__} for {ARCH} ...")
        platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-conflicts",
              "--target", str(tmp / "site"), "--only-binary=:all:", *platforms, "--python-version", "3.11",
              "--implementation", "cp", f"onnxruntime=={onnxruntime.__version__}", f"numpy=={numpy.__version__}"], "pip")
        for cpu in CPUS:
            cpu_view(sysroot, tmp / "cpus" / cpu, cpu)
        probe = _emulate(tmp, "max", ["-c", "import numpy, onnxruntime, platform; "
                                            "print(platform.machine(), numpy.__version__, onnxruntime.__version__)"], qemu_bin)
        machine, numpy_version, ort_version = probe.split()
        info = {"arch": ARCH, "machine": machine, "suite": SUITE, "mirror": MIRROR, "onnxruntime": ort_version,
                "numpy": numpy_version, "qemu": _qemu_version(qemu_bin), "cpus": list(CPUS),
                "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "setup_s": round(time.time() - started, 1)}
        (tmp / "target.json").write_text(json.dumps(info, indent=2) + "\n")
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"{ARCH} target ready in {root} ({info['setup_s']:.0f} s): onnxruntime {ort_version}, numpy {numpy_version}, {info['qemu']}")
    return info


def predict(root: Path, cpu: str, bench_py: Path, model: Path, inputs: Path, labels: Path | None, timeout_s: float = 3600) -> tuple:
    """Run a bundle's bench.py in verify mode (logits, no timing) on an emulated CPU (a target that
    status() accepted: verify_targets checks it once). Returns (logits, its JSON result)."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        out, logits = Path(tmp) / "result.json", Path(tmp) / "logits.npy"
        args = [str(bench_py), str(model), "--inputs", str(inputs), "--logits", str(logits), "--name", device_name(cpu),
                "--out", str(out)] + (["--labels", str(labels)] if labels else [])
        _emulate(Path(root), cpu, args, qemu(), timeout_s)
        return np.load(logits), json.loads(out.read_text())


def _emulate(root: Path, cpu: str, args: list[str], qemu_bin: str, timeout_s: float = 600) -> str:
    view = root / "cpus" / cpu
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=str(root / "site"), PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")
    cmd = [qemu_bin, "-cpu", cpu, "-L", str(view), str(view / PYTHON), *args]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise StageError(f"{ARCH} ({cpu}, emulated) did not finish in {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise StageError(f"{ARCH} ({cpu}, emulated) failed: {last}")
    return proc.stdout


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise StageError(f"{what} failed: {last}")


def _qemu_version(qemu_bin: str) -> str:
    first = subprocess.run([qemu_bin, "--version"], capture_output=True, text=True).stdout.splitlines()
    return first[0].strip() if first else "qemu"
