"""Tokenizers: BERT (basic + WordPiece, Hugging Face compatible), char, space, and SentencePiece.

Every tokenizer turns text into vocab tokens (`tokenize`), optionally with each token's
character span in the ORIGINAL text (`tokenize_with_offsets`, used to map SQuAD answers),
and exposes `pad_id unk_id cls_id sep_id mask_id vocab_size`.

    tok = build_tokenizer("bert", vocab_path=None, do_lower_case=True)   # shipped uncased vocab
    tok = build_tokenizer(spm_model_path="sp.model")                     # SentencePiece pieces
"""
import functools
import re
import unicodedata
import warnings

from tencentpretrain import resources
from tencentpretrain.data.vocab import SPECIAL_ROLES, Vocab, special_tokens
from tencentpretrain.errors import UserError
from tencentpretrain.registry import TOKENIZERS


def build_tokenizer(name="bert", vocab_path=None, spm_model_path=None, do_lower_case=True):
    """The tokenizer a CLI asked for. `spm_model_path` wins over `name`: its pieces and vocab are used."""
    if spm_model_path:
        return SentencePieceTokenizer(spm_model_path, do_lower_case=do_lower_case)
    try:
        cls = TOKENIZERS.get(name)
    except KeyError as err:
        raise UserError(err.args[0]) from None
    return cls(Vocab.load(vocab_path or resources.default_vocab_path()), do_lower_case=do_lower_case)


class Tokenizer:
    """Vocab, special ids and id conversion; subclasses implement `tokenize_with_offsets`."""

    def __init__(self, vocab, do_lower_case=True, special_ids=None):
        self.vocab = vocab
        self.do_lower_case = do_lower_case
        names = special_tokens()
        if special_ids is None:
            special_ids = {}
            for role in SPECIAL_ROLES:
                if names[role] not in vocab:
                    raise UserError(
                        f"wrong vocab: {vocab.path} has no {role} token {names[role]!r} "
                        f"(required by {resources.special_tokens_map_path()}); use a vocab that lists "
                        f"{', '.join(names[r] for r in SPECIAL_ROLES)}, e.g. models/google_uncased_en_vocab.txt")
                special_ids[role] = vocab.w2i[names[role]]
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (special_ids[r] for r in SPECIAL_ROLES)
        self.unk_token = vocab.i2w[self.unk_id]
        self.special_tokens = {r: vocab.i2w[special_ids[r]] for r in SPECIAL_ROLES}

    @property
    def vocab_size(self):
        return len(self.vocab)

    def tokenize(self, text):
        return [tok for tok, _, _ in self.tokenize_with_offsets(text)]

    def tokenize_with_offsets(self, text):
        raise NotImplementedError

    def convert_tokens_to_ids(self, tokens):
        w2i, unk = self.vocab.w2i, self.unk_id
        return [w2i.get(t, unk) for t in tokens]

    def convert_ids_to_tokens(self, ids):
        i2w = self.vocab.i2w
        try:
            return [i2w[int(i)] for i in ids]
        except IndexError:
            bad = next(int(i) for i in ids if not 0 <= int(i) < len(i2w))
            raise UserError(f"token id {bad} is outside the vocab ({len(i2w)} tokens, {self.vocab.path}); "
                            f"the model and the vocab do not match") from None


def _specials_pattern(tokens):
    """Regex matching any special token written verbatim in the text (longest first); one group, so
    `split` keeps the tokens."""
    return re.compile("(" + "|".join(map(re.escape, sorted(set(tokens), key=len, reverse=True))) + ")")


# ---------------------------------------------------------------- BERT basic tokenizer + WordPiece

_DROP, _SPACE, _CJK, _PUNCT, _WORD = range(5)


def _is_cjk(cp):
    # CJK Unified Ideographs blocks, as in Google's BERT (not Hangul, Hiragana, Katakana).
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


@functools.lru_cache(maxsize=1 << 16)
def _char_class(c):
    """BERT's character classes: dropped (control, NUL, U+FFFD), space, CJK, punctuation, word."""
    if c in " \t\n\r":
        return _SPACE
    cp = ord(c)
    cat = unicodedata.category(c)
    if cat[0] == "C" or cp == 0xFFFD:
        return _DROP
    if cat == "Zs" or c.isspace():  # Zs: BERT's whitespace; other isspace chars (U+2028): its str.split
        return _SPACE
    if _is_cjk(cp):
        return _CJK
    # All ASCII non-alphanumerics count as punctuation (e.g. "$", "^", "`"), as in BERT.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or cat[0] == "P":
        return _PUNCT
    return _WORD


# ASCII fast path: controls deleted, \t\n\r -> space; then a word is a run of [A-Za-z0-9].
_ASCII_CLEAN = {i: None for i in range(128) if _char_class(chr(i)) == _DROP}
_ASCII_CLEAN.update({ord("\t"): " ", ord("\n"): " ", ord("\r"): " "})
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9 ]")


@TOKENIZERS.register("bert")
class BertTokenizer(Tokenizer):
    """Google BERT / Hugging Face BertTokenizer: clean text, split CJK chars, whitespace and
    punctuation; with do_lower_case also lower-case and strip accents (NFD, drop Mn); then greedy
    longest-match-first WordPiece ("##" continuations). Special tokens written in the text
    ("[SEP]", exact case) stay whole, as in Hugging Face."""

    max_input_chars_per_word = 100
    cache_size = 1 << 16  # distinct words whose WordPiece split is remembered (LRU)

    def __init__(self, vocab, do_lower_case=True):
        super().__init__(vocab, do_lower_case)
        self._max_piece_len = max(map(len, vocab.w2i), default=1)
        self._wordpiece = functools.lru_cache(maxsize=self.cache_size)(self._wordpiece_uncached)
        self._specials_re = _specials_pattern(self.special_tokens.values())

    # Picklable (multiprocessing preprocess workers): the cache is dropped and rebuilt.
    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_wordpiece"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._wordpiece = functools.lru_cache(maxsize=self.cache_size)(self._wordpiece_uncached)

    def tokenize(self, text):
        if text.isascii() and not self._specials_re.search(text):  # the common case, done with C loops
            text = text.translate(_ASCII_CLEAN)
            if self.do_lower_case:
                text = text.lower()
            wordpiece = self._wordpiece
            return [piece for word in _ASCII_WORD.findall(text) for piece in wordpiece(word)]
        return super().tokenize(text)

    def tokenize_with_offsets(self, text):
        out, pos = [], 0
        for m in self._specials_re.finditer(text):
            self._tokenize_span(text, pos, m.start(), out)
            out.append((m.group(), m.start(), m.end()))
            pos = m.end()
        self._tokenize_span(text, pos, len(text), out)
        return out

    def _tokenize_span(self, text, start, end, out):
        for word, spans in self._basic_words(text, start, end):
            pieces = self._wordpiece(word)
            if pieces == (self.unk_token,):
                out.append((self.unk_token, spans[0][0], spans[-1][1]))
                continue
            i = 0
            for piece in pieces:
                n = len(piece) - (2 if i else 0)  # continuation pieces carry "##"
                out.append((piece, spans[i][0], spans[i + n - 1][1]))
                i += n

    def _basic_words(self, text, start, end):
        """BERT's basic tokenization of text[start:end] -> [(word, [(orig_start, orig_end) per char])]."""
        raw, chars, spans = [], [], []  # whitespace/CJK-delimited words before normalization
        for i in range(start, end):
            c = text[i]
            kind = _char_class(c)
            if kind == _WORD or kind == _PUNCT:
                chars.append(c)
                spans.append((i, i + 1))
            elif kind == _DROP:
                if spans:  # a removed control char belongs to the word it sits in
                    spans[-1] = (spans[-1][0], i + 1)
            else:
                if chars:
                    raw.append(("".join(chars), spans))
                    chars, spans = [], []
                if kind == _CJK:
                    raw.append((c, [(i, i + 1)]))
        if chars:
            raw.append(("".join(chars), spans))

        words = []
        for word, spans in raw:
            if word.isascii() and word.isalnum():  # nothing to normalize or split
                words.append((word.lower() if self.do_lower_case else word, spans))
                continue
            pairs = zip(word, spans)
            if self.do_lower_case:
                lowered = word.lower()  # whole word, so a final sigma lowers as in BERT
                if len(lowered) == len(word):
                    pairs = zip(lowered, spans)
                else:  # e.g. "İ" -> "i̇": each produced char keeps its source span
                    pairs = [(lc, span) for c, span in pairs for lc in c.lower()]
                if not lowered.isascii():
                    pairs = _strip_accents(pairs)
            _split_punctuation(pairs, words)
        return words

    def _wordpiece_uncached(self, word):
        if len(word) > self.max_input_chars_per_word:
            return (self.unk_token,)
        w2i, pieces, start = self.vocab.w2i, [], 0
        while start < len(word):
            end = min(len(word), start + self._max_piece_len)
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in w2i:
                    break
                end -= 1
            else:
                return (self.unk_token,)
            pieces.append(piece)
            start = end
        return tuple(pieces)


def _strip_accents(pairs):
    """NFD each char and drop combining marks (Mn); a dropped mark widens the span before it."""
    out = []
    for c, span in pairs:
        for d in unicodedata.normalize("NFD", c) if not c.isascii() else c:
            if unicodedata.category(d) == "Mn":
                if out:
                    prev, (s, e) = out[-1]
                    out[-1] = (prev, (s, max(e, span[1])))
            else:
                out.append((d, span))
    return out


def _split_punctuation(pairs, words):
    """Append the words of one normalized chunk: every punctuation char is a word of its own."""
    chars, spans = [], []
    for c, span in pairs:
        kind = _char_class(c)
        if kind == _PUNCT or kind == _SPACE or kind == _CJK:
            if chars:
                words.append(("".join(chars), spans))
                chars, spans = [], []
            if kind != _SPACE:
                words.append((c, [span]))
        else:
            chars.append(c)
            spans.append(span)
    if chars:
        words.append(("".join(chars), spans))


# ---------------------------------------------------------------- char and space tokenizers

@TOKENIZERS.register("char")
class CharTokenizer(Tokenizer):
    """Every non-whitespace character is a token (lower-cased with do_lower_case); unknown ones -> [UNK]."""

    def tokenize_with_offsets(self, text):
        w2i, unk, lower = self.vocab.w2i, self.unk_token, self.do_lower_case
        out = []
        for i, c in enumerate(text):
            if not c.isspace():
                t = c.lower() if lower else c
                out.append((t if t in w2i else unk, i, i + 1))
        return out


@TOKENIZERS.register("space")
class SpaceTokenizer(Tokenizer):
    """Whitespace-separated words are tokens (lower-cased with do_lower_case); unknown ones -> [UNK]."""

    def tokenize_with_offsets(self, text):
        w2i, unk, lower = self.vocab.w2i, self.unk_token, self.do_lower_case
        out = []
        for m in re.finditer(r"\S+", text):
            t = m.group().lower() if lower else m.group()
            out.append((t if t in w2i else unk, m.start(), m.end()))
        return out


# ---------------------------------------------------------------- SentencePiece

# Special tokens of an spm model: the BERT names from special_tokens_map.json first, then the usual
# spm spellings, then the model's own pad/bos/eos/unk ids. A role still missing falls back to the
# unk id with a warning (train the model with --user_defined_symbols=[CLS],[SEP],[MASK] to avoid it).
_SPM_ALIASES = {"pad": ("<pad>",), "unk": ("<unk>",), "cls": ("<cls>",), "sep": ("<sep>",), "mask": ("<mask>",)}
_SPM_BUILTIN = {"pad": "pad_id", "unk": "unk_id", "cls": "bos_id", "sep": "eos_id"}


class SentencePieceTokenizer(Tokenizer):
    """Pieces of a SentencePiece model; the vocab is the model's piece list (any --vocab_path is unused).
    With do_lower_case the text is lower-cased before encoding."""

    def __init__(self, spm_model_path, do_lower_case=True):
        import sentencepiece

        path = resources.resolve(spm_model_path)
        self.sp = sentencepiece.SentencePieceProcessor()
        try:
            self.sp.load(path)
        except (OSError, RuntimeError) as err:
            raise UserError(f"cannot load SentencePiece model {path}: {err}") from None
        vocab = Vocab([self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())], path=path)
        names, ids, missing = special_tokens(), {}, []
        for role in SPECIAL_ROLES:
            for piece in (names[role],) + _SPM_ALIASES[role]:
                if piece in vocab:
                    ids[role] = vocab.w2i[piece]
                    break
            else:
                builtin = getattr(self.sp, _SPM_BUILTIN[role])() if role in _SPM_BUILTIN else -1
                if builtin >= 0:
                    ids[role] = builtin
                else:
                    missing.append(role)
        for role in missing:
            ids[role] = ids["unk"]
        if missing:
            warnings.warn(f"SentencePiece model {path} has no piece for {', '.join(missing)}; using the unk id "
                          f"instead (train it with --user_defined_symbols=[CLS],[SEP],[MASK])", stacklevel=2)
        super().__init__(vocab, do_lower_case, special_ids=ids)
        self._specials_re = _specials_pattern(self.special_tokens.values())

    def tokenize(self, text):
        return self.sp.encode(self._lower(text), out_type=str)

    def _lower(self, text):
        """Lower-case with do_lower_case, except special tokens written in the text ("[MASK]")."""
        if not self.do_lower_case:
            return text
        parts = self._specials_re.split(text)
        return "".join(p if k % 2 else p.lower() for k, p in enumerate(parts))

    def tokenize_with_offsets(self, text):
        """Pieces with spans found by walking the text: each char cluster (a base char and its combining
        marks) is NFKC-normalized as spm's default normalizer does; spaces are skipped."""
        protected = {m.start(): m.end() for m in self._specials_re.finditer(text)} if self.do_lower_case else {}
        stream = []  # (normalized char, orig_start, orig_end)
        i, n = 0, len(text)
        while i < n:
            if i in protected:
                stream.extend((c, i, protected[i]) for c in text[i:protected[i]])
                i = protected[i]
                continue
            if text[i].isspace():
                i += 1
                continue
            j = i + 1
            while j < n and unicodedata.combining(text[j]):
                j += 1
            cluster = text[i:j].lower() if self.do_lower_case else text[i:j]
            stream.extend((c, i, j) for c in unicodedata.normalize("NFKC", cluster) if not c.isspace())
            i = j
        out, pos = [], 0
        for piece in self.tokenize(text):
            k = len(piece.replace("\u2581", ""))
            if k == 0 or pos >= len(stream):  # a bare "▁" piece: an empty span where the next word starts
                at = stream[pos][1] if pos < len(stream) else n
                out.append((piece, at, at))
                continue
            last = stream[min(pos + k, len(stream)) - 1]
            out.append((piece, stream[pos][1], last[2]))
            pos += k
        return out
