"""Stop strings and UTF-8 reassembly across token boundaries."""

from __future__ import annotations

from nodeagent.engine.text import TextStream


def _feed(stream: TextStream, pieces: list[bytes]) -> str:
    out = "".join(stream.push(p) for p in pieces)
    return out + stream.flush()


def test_text_without_stops_passes_straight_through() -> None:
    stream = TextStream([])
    assert stream.push(b"Hello") == "Hello"
    assert stream.push(b", world") == ", world"
    assert not stream.stopped


def test_a_character_split_across_tokens_is_emitted_whole() -> None:
    euro = "€".encode()
    stream = TextStream([])
    assert stream.push(euro[:1]) == ""
    assert stream.push(euro[1:]) == "€"


def test_a_stop_string_spanning_tokens_is_cut_and_never_emitted() -> None:
    stream = TextStream(["</answer>"])
    emitted = [stream.push(p) for p in [b"42 </", b"ans", b"wer> trailing"]]
    assert "".join(emitted) == "42 "
    assert stream.stopped
    assert stream.push(b"more") == ""


def test_held_text_that_was_not_a_stop_is_released() -> None:
    stream = TextStream(["STOP"])
    assert stream.push(b"go ST") == "go "  # "ST" could begin "STOP"
    assert stream.push(b"ART") == "START"
    assert _feed(TextStream(["STOP"]), [b"end ST"]) == "end ST"


def test_the_earliest_of_several_stops_wins() -> None:
    stream = TextStream(["\n\n", "User:"])
    assert stream.push(b"fine. User: hi\n\n") == "fine. "
