"""`edgedistill bench BUNDLE --target ssh://...` and `verify BUNDLE --target ssh://...` against an sshd on
loopback that the test starts."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgedistill.cli import main

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
# .ci/run installs openssh-server, so CI always runs this; elsewhere it needs sshd on the machine
pytestmark = pytest.mark.skipif(SSHD is None or shutil.which("ssh") is None,
                                reason="needs OpenSSH's sshd and ssh (apt-get install openssh-server)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    keys = tmp_path / "ssh"
    keys.mkdir(mode=0o700)
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    (keys / "authorized_keys").write_text((keys / "client.pub").read_text())
    (keys / "authorized_keys").chmod(0o600)
    port = free_port()
    config = keys / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {keys / 'host'}
AuthorizedKeysFile {keys / 'authorized_keys'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
PidFile {keys / 'sshd.pid'}
""")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.fail(f"sshd did not start: {proc.stderr.read()}")
        time.sleep(0.1)
    os.environ["EDGEDISTILL_SSH_OPTIONS"] = (f"-i {keys / 'client'} -o StrictHostKeyChecking=no "
                                             f"-o UserKnownHostsFile={keys / 'known_hosts'}")
    user = os.environ.get("USER") or __import__("getpass").getuser()
    yield f"ssh://{user}@127.0.0.1:{port}{tmp_path / 'remote'}", tmp_path / "remote"
    os.environ.pop("EDGEDISTILL_SSH_OPTIONS", None)
    proc.terminate()
    proc.wait(timeout=10)


def test_bench_over_ssh_copies_runs_fetches_and_ingests(bundle, tmp_path, sshd, capsys):
    target, remote = sshd
    out = tmp_path / "lab.json"
    code = main(["bench", str(bundle), "--target", target, "--name", "lab-board",
                 "--remote-python", sys.executable, "--runs", "10", "--min-seconds", "0", "--out", str(out), "--ingest"])
    assert code == 0, capsys.readouterr().err
    assert (remote / "bench.py").is_file() and (remote / "result.json").is_file()  # it ran over there
    result = json.loads(out.read_text())
    assert result["device"]["name"] == "lab-board" and result["runs"] >= 10
    report = json.loads((bundle / "report.json").read_text())
    assert report["devices"]["lab-board"]["latency_ms"]["p90"] == result["latency_ms"]["p90"]


def test_unreachable_target_is_one_clear_error(tiny_run, tmp_path, sshd, capsys):
    _, store = tiny_run
    code = main(["bench", str(store / "bundles" / "tiny" / "v1"), "--target", f"ssh://nobody@127.0.0.1:{free_port()}"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgedistill: error: creating the remote folder on nobody@127.0.0.1 failed") and "\n" not in err


def test_verify_over_ssh_compares_the_answers_and_records_them(bundle, tmp_path, sshd, capsys):
    target, remote = sshd
    devices = tmp_path / "devices.yaml"  # the device by name, from a devices file
    devices.write_text(json.dumps({"lab-board": {"target": target, "python": sys.executable}}))
    code = main(["verify", str(bundle), "--device", "lab-board", "--devices", str(devices), "--images", "40"])
    assert code == 0, capsys.readouterr().err
    assert (remote / "logits.npy").is_file() and (remote / "test_inputs.npy").is_file()  # it ran over there
    entry = json.loads((bundle / "report.json").read_text())["devices"]["lab-board"]
    # the same machine on both ends: the same answers, bit for bit
    assert entry["emulated"] is False and entry["images"] == 40 and set(entry["models"]) == {"model.onnx", "model.ort"}
    assert entry["top1_agreement"] == 100.0 and entry["max_abs_diff"] == 0.0 and entry["accuracy"] == entry["host_accuracy"]


def test_quantize_target_times_the_candidates_on_the_device(tiny_store_copy, sshd, capsys):
    """quantize.target: ssh://...: auto mode ranks candidates by bench.py's latency over there."""
    target, remote = sshd
    pipeline, store = tiny_store_copy
    code = main(["run", str(pipeline), "--store", str(store), "--set", "quantize.mode=auto", "--set", f"quantize.target={target}",
                 "--set", f"quantize.target_python={sys.executable}", "--set", "quantize.recipes=[qdq_u8s8]",
                 "--set", "quantize.latency_runs=10", "--set", "quantize.latency_min_duration_s=0"])
    assert code in (0, 1), capsys.readouterr().err  # 1: the tiny budgets may fail; the bundle is made either way
    assert (remote / "bench.py").is_file() and (remote / "result.json").is_file()  # timed over there
    bundle = store / "bundles" / "tiny" / "v2"  # v1: the tiny run's, timed here
    report = json.loads((bundle / "report.json").read_text())
    assert report["quantization"]["latency_from"] == f"{target} (bench.py over SSH)"
    assert all(c["latency_ms_p90"] > 0 for c in report["quantization"]["candidates"])
    assert f"measured on {target}" in (bundle / "MODEL_CARD.md").read_text().replace("\\", "")  # Markdown escapes


def test_a_sweep_trial_times_its_bundle_on_the_device(bundle, tmp_path, sshd):
    """latency_on: a device of the devices file: bench.py over SSH on the trial's bundle, in the device's
    own timing turn."""
    from edgedistill.runtime.benchmark import BenchmarkConfig
    from edgedistill.sweep.trial import on_device

    target, remote = sshd
    devices = tmp_path / "devices.yaml"
    devices.write_text(json.dumps({"lab-board": {"target": target, "python": sys.executable, "threads": 1}}))
    result, where = on_device(bundle, "lab-board", BenchmarkConfig(runs=10, min_duration_s=0, warmup=2, profile_runs=0,
                                                                   throughput_batch=0), devices)
    assert where == "lab-board (bench.py over SSH)" and (remote / "result.json").is_file()
    assert result["latency_ms"]["p90"] > 0 and result["device"]["name"] == "lab-board"
    assert result["isolation"]["scope"] == "this device, from this machine"
