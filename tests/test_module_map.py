"""The module map in `mmkit/__init__.py` is true, every module says what it exports, and every
import names the module where the code lives."""

import ast
import json
import re
from pathlib import Path

import mmkit

PACKAGE = Path(mmkit.__file__).parent
ROOT = PACKAGE.parent


def _map() -> dict[str, set[int]]:
  """Module name -> the notebook numbers its bullet in the map names."""
  bullets = re.split(r"\n- ", mmkit.__doc__.split("\n- ", 1)[1])
  mapped = {}
  for bullet in bullets:
    names, text = bullet.split(":", 1)
    for name in re.findall(r"`([\w.]+)`", names):
      mapped[name] = _notebooks(text)
  return mapped


def _notebooks(text: str) -> set[int]:
  """Notebook numbers in `text`: "03", "04_memory", and ranges such as "01-06"."""
  numbers = set()
  for first, last in re.findall(r"(?<![\d.])0([1-7])-0([1-7])(?!\d)", text):
    numbers |= set(range(int(first), int(last) + 1))
  text = re.sub(r"(?<![\d.])0[1-7]-0[1-7](?!\d)", "", text)
  return numbers | {int(n) for n in re.findall(r"(?<![\d.])0([1-7])(?!\d)", text)}


def _modules() -> list[str]:
  """Module names relative to the package: `sweep`, `core.keyed`, ..."""
  return sorted(
    ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
    for p in PACKAGE.rglob("*.py")
    if not p.stem.startswith("__")
  )


def _path(name: str) -> Path:
  return PACKAGE.joinpath(*name.split(".")).with_suffix(".py")


def _defined(name: str) -> set[str]:
  """The names a module defines itself (functions, classes, assignments), not those it imports."""
  own = set()
  for node in ast.parse(_path(name).read_text()).body:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      own.add(node.name)
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      own |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
  return own - {"__all__"}


def test_the_map_lists_every_module_and_only_modules_that_exist():
  mapped = _map()
  assert sorted(mapped) == _modules()


def test_each_modules_docstring_names_the_notebooks_the_map_gives():
  mapped = _map()
  for name in _modules():
    first_line = ast.get_docstring(ast.parse(_path(name).read_text())).split("\n")[0]
    assert _notebooks(first_line) == mapped[name], (name, first_line)


def test_all_lists_every_public_name_and_only_names_the_module_defines():
  """No re-export facades: a name is exported by the module that defines it, and only there."""
  for name in _modules():
    tree = ast.parse(_path(name).read_text())
    exported = next(
      (
        [e.value for e in node.value.elts]
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
      ),
      None,
    )
    own = _defined(name)
    public = {n for n in own if not n.startswith("_")}
    assert exported is not None, f"{name} has no __all__"
    assert public <= set(exported), (name, sorted(public - set(exported)))
    assert set(exported) <= own, (name, sorted(set(exported) - own))


def _kit_imports(source: str):
  """(module, name) of each `from mmkit.X import name` in Python source."""
  from IPython.core.inputtransformer2 import TransformerManager

  tree = ast.parse(TransformerManager().transform_cell(source))  # IPython magics to Python
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmkit."):
      for alias in node.names:
        yield node.module[len("mmkit.") :], alias.name


def test_every_import_names_the_module_where_the_code_lives():
  """Notebooks, benchmarks, tests and the kit itself import each name from its own module."""
  sources = [
    (p, p.read_text())
    for d in ("mmkit", "tests", "bench", "tools")
    for p in (ROOT / d).rglob("*.py")
  ]
  for nb in (ROOT / "notebooks").glob("*.ipynb"):
    cells = json.loads(nb.read_text())["cells"]
    sources += [(nb, "".join(c["source"])) for c in cells if c["cell_type"] == "code"]
  wrong = [
    f"{path.relative_to(ROOT)}: mmkit.{module}.{name}"
    for path, source in sources
    for module, name in _kit_imports(source)
    if module in _modules() and name not in _defined(module)
  ]
  assert not wrong, wrong


# The core: each module imports nothing of the kit but Beam's private parts, so a user copies it
# (with beam_private.py) into a project (tests/test_core_copy.py copies and runs each).
CORE = {m for m in _modules() if m.startswith("core.")}
# Lab modules that import no other part of the kit, so each can be copied into a project alone.
STANDALONE = {
  "beam_metrics",
  "data",
  "memwatch",
  "models",
  "plots",
  "stats",
  "workers",
}


def _mmkit_imports(name: str) -> list[str]:
  tree = ast.parse(_path(name).read_text())
  return [
    node.module if isinstance(node, ast.ImportFrom) else alias.name
    for node in ast.walk(tree)
    if isinstance(node, (ast.Import, ast.ImportFrom))
    for alias in node.names
    if (node.module if isinstance(node, ast.ImportFrom) else alias.name or "").startswith("mmkit")
  ]


def test_standalone_modules_import_nothing_else_of_the_kit():
  for name in STANDALONE:
    assert not _mmkit_imports(name), name


def test_core_modules_import_nothing_of_the_kit_but_beam_private():
  assert {"core.keyed", "core.tracer", "core.cleanup", "core.beam_private"} <= CORE
  for name in CORE:
    assert set(_mmkit_imports(name)) <= {"mmkit.core"}, (name, _mmkit_imports(name))
    if "mmkit.core" in _mmkit_imports(name):  # `from mmkit.core import beam_private`
      assert "import beam_private" in _path(name).read_text(), name
