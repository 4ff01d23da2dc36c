"""TRL completions as text: a completion is a plain string, or a list of chat messages for conversational data."""


def completion_text(completion) -> str:
    """The text of a TRL completion; anything else (None, numbers) reads as empty."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m.get("content") or "" for m in completion if isinstance(m, dict))
    return ""
