"""Benchmarks of Nacelle against its own floor and against Flower: `python -m bench`.

Each benchmark is a module with a `run(size) -> Section` function (pure measurement, no
printing); `bench.results` renders sections as tables, writes them as JSON with the machine they
ran on (`bench.machine`) and compares two such files. Benchmarks are not tests: nothing here
asserts a time. `tests/bench/` runs every benchmark at the `tiny` size so none of them rots.

- `codecs`: bytes per update, encode/decode time and the detection AUC each update codec costs.
- `ingest`: regional ingest (verify + decode + accumulate) per core as pure code and through a
  real mosquitto, and the aggregator's peak memory against the number of updates in a round.
- `fleet_round`: a whole `nacelle simulate` round taken apart, peak memory per process, and the
  floor: the same models on the same data trained batched with no wire at all.
- `flower`: Flower's simulation engine and `nacelle simulate` on the same model, data, epochs
  and client counts.
"""
