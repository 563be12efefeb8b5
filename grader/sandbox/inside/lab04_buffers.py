"""The bulk data of one request: arrays in from the grader's sealed memfd, results out to another."""

from __future__ import annotations

import hashlib
import mmap
import os
from typing import Any

import numpy as np


class ResultsFull(Exception):
    """The results did not fit the memfd the grader sized."""


class Results:
    """Arrays and blobs written one after another into the grader's memfd; the reply lists them."""

    def __init__(self, fd: int, write: Any):
        self.fd = fd
        self.offset = 0
        self.manifest: list[dict] = []
        self._write = write

    def _put(self, data: memoryview) -> None:
        if self.fd < 0:
            raise ResultsFull
        while data:
            try:
                n = self._write(self.fd, data)
            except OSError:
                raise ResultsFull from None
            if n <= 0:
                raise ResultsFull
            data = data[n:]
            self.offset += n

    def add(self, array: np.ndarray) -> int:
        """Write a copy of ``array``; returns its index in the manifest."""
        plain = np.array(array, subok=False, order="C", copy=True)  # the base class: no overridden methods
        start = self.offset
        self._put(memoryview(plain).cast("B") if plain.size else memoryview(b""))
        self.manifest.append(
            {
                "dtype": plain.dtype.str,
                "shape": [int(n) for n in plain.shape],
                "offset": start,
                "nbytes": self.offset - start,
            }
        )
        return len(self.manifest) - 1

    def align(self, boundary: int) -> None:
        """Pad to a multiple of ``boundary`` bytes, so that arrays mapped from here are aligned."""
        pad = -self.offset % boundary
        if pad:
            self._put(memoryview(bytes(pad)))

    def add_bytes(self, data: bytes | memoryview) -> int:
        """Write raw bytes (listed as a uint8 array); returns their index in the manifest."""
        start = self.offset
        view = memoryview(data).cast("B")
        self._put(view)
        self.manifest.append({"dtype": "|u1", "shape": [len(view)], "offset": start, "nbytes": len(view)})
        return len(self.manifest) - 1

    def close(self) -> None:
        """Close the memfd (the grader keeps its own descriptor of it)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Inputs:
    """Arrays the grader sent in a sealed memfd, as listed in the request."""

    def __init__(self, fd: int, manifest: list):
        self.fd = fd
        self.manifest = manifest
        self.map = None
        # Map only what the manifest uses: a results memfd passed on is sized for the worst case (three
        # copies of the weights), and mapping all of it costs address space and commit charge.
        self.end = max((int(e["offset"]) + int(e["nbytes"]) for e in manifest), default=0)
        if fd >= 0 and self.end > 0:
            self.map = mmap.mmap(fd, self.end, prot=mmap.PROT_READ)

    def array(self, index: int) -> np.ndarray:
        """Input array ``index``, as a private, writable copy."""
        entry = self.manifest[index]
        count = int(np.prod(entry["shape"], dtype=np.int64))
        flat = np.frombuffer(self.map, dtype=np.dtype(entry["dtype"]), count=count, offset=entry["offset"])
        return flat.reshape(entry["shape"]).copy()  # a private, writable copy

    def pickled(self) -> tuple[mmap.mmap, memoryview, list[memoryview]]:
        """A private, writable (copy-on-write) mapping of a pickled model: the stream and its buffers."""
        if self.map is not None:  # one mapping of a model is enough address space
            self.map.close()
            self.map = None
        mapping = mmap.mmap(self.fd, self.end, access=mmap.ACCESS_COPY)
        views = [memoryview(mapping)[e["offset"] : e["offset"] + e["nbytes"]] for e in self.manifest]
        return mapping, views[0], views[1:]

    def close(self) -> None:
        """Unmap and close the memfd."""
        if self.map is not None:
            self.map.close()
        if self.fd >= 0:
            os.close(self.fd)


def digest(array: np.ndarray, sha256: Any = hashlib.sha256) -> str:
    """sha256 of an array's dtype, shape and C-ordered bytes (the grader computes the same)."""
    plain = np.ascontiguousarray(array)
    h = sha256(f"{plain.dtype.str}{list(plain.shape)}".encode())
    h.update(memoryview(plain).cast("B") if plain.size else b"")
    return h.hexdigest()


def strided(array: np.ndarray, count: int = 4096) -> np.ndarray:
    """At most ``count`` evenly spaced entries: a cheap fingerprint of a large array."""
    flat = array.reshape(-1)
    return flat[:: max(1, flat.size // count)][:count]
