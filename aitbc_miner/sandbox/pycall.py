"""Child side of the ``python`` runner: call one trusted function, write its JSON result.

Run as ``python -I pycall.py --result FILE [--path DIR]... package.module:function`` with
the job payload (JSON) on stdin. Standard library only, and ``-I``: nothing from the
agent's environment or working directory decides what is imported, only ``--path``.
The result goes to a file, not stdout, so whatever the function prints stays log output.
A value that is not JSON-serialisable is reported as such (the runner: ``E_BADRESULT``);
an exception ends the process non-zero with its traceback on stderr (``E_EXIT``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import os
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pycall")
    parser.add_argument("--result", required=True)
    parser.add_argument("--path", action="append", default=[])
    parser.add_argument("target")
    args = parser.parse_args(argv)
    for path in reversed(args.path):
        sys.path.insert(0, path)
    payload = json.load(sys.stdin)
    module_name, _, function_name = args.target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    value = function(payload)
    if inspect.isawaitable(value):
        value = asyncio.run(_awaited(value))
    try:
        text = json.dumps({"ok": True, "output": value}, allow_nan=False)
    except (TypeError, ValueError) as exc:
        text = json.dumps({"ok": False, "code": "E_BADRESULT",
                           "message": f"returned a {type(value).__name__} that is not JSON: {exc}"})
    tmp = args.result + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, args.result)
    return 0


async def _awaited(value: object) -> object:
    return await value  # type: ignore[misc]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
