"""The script behind `caeav bench` (same options): engines side by side on one bundle, in one process.

    python benchmarks/bench.py BUNDLE --engines torch,ort --batch 1,2 --precisions fp32,fp16,int8

All the measuring lives in `caeav.runtime.bench` (see its docstring for what each column means); this file only
forwards the command line to it.
"""

import sys

from caeav.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
