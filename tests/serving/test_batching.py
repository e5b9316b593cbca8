"""TurnBatcher: model calls shared by the requests that reach it in one event-loop turn."""

import asyncio

import pytest

from serving.batching import TurnBatcher


class Recorder:
    def __init__(self, fail: bool = False, delay: float = 0.0) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.fail = fail
        self.delay = delay

    async def run(self, key: str, rows: list[int]) -> list[int]:
        self.calls.append((key, list(rows)))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("model broke")
        return [row * 10 for row in rows]


def test_submissions_in_one_turn_share_one_call_and_get_their_own_rows() -> None:
    recorder = Recorder()
    batcher = TurnBatcher(recorder.run)

    async def main() -> list[list[int]]:
        return await asyncio.gather(
            batcher.submit("pair", [1]), batcher.submit("pair", [2, 3]), batcher.submit("pair", [4])
        )

    assert asyncio.run(main()) == [[10], [20, 30], [40]]
    assert recorder.calls == [("pair", [1, 2, 3, 4])]
    assert (batcher.calls, batcher.rows) == (1, 4)


def test_different_model_pairs_and_later_turns_are_separate_calls() -> None:
    recorder = Recorder()
    batcher = TurnBatcher(recorder.run)
    old, new = "old pair", "new pair"

    async def main() -> None:
        assert await asyncio.gather(batcher.submit(old, [1]), batcher.submit(new, [2])) == [
            [10],
            [20],
        ]
        assert await batcher.submit(old, [3]) == [30]  # a later turn

    asyncio.run(main())
    assert recorder.calls == [(old, [1]), (new, [2]), (old, [3])]


def test_a_failed_call_fails_every_request_of_its_batch() -> None:
    batcher = TurnBatcher(Recorder(fail=True).run)

    async def main() -> list[object]:
        return await asyncio.gather(
            batcher.submit("pair", [1]), batcher.submit("pair", [2]), return_exceptions=True
        )

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)


def test_a_cancelled_request_leaves_its_batch_mates_answered() -> None:
    batcher = TurnBatcher(Recorder(delay=0.05).run)

    async def main() -> list[int]:
        doomed = asyncio.ensure_future(batcher.submit("pair", [1]))
        survivor = asyncio.ensure_future(batcher.submit("pair", [2]))
        await asyncio.sleep(0.01)  # both are waiting on the running call
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        return await survivor

    assert asyncio.run(main()) == [20]
