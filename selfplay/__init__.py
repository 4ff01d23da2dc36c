"""selfplay: the self-improvement loop (vLLM policy, TRL GRPO training, domains, CLI). Entry point: `selfplay` (selfplay.cli)."""
