"""What a compiled call's guard costs: the check, before every call, that no parameter, buffer or
submodule was replaced (lucid/guard.py), on the seed's transposed conv and on the UNet3D of examples/.

    python benchmarks/guard.py

Prints the median and best time of one check over repeated rounds, and the whole compiled call's
median beside it, so the guard's share of a call can be read off.
"""
from __future__ import annotations

import os
import statistics
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
import lucid  # noqa: E402
import lucid.nn as nn  # noqa: E402
from models import UNet3D  # noqa: E402


def per_call_us(fn, number: int, rounds: int = 15) -> list[float]:
    return [1e6 * t / number for t in timeit.repeat(fn, number=number, repeat=rounds)]


def report(label: str, model, shape: tuple) -> None:
    with lucid.no_grad():
        fast = lucid.compile(model, lucid.spec(*shape))
        x = lucid.Tensor.randn(*shape)
        fast(x)
        guard = per_call_us(fast._snapshot.holds, 2000)
        call = per_call_us(lambda: fast(x), 20, 7)
    print(f"{label:<34} guard median {statistics.median(guard):6.2f} us  best {min(guard):6.2f} us   "
          f"compiled call median {statistics.median(call):9.1f} us")


def main() -> None:
    lucid.manual_seed(0)
    report("seed ConvTranspose3d(4, 2, k3 s2)",
           nn.ConvTranspose3d(4, 2, kernel_size=3, stride=2, padding=1, output_padding=1), (1, 4, 8, 8, 8))
    report("UNet3D() eval", UNet3D().eval(), (1, 1, 32, 32, 32))


if __name__ == "__main__":
    main()
