"""The reliability run, small: ticks and outbox runs killed with SIGKILL at random moments against
a local SMTP server (aiosmtpd) and a local webhook receiver, then left to finish. Nothing is sent
twice, nothing is lost; a send a kill interrupted is ``unknown`` (email) or sent again with the
same key (webhooks). With a vendor answering 429 (Retry-After), 5xx and slowly, every touch is
delivered within the retry cap and a permanent 4xx is recorded and never asked again.

The long run: ``python bench/reliability.py --kills 50 [--vendor-faults]`` (figures in
docs/reliability.md). Select these with ``pytest -m reliability``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.reliability

BENCH = Path(__file__).resolve().parents[2] / "bench" / "reliability.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_reliability", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_killed_ticks_and_outbox_runs_send_nothing_twice_and_lose_nothing(bench: ModuleType, tmp_path: Path) -> None:
    figs = bench.run(kills=3, accounts=8, days=2, seed=5, workdir=tmp_path, say=lambda line: None)
    assert figs.kills.total == 3
    assert figs.expected == 8 * 2 * 2
    assert (figs.duplicates, figs.lost, figs.pending) == (0, 0, 0), "\n".join(figs.lines())
    assert figs.delivered + figs.unknown == figs.expected
    assert figs.failed == 0
    printed = "\n".join(figs.lines())
    assert f"expected touches {figs.expected}, delivered {figs.delivered}, duplicates 0, lost 0" in printed


def test_a_faulty_vendor_gets_every_touch_within_the_cap_and_a_4xx_is_never_retried(
    bench: ModuleType, tmp_path: Path
) -> None:
    figs = bench.run(kills=2, accounts=20, days=1, seed=3, vendor_faults=True, workdir=tmp_path, say=lambda line: None)
    v = figs.vendor
    assert (figs.duplicates, figs.lost, figs.pending) == (0, 0, 0), "\n".join(figs.lines())
    assert v["bad_touches"] == figs.failed == 1  # one account in 20 has an endpoint that answers 400
    assert v["asked_again_4xx"] == 0
    assert v["429"] + v["5xx"] > 0 and v["retry_after_honoured"] == v["retry_after_followed"]  # after a kill too
    assert v["capped"] == 0  # every other touch delivered within the retry cap
    assert figs.delivered + figs.unknown + figs.failed == figs.expected
