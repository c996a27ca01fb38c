"""No import cycle in kcnn/, found by reading the source (`ast`), not by importing it.

Every import counts: at module level and inside functions (a function-level import
only hides a cycle until the function runs), `importlib.import_module("kcnn....")`
with a literal name, and a name taken from a package whose `__init__` exports it
lazily (`kcnn._lazy.lazy_exports`: `from kcnn.train import fit` imports
`kcnn.train.driver`). A module's import of its own parent packages is Python's, not
an edge.
"""

import ast
import contextlib
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / "kcnn"


def module_files(root=ROOT):
    """{module name: file} of every module of the package under `root`."""
    files = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    return files


def lazy_exports(tree):
    """{name: module} of a package `__init__` that calls `lazy_exports(__name__, MAP, ...)`:
    MAP evaluated from the module's literal assignments (and `dict.fromkeys`)."""
    literals = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            with contextlib.suppress(ValueError):
                literals[node.targets[0].id] = ast.literal_eval(node.value)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lazy_exports" and len(node.args) >= 2:
            mapping = node.args[1]
            if isinstance(mapping, ast.Name):
                return dict(literals.get(mapping.id, {}))
            code = compile(ast.Expression(mapping), "<lazy exports>", "eval")
            return dict(eval(code, {"__builtins__": {}, "dict": dict, **literals}))  # Literals only.
    return {}


def imports_of(name, tree, modules, exports):
    """The kcnn modules that module `name` imports, anywhere in its code."""
    package = name if modules[name].name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    bound = {}  # Local name -> the module it names, for `train.fit` after `from kcnn import train`.

    def resolve(base, attribute):
        """What `base.attribute` imports: a submodule, or the module a lazy export names."""
        submodule = f"{base}.{attribute}"
        if submodule in modules:
            return submodule
        return exports.get(base, {}).get(attribute)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
                bound[alias.asname or alias.name.partition(".")[0]] = alias.name if alias.asname else alias.name.partition(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{node.module}" if node.module else anchor
            else:
                base = node.module
            for alias in node.names:
                target = resolve(base, alias.name)
                found.update({base, target or base})
                if target in modules:
                    bound[alias.asname or alias.name] = target
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    for node in ast.walk(tree):
        # `kcnn.data.load`, `train.fit`: attribute chains on a bound module reach lazy exports.
        chain = []
        while isinstance(node, ast.Attribute):
            chain.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in bound and chain:
            base = bound[node.id]
            for attribute in reversed(chain):
                target = resolve(base, attribute)
                if target is None:
                    break
                found.add(target)
                base = target
    parents = {name.rsplit(".", depth)[0] for depth in range(1, name.count(".") + 1)}
    return {module for module in found if module in modules and module != name and module not in parents}


def import_graph(root=ROOT):
    files = module_files(root)
    trees = {name: ast.parse(path.read_text(), str(path)) for name, path in files.items()}
    exports = {name: lazy_exports(tree) for name, tree in trees.items() if files[name].name == "__init__.py"}
    return {name: imports_of(name, tree, files, exports) for name, tree in trees.items()}


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_finder_sees_function_level_imports_and_lazy_exports(tmp_path):
    package = tmp_path / "kcnn"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text(
        "from kcnn._lazy import lazy_exports\n_EXPORTS = {'f': 'kcnn.sub.b'}\n"
        "__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)\n"
    )
    (package / "_lazy.py").write_text("")
    (package / "sub" / "a.py").write_text("def g():\n    from kcnn import sub\n    sub.f()\n")
    (package / "sub" / "b.py").write_text("from . import c\n")
    (package / "sub" / "c.py").write_text("import importlib\nimportlib.import_module('kcnn.sub.a')\n")
    graph = import_graph(package)
    assert graph["kcnn.sub.a"] == {"kcnn.sub.b"}  # Its parent package is no edge.
    assert cycles(graph) == [["kcnn.sub.a", "kcnn.sub.b", "kcnn.sub.c"]]


def test_kcnn_has_no_import_cycle():
    graph = import_graph()
    assert graph["kcnn.tune.driver"] >= {"kcnn.tune.cost", "kcnn.tune.project"}  # The finder reads kcnn.
    assert cycles(graph) == []
