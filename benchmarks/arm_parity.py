"""Do the bundles give the same answers on ARM cores as on the x86 machine that built them?

For each case, the pipeline builds two bundles, one shipping the INT8 student and one the FP32 student
(`bundle.ship`), and `edgedistill verify --target aarch64` runs each bundle's model.onnx and model.ort
with ONNX Runtime for aarch64 under QEMU (cortex-a53, cortex-a72: plain NEON; cortex-a76, neoverse-n1:
dot product) on the bundle's shipped test inputs. Reported per core: top-1 agreement with x86 and the
largest logit difference (the worse of model.onnx and model.ort), and accuracy against x86's on the
same images. Targets (issue 10): agreement >= 99.5% and accuracy within 0.3 points on every model and
core. No latency: emulation says nothing about speed.

Cases (MNIST-5k, the quickstart's teacher at 64 px):
  quickstart          the quickstart as it is (small_cnn student, 32 px)
  mobilenet_v3_small  torchvision MobileNetV3-Small student at 64 px
  resnet18            torchvision ResNet-18 student at 64 px
The two torchvision students skip the student-alone baseline and train 4 epochs: what is measured is
ARM against x86 on the shipped models, not the students' quality.

    .venv/bin/python benchmarks/arm_parity.py [--cases quickstart mobilenet_v3_small resnet18] [--images 256]

Builds the aarch64 target first if there is none (`edgedistill target setup aarch64`, root once).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from edgedistill.core.runner import Runner
from edgedistill.core.store import Store
from edgedistill.pipeline import load_pipeline
from edgedistill.runtime import targets
from edgedistill.runtime.devices import verify_on_targets, verify_targets
from edgedistill.stages import STAGES

PIPELINE = ROOT / "pipelines" / "quickstart.yaml"
TORCHVISION_STUDENT = ["student.image_size=64", "distill.baseline=false", "distill.epochs=4"]
CASES = {
    "quickstart": [],
    "mobilenet_v3_small": ["student.preset=mobilenet_v3_small", *TORCHVISION_STUDENT],
    "resnet18": ["student.preset=resnet18", *TORCHVISION_STUDENT],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--images", type=int, default=256, help="shipped test inputs verified per bundle")
    ap.add_argument("--cpus", nargs="+", choices=list(targets.CPUS), default=list(targets.DEFAULT_CPUS))
    ap.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "edgedistill_arm_parity")
    a = ap.parse_args()
    started = time.time()
    info = targets.setup(log=lambda m: print(m, file=sys.stderr))  # returns at once when it exists
    print(f"<!-- target: {info['qemu']}; onnxruntime {info['onnxruntime']} and numpy {info['numpy']} (aarch64 wheels); "
          f"set-up {info['setup_s']:.0f} s on {info['built']} -->")
    chosen = verify_targets([f"aarch64:{cpu}" for cpu in a.cpus])
    store = Store(a.store)
    print("| case | shipped | core (emulated) | images | top-1 agreement with x86 % | max abs logit diff | accuracy % (x86) | "
          "target met | verify s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in a.cases:
        for ship in ("quantized", "fp32"):
            pipeline = load_pipeline(PIPELINE, [*CASES[case], f"bundle.ship={ship}"])
            version, bundle, _ = Runner(store, STAGES, progress=False).run(pipeline).bundle
            for t in chosen:
                t0 = time.time()
                e = verify_on_targets(bundle, [t], a.images, log=lambda m: print(f"<!-- {m} -->", file=sys.stderr))[t.name]
                ok = e["top1_agreement"] >= 99.5 and abs(e["accuracy"] - e["host_accuracy"]) <= 0.3
                print(f"| {case} | {'INT8' if ship == 'quantized' else 'FP32'} | {t.spec.partition(':')[2]} | {e['images']} | "
                      f"{e['top1_agreement']:.2f} | {e['max_abs_diff']:.2e} | {e['accuracy']:.2f} ({e['host_accuracy']:.2f}) | "
                      f"{'yes' if ok else 'NO'} | {time.time() - t0:.0f} |", flush=True)
    print(f"\n{time.time() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
