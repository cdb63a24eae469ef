"""The module map in `mmkit/__init__.py` is true, and every module says what it exports."""

import ast
import re
from pathlib import Path

import mmkit

PACKAGE = Path(mmkit.__file__).parent


def _map() -> dict[str, set[int]]:
  """Module name -> the notebook numbers its bullet in the map names."""
  bullets = re.split(r"\n- ", mmkit.__doc__.split("\n- ", 1)[1])
  mapped = {}
  for bullet in bullets:
    names, text = bullet.split(":", 1)
    for name in re.findall(r"`(\w+)`", names):
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
  return sorted(p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__"))


def test_the_map_lists_every_module_and_only_modules_that_exist():
  mapped = _map()
  assert sorted(mapped) == _modules()


def test_each_modules_docstring_names_the_notebooks_the_map_gives():
  mapped = _map()
  for name in _modules():
    first_line = ast.get_docstring(ast.parse((PACKAGE / f"{name}.py").read_text())).split("\n")[0]
    assert _notebooks(first_line) == mapped[name], (name, first_line)


def test_all_lists_every_public_name_and_only_names_defined():
  for path in sorted(PACKAGE.glob("*.py")):
    if path.stem == "__init__":
      continue
    tree = ast.parse(path.read_text())
    own, imported, exported = set(), set(), None
    for node in tree.body:
      if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        own.add(node.name)
      elif isinstance(node, (ast.Import, ast.ImportFrom)):
        imported |= {(a.asname or a.name).split(".")[0] for a in node.names}
      elif isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        if "__all__" in names:
          exported = [e.value for e in node.value.elts]
        own |= names - {"__all__"}
    defined = own | imported
    public = {n for n in own if not n.startswith("_")}
    assert exported is not None, f"{path.name} has no __all__"
    assert public <= set(exported), (path.name, sorted(public - set(exported)))
    assert set(exported) <= defined, (path.name, sorted(set(exported) - defined))


# Modules that import no other part of the kit, so each can be copied into a project alone.
STANDALONE = {
  "beam_metrics",
  "capacity",
  "data",
  "deadletter",
  "memwatch",
  "mmap_load",
  "models",
  "notebook",
  "plots",
  "simulate",
  "sockets",
  "validate",
  "workers",
}


def test_standalone_modules_import_nothing_else_of_the_kit():
  for name in STANDALONE:
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    imported = [
      node.module if isinstance(node, ast.ImportFrom) else alias.name
      for node in tree.body
      if isinstance(node, (ast.Import, ast.ImportFrom))
      for alias in node.names
    ]
    assert not [m for m in imported if m and m.split(".")[0] == "mmkit"], name
