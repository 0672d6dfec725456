"""Generate build/generated/unicode_tables.h: the code-point classes of the tokenizer's pre-tokenizer.

    python tools/gen_unicode_tables.py OUT.h [--stats]

The pre-tokenizer (csrc/bpe/pretokenize.cpp) is a hand-written scanner for the GPT-2 and cl100k split patterns.
Those patterns are defined by what the `regex` module matches, and the tests use `regex.findall` as the oracle,
so the classes are computed with the `regex` module itself (a build requirement); the scanner then agrees with the
oracle on \\p{L}, \\p{N} and \\s by construction, whatever Unicode version that `regex` release carries (it has its
own Unicode database, independent of Python's `unicodedata`).

Classes (one per code point, disjoint; checked below):
    OTHER 0   none of the others, i.e. [^\\s\\p{L}\\p{N}]
    LETTER 1  \\p{L}
    NUMBER 2  \\p{N}
    SPACE 3   \\s as the regex module defines it for str patterns: [\\t\\n\\v\\f\\r \\x85\\xa0\\u1680\\u2000-\\u200a
              \\u2028\\u2029\\u202f\\u205f\\u3000] (Unicode White_Space; not \\x1c-\\x1f, unlike str.isspace)

Layout: a two-level table. kStage1[cp >> SHIFT] is the index of a block of 2**SHIFT classes in kStage2; identical
blocks are stored once. Code points at or above kLimit are OTHER (no letters, numbers or spaces up there), so
kStage1 stops at the last block that holds one. Block 0 comes first in kStage2, so kStage2[cp] is the class of
any cp < 2**SHIFT (the ASCII fast path). With SHIFT = 7 this is about 30 KB, of which ordinary text touches a few
blocks; `--stats` prints the sizes for other shifts.

Also emitted: the code points that the case-insensitive contraction letters of cl100k ('(?i:[sdmt]|ll|ve|re))
match in the regex module (simple case folding: 's' also matches U+017F LATIN SMALL LETTER LONG S).

Deterministic: the output depends only on the regex module's version; it takes well under a second.
"""

import os
import sys

import regex

SHIFT = 7
N_CODE_POINTS = 0x110000
CLASSES = [("LETTER", 1, r"\p{L}+"), ("NUMBER", 2, r"\p{N}+"), ("SPACE", 3, r"\s+")]
CONTRACTION_LETTERS = "sdmtlver"
# The newest scripts of some Unicode versions: the newest one the regex module knows dates its Unicode database.
SCRIPT_AGES = [("14.0", "Vithkuqi"), ("15.0", "Kawi"), ("16.0", "Garay"), ("17.0", "Sidetic")]


def all_code_points():
    return "".join(map(chr, range(N_CODE_POINTS)))


def classify(text):
    """bytearray: the class of every code point."""
    cls = bytearray(N_CODE_POINTS)
    for _, value, pattern in CLASSES:
        for m in regex.finditer(pattern, text):
            a, b = m.span()
            if any(cls[a:b]):
                raise SystemExit(f"gen_unicode_tables: {pattern} overlaps another class at U+{a:04X}..U+{b - 1:04X}")
            cls[a:b] = bytes([value]) * (b - a)
    return cls


def folds(text):
    """{letter: sorted code points that (?i:letter) matches}."""
    return {c: sorted(m.start() for m in regex.finditer(r"(?i:%s)" % c, text)) for c in CONTRACTION_LETTERS}


def unicode_version():
    known = "unknown"
    for version, script in SCRIPT_AGES:
        try:
            regex.compile(r"\p{Script=%s}" % script)
        except regex.error:
            break
        known = version
    return known


def two_level(cls, shift):
    """(limit, stage1, stage2 blocks) with identical blocks shared and trailing all-OTHER blocks cut."""
    size = 1 << shift
    last = max(i for i in range(N_CODE_POINTS) if cls[i]) if any(cls) else 0
    limit = (last // size + 1) * size
    blocks, stage1 = {}, []
    for start in range(0, limit, size):
        stage1.append(blocks.setdefault(bytes(cls[start:start + size]), len(blocks)))
    return limit, stage1, list(blocks)


def c_array(ctype, name, values, per_line=32):
    lines = [", ".join(str(v) for v in values[i:i + per_line]) for i in range(0, len(values), per_line)]
    body = ",\n    ".join(lines)
    return f"inline constexpr {ctype} {name}[{len(values)}] = {{\n    {body}\n}};\n"


def render(cls, fold):
    limit, stage1, blocks = two_level(cls, SHIFT)
    assert stage1[0] == 0, "block 0 must come first (ASCII fast path)"
    index_type = "uint8_t" if len(blocks) <= 256 else "uint16_t"
    stage2 = [c for block in blocks for c in block]
    counts = {name: cls.count(value) for name, value, _ in CLASSES}
    out = [
        "// GENERATED FILE - do not edit. Made by tools/gen_unicode_tables.py (cllm) with the `regex` module",
        f"// {regex.__version__} (Unicode {unicode_version()} by the newest script it knows).",
        "// Code-point classes of the pre-tokenizer (csrc/bpe/pretokenize.cpp): "
        + ", ".join(f"{name} {counts[name]} code points" for name, _, _ in CLASSES) + ".",
        f"// Two-level table: {len(stage1)} x {index_type} + {len(blocks)} blocks x {1 << SHIFT} x uint8_t "
        f"= {len(stage1) * (1 if index_type == 'uint8_t' else 2) + len(stage2)} bytes.",
        "#pragma once",
        "",
        "#include <cstdint>",
        "",
        "namespace cllm_bpe {",
        "namespace unicode {",
        "",
        "enum CodePointClass : uint8_t { OTHER = 0, LETTER = 1, NUMBER = 2, SPACE = 3 };",
        "",
        f"inline constexpr int kShift = {SHIFT};",
        f"inline constexpr uint32_t kLimit = 0x{limit:X};  // code points >= kLimit are OTHER",
        "",
        c_array(index_type, "kStage1", stage1),
        c_array("uint8_t", "kStage2", stage2),
        "// The class of code point cp (cp < 0x110000; surrogates included, they are OTHER).",
        "inline CodePointClass class_of(uint32_t cp)",
        "{",
        "    if (cp >= kLimit) return OTHER;",
        "    uint32_t block = kStage1[cp >> kShift];",
        "    return static_cast<CodePointClass>(kStage2[(block << kShift) | (cp & ((1u << kShift) - 1))]);",
        "}",
        "",
        "// Code points that the regex module's (?i:x) matches, for the letters of cl100k's contractions.",
    ]
    for c in CONTRACTION_LETTERS:
        points = ", ".join(f"0x{p:X}" for p in fold[c])
        out.append(f"inline constexpr uint32_t kFold_{c}[{len(fold[c])}] = {{{points}}};")
    out += ["", "}  // namespace unicode", "}  // namespace cllm_bpe", ""]
    return "\n".join(out)


def stats(cls):
    for shift in range(4, 11):
        limit, stage1, blocks = two_level(cls, shift)
        s1 = len(stage1) * (1 if len(blocks) <= 256 else 2)
        size = len(blocks) * (1 << shift)
        print(f"shift {shift:2d}: {len(stage1):6d} stage-1 entries, {len(blocks):4d} blocks, "
              f"{s1 + size:7d} bytes (u8 classes), {s1 + size // 4:7d} (2-bit)")


def main(argv):
    if len(argv) not in (1, 2) or (len(argv) == 2 and argv[1] != "--stats"):
        raise SystemExit("usage: gen_unicode_tables.py OUT.h [--stats]")
    text = all_code_points()
    cls = classify(text)
    header = render(cls, folds(text))
    if len(argv) == 2:
        stats(cls)
    path = argv[0]
    try:  # leave an up-to-date header untouched, so that its timestamp does not force a rebuild
        with open(path, encoding="utf-8") as f:
            if f.read() == header:
                return
    except OSError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(header)
    os.replace(tmp, path)


if __name__ == "__main__":
    main(sys.argv[1:])
