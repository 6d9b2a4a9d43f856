#!/usr/bin/env python3
"""Import circles between the files of each crate.

Reads every `crate::a::b` and `super::x` path in a crate's non-test source
(everything before a `#[cfg(test)]` module is cut off), resolves it to the
file that defines the module, and prints each strongly connected group of two
or more files: files that reach each other through imports.

    scripts/checks/module-cycles.py [CRATE_DIR...]   # default: every crate
Exit 1 when any circle is found.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super)::\{([^;]*?)\}", re.S)


def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def file_of(src, module):
    """The file defining `module` or its closest ancestor."""
    for n in range(len(module), -1, -1):
        m = module[:n]
        for cand in (os.path.join(src, *m) + ".rs", os.path.join(src, *m, "mod.rs")):
            if m and os.path.isfile(cand):
                return cand
        if not m:
            for top in ("lib.rs", "main.rs"):
                if os.path.isfile(os.path.join(src, top)):
                    return os.path.join(src, top)
    return None


def non_test(text):
    """The source before its test module, without comments (doc links are not imports)."""
    m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod\s+\w+\s*\{", text)
    text = text[: m.start()] if m else text
    return "\n".join(line.split("//", 1)[0] for line in text.split("\n"))


def targets(src, path, text):
    here = module_of(src, path)
    # A mod.rs/lib.rs file *is* its module; `super` is its parent.
    is_dir_mod = os.path.basename(path) in ("mod.rs", "lib.rs", "main.rs")
    parent = here[:-1] if here else ()
    found = []
    heads = []
    for m in PATH.finditer(text):
        heads.append((m.group(1), [p for p in m.group(2).split("::") if p]))
    for m in GROUP.finditer(text):
        for item in m.group(2).split(","):
            item = item.strip().split(" as ")[0]
            if item and not item.startswith("{"):
                heads.append((m.group(1), [p for p in item.split("::") if p]))
    for kind, parts in heads:
        if kind == "crate":
            base = ()
        else:
            base = parent if not is_dir_mod else (here[:-1] if here else ())
            # super::super::x
            while parts and parts[0] == "super":
                base = base[:-1]
                parts = parts[1:]
        target = file_of(src, base + tuple(p for p in parts if p != "self"))
        if target and os.path.abspath(target) != os.path.abspath(path):
            found.append(target)
    return found


def sccs(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            strong(v)
    return out


def crate_dirs():
    out = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in ("target", "fuzz", "node_modules")]
        if "Cargo.toml" in filenames and os.path.isdir(os.path.join(dirpath, "src")):
            out.append(dirpath)
    return sorted(out)


def main():
    dirs = sys.argv[1:] or crate_dirs()
    total = 0
    for d in dirs:
        src = os.path.join(d, "src")
        graph = {}
        for dirpath, _, files in os.walk(src):
            if os.sep + "bin" in dirpath[len(src):]:
                continue
            for f in files:
                if f.endswith(".rs"):
                    p = os.path.join(dirpath, f)
                    graph[p] = set(targets(src, p, non_test(open(p, encoding="utf-8").read())))
        for comp in sccs(graph):
            total += 1
            print(f"{os.path.relpath(d, ROOT)}: " + " <-> ".join(os.path.relpath(c, src) for c in comp))
    print(f"module-cycles: {total} circle(s)")
    sys.exit(1 if total else 0)


if __name__ == "__main__":
    main()
