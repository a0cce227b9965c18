"""The same client under trio: the httpx transport is chosen by itself."""

from __future__ import annotations

import gc
import warnings

import pytest
import trio

from handinger_stream import AsyncHandinger, InvalidRequestError, TextDeltaEvent
from handinger_stream.emulator import Emulator
from tests.conftest import API_KEY


def test_streaming_under_trio(emulator: Emulator) -> None:
    async def main() -> None:
        async with AsyncHandinger(api_key=API_KEY, base_url=emulator.base_url) as client:
            assert client.transport.name == "httpx"
            stream = await client.workers.create(input="Trio time", stream=True)
            deltas = [e.delta async for e in stream if isinstance(e, TextDeltaEvent)]
            final = await stream.get_final_worker()
            assert final.output_text == "".join(deltas) and final.status == "completed"
            assert final == await client.workers.retrieve(final.id)
            replay = await client.workers.retrieve(final.id, stream=True)
            assert await replay.get_final_worker() == final
            body = (
                b"".join([c async for c in client.workers.retrieve_file(final.id, "report.md")])
                if final.files
                else b""
            )
            assert not final.files or body
            assert (await client.workers.retrieve_email(final.id)).startswith(final.id)

    trio.run(main)


def test_cancel_scope_closes_the_stream_under_trio(emulator: Emulator) -> None:
    async def run() -> None:
        async with AsyncHandinger(api_key=API_KEY, base_url=emulator.base_url) as client:
            stream = await client.workers.create(input="x", stream=True)
            with trio.move_on_after(0.0):
                await stream.get_final_worker()
            assert stream.closed

    trio.run(run)


def test_aiohttp_under_trio_is_refused_at_construction() -> None:
    async def main() -> None:
        with pytest.raises(InvalidRequestError, match=r"asyncio.*httpx"):
            AsyncHandinger(api_key="k", base_url="http://127.0.0.1:9", transport="aiohttp")

    trio.run(main)


def test_a_file_download_left_early_under_trio_leaves_nothing(emulator: Emulator) -> None:
    async def main() -> None:
        async with AsyncHandinger(api_key=API_KEY, base_url=emulator.base_url) as client:
            stream = await client.workers.create(input="a report file please", stream=True)
            worker = await stream.get_final_worker()
            download = client.workers.retrieve_file(worker.id, "report.md")
            async for chunk in download:
                assert chunk
                break
            del download
            gc.collect()
            # The dropped download's close runs as a system task: let it.
            await trio.sleep(0.05)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trio.run(main)
    # An async generator dropped like this is reported by trio as a ResourceWarning.
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
