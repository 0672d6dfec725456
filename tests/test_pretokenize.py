"""The pre-tokenizer (csrc/bpe/pretokenize.cpp) against its oracle, the `regex` module's findall.

For bytes, the oracle decodes with errors="surrogateescape" (an invalid byte becomes one lone surrogate) and
encodes each piece back the same way; `_bpe.pretokenize(data, pattern)` must give exactly those pieces.
CLLM_SLOW_TESTS=1 runs the whole standard library instead of a sample.
"""

import os
import random
import sysconfig
from pathlib import Path

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cllm._core import _bpe

PATTERNS = {
    # GPT-2's encoder.py
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    # tiktoken 0.14, tiktoken_ext/openai_public.py, cl100k_base()["pat_str"]
    "cl100k": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
}
COMPILED = {name: regex.compile(p) for name, p in PATTERNS.items()}
SLOW = os.environ.get("CLLM_SLOW_TESTS", "0") not in ("", "0")


def oracle(data: bytes, pattern: str) -> list:
    text = data.decode("utf-8", "surrogateescape")
    return [piece.encode("utf-8", "surrogateescape") for piece in COMPILED[pattern].findall(text)]


def check(data, pattern):
    if isinstance(data, str):
        data = data.encode("utf-8")
    got = _bpe.pretokenize(data, pattern)
    assert b"".join(got) == data
    want = oracle(data, pattern)
    if got != want:  # show where they part, not two long lists
        i = next(i for i, (a, b) in enumerate(zip(got + [None], want + [None])) if a != b)
        pytest.fail(f"{pattern}: piece {i} differs: got {got[max(0, i - 2):i + 3]} want {want[max(0, i - 2):i + 3]}")


@pytest.fixture(params=sorted(PATTERNS))
def pattern(request):
    return request.param


def test_tiktoken_pattern_is_the_one_implemented():
    tiktoken_ext = pytest.importorskip("tiktoken_ext.openai_public")
    source = Path(tiktoken_ext.__file__).read_text()
    assert PATTERNS["cl100k"] in source


def test_api():
    assert _bpe.pretokenize(b"") == []
    assert _bpe.pretokenize(b"a  b") == [b"a", b" ", b" b"]
    assert _bpe.pretokenize(b"a  b", pattern="cl100k") == [b"a", b" ", b" b"]
    assert _bpe.pretokenize(b"Hello world") == _bpe.pretokenize(b"Hello world", "gpt2")
    with pytest.raises(ValueError, match="o200k"):
        _bpe.pretokenize(b"x", "o200k")
    with pytest.raises(TypeError):
        _bpe.pretokenize("a str", "gpt2")


def test_known_splits():
    assert _bpe.pretokenize(b"I'm DON'T 's\n\n  x\ty", "gpt2") == [
        b"I", b"'m", b" DON", b"'", b"T", b" '", b"s", b"\n\n ", b" x", b"\t", b"y"]
    assert _bpe.pretokenize(b"I'm DON'T 's\n\n  x\ty 12345 (foo", "cl100k") == [
        b"I", b"'m", b" DON", b"'T", b" '", b"s", b"\n\n", b" ", b" x", b"\ty", b" ", b"123", b"45", b" (", b"foo"]


PROSE = [
    "Hello, world! This is a test.",
    "The quick brown fox jumps over the lazy dog... 3 times; or 42?",
    "   leading spaces, trailing spaces   ",
    "multiple  spaces   before    words, .  punctuation !  and newlines   \n  \n\n   x",
    "I'm sure you're right: we'll see, they've said, he'd go, it's Bob's.",
    "DON'T SHOUT! I'M HERE. 'S 'T 'RE 'VE 'M 'LL 'D 'Re 'vE 'lL 'sT 'x ''s '",
    "rock'n'roll o'clock y'all ma'am ' s' 's'",
    "\u017f 'ſ 'ſt 'ﬅ K'ſ",  # long s folds to s in (?i); the ligature does not (simple case folding)
    "it'ſ IT'ſT it'ſt a'ſll we'LL they'Ve you'rE I'M he'D don'T x'ﬅ",
    "tabs\tand\t\ttabs\t\n\tindented",
    "line one\r\nline two\r\n\r\n\r\n  line three\r\n",
    "trailing newline at the end\n",
    "ends with spaces and newlines  \n  \n  ",
    "\n",
    " ",
    "  ",
    "a",
    "'",
    "'s",
    "x = 1_000_000 + 0x1F & ~y  # comment\n",
]
CODE = '''\
import os


def main(argv):   \n\
\tif len(argv) < 2:\r\n\
\t\treturn {"error": 'usage: %s FILE' % argv[0]}  \n\
    for i, line in enumerate(open(argv[1]), start=1):
        print(f"{i:>4}: {line.rstrip()!r}")   # trailing spaces   \n\
    x = [a+b for a,b in zip(xs,ys)] ;; y = x[::-1]\t\t\n\
    return 0 if x else -1
'''
SCRIPTS = [
    "中文的维基百科，是维基百科协作计划的中文版本。2001年10月24日。",
    "日本語のテキスト、カタカナとひらがな。",
    "한국어 텍스트입니다.",
    "اللغة العربية هي أكثر اللغات تحدثاً ٠١٢٣٤٥٦٧٨٩ ومن أقدمها.",
    "हिन्दी विश्व की एक प्रमुख भाषा है। क्षत्रिय ज्ञान ०१२३",  # combining marks (virama, matras)
    "Русский язык — один из восточнославянских языков. Ёлка, ЁЛКА!",
    "Ελληνικά: Αλφάβητο, ΣΊΣΥΦΟΣ ς σ.",
    "עברית עם ניקוד: שָׁלוֹם",
    "ภาษาไทย เป็นภาษาที่มีระดับ",
    "e\u0301te\u0301 cafe\u0301 n\u0303 a\u20d7 \u0301 x\u0308\u0308",  # combining marks after letters and alone
    "Ｆｕｌｌｗｉｄｔｈ　１２３４５　ＡＢＣ",  # fullwidth letters and digits, ideographic space
    "Ⅻ ½ ¾ ² ³ ① ⑳ 𝟘𝟙𝟚 ١٢٣ ۴۵۶ ߀߁ ௧௨ ๑๒ ၁၂",  # numbers of many kinds (Nl, No, Nd)
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝐁𝐨𝐥𝐝 𐍈 𐌰𐌱 𠀀𠀁 𪜀",  # astral letters
]
EMOJI = [
    "I ❤️ emoji 😀😃😄 👍🏽👍🏿 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷🇩🇪 #️⃣ 1️⃣",
    "emoji-between-letters:a😀b 😀a a😀 ✅done ⚠️ warning",
    "🧑🏻‍💻 🫠 🫶🏼 ©® ™ ‼️",
]
SPACES_AND_CONTROLS = [
    "".join(chr(c) for c in range(0x00, 0x20)) + "\x7f" + "".join(chr(c) for c in range(0x80, 0xA0)),
    " ".join(chr(c) for c in range(0x00, 0x20)) + " \x7f " + " ".join(chr(c) for c in range(0x80, 0xA0)),
    "a".join(chr(c) for c in range(0x00, 0x20)) + "a\x7fa" + "a".join(chr(c) for c in range(0x80, 0xA0)),
    "x\x1cy\x1d z\x1e\x1f w\x85v \x85 u\xa0t \xa0 \xa0s\u2028r \u2028 \u2029q\u3000p \u3000\u3000o",
    "\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u200b\u202f\u205f\ufeffz",
    "\r\r\n\n\r \r\n \n\t\r\n\x0b\x0c\x85\u2028\u2029 x",
    "  \r\n  x  \n\t  y \n \n z\t\t\n",
    "a\x00b\x00\x00 c\x00",
]
INVALID = [
    b"\x80", b"\xff", b"\xfe\xff", b"abc\x80def", b"\x80abc", b"abc\xff",
    b"\xc3", b"a\xc3", b"\xc3a", b"\xe4\xb8", b"\xe4\xb8a", b"\xe4\xb8 \xe4", b"\xf0\x9f\x98", b"\xf0\x9f\x98a",
    b"\xc0\xaf", b"\xc1\xbf", b"\xc0\xb1", b"\xc1\x81", b"\xc0\xa0", b"\xe0\x80\xb1", b"\xf0\x80\x80\xb1",
    b"\xe0\x80\xaf", b"\xe0\x9f\xbf", b"\xf0\x80\x80\xaf", b"\xf0\x8f\xbf\xbf",
    b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\xa0\x80\xed\xb0\x80", b"\xed\x9f\xbf",  # surrogates; U+D7FF is fine
    b"\xf4\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80",
    b"\xef\xbf\xbf", b"\xef\xbb\xbfBOM", b"\xe2\x80\xa8", b"\xc2\x85x \xc2\xa0",
    b"it\x80s a \x80 test \xff\xfe with  \x80\x80  gaps\r\n\xff\r\n",
    b"'\x80 '\xc5\xbf '\xc5 \x80'\xff \x80'll",
    b" \x80a \x80\x80b \xc3\xa9\x80c .\x80\n\x80\r\n",
    "caf\u00e9 na\u00efve".encode("latin-1"),  # latin-1 bytes that are not UTF-8
    "中文 русский".encode("utf-16-le"),
    "中文 русский".encode("gb18030"),
    bytes(range(256)),
    bytes(range(255, -1, -1)),
]


@pytest.mark.parametrize("text", PROSE + [CODE] + SCRIPTS + EMOJI + SPACES_AND_CONTROLS)
def test_text(text, pattern):
    check(text, pattern)


@pytest.mark.parametrize("data", INVALID, ids=repr)
def test_invalid_utf8(data, pattern):
    # the contexts tell one invalid code point from several, and an overlong "1" or "A" from an invalid byte
    for context in (b"%s", b"a%sb", b" %s1", b"x'%s's", b"%s\n\n", b"1%s 2"):
        check(context.replace(b"%s", data), pattern)


def test_empty(pattern):
    assert _bpe.pretokenize(b"", pattern) == [] == oracle(b"", pattern)


def test_every_code_point(pattern):
    """Each code point in contexts that tell its class apart (letter, number, space, other), so that the
    generated tables agree with the installed regex module (a different Unicode version would show here)."""
    chars = (chr(cp) for cp in range(0x110000) if not 0xD800 <= cp < 0xE000)
    check("".join(f"a{c}1!a{c}! {c}'s{c}\n" for c in chars), pattern)


def test_surrogate_escapes_are_other():
    # lone surrogates from surrogateescape sit in [^\s\p{L}\p{N}], as invalid bytes do in the scanner
    assert regex.fullmatch(r"[^\s\p{L}\p{N}]+", "\udc80\udcff")


# Hypothesis: arbitrary text, weighted toward the characters the patterns care about.
SPECIAL = list(" \t\r\n\x0b\x0c\x85\xa0\u2028\u3000'sStTdDmMlLvVeErRſ019٣.,!?-_😀\u0301\u200d\x00\x1c")
CHARS = st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(SPECIAL))
TEXTS = st.text(CHARS, max_size=60)
BYTES = st.one_of(
    st.binary(max_size=60),
    st.lists(st.one_of(st.binary(max_size=3), TEXTS.map(lambda s: s.encode())), max_size=8).map(b"".join),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS, st.sampled_from(sorted(PATTERNS)))
def test_random_text(text, pattern):
    check(text, pattern)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BYTES, st.sampled_from(sorted(PATTERNS)))
def test_random_bytes(data, pattern):
    got = _bpe.pretokenize(data, pattern)
    assert b"".join(got) == data
    assert got == oracle(data, pattern)


def stdlib_files():
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
    if not SLOW:
        files = sorted(random.Random(0).sample(files, min(200, len(files))))
    return files


@pytest.mark.skipif(not Path(sysconfig.get_paths()["stdlib"]).is_dir(), reason="no stdlib sources")
def test_stdlib_sources(pattern):
    files = stdlib_files()
    assert files
    for path in files:
        data = path.read_bytes()
        got = _bpe.pretokenize(data, pattern)
        if got != oracle(data, pattern):
            check(data, pattern)  # fails with the first differing piece
            pytest.fail(f"{path}: differs from the oracle")


def test_threads(pattern):
    """Many threads at once (the GIL is released while scanning) give the single-thread result."""
    from concurrent.futures import ThreadPoolExecutor

    docs = [(CODE * 50 + SCRIPTS[i % len(SCRIPTS)] * 50).encode() for i in range(32)]
    want = [_bpe.pretokenize(d, pattern) for d in docs]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda d: _bpe.pretokenize(d, pattern), docs)) == want
