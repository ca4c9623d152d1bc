"""Media of a run: task figures and user images, rendered and written off the training thread.

:class:`RunMedia` is the component (record + one writer thread + ``log_image``/``log_figure``);
:mod:`.figures` holds what each task draws; the callback that feeds it from Lightning is
:class:`trackbridge.callbacks.media_recorder.MediaRecorder`. Matplotlib and Pillow are
imported on first use, on the media thread.
"""

from .figures import TASK_FIGURES, FigureContext, OutputsError, TaskFigures, figures_for
from .images import EncodedImage
from .run_media import DEFAULT_MAX_SIDE, RunMedia
from .writer import MediaJob, MediaWriter, Rendered

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
