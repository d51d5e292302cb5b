"""Fake backends (Ollama, OpenAI-compatible) served over real loopback HTTP for tests."""
