"""A generated corpus of web pages for tests and benchmarks: each page is a main article (paragraphs and a code
block) wrapped in the boilerplate real sites have (navigation, sidebar of links, cookie banner, footer, scripts
and styles), so that an extractor can be scored on what it keeps (the article) and what it leaks (the rest).

Deterministic for a given seed; no network, no files.
"""

from __future__ import annotations

import random

WORDS = ("the of and to in is that for it as with was on be by this are from at or an have not which but were all "
         "data model train token layer memory thread kernel cache vector matrix crawl parse robots archive shard "
         "river mountain window garden letter winter market signal bridge island doctor engine island harvest "
         "quiet bright narrow heavy gentle rapid hidden silent golden broken ancient modern simple careful").split()
NAV = ["Home", "About", "Blog", "Products", "Pricing", "Contact", "Careers", "Press", "Support", "Login"]


def sentence(rng: random.Random, n_words: int | None = None) -> str:
    words = [rng.choice(WORDS) for _ in range(n_words or rng.randint(8, 20))]
    return " ".join(words).capitalize() + "."


def article(rng: random.Random, paragraphs: int) -> tuple[list[str], str]:
    """(paragraph texts, a code block) of one page's main content."""
    paras = [" ".join(sentence(rng) for _ in range(rng.randint(3, 7))) for _ in range(paragraphs)]
    name = rng.choice(WORDS[20:])
    code = f"def {name}_step(x, n):\n    total = 0\n    for i in range(n):\n        total += x * i\n    return total"
    return paras, code


def page(index: int, seed: int = 0, paragraphs: int = 8, links: int = 40) -> tuple[str, dict]:
    """One HTML page and its truth: {"title", "paragraphs", "code", "boilerplate"} (boilerplate: sentences that
    appear only in the banner, footer and related links)."""
    rng = random.Random(seed * 1_000_003 + index)
    title = f"Article {index}: " + sentence(rng, 5)[:-1]
    paras, code = article(rng, paragraphs)
    banner = "We use cookies to improve your experience on our site. By continuing you accept our cookie policy."
    footer = f"Copyright {2000 + index % 25} Example Corporation. All rights reserved. Terms of service apply."
    related_titles = [sentence(rng, 6) for _ in range(links)]
    related = "".join(f'<li><a href="/page/{rng.randrange(10_000)}">{t}</a></li>' for t in related_titles)
    nav = "".join(f'<li><a href="/{n.lower()}">{n}</a></li>' for n in NAV)
    # half the pages use semantic elements, half the anonymous <div>s many sites are made of
    tag = ({"header": "header", "nav": "nav", "aside": "aside", "main": "main", "article": "article",
            "footer": "footer"} if index % 2 == 0 else dict.fromkeys(
        ("header", "nav", "aside", "main", "article", "footer"), "div"))
    body = "".join(f"<p>{p}</p>" for p in paras[:paragraphs // 2])
    body += f"<pre><code>{code}</code></pre>"
    body += "".join(f"<p>{p}</p>" for p in paras[paragraphs // 2:])
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body {{ font-family: sans-serif; }} .nav li {{ display: inline; }}</style>
<script>window.analytics = {{id: {index}, track: function(e) {{ return e; }}}};</script>
</head><body>
<div class="cookie-banner">{banner}</div>
<{tag["header"]} id="top"><{tag["nav"]} class="nav"><ul>{nav}</ul></{tag["nav"]}></{tag["header"]}>
<div class="layout"><{tag["aside"]} class="col-3"><h3>Related</h3><ul>{related}</ul></{tag["aside"]}>
<{tag["main"]} class="col-9"><{tag["article"]} class="post"><h1>{title}</h1>{body}</{tag["article"]}></{tag["main"]}></div>
<{tag["footer"]} class="bottom"><p>{footer}</p><ul>{nav}</ul></{tag["footer"]}>
<script>document.querySelectorAll("a").forEach(function(a) {{ a.rel = "noopener"; }});</script>
</body></html>
"""
    return html, {"title": title, "paragraphs": paras, "code": code,
                  "boilerplate": [banner, footer, *related_titles[:5]]}


def corpus(n_pages: int, seed: int = 0, **kwargs) -> list[tuple[str, dict]]:
    return [page(i, seed, **kwargs) for i in range(n_pages)]
