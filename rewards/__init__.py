"""Reward functions with TRL's signature `f(prompts, completions, **columns) -> list[float | None]`."""
