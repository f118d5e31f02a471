# vqgrad against PyTorch on the same machine, back to back in one run (the comparison command). Run by hand,
# never in CI, from the repository root after `cargo build --release`, with PyTorch in a scratch environment:
#   python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch
#   /tmp/torchenv/bin/python benches/compare.py [--skip-reproduce]
# It prints one table: vqgrad's figure (on the engine `--engine auto` picks, and each engine where both ran),
# PyTorch's (2 threads), and their ratio, for one run's E1 steps/s per estimator, the E1 sweep's run-steps/s
# (4 estimators x 5 seeds x 256 steps; PyTorch one run at a time), the nearest-code search at two shapes, and the
# wall time of `vqgrad reproduce --quick`.
import json, os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pytorch_anchors as pt  # noqa: E402

VQGRAD = os.environ.get("VQGRAD", "target/release/vqgrad")
SHAPES = [(65536, 512, 64), (16384, 1024, 256)]

def run(args):
    out = subprocess.run([VQGRAD, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{VQGRAD} {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
    return out

def timed(args):
    t = time.perf_counter(); run(args); return time.perf_counter() - t

def main():
    skip_reproduce = "--skip-reproduce" in sys.argv
    info = json.loads(run(["info", "--json"]).stdout)
    print(f"{time.strftime('%Y-%m-%d')}; vqgrad {info['version']}, engine auto: {info['engine']}; "
          f"adapter: {(info['chosen'] or {}).get('name', 'none')}; torch {pt.torch.__version__}, "
          f"{pt.torch.get_num_threads()} threads")
    bench = json.loads(run(["bench", "--json", "--quick"]).stdout)
    rows = []
    e1 = {t["estimator"]: t for t in bench["training"] if t["setting"] == "E1"}
    for est in ["ste", "rotation", "rotation-trick"]:
        gpu, cpu = e1[est]["gpu_steps_per_sec"], e1[est]["cpu_steps_per_sec"]
        rows.append((f"E1 steps/s, {est} (GPU {gpu or 0:.0f}, CPU {cpu:.0f}; step time over ste's: "
                     f"GPU {e1[est]['gpu_ratio_to_ste'] or 0:.3f}, CPU {e1[est]['cpu_ratio_to_ste']:.3f})",
                     max(gpu or 0, cpu), pt.train_steps_per_sec(est)))
    with tempfile.TemporaryDirectory() as tmp:
        grid = ["sweep", "--preset", "E1", "--estimator", "ste,rotation,rotation-trick,diveq", "--seeds", "0..5",
                "--set", "steps=256", "--set", "eval-every=256", "--quiet", "--out", os.path.join(tmp, "r.jsonl")]
        wall = timed(grid)
        rows.append(("E1 sweep, run-steps/s (vqgrad: --engine auto, default --jobs)", 20 * 256 / wall,
                     pt.sweep_run_steps_per_sec()))
        for n, k, m in SHAPES:
            a = next(a for a in bench["assign"] if (a["n"], a["k"], a["m"]) == (n, k, m))
            v = max(a["gpu_gflops"] or 0, a["cpu_gflops"])
            rows.append((f"nearest code GFLOP/s, N={n} K={k} m={m}", v, pt.assign_gflops(n, k, m)))
        if not skip_reproduce:
            secs = timed(["reproduce", "--quick", "--quiet", "--out", os.path.join(tmp, "rq")])
            print(f"reproduce --quick: {secs:.0f} s wall (target: at most 120 s)")
    print(f"| figure | vqgrad | PyTorch | vqgrad / PyTorch |\n|---|---|---|---|")
    for what, ours, theirs in rows:
        print(f"| {what} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f} |")

if __name__ == "__main__":
    main()
