"""The pipeline's stages, one module each. The runner orders them by their declared inputs/outputs."""
from . import baseline, benchmark, bundle, distill, export, finetune, prepare, qat, quantize, teach

STAGES = [m.STAGE for m in (prepare, finetune, teach, distill, baseline, export, quantize, qat, benchmark, bundle)]
