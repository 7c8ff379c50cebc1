"""What the training examples share: synthetic volumes, a training step, timing, LLVM counters and
the loss summary.

    from example_tools import training_parser, train, report_loss, report_step_times

A training step is `loss_fn(net(inputs), targets)`, backward, optimiser step; `net` is either the
eager model or its `lucid.compile`d form, so the same code times both.
"""

import argparse
import time

import numpy as np

from lucid.codegen import jit


def training_parser(doc: str, steps: int, batch: int, quick: str) -> argparse.ArgumentParser:
    """A parser with the options every training example has: --steps, --batch, --lr, --seed and
    --quick (whose help, `quick`, says what it sets); the example adds its own."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--steps", type=int, default=steps, help=f"training steps (default {steps})")
    parser.add_argument("--batch", type=int, default=batch, help=f"examples per batch (default {batch})")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 1e-2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the data (default 0)")
    parser.add_argument("--quick", action="store_true", help=f"tiny smoke run: {quick}")
    return parser


def check_steps(parser: argparse.ArgumentParser, args) -> None:
    if args.steps < 2:
        parser.error("--steps must be at least 2")


def sphere_mask(rng, size):
    """A (size, size, size) boolean mask: the union of 1 to 3 spheres at random places."""
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), axis=-1)
    mask = np.zeros((size,) * 3, dtype=bool)
    for _ in range(rng.integers(1, 4)):
        radius = rng.uniform(size / 8, size / 4) + 0.5
        centre = rng.uniform(radius - 1, size - radius, size=3)
        mask |= ((grid - centre) ** 2).sum(axis=-1) <= radius ** 2
    return mask


def train_step(net, optimizer, loss_fn, inputs, targets):
    """One step: forward with `net` (compiled or eager), `loss_fn`, backward, optimiser step. Returns the loss."""
    optimizer.zero_grad()
    loss = loss_fn(net(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.item()


def train(net, optimizer, loss_fn, next_batch, steps):
    """Train for `steps` steps on batches from `next_batch()`, logging the loss; returns the losses
    and what the first step cost (`describe_first_call`: tracing, LLVM or the disk cache)."""
    log_every = max(1, steps // 10)
    losses, before, first_step = [], llvm_counts(), ""
    for step in range(1, steps + 1):
        inputs, targets = next_batch()
        loss, seconds = timed(train_step, net, optimizer, loss_fn, inputs, targets)
        losses.append(loss)
        if step == 1:
            first_step = describe_first_call(seconds, before)
        if step % log_every == 0 or step == 1:
            print(f"step {step:4d}  loss {losses[-1]:.4f}", flush=True)
    return losses, first_step


def time_steps(net, optimizer, loss_fn, inputs, targets, repeats):
    """Median seconds of `repeats` training steps with `net` on one batch (after one warm-up step)."""
    return median_seconds(lambda: train_step(net, optimizer, loss_fn, inputs, targets), repeats)


def human_bytes(count: int) -> str:
    """`1105920` -> `'1.1 MiB'`: bytes in binary units."""
    if count < 1024:
        return f"{count} bytes"
    if count < 1024 ** 2:
        return f"{count / 1024:.1f} KiB"
    return f"{count / 1024 ** 2:.1f} MiB"


def median_seconds(fn, repeats):
    """Median seconds of `repeats` calls of `fn()`, after one warm-up call."""
    fn()
    return float(np.median([timed(fn)[1] for _ in range(repeats)]))


def timed(fn, *args):
    """(fn(*args), seconds it took)."""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def llvm_counts():
    """(modules compiled by LLVM, objects loaded from the disk cache) so far in this process."""
    return jit.COUNTERS["compiled"], jit.COUNTERS["loaded"]


def describe_first_call(seconds, before):
    """What a first compiled call cost, and whether LLVM ran or the disk cache answered."""
    compiled, loaded = (now - then for now, then in zip(llvm_counts(), before))
    source = f"LLVM compiled {compiled} module(s)" if compiled else "no LLVM compilation"
    if loaded:
        source += f", {loaded} loaded from the disk cache"
    return f"{seconds:.2f} s (tracing + passes + {source})"


def first_vs_last(losses):
    """Mean loss of the first and of the last tenth of the steps (at least 3 steps each, if there are)."""
    count = min(max(3, len(losses) // 10), len(losses) // 2)
    return float(np.mean(losses[:count])), float(np.mean(losses[-count:])), count


def report_loss(losses):
    """Print the first vs last average loss; True if it fell."""
    first, last, window = first_vs_last(losses)
    verdict = f"fell by {100 * (first - last) / first:.1f}%" if last < first else "DID NOT FALL"
    print(f"loss: first {window} steps {first:.4f} -> last {window} steps {last:.4f} ({verdict})")
    return last < first


def report_step_times(compiled, model, optimizer, loss_fn, inputs, targets):
    """Time training steps on one batch with the compiled and the eager model; print both medians."""
    compiled_seconds = time_steps(compiled, optimizer, loss_fn, inputs, targets, repeats=5)
    eager_seconds = time_steps(model, optimizer, loss_fn, inputs, targets, repeats=3)
    batch = inputs.shape[0]
    print(f"training step (median), batch {batch}: compiled {1e3 * compiled_seconds:.1f} ms, "
          f"eager {1e3 * eager_seconds:.1f} ms -> compiled is {eager_seconds / compiled_seconds:.1f}x faster")
