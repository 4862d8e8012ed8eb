"""The program shipped to the fetch host: the modules `fetch.shipped` names, standard library only."""

from __future__ import annotations

import ast
import subprocess
import sys

from edgetam_provision.fetch.shipped import PACKAGE, SHIPPED, agent_program

HOST_LIBRARIES = {"huggingface_hub"}  # the one non-stdlib import, made inside the agent on the host


def _imports(tree: ast.AST) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def test_every_shipped_module_imports_only_the_stdlib_and_earlier_shipped_modules():
    earlier: set[str] = set()
    for name in SHIPPED:
        tree = ast.parse((PACKAGE / name).read_text())
        for module, level in _imports(tree):
            if level:  # a relative import: only of a module shipped before this one
                assert module.rsplit(".", 1)[-1] in earlier, f"{name} imports .{module}, which is not shipped"
            else:
                top = module.split(".")[0]
                assert top in sys.stdlib_module_names or top in HOST_LIBRARIES, f"{name} imports {module}"
        earlier.add(name.rsplit("/", 1)[-1].removesuffix(".py"))


def test_the_glued_program_compiles_and_defines_the_agent_without_the_package(tmp_path):
    program = agent_program()
    compile(program, "provision-agent", "exec")
    assert program.decode().count("from __future__") == 1
    # Run its definitions with no access to this package (isolated mode, another folder), as the host does.
    code = ("import sys, types; src = sys.stdin.buffer.read(); m = types.ModuleType('provision_agent');"
            "sys.modules[m.__name__] = m; ns = m.__dict__;"
            "exec(compile(src, 'provision-agent', 'exec'), ns);"
            "assert callable(ns['main']) and callable(ns['pack_repo']) and callable(ns['archive_name']);"
            "assert 'edgetam_provision' not in sys.modules")
    res = subprocess.run([sys.executable, "-I", "-c", code], input=program, cwd=tmp_path,
                         capture_output=True, env={})
    assert res.returncode == 0, res.stderr.decode()


def test_the_hostile_archive_reader_never_travels():
    program = agent_program().decode()
    assert "def scan_archive" not in program and "class ArchiveReader" not in program
