"""Import resolution to workspace files, per language, on temporary workspaces; and the workspace's bounds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from opportune.server.context.imports import resolve
from opportune.server.context.syntax import SyntaxTree
from opportune.server.context.workspace import Workspace


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def resolved(root: Path, language: str, rel: str) -> dict[str, tuple[str, ...]]:
    text = (root / rel).read_text()
    imports = SyntaxTree(language, text.encode()).context_at(len(text)).imports
    ws = Workspace(root)
    ws.start_indexing()
    assert ws.wait_ready(10)
    return {r.path: r.names for r in resolve(language, rel, imports, text, ws)}


def test_python_relative_absolute_and_submodule_imports_resolve_to_workspace_files(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "src/shop/__init__.py": "",
            "src/shop/models.py": "class Item: ...\n",
            "src/shop/util/__init__.py": "def helper(): ...\n",
            "src/shop/util/money.py": "def cents(x): ...\n",
            "src/shop/cart.py": (
                "import os\nfrom .models import Item\nfrom shop.util import helper, money\n"
                "import shop.util.money as m\nfrom requests import get\n"
            ),
        },
    )
    found = resolved(tmp_path, "python", "src/shop/cart.py")
    assert found["src/shop/models.py"] == ("Item",)
    assert found["src/shop/util/__init__.py"] == ("helper", "money")
    assert "src/shop/util/money.py" in found
    assert all(p.startswith("src/shop/") for p in found)  # os and requests are not workspace files


def test_javascript_and_typescript_relative_imports_resolve_with_extensions_and_index(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "lib/math.ts": "export function add(a: number, b: number): number { return a + b; }\n",
            "lib/shapes/index.ts": "export class Circle {}\n",
            "lib/old.js": "module.exports = { legacy() {} };\n",
            "lib/main.ts": (
                "import { add } from './math.js';\nimport * as shapes from './shapes';\n"
                "import React from 'react';\nconst old = require('./old');\n"
            ),
        },
    )
    found = resolved(tmp_path, "typescript", "lib/main.ts")
    assert found["lib/math.ts"] == ("add",)
    assert "lib/shapes/index.ts" in found
    assert "lib/old.js" in found
    assert len(found) == 3


def test_go_packages_of_the_module_and_the_files_own_package_resolve(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "go.mod": "module example.com/shop\n\ngo 1.21\n",
            "inventory/inventory.go": "package inventory\n\ntype Inventory struct{ items map[string]int }\n",
            "inventory/inventory_test.go": "package inventory\n",
            "cmd/server/main.go": (
                'package main\n\nimport (\n\t"fmt"\n\tinv "example.com/shop/inventory"\n)\n\nfunc main() {}\n'
            ),
            "cmd/server/routes.go": "package main\n\nfunc routes() {}\n",
        },
    )
    found = resolved(tmp_path, "go", "cmd/server/main.go")
    assert "inventory/inventory.go" in found
    assert "inventory/inventory_test.go" not in found
    assert "cmd/server/routes.go" in found  # same package, no import needed


def test_rust_mod_and_use_paths_resolve_within_the_crate(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "Cargo.toml": '[package]\nname = "shop"\n',
            "src/lib.rs": "mod cart;\npub mod model;\n",
            "src/model.rs": "pub struct Item { pub price: u32 }\n",
            "src/cart/mod.rs": "use crate::model::Item;\nuse super::model;\nuse std::fmt;\nmod line;\n",
            "src/cart/line.rs": "pub struct Line;\n",
        },
    )
    found = resolved(tmp_path, "rust", "src/lib.rs")
    assert set(found) == {"src/cart/mod.rs", "src/model.rs"}
    found = resolved(tmp_path, "rust", "src/cart/mod.rs")
    assert found["src/model.rs"] == ("Item",)
    assert "src/cart/line.rs" in found


def test_java_imports_wildcards_and_same_package_classes_resolve_under_the_source_root(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        {
            "src/main/java/com/shop/model/Item.java": "package com.shop.model;\npublic class Item {}\n",
            "src/main/java/com/shop/util/Money.java": "package com.shop.util;\npublic class Money {}\n",
            "src/main/java/com/shop/Cart.java": (
                "package com.shop;\nimport com.shop.model.Item;\nimport com.shop.util.*;\n"
                "import java.util.List;\npublic class Cart { Item i; Helper h; }\n"
            ),
            "src/main/java/com/shop/Helper.java": "package com.shop;\npublic class Helper {}\n",
            "src/main/java/com/shop/Unused.java": "package com.shop;\npublic class Unused {}\n",
        },
    )
    found = resolved(tmp_path, "java", "src/main/java/com/shop/Cart.java")
    assert found["src/main/java/com/shop/model/Item.java"] == ("Item",)
    assert "src/main/java/com/shop/util/Money.java" in found
    assert "src/main/java/com/shop/Helper.java" in found
    assert "src/main/java/com/shop/Unused.java" not in found


@pytest.mark.parametrize("language", ["c", "cpp"])
def test_c_quoted_includes_resolve_beside_the_file_and_under_include(tmp_path: Path, language: str) -> None:
    write(
        tmp_path,
        {
            "include/shop/item.h": "struct item { int price; };\n",
            "src/cart.h": "int total(void);\n",
            "src/cart.c": '#include <stdio.h>\n#include "cart.h"\n#include "shop/item.h"\n',
        },
    )
    found = resolved(tmp_path, language, "src/cart.c")
    assert set(found) == {"src/cart.h", "include/shop/item.h"}


def test_a_file_outside_the_workspace_is_never_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    root = tmp_path / "ws"
    write(outside, {"secret.py": "TOKEN = 'x'\n"})
    write(root, {"app.py": "from ..outside.secret import TOKEN\nimport secret\n"})
    (root / "link.py").symlink_to(outside / "secret.py")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    ws = Workspace(root)
    assert ws.read("../outside/secret.py") is None
    assert ws.read(str(outside / "secret.py")) is None
    assert ws.read("link.py") is None  # a symlink whose target is outside
    assert ws.read("linkdir/secret.py") is None
    assert resolved(root, "python", "app.py") == {}


def test_symlink_loops_binary_and_huge_files_are_skipped_harmlessly(tmp_path: Path) -> None:
    write(tmp_path, {"ok.py": "A = 1\n"})
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    (tmp_path / "dirloop").mkdir()
    (tmp_path / "dirloop" / "up").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "bin.py").write_bytes(b"\x00\x01\x02" * 100)
    (tmp_path / "huge.py").write_text("x = 1\n" * (5 * 1024 * 1024 // 6 + 1))  # 5 MB
    ws = Workspace(tmp_path, max_file_bytes=1_000_000)
    ws.start_indexing()
    assert ws.wait_ready(10)
    assert ws.read("loop_a") is None
    assert ws.read("bin.py") is None
    assert ws.read("huge.py") is None
    assert ws.read("ok.py") == "A = 1\n"
    assert ws.find("ok.py") == ["ok.py"]
    assert not any("dirloop" in p for p in ws.find("ok.py"))  # the directory symlink was not followed


def test_the_index_stops_at_its_file_bound(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"m{i}.py").write_text("")
    ws = Workspace(tmp_path, max_files=20)
    ws.start_indexing()
    assert ws.wait_ready(10)
    assert ws.indexed_files == 20 and ws.truncated


def test_cyclic_imports_resolve_once_each(tmp_path: Path) -> None:
    write(
        tmp_path, {"a.py": "from b import g\n\ndef f(): ...\n", "b.py": "from a import f\n\ndef g(): ...\n"}
    )
    assert resolved(tmp_path, "python", "a.py") == {"b.py": ("g",)}
    assert resolved(tmp_path, "python", "b.py") == {"a.py": ("f",)}


def test_an_unreadable_file_is_skipped(tmp_path: Path) -> None:
    write(tmp_path, {"a.py": "from b import g\n", "b.py": "def g(): ...\n"})
    os.chmod(tmp_path / "b.py", 0)
    try:
        ws = Workspace(tmp_path)
        if os.access(tmp_path / "b.py", os.R_OK):
            pytest.skip("running as a user who can read anything")
        assert ws.read("b.py") is None
    finally:
        os.chmod(tmp_path / "b.py", 0o644)
