// Pre-tokenizer: a UTF-8 scanner that splits text as regex.findall does with the GPT-2 or cl100k pattern
// (the patterns and the contract are in pretokenize.hpp).
//
// How the regex engine reads these patterns, and so how the scanner does: at each position the alternatives are
// tried in order and the first that matches wins; every code point is matched by some alternative, so the
// pieces cover the text. Letter, number and "other" ([^\s\p{L}\p{N}]) runs are greedy, and nothing follows them
// inside their alternative, so possessive or not they take the whole run. The whitespace alternatives are the
// only ones where backtracking shows:
//     \s+(?!\S)   a run of whitespace that ends the text is taken whole; one followed by a non-space gives its
//                 last code point back to the next piece ("a  b" -> "a", " ", " b"), and a single one fails
//     \s*[\r\n]   (cl100k) the run up to and including its last \r or \n
//     \s++$       (cl100k) a run that ends the text ($ could also match before a final "\n", but \s++ would have
//                 taken that "\n", so here it only matches at the end)
#include "pretokenize.hpp"

#include <cstdint>

#include "unicode_tables.h"

namespace cllm_bpe {

bool parse_pattern(const std::string &name, Pattern &out)
{
    if (name == "gpt2") {
        out = Pattern::GPT2;
        return true;
    }
    if (name == "cl100k") {
        out = Pattern::CL100K;
        return true;
    }
    return false;
}

namespace {

using unicode::CodePointClass;
using unicode::LETTER;
using unicode::NUMBER;
using unicode::OTHER;
using unicode::SPACE;

struct CodePoint {
    uint32_t cp;  // an invalid byte b reads as 0xDC00 + b, the lone surrogate that surrogateescape makes of it
    uint32_t len;  // bytes
    CodePointClass cls;
};

inline bool continuation(uint8_t b) { return (b & 0xC0) == 0x80; }

template <size_t N> inline bool one_of(const uint32_t (&set)[N], uint32_t cp)
{
    for (uint32_t c : set)
        if (c == cp) return true;
    return false;
}

// The text as code points, read on demand. Strict UTF-8 as Python's decoder reads it: no overlong forms, no
// encoded surrogates, nothing above U+10FFFF; any other byte is a code point of its own (class OTHER). Python
// rejects the maximal invalid prefix of a sequence at once, but each of its bytes gets its own surrogate, and
// none of them (a lead byte, then continuation bytes) could start a valid sequence, so byte by byte is the same.
class Text {
public:
    Text(std::string_view text) : s_(reinterpret_cast<const uint8_t *>(text.data())), n_(text.size()) {}

    size_t size() const { return n_; }
    uint8_t byte(size_t pos) const { return s_[pos]; }

    // The code point at pos < size().
    CodePoint at(size_t pos) const
    {
        uint32_t b0 = s_[pos];
        if (b0 < 0x80) return {b0, 1, CodePointClass(unicode::kStage2[b0])};
        size_t left = n_ - pos;
        const uint8_t *p = s_ + pos;
        uint32_t cp, len;
        if (b0 >= 0xC2 && b0 <= 0xDF) {
            if (left < 2 || !continuation(p[1])) return invalid(b0);
            cp = ((b0 & 0x1F) << 6) | (p[1] & 0x3F);
            len = 2;
        } else if (b0 >= 0xE0 && b0 <= 0xEF) {
            uint8_t lo = b0 == 0xE0 ? 0xA0 : 0x80, hi = b0 == 0xED ? 0x9F : 0xBF;  // no overlongs, no surrogates
            if (left < 3 || p[1] < lo || p[1] > hi || !continuation(p[2])) return invalid(b0);
            cp = ((b0 & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F);
            len = 3;
        } else if (b0 >= 0xF0 && b0 <= 0xF4) {
            uint8_t lo = b0 == 0xF0 ? 0x90 : 0x80, hi = b0 == 0xF4 ? 0x8F : 0xBF;  // no overlongs, <= U+10FFFF
            if (left < 4 || p[1] < lo || p[1] > hi || !continuation(p[2]) || !continuation(p[3])) return invalid(b0);
            cp = ((b0 & 0x07) << 18) | ((p[1] & 0x3F) << 12) | ((p[2] & 0x3F) << 6) | (p[3] & 0x3F);
            len = 4;
        } else {
            return invalid(b0);
        }
        return {cp, len, unicode::class_of(cp)};
    }

    // The end of the run of code points of class cls that starts at pos.
    size_t run(size_t pos, CodePointClass cls) const
    {
        while (pos < n_) {
            uint8_t b = s_[pos];
            if (b < 0x80) {
                if (unicode::kStage2[b] != cls) break;
                ++pos;
                continue;
            }
            CodePoint c = at(pos);
            if (c.cls != cls) break;
            pos += c.len;
        }
        return pos;
    }

    // The whitespace run that starts at pos: its end, the start of its last code point, and the end of its last
    // \r or \n (pos if none).
    struct Space {
        size_t end, last, after_newline;
    };
    Space space_run(size_t pos) const
    {
        Space r{pos, pos, pos};
        while (r.end < n_) {
            CodePoint c = at(r.end);
            if (c.cls != SPACE) break;
            r.last = r.end;
            r.end += c.len;
            if (c.cp == '\r' || c.cp == '\n') r.after_newline = r.end;
        }
        return r;
    }

private:
    static CodePoint invalid(uint32_t b) { return {0xDC00 + b, 1, OTHER}; }

    const uint8_t *s_;
    size_t n_;
};

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t gpt2_piece(const Text &t, size_t pos)
{
    size_t n = t.size();
    if (t.byte(pos) == '\'' && pos + 1 < n) {  // contractions: ASCII, case-sensitive
        uint8_t c1 = t.byte(pos + 1);
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return pos + 2;
        if (pos + 2 < n) {
            uint8_t c2 = t.byte(pos + 2);
            if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return pos + 3;
        }
    }
    CodePoint c = t.at(pos);
    size_t start = pos;
    if (c.cp == ' ' && pos + 1 < n) {  // " ?" before a letter, number or other run
        CodePoint d = t.at(pos + 1);
        if (d.cls != SPACE) {
            start = pos + 1;
            c = d;
        }
    }
    if (c.cls != SPACE) return t.run(start + c.len, c.cls);
    Text::Space s = t.space_run(pos);
    if (s.end == n || s.last == pos) return s.end;  // \s+(?!\S) at the end of the text, else \s+ of one
    return s.last;                                  // \s+(?!\S) gives the last one back
}

// '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s
size_t cl100k_piece(const Text &t, size_t pos)
{
    namespace u = unicode;
    size_t n = t.size();
    if (t.byte(pos) == '\'' && pos + 1 < n) {  // contractions, case-insensitive as the regex module folds case
        CodePoint c1 = t.at(pos + 1);
        size_t after1 = pos + 1 + c1.len;
        if (one_of(u::kFold_s, c1.cp) || one_of(u::kFold_d, c1.cp) || one_of(u::kFold_m, c1.cp) ||
            one_of(u::kFold_t, c1.cp))
            return after1;
        if (after1 < n) {
            CodePoint c2 = t.at(after1);
            if ((one_of(u::kFold_l, c1.cp) && one_of(u::kFold_l, c2.cp)) ||
                ((one_of(u::kFold_v, c1.cp) || one_of(u::kFold_r, c1.cp)) && one_of(u::kFold_e, c2.cp)))
                return after1 + c2.len;
        }
    }
    CodePoint c = t.at(pos);
    size_t next = pos + c.len;
    if (c.cls == LETTER) return t.run(next, LETTER);
    if (c.cls == NUMBER) {  // \p{N}{1,3}+
        for (int k = 0; k < 2 && next < n; ++k) {
            CodePoint d = t.at(next);
            if (d.cls != NUMBER) break;
            next += d.len;
        }
        return next;
    }
    CodePoint d{0, 0, SPACE};  // the code point after c (SPACE stands in for "none": it starts no piece with c)
    if (next < n) d = t.at(next);
    if (d.cls == LETTER && c.cp != '\r' && c.cp != '\n') return t.run(next + d.len, LETTER);  // one non-\r\n prefix
    size_t other = c.cls == OTHER ? pos : c.cp == ' ' && d.cls == OTHER ? next : n;
    if (other != n) {  // " ?[^\s\p{L}\p{N}]++[\r\n]*+"
        size_t end = t.run(other, OTHER);
        while (end < n && (t.byte(end) == '\r' || t.byte(end) == '\n')) ++end;
        return end;
    }
    Text::Space s = t.space_run(pos);
    if (s.end == n) return s.end;                   // \s++$
    if (s.after_newline != pos) return s.after_newline;  // \s*[\r\n]
    if (s.last != pos) return s.last;               // \s+(?!\S)
    return s.end;                                   // \s
}

template <size_t (*piece)(const Text &, size_t)>
void split(const Text &t, std::vector<size_t> &ends)
{
    for (size_t pos = 0; pos < t.size();) {
        pos = piece(t, pos);
        ends.push_back(pos);
    }
}

}  // namespace

void pretokenize(std::string_view text, Pattern pattern, std::vector<size_t> &ends)
{
    Text t(text);
    if (pattern == Pattern::GPT2)
        split<gpt2_piece>(t, ends);
    else
        split<cl100k_piece>(t, ends);
}

}  // namespace cllm_bpe
