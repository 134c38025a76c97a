"""Fuzzing every inbound decoder on the path a receiver runs: the aggregator's
`validate_update` (envelope, update body, tensor codec), and the edge node's and cloud's
round, model, partial, status and alert paths. Inputs start from valid signed messages of a real (tiny)
fleet and are mutated byte by byte (flip, insert, delete, truncate, splice msgpack fragments,
copy a slice elsewhere), or decoded, changed field by field and signed again with the sender's
real key (a compromised or buggy member: the signature passes, so the body parsers and the codec
are what is under test), or built from random msgpack structures with right-looking keys.

The only acceptable outcome for bad input is `RejectedMessage`; anything else, including a
warning (pytest turns warnings into errors here), fails. Whatever is accepted must be usable:
finite numbers, the model's shapes. Runs are derandomized and use no example database, so CI
sees the same 11,125 examples every time (3,000 + 3,500 + 1,500 for updates, 625 for each other kind).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cloud_core.alerts import alert_point, validate_alert
from cloud_core.config import AlertsConfig
from nacelle.keys import aggregator_id, create_fleet, key_path
from regional_aggregator.validation import UpdateLimits, validate_update
from wire.codec import CODECS, DEFAULT_TOPK_FRACTION, Codec, topk_count
from wire.envelope import Envelope, Kind, canonical_bytes, open_envelope, seal
from wire.errors import RejectedMessage
from wire.messages import (
    ModelRelease,
    NodeAlert,
    NodeSummary,
    NodeUpdate,
    RegionalPartial,
    RoundAnnouncement,
    alert_envelope,
    model_envelope,
    parse_model,
    parse_partial,
    parse_round,
    partial_envelope,
    round_envelope,
    status_envelope,
    update_envelope,
)
from wire.registry import FleetRegistry
from wire.signing import load_private_key
from wire.topics import RegionTopics

pytestmark = pytest.mark.slow  # about 35 s on 2 cores; `-m "not slow"` skips it

SHAPES: dict[str, tuple[int, ...]] = {"0.weight": (4, 3), "0.bias": (4,)}
TOTAL_VALUES = 16
NOW = 1_763_900_000.0
ROUND_ID, BASE_VERSION = 5, 4
LIMITS = UpdateLimits(max_bytes=64 * 1024, max_samples=1000, max_clock_skew_s=300.0)
MAX_BYTES = 1 << 20  # edge node and cloud limits are larger than the aggregator's; this is plenty
NODE, REGION = "north-t00001", "north"
AGGREGATOR = aggregator_id(REGION)

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclasses.dataclass(frozen=True, repr=False)  # a failing example's report need not list every key
class Fleet:
    registry: FleetRegistry
    keys: dict[str, Ed25519PrivateKey]
    seeds: dict[tuple[Kind, str], bytes] = dataclasses.field(default_factory=dict)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    directory: Path = tmp_path_factory.mktemp("fleet")
    registry = create_fleet(directory, {"north": 3, "south": 3})
    members = ["cloud", AGGREGATOR, NODE]
    return Fleet(registry, {m: load_private_key(key_path(directory, m)) for m in members})


def _tensors(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * 0.01).astype(np.float32) for name, shape in SHAPES.items()}


def _announcement(codec: Codec) -> RoundAnnouncement:
    return RoundAnnouncement(ROUND_ID, BASE_VERSION, NOW - 60, NOW + 3600, NOW + 5400, 2, 32, 1e-3, codec)


# -- the receivers, as the daemons call them ---------------------------------------------------


def receive_update(fleet: Fleet, payload: bytes, codec: Codec) -> None:
    update = validate_update(
        payload,
        NODE,
        region=REGION,
        registry=fleet.registry,
        open_round=_announcement(codec),
        counted=frozenset(),
        shapes=SHAPES,
        limits=LIMITS,
        now=NOW,
    )
    assert update.node_id == NODE and update.region == REGION
    assert 0 < update.num_samples <= LIMITS.max_samples
    assert math.isfinite(update.train_loss) and update.train_loss >= 0
    _assert_usable(update.delta)


def receive_round(fleet: Fleet, payload: bytes) -> None:
    keys = fleet.registry.keys_for(fleet.registry.cloud.member_id)
    ann = parse_round(open_envelope(payload, max_bytes=MAX_BYTES, keys=keys, expected_kind=Kind.ROUND))
    assert ann.codec in CODECS and ann.epochs >= 1 and ann.batch_size >= 1 and ann.learning_rate > 0
    assert all(math.isfinite(t) for t in (ann.opened_at, ann.regional_deadline, ann.global_deadline))


def receive_model(fleet: Fleet, payload: bytes) -> None:
    keys = fleet.registry.keys_for(fleet.registry.cloud.member_id)
    release = parse_model(open_envelope(payload, max_bytes=MAX_BYTES, keys=keys, expected_kind=Kind.MODEL), SHAPES)
    _assert_usable(release.weights)


def receive_partial(fleet: Fleet, payload: bytes) -> None:
    keys = fleet.registry.keys_for(AGGREGATOR)
    envelope = open_envelope(payload, max_bytes=MAX_BYTES, keys=keys, expected_kind=Kind.PARTIAL)
    partial = parse_partial(envelope, SHAPES)
    assert math.isfinite(partial.total_weight) and partial.total_weight >= 0
    assert all(n.num_samples > 0 and math.isfinite(n.train_loss) for n in partial.nodes)
    _assert_usable(partial.weighted_sum)


def receive_status(fleet: Fleet, payload: bytes) -> None:
    # No body parser exists for status: its readers (simulate.run) look up "state" in the body.
    envelope = open_envelope(payload, max_bytes=4096, keys=fleet.registry.public_key, expected_kind=Kind.STATUS)
    assert isinstance(envelope.body, dict)
    envelope.body.get("state")


def receive_alert(fleet: Fleet, payload: bytes) -> None:
    alert = validate_alert(
        payload, RegionTopics(REGION).alert(NODE), registry=fleet.registry, config=AlertsConfig(), now=NOW
    )
    assert alert.node_id == NODE and alert.region == REGION
    assert math.isfinite(alert.ratio) and alert.score > alert.threshold > 0 and alert.suppressed >= 0
    assert alert_point(alert).to_line_protocol()  # what the cloud writes: never an empty point


def _assert_usable(arrays: dict[str, np.ndarray]) -> None:
    assert list(arrays) == list(SHAPES)
    for name, shape in SHAPES.items():
        assert arrays[name].shape == shape and arrays[name].dtype == np.float32
        assert np.isfinite(arrays[name]).all()


def refused_or_usable(receive: Callable[[], None]) -> None:
    """Run a receiver; a refusal is fine, and its reason is counted (--hypothesis-show-statistics
    shows them: a fuzzer whose inputs all die at the first check would test nothing)."""
    try:
        receive()
    except RejectedMessage as exc:
        event(f"refused: {exc.reason.value}")
    else:
        event("accepted")


# -- valid seeds -------------------------------------------------------------------------------


def seed_message(fleet: Fleet, kind: Kind, codec: Codec = "int8-zstd") -> tuple[bytes, Ed25519PrivateKey]:
    """A valid sealed message of `kind` and the key of its rightful sender (made once)."""
    signer = AGGREGATOR if kind is Kind.PARTIAL else "cloud" if kind in (Kind.ROUND, Kind.MODEL) else NODE
    if (kind, codec) not in fleet.seeds:
        fleet.seeds[kind, codec] = seal(_seed_envelope(kind, codec), fleet.keys[signer])
    return fleet.seeds[kind, codec], fleet.keys[signer]


def _seed_envelope(kind: Kind, codec: Codec) -> Envelope:
    if kind is Kind.UPDATE:
        return update_envelope(NodeUpdate(NODE, REGION, ROUND_ID, BASE_VERSION, _tensors(1), 100, 0.4), codec, NOW)
    if kind is Kind.ROUND:
        return round_envelope(_announcement(codec), "cloud")
    if kind is Kind.MODEL:
        return model_envelope(ModelRelease(5, 4, 4, _tensors(2)), "cloud", NOW)
    if kind is Kind.PARTIAL:
        summaries = (NodeSummary(NODE, 100, 0.4, 900), NodeSummary("north-t00002", 50, 0.5, 880))
        partial = RegionalPartial(
            REGION, ROUND_ID, BASE_VERSION, _tensors(3), 150.0, 3, {"bad_signature": 1}, summaries
        )
        return partial_envelope(partial, AGGREGATOR, NOW)
    if kind is Kind.ALERT:
        return alert_envelope(NodeAlert(NODE, REGION, BASE_VERSION, 0.9, 0.4, NOW - 30.0, 2), NOW)
    return status_envelope(NODE, REGION, "online", BASE_VERSION, NOW)


# -- byte-level mutations ----------------------------------------------------------------------

# Headers that promise more than the input holds, types msgpack has but the contract refuses,
# non-finite floats, extreme integers, deep nesting, and the keys of the contract.
_FRAGMENTS = [
    b"\xc1",  # never used in msgpack
    b"\xc0",
    b"\xc3",
    b"\xdc\xff\xff",  # array16 of 65535
    b"\xdd\xff\xff\xff\xff",  # array32 of 4 billion
    b"\xdf\xff\xff\xff\xff",  # map32 of 4 billion
    b"\xc6\xff\xff\xff\xff",  # bin32 of 4 GiB
    b"\xdb\xff\xff\xff\xff",  # str32 of 4 GiB
    b"\xa3\xff\xfe\xfd",  # str of invalid UTF-8
    b"\xd4\x2a\x00",  # fixext 1
    b"\xd6\xff\x00\x00\x00\x01",  # timestamp 32
    b"\xc7\x05\x01abcde",  # ext 8
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",  # uint64 max
    b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",  # int64 min
    b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",  # float64 NaN
    b"\xca\x7f\x80\x00\x00",  # float32 inf
    b"\xcb\x7f\xef\xff\xff\xff\xff\xff\xff",  # float64 max
    b"\x91" * 40 + b"\xc0",  # 40 nested arrays
    b"\x81\xa1x" * 20 + b"\xc0",  # 20 nested maps
    b"\x80",
    b"\x90",
    *(
        msgpack.packb(key)
        for key in ["v", "kind", "sender", "round", "body", "sig", "delta", "tensors", "data", "codec", "nodes"]
    ),
]

_POSITION = st.integers(0, 1 << 16)  # taken modulo the input's length
_BYTE_MUTATION = st.one_of(
    st.tuples(st.just("flip"), _POSITION, st.integers(1, 255)),
    st.tuples(st.just("insert"), _POSITION, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), _POSITION, st.integers(1, 32)),
    st.tuples(st.just("truncate"), _POSITION, st.just(0)),
    st.tuples(st.just("splice"), _POSITION, st.sampled_from(_FRAGMENTS)),
    st.tuples(st.just("overwrite"), _POSITION, st.sampled_from(_FRAGMENTS)),
    st.tuples(st.just("copy"), _POSITION, st.tuples(_POSITION, st.integers(1, 64))),
)
_BYTE_MUTATIONS = st.lists(_BYTE_MUTATION, min_size=1, max_size=4)


def mutate_bytes(data: bytes, mutations: list[tuple[str, int, Any]]) -> bytes:
    out = bytearray(data)
    for op, position, arg in mutations:
        at = position % (len(out) + 1)
        if op == "flip" and at < len(out):
            out[at] ^= arg
        elif op == "insert":
            out[at:at] = arg
        elif op == "delete":
            del out[at : at + arg]
        elif op == "truncate":
            del out[at:]
        elif op == "splice":
            out[at:at] = arg
        elif op == "overwrite":
            out[at : at + len(arg)] = arg
        elif op == "copy" and out:
            start, length = arg[0] % len(out), arg[1]
            out[at:at] = out[start : start + length]
    return bytes(out)


def resign(data: bytes, key: Ed25519PrivateKey) -> bytes | None:
    """`data` with a valid signature by `key` when it still decodes to a map we can sign, else
    None: what a sender holding a real key can make of the same bytes."""
    try:
        fields = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if not isinstance(fields, dict):
            return None
        fields.pop("sig", None)
        return sign_fields(fields, key)
    except Exception:  # the mutation left no signable map (bad msgpack, unsortable keys): skip
        return None


def sign_fields(fields: dict[Any, Any], key: Ed25519PrivateKey) -> bytes:
    packed: bytes = msgpack.packb({**fields, "sig": key.sign(canonical_bytes(fields))}, use_bin_type=True)
    return packed


# -- structural mutations, signed again ---------------------------------------------------------

_KEYS = [
    *["v", "kind", "sender", "region", "round", "base", "ts", "body", "sig"],
    *["delta", "num_samples", "train_loss", "weights", "version", "weighted_sum", "total_weight"],
    *["expected", "rejected", "nodes", "state", "codec", "tensors", "data", "opened_at", "epochs"],
    *["regional_deadline", "global_deadline", "batch_size", "learning_rate", "0.weight", "0.bias", ""],
    *["score", "threshold", "window_ts", "suppressed"],
]
_INTERESTING_NUMBERS = st.sampled_from(
    [
        *[0, 1, -1, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 0.0, -0.0, 1e-45, 1e38, 3.4e38, 1e39, 1e308],
        *[float("nan"), float("inf"), float("-inf"), 127, 128, TOTAL_VALUES, ROUND_ID, BASE_VERSION, NOW],
    ]
)
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | _INTERESTING_NUMBERS
    | st.text(max_size=4)
    | st.sampled_from([*_KEYS, *CODECS, NODE, REGION, "online", "offline", "update", "model"])
    | st.binary(max_size=16)
)
# Two levels, built without st.recursive: its retries past max_leaves cost more than they find.
_VALUES = (
    _LEAVES
    | st.lists(_LEAVES, max_size=3)
    | st.dictionaries(st.sampled_from(_KEYS), _LEAVES, max_size=3)
    | st.lists(st.lists(_LEAVES, max_size=2) | st.dictionaries(st.sampled_from(_KEYS), _LEAVES, max_size=2), max_size=2)
)


def _zstd_payload(raw: bytes, declare_size: bool) -> bytes:
    return zstandard.ZstdCompressor(write_content_size=declare_size).compress(raw)


_SPECIAL_FLOATS = np.array([0.0, 1e-45, 1e-3, 1.0, -1.0, 3.4e38, np.nan, np.inf, -np.inf], np.float32)


def _tensor_data(seed: int, size: int, content: str, declare_size: bool) -> bytes:
    """zstd of `size` bytes a signer could send: random, int8 extremes (-128 included, which the
    encoder never sends) or float32 specials. Built from a seed: drawing each byte through
    hypothesis would cost more than everything the decoders do with it."""
    rng = np.random.default_rng(seed)
    if content == "random":
        raw = rng.bytes(size)
    elif content == "int8":
        raw = rng.choice(np.array([-128, -127, -1, 0, 1, 127], np.int8), size).tobytes()
    else:
        raw = rng.choice(_SPECIAL_FLOATS, size // 4 + 1).astype("<f4").tobytes()[:size]
    return _zstd_payload(raw, declare_size)


# Around the sizes a decoder expects: one byte per value (int8), two (fp16), four (fp32), and a
# top-k body's bitmaps plus its kept values.
_TOPK_VALUES = sum((math.prod(shape) + 7) // 8 for shape in SHAPES.values()) + topk_count(
    TOTAL_VALUES, DEFAULT_TOPK_FRACTION
)
_DATA_SIZES = [
    *[0, TOTAL_VALUES - 1, TOTAL_VALUES, TOTAL_VALUES + 1, 2 * TOTAL_VALUES, 4 * TOTAL_VALUES - 1, 4 * TOTAL_VALUES],
    *[_TOPK_VALUES - 1, _TOPK_VALUES, _TOPK_VALUES + 1],
]
_TENSOR_DATA = st.builds(
    _tensor_data,
    st.integers(0, 2**32 - 1),
    st.sampled_from([*_DATA_SIZES, 4 * TOTAL_VALUES + 1, 64 * TOTAL_VALUES]),
    st.sampled_from(["random", "int8", "floats"]),
    st.booleans(),
)
_SCALES = _INTERESTING_NUMBERS | st.floats(0, 3.5e38) | st.floats(allow_nan=True)

_PATH = st.lists(st.integers(0, 64), min_size=0, max_size=4)
_FIELD_MUTATION = st.one_of(
    st.tuples(st.just("replace"), _PATH, _VALUES),
    st.tuples(st.just("delete"), _PATH, st.none()),
    st.tuples(st.just("add"), _PATH, st.tuples(st.sampled_from(_KEYS), _VALUES)),
    st.tuples(st.just("bytes"), _PATH, _BYTE_MUTATIONS),
    st.tuples(st.just("data"), _PATH, _TENSOR_DATA),
    st.tuples(st.just("scale"), _PATH, _SCALES),
    st.tuples(st.just("codec"), _PATH, st.sampled_from([*CODECS, "zstd", ""])),
)
_FIELD_MUTATIONS = st.lists(_FIELD_MUTATION, min_size=1, max_size=3)


def _walk(root: Any, path: list[int]) -> tuple[Any, Any]:
    """(container, key) of the item `path` leads to: each step picks a child modulo the count."""
    container, key = None, None
    node = root
    for step in path:
        if isinstance(node, dict) and node:
            container, key = node, sorted(node, key=str)[step % len(node)]
        elif isinstance(node, list) and node:
            container, key = node, step % len(node)
        else:
            break
        node = container[key]
    return container, key


def _tensor_bodies(root: Any) -> list[dict[str, Any]]:
    """Every map that looks like a tensor body (has "tensors" or "data"), depth first."""
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "tensors" in node or "data" in node:
                found.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def mutate_fields(fields: dict[str, Any], mutations: list[tuple[str, list[int], Any]]) -> None:
    for op, path, arg in mutations:
        tensor_bodies = _tensor_bodies(fields)
        if op in ("data", "scale", "codec"):
            if not tensor_bodies:
                continue
            body = tensor_bodies[sum(path) % len(tensor_bodies)]
            if op == "data":
                body["data"] = arg
            elif op == "codec":
                body["codec"] = arg
            elif isinstance(body.get("tensors"), list) and body["tensors"]:
                entry = body["tensors"][sum(path) % len(body["tensors"])]
                if isinstance(entry, list) and len(entry) >= 3:
                    entry[2 if len(entry) == 3 or sum(path) % 2 else 3] = arg  # a top-k entry's count too
            continue
        container, key = _walk(fields, path)
        if container is None:
            if op == "add":
                fields[arg[0]] = arg[1]
            continue
        if op == "replace":
            container[key] = arg
        elif op == "delete":
            del container[key]
        elif op == "add" and isinstance(container[key], dict):
            container[key][arg[0]] = arg[1]
        elif op == "add" and isinstance(container[key], list):
            container[key].append(arg[1])
        elif op == "bytes" and isinstance(container[key], bytes | str):
            value = container[key]
            mutated = mutate_bytes(value.encode() if isinstance(value, str) else value, arg)
            container[key] = mutated.decode(errors="replace") if isinstance(value, str) else mutated


def mutated_and_signed(seed: bytes, key: Ed25519PrivateKey, mutations: list[tuple[str, list[int], Any]]) -> bytes:
    fields = msgpack.unpackb(seed, raw=False)
    fields.pop("sig")
    mutate_fields(fields, mutations)
    return sign_fields(fields, key)


# -- the tests ---------------------------------------------------------------------------------

_CODEC = st.sampled_from(list(CODECS))


@settings(FUZZ, max_examples=3000)
@given(codec=_CODEC, mutations=_BYTE_MUTATIONS, sign_again=st.booleans())
def test_update_bytes_mutated_raise_only_rejected_message(
    fleet: Fleet, codec: Codec, mutations: list[tuple[str, int, Any]], sign_again: bool
) -> None:
    seed, key = seed_message(fleet, Kind.UPDATE, codec)
    payload = mutate_bytes(seed, mutations)
    if sign_again:
        payload = resign(payload, key) or payload

    refused_or_usable(lambda: receive_update(fleet, payload, codec))


@settings(FUZZ, max_examples=3500)
@given(codec=_CODEC, mutations=_FIELD_MUTATIONS)
def test_update_fields_mutated_and_signed_again_raise_only_rejected_message(
    fleet: Fleet, codec: Codec, mutations: list[tuple[str, list[int], Any]]
) -> None:
    seed, key = seed_message(fleet, Kind.UPDATE, codec)
    payload = mutated_and_signed(seed, key, mutations)

    refused_or_usable(lambda: receive_update(fleet, payload, codec))


# -- random structures with the contract's keys -------------------------------------------------


def _mostly(valid: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`valid` three times in four, else `other`: fields that are garbage in every example would
    stop each one at the first check and leave the checks after it untested."""
    return st.sampled_from([valid, valid, valid, other]).flatmap(lambda chosen: chosen)


_TENSOR_ENTRY = st.tuples(
    st.sampled_from([*SHAPES, "x"]), st.sampled_from([[4, 3], [4], [3, 4], [], [16]]), _SCALES
).map(list)


def _without(mapping: st.SearchStrategy[dict[str, Any]], keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """`mapping`, mostly whole, else missing one of `keys`."""
    dropped = _mostly(st.just(""), st.sampled_from(keys))
    return st.builds(lambda drawn, key: {k: v for k, v in drawn.items() if k != key}, mapping, dropped)


_TENSOR_BODIES = _without(
    st.fixed_dictionaries(
        {
            "codec": _mostly(st.sampled_from([*CODECS, "zstd"]), _VALUES),
            "tensors": _mostly(st.lists(_TENSOR_ENTRY, min_size=1, max_size=3), _VALUES),
            "data": _mostly(_TENSOR_DATA, st.binary(max_size=16)),
        }
    ),
    ["codec", "tensors", "data"],
)
_UPDATE_BODIES = st.builds(
    lambda body, extra: extra | body,
    _without(
        st.fixed_dictionaries(
            {
                "delta": _mostly(_TENSOR_BODIES, _VALUES),
                "num_samples": _mostly(st.integers(-1, LIMITS.max_samples + 1), _LEAVES),
                "train_loss": _mostly(st.floats(-1.0, 10.0) | _INTERESTING_NUMBERS, _LEAVES),
            }
        ),
        ["delta", "num_samples", "train_loss"],
    ),
    st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=2),
)
_VALID_HEADER = {"v": 1, "kind": "update", "sender": NODE, "region": REGION, "round": ROUND_ID, "base": BASE_VERSION}
_HEADERS = _without(
    st.builds(
        lambda changed: _VALID_HEADER | {"ts": NOW} | changed,
        _mostly(st.just({}), st.dictionaries(st.sampled_from([*_VALID_HEADER, "ts"]), _LEAVES, min_size=1, max_size=2)),
    ),
    [*_VALID_HEADER, "ts"],
)


@settings(FUZZ, max_examples=1500)
@given(codec=_CODEC, header=_HEADERS, body=_UPDATE_BODIES, signed=_mostly(st.just(True), st.just(False)))
def test_random_update_structures_raise_only_rejected_message(
    fleet: Fleet, codec: Codec, header: dict[str, Any], body: dict[str, Any], signed: bool
) -> None:
    fields = {**header, "body": body}
    # Mostly signed by the node, so the body parsers see them; some unsigned or with a bad sig.
    if signed:
        payload = sign_fields(fields, fleet.keys[NODE])
    else:
        payload = msgpack.packb({**fields, "sig": bytes(64)}, use_bin_type=True)

    refused_or_usable(lambda: receive_update(fleet, payload, codec))


_RECEIVERS: dict[Kind, Callable[[Fleet, bytes], None]] = {
    Kind.ROUND: receive_round,
    Kind.MODEL: receive_model,
    Kind.PARTIAL: receive_partial,
    Kind.STATUS: receive_status,
    Kind.ALERT: receive_alert,
}


@settings(FUZZ, max_examples=625)
@pytest.mark.parametrize("kind", list(_RECEIVERS), ids=[k.value for k in _RECEIVERS])
@given(
    mutation=st.one_of(
        st.tuples(st.just("bytes"), _BYTE_MUTATIONS),
        st.tuples(st.just("bytes-signed-again"), _BYTE_MUTATIONS),
        st.tuples(st.just("fields-signed-again"), _FIELD_MUTATIONS),
    )
)
def test_other_messages_mutated_raise_only_rejected_message(
    fleet: Fleet, kind: Kind, mutation: tuple[str, Any]
) -> None:
    how, mutations = mutation
    seed, key = seed_message(fleet, kind, "fp32-zstd")
    if how == "fields-signed-again":
        payload = mutated_and_signed(seed, key, mutations)
    else:
        payload = mutate_bytes(seed, mutations)
        if how == "bytes-signed-again":
            payload = resign(payload, key) or payload

    refused_or_usable(lambda: _RECEIVERS[kind](fleet, payload))


@pytest.mark.parametrize("kind", [Kind.UPDATE, *_RECEIVERS], ids=lambda kind: kind.value)
def test_the_seeds_are_accepted_unchanged(fleet: Fleet, kind: Kind) -> None:
    # Otherwise every fuzz example would be refused at the first check and prove nothing.
    seed, _ = seed_message(fleet, kind, "int8-zstd" if kind is Kind.UPDATE else "fp32-zstd")

    if kind is Kind.UPDATE:
        receive_update(fleet, seed, "int8-zstd")
    else:
        _RECEIVERS[kind](fleet, seed)


def test_the_structural_mutator_reaches_the_tensor_data(fleet: Fleet) -> None:
    seed, key = seed_message(fleet, Kind.UPDATE, "fp32-zstd")
    data = _zstd_payload(np.full(TOTAL_VALUES, 0.5, "<f4").tobytes(), declare_size=True)

    update = validate_update(
        mutated_and_signed(seed, key, [("data", [], data)]),
        NODE,
        region=REGION,
        registry=fleet.registry,
        open_round=_announcement("fp32-zstd"),
        counted=frozenset(),
        shapes=SHAPES,
        limits=LIMITS,
        now=NOW,
    )

    assert all((array == 0.5).all() for array in update.delta.values())
