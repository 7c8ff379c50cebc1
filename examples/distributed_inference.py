"""Batch inference across MPI ranks: a folder of volumes segmented by an exported 3-D UNet.

    mpiexec -n 4 .venv/bin/python examples/distributed_inference.py --input volumes/ --output results/
    mpiexec -n 2 .venv/bin/python examples/distributed_inference.py      # synthetic volumes
    .venv/bin/python examples/distributed_inference.py                   # one process, the same results

Rank 0 exports the UNet of examples/models.py (`lucid.export`, for one window of --window^3 voxels;
its weights from --weights, a file `lucid.save` wrote of the model's state dict, else seeded random
ones) into the output folder; every rank loads that library (`lucid.runtime.load`). The volumes
(`*.npy`, each (D, H, W) or (C, D, H, W), of any size) are sorted by name and dealt out: rank r
takes volumes r, r + ranks, r + 2 ranks, ... Each rank runs sliding-window inference
(`lucid.inference.sliding_window`: overlapping windows, Gaussian blending) on its volumes and writes
each foreground probability map to `<output>/<name>.npy`. Rank 0 gathers every volume's summary
(shape, foreground fraction, mean foreground probability) with one all_gather, prints the table and
writes it to `<output>/summary.json`.

Without --input, rank 0 first writes a few synthetic volumes of varying sizes (noise plus bright
balls) to `<output>/synthetic-volumes/`. The output folder must be one every rank sees (on a cluster,
a shared file system). A volume's result does not depend on the number of ranks.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

# Run from a checkout without installing: the repository root holds the lucid package, this
# directory holds models.py.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import lucid  # noqa: E402
import lucid.distributed as dist  # noqa: E402
from lucid.inference import sliding_window  # noqa: E402
from models import UNet3D  # noqa: E402

SUMMARY_FIELDS = ("volume", "depth", "height", "width", "foreground_fraction", "mean_probability")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, help="folder of .npy volumes (default: write synthetic ones)")
    parser.add_argument("--output", type=Path, default=Path("distributed-inference"),
                        help="folder for the library, the probability maps and summary.json "
                             "(default ./distributed-inference)")
    parser.add_argument("--weights", type=Path, help="the UNet's state dict, as lucid.save wrote it")
    parser.add_argument("--window", type=int, default=16, help="window size in voxels per axis (default 16)")
    parser.add_argument("--overlap", type=float, default=0.25, help="window overlap (default 0.25)")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads per rank (default 0: every core the rank may use)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and volumes (default 0)")
    args = parser.parse_args(argv)
    if args.window % 4:
        parser.error("--window must be divisible by 4 (the UNet pools twice)")
    return args


def write_synthetic_volumes(folder: Path, seed: int) -> None:
    """Five volumes of different sizes: noise plus one to three bright balls."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for number, shape in enumerate([(24, 20, 16), (16, 16, 16), (30, 18, 22), (12, 26, 20), (20, 20, 28)]):
        grid = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), axis=-1)
        volume = rng.normal(0, 0.3, shape)
        for _ in range(rng.integers(1, 4)):
            centre, radius = rng.uniform(0, shape), rng.uniform(3, 6)
            volume[((grid - centre) ** 2).sum(axis=-1) <= radius ** 2] += 1.0
        np.save(folder / f"volume{number:02d}.npy", volume.astype(np.float32))


def export_unet(args, path: Path) -> None:
    lucid.manual_seed(args.seed)
    model = UNet3D(in_channels=1, out_channels=2, base=4, depth=2)
    if args.weights:
        model.load_state_dict(lucid.load(args.weights))
    lucid.export(model, lucid.spec(1, 1, args.window, args.window, args.window), path=path)


def segment(library, volume_path: Path, output: Path, args) -> list[float]:
    """Write the volume's foreground probability map; return its summary row (without its number)."""
    volume = np.load(volume_path).astype(np.float32)
    volume = volume.reshape((1, 1) + volume.shape) if volume.ndim == 3 else volume[None]
    logits = sliding_window(library, volume, args.window, overlap=args.overlap, blend="gaussian")
    foreground = 1 / (1 + np.exp(logits[0, 0] - logits[0, 1]))          # softmax over the two classes
    np.save(output / volume_path.name, foreground.astype(np.float32))
    return [*foreground.shape, float((foreground > 0.5).mean()), float(foreground.mean())]


def gather_summaries(rows: dict[int, list[float]], count: int) -> list[list[float]]:
    """Every rank's {volume number: summary} as one table on every rank, ordered by volume, with one
    all_gather of a fixed-size array per rank (unused rows hold volume -1)."""
    per_rank = -(-count // dist.get_world_size())
    mine = np.full((per_rank, len(SUMMARY_FIELDS)), -1.0)
    for row, (number, summary) in enumerate(sorted(rows.items())):
        mine[row] = [number, *summary]
    everyone = np.empty((dist.get_world_size() * per_rank, len(SUMMARY_FIELDS)))
    dist.all_gather_into_tensor(everyone, mine)
    return sorted(row.tolist() for row in everyone if row[0] >= 0)


def main(argv=None) -> None:
    args = parse_args(argv)
    dist.init()
    rank, ranks = dist.get_rank(), dist.get_world_size()
    args.output.mkdir(parents=True, exist_ok=True)
    folder = args.input or args.output / "synthetic-volumes"
    library_path = args.output / "unet3d.so"
    if rank == 0:
        if args.input is None:
            write_synthetic_volumes(folder, args.seed)
        export_unet(args, library_path)
    dist.barrier()                                   # the volumes and the library are there for everyone
    library = lucid.runtime.load(library_path)
    library.set_num_threads(args.threads)
    volumes = sorted(folder.glob("*.npy"))
    mine = {number: segment(library, volumes[number], args.output, args)
            for number in range(rank, len(volumes), ranks)}
    table = gather_summaries(mine, len(volumes))
    if rank == 0:
        report(table, volumes, args.output, ranks)


def report(table, volumes, output: Path, ranks: int) -> None:
    records = [dict(zip(SUMMARY_FIELDS, row), name=volumes[int(row[0])].name) for row in table]
    for record in records:
        record.update({key: int(record[key]) for key in SUMMARY_FIELDS[:4]})
    (output / "summary.json").write_text(json.dumps(records, indent=1))
    print(f"{len(records)} volumes on {ranks} rank(s); probability maps in {output}/")
    print(f"{'volume':<16} {'shape':>12} {'foreground':>10} {'mean p':>8}")
    for r in records:
        shape = f"{r['depth']}x{r['height']}x{r['width']}"
        print(f"{r['name']:<16} {shape:>12} {r['foreground_fraction']:>10.4f} {r['mean_probability']:>8.4f}")


if __name__ == "__main__":
    main()
