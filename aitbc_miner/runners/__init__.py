"""Runners: the code that turns a job payload into a result, one kind of work each."""

from .base import JobFailed, RunContext, Runner, RunnerRegistry, RunOutput

__all__ = ["JobFailed", "RunContext", "RunOutput", "Runner", "RunnerRegistry"]
