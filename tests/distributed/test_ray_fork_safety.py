"""A Ray run leaves nothing behind that a forked child could trip over.

``ray.init`` can leave a reference cycle holding Ray's native GCS client (an exception and
the frame that raised it, in Ray's own start-up). Collected later in a process forked from
this one, such as a training DataLoader worker, the client's destructor detaches a thread
the child does not have and aborts it: a CI run failed that way ("DataLoader worker ...
killed by signal: Aborted"), in a training test run after Ray tests in the same process. A
run that starts Ray itself frees that garbage in this process."""

from __future__ import annotations

import gc

import pytest
import ray

from clipforge.distributed import embed
from tests.distributed.test_ray_embed import folder, model_dir  # noqa: F401  (fixtures)

NATIVE = {"GcsClient", "InnerGcsClient", "CoreWorker"}
"""Ray's objects that own native threads (what the aborted child's trace destroyed)."""


def _native_ray_objects_in_garbage() -> set[str]:
    """Names of Ray's thread-owning objects reachable only through garbage cycles."""
    gc.set_debug(gc.DEBUG_SAVEALL)  # keep what a collection finds, to look at it
    try:
        gc.collect()
        return {type(r).__name__ for o in gc.garbage for r in gc.get_referents(o)} & NATIVE
    finally:
        gc.set_debug(0)
        gc.garbage.clear()  # the cycles are collected for real at the next collection


@pytest.mark.slow  # two local Ray instances, one after the other
def test_a_ray_run_leaves_no_native_garbage_for_forked_children(model_dir, folder, tmp_path):  # noqa: F811
    gc.collect()  # start from a clean heap: only these runs' garbage counts
    assert not ray.is_initialized()  # embed starts (and so owns) Ray here
    for run in ("first", "second"):  # the cycle appeared on a second start in one process
        report = embed(folder, tmp_path / run, model=model_dir, shard_size=4, batch_size=3)
        assert report.n_embedded == 10 and not ray.is_initialized()
    assert _native_ray_objects_in_garbage() == set()
