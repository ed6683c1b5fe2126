"""Writing golden/MANIFEST.json, shared by the golden generators (make_golden.py, golden_gpu.py,
make_golden_train.py).  Standard library only: the generators run where precisionlab may not be
installed (a GPU machine with torch)."""

from __future__ import annotations

import json
import os
import re


def write_manifest(path: str, man: dict) -> None:
    """JSON with one-line lists and objects of scalars (shapes, strides, kernel names), written atomically."""
    text = json.dumps(man, indent=1)
    text = re.sub(r"\[\n\s*([^\[\]{}]*?)\n\s*\]", lambda m: "[" + re.sub(r",\n\s*", ", ", m.group(1)) + "]", text)
    text = re.sub(r"\{\n\s*([^\[\]{}]*?)\n\s*\}", lambda m: "{" + re.sub(r",\n\s*", ", ", m.group(1)) + "}", text)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def merge_manifest(path: str, entries: list[dict]) -> None:
    """Replace the entries of the recorded files, keep every other entry (and all other keys) as they are;
    the verification of a re-recorded file is dropped (stale: run tools/make_golden.py --verify)."""
    man = {"version": 1, "files": []}
    if os.path.exists(path):
        with open(path) as f:
            man = json.load(f)
    paths = {e["path"] for e in entries}
    kept = [e for e in man.get("files", []) if e.get("path") not in paths]
    man["files"] = sorted(kept + entries, key=lambda e: e["path"])
    man["version"] = 1
    for p in paths:
        man.get("verification", {}).pop(p, None)
    write_manifest(path, man)
