"""A strict multipart/form-data reader for bodies already in memory (the size limit read them).

Starlette's form parser decodes text fields that are not UTF-8 as Latin-1 without a word, and
spools files to disk; here every part stays bytes, a title that is not UTF-8 is an error naming
the byte, and a truncated or malformed body is refused with what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header


class MultipartError(ValueError):
    """A multipart body that cannot be read; the message says why."""


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str
    chunks: list[bytes] = field(default_factory=list)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    def text(self) -> str:
        """The part as UTF-8 text, or a MultipartError naming the first bad byte."""
        raw = self.data
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MultipartError(
                f"the field {self.name!r} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at "
                f"position {exc.start}); send text encoded in UTF-8"
            ) from None


def parse_multipart(body: bytes, content_type: str, *, max_parts: int = 8) -> dict[str, Part]:
    """{field name: part} of a multipart/form-data body; a repeated field is an error."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError(
            "the multipart/form-data Content-Type has no boundary parameter; let the HTTP client "
            "build the body (e.g. curl -F title=... -F image=@photo.jpg)"
        )
    parts: list[Part] = []
    headers: dict[str, str] = {}
    field_name: list[bytes] = []
    field_value: list[bytes] = []
    ended: list[bool] = []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field_name.append(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        field_value.append(data[start:end])

    def on_header_end() -> None:
        headers[b"".join(field_name).decode("latin-1").lower()] = b"".join(field_value).decode(
            "latin-1"
        )
        field_name.clear()
        field_value.clear()

    def on_headers_finished() -> None:
        parts.append(_new_part(headers, len(parts), max_parts))
        headers.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].chunks.append(data[start:end])

    def on_end() -> None:
        ended.append(True)

    callbacks = {
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
        "on_end": on_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise MultipartError(f"the multipart body is malformed: {exc}") from None
    if not ended:
        raise MultipartError(
            "the multipart body ends before its closing boundary (truncated upload?)"
        )
    return _by_name(parts)


def _new_part(headers: dict[str, str], index: int, max_parts: int) -> Part:
    if index >= max_parts:
        raise MultipartError(f"the body has more than {max_parts} parts; expected image and title")
    disposition, options = parse_options_header(headers.get("content-disposition", ""))
    name = options.get(b"name")
    if disposition != b"form-data" or name is None:
        raise MultipartError(
            f"part {index + 1} has no Content-Disposition: form-data; name=...; every part must "
            "name its field"
        )
    filename = options.get(b"filename")
    return Part(
        name=name.decode("utf-8", "replace"),
        filename=None if filename is None else filename.decode("utf-8", "replace"),
        content_type=headers.get("content-type", ""),
    )


def _by_name(parts: list[Part]) -> dict[str, Part]:
    out: dict[str, Part] = {}
    for part in parts:
        if part.name in out:
            raise MultipartError(f"the field {part.name!r} appears twice; send it once")
        out[part.name] = part
    return out
