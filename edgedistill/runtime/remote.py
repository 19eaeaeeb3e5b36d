"""A bundle on a target device over SSH: copy model.onnx and bench.py, run, fetch the JSON (bench), or
the logits on the bundle's test inputs (verify).

Uses the system's ssh and scp, so ~/.ssh/config, keys and agents work as they do for the user.
Extra options (a key, a known-hosts file) can be given in $EDGEDISTILL_SSH_OPTIONS, e.g.
"-i ~/.ssh/pi -o UserKnownHostsFile=~/.ssh/known_hosts_lab".
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from edgedistill.core.errors import ConfigError, StageError
from edgedistill.runtime.benchmark import BenchmarkConfig, timing_turn

SSH_BASE = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
# What a user, host and remote folder may be. Anything that could reach ssh as an option (a leading
# '-'), or a remote shell as syntax, is refused rather than quoted.
USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]+")
REMOTE_DIR = re.compile(r"[A-Za-z0-9_.~/][A-Za-z0-9_./~+-]{0,199}")


def parse_target(target: str) -> tuple[str, int | None, str | None]:
    """ssh://[user@]host[:port][/remote/dir] -> (destination, port, remote dir or None)."""
    usage = f"--target '{target[:80]}' must look like ssh://user@host[:port][/remote/dir]"
    u = urlparse(target)
    if u.scheme != "ssh" or not u.hostname:
        raise ConfigError(usage)
    if u.username is not None and not USER.fullmatch(u.username):
        raise ConfigError(f"{usage}: user '{u.username[:40]}' is not a plain user name")
    if not HOST.fullmatch(u.hostname):
        raise ConfigError(f"{usage}: host '{u.hostname[:40]}' is not a host name or address")
    if u.password is not None or u.query or u.fragment or u.params:
        raise ConfigError(f"{usage} (no password, '?', ';' or '#')")
    dest = f"{u.username}@{u.hostname}" if u.username else u.hostname
    try:
        port = u.port
    except ValueError:
        raise ConfigError(f"--target '{target[:80]}' has an invalid port") from None
    remote = u.path if u.path not in ("", "/") else None
    if remote is not None and (not REMOTE_DIR.fullmatch(remote) or ".." in remote.split("/")):
        raise ConfigError(f"{usage}: remote folder '{remote[:40]}' may hold only letters, digits and _ . / ~ + -")
    return dest, port, remote


class Remote:
    """A target reached with the system's ssh and scp: run a command in a folder there, copy files in
    and out. "--" ends ssh's and scp's options, so the destination can never be read as one."""

    def __init__(self, target: str, timeout_s: float = 3600):
        self.dest, port, remote_dir = parse_target(target)
        extra = shlex.split(os.path.expanduser(os.environ.get("EDGEDISTILL_SSH_OPTIONS", "")))
        self.ssh = ["ssh", *SSH_BASE, *extra, *(["-p", str(port)] if port else [])]
        self.scp = ["scp", "-q", *SSH_BASE, *extra, *(["-P", str(port)] if port else [])]
        self.dir = remote_dir or "edgedistill-bench"  # relative: in the remote user's home
        self.timeout_s = timeout_s
        self.call([*self.ssh, "--", self.dest, f"mkdir -p {shlex.quote(self.dir)}"], "creating the remote folder")

    def call(self, cmd: list[str], what: str) -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            raise StageError(f"{what} on {self.dest} failed: {last}")

    def put(self, *files: Path) -> None:
        self.call([*self.scp, "--", *map(str, files), f"{self.dest}:{self.dir}/"], "copying the bundle")

    def run(self, command: str, what: str) -> None:
        self.call([*self.ssh, "--", self.dest, f"cd {shlex.quote(self.dir)} && {command}"], what)

    def get(self, name: str, local: Path) -> None:
        self.call([*self.scp, "--", f"{self.dest}:{self.dir}/{name}", str(local)], f"fetching {name}")


def bundle_files(bundle: Path, *files: str) -> Path:
    bundle = Path(bundle)
    for f in files:
        if not (bundle / f).is_file():
            raise ConfigError(f"'{bundle}' has no {f}; give a bundle folder made by edgedistill")
    return bundle


def bench_over_ssh(bundle: Path, target: str, settings: BenchmarkConfig, name: str | None = None,
                   remote_python: str = "python3", timeout_s: float = 3600) -> dict:
    """Run the bundle's bench.py on the target and return its JSON result."""
    bundle = bundle_files(bundle, "model.onnx", "bench.py")
    remote = Remote(target, timeout_s)
    device = name or remote.dest.split("@")[-1]
    args = " ".join(shlex.quote(a) for a in settings.ortbench_args())
    # one timing at a time on the device from this machine; copying in and the result out inside the turn
    # too, since runs share the remote folder
    with timing_turn(target) as isolation, tempfile.TemporaryDirectory() as tmp:
        remote.put(bundle / "model.onnx", bundle / "bench.py")
        remote.run(f"{shlex.quote(remote_python)} bench.py model.onnx {args} --name {shlex.quote(device)} --out result.json",
                   "running bench.py")
        remote.get("result.json", Path(tmp) / "result.json")
        return dict(json.loads(Path(tmp, "result.json").read_text()), isolation=isolation)


def predict_over_ssh(bundle: Path, target: str, model: str, inputs: Path, labels: Path, name: str,
                     remote_python: str = "python3", timeout_s: float = 3600) -> tuple:
    """The bundle's bench.py in verify mode on the target: the logits of `model` (model.onnx or
    model.ort) on inputs, and its JSON result (accuracy, device), as edgedistill.runtime.targets.predict."""
    import numpy as np

    bundle = bundle_files(bundle, model, "bench.py")
    remote = Remote(target, timeout_s)
    remote.put(bundle / model, bundle / "bench.py", inputs, labels)
    remote.run(f"{shlex.quote(remote_python)} bench.py {shlex.quote(model)} --inputs {shlex.quote(Path(inputs).name)} "
               f"--labels {shlex.quote(Path(labels).name)} --logits logits.npy --name {shlex.quote(name)} --out verify.json",
               "running bench.py (verify)")
    with tempfile.TemporaryDirectory() as tmp:
        remote.get("logits.npy", Path(tmp) / "logits.npy")
        remote.get("verify.json", Path(tmp) / "verify.json")
        return np.load(Path(tmp) / "logits.npy"), json.loads(Path(tmp, "verify.json").read_text())
