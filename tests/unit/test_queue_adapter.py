"""arq is the platform's queue, and its names belong to the queue adapter (shared/runtime/queue.py)
and to the consumer that runs arq's worker (worker/consumer.py). Every other module speaks
to the queue through those two, and a job's handler answers it with typed outcomes
(`queue.Done`, `queue.Requeue`), never with arq's exceptions."""

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "worker", "shared", "schemas", "crewq")
ADAPTER = Path("shared/runtime/queue.py")
ALLOWED = {ADAPTER, Path("worker/consumer.py")}
_IMPORTERS = {"import_module", "__import__"}


def _sources() -> Iterator[tuple[Path, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT), ast.parse(path.read_text(), filename=str(path))


def _is_arq(module: str) -> bool:
    return module == "arq" or module.startswith("arq.")


def arq_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """Where `tree` imports arq: `import arq…`, `from arq… import …`, and
    `importlib.import_module("arq…")` / `__import__("arq…")`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if _is_arq(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)] if _is_arq(node.module) else []
        elif isinstance(node, ast.Call) and node.args:
            called = node.func
            name = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", "")
            first = node.args[0]
            if (
                name in _IMPORTERS
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and _is_arq(first.value)
            ):
                found.append((node.lineno, first.value))
    return found


def _adapters_arq_names() -> set[str]:
    """The names the adapter imports from arq: other modules may not reach them through it."""
    tree = ast.parse((ROOT / ADAPTER).read_text())
    return {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and _is_arq(node.module)
        for alias in node.names
    }


def arq_names_through_the_adapter(tree: ast.Module, names: set[str]) -> list[tuple[int, str]]:
    """Where `tree` takes one of arq's `names` from the adapter: `from shared.runtime.queue import
    X` or `queue.X`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "shared.runtime.queue":
            found += [(node.lineno, a.name) for a in node.names if a.name in names]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "queue"
            and node.attr in names
        ):
            found.append((node.lineno, f"queue.{node.attr}"))
    return found


def test_only_the_queue_adapter_and_the_consumer_import_arq() -> None:
    importers: dict[Path, list[tuple[int, str]]] = {}
    for path, tree in _sources():
        if found := arq_imports(tree):
            importers[path] = found
    outside = {path: found for path, found in importers.items() if path not in ALLOWED}
    assert outside == {}, "import arq only in shared/runtime/queue.py and worker/consumer.py"
    # The walk saw the sources: the two allowed modules are found importing it.
    assert set(importers) == ALLOWED


def test_no_module_reaches_arqs_names_through_the_adapter() -> None:
    names = _adapters_arq_names()
    assert {"ArqRedis", "job_key_prefix"} <= names  # what the adapter wraps
    reached = {
        path: found
        for path, tree in _sources()
        if path not in ALLOWED and (found := arq_names_through_the_adapter(tree, names))
    }
    assert reached == {}, "use the adapter's own names (queue.Redis, queue.states, …)"


def test_the_checks_find_each_way_of_naming_arq() -> None:
    source = """
import arq
import arq.worker as w
from arq.connections import ArqRedis
from shared.runtime.queue import ArqRedis as R
import importlib
importlib.import_module("arq.jobs")
__import__("arq")
from shared.runtime import queue
queue.ArqRedis
from arqueue import x  # not arq
import shared.runtime.queue
"""
    tree = ast.parse(source)
    assert [line for line, _ in arq_imports(tree)] == [2, 3, 4, 7, 8]
    assert arq_names_through_the_adapter(tree, {"ArqRedis"}) == [
        (5, "ArqRedis"),
        (10, "queue.ArqRedis"),
    ]
