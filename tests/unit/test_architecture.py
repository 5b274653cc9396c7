"""The shape README's Architecture section promises: imports flow server -> pool <- handlers, with no
cycle between modules; the cpu worker's modules import neither Pyramid nor gevent."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"greenjobs": ROOT / "greenjobs", "greenjobs.server": ROOT / "server",
           "greenjobs.handlers": ROOT / "handlers", "greenjobs.pool": ROOT / "pool"}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


MODULES = modules()


def imports(name: str, top_level_only: bool = False) -> set[str]:
    """Project modules (and external top-level packages) that module ``name`` imports."""
    tree = ast.parse(MODULES[name].read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return found


def test_pool_imports_neither_server_nor_handlers():
    for name in MODULES:
        if name.startswith("greenjobs.pool"):
            bad = {i for i in imports(name) if i.startswith(("greenjobs.server", "greenjobs.handlers"))}
            assert not bad, (name, bad)


def test_handlers_do_not_import_the_server_and_the_server_does_not_import_handlers():
    for name in MODULES:
        if name.startswith("greenjobs.handlers"):
            assert not {i for i in imports(name) if i.startswith("greenjobs.server")}, name
        if name.startswith("greenjobs.server"):
            assert not {i for i in imports(name) if i.startswith("greenjobs.handlers")}, name


def test_no_import_cycle_between_modules():
    graph = {name: {i for i in imports(name) if i in MODULES and i != name} for name in MODULES}
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_cpu_worker_needs_neither_pyramid_nor_gevent():
    seen, todo = set(), ["greenjobs.pool.cpu.worker"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported in imports(name, top_level_only=True):
            assert not imported.startswith(("pyramid", "gevent")), (name, imported)
            if imported in MODULES:
                todo.append(imported)
