"""openpi's wire format: msgpack with numpy arrays as tagged maps, never pickle.

An array is ``{b"__ndarray__": True, b"data": raw C-order bytes, b"dtype": dtype.str, b"shape": shape}``, a numpy
scalar ``{b"__npgeneric__": True, b"data": value, b"dtype": dtype.str}`` (``openpi_client.msgpack_numpy``), so
``openpi-client`` talks to our server unchanged. Decoding is strict because it reads what strangers send: only
bool, integer and float dtypes, the declared shape must match the bytes, sizes are bounded, msgpack extension
types are refused, and arrays come back writeable (openpi's are read-only views of the message).
"""
from __future__ import annotations

import math

import msgpack
import numpy as np

ALLOWED_KINDS = "biuf"  # bool, signed and unsigned integers, floats: no objects, complex, void, strings, dates
MAX_ARRAY_BYTES = 64 * 2**20


class WireError(ValueError):
    """A message that is not a well-formed msgpack-numpy message; the text says what was wrong."""


def _encode(obj):
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in ALLOWED_KINDS:
            raise WireError(f"cannot send arrays of dtype {obj.dtype} (kind {obj.dtype.kind!r})")
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        if obj.dtype.kind not in ALLOWED_KINDS:
            raise WireError(f"cannot send numpy scalars of dtype {obj.dtype}")
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise WireError(f"cannot send objects of type {type(obj).__name__}")


def _checked_dtype(text) -> np.dtype:
    if not isinstance(text, str):
        raise WireError(f"array dtype must be a string like '<f4'; got {type(text).__name__}")
    try:
        dtype = np.dtype(text)
    except TypeError as error:
        raise WireError(f"unknown array dtype {text!r}") from error
    if dtype.kind not in ALLOWED_KINDS:
        raise WireError(f"array dtype {text!r} is not allowed (bool, int, uint and float only)")
    return dtype


def _decode(obj):
    if b"__ndarray__" in obj:
        if set(obj) != {b"__ndarray__", b"data", b"dtype", b"shape"}:
            raise WireError(f"an array map needs exactly __ndarray__, data, dtype, shape; got {sorted(map(str, obj))}")
        dtype, data, shape = _checked_dtype(obj[b"dtype"]), obj[b"data"], obj[b"shape"]
        if not isinstance(data, bytes):
            raise WireError(f"array data must be bytes; got {type(data).__name__}")
        if not isinstance(shape, (list, tuple)) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise WireError(f"array shape must be a list of non-negative ints; got {shape!r}")
        if len(data) != math.prod(shape) * dtype.itemsize:
            raise WireError(f"array of shape {tuple(shape)} and dtype {dtype.str} needs "
                            f"{math.prod(shape) * dtype.itemsize} bytes; got {len(data)}")
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    if b"__npgeneric__" in obj:
        if set(obj) != {b"__npgeneric__", b"data", b"dtype"} or isinstance(obj[b"data"], (bytes, dict, list)):
            raise WireError("a numpy scalar map needs exactly __npgeneric__, data (a number), dtype")
        try:
            return np.asarray(obj[b"data"], dtype=_checked_dtype(obj[b"dtype"]))[()]
        except OverflowError as error:
            raise WireError(f"numpy scalar {obj[b'data']!r} does not fit dtype {obj[b'dtype']}") from error
    return obj


def _refuse_ext(code, data):
    raise WireError(f"msgpack extension type {code} is not allowed")


def packb(obj) -> bytes:
    return msgpack.packb(obj, default=_encode)


def unpackb(data: bytes, max_bytes: int = MAX_ARRAY_BYTES):
    """Decode one message; every problem is a WireError."""
    if not isinstance(data, (bytes, bytearray)):
        raise WireError(f"expected a binary frame; got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, object_hook=_decode, ext_hook=_refuse_ext, strict_map_key=True,
                               max_bin_len=max_bytes, max_str_len=2**16, max_array_len=2**16, max_map_len=2**10)
    except WireError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as error:
        raise WireError(f"not a valid msgpack message ({type(error).__name__}: {error or 'malformed bytes'})") from None
