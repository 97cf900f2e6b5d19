"""`python -m kudig_runner --input IN.json --output OUT.json [--max-output-bytes N] [--cwd DIR]`

Reads a task input (see protocol.py), runs the operator for its `type` in DIR (default: the
current directory, i.e. the workspace) plus the task's `workdir`, and writes the output to
OUT.json, at most N bytes when given (a pod's termination message: 4096). The task's own output
(command stdout/stderr) goes to our stdout; an error message is also printed to stderr.

Exit status: 0 iff the output has no error (2 when the input itself is unusable; an error output
is still written then).
"""

from __future__ import annotations

import argparse
import json
import sys

from .dispatch import run_task
from .protocol import MIN_OUTPUT_BYTES, ProtocolError, TaskOutput, error_output, fit_output, read_input


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kudig_runner", description="Run one kudig task.")
    parser.add_argument("--input", required=True, help="task input JSON file")
    parser.add_argument("--output", required=True, help="task output JSON file to write")
    parser.add_argument("--max-output-bytes", type=int, default=None, help="size limit of the output file")
    parser.add_argument("--cwd", default=".", help="workspace directory (default: current directory)")
    args = parser.parse_args(argv)
    if args.max_output_bytes is not None and args.max_output_bytes < MIN_OUTPUT_BYTES:
        parser.error(f"--max-output-bytes must be at least {MIN_OUTPUT_BYTES}")

    status = 0
    output: TaskOutput
    try:
        task_input = read_input(args.input)
    except (OSError, ProtocolError) as e:
        output = error_output(f"Invalid task input: {e}", "ProtocolError")
        status = 2
    else:
        output = run_task(task_input, args.cwd)
    sys.stdout.flush()
    # The status follows what is written: a result too large for the limit becomes an error.
    data = fit_output(output, args.max_output_bytes)
    error = json.loads(data)["error"]
    if error is not None:
        sys.stderr.write(f"error: {error['message']}\n")
        sys.stderr.flush()
        status = status or 1
    with open(args.output, "wb") as f:
        f.write(data)
    return status


if __name__ == "__main__":
    sys.exit(main())
