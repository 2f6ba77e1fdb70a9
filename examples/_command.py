"""What a results directory records: `repo_command`, the command line a
`results.json` stores, as someone would type it at the repository root;
`write_results`, the files themselves.

Every example and benchmark stores the command that made its results. Run
with `--out /abs/path/results/x`, the plain `" ".join(sys.argv)` stored the
build machine's absolute paths (`/work/wt/.../results/x`), which mean
nothing to a reader of the committed file; here a path inside the
repository is written relative to its root, and the script as
`examples/x.py` / `benchmarks/x.py` whatever the working directory was.
(The benchmarks import this through `benchmarks/measure.py`.)
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _relative(argument, root):
    """`argument` with an absolute path inside `root` made relative to it
    (also as the value of `--flag=/abs/path`); anything else unchanged."""
    flag, value = "", argument
    if argument.startswith("--") and "=" in argument:
        flag, value = argument.split("=", 1)
        flag += "="
    if not os.path.isabs(value):
        return argument
    path = os.path.normpath(value)
    if path != root and not path.startswith(root + os.sep):
        return argument
    return flag + os.path.relpath(path, root)


def repo_command(script, argv=None, root=REPO):
    """The command line that reruns `script` from the repository root.

    Args:
        script: the script's path (its `__file__`).
        argv: its arguments (default `sys.argv[1:]`); any value may be
            given, each is written with `str`.
        root: the repository root (default: the one holding this file).

    Returns:
        `"python <script relative to root> <arguments>"`, each argument
        that is an absolute path inside `root` written relative to it.
    """
    argv = sys.argv[1:] if argv is None else argv
    root = os.path.normpath(root)
    parts = ["python", _relative(os.path.abspath(script), root)]
    return " ".join(parts + [_relative(str(argument), root) for argument in argv])


def write_results(out, results, table=None, allow_nan=True):
    """Writes `out/results.json` (and `out/table.md` when `table` is given).

    Each file is written beside its place and moved there, so a reader (or
    a run cut short) never sees half a file. `allow_nan=False` makes a NaN
    an error instead of the non-standard `NaN` token.
    """
    os.makedirs(out, exist_ok=True)
    files = [("results.json", json.dumps(results, indent=2, allow_nan=allow_nan) + "\n")]
    if table is not None:
        files.append(("table.md", table.rstrip("\n") + "\n"))
    for name, text in files:
        path = os.path.join(out, name)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
