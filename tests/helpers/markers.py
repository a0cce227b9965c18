"""Which tests start real servers or tools, found from their code rather than written on each.

The code a test runs is its own function, the fixtures it uses, and the tests'
own helpers those name, followed name by name. Where that code starts a
process (``subprocess``, ``asyncio.create_subprocess_exec``) or looks a program
up (``shutil.which``), the programs it names give the markers: ``redis-server``
is ``redis``, ``chromium`` is ``browser``, ``node`` and ``npm`` are ``node``,
``tmux`` is ``tmux``. A test is ``slow`` when it starts any process, runs
pytest through ``pytester``, or is listed in ``SLOW`` as measured.
``tests/conftest.py`` applies the markers at collection.

>>> from tests.relay_helpers import redis_server
>>> sorted(markers_for(reach(redis_server)))
['redis', 'slow']
"""

from __future__ import annotations

import inspect
import shutil
import subprocess
import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import pytest

# The programs behind each marker, as a test's code names them (the name, or a path to it).
PROGRAMS = {
    "redis": {"redis-server"},
    "browser": {"chromium"},
    "node": {"node", "npm"},
    "tmux": {"tmux"},
}

# Tests that start nothing yet take half a second or more (all their parameters together), as
# measured on 2 shared cores by ``pytest -m "not slow" --durations=0``: the fast core leaves
# them out. A test renamed falls back into the fast core (tests/test_markers.py says so).
SLOW = frozenset(
    {
        "tests/client/test_client.py::test_429_and_503_are_retried_then_succeed",
        "tests/client/test_client.py::test_ready_skips_a_bad_event_it_would_not_hand_over",
        "tests/client/test_client.py::test_subscribe_sees_a_running_worker_to_its_end",
        "tests/client/test_give_up_message.py::test_many_failed_resumes_are_told_once",
        "tests/client/test_one_terminal.py::test_a_stream_ends_its_turn_exactly_once",
        "tests/client/test_one_terminal.py::test_a_watch_ends_each_workers_turn_exactly_once",
        "tests/client/test_resilience.py::test_a_bad_event_inside_a_run_is_raised_in_its_turn",
        "tests/client/test_resilience.py::test_a_checkpoint_resumes_in_a_fresh_client",
        "tests/client/test_resilience.py::test_a_continued_stream_skips_a_full_replay_by_numeric_id",
        "tests/client/test_resilience.py::test_a_cut_after_any_event_resumes_to_the_same_worker",
        "tests/client/test_resilience.py::test_a_replay_that_ignores_last_event_id_is_not_delivered_twice",
        "tests/client/test_resilience.py::test_a_sent_create_without_an_answer_is_not_retried_but_a_get_is",
        "tests/client/test_resilience.py::test_a_silent_connection_times_out_at_the_read_timeout_and_resumes",
        "tests/client/test_resilience.py::test_a_slow_first_event_resumes_from_the_start",
        "tests/client/test_resilience.py::test_a_stalled_emulator_stream_resumes",
        "tests/client/test_resilience.py::test_a_stream_ending_early_without_resume_raises_with_the_partial_worker",
        "tests/client/test_resilience.py::test_keepalives_are_not_progress_an_idle_stream_resumes",
        "tests/client/test_resilience.py::test_resume_sends_last_event_id_and_the_callers_headers",
        "tests/client/test_resilience.py::test_retry_after_is_honoured_before_the_first_byte",
        "tests/client/test_resilience.py::test_stalls_that_do_not_heal_say_which_limit",
        "tests/client/test_resilience.py::test_the_total_deadline_is_final",
        "tests/client/test_stream_states.py::test_a_resume_cut_short_by_cancellation_is_taken_up_by_the_next_step",
        "tests/client/test_sync.py::test_a_stream_resumes_and_says_so",
        "tests/client/test_watch.py::test_200_workers_by_id_every_event_once_and_the_final_snapshots",
        "tests/client/test_watch.py::test_a_failed_worker_and_a_lost_stream_beside_healthy_ones",
        "tests/client/test_watch.py::test_a_slow_consumer_slows_the_reads",
        "tests/client/test_watch.py::test_add_and_remove_while_watching",
        "tests/client/test_watch.py::test_buffer_is_how_many_of_one_worker_s_events_come_before_the_others_turn",
        "tests/client/test_watch.py::test_completed_yields_final_workers_in_completion_order",
        "tests/client/test_watch.py::test_each_stream_is_read_by_the_consumer_alone_and_folds_once",
        "tests/client/test_watch.py::test_live_workers_interleave_and_snapshots_follow_the_events",
        "tests/client/test_watch_sync.py::test_leaving_early_leaves_no_stream_connection_or_thread",
        "tests/client/test_watch_tasks.py::test_follow_shows_tasks_started_later_once_each",
        "tests/monitoring/test_webhooks.py::test_any_json_object_is_accepted_and_kept_whole",
        "tests/monitoring/test_webhooks_http.py::test_a_chunked_oversize_body_is_413",
        "tests/monitoring/test_webhooks_http.py::test_deliveries_over_http",
        "tests/protocol/test_fast_path.py::test_runs_decode_exactly_as_events_one_by_one",
        "tests/protocol/test_fast_path.py::test_the_generator_reaches_every_shape",
        "tests/protocol/test_fuzz.py::test_chunks_of_any_shape_raise_only_documented_errors",
        "tests/protocol/test_fuzz.py::test_every_wellformed_json_chunk_is_one_event_of_its_own_type_or_an_error",
        "tests/protocol/test_interop.py::test_fixture_cut_and_resumed",
        "tests/protocol/test_interop.py::test_fixture_padded_with_sse_comments",
        "tests/protocol/test_interop.py::test_fixture_rechunked",
        "tests/protocol/test_interop.py::test_fixture_whole",
        "tests/protocol/test_retry.py::test_a_resume_waits_as_long_as_retry_after_says",
        "tests/protocol/test_sse.py::test_matches_httpx_sse",
        "tests/relay/test_relay_compact.py::test_a_late_joiner_gets_the_history_compacted_folding_the_same",
        "tests/relay/test_relay_compact.py::test_last_event_id_from_any_compacted_event_resumes_exactly",
        "tests/relay/test_relay_compact.py::test_a_reader_that_falls_behind_catches_up_merged_and_is_not_cut",
        "tests/relay/test_relay_joins.py::test_a_joiner_looks_at_the_chat_once",
        "tests/relay/test_relay_joins.py::test_quiet_readers_share_their_checks_of_the_chat",
        "tests/relay/test_relay_joins.py::test_with_access_a_joiner_still_looks_once_and_only_the_owner_joins",
        "tests/relay/test_relay.py::test_a_chat_over_http",
        "tests/relay/test_relay.py::test_a_reader_that_leaves_does_not_stop_the_turn",
        "tests/relay/test_relay.py::test_a_running_turn_is_served_to_late_joiners_and_resumers_with_keep_alives",
        "tests/relay/test_relay.py::test_a_slow_reader_is_cut_and_resumes_while_the_others_get_everything",
        "tests/relay/test_relay.py::test_a_turn_taken_over_stores_each_event_once_however_the_server_resumes",
        "tests/relay/test_relay.py::test_errors_are_json_with_the_right_status",
        "tests/relay/test_relay_fleet.py::test_a_later_turn_of_a_chat_is_followed_on_the_same_row",
        "tests/relay/test_relay_fleet.py::test_a_long_view_keeps_only_the_latest_ended_workers",
        "tests/relay/test_relay_fleet.py::test_every_turn_running_is_seen_whole_and_folded_once",
        "tests/relay/test_relay_tasks.py::test_a_chat_is_a_task_and_each_message_a_turn",
        "tests/relay/test_relay_tasks.py::test_a_turn_taken_over_keeps_to_its_task_in_the_templates_stream",
        "tests/relay/test_relay_tasks.py::test_late_joiners_and_resumers_read_the_running_turn",
        "tests/test_architecture.py::test_every_import_of_the_package_names_a_module",
        "tests/test_hygiene.py::test_abandoned_streams_leave_nothing_on_asyncio",
        "tests/test_hygiene.py::test_abandoned_streams_leave_nothing_on_trio",
        "tests/testing/test_cassette.py::test_a_stream_cut_while_recording_is_cut_again_and_the_resume_replays",
        "tests/testing/test_cassette.py::test_realtime_replay_takes_at_least_the_recorded_time",
        "tests/testing/test_cassette.py::test_the_proxy_relays_each_piece_as_it_arrives",
        "tests/testing/test_emulator_current.py::test_a_schedule_fires_on_the_real_clock_by_default",
        "tests/testing/test_emulator_current.py::test_a_slow_receiver_does_not_wedge_the_emulator",
        "tests/testing/test_emulator_current.py::test_a_template_plays_its_turns_one_at_a_time",
        "tests/testing/test_structured_output.py::test_every_schema_the_generator_reads_gives_a_valid_object",
    }
)

# What names a process started, besides the subprocess module's own functions.
_STARTERS = {"create_subprocess_exec", "create_subprocess_shell"}
_ACCESSORS = ("__func__", "fget", "fset")


@dataclass
class Reach:
    """What the code a test runs starts: programs it names, and whether any process."""

    programs: set[str] = field(default_factory=set)
    starts_process: bool = False
    seen: set[int] = field(default_factory=set)

    def follow(self, value: object) -> None:
        """Read the code of ``value``, when it is a function or class of the tests'."""
        value = inspect.unwrap(value)  # type: ignore[arg-type]  # a fixture's, an async plugin's
        if id(value) in self.seen or not _ours(getattr(value, "__module__", None)):
            return
        self.seen.add(id(value))
        if isinstance(value, type):
            for member in vars(value).values():
                for function in (member, *(getattr(member, a, None) for a in _ACCESSORS)):
                    if function is not None:
                        self.follow(function)
        elif isinstance(code := getattr(value, "__code__", None), types.CodeType):
            self.code(code, getattr(value, "__globals__", {}))

    def code(self, code: types.CodeType, namespace: dict[str, Any]) -> None:
        named = [namespace[name] for name in code.co_names if name in namespace]
        # A helper module's function, read as ``module.function``.
        for module in named:
            if isinstance(module, types.ModuleType) and _ours(module.__name__):
                named += [vars(module)[n] for n in code.co_names if n in vars(module)]
        starts = bool(_STARTERS & set(code.co_names)) or any(
            value is subprocess or getattr(value, "__module__", None) == "subprocess"
            for value in named
        )
        looks_up = any(value is shutil or value is shutil.which for value in named)
        self.starts_process |= starts
        if starts or looks_up:
            strings = [c for c in code.co_consts if isinstance(c, str)]
            strings += [value for value in named if isinstance(value, str)]  # a constant's
            self.programs |= {PurePath(s).name for s in strings if len(s) < 200}
        for const in code.co_consts:
            if isinstance(const, types.CodeType):  # a nested function, a lambda
                self.code(const, namespace)
        for value in named:
            self.follow(value)


def _ours(module: object) -> bool:
    """A module of the tests' own; this one is not followed: reading code runs nothing."""
    if not isinstance(module, str) or module == __name__:
        return False
    return module in ("tests", "conftest") or module.startswith("tests.")


def reach(*functions: object) -> Reach:
    """What ``functions`` start, followed through the tests' helpers."""
    found = Reach()
    for function in functions:
        found.follow(function)
    return found


def markers_for(found: Reach) -> set[str]:
    marks = {marker for marker, programs in PROGRAMS.items() if found.programs & programs}
    if marks or found.starts_process:
        marks.add("slow")
    return marks


def fixture_functions(item: pytest.Function, names: Iterable[str]) -> list[object]:
    """The functions behind the fixtures ``names`` that the tests define (pytest's own are
    left out), looked up as pytest does: the test's module, then each conftest above it."""
    modules = [item.module]
    package = item.module.__name__
    while "." in package:
        package = package.rsplit(".", 1)[0]
        conftest = sys.modules.get(f"{package}.conftest")
        if conftest is not None:
            modules.append(conftest)
    found = []
    for name in names:
        for module in modules:
            if name in vars(module):
                found.append(vars(module)[name])
                break
    return found


def mark(items: Iterable[pytest.Item]) -> None:
    """Add the markers to every test that needs them."""
    for item in items:
        if not isinstance(item, pytest.Function):
            continue  # a doctest
        names = list(item.fixturenames)
        # A fixture parametrized by the name of another, asked for with getfixturevalue.
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            names += [v for v in callspec.params.values() if isinstance(v, str)]
        marks = markers_for(reach(item.function, *fixture_functions(item, names)))
        if "pytester" in item.fixturenames or item.nodeid.split("[")[0] in SLOW:
            marks.add("slow")
        for marker in sorted(marks):
            item.add_marker(marker)
