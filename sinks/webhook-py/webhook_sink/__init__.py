"""The webhook sink's modules: `settings` (the sink's settings), `jsonl`
(records to JSON lines), `sink` (requests, answers, redelivery) and
`wasi_http` (the transport inside the component). All but `wasi_http` run
on plain CPython for the unit tests in `tests/`."""
