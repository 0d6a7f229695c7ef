"""Run every benchmark by hand and keep the raw results under build/benchmarks/.

``make bench`` calls this. The Yeom et al. reproduction takes ~10 minutes per network with 50
seeds, so it runs only with ``--yeom``. Figures are transcribed, with machine notes, into
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "build" / "benchmarks"


def run(args: list[str], log: str) -> None:
    print("$", " ".join(args), flush=True)
    with open(OUT / log, "w") as fh:
        subprocess.run([sys.executable, *args], check=True, stdout=fh, stderr=subprocess.STDOUT)
    print((OUT / log).read_text()[-2000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yeom", action="store_true", help="also run the Yeom et al. toy study")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    run([str(HERE / "bench_core.py")], "core.json")
    run([str(HERE / "bench_explain.py"), "--out", str(OUT / "explain.json")], "explain.log")
    run([str(HERE / "bench_panel.py")], "panel.log")
    # the features of the second round (each writes its own section of docs/benchmarks.md)
    for name in ("bench_heads_blocks", "bench_recalibrate", "bench_deploy",
                 "bench_sensitivity_auto", "bench_vit_explain", "bench_dynamic",
                 "bench_pathways", "bench_stream", "bench_grounding"):
        run([str(HERE / f"{name}.py")], f"{name}.log")
    if args.yeom:
        run([str(HERE / "yeom_toy.py"), "--seeds", "50", "--out", str(OUT / "yeom.json")],
            "yeom.log")
        run([str(HERE / "yeom_toy.py"), "--seeds", "50", "--as-their-code",
             "--out", str(OUT / "yeom_their_code.json")], "yeom_their_code.log")


if __name__ == "__main__":
    main()
