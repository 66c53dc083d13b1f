"""Unit tests of the webhook sink, run by `build.sh test` (python3 -m unittest)."""
