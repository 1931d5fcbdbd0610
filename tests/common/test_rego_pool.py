"""RegoPool: real worker processes, compiled once per policy, evaluations bounded in time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from trustee_common.errors import InternalError, InvalidPolicyError, PolicyEngineUnavailableError
from trustee_common.rego import PolicySpec
from trustee_common.rego_pool import RegoPool

ALLOW = PolicySpec(
    'package policy\nimport rego.v1\ndefault allow := false\nallow if { data.plugin == "resource"; input.x == 1 }\n',
    data_keys=("plugin", "resource-path", "query"),
)
#: Tens of seconds of evaluation (nested comprehensions over numbers.range), a few ms to compile.
SLOW = PolicySpec("package policy\nallow if { count([y | y := numbers.range(1, 100000000)[_]]) > 0 }\n")
TIMEOUT = 1.0


async def test_evaluates_with_per_request_data() -> None:
    async with RegoPool(workers=1, timeout=30) as pool:
        assert await pool.evaluate(ALLOW, {"x": 1}, {"plugin": "resource"}) == {"allow": True}
        assert await pool.evaluate(ALLOW, {"x": 1}, {"plugin": "other"}) == {"allow": False}


async def test_distinct_data_never_compiles_another_copy() -> None:
    async with RegoPool(workers=1, timeout=30) as pool:
        for n in range(200):
            data = {"plugin": "resource", "resource-path": f"repo/type/tag{n}", "query": {f"k{n}": str(n)}}
            assert await pool.evaluate(ALLOW, {"x": 1}, data) == {"allow": True}
        assert await pool.stats() == [{"ok": True, "compiled": 1, "bytes": len(ALLOW.text)}]


async def test_bad_policies_are_refused_by_the_worker() -> None:
    async with RegoPool(workers=1, timeout=30) as pool:
        with pytest.raises(InvalidPolicyError, match="does not compile"):
            await pool.compile(PolicySpec("package policy\nallow if {{"))
        with pytest.raises(InvalidPolicyError, match=r"opa\.runtime"):
            await pool.compile(PolicySpec("package policy\nallow := opa.runtime().env"))
        with pytest.raises(InternalError, match="evaluation failed"):
            await pool.evaluate(PolicySpec('package policy\nallow := {"a": 1 / input.x}'), {"x": 0})


async def test_an_overrunning_evaluation_is_cut_off_and_others_are_served() -> None:
    async with RegoPool(workers=2, timeout=TIMEOUT) as pool:
        started = time.monotonic()
        slow = asyncio.create_task(pool.evaluate(SLOW, {}))
        await asyncio.sleep(0.2)
        fast = [await pool.evaluate(ALLOW, {"x": 1}, {"plugin": "resource"}) for _ in range(5)]
        assert fast == [{"allow": True}] * 5
        with pytest.raises(PolicyEngineUnavailableError, match="exceeded"):
            await slow
        assert time.monotonic() - started < TIMEOUT + 10
        assert pool.replaced == 1
        for _ in range(4):  # the replacement worker serves again
            assert await pool.evaluate(ALLOW, {"x": 1}, {"plugin": "resource"}) == {"allow": True}


async def test_waiting_for_a_worker_is_bounded_too() -> None:
    async with RegoPool(workers=1, timeout=TIMEOUT) as pool:
        results = await asyncio.gather(pool.evaluate(SLOW, {}), pool.evaluate(SLOW, {}), return_exceptions=True)
        assert all(isinstance(r, PolicyEngineUnavailableError) for r in results)
        deadline = time.monotonic() + 60
        while True:  # the killed worker's replacement arrives
            try:
                assert await pool.evaluate(ALLOW, {"x": 1}, {"plugin": "resource"}) == {"allow": True}
                break
            except PolicyEngineUnavailableError:
                assert time.monotonic() < deadline


#: rego-cpp 1.5 aborts (std::runtime_error, uncaught) compiling this: it must cost a worker, not the service.
ABORTS_THE_ENGINE = """package policy
import rego.v1
allow := y if { y := data.policy.z with input as {"x": 2} }
z := 1 / input.x
"""


async def test_a_policy_that_aborts_the_engine_is_refused_and_the_pool_recovers() -> None:
    async with RegoPool(workers=1, timeout=30) as pool:
        with pytest.raises(InvalidPolicyError, match="abort"):
            await pool.compile(PolicySpec(ABORTS_THE_ENGINE))
        assert pool.replaced == 1
        assert await pool.evaluate(ALLOW, {"x": 1}, {"plugin": "resource"}) == {"allow": True}


async def test_a_worker_over_its_memory_limit_is_killed_before_the_time_limit() -> None:
    async with RegoPool(workers=1, timeout=120, max_memory_mib=256) as pool:
        started = time.monotonic()
        with pytest.raises(PolicyEngineUnavailableError, match="256 MiB memory limit"):
            await pool.evaluate(SLOW, {})  # grows by hundreds of MiB per second
        assert time.monotonic() - started < 60
        assert pool.replaced == 1
        assert await pool.evaluate(ALLOW, {"x": 1}, {"plugin": "resource"}) == {"allow": True}


def initial_environment(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


async def test_workers_do_not_inherit_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTEE_CANARY", "canary-0b4e")
    async with RegoPool(workers=1, timeout=30) as pool:
        [worker] = pool._all
        environ = initial_environment(worker.pid)
        assert b"canary-0b4e" not in environ
        assert await pool.evaluate(ALLOW, {"x": 1}, {"plugin": "resource"}) == {"allow": True}


#: Reads `input.claims.svn` only: the nonce beside it does not change the result.
SVN = PolicySpec('package policy\nimport rego.v1\ndefault allow := false\nallow if { input.claims.svn >= data.plugin }\n',
                 data_keys=("plugin",))
CLOCK = PolicySpec("package policy\nimport rego.v1\nallow := time.now_ns()\n")


async def test_results_of_a_deterministic_policy_are_reused_for_what_it_reads() -> None:
    async with RegoPool(workers=1, timeout=30) as pool:
        first = await pool.evaluate(SVN, {"claims": {"svn": 3}, "nonce": "a"}, {"plugin": 2})
        assert first == {"allow": True} and pool.result_hits == 0
        first["allow"] = "changed by the caller"  # a later hit is not affected
        assert await pool.evaluate(SVN, {"claims": {"svn": 3}, "nonce": "b"}, {"plugin": 2}) == {"allow": True}
        assert pool.result_hits == 1  # the nonce is not read: same result, no evaluation
        assert await pool.evaluate(SVN, {"claims": {"svn": 1}, "nonce": "b"}, {"plugin": 2}) == {"allow": False}
        assert await pool.evaluate(SVN, {"claims": {"svn": 3}, "nonce": "b"}, {"plugin": 4}) == {"allow": False}
        assert pool.result_hits == 1  # other claims or other data: evaluated
        changed = PolicySpec(SVN.text.replace(">=", "=="), data_keys=("plugin",))
        assert await pool.evaluate(changed, {"claims": {"svn": 3}, "nonce": "b"}, {"plugin": 2}) == {"allow": False}
        assert pool.result_hits == 1  # another policy text: another digest


async def test_clock_dependent_policies_and_a_disabled_cache_always_evaluate() -> None:
    async with RegoPool(workers=1, timeout=30) as pool:
        readings = [(await pool.evaluate(CLOCK, {}))["allow"] for _ in range(3)]
        assert len(set(readings)) == 3 and pool.result_hits == 0
    async with RegoPool(workers=1, timeout=30, result_cache_entries=0) as pool:
        for _ in range(3):
            assert await pool.evaluate(SVN, {"claims": {"svn": 3}}, {"plugin": 2}) == {"allow": True}
        assert pool.result_hits == 0


async def test_failures_are_not_cached() -> None:
    divide = PolicySpec('package policy\nallow := {"a": 1 / input.x}')
    async with RegoPool(workers=1, timeout=30) as pool:
        for _ in range(2):
            with pytest.raises(InternalError, match="evaluation failed"):
                await pool.evaluate(divide, {"x": 0})
        assert pool.result_hits == 0
        assert await pool.evaluate(divide, {"x": 1}) == {"allow": {"a": 1}}


async def test_large_results_are_not_kept() -> None:
    echo = PolicySpec("package policy\nimport rego.v1\nallow := input.claims\n")
    async with RegoPool(workers=1, timeout=30) as pool:
        big = {"claims": {"blob": "x" * 20000}}
        for _ in range(2):
            assert await pool.evaluate(echo, big) == {"allow": big["claims"]}
        assert pool.result_hits == 0
        small = {"claims": {"blob": "x"}}
        for _ in range(2):
            assert await pool.evaluate(echo, small) == {"allow": small["claims"]}
        assert pool.result_hits == 1
