# Images/s of exported ONNX graphs on ONNX Runtime's CPU provider, interleaved in one run (the
# README's per-change figures for the QDQ graph: "each measured on the exported files alone").
# Not part of the test suite; needs onnxruntime and numpy (scripts/setup.sh puts them in .venv):
#   edge-infer to-onnx --qdq uint8 -o a.onnx boards/models/fmnist-bench.empf   (and b.onnx, …)
#   .venv/bin/python edge-infer/bench/ort_graphs.py a.onnx b.onnx [--rounds 6] [--seconds 1.5]
# Each round runs every file for --seconds after one warm-up call; it prints the best and all
# rounds' images/s and the best round's CPU milliseconds per image. Batch 64, 2 intra-op threads.
import argparse, time
import numpy as np
import onnxruntime as ort

ap = argparse.ArgumentParser()
ap.add_argument("files", nargs="+")
ap.add_argument("--rounds", type=int, default=6)
ap.add_argument("--seconds", type=float, default=1.5)
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--threads", type=int, default=2)
args = ap.parse_args()
if args.rounds < 1 or args.seconds <= 0 or args.batch < 1 or args.threads < 1:
    ap.error("--rounds, --batch and --threads must be at least 1 and --seconds positive")

def session(path):
    o = ort.SessionOptions()
    o.intra_op_num_threads = args.threads
    o.inter_op_num_threads = 1
    o.log_severity_level = 3
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])

def feed(s):
    i = s.get_inputs()[0]
    shape = [args.batch if not isinstance(d, int) else d for d in i.shape]
    rng = np.random.default_rng(0)
    return {i.name: rng.random(shape, dtype=np.float32)}

runs = {f: (session(f), []) for f in args.files}
feeds = {f: feed(s) for f, (s, _) in runs.items()}
for _ in range(args.rounds):
    for f, (s, res) in runs.items():
        x = feeds[f]
        s.run(None, x)
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < args.seconds:
            s.run(None, x)
            n += 1
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        res.append((n * args.batch / dt, dc * 1000 / (n * args.batch)))
for f, (_, res) in runs.items():
    best = max(res)
    print(f"{f}: best {best[0]:.0f} images/s ({best[1]:.2f} ms CPU per image); "
          f"rounds {[round(r[0]) for r in res]}")
