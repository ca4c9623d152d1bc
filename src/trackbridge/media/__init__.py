"""Media of a run: task figures and user images, rendered and written off the training thread.

:class:`RunMedia` is the component (record + one writer thread + ``log_image``/``log_figure``);
:mod:`.figures` holds what each task draws; the callback that feeds it from Lightning is
:class:`trackbridge.callbacks.media_recorder.MediaRecorder`. Drawing and encoding
happen in one render process per run (:mod:`.render_process`), where matplotlib and
Pillow are imported.
"""

from .figures import TASK_FIGURES, FigureContext, OutputsError, TaskFigures, figures_for
from .images import EncodedImage
from .run_media import DEFAULT_MAX_SIDE, RunMedia
from .jobs import MediaJob, Rendered
from .writer import MediaWriter

__all__ = [
    "DEFAULT_MAX_SIDE",
    "TASK_FIGURES",
    "EncodedImage",
    "FigureContext",
    "MediaJob",
    "MediaWriter",
    "OutputsError",
    "Rendered",
    "RunMedia",
    "TaskFigures",
    "figures_for",
]
