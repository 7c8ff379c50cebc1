"""Graph passes, one file each; every pass takes a graph and returns a new one (see each docstring).
`pipeline.py` says which run in which order (the named pipelines) and runs them (`PassManager`)."""
from . import autodiff, common_subexpressions, constant_folding, dead_code, shape_inference
from .pipeline import PASSES, PIPELINES, PassManager, run_pipeline

infer_shapes = shape_inference.run
differentiate = autodiff.run
fold_constants = constant_folding.run
eliminate_common_subexpressions = common_subexpressions.run
eliminate_dead_code = dead_code.run
