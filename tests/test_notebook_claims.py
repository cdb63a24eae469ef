"""Claims are checks: prose that states a measured figure or compares runs is followed by `claim(`.

1. A markdown cell's prose (notebooks/*.ipynb) is what remains after dropping HTML comments,
   fenced code, inline code, link URLs (`](...)`), heading lines (`#`) and emphasis (`*`, `_`).
2. It makes a claim when the prose has
   - a figure with a unit: a number (`47.2`, `1,000`) then MB, GB, KB, ms, s, seconds, second,
     %, loads, swaps, points, elements or digits, unless the figure is a setting: it comes right
     after `of`, `for`, `same`, `every`, `limit`, `hint(s)`, `x` or `=` ("models of 64 MB", "the
     same 64 elements", "every 50 ms", "2 x 32 MB"), or right before `model(s)`, `window(s)`,
     `interval(s)`, `batch(es)`, `per batch`, `in batches` or `by default` ("eight 32 MB
     models", "5 s windows", "95% intervals"); or
   - a comparison: more than, less than, fewer, faster, slower, about the same, never,
     at most, at least, twice, half (whole words, any case).
3. Such a cell must be followed, in the very next cell, by code that calls `claim(`
   (`mmkit.notebook.claim(text, ok, **figures)` asserts), so a contradicting re-run fails.
4. Prose that states Beam's documented behaviour or a design fact opts out with
   `<!-- no-claim: reason -->`; the reason must not be empty.

Trade-off: a measured figure after "of"/"for" ("an accuracy of 83%") passes as a setting; a
setting phrased otherwise ("each key has 32 elements"), or design prose with a comparison
word, is caught and opts out.
"""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))

_NOT_PROSE = [
  r"<!--.*?-->",  # HTML comments (the opt-out included)
  r"```.*?```",  # fenced code
  r"`[^`\n]*`",  # inline code
  r"(?<=\])\([^)\s]*\)",  # link URLs
  r"(?m)^[ \t]*#[^\n]*",  # headings
  r"[*_]",  # emphasis (after code, so snake_case names are gone already)
]
_UNIT = r"(?:MB|GB|KB|ms|s|seconds?|loads|swaps|points|elements|digits)\b|%"
_NUMBER = r"(?<![\w.,])\d+(?:,\d{3})*(?:\.\d+)?"
_SETTING_BEFORE = r"(?:\bof|\bfor|\bsame|\bevery|\blimit|\bhints?|\bx|=)\s*$"
_SETTING_AFTER = (
  r"^\s*(?:models?\b|windows?\b|intervals?\b|batch(?:es)?\b|per batch|in batches|by default)"
)
_FIGURE = re.compile(rf"{_NUMBER}\s?(?:{_UNIT})")
_COMPARISON = re.compile(
  r"\b(?:more than|less than|fewer|faster|slower|about the same|never|at most|at least"
  r"|twice|half)\b",
  re.I,
)
_OPT_OUT = re.compile(r"<!--\s*no-claim:(.*?)-->", re.S)
_CALLS_CLAIM = re.compile(r"(?m)^[^#\n]*\bclaim\(")


def prose(markdown: str) -> str:
  """The sentences of a markdown cell, without code, URLs, headings or emphasis."""
  for pattern in _NOT_PROSE:
    markdown = re.sub(pattern, " " if pattern != "[*_]" else "", markdown, flags=re.S)
  return re.sub(r"\s+", " ", markdown).strip()


def claims(markdown: str) -> list[str]:
  """Each figure or comparison the cell states, with 60 characters of context around it."""
  text = prose(markdown)
  figures = [
    m
    for m in _FIGURE.finditer(text)
    if not re.search(_SETTING_BEFORE, text[: m.start()])
    and not re.match(_SETTING_AFTER, text[m.end() :])
  ]
  found = sorted(figures + list(_COMPARISON.finditer(text)), key=lambda m: m.start())
  return [text[max(0, m.start() - 25) : m.start() + 35].strip() for m in found]


def opted_out(markdown: str) -> bool:
  """True when the cell carries `<!-- no-claim: reason -->` with a reason."""
  return any(reason.strip() for reason in _OPT_OUT.findall(markdown))


def violations(path: Path) -> list[str]:
  """`notebooks/X.ipynb cell N: "<context>"` for each claiming cell not followed by `claim(`."""
  cells = json.loads(path.read_text())["cells"]
  found = []
  for index, cell in enumerate(cells):
    source, after = "".join(cell["source"]), cells[index + 1 : index + 2]
    stated = claims(source) if cell["cell_type"] == "markdown" and not opted_out(source) else []
    if not stated or (
      after and after[0]["cell_type"] == "code" and _CALLS_CLAIM.search("".join(after[0]["source"]))
    ):
      continue
    more = f" (+{len(stated) - 1} more)" if len(stated) > 1 else ""
    found.append(f'notebooks/{path.name} cell {index}: "{stated[0]}"{more}')
  return found


def test_the_rule_tells_measurements_from_settings():
  assert claims("a proxied batch took 47.2 ms with those waits")
  assert claims("the example style reaches about 1% of raw torch")
  assert claims("the mapped run loads 64 loads, never more")
  assert not claims("eight classifiers of **64 MB** each, sampled every 50 ms")
  assert not claims("eight 32 MB models in `batch_size=32`, 5 s windows, the same 64 elements")
  assert not claims("## Twice\n```\nx = 2  # at most 3 ms\n```\n[a](http://x/64%20MB)")
  assert opted_out("<!-- no-claim: Beam's docs -->") and not opted_out("<!-- no-claim:  -->")


def test_only_a_claim_in_the_very_next_cell_or_an_opt_out_clears_a_cell(tmp_path):
  said, opted, check = "it took 3.1 ms", "<!-- no-claim: Beam's docs --> never", "claim("
  kinds = "markdown code markdown code code markdown markdown".split()
  texts = [said, check, said, "plot()", check, opted, said]
  cells = [{"cell_type": kind, "source": [text]} for kind, text in zip(kinds, texts)]
  (notebook := tmp_path / "X.ipynb").write_text(json.dumps({"cells": cells}))
  assert violations(notebook) == [f'notebooks/X.ipynb cell {n}: "{said}"' for n in (2, 6)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_prose_that_states_a_measurement_is_followed_by_a_claim(path):
  found = violations(path)
  assert not found, (
    f"{len(found)} markdown cell(s) state a figure or compare runs without a `claim(` cell right "
    "after them; add one, or mark design prose with <!-- no-claim: reason -->:\n  "
    + "\n  ".join(found)
  )
