"""`python -m kudig_runner (--input IN.json | --input-env VAR | --input-parts DIR) --output OUT.json
[--max-output-bytes N] [--cwd DIR] [--prepare-from DIR]`

The input comes from a file (`kudig run`, or what an init container wrote), an environment
variable (a task pod in the runner image), or for an input too large for the pod spec, from
gzip'd parts mounted from ConfigMaps (`protocol.read_input_parts`).

With --prepare-from, the project files are first copied from ConfigMap mounts into DIR (see
prepare.py and projectfiles.py): a task pod in the runner image then needs no init container,
saving a container start per task.

Reads a task input (see protocol.py), runs the operator for its `type` in DIR (default: the
current directory, i.e. the workspace) plus the task's `workdir`, and writes the output to
OUT.json. The task's own output (command stdout/stderr) goes to our stdout; an error message is
also printed to stderr.

A successful output is at most `protocol.MAX_RESULT_BYTES` (1.5 MiB) in both modes. With
--max-output-bytes N (a pod's termination message: 4096) one that does not fit in N bytes is
written to our stdout as a frame (the container log) and OUT.json gets a pointer to it (see
protocol.py); without it (`kudig run`) the output file holds the whole output. Error outputs are
trimmed to fit instead.

Exit status: 0 iff the output has no error (2 when the input itself is unusable; an error output
is still written then).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .dispatch import run_task
from .prepare import copy_projects
from .protocol import (
    MIN_OUTPUT_BYTES,
    ProtocolError,
    TaskOutput,
    error_output,
    parse_input,
    read_input,
    read_input_parts,
    write_output,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kudig_runner", description="Run one kudig task.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="task input JSON file")
    source.add_argument(
        "--input-env", metavar="NAME", help="environment variable holding the task input JSON"
    )
    source.add_argument(
        "--input-parts", metavar="DIR", help="directory of mounted gzip'd parts of the task input"
    )
    parser.add_argument(
        "--prepare-from",
        metavar="DIR",
        help="first copy the project files from these ConfigMap mounts into --cwd (a pod without init container)",
    )
    parser.add_argument("--output", required=True, help="task output JSON file to write")
    parser.add_argument(
        "--max-output-bytes",
        type=int,
        default=None,
        help="size limit of the output file; a larger result goes to stdout, the file points to it",
    )
    parser.add_argument("--cwd", default=".", help="workspace directory (default: current directory)")
    args = parser.parse_args(argv)
    if args.max_output_bytes is not None and args.max_output_bytes < MIN_OUTPUT_BYTES:
        parser.error(f"--max-output-bytes must be at least {MIN_OUTPUT_BYTES}")

    status = 0
    output: TaskOutput
    try:
        if args.prepare_from:
            copy_projects(Path(args.prepare_from), Path(args.cwd))
    except (OSError, ValueError) as e:  # projectfiles.UnsafePath is a ValueError
        output = error_output(f"Cannot prepare the workspace: {e}", type(e).__name__)
        status = 2
    else:
        try:
            if args.input_env:
                task_input = parse_input(json.loads(os.environ.get(args.input_env, "")))
            elif args.input_parts:
                task_input = parse_input(json.loads(read_input_parts(args.input_parts)))
            else:
                task_input = read_input(args.input)
        except (OSError, ValueError, ProtocolError) as e:
            output = error_output(f"Invalid task input: {e}", "ProtocolError")
            status = 2
        else:
            output = run_task(task_input, args.cwd)
    sys.stdout.flush()
    # The status follows what is written: a result too large for the limit becomes an error.
    error = write_output(args.output, output, max_bytes=args.max_output_bytes)
    if error is not None:
        sys.stderr.write(f"error: {error['message']}\n")
        sys.stderr.flush()
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
