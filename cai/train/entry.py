"""What each process started by `accelerate launch` runs: `python -m cai.train.entry PLAN.json`."""

from __future__ import annotations

import json
import sys


def main(argv: list[str] | None = None) -> int:
    from cai.errors import CaiError
    from cai.train.runner import RunPlan, execute

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m cai.train.entry PLAN.json (written by `cai train ... --num-processes N`)",
              file=sys.stderr)
        return 2
    try:
        plan = RunPlan(**json.loads(open(argv[0], encoding="utf-8").read()))
        execute(plan, launched=True)
    except CaiError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return err.exit_code
    except OSError as err:
        print(f"error: {argv[0]}: cannot read the launch plan: {err.strerror or err}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
