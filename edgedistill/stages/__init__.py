"""The pipeline's stages, one module each. The runner orders them by their declared inputs/outputs."""
from . import baseline, benchmark, bundle, distill, export, finetune, online, prepare, qat, quantize, teach

STAGES = [m.STAGE for m in (prepare, finetune, teach, distill, online, baseline, export, quantize, qat, benchmark, bundle)]
"""distill and online are the two forms of the distill stage (distill.mode); finetune and teach are
skipped in online mode, where the teacher trains inside it."""
