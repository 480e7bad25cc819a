"""HTTP byte ranges (RFC 9110 §14) for video files: parse one ``Range`` header.

FastAPI-free so the rules are unit-testable on their own. Browsers ask for one
range at a time (``bytes=0-``, ``bytes=1234-``, ``bytes=-500``); a multi-range
request is answered with the whole file (the RFC lets a server ignore
``Range``), a malformed or unsatisfiable ``bytes`` range with 416.
"""

from dataclasses import dataclass


class RangeNotSatisfiable(ValueError):
    """The ``bytes`` range cannot be served from a file of ``size`` bytes."""

    def __init__(self, header: str, size: int) -> None:
        super().__init__(f"range {header!r} not satisfiable for {size} bytes")
        self.size = size


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def _int(text: str, header: str, size: int) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()):  # no signs, blanks or non-ASCII digits
        raise RangeNotSatisfiable(header, size)
    return int(text)


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range asked for, or None when the whole file should be sent.

    None for no header, another unit or several ranges; ``RangeNotSatisfiable``
    for a malformed spec, an inverted range, a start at or past the end, or any
    range of an empty file.
    """
    if header is None:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    if "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        raise RangeNotSatisfiable(header, size)
    if not first.strip():  # suffix range: the last N bytes
        suffix = _int(last, header, size)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header, size)
        return ByteRange(max(size - suffix, 0), size - 1)
    start = _int(first, header, size)
    end = _int(last, header, size) if last.strip() else size - 1
    if end < start or start >= size:
        raise RangeNotSatisfiable(header, size)
    return ByteRange(start, min(end, size - 1))
