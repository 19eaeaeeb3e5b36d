"""The input size each model of a pipeline trains and runs at, and the size prepared images are stored at."""
from __future__ import annotations

from typing import TYPE_CHECKING

from edgedistill.data.dataset import for_kind

if TYPE_CHECKING:
    from edgedistill.pipeline import Pipeline


def model_sizes(p: Pipeline) -> tuple[int | None, int | None]:
    """(teacher, student) input sizes in pixels, data.image_size where not set; (None, None) for a
    modality without sizes (text)."""
    if not for_kind(p.data.kind).sized:
        return None, None
    return p.teacher.image_size or p.data.image_size, p.student.image_size or p.data.image_size


def stored_size(p: Pipeline) -> int | None:
    """The size prepared images are stored at: the larger of the two models' (a batch is only ever
    resized down, never up); None for text."""
    teacher, student = model_sizes(p)
    return None if teacher is None else max(teacher, student)
