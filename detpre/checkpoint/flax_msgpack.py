"""
Read Flax checkpoints (``flax.training.checkpoints`` / ``flax.serialization.to_bytes``: msgpack
with an ndarray extension type) into nested dicts of NumPy arrays, without JAX.

The format, as ``flax/serialization.py`` writes it: msgpack maps for the tree (lists and tuples
as maps keyed "0", "1", ...), extension type 1 for an ndarray (its payload the msgpack of
``(shape, dtype name, C-order bytes)``), 2 for a Python complex, 3 for a NumPy scalar, and arrays
over 1 GiB split into ``{"__msgpack_chunked_array__": True, "shape": {...}, "chunks": {...}}``.
"""

from typing import Dict, Mapping

import msgpack
import numpy as np

__all__ = ["flatten_tree", "read_flax_checkpoint", "restore_flax_bytes"]

_CHUNKED = "__msgpack_chunked_array__"


def _ndarray(data):
    shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
    if dtype_name == b"bfloat16":
        # NumPy has no bfloat16: its 16 bits are the high half of a float32.
        halves = np.frombuffer(buffer, dtype=np.uint16).astype(np.uint32) << 16
        return halves.view(np.float32).reshape(shape, order="C")
    dtype = np.dtype(dtype_name.decode() if isinstance(dtype_name, bytes) else dtype_name)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order="C")


def _ext_hook(code, data):
    if code == 1:
        return _ndarray(data)
    if code == 2:
        real, imag = msgpack.unpackb(data)
        return complex(real, imag)
    if code == 3:
        return _ndarray(data)[()]
    return msgpack.ExtType(code, data)


def _unchunk(tree):
    if isinstance(tree, dict):
        if tree.get(_CHUNKED) is True:
            shape = tuple(tree["shape"][str(i)] for i in range(len(tree["shape"])))
            chunks = [tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]
            return np.concatenate(chunks).reshape(shape)
        return {k: _unchunk(v) for k, v in tree.items()}
    return tree


def restore_flax_bytes(data: bytes) -> Dict:
    """
    Args:
        data (bytes): a Flax msgpack checkpoint.

    Returns:
        dict: the state tree, arrays as (read-only) NumPy arrays.
    """
    try:
        tree = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except (msgpack.UnpackException, ValueError) as e:
        raise ValueError(f"not a Flax msgpack checkpoint ({e})") from e
    if not isinstance(tree, dict):
        raise ValueError(f"not a Flax checkpoint: its top level is a {type(tree).__name__}")
    return _unchunk(tree)


def read_flax_checkpoint(path: str) -> Dict:
    """
    Args:
        path (str): a Flax checkpoint file (e.g. scenic's ``checkpoint_<step>`` or a released
            ``loca_vbase_imnet1k``).

    Returns:
        dict: the state tree (see :func:`restore_flax_bytes`).
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        return restore_flax_bytes(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def flatten_tree(tree: Mapping, sep: str = "/", prefix: str = "") -> Dict[str, np.ndarray]:
    """
    Args:
        tree (Mapping): nested dicts with arrays (or scalars) as leaves.
        sep (str): separator of the flattened names.
        prefix (str): prepended to every name.

    Returns:
        dict[str, ndarray]: ``"a/b/kernel" -> array`` for every array leaf.
    """
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_tree(value, sep, name + sep))
        elif isinstance(value, np.ndarray):
            flat[name] = value
    return flat
