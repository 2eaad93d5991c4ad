"""Which operators of a TFLite file run in int8 and which in float: a count per operator and input type.

    python benchmarks/tflite_ops.py reports/models/*.tflite [-o reports/tflite-ops]

An int8 file is only fast when its network stays int8 end to end: every QUANTIZE / DEQUANTIZE pair
and every float operator between int8 ones is a fallback that XNNPACK runs in float, with a conversion
on each side. The counts say where a file falls back (e.g. squeeze-excitation blocks left float).
An operator XNNPACK has no kernel for (int8 HARD_SWISH in LiteRT 2.3) runs in TFLite's own kernel
instead and cuts the delegated graph: the XNNPACK partition count says how often (the network's own
partitions counted apart from those of the post-processing, whose ATAN2 / SELECT cut it by design).
The in-graph post-processing (3DMM landmark and pose math) is float by design and is counted apart:
operators after the network's last int8 operator.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from edgefa.benchmarks.machine import script_command
from edgefa.errors import EdgefaError
from edgefa.fileio import atomic_write_bytes, check_writable


def op_table(path: str | Path) -> dict:
    """Per operator (name, input element types): how many, split into network and post-processing."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()  # applies LiteRT's default XNNPACK delegate: one DELEGATE node per partition
    types = {t["index"]: t["dtype"].__name__ for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # the only listing LiteRT's Python API offers
    partitions = sum(op["op_name"] == "DELEGATE" for op in ops)  # appended after the file's own operators
    rows = [(op["op_name"], "/".join(sorted({types[i] for i in op["inputs"] if i >= 0 and i in types})))
            for op in ops if op["op_name"] != "DELEGATE"]
    last_int8 = max((i for i, (_, t) in enumerate(rows) if "int8" in t.split("/")), default=-1)
    network, post = Counter(rows[:last_int8 + 1]), Counter(rows[last_int8 + 1:])
    # a partition belongs to the network when it reads the file's input or a network operator's output
    made_by = {int(t): i for i, op in enumerate(ops) if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    made_by.update({int(d["index"]): -1 for d in interp.get_input_details()})
    in_network = sum(any(made_by.get(int(t), len(rows)) <= last_int8 for t in op["inputs"])
                     for op in ops if op["op_name"] == "DELEGATE")
    fallbacks = sum(n for (name, t), n in network.items() if name in ("QUANTIZE", "DEQUANTIZE")
                    or ("float32" in t and "int8" not in t))
    return {"file": str(path), "ops": len(rows), "network": network, "post": post, "float_in_network": fallbacks,
            "xnnpack_partitions": partitions, "network_partitions": in_network}


def to_markdown(tables: list[dict], command: str) -> str:
    lines = ["# Operators of the TFLite files: int8 or float", "", f"Command: `{command}`", ""]
    for t in tables:
        lines += [f"## `{Path(t['file']).name}`", "",
                  f"{t['ops']} operators; in the network (up to its last int8 operator) "
                  f"{t['float_in_network']} are float or conversions; XNNPACK runs the network as "
                  f"{t['network_partitions']} partition(s) and the whole file as {t['xnnpack_partitions']}, "
                  "with TFLite's own kernels between them.", "",
                  "| operator | input types | network | post-processing |", "|---|---|---:|---:|"]
        for key in sorted(set(t["network"]) | set(t["post"]), key=lambda k: (-t["network"].get(k, 0), k)):
            lines.append(f"| {key[0]} | {key[1]} | {t['network'].get(key, 0)} | {t['post'].get(key, 0)} |")
        lines.append("")
    return "\n".join(lines)


def files_report_main(prog: str, description: str, argv, op_table, to_markdown) -> int:
    """The command line of an operator report (also ``onnx_ops.py``): FILE... [-o OUTPUT]; a missing
    or unreadable file and an unwritable output are one error line each."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("files", nargs="+")
    parser.add_argument("-o", "--output", help="write OUTPUT.md")
    args = parser.parse_args(argv)
    try:
        output = check_writable(Path(args.output).with_suffix(".md"), "-o") if args.output else None
        tables = []
        for f in args.files:
            if not Path(f).is_file():
                raise EdgefaError(f"{f}: no such file")
            try:
                tables.append(op_table(f))
            except ImportError as exc:
                raise EdgefaError(f"{f}: its runtime is not installed ({exc.name})") from None
            except Exception as exc:  # the runtime's own parse error, whatever its type
                raise EdgefaError(f"{f}: not a readable model file ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    except EdgefaError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    text = to_markdown(tables, script_command(argv))
    if output:
        atomic_write_bytes(output, text.encode())
    print(text)
    return 0


def main(argv=None) -> int:
    return files_report_main("tflite_ops", __doc__.splitlines()[0], argv, op_table, to_markdown)


if __name__ == "__main__":
    sys.exit(main())
