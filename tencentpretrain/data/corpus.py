"""Reading the corpus: UTF-8 lines by byte offset, and the blocks preprocessing cuts the file into.

This is the only module that opens the corpus file. The processors read a block's lines through
`Corpus.lines` and look up random lines with `Corpus.lines_after`; the pipeline cuts the file with
`Corpus.block_starts`. Byte offsets, not line numbers, address everything, so a worker can start
anywhere and random draws can be seeded by position (see pipeline.py).
"""
import os

from tencentpretrain.errors import UserError


class Corpus:
    """Byte-addressed reads of a UTF-8 text file; invalid bytes raise a UserError naming the line."""

    def __init__(self, path):
        self.path = path
        self.size = os.path.getsize(path)

    def lines(self, start, end=None):
        """Yield (start, end, text) for each line that starts in [start, end); text has no newline.
        `start` must be a line start."""
        end = self.size if end is None else end
        with open(self.path, "rb") as f:
            f.seek(start)
            pos = start
            while pos < end:
                raw = f.readline()
                if not raw:
                    return
                yield pos, pos + len(raw), self._decode(raw, pos)
                pos += len(raw)

    def lines_after(self, offset):
        """Lines from the first line start at or after `offset` to the end of the file."""
        return self.lines(self.next_line_start(offset))

    def next_line_start(self, offset):
        if offset <= 0:
            return 0
        with open(self.path, "rb") as f:
            f.seek(offset - 1)
            return offset - 1 + len(f.readline())

    def block_starts(self, block_bytes, by_document):
        """Start offsets of the blocks: the first line start at or after each multiple of block_bytes
        (for by_document: the first line after a blank line). They depend only on the file."""
        starts = [0]
        with open(self.path, "rb") as f:
            k = 1
            while k * block_bytes < self.size:
                pos = self.next_line_start(k * block_bytes)
                if by_document:
                    f.seek(pos)
                    while pos < self.size:
                        raw = f.readline()
                        pos += len(raw)
                        if not raw.strip():
                            break
                if pos >= self.size:
                    break
                if pos > starts[-1]:
                    starts.append(pos)
                k = max(k + 1, pos // block_bytes + 1)
        return starts

    def _decode(self, raw, pos):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"{self.path}, line {self.line_number(pos)}: not valid UTF-8 (byte "
                            f"0x{raw[err.start]:02x} at column {err.start + 1}); convert the corpus to UTF-8, "
                            f"e.g. iconv -f latin1 -t utf-8") from None
        if pos == 0 and text.startswith("\ufeff"):  # byte order mark
            text = text[1:]
        return text.rstrip("\r\n")

    def line_number(self, pos):
        """1-based number of the line starting at byte `pos` (only for error messages)."""
        count, done = 0, 0
        with open(self.path, "rb") as f:
            while done < pos:
                chunk = f.read(min(1 << 22, pos - done))
                count += chunk.count(b"\n")
                done += len(chunk)
        return count + 1
