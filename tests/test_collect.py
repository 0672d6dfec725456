"""cllm collect on generated trees: what is kept, what is skipped and why, determinism, and bad input."""

import json
import os

import pytest

from cllm.cli import main
from cllm.corpus.collect import collect


def cli(args) -> int:
    """The exit code of ``cllm ARGS`` (argparse's usage errors exit with SystemExit(2) from parse_args)."""
    try:
        return main([str(a) for a in args])
    except SystemExit as e:
        return e.code

C_SOURCE = "int add(int a, int b) {\n    return a + b;\n}\n"


def make_tree(root):
    files = {
        "src/add.c": C_SOURCE, "src/add.h": "int add(int a, int b);\n", "README.md": "# Project\n\nText.\n",
        "tools/run.sh": "#!/bin/sh\necho run\n", "src/notes.txt": "caf\u00e9 na\u00efve r\u00e9sum\u00e9 " * 20,
        ".git/config": "[core]\n", "node_modules/x/index.js": "x", "build/gen.c": "int gen;\n",
        "src/__pycache__/m.py": "x = 1\n", "data.csv": "a,b\n1,2\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "src/latin1.c").write_bytes(("/* " + "d\u00e9j\u00e0 vu, caf\u00e9 cr\u00e8me " * 30 + "*/\n")
                                        .encode("latin-1"))
    (root / "src/blob.c").write_bytes(b"int x;\0\x01\x02")
    (root / "src/big.txt").write_bytes(b"a" * 5000)
    return root


def read_manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def test_collect_keeps_text_skips_the_rest(tmp_path):
    root = make_tree(tmp_path / "proj")
    report = collect([root], tmp_path / "out", max_bytes=4096)
    entries = {e["source"]: e for e in read_manifest(tmp_path / "out")}
    assert sorted(e for e in entries if entries[e]["status"] == "ok") == [
        "proj/README.md", "proj/src/add.c", "proj/src/add.h", "proj/src/latin1.c", "proj/src/notes.txt",
        "proj/tools/run.sh"]
    assert entries["proj/src/blob.c"]["status"] == "binary"
    assert entries["proj/src/big.txt"]["status"] == "too_large"
    assert entries["proj/src/latin1.c"]["encoding"] != "utf-8"
    assert (tmp_path / "out" / entries["proj/src/add.c"]["path"]).read_text() == C_SOURCE
    assert report["walk"]["pruned_dirs"] == 4  # .git, node_modules, build, __pycache__
    assert report["walk"]["not_matched"] == 1  # data.csv
    assert list(entries) == sorted(entries)


def test_collect_is_deterministic_and_skips_its_own_output(tmp_path):
    root = make_tree(tmp_path / "proj")
    collect([root], root / "corpus")
    first = (root / "corpus" / "manifest.jsonl").read_bytes()
    collect([root], root / "corpus")  # the copies from the first run are inside the root now
    assert (root / "corpus" / "manifest.jsonl").read_bytes() == first
    assert not [p for p in (root / "corpus").iterdir() if p.name.startswith(".collect-")]


def test_include_exclude_and_reference(tmp_path):
    root = make_tree(tmp_path / "proj")
    collect([root], tmp_path / "out", include=["*.c,*.h"], exclude=["src/latin1.*"], copy=False)
    ok = [e for e in read_manifest(tmp_path / "out") if e["status"] == "ok"]
    assert [e["source"] for e in ok] == ["proj/src/add.c", "proj/src/add.h"]
    assert ok[0]["path"] == str((root / "src/add.c").resolve()) and not (tmp_path / "out" / "files").exists()


def test_gitignore(tmp_path):
    root = make_tree(tmp_path / "proj")
    (root / ".gitignore").write_text("*.sh\nsrc/\n!src/add.c\n")
    (root / "docs").mkdir()
    (root / "docs/a.md").write_text("# A\n")
    (root / "docs/b.md").write_text("# B\n")
    (root / "docs/.gitignore").write_text("b.md\n")
    collect([root], tmp_path / "out", gitignore=True)
    ok = sorted(e["source"] for e in read_manifest(tmp_path / "out") if e["status"] == "ok")
    # src/ is ignored as a folder: git does not look inside it, so !src/add.c cannot bring add.c back
    assert ok == ["proj/README.md", "proj/docs/a.md"]


def test_symlinks_and_loops(tmp_path):
    root = make_tree(tmp_path / "proj")
    (root / "src/loop").symlink_to(root)
    (root / "alias.c").symlink_to(root / "src/add.c")
    (root / "dangling.c").symlink_to(root / "nowhere.c")
    report = collect([root], tmp_path / "a")
    assert report["walk"]["symlinks_not_followed"] == 3
    report = collect([root], tmp_path / "b", follow_symlinks=True)
    assert report["walk"]["symlink_loop"] == 1 and report["walk"]["not_regular_files"] == 1
    ok = [e["source"] for e in read_manifest(tmp_path / "b") if e["status"] == "ok"]
    assert "proj/alias.c" in ok and not [s for s in ok if "/loop/" in s]


def test_unreadable_paths_are_counted_not_fatal(tmp_path):
    """A folder whose path is longer than the OS allows (fails even for root) and, when not root, a file
    without read permission."""
    root = make_tree(tmp_path / "proj")
    fd = os.open(root, os.O_RDONLY)
    for _ in range(20):  # 20 x 250 characters: past PATH_MAX (4096)
        name = "d" * 250
        os.mkdir(name, dir_fd=fd)
        fd_next = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = fd_next
    os.close(fd)
    if os.geteuid() != 0:
        (root / "src/add.h").chmod(0)
    report = collect([root], tmp_path / "out")
    assert report["walk"].get("unreadable_dirs", 0) >= 1
    assert report["files"]["ok"] >= 5
    if os.geteuid() != 0:
        assert report["files"]["unreadable"] == 1


def test_cli_collect_and_bad_input(tmp_path, capsys):
    root = make_tree(tmp_path / "proj")
    assert cli(["collect", str(root), "--output", str(tmp_path / "out"), "--include", "*.c"]) == 0
    assert "collected 2 files" in capsys.readouterr().out
    cases = [([str(tmp_path / "missing")], "does not exist"),
             ([str(root / "README.md")], "is not a folder"),
             ([str(root), "--include", "*.nothing"], "no text files found"),
             ([str(root), "--max-bytes", "0"], "expected a positive integer")]
    for args, message in cases:
        assert cli(["collect", *args, "--output", str(tmp_path / "o2")]) == 2, args
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and err.startswith("cllm collect: error:"), err


@pytest.mark.parametrize("name", ["caf\udce9.c"])
def test_undecodable_file_names_are_skipped(tmp_path, name):
    root = make_tree(tmp_path / "proj")
    (root / "src" / os.fsdecode(os.fsencode(name))).write_text(C_SOURCE)
    report = collect([root], tmp_path / "out")
    assert report["walk"]["undecodable_names"] == 1
