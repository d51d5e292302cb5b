"""The operator console (Textual). It reads engine snapshots and sends engine commands only."""
