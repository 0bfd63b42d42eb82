"""Arrays of ``.npz`` files memory-mapped, and passed to other processes by reference.

A model version's files are written once and never changed: a process that uses a few rows
of one (a viewer's seen movies, a block of viewers' factors) maps it and reads those rows'
pages only, and a Ray task it hands an array to maps the same file instead of receiving a
copy (:func:`file_view`, :func:`remap`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def npz_mapped(path: str | Path) -> dict[str, np.ndarray] | None:
    """The arrays of an uncompressed ``.npz`` file (``np.savez``'s) memory-mapped, read-only:
    a row's pages are read when it is used. ``seen.npz`` holds every rating: a process that
    lists a few viewers, or a Ray task one block of them, reads only theirs. None where a
    member is compressed or not a plain array."""
    import struct
    import zipfile

    out = {}
    with zipfile.ZipFile(path) as z, open(path, "rb") as fh:
        for info in z.infolist():
            if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
                return None
            fh.seek(info.header_offset)  # the member's local header: its name and extra field, then the .npy
            name_len, extra_len = struct.unpack("<HH", fh.read(30)[26:30])
            fh.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(fh)
            if version not in ((1, 0), (2, 0)):
                return None
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(fh)
            if fortran or dtype.hasobject:
                return None
            key = info.filename[:-4]
            out[key] = np.memmap(path, dtype, "r", fh.tell(), shape) if int(np.prod(shape)) else np.zeros(shape, dtype)
    return out


def npz_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """An ``.npz`` file's arrays, memory-mapped where :func:`npz_mapped` can, else read whole."""
    mapped = npz_mapped(path)
    if mapped is not None:
        return mapped
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def file_view(a) -> tuple | None:
    """``(path, offset, dtype, shape)`` where ``a`` is a C-contiguous range of a file mapped
    read-only (:func:`npz_mapped`; ``np.asarray`` of a member, a slice of rows), else None:
    what :func:`remap` maps again in another process."""
    if not isinstance(a, np.ndarray) or not a.flags.c_contiguous or not a.size:
        return None
    base = a  # the array np.memmap made: the one whose base is the mmap itself (a slice of a
    while isinstance(base.base, np.ndarray):  # memmap is a memmap too, with its parent's offset)
        base = base.base
    if not isinstance(base, np.memmap) or base.filename is None or base.mode != "r":
        return None
    start = a.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    if start < 0 or start + a.nbytes > base.nbytes:
        return None
    return base.filename, int(base.offset) + int(start), a.dtype.str, a.shape


def remap(path: str, offset: int, dtype: str, shape: tuple) -> np.ndarray:
    """The array :func:`file_view` described, mapped read-only."""
    return np.memmap(path, np.dtype(dtype), "r", offset, tuple(shape))


#: bytes copied at a time from a mapped array's file (:func:`savez`)
CHUNK = 4 << 20


def savez(file, **arrays) -> None:
    """``np.savez(file, **arrays)``, byte for byte, without a copy of a whole array: an array
    which is a range of a file mapped read-only (:func:`file_view`) is copied from that file a
    chunk at a time instead of through its mapping (a process that writes a model whose
    factors are mapped from another file, the state a Ray fit's workers wrote, reads no page
    of them into its own memory); a C-contiguous array is written from its own memory, and
    a one-dimensional one that is not (a row of zeros made by ``np.broadcast_to``) a chunk
    at a time."""
    import zipfile

    fmt = np.lib.format
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        for key, val in arrays.items():
            val = np.asanyarray(val)
            view = file_view(val)
            with z.open(key + ".npy", "w", force_zip64=True) as out:  # (as np.savez: gh-10776)
                if view is None and (val.dtype.hasobject or not (val.flags.c_contiguous or val.ndim == 1)):
                    fmt.write_array(out, val, allow_pickle=False)
                    continue
                fmt.write_array_header_1_0(out, fmt.header_data_from_array_1_0(val))
                if view is None:
                    flat = val.reshape(-1)  # (a view: C-contiguous, or one dimension)
                    step = max(1, CHUNK // max(1, val.itemsize))
                    for a in range(0, flat.size, step):
                        out.write(np.ascontiguousarray(flat[a:a + step]).data)
                    continue
                path, offset, _, _ = view
                left = val.nbytes
                with open(path, "rb") as src:
                    src.seek(offset)
                    while left:
                        chunk = src.read(min(CHUNK, left))
                        if not chunk:
                            raise OSError(f"{path}: shorter than the array mapped from it")
                        out.write(chunk)
                        left -= len(chunk)
