"""GPU telemetry, slots and admission, against a fake pynvml."""
