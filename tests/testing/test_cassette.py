"""Cassettes over real loopback HTTP: record through the proxy, replay from the emulator."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import httpx
import msgspec
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from handinger_stream import AsyncHandinger, NotFoundError
from handinger_stream.cassette import (
    BodyPiece,
    Cassette,
    CassetteError,
    CassetteNotFoundError,
    Interaction,
    RecordedRequest,
    RecordedResponse,
    Recorder,
    use_cassette,
)
from handinger_stream.client.upload import files_form
from handinger_stream.emulator import Emulator
from handinger_stream.testing.cassette_format import FormReader
from tests.conftest import API_KEY, Canned, RawServer

Exchange = tuple[int, str, str, bytes]  # status, content type, worker id header, body


async def _fetch(
    client: AsyncHandinger, method: str, path: str, *, json: Any = None, stream: bool = False
) -> Exchange:
    """One request through the client's transport; the body exactly as its bytes arrived."""
    response = await client.request(method, path, json=json, stream=stream)
    try:
        pieces = []
        while piece := await response.read_chunk():
            pieces.append(piece)
    finally:
        await response.aclose()
    headers = response.headers
    return (
        response.status,
        headers.get("content-type", ""),
        headers.get("x-handinger-worker-id", ""),
        b"".join(pieces),
    )


async def _session(client: AsyncHandinger) -> list[Exchange]:
    """A worker's whole life, by raw requests: create (streamed), read, replay, file, email."""
    created = await _fetch(
        client,
        "POST",
        "/api/workers",
        json={"input": "Write me a report on tides", "budget": "high", "stream": True},
        stream=True,
    )
    worker_id = created[2]
    assert worker_id
    return [
        created,
        await _fetch(client, "GET", f"/api/workers/{worker_id}"),
        await _fetch(client, "GET", f"/api/workers/{worker_id}?stream=true", stream=True),
        await _fetch(client, "GET", f"/api/workers/{worker_id}/files/report.md"),
        await _fetch(client, "GET", f"/api/workers/{worker_id}/email"),
    ]


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_a_recording_replays_byte_for_byte(
    emulator: Emulator, transport: str, tmp_path: Path
) -> None:
    path = tmp_path / "session.json"
    async with Recorder(path, upstream=emulator.base_url) as recorder:
        async with AsyncHandinger(
            api_key=API_KEY,
            base_url=recorder.base_url,
            transport=transport,  # type: ignore[arg-type]
        ) as client:
            live = await _session(client)
            stream = await client.workers.create(input="And the weather?", stream=True)
            live_worker = await stream.get_final_worker()
    assert path.exists()
    assert [status for status, *_ in live] == [200] * 5
    assert b"data: [DONE]" in live[0][3] and live[3][3]  # a stream, and the report's bytes

    async with (
        Emulator(cassette=path) as replayer,
        AsyncHandinger(
            api_key="any-other-key",
            base_url=replayer.base_url,
            transport=transport,  # type: ignore[arg-type]
        ) as client,
    ):
        replayed = await _session(client)
        stream = await client.workers.create(input="And the weather?", stream=True)
        replayed_worker = await stream.get_final_worker()
    assert replayed == live
    assert replayed_worker == live_worker and live_worker.status == "completed"

    text = path.read_text()
    assert API_KEY not in text
    assert "authorization" not in text.lower() and "bearer" not in text.lower()


async def test_credentials_are_never_written(raw_server: RawServer, tmp_path: Path) -> None:
    cookie, other_key, session_cookie = "c=cookie-secret-456", "other-secret-789", "sid-value-123"
    raw_server.serve(
        Canned(
            [b'{"echo": "' + API_KEY.encode() + b'", "ok": true}'],
            headers={
                "content-type": "application/json",
                "set-cookie": f"sid={session_cookie}; HttpOnly",
                "x-echo-auth": f"Bearer {API_KEY}",
                "x-request-id": "req-1",
            },
        )
    )
    path = tmp_path / "secrets.json"
    async with (
        Recorder(path, upstream=raw_server.base_url) as recorder,
        aiohttp.ClientSession() as http,
        http.post(
            recorder.base_url + f"/api/workers?token={API_KEY}",  # a key in the URL too
            json={"input": "hi"},
            headers={
                "authorization": f"Bearer {API_KEY}",
                "cookie": cookie,
                "x-api-key": other_key,
                "proxy-authorization": "Basic dXNlcjpwYXNz",
                "accept": "application/json",
            },
        ) as response,
    ):
        # The proxy hides nothing from the client itself: only the file is cleaned.
        assert response.headers["set-cookie"].startswith("sid=")
        assert API_KEY.encode() in await response.read()
    upstream_saw = {k.lower(): v for k, v in raw_server.requests[0]["headers"].items()}
    assert upstream_saw["authorization"] == f"Bearer {API_KEY}"
    assert upstream_saw["x-api-key"] == other_key

    text = path.read_text()
    for secret in (API_KEY, cookie, other_key, session_cookie, "dXNlcjpwYXNz"):
        assert secret not in text
    lowered = text.lower()
    for name in ("authorization", "cookie", "x-api-key", "x-echo-auth"):
        assert f'"{name}"' not in lowered
    interaction = Cassette.load(path).interactions[0]
    assert interaction.request.path == "/api/workers?token=<redacted>"
    assert interaction.request.headers == {
        "accept": "application/json",
        "content-type": "application/json",
    }
    assert ("x-request-id", "req-1") in [(k.lower(), v) for k, v in interaction.response.headers]
    assert b"<redacted>" in interaction.response.body


async def test_realtime_replay_takes_at_least_the_recorded_time(tmp_path: Path) -> None:
    path = tmp_path / "paced.json"
    async with (
        Emulator(tokens_per_second=150) as paced,
        Recorder(path, upstream=paced.base_url) as recorder,
        AsyncHandinger(api_key="k", base_url=recorder.base_url) as client,
    ):
        stream = await client.workers.create(input="Slowly, please", budget="low", stream=True)
        recorded_worker = await stream.get_final_worker()
    recorded = Cassette.load(path).interactions[0].response
    assert recorded.duration > 0.1  # the pace was recorded, not just the bytes
    offsets = [piece.at for piece in recorded.pieces]
    assert offsets == sorted(offsets) and len(offsets) > 10

    async with (
        Emulator(cassette=path, realtime=True) as replayer,
        AsyncHandinger(api_key="k", base_url=replayer.base_url) as client,
    ):
        started = time.monotonic()
        stream = await client.workers.create(input="Slowly, please", budget="low", stream=True)
        worker = await stream.get_final_worker()
        elapsed = time.monotonic() - started
    assert worker == recorded_worker
    assert elapsed >= recorded.duration


async def test_the_proxy_relays_each_piece_as_it_arrives(
    raw_server: RawServer, tmp_path: Path
) -> None:
    # A second between the pieces: a loaded machine still reads the first in time.
    raw_server.serve(Canned([b"data: one\n\n", b"data: two\n\n"], delay=1.0))
    async with (
        Recorder(tmp_path / "live.json", upstream=raw_server.base_url) as recorder,
        aiohttp.ClientSession() as http,
        http.get(recorder.base_url + "/live", headers={"authorization": "Bearer k"}) as response,
    ):
        first = await response.content.readuntil(b"\n\n")
        # Still mid-response upstream: a proxy that buffered would have waited for its end.
        assert first == b"data: one\n\n"
        assert raw_server.finished == 0 and raw_server.open_streams == 1
        assert await response.content.read() == b"data: two\n\n"
    pieces = Cassette.load(tmp_path / "live.json").interactions[0].response.pieces
    assert [p.text for p in pieces] == ["data: one\n\n", "data: two\n\n"]
    assert pieces[0].at <= pieces[1].at


def _cassette(*interactions: tuple[RecordedRequest, bytes]) -> Cassette:
    return Cassette(
        interactions=[
            Interaction(
                request=request,
                response=RecordedResponse(
                    status=200,
                    headers=[("content-type", "application/json")],
                    pieces=[BodyPiece.of(0.0, body)],
                ),
            )
            for request, body in interactions
        ]
    )


async def test_an_unmatched_request_gets_a_404_naming_it() -> None:
    cassette = _cassette(
        (RecordedRequest("POST", "/api/workers", json={"input": "recorded one"}), b"{}")
    )
    async with Emulator(cassette=cassette) as replayer, aiohttp.ClientSession() as http:
        async with http.post(
            replayer.base_url + "/api/workers?x=1",
            json={"input": "never recorded"},
            headers={"authorization": "Bearer k"},
        ) as response:
            assert response.status == 404
            error = (await response.json())["error"]
        assert error["request"] == {
            "method": "POST",
            "path": "/api/workers?x=1",
            "body": '{"input": "never recorded"}',
        }
        assert "POST /api/workers?x=1" in error["message"]
        assert "never recorded" in error["message"]
        assert error["recorded"] == ['POST /api/workers {"input":"recorded one"}']
        assert "holds 1 recorded request:" in error["message"]
        assert "recorded one" in error["message"]

        async with AsyncHandinger(api_key="k", base_url=replayer.base_url) as client:
            with pytest.raises(NotFoundError, match="never recorded"):
                await client.workers.create(input="never recorded")


async def test_json_bodies_match_as_json_and_other_bodies_by_bytes() -> None:
    cassette = _cassette(
        (RecordedRequest("POST", "/a", json={"x": 1, "y": [1, 2]}), b'"json"'),
        (RecordedRequest("POST", "/b", text="plain words"), b'"text"'),
        (RecordedRequest("GET", "/c?q=1"), b'"query"'),
    )
    headers = {"authorization": "Bearer k"}
    async with Emulator(cassette=cassette) as replayer, httpx.AsyncClient() as http:
        url = replayer.base_url

        async def status(method: str, path: str, content: bytes = b"") -> int:
            r = await http.request(method, url + path, content=content, headers=headers)
            return r.status_code

        assert await status("POST", "/a", b'{ "y": [1, 2],\n "x": 1 }') == 200
        assert await status("POST", "/a", b'{"x": 1, "y": [2, 1]}') == 404
        assert await status("POST", "/a", b'{"x": 1.5, "y": [1, 2]}') == 404
        assert await status("POST", "/b", b"plain words") == 200
        assert await status("POST", "/b", b"plain words ") == 404
        assert await status("GET", "/c?q=1") == 200
        assert await status("GET", "/c?q=2") == 404
        assert await status("GET", "/c") == 404
        assert await status("PUT", "/c?q=1") == 404


async def test_repeated_requests_are_answered_in_recorded_order_then_the_last_repeats(
    raw_server: RawServer, tmp_path: Path
) -> None:
    raw_server.serve(Canned([b"first"]), Canned([b"second"]))
    path = tmp_path / "order.json"
    headers = {"authorization": "Bearer k"}
    async with Recorder(path, upstream=raw_server.base_url) as recorder:
        async with httpx.AsyncClient() as http:
            for _ in range(2):
                await http.get(recorder.base_url + "/same", headers=headers)
    async with Emulator(cassette=path) as replayer, httpx.AsyncClient() as http:
        bodies = [
            (await http.get(replayer.base_url + "/same", headers=headers)).content for _ in range(3)
        ]
    assert bodies == [b"first", b"second", b"second"]


async def test_a_stream_cut_while_recording_is_cut_again_and_the_resume_replays(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cut.json"
    async with Emulator() as upstream, Recorder(path, upstream=upstream.base_url) as recorder:
        upstream.inject_fault("drop-after=6")
        async with AsyncHandinger(api_key="k", base_url=recorder.base_url) as client:
            stream = await client.workers.create(input="Cut me", stream=True)
            recorded_worker = await stream.get_final_worker()
            assert stream.reconnects == 1
    first, resume = Cassette.load(path).interactions
    assert first.response.complete is False
    assert resume.request.method == "GET" and resume.request.path.endswith("?stream=true")
    assert "last-event-id" in resume.request.headers

    async with (
        Emulator(cassette=path) as replayer,
        AsyncHandinger(api_key="k", base_url=replayer.base_url) as client,
    ):
        stream = await client.workers.create(input="Cut me", stream=True)
        assert await stream.get_final_worker() == recorded_worker
        assert stream.reconnects == 1


async def test_only_status_faults_apply_to_a_replay() -> None:
    cassette = _cassette((RecordedRequest("GET", "/x"), b'"x"'))
    async with Emulator(cassette=cassette) as replayer, httpx.AsyncClient() as http:
        url = replayer.base_url + "/x"
        auth = {"authorization": "Bearer k"}
        cut = await http.get(url, headers={**auth, "x-emulator-fault": "drop-after=1"})
        refused = await http.get(url, headers={**auth, "x-emulator-fault": "status=503"})
        served = await http.get(url, headers=auth)
    assert cut.status_code == 400 and "drop-after" in cut.json()["error"]["message"]
    assert refused.status_code == 503
    assert served.content == b'"x"'


async def test_a_replay_still_checks_the_key() -> None:
    cassette = _cassette((RecordedRequest("GET", "/x"), b'"x"'))
    async with Emulator(cassette=cassette, api_key="the-right-key") as replayer:
        async with httpx.AsyncClient() as http:
            url = replayer.base_url + "/x"
            missing = await http.get(url)
            wrong = await http.get(url, headers={"authorization": "Bearer wrong"})
            right = await http.get(url, headers={"authorization": "Bearer the-right-key"})
    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)


def test_any_client_is_recorded_and_a_thread_replays(emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "sync.json"
    headers = {"authorization": f"Bearer {API_KEY}"}
    with Recorder(path, upstream=emulator.base_url) as recorder:
        live = httpx.post(
            recorder.base_url + "/api/workers", json={"input": "from httpx"}, headers=headers
        )
    assert live.status_code == 200
    (interaction,) = Cassette.load(path).interactions
    assert interaction.request.json == {"input": "from httpx"}

    with Emulator(cassette=path) as replayer:
        replayed = httpx.post(
            replayer.base_url + "/api/workers", json={"input": "from httpx"}, headers=headers
        )
    assert replayed.content == live.content and replayed.status_code == 200


def _recorder_threads() -> int:
    return sum(t.name == "handinger-recorder" for t in threading.enumerate())


def test_the_recorder_runs_in_a_thread_of_its_own_and_leaves_none(
    emulator: Emulator, tmp_path: Path
) -> None:
    before = _recorder_threads()
    with Recorder(tmp_path / "t.json", upstream=emulator.base_url) as recorder:
        assert _recorder_threads() == before + 1
        httpx.get(
            recorder.base_url + "/api/workers/wrk_none", headers={"authorization": "Bearer k"}
        )
    assert _recorder_threads() == before
    assert len(Cassette.load(tmp_path / "t.json").interactions) == 1
    with pytest.raises(RuntimeError, match="the recorder is not running"):
        Recorder(None).base_url  # noqa: B018


def test_a_recorder_that_cannot_listen_raises_and_leaves_nothing_open(emulator: Emulator) -> None:
    before = _recorder_threads()
    taken = Recorder(None, upstream=emulator.base_url, port=emulator.port)
    with pytest.raises(OSError), taken:
        pass
    assert _recorder_threads() == before
    assert taken._session is None  # its client session was closed, not left to the collector


def test_recording_and_replaying_under_trio(emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "trio.json"

    async def record() -> str:
        async with Recorder(path, upstream=emulator.base_url) as recorder:
            async with AsyncHandinger(api_key=API_KEY, base_url=recorder.base_url) as client:
                stream = await client.workers.create(input="trio", stream=True)
                return (await stream.get_final_worker()).output_text

    async def replay() -> str:
        async with Emulator(cassette=path) as replayer:
            async with AsyncHandinger(api_key="k", base_url=replayer.base_url) as client:
                stream = await client.workers.create(input="trio", stream=True)
                return (await stream.get_final_worker()).output_text

    recorded = trio.run(record)
    assert recorded and trio.run(replay) == recorded


async def test_the_file_is_versioned_readable_and_keeps_binary_bytes(
    raw_server: RawServer, tmp_path: Path
) -> None:
    sse = b'id: 0\ndata: {"type":"start"}\n\n'
    binary = b"\xff\xfe\x00binary"
    raw_server.serve(Canned([sse]), Canned([binary], headers={"content-type": "image/png"}))
    path = tmp_path / "kinds.json"
    headers = {"authorization": "Bearer k"}
    async with Recorder(path, upstream=raw_server.base_url) as recorder:
        async with httpx.AsyncClient() as http:
            await http.get(recorder.base_url + "/sse", headers=headers)
            await http.get(recorder.base_url + "/png", headers=headers)
    text = path.read_text()
    assert text.startswith('{\n  "version": 1,')
    # An event stream reads as itself, one body piece per line.
    assert '"text": "id: 0\\ndata: {\\"type\\":\\"start\\"}\\n\\n"}' in text
    # The pieces keep the format's first name, so that every recorded file still reads.
    assert '"chunks": [' in text and '"pieces"' not in text
    assert os.listdir(tmp_path) == ["kinds.json"]  # no temporary file left
    png = Cassette.load(path).interactions[1].response
    assert png.pieces[0].text is None and png.pieces[0].base64
    async with Emulator(cassette=path) as replayer, httpx.AsyncClient() as http:
        assert (await http.get(replayer.base_url + "/png", headers=headers)).content == binary
        assert (await http.get(replayer.base_url + "/sse", headers=headers)).content == sse


def test_a_body_piece_is_still_importable_by_its_earlier_name() -> None:
    from handinger_stream.cassette import Chunk

    assert Chunk is BodyPiece
    assert Chunk.of(0.5, b"x") == BodyPiece(at=0.5, text="x")


def test_a_cassette_of_another_version_or_shape_is_refused(tmp_path: Path) -> None:
    future = tmp_path / "future.json"
    future.write_text('{"version": 2, "interactions": []}')
    with pytest.raises(CassetteError, match="version 2"):
        Cassette.load(future)
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": 1, "interactions": [{"request": 3}]}')
    with pytest.raises(CassetteError, match="not a valid cassette"):
        Emulator(cassette=broken)
    with pytest.raises(CassetteNotFoundError):
        Emulator(cassette=tmp_path / "missing.json")
    roundtrip = _cassette((RecordedRequest("POST", "/p", json={"a": [1, {"b": None}]}), b"\x00"))
    assert Cassette.loads(roundtrip.dumps()) == roundtrip


async def test_an_unreachable_upstream_is_a_502_and_not_recorded(tmp_path: Path) -> None:
    path = tmp_path / "nothing.json"
    async with Recorder(path, upstream="http://127.0.0.1:9") as recorder:
        async with httpx.AsyncClient() as http:
            response = await http.get(recorder.base_url + "/api/workers/x")
    assert response.status_code == 502
    assert "cannot reach http://127.0.0.1:9" in response.json()["error"]["message"]
    assert Cassette.load(path).interactions == []


# -- record when a key is set and the file is missing; replay otherwise --------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in [n for n in os.environ if n.startswith("HANDINGER_")]:
        monkeypatch.delenv(name)
    yield monkeypatch


def _create(session_options: dict[str, str] | Any) -> bytes:
    response = httpx.post(
        session_options["base_url"] + "/api/workers",
        json={"input": "cassette logic"},
        headers={"authorization": f"Bearer {session_options['api_key']}"},
    )
    assert response.status_code == 200, response.text
    return response.content


def test_use_cassette_records_with_a_key_and_no_file_then_replays(
    emulator: Emulator, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "cassettes" / "logic.json"
    # The emulator stands in for the real service: a fake key, and HANDINGER_BASE_URL.
    clean_env.setenv("HANDINGER_API_KEY", API_KEY)
    clean_env.setenv("HANDINGER_BASE_URL", emulator.base_url)
    with use_cassette(path) as session:
        assert session.mode == "record" and session.api_key == API_KEY
        recorded = _create(session.client_options())
    assert path.exists() and API_KEY not in path.read_text()
    assert API_KEY not in repr(session)
    written = path.read_bytes()

    # A key, and the file: replay, and the file is left as it was.
    with use_cassette(path) as session:
        assert session.mode == "replay" and session.api_key != API_KEY
        assert _create(session.client_options()) == recorded
    assert path.read_bytes() == written

    # No key at all (CI): replay.
    clean_env.delenv("HANDINGER_API_KEY")
    with use_cassette(path) as session:
        assert session.mode == "replay"
        assert _create(session.client_options()) == recorded


def test_use_cassette_without_a_key_or_a_file_says_how_to_record(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(CassetteNotFoundError) as caught, use_cassette(path):
        pass
    message = str(caught.value)
    assert str(path) in message and "HANDINGER_API_KEY" in message and "record" in message
    assert not path.exists()


def test_request_key_order_and_spacing() -> None:
    from handinger_stream.cassette import request_key

    a = request_key("POST", "/api/workers", msgspec.json.encode({"input": "x", "stream": True}))
    b = request_key("post", "/api/workers", b'{"stream":true,  "input":"x"}')
    c = request_key("POST", "/api/workers", b'{"stream":false,"input":"x"}')
    assert a == b != c


def test_use_cassette_writes_nothing_for_a_failed_or_empty_recording(
    emulator: Emulator, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("HANDINGER_API_KEY", API_KEY)
    clean_env.setenv("HANDINGER_BASE_URL", emulator.base_url)
    path = tmp_path / "attempt.json"

    with pytest.raises(RuntimeError, match="the app broke"), use_cassette(path) as session:
        _create(session.client_options())
        raise RuntimeError("the app broke")
    assert not path.exists()

    with use_cassette(path) as session:
        _create(session.client_options())
        session.discard()
    assert not path.exists()

    with use_cassette(path) as session:
        pass  # no request made: nothing to replay later
    assert not path.exists()

    with use_cassette(path) as session:
        _create(session.client_options())
    assert len(Cassette.load(path).interactions) == 1


# -- uploads: matched by their fields and their files' names and digests -----------


UPLOAD = [("data/q3.csv", b"region,revenue\nnorth,120\n"), ("blob.bin", bytes(range(256)) * 2400)]


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_an_upload_is_recorded_by_digest_and_replayed(
    emulator: Emulator, transport: str, tmp_path: Path
) -> None:
    path = tmp_path / "upload.json"
    async with (
        Recorder(path, upstream=emulator.base_url) as recorder,
        AsyncHandinger(
            api_key=API_KEY,
            base_url=recorder.base_url,
            transport=transport,  # type: ignore[arg-type]
        ) as client,
    ):
        stream = await client.workers.create(
            input="Sum it", budget="low", files=UPLOAD, stream=True
        )
        recorded = await stream.get_final_worker()
    assert [f.filename for f in recorded.files] == ["data/q3.csv", "blob.bin"]
    (interaction,) = Cassette.load(path).interactions
    form = interaction.request.form
    assert form is not None
    assert form.fields == [("input", "Sum it"), ("budget", "low"), ("stream", "true")]
    assert [(f.name, f.filename, f.size, f.sha256, f.media_type) for f in form.files] == [
        ("files", name, len(data), hashlib.sha256(data).hexdigest(), media_type)
        for (name, data), media_type in zip(
            UPLOAD, ["text/csv", "application/octet-stream"], strict=True
        )
    ]
    assert interaction.request.headers["content-type"] == "multipart/form-data"
    assert path.stat().st_size < 20_000  # the files' bytes (600 KiB) are not kept

    async with (
        Emulator(cassette=path) as replayer,
        AsyncHandinger(
            api_key="k",
            base_url=replayer.base_url,
            transport=transport,  # type: ignore[arg-type]
        ) as client,
    ):
        # The same upload, in a body of its own (another boundary): answered.
        stream = await client.workers.create(
            input="Sum it", budget="low", files=UPLOAD, stream=True
        )
        assert await stream.get_final_worker() == recorded
        # One byte of one file differs: not the recorded request, and the 404 says which.
        changed = [UPLOAD[0], ("blob.bin", UPLOAD[1][1][:-1] + b"!")]
        with pytest.raises(NotFoundError, match=r"files: data/q3\.csv \(25 bytes\), blob\.bin"):
            await client.workers.create(input="Sum it", budget="low", files=changed, stream=True)


async def test_the_proxy_relays_an_upload_with_its_length(
    raw_server: RawServer, tmp_path: Path
) -> None:
    raw_server.serve(Canned([b"{}"], headers={"content-type": "application/json"}))
    async with Recorder(tmp_path / "length.json", upstream=raw_server.base_url) as recorder:
        async with AsyncHandinger(api_key=API_KEY, base_url=recorder.base_url) as client:
            response = await client.request(
                "POST", "/api/workers", json={"input": "x"}, files=UPLOAD
            )
            await response.aclose()
    (seen,) = raw_server.requests
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    # Not chunked: an upload's known length goes on with it.
    assert (
        int(headers["content-length"]) == len(seen["body"]) and "transfer-encoding" not in headers
    )
    assert UPLOAD[1][1] in seen["body"]


def _multipart(
    fields: list[tuple[str, str]], files: list[tuple[str, bytes]], writer: str
) -> tuple[str, bytes]:
    """A multipart body of these fields and files, by our client's writer or httpx's."""
    if writer == "ours":
        form = files_form(files, fields)

        async def body() -> bytes:
            return b"".join([piece async for piece in form.chunks()])

        return form.content_type, anyio.run(body)
    request = httpx.Request(
        "POST", "http://x/", data=dict(fields), files=[("files", (n, d)) for n, d in files]
    )
    return request.headers["content-type"], request.read()


@settings(max_examples=60, deadline=None)
@given(
    fields=st.lists(
        st.tuples(
            st.sampled_from(["input", "budget", "stream"]),
            st.text(st.characters(blacklist_categories=["Cs"]), min_size=1),
        ),
        unique_by=lambda field: field[0],
    ),
    files=st.lists(
        st.tuples(
            # Printable, and none that a writer escapes (httpx escapes controls and "%").
            st.text(
                st.characters(blacklist_categories=["Cc", "Cs"], blacklist_characters='/"%\\'),
                min_size=1,
                max_size=12,
            ),
            st.binary(max_size=300),
        ),
        min_size=1,  # (httpx sends a form without files url-encoded)
        max_size=3,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
    writer=st.sampled_from(["ours", "httpx"]),
)
def test_a_form_reads_the_same_whoever_wrote_it_and_however_it_was_cut(
    fields: list[tuple[str, str]],
    files: list[tuple[str, bytes]],
    cuts: list[int],
    writer: str,
) -> None:
    content_type, body = _multipart(fields, files, writer)
    reader = FormReader.of(content_type)
    assert reader is not None
    edges = sorted({0, len(body), *(c for c in cuts if c < len(body))})
    for start, end in itertools.pairwise(edges):
        reader.feed(body[start:end])
    form = reader.form()
    assert sorted(form.fields) == sorted(fields)
    assert [(f.filename, f.size, f.sha256) for f in form.files] == [
        (name, len(data), hashlib.sha256(data).hexdigest()) for name, data in files
    ]
    assert FormReader.of("application/json") is None


# -- issue 21: a key the recorder sees in pieces -----------------------------------


async def test_a_key_split_across_two_reads_is_redacted_whole(
    raw_server: RawServer, tmp_path: Path
) -> None:
    """Redaction went piece by piece: a key that arrived in two reads was kept in halves."""
    cut = len(API_KEY) // 2
    first, second = b'{"echo": "' + API_KEY[:cut].encode(), API_KEY[cut:].encode() + b'"}'
    raw_server.serve(
        Canned([first, second], headers={"content-type": "application/json"}, delay=0.2)
    )
    path = tmp_path / "split.json"
    async with (
        Recorder(path, upstream=raw_server.base_url, secrets=[API_KEY]) as recorder,
        aiohttp.ClientSession() as http,
        http.get(recorder.base_url + "/api/workers/w") as response,
    ):
        assert await response.read() == first + second  # the client gets it as it was
    pieces = Cassette.load(path).interactions[0].response.pieces
    assert len(pieces) == 2  # it did arrive in two reads
    assert [piece.data for piece in pieces] == [b'{"echo": "<redacted>', b'"}']
    text = path.read_text()
    assert API_KEY[:cut] not in text and API_KEY[cut:] not in text


@settings(max_examples=200, deadline=None)
@given(
    body=st.lists(st.sampled_from([b"sk-secret-1234", b"sk-secret-12", b"x", b"sk-", b"\n"])),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_pieces_are_redacted_as_the_whole_body_is(body: list[bytes], cuts: list[int]) -> None:
    from handinger_stream.testing.cassette import _redact_pieces

    whole = b"".join(body)
    points = sorted({min(c, len(whole)) for c in cuts} | {0, len(whole)})
    pieces = [(float(i), whole[a:b]) for i, (a, b) in enumerate(itertools.pairwise(points))]
    secrets = ["sk-secret-1234", "sk-secret-12"]  # longest first, as the recorder sorts them
    out = _redact_pieces(pieces, secrets)
    expected = whole.replace(b"sk-secret-1234", b"<redacted>").replace(
        b"sk-secret-12", b"<redacted>"
    )
    assert b"".join(data for _, data in out) == expected
    assert [at for at, _ in out] == [at for at, _ in pieces]  # each piece keeps its time
