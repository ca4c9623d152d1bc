"""Frames between a run and its render process: a length, then a pickle.

Both ends of the pipe use these functions. Tensors travel as NumPy arrays: torch's own
pickling saves each tensor's storage through ``torch.save`` (tens of microseconds per
tensor, on the media thread, holding the GIL), where an array pickles as one buffer; the
receiving side turns them back into tensors with ``torch.from_numpy``.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
from typing import IO, Any

_LENGTH = struct.Struct("!Q")
# A frame longer than this is a broken stream, not a job (a job is at most a few hundred MB).
MAX_FRAME_BYTES = 4 * 2**30


class StreamClosed(EOFError):
    """The other end closed the pipe (it exited, or was killed) before a whole frame came."""


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        torch = sys.modules.get("torch")  # never imported for a process that has no tensors
        if torch is not None and type(obj) is torch.Tensor and _plain(obj, torch):
            return torch.from_numpy, (obj.detach().resolve_conj().resolve_neg().numpy(),)
        return NotImplemented


def _plain(tensor: Any, torch: Any) -> bool:
    """A dense CPU tensor of a dtype NumPy knows (bfloat16 and quantized ones keep torch's pickling)."""
    return (
        tensor.device.type == "cpu"
        and tensor.layout == torch.strided
        and not tensor.is_quantized
        and tensor.dtype not in (torch.bfloat16, torch.complex32)
    )


def dumps(value: Any) -> bytes:
    """``value`` pickled, tensors as arrays."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


def write_frame(stream: IO[bytes], payload: bytes) -> None:
    """Write one frame (``payload`` from :func:`dumps`) and flush it."""
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def loads(payload: bytes) -> Any:
    """The value of a frame's payload (imports what it names, as unpickling does)."""
    return pickle.loads(payload)


def read_frame(stream: IO[bytes]) -> bytes:
    """The next frame's payload; :class:`StreamClosed` at the end of the stream."""
    header = _read_exactly(stream, _LENGTH.size)
    (length,) = _LENGTH.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise StreamClosed(f"a frame of {length} bytes: the stream is broken")
    return _read_exactly(stream, length)


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) < size:
        raise StreamClosed(f"the pipe closed after {len(data or b'')} of {size} bytes")
    return data
