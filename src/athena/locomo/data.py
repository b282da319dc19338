"""Reading the LoCoMo benchmark file (Maharana et al., ACL 2024; CC BY-NC 4.0).

Quirks handled here: dia_ids are unique only within a conversation; some evidence ids
are malformed (``"D8:6; D9:17"``, ``"D:11:26"``, ``"D"``); some sessions have a date but
no turns.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from athena.errors import ImportFormatError

_SESSION = re.compile(r"^session_(\d+)$")
_DIA = re.compile(r"D\s*:?\s*(\d+)\s*:\s*(\d+)")


@dataclass(frozen=True, slots=True)
class Turn:
    dia_id: str
    speaker: str
    text: str
    session: int
    time: float | None


@dataclass(frozen=True, slots=True)
class Question:
    question: str
    category: int
    evidence: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Conversation:
    sample_id: str
    speakers: tuple[str, ...]
    turns: tuple[Turn, ...]
    session_times: dict[int, float | None]
    observations: tuple[
        tuple[str, str, tuple[str, ...], int], ...
    ]  # speaker, text, dia_ids, session
    summaries: tuple[tuple[int, str], ...]
    events: tuple[tuple[int, str, str, float | None], ...]  # session, speaker, text, time
    questions: tuple[Question, ...]


def parse_time(text: str | None) -> float | None:
    """LoCoMo's ``"1:56 pm on 8 May, 2023"`` as UTC epoch seconds; None if unparseable.

    >>> parse_time("1:56 pm on 8 May, 2023")
    1683554160.0
    """
    if not text:
        return None
    for fmt in ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y", "%d %B, %Y", "%d %B %Y"):
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None


def normalise_evidence(raw: Any) -> tuple[str, ...]:
    """Well-formed ``D<session>:<turn>`` ids from an evidence field, however written.

    >>> normalise_evidence(["D8:6; D9:17", "D:11:26", "D"])
    ('D8:6', 'D9:17', 'D11:26')
    """
    if not isinstance(raw, list):
        return ()
    found: dict[str, None] = {}
    for item in raw:
        for session, turn in _DIA.findall(str(item)):
            found.setdefault(f"D{int(session)}:{int(turn)}", None)
    return tuple(found)


def turn_text(turn: dict[str, Any]) -> str:
    """A turn as it is remembered: ``"Speaker: text"``, plus the caption of a shared photo."""
    text = str(turn.get("text", "")).strip()
    caption = turn.get("blip_caption")
    if caption:
        text = f"{text} [shares a photo: {caption}]".strip()
    return f"{turn['speaker']}: {text}"


def _conversation(raw: dict[str, Any]) -> Conversation:
    conv = raw["conversation"]
    speakers = tuple(str(conv[k]) for k in ("speaker_a", "speaker_b") if conv.get(k))
    times: dict[int, float | None] = {}
    turns: list[Turn] = []
    for key, value in conv.items():
        match = _SESSION.match(key)
        if not match:
            continue
        number = int(match.group(1))
        times[number] = parse_time(conv.get(f"session_{number}_date_time"))
        for turn in value or []:
            turns.append(
                Turn(
                    str(turn["dia_id"]),
                    str(turn["speaker"]),
                    turn_text(turn),
                    number,
                    times[number],
                )
            )
    observations = []
    for key, per_speaker in (raw.get("observation") or {}).items():
        number = int(re.findall(r"\d+", key)[0])
        for speaker, facts in (per_speaker or {}).items():
            for fact in facts:
                text, evidence = fact[0], fact[1] if len(fact) > 1 else []
                ids = normalise_evidence(evidence if isinstance(evidence, list) else [evidence])
                observations.append((speaker, str(text), ids, number))
    summaries = [
        (int(re.findall(r"\d+", key)[0]), str(text))
        for key, text in (raw.get("session_summary") or {}).items()
        if text
    ]
    events: list[tuple[int, str, str, float | None]] = []
    for key, value in (raw.get("event_summary") or {}).items():
        number = int(re.findall(r"\d+", key)[0])
        when = parse_time(value.get("date")) or times.get(number)
        for speaker, items in value.items():
            if speaker == "date":
                continue
            events.extend((number, speaker, str(item), when) for item in items or [])
    questions = tuple(
        Question(str(q["question"]), int(q["category"]), normalise_evidence(q.get("evidence")))
        for q in raw.get("qa", [])
        if q.get("question")
    )
    return Conversation(
        sample_id=str(raw["sample_id"]),
        speakers=speakers,
        turns=tuple(turns),
        session_times=times,
        observations=tuple(observations),
        summaries=tuple(sorted(summaries)),
        events=tuple(events),
        questions=questions,
    )


def load_locomo(path: str | Path) -> list[Conversation]:
    """Parse a LoCoMo JSON file; ImportFormatError if it is unreadable or not LoCoMo."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ImportFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportFormatError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, list) or not raw:
        raise ImportFormatError(f"{path} is not a LoCoMo file: expected a list of conversations")
    try:
        return [_conversation(item) for item in raw]
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        raise ImportFormatError(f"{path} is not a LoCoMo file: {exc!r}") from exc
