"""Reading the corpus: UTF-8 lines by byte offset, in pieces of bounded size, and the blocks
preprocessing cuts the file into.

This is the only module that opens the corpus file. The processors read a block through
`Corpus.lines` and look up random lines with `Corpus.lines_after`; the pipeline cuts the file with
`Corpus.block_starts`. Byte offsets, not line numbers, address everything, so a worker can start
anywhere and random draws can be seeded by position (see pipeline.py).

Memory does not grow with the length of a line: a line longer than `piece_bytes` (1 MiB) comes as
several `Piece`s, cut just after the last whitespace before each piece_bytes boundary (at a character
boundary if there is none). Tokenizers that split words at whitespace (bert, char, space) therefore give
the same tokens for the pieces, one after the other, as for the whole line. Nothing here ever reads more
than piece_bytes at once.
"""
import os
from typing import NamedTuple

from tencentpretrain.errors import UserError

PIECE_BYTES = 1 << 20
_SCAN = 1 << 20  # bytes read at a time when looking for a newline


class Piece(NamedTuple):
    """A line, or a piece of a long one: bytes [start, end) of the corpus, decoded, newline removed.
    `line_end`: the piece ends its line (always true for a line shorter than piece_bytes)."""
    start: int
    end: int
    text: str
    line_end: bool


class Corpus:
    """Byte-addressed reads of a UTF-8 text file; invalid bytes raise a UserError naming the line."""

    def __init__(self, path, piece_bytes=PIECE_BYTES):
        self.path = path
        self.size = os.path.getsize(path)
        self.piece_bytes = piece_bytes

    def lines(self, start, end=None):
        """Yield a `Piece` for each line that starts in [start, end), several for a long line.
        `start` must be a line start."""
        end = self.size if end is None else end
        with open(self.path, "rb") as f:
            f.seek(start)
            pos = start
            while pos < end:
                line_start = pos
                for piece in self._pieces(f, pos):
                    yield piece
                    pos = piece.end
                if pos == line_start:
                    return

    def _pieces(self, f, pos):
        """The pieces of the line starting at `pos` (where `f` is), ending with one whose line_end is true."""
        size, line_start = self.piece_bytes, pos
        buf = f.readline(size)
        while buf:
            if buf.endswith(b"\n") or len(buf) < size:  # the rest of the line fits
                yield Piece(pos, pos + len(buf), self._decode(buf, pos, line_start, True), True)
                return
            cut = _cut(buf)
            head, buf = buf[:cut], buf[cut:]
            buf += f.readline(size - len(buf))
            yield Piece(pos, pos + cut, self._decode(head, pos, line_start, not buf), not buf)
            pos += cut

    def lines_after(self, offset):
        """Lines from the first line start at or after `offset` to the end of the file."""
        return self.lines(self.next_line_start(offset))

    def next_line_start(self, offset):
        if offset <= 0:
            return 0
        with open(self.path, "rb") as f:
            return _after_newline(f, offset - 1, self.size)

    def block_starts(self, block_bytes, by_document):
        """Start offsets of the blocks: the first line start at or after each multiple of block_bytes
        (for by_document: the first line after a blank line). They depend only on the file."""
        starts = [0]
        with open(self.path, "rb") as f:
            k = 1
            while k * block_bytes < self.size:
                pos = self.next_line_start(k * block_bytes)
                if by_document:
                    pos = self._after_blank_line(f, pos)
                if pos >= self.size:
                    break
                if pos > starts[-1]:
                    starts.append(pos)
                k = max(k + 1, pos // block_bytes + 1)
        return starts

    def _after_blank_line(self, f, pos):
        """The line start after the first blank line at or after line start `pos` (or the file size).
        A blank line is one piece long, as the processors see it."""
        while pos < self.size:
            f.seek(pos)
            raw = f.readline(self.piece_bytes)
            if raw.endswith(b"\n") or len(raw) < self.piece_bytes:
                pos += len(raw)
                if not raw.strip():
                    return pos
            else:
                pos = _after_newline(f, pos, self.size)
        return pos

    def _decode(self, raw, pos, line_start, line_end):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            column = pos - line_start + err.start + 1
            raise UserError(f"{self.path}, line {self.line_number(line_start)}: not valid UTF-8 (byte "
                            f"0x{raw[err.start]:02x} at column {column}); convert the corpus to UTF-8, "
                            f"e.g. iconv -f latin1 -t utf-8") from None
        if pos == 0 and text.startswith("\ufeff"):  # byte order mark
            text = text[1:]
        return text.rstrip("\r\n") if line_end else text

    def line_number(self, pos):
        """1-based number of the line starting at byte `pos` (only for error messages)."""
        count, done = 0, 0
        with open(self.path, "rb") as f:
            while done < pos:
                chunk = f.read(min(_SCAN, pos - done))
                count += chunk.count(b"\n")
                done += len(chunk)
        return count + 1


def _cut(buf):
    """Where to end a piece of a long line held in `buf`: after its last space or tab, else before its
    last character (which may continue past `buf`); never 0."""
    cut = max(buf.rfind(b" "), buf.rfind(b"\t")) + 1
    if cut == 0:
        cut = len(buf) - 1
        while cut > 0 and buf[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte
            cut -= 1
    return cut or len(buf)


def _after_newline(f, offset, size):
    """Offset just after the first newline at or after `offset` (or `size`), read in bounded chunks."""
    f.seek(offset)
    while True:
        chunk = f.read(_SCAN)
        if not chunk:
            return size
        i = chunk.find(b"\n")
        if i >= 0:
            return offset + i + 1
        offset += len(chunk)
