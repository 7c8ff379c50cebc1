"""Time lucid's eager 3-D convolution and transposed convolution.

    python benchmarks/eager_conv.py            # warm-up + >=5 timed reps per case
    python benchmarks/eager_conv.py --quick    # smoke run: 1 rep, no warm-up
    python benchmarks/eager_conv.py --threads 2

For every case it reports the median wall time of the forward pass (under no_grad)
and of forward + backward (input, weight and bias gradients), the achieved GFLOP/s
(2 * MACs / time; forward + backward counts 3x the forward MACs), and, when torch is
importable, torch's median in the same run on the same weights and the ratio
torch_ms / lucid_ms (above 1 means lucid is faster).
"""

import argparse
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 rep per case, no warm-up")
    p.add_argument("--budget", type=float, default=2.0,
                   help="seconds of timed reps to aim for per case and mode (default 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="thread count for numpy's BLAS (set before import) and torch")
    p.add_argument("--no-torch", action="store_true", help="do not time torch even if installed")
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.threads:
    # must happen before numpy (and its BLAS) is imported
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lucid  # noqa: E402
import lucid.nn as nn  # noqa: E402

# (label, kind, input shape, out_channels, kernel, stride, padding, output_padding)
CASES = [
    ("lazy-decoder", "convT", (2, 64, 4, 8, 8), 32, 4, 2, 1, 0),
    ("conv-32^3", "conv", (1, 32, 32, 32, 32), 32, 3, 1, 1, 0),
    ("up-16x32x32", "convT", (1, 32, 16, 32, 32), 16, 4, 2, 1, 0),
    ("seed-000", "convT", (1, 4, 8, 8, 8), 2, 3, 2, 1, 1),
    ("conv-16x64x64", "conv", (1, 8, 16, 64, 64), 8, 3, 1, 1, 0),
]


def out_spatial(kind, spatial, k, s, p, op):
    if kind == "conv":
        return tuple((n + 2 * p - k) // s + 1 for n in spatial)
    return tuple((n - 1) * s - 2 * p + (k - 1) + op + 1 for n in spatial)


def forward_macs(kind, shape, cout, k, s, p, op, groups=1):
    n, cin, *spatial = shape
    kvol = k ** len(spatial)
    if kind == "conv":
        return n * cout * int(np.prod(out_spatial(kind, spatial, k, s, p, op))) * cin // groups * kvol
    return n * cin * int(np.prod(spatial)) * cout // groups * kvol


def timeit(fn, setup, reps, warmup):
    for _ in range(warmup):
        setup()
        fn()
    times = []
    for _ in range(reps):
        setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), times


def choose_reps(fn, setup, quick, budget):
    """One untimed-for-the-median call decides how many reps fit in the budget."""
    if quick:
        return 1, 0
    setup()
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    reps = int(min(50, max(5, budget / max(first, 1e-6))))
    return reps, 1


def bench_lucid(kind, shape, cout, k, s, p, op, quick, budget):
    cin = shape[1]
    if kind == "conv":
        m = nn.Conv3d(cin, cout, k, stride=s, padding=p)
    else:
        m = nn.ConvTranspose3d(cin, cout, k, stride=s, padding=p, output_padding=op)
    xdata = lucid.Tensor.randn(*shape).data.copy()
    results = {}

    x_fwd = lucid.Tensor(xdata)

    def fwd():
        with lucid.no_grad():
            return m(x_fwd)

    reps, warm = choose_reps(fwd, lambda: None, quick, budget)
    results["fwd"] = (timeit(fwd, lambda: None, reps, warm)[0], reps)
    out_lucid = fwd().data

    state = {}

    def setup_bwd():
        m.zero_grad()
        state["x"] = lucid.Tensor(xdata, requires_grad=True)

    def fwd_bwd():
        y = m(state["x"])
        y.backward()

    reps, warm = choose_reps(fwd_bwd, setup_bwd, quick, budget)
    results["fwd+bwd"] = (timeit(fwd_bwd, setup_bwd, reps, warm)[0], reps)
    bias = None if m.bias is None else m.bias.data
    return results, m.weight.data, bias, xdata, out_lucid


def bench_torch(torch, kind, s, p, op, weight, bias, xdata, reps_by_mode, quick):
    F = torch.nn.functional
    w = torch.from_numpy(np.ascontiguousarray(weight)).requires_grad_(True)
    b = None if bias is None else torch.from_numpy(np.ascontiguousarray(bias)).requires_grad_(True)
    x_fwd = torch.from_numpy(np.ascontiguousarray(xdata))

    def run(x):
        if kind == "conv":
            return F.conv3d(x, w, b, stride=s, padding=p)
        return F.conv_transpose3d(x, w, b, stride=s, padding=p, output_padding=op)

    def fwd():
        with torch.no_grad():
            return run(x_fwd)

    results = {}
    warm = 0 if quick else 1
    results["fwd"] = timeit(fwd, lambda: None, reps_by_mode["fwd"], warm)[0]
    out_torch = fwd().numpy()

    state = {}

    def setup_bwd():
        w.grad = None
        if b is not None:
            b.grad = None
        state["x"] = torch.from_numpy(np.ascontiguousarray(xdata)).requires_grad_(True)

    def fwd_bwd():
        y = run(state["x"])
        y.backward(torch.ones_like(y))

    results["fwd+bwd"] = timeit(fwd_bwd, setup_bwd, reps_by_mode["fwd+bwd"], warm)[0]
    return results, out_torch


def main(args):
    torch = None
    if not args.no_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            torch = None
    if torch is not None and args.threads:
        torch.set_num_threads(args.threads)

    lucid.manual_seed(0)
    print(f"lucid eager conv benchmark  (numpy {np.__version__}, cpus {os.cpu_count()}, "
          f"threads {'env default' if not args.threads else args.threads}"
          + (f", torch {torch.__version__} with {torch.get_num_threads()} threads" if torch else
             ", torch not importable")
          + (", QUICK: 1 rep" if args.quick else "") + ")")
    header = (f"{'case':<14} {'input shape':<20} {'op':<32} {'mode':<8} {'reps':>4} "
              f"{'lucid ms':>10} {'GFLOP/s':>8}")
    if torch:
        header += f" {'torch ms':>10} {'GFLOP/s':>8} {'torch/lucid':>11} {'max|diff|':>9}"
    print(header)
    print("-" * len(header))

    for label, kind, shape, cout, k, s, p, op in CASES:
        name = "Conv3d" if kind == "conv" else "ConvTranspose3d"
        opdesc = f"{name}->{cout} k{k} s{s} p{p}" + (f" op{op}" if op else "")
        res, weight, bias, xdata, out_lucid = bench_lucid(kind, shape, cout, k, s, p, op,
                                                          args.quick, args.budget)
        tres = None
        if torch:
            tres, out_torch = bench_torch(torch, kind, s, p, op, weight, bias, xdata,
                                          {mode: reps for mode, (_, reps) in res.items()}, args.quick)
            diff = float(np.max(np.abs(out_lucid.astype(np.float64) - out_torch)))
        macs = forward_macs(kind, shape, cout, k, s, p, op)
        for mode, (sec, reps) in res.items():
            flops = 2 * macs * (1 if mode == "fwd" else 3)
            line = (f"{label:<14} {str(shape):<20} {opdesc:<32} {mode:<8} {reps:>4} "
                    f"{sec * 1e3:>10.2f} {flops / sec / 1e9:>8.1f}")
            if tres:
                tsec = tres[mode]
                line += (f" {tsec * 1e3:>10.2f} {flops / tsec / 1e9:>8.1f} {tsec / sec:>11.3f}"
                         + (f" {diff:>9.1e}" if mode == "fwd" else ""))
            print(line, flush=True)


if __name__ == "__main__":
    main(ARGS)
