"""`make bench`: every benchmark in its own process (one engine each), then one table.

python bench/run_all.py [--only judge,best_of] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["sample_throughput", "reviser", "judge", "best_of", "evaluate", "ifeval_bench", "critic_client"]


def run(name: str, repeats: int) -> dict:
    done = subprocess.run(
        [sys.executable, str(HERE / f"{name}.py"), "--repeats", str(repeats)],
        capture_output=True,
        text=True,
        cwd=HERE,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return {"benchmark": name, "error": " | ".join(tail) or f"exit {done.returncode}"}
    return json.loads(lines[-1])


def table(results: list[dict]) -> str:
    rows = [
        "| stage | workload | unit | baseline (median) | seftgen (median) | ratio median [min, max] | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['benchmark']} | failed: {r['error']} | | | | | |")
            continue
        work = ", ".join(f"{k} {v}" for k, v in r["workload"].items() if k not in ("model", "repeats"))
        rows.append(
            f"| {r['benchmark']} | {work} | {r['unit']} | {r['baseline']}: {r['baseline_median']} "
            f"| {r['ours']}: {r['ours_median']} | **{r['ratio_median']}** [{r['ratio_min']}, {r['ratio_max']}] "
            f"| >= {r['target']} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    names = args.only.split(",") if args.only else BENCHMARKS
    results = []
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results.append(run(name, args.repeats))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(table(results))
    sys.exit(1 if any("error" in r for r in results) else 0)


if __name__ == "__main__":
    main()
