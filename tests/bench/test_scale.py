"""bench/scale.py: how many generator processes and source addresses n connections need, when
W workers are too few, and the kernel's memory per socket from /proc."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from bench.scale import Kernel, plan, too_few_workers


def test_a_small_run_keeps_the_given_processes_and_sixteen_sources() -> None:
    layout = plan(20_000, 2, limit=20_000, ports=28_232)
    assert layout.processes == 2
    assert layout.sources == tuple(f"127.0.0.{i}" for i in range(2, 18))


def test_a_million_needs_more_processes_and_sources_each_process_its_own() -> None:
    layout = plan(1_000_000, 2, limit=20_000, ports=28_232)
    assert layout.processes == 56                       # 1M / (0.9 x 20,000)
    assert layout.processes * 18_000 >= 1_000_000
    assert len(layout.sources) % layout.processes == 0
    per_source = 1_000_000 / len(layout.sources)
    assert per_source <= 0.4 * 28_232      # connect() takes the even half first
    assert len(set(layout.sources)) == len(layout.sources)


def test_more_sources_than_loopback_has_is_an_error() -> None:
    with pytest.raises(ValueError, match="source addresses"):
        plan(10_000_000, 2, limit=1_000_000, ports=28_232)


def test_too_few_workers_names_the_count_needed() -> None:
    assert too_few_workers(20_000, 2, limit=20_000) is None
    problem = too_few_workers(100_000, 2, limit=20_000)
    assert problem is not None and "at least 7 room workers" in problem


def test_kernel_memory_per_socket_from_sockstat_and_slabinfo(tmp_path: Path) -> None:
    def write(inuse: int, pages: int, slab: int) -> Kernel:
        (tmp_path / "net").mkdir(exist_ok=True)
        (tmp_path / "net" / "sockstat").write_text(
            f"sockets: used 9\nTCP: inuse {inuse} orphan 0 tw 3 alloc 12 mem {pages}\n"
            "UDP: inuse 1 mem 0\n")
        (tmp_path / "slabinfo").write_text(
            "slabinfo - version: 2.1\n# name <active_objs> <num_objs> <objsize> ...\n"
            f"TCP {slab * 1024 // 2048} 999 2048 13 8 : tunables 0 0 0 : slabdata 1 1 0\n"
            "dentry 500000 500000 192 21 1 : tunables 0 0 0 : slabdata 1 1 0\n")
        return Kernel.now(tmp_path)
    before = write(10, 5, 1000)
    after = write(2010, 505, 1000 + 2000 * 3)
    assert (after.sockets, after.buffer_pages, after.slab_kib) == (2010, 505, 7000)
    page_kib = resource.getpagesize() / 1024
    assert after.kib_per_socket(before) == round((6000 + 500 * page_kib) / 2000, 2)
    assert before.kib_per_socket(before) == 0.0
