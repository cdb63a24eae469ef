"""The interrupt tests' scenario, many times in a row, with both cores kept busy.

    nice -n 5 python bench/interrupts.py [--rounds 30] [--moments workers-start] [--busy 2]

Runs `tests/interrupted_run.py multiprocess MOMENT` (a multi-process run, SIGINT to its
process as Beam's workers start, then a second run in the same process) in a session of its
own while `--busy` processes spin (a fresh clone's test run once hung here: a worker started
while the interrupt was handled outlived the run). A round passes when the script ends
within 120 s with its run interrupted, no child left, nothing on stderr that looks like a
failure, the next run right, and no process of its session left once it exited. Prints one
line per round, then passes, failures and the stop times (SIGINT to KeyboardInterrupt).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import psutil

TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")
SCRIPT = os.path.join(TESTS, "interrupted_run.py")
sys.path.insert(0, TESTS)
from own_session import run_in_own_session  # noqa: E402


def session_left(session: int) -> list[int]:
  """Processes still in the session the script started (Beam's workers would be there)."""
  left = []
  for proc in psutil.process_iter():
    try:
      if os.getsid(proc.pid) == session:
        left.append(proc.pid)
    except (OSError, psutil.Error):
      pass
  return left


def one_round(moment: str) -> tuple[bool, str, float]:
  """(passed, why not, stop seconds) of one run of the scenario."""
  done, hung = run_in_own_session(SCRIPT, "multiprocess", moment)
  if hung:
    return False, "hung for 120 s", float("nan")
  stdout, stderr = done.stdout, done.stderr
  time.sleep(0.5)  # a stray worker would still be there (it waits 60 s for its log channel)
  strays = session_left(done.pid)
  for pid in strays:
    try:
      os.kill(pid, 9)
    except OSError:
      pass
  if done.returncode != 0:
    return False, f"exit status {done.returncode}: {stderr.strip()[-300:]}", float("nan")
  outcome = json.loads(stdout.strip().splitlines()[-1])
  problems = [
    "not interrupted" if not outcome["interrupted"] else "",
    f"children left {outcome['children_left']}" if outcome["children_left"] else "",
    f"processes left after exit {strays}" if strays else "",
    "traceback on stderr" if "Traceback" in stderr or "Exception in thread" in stderr else "",
    "next run wrong" if outcome["next_elements_out"] != 30 else "",
  ]
  why = "; ".join(p for p in problems if p)
  return not why, why, outcome["stop_seconds"]


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=30)
  parser.add_argument("--moments", nargs="+", default=["workers-start"])
  parser.add_argument("--busy", type=int, default=2, help="busy loops beside the runs")
  args = parser.parse_args()
  busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
  results: dict[str, list] = {moment: [] for moment in args.moments}
  started = time.time()
  try:
    for n in range(1, args.rounds + 1):
      for moment in args.moments:
        passed, why, stop = one_round(moment)
        results[moment].append((passed, stop))
        print(
          f"round {n:2d} {moment}: {'pass' if passed else 'FAIL: ' + why}, stopped in {stop:.2f} s",
          flush=True,
        )
  finally:
    for loop in busy:
      loop.kill()
      loop.wait()
  for moment, rounds in results.items():
    stops = sorted(s for _, s in rounds if s == s)
    passes = sum(p for p, _ in rounds)
    print(
      f"{moment}: {passes} passed, {len(rounds) - passes} failed of {len(rounds)} "
      f"(with {args.busy} busy loops); stop time median {statistics.median(stops):.2f} s, "
      f"max {stops[-1]:.2f} s"
      if stops
      else f"{moment}: {passes} passed of {len(rounds)}"
    )
  print(f"{time.time() - started:.0f} s in all")
  return 0 if all(p for rounds in results.values() for p, _ in rounds) else 1


if __name__ == "__main__":
  sys.exit(main())
